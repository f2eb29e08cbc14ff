"""Silero VAD (v5/v6 ONNX) on onnxruntime: one shared single-threaded session per rate, per-stream state."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentkit.audio import Samples
from agentkit.providers.vad._base import VADStream

__all__ = ["SileroVAD"]

logger = logging.getLogger(__name__)

_SIZES = {16000: (512, 64), 8000: (256, 32)}
"""Sample rate → (chunk, context): the model takes 32 ms chunks at either rate, each after the last
4 ms of the chunk before it."""


class SileroVAD:
    """Silero voice activity detector at 16 kHz (or 8 kHz, `sample_rate=8000`), 32 ms chunks.

    The ONNX session is loaded once per model file and rate and shared by every stream (onnxruntime
    sessions are safe to call from several threads); it runs single-threaded, since one call costs
    about 0.1 ms and many sessions share the machine. `probabilities` scores a chunk of each of many
    streams in one call (a `BatchedVAD`). By default the session runs agentkit's rewrite of the
    model's graph (`_silero_graph`), in which each layer is one matrix product over the whole batch:
    about 15 µs per chunk from 16 streams up at 16 kHz and 9 µs at 8 kHz, where the file's own graph
    costs 55 and 31. The rewrite is checked against the file's graph on a probe when it loads, and
    dropped for the file's graph (with a warning) if they disagree or the file is laid out
    differently; `batched_graph=False` always runs the file's graph. The same model file serves both
    rates: phone audio (8 kHz) needs no resampling when the handler takes it as it comes (`at_rate`).
    """

    _models: ClassVar[dict[tuple[Path, int, bool], _Model]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, model_path: str | Path | None = None, *, sample_rate: int = 16000, batched_graph: bool = True
    ) -> None:
        if sample_rate not in _SIZES:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        self._model_path = Path(model_path) if model_path is not None else None
        self._model: _Model | None = None
        self.sample_rate = sample_rate
        self.chunk_samples = _SIZES[sample_rate][0]
        self.batched_graph = batched_graph
        self._siblings: dict[int, SileroVAD] = {sample_rate: self}
        self._siblings_lock = threading.Lock()

    def at_rate(self, sample_rate: int) -> SileroVAD:
        """This detector at another sample rate (8000 or 16000), on the same model file. The same
        object every time for a rate, so the sessions that use it share VAD batches."""
        with self._siblings_lock:
            sibling = self._siblings.get(sample_rate)
            if sibling is None:
                sibling = SileroVAD(
                    self._model_path, sample_rate=sample_rate, batched_graph=self.batched_graph
                )
                sibling._siblings = self._siblings  # every rate's detector knows the others
                sibling._siblings_lock = self._siblings_lock
                self._siblings[sample_rate] = sibling
            return sibling

    @property
    def model_path(self) -> Path:
        if self._model_path is None:
            from agentkit.models import model_path

            self._model_path = model_path("silero-vad", "silero_vad.onnx")
        return self._model_path

    @property
    def runs_batched_graph(self) -> bool:
        """Whether the loaded session runs the rewritten graph (False before `load`)."""
        return self._model is not None and self._model.rewritten

    def load(self) -> None:
        """Load (or reuse) the shared ONNX session now rather than on the first chunk."""
        if self._model is not None:
            return
        key = (self.model_path.resolve(), self.sample_rate, self.batched_graph)
        with SileroVAD._lock:
            model = SileroVAD._models.get(key)
            if model is None:
                model = _load(*key)
                SileroVAD._models[key] = model
        self._model = model

    def stream(self) -> _SileroStream:
        self.load()
        assert self._model is not None
        return _SileroStream(self._model, self.sample_rate)

    async def aclose(self) -> None:
        """Let go of the shared session; it stays loaded for the process, and streams keep working."""
        self._model = None

    def probabilities(self, streams: Sequence[VADStream], chunks: Sequence[Samples]) -> list[float]:
        """One chunk of each stream in one `session.run`: the streams' contexts and recurrent states
        are stacked into a batch (`input` (B, 64 + 512) at 16 kHz, `state` (2, B, 128)) and scattered
        back.

        Raises `ValueError`, before any state changes, for streams of another model (or of another
        model file or sample rate) or chunks of the wrong size.
        """
        if len(streams) != len(chunks):
            raise ValueError(f"{len(streams)} streams but {len(chunks)} chunks")
        ours = [s for s in streams if isinstance(s, _SileroStream)]
        first = ours[0] if ours else None
        if (
            first is None
            or len(ours) != len(streams)
            or any(s.model is not first.model or s.sample_rate != first.sample_rate for s in ours)
        ):
            raise ValueError("a batch takes streams of one Silero model at one sample rate only")
        context = first.context
        inputs = np.empty((len(ours), context + first.chunk), dtype=np.float32)
        # whole-batch copies (numpy loops over the lists in C), not three small copies per stream
        try:
            inputs[:, context:] = chunks
        except ValueError:  # a chunk of another size
            for chunk in chunks:
                first.check(chunk)
            raise
        inputs[:, :context] = [stream.last_context for stream in ours]
        states = np.stack([stream.last_state for stream in ours], axis=1)  # (2, B, 128)
        prob, new_states = first.model.run(inputs, states)
        contexts = inputs[:, -context:].copy()
        for stream, row_context, row_state in zip(ours, contexts, new_states.transpose(1, 0, 2), strict=True):
            stream.last_context, stream.last_state = row_context, row_state
        probabilities: list[float] = prob[:, 0].tolist()
        return probabilities


class _Model:
    """A loaded graph: the session and the feeds it takes besides `input` and `state`."""

    def __init__(self, session: Any, extra_feeds: dict[str, Any], *, rewritten: bool) -> None:
        self.session = session
        self.extra_feeds = extra_feeds
        self.rewritten = rewritten

    def run(self, inputs: Samples, states: Samples) -> tuple[Samples, Samples]:
        """(probabilities (B, 1), new states (2, B, 128)) for a batch."""
        prob, new_states = self.session.run(None, {"input": inputs, "state": states, **self.extra_feeds})
        return prob, new_states


def _session(source: str | bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _load(path: Path, sample_rate: int, batched_graph: bool) -> _Model:
    original = _Model(_session(str(path)), {"sr": np.array(sample_rate, dtype=np.int64)}, rewritten=False)
    if not batched_graph:
        return original
    try:
        from agentkit.providers.vad._silero_graph import rewrite

        chunk, context = _SIZES[sample_rate]
        candidate = _Model(_session(rewrite(path, sample_rate, chunk, context)), {}, rewritten=True)
        gap = _disagreement(original, candidate, chunk + context)
    except Exception as exc:  # an unknown layout, no `onnx` package, a graph onnxruntime refuses
        logger.warning("Silero VAD: running %s as published, not batched (%s)", path.name, exc)
        return original
    if gap > _PROBE_TOLERANCE:
        logger.warning(
            "Silero VAD: the batched graph of %s is off by %.2g; running it as published", path.name, gap
        )
        return original
    return candidate


_PROBE_TOLERANCE = 1e-3
"""Largest difference in any probability or state value allowed between the rewritten graph and the
file's on the probe (float32 sums in another order differ by about 1e-5)."""


