"""The audio thread (`agentkit._executor.AudioThread`): one thread, jobs in the order given, whether
they come with a future (`submit`, `run_in_executor`) or a callback on the loop (`call`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agentkit._executor import AudioThread, audio_executor, audio_thread_ids, run_audio_job
from agentkit.stream._load import media_threads_time


async def test_submitted_and_called_jobs_run_in_order_on_one_thread() -> None:
    worker = AudioThread("test-audio")
    loop = asyncio.get_running_loop()
    ran: list[tuple[str, str]] = []
    outcomes: list[tuple[Any, BaseException | None]] = []
    all_done = asyncio.Event()

    def job(name: str) -> str:
        ran.append((name, threading.current_thread().name))
        return name.upper()

    def done(result: str | None, error: BaseException | None) -> None:
        outcomes.append((result, error))
        if len(outcomes) == 3:
            all_done.set()

    futures = []
    for i in range(6):
        if i % 2:
            worker.call(loop, job, f"call{i}", done)
        else:
            futures.append(loop.run_in_executor(worker, job, f"submit{i}"))
    assert await asyncio.gather(*futures) == ["SUBMIT0", "SUBMIT2", "SUBMIT4"]
    await asyncio.wait_for(all_done.wait(), 5)
    assert [name for name, _ in ran] == ["submit0", "call1", "submit2", "call3", "submit4", "call5"]
    assert {thread for _, thread in ran} == {"test-audio_0"}
    assert outcomes == [("CALL1", None), ("CALL3", None), ("CALL5", None)]
    worker.shutdown()


async def test_a_failing_job_reports_its_error_and_the_thread_goes_on() -> None:
    worker = AudioThread("test-audio")
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()

    def boom(_: object) -> None:
        raise ValueError("bad chunk")

    worker.call(loop, boom, None, lambda result, error: got.set_result((result, error)))
    result, error = await asyncio.wait_for(got, 5)
    assert result is None and isinstance(error, ValueError) and str(error) == "bad chunk"
    with pytest.raises(ValueError, match="bad chunk"):
        await loop.run_in_executor(worker, boom, None)
    assert await loop.run_in_executor(worker, lambda: 42) == 42
    worker.shutdown()


def test_a_callback_for_a_closed_loop_is_dropped_and_later_jobs_still_run() -> None:
    worker = AudioThread("test-audio")
    gone = asyncio.new_event_loop()
    release = threading.Event()
    called: list[object] = []
    worker.call(gone, lambda _: release.wait(5), None, lambda *a: called.append(a))
    gone.close()  # before the job finishes: its callback has nowhere to go
    release.set()
    assert worker.submit(lambda: "still here").result(timeout=5) == "still here"
    assert called == []
    worker.shutdown()


def test_shutdown_joins_the_thread_and_refuses_new_jobs() -> None:
    seen: list[str] = []
    worker = AudioThread(
        "test-audio",
        on_start=lambda: seen.append("start " + threading.current_thread().name),
        on_exit=lambda: seen.append("exit " + threading.current_thread().name),
    )
    assert worker.submit(lambda: 1).result(timeout=5) == 1
    thread = next(t for t in threading.enumerate() if t.name == "test-audio_0")
    worker.shutdown(wait=True)
    assert not thread.is_alive()
    assert seen == ["start test-audio_0", "exit test-audio_0"]
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(lambda: 2)


async def test_the_shared_audio_thread_serves_run_audio_job() -> None:
    assert isinstance(audio_executor(), AudioThread)
    name = await run_audio_job(lambda: threading.current_thread().name)
    assert name.startswith("agentkit-audio")


def test_only_the_shared_audio_thread_is_measured_and_never_once_gone() -> None:
    """The load monitor reads the CPU clock of each thread `audio_thread_ids` names; a thread that
    has ended must not be among them (`pthread_getcpuclockid` on it crashes the process)."""
    audio_executor().submit(lambda: None).result(timeout=5)
    before = audio_thread_ids()
    worker = AudioThread("test-audio")
    worker.submit(lambda: None).result(timeout=5)
    worker.shutdown(wait=True)
    assert audio_thread_ids() == before
    assert len(before) == 1 and before[0][0] in {t.ident for t in threading.enumerate()}
    assert media_threads_time() > 0
