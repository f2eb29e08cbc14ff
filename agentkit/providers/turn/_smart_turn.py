"""Smart Turn v3.2 on onnxruntime: one shared single-threaded session, calls batched across sessions.

Each check costs tens of milliseconds of one core. Checks that arrive from many sessions within
`batch_window_ms` of the first (or until `max_batch` have joined) go into one ONNX run on the model
pool (`run_model_job`); each caller awaits its own probability. A batch saves per-call overhead,
not compute (about 50 ms per clip on this machine's cores either way), and runs on one model thread:
batches of a few keep every model thread busy, while one batch of 16 would leave the others idle.

```
probability(clip) ─► open batch? ─no─► open one; its task waits batch_window_ms (or until full)
                          │ yes                                  │
                          └──────────► join it ◄─────────────────┘
                                         │
                        one run: clip_batch ─► log_mel_features ─► session.run ─► each caller's future
```

A caller that is cancelled while waiting only drops its own result. A model file that cannot be
loaded is logged once, and `load()` then says False: turn-taking falls back to silence alone.
`SmartTurn(optional=True)`, an `Agent`'s default, is used only if its file is already in the models
dir: it never downloads, and its absence is one info line per process, not a warning.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentkit._executor import run_model_job
from agentkit._tasks import TaskSet
from agentkit.audio import Samples
from agentkit.exceptions import ModelNotFoundError
from agentkit.providers.turn._features import CLIP_SAMPLES, SAMPLE_RATE, clip_batch, log_mel_features

__all__ = ["SmartTurn"]

logger = logging.getLogger(__name__)

_MODEL = "smart-turn"
_FILE = "smart-turn-v3.2-cpu.onnx"


@dataclass(slots=True)
class _Batch:
    loop: asyncio.AbstractEventLoop
    clips: list[Samples] = field(default_factory=list)
    futures: list[asyncio.Future[float]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)


class SmartTurn:
    """The Smart Turn v3.2 audio end-of-turn classifier (an `EndOfTurnModel`).

    `model_path` defaults to `smart-turn/smart-turn-v3.2-cpu.onnx` in the models dir. The ONNX
    session is loaded once per model file (and thread count) and shared by every instance and
    session. `threads`: onnxruntime's intra-op threads for one run: with 2, a check (features
    included) takes about 37 ms instead of 48 on two free cores, at about 15 % more CPU per check;
    1 spends the least when many calls check at once.
    """

    sample_rate = SAMPLE_RATE
    max_audio_samples = CLIP_SAMPLES

    _sessions: ClassVar[dict[tuple[Path, int], Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()
    _absence_logged: ClassVar[bool] = False  # optional instances: the model's absence said once

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        batch_window_ms: float = 5.0,
        max_batch: int = 4,
        optional: bool = False,
        threads: int = 2,
    ) -> None:
        if batch_window_ms < 0 or max_batch < 1:
            raise ValueError("batch_window_ms must not be negative and max_batch must be at least 1")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self._model_path = Path(model_path) if model_path is not None else None
        self.batch_window_ms = batch_window_ms
        """How long the first check of a batch waits for others to join."""
        self.max_batch = max_batch
        """A batch this large runs at once, without waiting out the window."""
        self.optional = optional
        """Use the model only if its file is present (never download it); its absence is an info
        line, once per process, and turn-taking keeps to silence."""
        self._session: Any = None
        self._unavailable: str | None = None
        self._open: _Batch | None = None
        self._tasks = TaskSet("smart-turn")
        self.runs = 0
        """ONNX runs so far (one per batch)."""
        self.checks = 0
        """Clips scored so far."""

    @property
    def model_path(self) -> Path:
        if self._model_path is None:
            from agentkit.models import model_path

            self._model_path = model_path(_MODEL, _FILE, download=False if self.optional else None)
        return self._model_path

    def load(self) -> bool:
        """Load (or reuse) the shared session; False, logged once per instance, if it cannot be used."""
        with SmartTurn._lock:
            if self._session is not None:
                return True
            if self._unavailable is not None:
                return False
            try:
                self._session = _shared_session(self.model_path, self.threads)
            except ModelNotFoundError as exc:
                self._unavailable = str(exc)
                if not self.optional:
                    logger.warning("semantic end of turn is off, turns end on silence alone: %s", exc)
                elif not SmartTurn._absence_logged:
                    SmartTurn._absence_logged = True
                    logger.info(
                        "semantic end of turn is off: the Smart Turn model is not in the models dir "
                        "(%s), so turns end on silence alone; `agentkit models download smart-turn` "
                        "turns it on",
                        exc.context.get("directory") or exc.context.get("path") or "not found",
                    )
                return False
            except (OSError, RuntimeError) as exc:
                self._unavailable = str(exc)
                logger.warning("semantic end of turn is off, turns end on silence alone: %s", exc)
                return False
            return True

    def predict(self, clips: list[Samples]) -> np.ndarray:
        """Probabilities (float64, one per clip) from one ONNX run. Blocking: call it off the loop."""
        if self._session is None and not self.load():
            raise ModelNotFoundError(f"Smart Turn is unavailable: {self._unavailable}", model=_MODEL)
        features = log_mel_features(clip_batch(clips))
        (logits,) = self._session.run(["logits"], {"input_features": features})
        return np.asarray(logits, dtype=np.float64)[:, 0]

    async def probability(self, samples: Samples) -> float:
        """Probability that the speaker has finished, from the end of the turn's audio (batched)."""
        if self._session is None and not await asyncio.to_thread(self.load):
            raise ModelNotFoundError(f"Smart Turn is unavailable: {self._unavailable}", model=_MODEL)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        batch = self._open
        if batch is None or batch.loop is not loop:
            batch = self._open = _Batch(loop)
            self._tasks.spawn(self._run(batch), "batch")
        batch.clips.append(samples[-CLIP_SAMPLES:])
        batch.futures.append(future)
        if len(batch.clips) >= self.max_batch:
            self._open = None
            batch.full.set()
        return await future

    async def _run(self, batch: _Batch) -> None:
        try:
            try:
                async with asyncio.timeout(self.batch_window_ms / 1000):
                    await batch.full.wait()
            except TimeoutError:
                pass
            if self._open is batch:
                self._open = None
            self.runs += 1
            self.checks += len(batch.clips)
            probabilities = await run_model_job(self.predict, batch.clips)
        except asyncio.CancelledError:
            if self._open is batch:
                self._open = None
            for future in batch.futures:
                future.cancel()
            raise
        except Exception as exc:  # every caller in the batch hears of it; none is left waiting
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, probability in zip(batch.futures, probabilities, strict=True):
            if not future.done():  # its caller may have given up
                future.set_result(float(probability))

    async def aclose(self) -> None:
        """Cancel batches still waiting; the shared session stays loaded for the process, and the
        instance can be used again (an `Agent`'s default is shared by every agent)."""
        tasks, self._tasks = self._tasks, TaskSet("smart-turn")
        self._open = None
        await tasks.aclose(1.0)

    def __repr__(self) -> str:
        return (
            f"SmartTurn(optional={self.optional})"
            if self._model_path is None
            else (f"SmartTurn({str(self._model_path)!r}, optional={self.optional})")
        )


def _shared_session(path: Path, threads: int) -> Any:
    """The process-wide session for `path` with `threads` intra-op threads (call with
    `SmartTurn._lock` held)."""
    path = path.resolve()
    session = SmartTurn._sessions.get((path, threads))
    if session is None:
        if not path.is_file():
            raise ModelNotFoundError(f"Smart Turn model file {path} not found", model=_MODEL, path=str(path))
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # spinning within a check, stopped at its end: idle between checks
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        SmartTurn._sessions[path, threads] = session
    return session