def _disagreement(original: _Model, candidate: _Model, input_samples: int) -> float:
    """The largest difference between the two graphs over 40 chunks of 4 seeded streams: noise at
    four levels plus a voiced-like harmonic tone, so that both silence and speech-like states are
    visited, each stream's state fed back as a session would."""
    rng = np.random.default_rng(7)
    t = np.arange(input_samples, dtype=np.float32)
    states = [np.zeros((2, 4, 128), dtype=np.float32) for _ in range(2)]
    worst = 0.0
    for step in range(40):
        tone = 0.3 * np.sin(2 * np.pi * (0.01 + 0.001 * step) * t) * np.sin(np.pi * t / input_samples)
        noise = rng.standard_normal((4, input_samples)).astype(np.float32)
        inputs = (noise * np.array([[1e-4], [0.01], [0.1], [0.3]], dtype=np.float32) + tone).astype(
            np.float32
        )
        (p0, states[0]), (p1, states[1]) = original.run(inputs, states[0]), candidate.run(inputs, states[1])
        worst = max(worst, float(np.abs(p0 - p1).max()), float(np.abs(states[0] - states[1]).max()))
    return worst


class _SileroStream:
    """Recurrent state and context (the last 4 ms of the previous chunk) for one audio stream.

    Both are replaced, never written into, so a batch may hand each stream views of its own output
    arrays (`SileroVAD.probabilities`)."""

    def __init__(self, model: _Model, sample_rate: int) -> None:
        self.model = model
        self.sample_rate = sample_rate
        self.chunk, self.context = _SIZES[sample_rate]
        self.reset()

    def reset(self) -> None:
        self.last_context: Samples = np.zeros(self.context, dtype=np.float32)
        self.last_state: Samples = np.zeros((2, 128), dtype=np.float32)

    def probability(self, chunk: Samples) -> float:
        self.check(chunk)
        inputs = np.empty((1, self.context + self.chunk), dtype=np.float32)
        inputs[0, : self.context] = self.last_context
        inputs[0, self.context :] = chunk
        prob, new_state = self.model.run(inputs, self.last_state[:, None, :])
        self.last_context = inputs[0, -self.context :]
        self.last_state = new_state[:, 0]
        return float(prob[0, 0])

    def check(self, chunk: Samples) -> None:
        if chunk.shape[0] != self.chunk:
            rate, size = self.sample_rate, chunk.shape[0]
            raise ValueError(f"Silero VAD at {rate} Hz takes chunks of {self.chunk} samples, got {size}")
