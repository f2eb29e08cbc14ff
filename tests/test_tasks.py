"""`TaskSet` and `cancel_and_wait`: named tasks with one owner, failures logged, the caller's own
cancellation never swallowed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agentkit._tasks import TaskSet, cancel_and_wait


async def test_tasks_are_named_after_their_owner_and_forgotten_when_done() -> None:
    tasks = TaskSet("session-ab12")
    gate = asyncio.Event()
    task = tasks.spawn(gate.wait(), "pace")
    assert task.get_name() == "session-ab12-pace"
    assert len(tasks) == 1 and list(tasks) == [task]
    gate.set()
    await task
    await asyncio.sleep(0)
    assert len(tasks) == 0


async def test_a_failed_task_is_logged_and_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("agent")

    async def boom() -> None:
        raise ValueError("bad")

    task = tasks.spawn(boom(), "reply-1")
    await asyncio.wait({task})
    await asyncio.sleep(0)
    assert tasks.failed == 1
    [record] = [r for r in caplog.records if r.name == "agentkit._tasks"]
    assert record.levelno == logging.ERROR and "agent-reply-1" in record.getMessage()


async def test_aclose_cancels_everything_and_refuses_new_tasks() -> None:
    tasks = TaskSet("peers")
    started = [tasks.spawn(asyncio.sleep(60), f"t{i}") for i in range(3)]
    await asyncio.sleep(0)
    await tasks.aclose(timeout_s=1)
    assert all(t.cancelled() for t in started)
    assert tasks.closed
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        tasks.spawn(coro, "late")


async def test_aclose_from_inside_one_of_its_tasks_does_not_cancel_itself() -> None:
    tasks = TaskSet("session")
    other = tasks.spawn(asyncio.sleep(60), "other")

    async def closer() -> str:
        await tasks.aclose(timeout_s=1)
        return "closed"

    me = tasks.spawn(closer(), "closer")
    assert await me == "closed"
    assert other.cancelled()


async def test_aclose_gives_up_on_a_task_that_will_not_stop(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("stubborn")
    release = asyncio.Event()

    async def ignores_cancel() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = tasks.spawn(ignores_cancel(), "loop")
    await asyncio.sleep(0)
    await tasks.aclose(timeout_s=0.05)
    assert not task.done()
    assert any("did not stop" in r.getMessage() for r in caplog.records)
    release.set()
    await task


async def test_cancel_and_wait_swallows_the_tasks_cancellation() -> None:
    task = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, 1) is True
    assert task.cancelled()


async def test_cancel_and_wait_reraises_the_callers_own_cancellation() -> None:
    """The waiter is cancelled while it waits for a slow-to-stop task: it must stop too, which
    `contextlib.suppress(CancelledError)` around the wait would have prevented."""
    slow_stop = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await slow_stop.wait()  # takes its time to clean up

    target = asyncio.create_task(slow())
    await asyncio.sleep(0)
    after_wait = []

    async def waiter() -> None:
        await cancel_and_wait(target, 10)
        after_wait.append("went on")  # must not happen: the waiter itself was cancelled

    outer = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert after_wait == []
    slow_stop.set()
    await asyncio.wait({target})


async def test_cancel_and_wait_reports_a_task_that_outlives_the_timeout() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, 0.05) is False
    release.set()
    await task
