"""Kokoro-82M (int8) text-to-speech on onnxruntime, through `kokoro-onnx`.

One `kokoro_onnx.Kokoro` per model file pair and process, shared by every session and every
`KokoroTTS`: loaded lazily on the model executor under a lock, with an onnxruntime session whose
threads are set here (kokoro-onnx's own default takes every core and spins). Phonemisation goes through
espeak-ng as bundled by `espeakng_loader` (no system package, no network); kokoro-onnx serialises it,
since espeak-ng is not thread-safe, while inference of several sessions runs concurrently.

`synthesize` phonemises the text, synthesises it on the model executor and yields the audio in
`_FRAME_S` frames. A long text (over `_SPLIT_ABOVE` phonemes) is first cut at sentence and clause
marks into batches, the first one short, so the first audio comes after one short batch rather
than after the whole text; the next batch is synthesised while the current one is being consumed.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentkit._executor import run_model_job
from agentkit.audio import AudioFrame, Samples
from agentkit.exceptions import ConfigError, ModelNotFoundError, ProviderError

__all__ = ["KokoroTTS"]

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 24000
_FRAME_S = 0.1
"""Length of the frames `synthesize` yields."""
_SPLIT_ABOVE = 400
"""Texts with more phonemes than this are synthesised in batches."""
_FIRST_BATCH = 100
"""Most phonemes in the first batch: about 5 s of speech (20 phonemes a second), under 2 s of work.
Each later batch may be one such step longer, so it is ready before the audio before it has played."""
_BATCH = 300
"""Most phonemes in any batch (the model's own limit is 510)."""
_SENTENCE_PAUSE_S = 0.25
_CLAUSE_PAUSE_S = 0.1
_CLAUSE_END = re.compile(r"(?<=[.!?…,;:—])\s+")
_DEFAULT_THREADS = min(2, os.cpu_count() or 1)


class KokoroTTS:
    """Text-to-speech with Kokoro on the CPU: `KokoroTTS(voice="af_heart")`, 24 kHz mono.

    `voice` is any voice in the voices file (the English ones: `af_*`, `am_*`, `bf_*`, `bm_*`);
    `speed` 0.5-2.0; `lang` an espeak-ng language code (`en-us`, `en-gb`). The files default to
    `agentkit.models.model_path("kokoro", ...)`. `threads` is onnxruntime's intra-op thread count,
    taken by whichever instance loads the shared model first (two make one sentence about 1.7 times
    as fast as one on two cores). An unknown voice or language raises `ConfigError` from `warm_up`
    or the first `synthesize`.
    """

    sample_rate = _SAMPLE_RATE

    _engines: ClassVar[dict[tuple[Path, Path], Any]] = {}
    _styles: ClassVar[dict[tuple[Path, Path, str], Samples]] = {}
    _langs: ClassVar[set[str]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        voice: str = "af_heart",
        speed: float = 1.0,
        lang: str = "en-us",
        *,
        model_path: str | Path | None = None,
        voices_path: str | Path | None = None,
        threads: int = _DEFAULT_THREADS,
    ) -> None:
        if not 0.5 <= speed <= 2.0:
            raise ConfigError("Kokoro speed must be between 0.5 and 2.0", speed=speed)
        if threads < 1:
            raise ConfigError("threads must be at least 1", threads=threads)
        self._voice = voice
        self._speed = float(speed)
        self._lang = lang
        self._model_path = Path(model_path) if model_path is not None else None
        self._voices_path = Path(voices_path) if voices_path is not None else None
        self._threads = threads

    @property
    def name(self) -> str:
        return f"kokoro/{self._voice}"

    @property
    def voice(self) -> str:
        return self._voice

    async def warm_up(self) -> None:
        """Load the shared model and check the voice now rather than on the first sentence."""
        await run_model_job(self._load)

    async def aclose(self) -> None:
        """Nothing to release: the engine and its onnxruntime session are shared for the process."""
        return None

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        """Yield `text` spoken, in frames of `_FRAME_S`; nothing for empty or whitespace text."""
        if not text.strip():
            return
        engine, style = await run_model_job(self._load)
        batches = await run_model_job(self._batches, engine, text)
        if not batches:
            return
        frame_samples = int(_FRAME_S * _SAMPLE_RATE)
        timestamp = 0
        pending: asyncio.Future[Samples] | None = asyncio.ensure_future(
            run_model_job(self._speak, engine, style, batches[0], len(batches) > 1)
        )
        try:
            for index in range(len(batches)):
                assert pending is not None
                audio = await pending
                pending = None
                if index + 1 < len(batches):  # synthesise the next batch while this one plays
                    more = index + 2 < len(batches)
                    pending = asyncio.ensure_future(
                        run_model_job(self._speak, engine, style, batches[index + 1], more)
                    )
                for start in range(0, audio.shape[0], frame_samples):
                    chunk = audio[start : start + frame_samples]
                    yield AudioFrame(chunk, _SAMPLE_RATE, timestamp)
                    timestamp += chunk.shape[0]
        finally:
            if pending is not None:  # closed early (barge-in): the running batch finishes unused
                pending.cancel()

    # -- on the model executor ----------------------------------------------------------------------

    def _paths(self) -> tuple[Path, Path]:
        if self._model_path is None or self._voices_path is None:
            from agentkit.models import model_path

            if self._model_path is None:
                self._model_path = model_path("kokoro", "kokoro-v1.0.int8.onnx")
            if self._voices_path is None:
                self._voices_path = model_path("kokoro", "voices-en-v1.0.bin")
        return self._model_path.resolve(), self._voices_path.resolve()

    def _load(self) -> tuple[Any, Samples]:
        """The shared engine and this voice's style vectors, loading them if needed."""
        paths = self._paths()
        with KokoroTTS._lock:
            engine = KokoroTTS._engines.get(paths)
            if engine is None:
                engine = _load_engine(*paths, threads=self._threads)
                KokoroTTS._engines[paths] = engine
            style = KokoroTTS._styles.get((*paths, self._voice))
            if style is None:
                voices = engine.get_voices()
                if self._voice not in voices:
                    close = difflib.get_close_matches(self._voice, voices, n=1)
                    some = ", ".join(voices[:: max(1, len(voices) // 6)][:6])
                    hint = f"did you mean {close[0]}?" if close else f"there are {len(voices)}, e.g. {some}"
                    raise ConfigError(f"Kokoro has no voice {self._voice!r}; {hint}", voice=self._voice)
                style = np.asarray(engine.get_voice_style(self._voice), dtype=np.float32)
                KokoroTTS._styles[(*paths, self._voice)] = style
            if self._lang not in KokoroTTS._langs:
                try:
                    engine.tokenizer.phonemize("a", self._lang)
                except RuntimeError as exc:  # phonemizer: 'language "xx" is not supported'
                    raise ConfigError(
                        f"espeak-ng does not know the language {self._lang!r} (try en-us or en-gb)",
                        lang=self._lang,
                    ) from exc
                KokoroTTS._langs.add(self._lang)
        return engine, style

    def _batches(self, engine: Any, text: str) -> list[str]:
        try:
            phonemes = engine.tokenizer.phonemize(text, self._lang)
        except Exception as exc:
            raise ProviderError(f"Kokoro could not phonemise the text: {exc}", provider=self.name) from exc
        return split_phonemes(phonemes)

    def _speak(self, engine: Any, style: Samples, phonemes: str, more: bool) -> Samples:
        """One batch of audio; when `more` batches follow, with the pause its last mark asks for."""
        try:
            created, _ = engine.create(
                phonemes, voice=style, speed=self._speed, lang=self._lang, is_phonemes=True
            )
        except Exception as exc:
            raise ProviderError(f"Kokoro synthesis failed: {exc}", provider=self.name) from exc
        audio: Samples = np.asarray(created, dtype=np.float32).reshape(-1)
        pause_s = _pause_after(phonemes) if more else 0.0
        if pause_s:  # kokoro-onnx trimmed the batch's trailing silence
            audio = np.concatenate([audio, np.zeros(int(pause_s * _SAMPLE_RATE), np.float32)])
        return audio


def _load_engine(model: Path, voices: Path, *, threads: int) -> Any:
    for path in (model, voices):
        if not path.is_file():
            raise ModelNotFoundError(
                f"Kokoro file {path} not found; run `agentkit models download kokoro` "
                "or set AGENTKIT_MODELS_DIR",
                path=str(path),
            )
    try:
        import kokoro_onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(
            "KokoroTTS needs kokoro-onnx: `pip install 'agentkit[local]'` (or scripts/install)",
            missing=exc.name,
        ) from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Intra-op threads spin between the model's many small operators (about 4 % faster per piece,
    # measured paired), and stop at the end of each run: left spinning, they would burn ~40 ms of
    # CPU after every piece, taking the core the LLM and the audio need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # phonemizer warns "words count mismatch" on most replies with punctuation (espeak splits words
    # differently; the audio is fine), through its own "phonemizer" logger, which its import set to
    # WARNING. Raising that one third-party logger's level is all we touch of logging configuration.
    logging.getLogger("phonemizer").setLevel(logging.ERROR)
    logger.info("loading Kokoro from %s (%d threads)", model, threads)
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return kokoro_onnx.Kokoro.from_session(session, str(voices))


def split_phonemes(phonemes: str) -> list[str]:
    """Batches of `phonemes` to synthesise one after another (one batch unless the text is long).

    Cuts only after sentence and clause marks; a clause longer than the model's limit is cut
    between words. Batches grow from `_FIRST_BATCH` phonemes to `_BATCH`, where the marks allow.
    """
    phonemes = " ".join(phonemes.split())
    if len(phonemes) <= _SPLIT_ABOVE:
        return [phonemes] if phonemes else []
    atoms: list[str] = []
    for clause in _CLAUSE_END.split(phonemes):
        atoms.extend(_pack(clause.split(" "), lambda _: _BATCH) if len(clause) > _BATCH else [clause])
    return _pack(atoms, lambda done: min(_BATCH, _FIRST_BATCH * (done + 1)))


def _pack(atoms: list[str], limit: Callable[[int], int]) -> list[str]:
    """Consecutive `atoms` joined by spaces into runs; run n at most `limit(n)` long, or one atom."""
    runs: list[str] = []
    current = ""
    for atom in atoms:
        if current and len(current) + 1 + len(atom) > limit(len(runs)):
            runs.append(current)
            current = atom
        else:
            current = f"{current} {atom}" if current else atom
    if current:
        runs.append(current)
    return runs


def _pause_after(phonemes: str) -> float:
    mark = phonemes.rstrip()[-1:]
    if mark in ".!?…":
        return _SENTENCE_PAUSE_S
    if mark in ",;:—":
        return _CLAUSE_PAUSE_S
    return 0.0
