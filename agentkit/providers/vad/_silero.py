"""Silero VAD (v5/v6 ONNX) on onnxruntime: one shared single-threaded session, per-stream state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentkit.audio import Samples

__all__ = ["SileroVAD"]

_SAMPLE_RATE = 16000
_CHUNK = 512  # 32 ms at 16 kHz: the only chunk size the 16 kHz model takes
_CONTEXT = 64  # samples of the previous chunk the model sees before each new one


class SileroVAD:
    """Silero voice activity detector at 16 kHz, 32 ms chunks.

    The ONNX session is loaded once per model file and shared by every stream (onnxruntime sessions
    are safe to call from several threads); it runs single-threaded, since one call costs about
    0.1 ms and many sessions share the machine.
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


class _SileroStream:
    """Recurrent state and 64-sample context for one audio stream."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._sr = np.array(_SAMPLE_RATE, dtype=np.int64)
        self._input = np.zeros((1, _CONTEXT + _CHUNK), dtype=np.float32)  # preallocated
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, chunk: Samples) -> float:
        if chunk.shape[0] != _CHUNK:
            raise ValueError(f"Silero VAD takes chunks of {_CHUNK} samples, got {chunk.shape[0]}")
        self._input[0, :_CONTEXT] = self._input[0, -_CONTEXT:]
        self._input[0, _CONTEXT:] = chunk
        prob, self._state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        return float(prob[0, 0])
