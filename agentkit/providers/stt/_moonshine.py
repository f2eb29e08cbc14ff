"""Moonshine (tiny, English) speech-to-text on onnxruntime, through `useful-moonshine-onnx`.

One model per process, shared by every session and every `MoonshineSTT`: it is loaded lazily on the
model executor (`agentkit._executor.run_model_job`), under a lock, and each transcription runs there
too. onnxruntime sessions may be called from several threads at once, and `generate` keeps its
decoding state in locals, so concurrent turns need no lock of their own.

Moonshine was trained on chunks of speech up to about 30 s, so a longer turn is cut into pieces of
at most `_MAX_CHUNK_S`, each at the quietest moment near its end, and the pieces' texts are joined.
Decoding is greedy up to `max_len` tokens; the package's default (192 whatever the length) lets noise
or silence run on for hundreds of decoder steps, so the bound here grows with the audio instead.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentkit._executor import run_model_job
from agentkit.audio import AudioFrame, Samples
from agentkit.exceptions import AudioFormatError, ConfigError, ModelNotFoundError, ProviderError
from agentkit.providers._quotes import clean_quotes
from agentkit.providers.stt._base import Transcript

__all__ = ["MoonshineSTT"]

logger = logging.getLogger(__name__)

_SAMPLE_RATE = 16000
_MODELS = {"tiny": "moonshine-tiny-en"}  # agentkit.models name of each supported size
_MIN_AUDIO_S = 0.25
"""Shorter turns hold no word; they come back empty without running the model."""
_SILENCE_PEAK = 0.002
"""Peak level (about -54 dBFS) under which a turn is taken as silence and not transcribed."""
_MAX_CHUNK_S = 28.0
"""Longest piece given to the model at once (it was trained on chunks of up to about 30 s)."""
_CUT_SEARCH_S = 6.0
"""How far back from a piece's end to look for a quiet place to cut."""
_CUT_WINDOW_S = 0.05
_TOKENS_PER_S = 7.0
"""Decoding bound: English speech runs at about 3-5 tokens a second; more is a runaway."""
_EXTRA_TOKENS = 3
"""... plus a few, so a one-word turn has room for its word, its punctuation and the end token."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    """The shared model and tokenizer of one model folder."""

    model: Any
    """`moonshine_onnx.MoonshineOnnxModel`."""
    tokenizer: Any
    """`tokenizers.Tokenizer` read from the folder's `tokenizer.json`."""


