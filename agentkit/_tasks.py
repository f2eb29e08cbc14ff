"""`TaskSet`: the one owner of a component's background tasks.

Every task agentkit starts belongs to a `TaskSet`: a session's pacer, an agent's replies, a WebRTC
connection's run loop. The set names each task after its owner, forgets a task once it is done,
logs (never raises) a task that failed, and `aclose()` cancels whatever is left and waits a bounded
time for it. Waiting on a task to finish after cancelling it is `cancel_and_wait`, which swallows
the *task's* cancellation but re-raises the *caller's*: a `contextlib.suppress(CancelledError)`
around such a wait would eat a cancellation aimed at the waiting task itself, which then carries
on as if nothing happened (a close that never ends, a barge-in that outlives its session).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskSet", "cancel_and_wait"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any], timeout_s: float) -> bool:
    """Cancel `task` and wait up to `timeout_s` for it to end; True when it has ended.

    The task's own outcome (cancelled, an exception) is not raised here. If the *calling* task is
    cancelled while it waits, that cancellation propagates as usual.
    """
    if task.done():
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        return False
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not warn "exception was never retrieved"
    return True


class TaskSet:
    """Named background tasks with one owner. Not thread-safe: use it from the event loop."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        """Prefix of every task's name, and how failures are labelled in the log."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.failed = 0
        """Tasks that ended with an exception (each one logged)."""

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start `coro` as a task named `{owner}-{name}`, owned by this set.

        Raises `RuntimeError` after `aclose()` (the coroutine is closed, not left unawaited).
        """
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.owner}: task set is closed; {name} not started")
        task = asyncio.create_task(coro, name=f"{self.owner}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failed += 1
            logger.error("%s: task %s failed", self.owner, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Refuse new tasks, cancel the running ones (not the calling task, if it is one of them)
        and wait up to `timeout_s` for them; a task still running then is logged and left.

        The caller's own cancellation while waiting propagates; the tasks' outcomes do not.
        """
        self._closed = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            logger.warning("%s: task %s did not stop within %.1f s", self.owner, task.get_name(), timeout_s)
