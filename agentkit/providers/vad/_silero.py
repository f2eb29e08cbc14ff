"""Silero VAD (v5/v6 ONNX) on onnxruntime: one shared single-threaded session, per-stream state."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentkit.audio import Samples
from agentkit.providers.vad._base import VADStream

__all__ = ["SileroVAD"]

_SIZES = {16000: (512, 64), 8000: (256, 32)}
"""Sample rate → (chunk, context): the model takes 32 ms chunks at either rate, each after the last
4 ms of the chunk before it."""


class SileroVAD:
    """Silero voice activity detector at 16 kHz (or 8 kHz, `sample_rate=8000`), 32 ms chunks.

    The ONNX session is loaded once per model file and shared by every stream (onnxruntime sessions
    are safe to call from several threads); it runs single-threaded, since one call costs about
    0.1 ms and many sessions share the machine. `probabilities` scores a chunk of each of many streams
    in one call (a `BatchedVAD`): about 0.06 ms per chunk from ten streams up at 16 kHz and 0.04 ms at
    8 kHz, most of one call's cost being fixed. The same model file serves both rates: phone audio
    (8 kHz) needs no resampling when the handler takes it as it comes (`at_rate`).
    """

    _sessions: ClassVar[dict[Path, Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model_path: str | Path | None = None, *, sample_rate: int = 16000) -> None:
        if sample_rate not in _SIZES:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        self._model_path = Path(model_path) if model_path is not None else None
        self._session: Any = None
        self.sample_rate = sample_rate
        self.chunk_samples = _SIZES[sample_rate][0]
        self._siblings: dict[int, SileroVAD] = {sample_rate: self}
        self._siblings_lock = threading.Lock()

    def at_rate(self, sample_rate: int) -> SileroVAD:
        """This detector at another sample rate (8000 or 16000), on the same model file. The same
        object every time for a rate, so the sessions that use it share VAD batches."""
        with self._siblings_lock:
            sibling = self._siblings.get(sample_rate)
            if sibling is None:
                sibling = SileroVAD(self._model_path, sample_rate=sample_rate)
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

    def load(self) -> None:
        """Load (or reuse) the shared ONNX session now rather than on the first chunk."""
        if self._session is not None:
            return
        path = self.model_path.resolve()
        with SileroVAD._lock:
            session = SileroVAD._sessions.get(path)
            if session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                session = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                SileroVAD._sessions[path] = session
        self._session = session

    def stream(self) -> _SileroStream:
        self.load()
        return _SileroStream(self._session, self.sample_rate)

    async def aclose(self) -> None:
        """Let go of the shared session; it stays loaded for the process, and streams keep working."""
        self._session = None

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
            or any(s.session is not first.session or s.sample_rate != first.sample_rate for s in ours)
        ):
            raise ValueError("a batch takes streams of one Silero model at one sample rate only")
        inputs = np.empty((len(ours), first.context + first.chunk), dtype=np.float32)
        states = np.empty((2, len(ours), 128), dtype=np.float32)
        for row, (stream, chunk) in enumerate(zip(ours, chunks, strict=True)):
            stream.stage(chunk, inputs[row], states[:, row])
        prob, new_states = first.session.run(None, {"input": inputs, "state": states, "sr": first.sr})
        for row, stream in enumerate(ours):
            stream.commit(inputs[row], new_states[:, row : row + 1])
        return [float(p) for p in prob[:, 0]]


_SR_INPUTS = {rate: np.array(rate, dtype=np.int64) for rate in _SIZES}
"""The model's `sr` input (a scalar) for each rate, shared by every call."""


class _SileroStream:
    """Recurrent state and context (the last 4 ms of the previous chunk) for one audio stream."""

    def __init__(self, session: Any, sample_rate: int) -> None:
        self.session = session
        self.sample_rate = sample_rate
        self.sr = _SR_INPUTS[sample_rate]
        self.chunk, self.context = _SIZES[sample_rate]
        self._input = np.zeros((1, self.context + self.chunk), dtype=np.float32)  # preallocated
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, chunk: Samples) -> float:
        self._check(chunk)
        context = self.context
        self._input[0, :context] = self._input[0, -context:]
        self._input[0, context:] = chunk
        feeds = {"input": self._input, "state": self._state, "sr": self.sr}
        prob, self._state = self.session.run(None, feeds)
        return float(prob[0, 0])

    def stage(self, chunk: Samples, input_row: Samples, state_rows: Samples) -> None:
        """Write this stream's row of a batch: its context then `chunk`, and its recurrent state."""
        self._check(chunk)
        input_row[: self.context] = self._input[0, -self.context :]
        input_row[self.context :] = chunk
        state_rows[...] = self._state[:, 0]

    def commit(self, input_row: Samples, new_state: Samples) -> None:
        """Take back this stream's row after the batched call (as `probability` would have left it)."""
        self._input[0] = input_row
        self._state = np.ascontiguousarray(new_state)

    def _check(self, chunk: Samples) -> None:
        if chunk.shape[0] != self.chunk:
            rate, size = self.sample_rate, chunk.shape[0]
            raise ValueError(f"Silero VAD at {rate} Hz takes chunks of {self.chunk} samples, got {size}")
