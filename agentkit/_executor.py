"""The executor for CPU-bound audio work (codecs, resampling, VAD), kept off the event loop.

One worker thread serves every session: each job is a fraction of a millisecond, jobs of one session
stay in order, and a single thread leaves the other core to the event loop and the models.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["run_audio_job"]

P = ParamSpec("P")
T = TypeVar("T")

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def audio_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentkit-audio")
        return _executor


async def run_audio_job(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` on the audio worker thread and await its result."""
    loop = asyncio.get_running_loop()
    if kwargs:
        return await loop.run_in_executor(audio_executor(), lambda: fn(*args, **kwargs))
    return await loop.run_in_executor(audio_executor(), fn, *args)
