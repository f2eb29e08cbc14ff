"""The executors for CPU-bound work, kept off the event loop: one for audio, one for model inference.

- `run_audio_job`: codecs, resampling, VAD. One worker thread serves every session: each job is a
  fraction of a millisecond, jobs of one session stay in order, and a single thread leaves the other
  core to the event loop and the models.
- `run_model_job`: heavy inference (STT over a whole turn, TTS of a sentence), tens to hundreds of
  milliseconds per job. It has its own small pool ("agentkit-model" threads) so that a 300 ms TTS call
  never sits in front of a 32 ms VAD chunk on the audio thread: turn-taking and barge-in detection stay
  on time while the models are busy. The pool is bounded (two threads by default, one per core here,
  `AGENTKIT_MODEL_THREADS` to change) so that many sessions queue their inference instead of
  oversubscribing the CPU; the models' own intra-op threads add to it, so keep both small.

A local LLM's generation (seconds long) is not a model job: `LocalLLM` runs it on its own thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from agentkit.config import load_settings

__all__ = ["audio_thread_ids", "model_executor", "run_audio_job", "run_model_job"]

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_model_executor: ThreadPoolExecutor | None = None
_audio_threads: list[tuple[int, int]] = []
"""(thread ident, native id) of each audio worker thread started so far."""


def _note_audio_thread() -> None:
    _audio_threads.append((threading.get_ident(), threading.get_native_id()))


def audio_thread_ids() -> list[tuple[int, int]]:
    """(thread ident, native id) of the audio worker thread, once it has started (the load monitor
    counts its CPU with the event loop's: every frame passes through both)."""
    return list(_audio_threads)


def audio_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="agentkit-audio", initializer=_note_audio_thread
            )
        return _executor


async def run_audio_job(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` on the audio worker thread and await its result."""
    loop = asyncio.get_running_loop()
    if kwargs:
        return await loop.run_in_executor(audio_executor(), lambda: fn(*args, **kwargs))
    return await loop.run_in_executor(audio_executor(), fn, *args)


def model_executor() -> ThreadPoolExecutor:
    """The shared pool for model inference, created on first use (size read then)."""
    global _model_executor
    with _lock:
        if _model_executor is None:
            _model_executor = ThreadPoolExecutor(
                max_workers=load_settings().model_threads, thread_name_prefix="agentkit-model"
            )
        return _model_executor


async def run_model_job(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` on the model inference pool and await its result.

    Cancelling the await does not stop a job already running (a native call cannot be interrupted);
    its result is dropped. Jobs should therefore be bounded: one sentence, one turn.
    """
    loop = asyncio.get_running_loop()
    if kwargs:
        return await loop.run_in_executor(model_executor(), lambda: fn(*args, **kwargs))
    return await loop.run_in_executor(model_executor(), fn, *args)
