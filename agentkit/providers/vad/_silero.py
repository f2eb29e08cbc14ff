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

_SAMPLE_RATE = 16000
_CHUNK = 512  # 32 ms at 16 kHz: the only chunk size the 16 kHz model takes
_CONTEXT = 64  # samples of the previous chunk the model sees before each new one


class SileroVAD:
    """Silero voice activity detector at 16 kHz, 32 ms chunks.

    The ONNX session is loaded once per model file and shared by every stream (onnxruntime sessions
    are safe to call from several threads); it runs single-threaded, since one call costs about
    0.1 ms and many sessions share the machine. `probabilities` scores a chunk of each of many streams
    in one call (a `BatchedVAD`): about 0.06 ms per chunk from ten streams up, most of one call's
    cost being fixed.
    """

    sample_rate = _SAMPLE_RATE
    chunk_samples = _CHUNK

    _sessions: ClassVar[dict[Path, Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model_path: str | Path | None = None) -> None:
        self._model_path = Path(model_path) if model_path is not None else None
        self._session: Any = None

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
        return _SileroStream(self._session)

    async def aclose(self) -> None:
        """Let go of the shared session; it stays loaded for the process, and streams keep working."""
        self._session = None

    def probabilities(self, streams: Sequence[VADStream], chunks: Sequence[Samples]) -> list[float]:
        """One chunk of each stream in one `session.run`: the streams' contexts and recurrent states
        are stacked into a batch (`input` (B, 64 + 512), `state` (2, B, 128)) and scattered back.

        Raises `ValueError`, before any state changes, for streams of another model (or of another
        model file) or chunks of the wrong size.
        """
        if len(streams) != len(chunks):
            raise ValueError(f"{len(streams)} streams but {len(chunks)} chunks")
        ours = [s for s in streams if isinstance(s, _SileroStream)]
        if not ours or len(ours) != len(streams) or any(s.session is not ours[0].session for s in ours):
            raise ValueError("a batch takes streams of one Silero model only")
        inputs = np.empty((len(ours), _CONTEXT + _CHUNK), dtype=np.float32)
        states = np.empty((2, len(ours), 128), dtype=np.float32)
        for row, (stream, chunk) in enumerate(zip(ours, chunks, strict=True)):
            stream.stage(chunk, inputs[row], states[:, row])
        prob, new_states = ours[0].session.run(
            None, {"input": inputs, "state": states, "sr": ours[0].sample_rate_input}
        )
        for row, stream in enumerate(ours):
            stream.commit(inputs[row], new_states[:, row : row + 1])
        return [float(p) for p in prob[:, 0]]


class _SileroStream:
    """Recurrent state and 64-sample context for one audio stream."""

    sample_rate_input = np.array(_SAMPLE_RATE, dtype=np.int64)
    """The model's `sr` input (a scalar), shared by every call."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._input = np.zeros((1, _CONTEXT + _CHUNK), dtype=np.float32)  # preallocated
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, chunk: Samples) -> float:
        _check_chunk(chunk)
        self._input[0, :_CONTEXT] = self._input[0, -_CONTEXT:]
        self._input[0, _CONTEXT:] = chunk
        prob, self._state = self.session.run(
            None, {"input": self._input, "state": self._state, "sr": self.sample_rate_input}
        )
        return float(prob[0, 0])

    def stage(self, chunk: Samples, input_row: Samples, state_rows: Samples) -> None:
        """Write this stream's row of a batch: its context then `chunk`, and its recurrent state."""
        _check_chunk(chunk)
        input_row[:_CONTEXT] = self._input[0, -_CONTEXT:]
        input_row[_CONTEXT:] = chunk
        state_rows[...] = self._state[:, 0]

    def commit(self, input_row: Samples, new_state: Samples) -> None:
        """Take back this stream's row after the batched call (as `probability` would have left it)."""
        self._input[0] = input_row
        self._state = np.ascontiguousarray(new_state)


def _check_chunk(chunk: Samples) -> None:
    if chunk.shape[0] != _CHUNK:
        raise ValueError(f"Silero VAD takes chunks of {_CHUNK} samples, got {chunk.shape[0]}")