class MoonshineSTT:
    """Speech-to-text with Moonshine on the CPU: `MoonshineSTT("tiny")`.

    `model_dir` points at a folder holding `encoder_model.ort`, `decoder_model_merged.ort` and
    `tokenizer.json`; by default it is `agentkit.models.model_path("moonshine-tiny-en")`.
    Turns shorter than 0.25 s, and silent ones, give an empty transcript without running the model.
    """

    sample_rate = _SAMPLE_RATE

    _loaded: ClassVar[dict[Path, _Loaded]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str = "tiny", *, model_dir: str | Path | None = None) -> None:
        if model not in _MODELS:
            raise ConfigError(
                f"unknown Moonshine model {model!r}; available: {', '.join(_MODELS)}", model=model
            )
        self._model = model
        self._model_dir = Path(model_dir) if model_dir is not None else None

    @property
    def name(self) -> str:
        return f"moonshine/{self._model}"

    async def warm_up(self) -> None:
        """Load the shared model now (on the model executor) rather than on the first turn."""
        await run_model_job(self._load)

    async def aclose(self) -> None:
        """Nothing to release: the model and its onnxruntime sessions are shared for the process."""
        return None

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        if audio.sample_rate != _SAMPLE_RATE:
            raise AudioFormatError(
                f"MoonshineSTT takes {_SAMPLE_RATE} Hz audio, got {audio.sample_rate} Hz",
                sample_rate=audio.sample_rate,
            )
        duration_s = audio.duration_s
        samples = audio.samples
        if duration_s < _MIN_AUDIO_S or not np.isfinite(samples).all():
            return Transcript("", duration_s)
        if float(np.max(np.abs(samples))) < _SILENCE_PEAK:
            return Transcript("", duration_s)
        text = await run_model_job(self._transcribe, samples)
        return Transcript(text, duration_s, language="en")

    # -- on the model executor ----------------------------------------------------------------------

    def _folder(self) -> Path:
        if self._model_dir is None:
            from agentkit.models import model_path

            self._model_dir = model_path(_MODELS[self._model])
        return self._model_dir

    def _load(self) -> _Loaded:
        folder = self._folder().resolve()
        with MoonshineSTT._lock:
            loaded = MoonshineSTT._loaded.get(folder)
            if loaded is None:
                loaded = _load_folder(folder, self._model)
                MoonshineSTT._loaded[folder] = loaded
        return loaded

    def _transcribe(self, samples: Samples) -> str:
        loaded = self._load()
        texts: list[str] = []
        try:
            for piece in _pieces(samples):
                if piece.shape[0] < _MIN_AUDIO_S * _SAMPLE_RATE:
                    continue
                max_len = math.ceil(piece.shape[0] / _SAMPLE_RATE * _TOKENS_PER_S) + _EXTRA_TOKENS
                tokens = loaded.model.generate(piece[None, :], max_len=max_len)[0]
                text = loaded.tokenizer.decode(tokens, skip_special_tokens=True).strip()
                if tokens[-1] != loaded.model.eos_token_id:
                    logger.debug("Moonshine hit its bound of %d tokens; the text is cut short", max_len)
                if text:
                    texts.append(text)
        except Exception as exc:  # onnxruntime raises plain RuntimeErrors
            raise ProviderError(f"Moonshine transcription failed: {exc}", provider=self.name) from exc
        return clean_quotes(" ".join(texts))  # it sometimes opens with a stray `"'`


def _load_folder(folder: Path, model: str) -> _Loaded:
    files = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.json")
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"Moonshine model folder {folder} lacks {', '.join(missing)}; run "
            "`agentkit models download moonshine-tiny-en` or set AGENTKIT_MODELS_DIR",
            path=str(folder),
        )
    try:
        import moonshine_onnx
        import tokenizers
    except ImportError as exc:
        raise ConfigError(
            "MoonshineSTT needs `useful-moonshine-onnx` and `tokenizers`: run scripts/install, or "
            "`pip install tokenizers` and `pip install --no-deps useful-moonshine-onnx==20251121`",
            missing=exc.name,
        ) from exc
    logger.info("loading Moonshine %s from %s", model, folder)
    onnx_model = moonshine_onnx.MoonshineOnnxModel(
        models_dir=str(folder), model_name=f"moonshine/{model}", model_format="ort"
    )
    # The library opens its sessions with onnxruntime's defaults: an intra-op thread per core that
    # spins between calls. One thread that sleeps is as fast here (the decoder runs token by token;
    # ~90 ms for a 5 s turn either way) and leaves the other core to the audio thread and the loop.
    onnx_model.encoder = _session(folder / "encoder_model.ort")
    onnx_model.decoder = _session(folder / "decoder_model_merged.ort")
    return _Loaded(onnx_model, tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _pieces(samples: Samples) -> list[Samples]:
    """Cut `samples` into pieces of at most `_MAX_CHUNK_S`, each ending at a quiet moment."""
    limit = int(_MAX_CHUNK_S * _SAMPLE_RATE)
    window = int(_CUT_WINDOW_S * _SAMPLE_RATE)
    search = int(_CUT_SEARCH_S * _SAMPLE_RATE) // window
    pieces: list[Samples] = []
    start = 0
    while samples.shape[0] - start > limit:
        # Energy of consecutive windows in the last `_CUT_SEARCH_S` before the limit; cut in the quietest.
        tail = samples[start + limit - search * window : start + limit]
        energy = np.square(tail.reshape(search, window), dtype=np.float64).sum(axis=1)
        cut = start + limit - search * window + int(np.argmin(energy)) * window + window // 2
        pieces.append(samples[start:cut])
        start = cut
    pieces.append(samples[start:])
    return pieces
