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

- `run_turn_job`: one-off work over a whole turn's audio (resampling it for an STT), on asyncio's
  default pool. It needs no order with a session's stream of audio jobs, and it is waited for on
  the reply's path: on the audio thread it queued behind the VAD batch running there (a scripted
  agent's STT stage took 13-23 ms at p95 at 400-500 calls for a sub-millisecond resampling).

A local LLM's generation (seconds long) is not a model job: `LocalLLM` runs it on its own thread.

The audio thread is an `AudioThread`, not a `ThreadPoolExecutor(max_workers=1)`: the pool pays, per
job and in Python, a `concurrent.futures.Future` with its condition variable, a work item, an idle
semaphore taken and given back, and on the loop an asyncio future chained to the first. The turn
batcher hands this thread a job every few milliseconds per process (every session's input goes
through one), so it uses `AudioThread.call`: the job and a callback, no future on either side.
`submit` (what `run_in_executor` and `run_audio_job` use) goes to the same thread, in the same order.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from queue import Empty, SimpleQueue
from typing import Any, ParamSpec, TypeVar

from agentkit.config import load_settings

__all__ = [
    "AudioThread",
    "audio_executor",
    "audio_thread_ids",
    "model_executor",
    "run_audio_job",
    "run_model_job",
    "run_turn_job",
]

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")

_lock = threading.Lock()
_executor: AudioThread | None = None
_model_executor: ThreadPoolExecutor | None = None
_audio_threads: list[tuple[int, int]] = []
"""(thread ident, native id) of each audio worker thread started so far."""


def _note_audio_thread() -> None:
    _audio_threads.append((threading.get_ident(), threading.get_native_id()))


def _forget_audio_thread() -> None:
    # before the thread ends: a gone thread's id must not reach `pthread_getcpuclockid` (it crashes)
    with contextlib.suppress(ValueError):
        _audio_threads.remove((threading.get_ident(), threading.get_native_id()))


def audio_thread_ids() -> list[tuple[int, int]]:
    """(thread ident, native id) of the audio worker thread, once it has started (the load monitor
    counts its CPU with the event loop's: every frame passes through both)."""
    return list(_audio_threads)


class AudioThread(Executor):
    """One thread that runs jobs one at a time, in the order they were given (module docstring).

    `submit` is `Executor.submit` (a `concurrent.futures.Future` per job); `call` runs a job without
    any future and hands its outcome to a callback on an event loop. The thread starts with the
    first job and is joined at interpreter exit (or `shutdown`)."""

    def __init__(
        self,
        name: str = "agentkit-audio",
        *,
        on_start: Callable[[], object] | None = None,
        on_exit: Callable[[], object] | None = None,
    ) -> None:
        """`on_start` and `on_exit` run on the thread, first and last."""
        self._name = name
        self._on_start = on_start
        self._on_exit = on_exit
        self._jobs: SimpleQueue[tuple[Any, ...] | None] = SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._put((future, fn, args, kwargs))
        return future

    def call(
        self,
        loop: asyncio.AbstractEventLoop,
        fn: Callable[[A], T],
        arg: A,
        done: Callable[[T | None, BaseException | None], object],
    ) -> None:
        """Run `fn(arg)` on the thread, then `done(result, None)`, or `done(None, error)` if it
        raised, on `loop` (`call_soon_threadsafe`); `done` is dropped if `loop` has closed by then."""
        self._put((loop, fn, arg, done))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if cancel_futures:
            while True:
                try:
                    work = self._jobs.get_nowait()
                except Empty:
                    break
                if work is not None and isinstance(work[0], Future):
                    work[0].cancel()
        self._jobs.put(None)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def _put(self, work: tuple[Any, ...]) -> None:
        if self._thread is None or self._closed:
            self._start()  # raises once shut down
        self._jobs.put(work)

    def _start(self) -> None:
        with self._start_lock:
            if self._closed:
                raise RuntimeError("cannot schedule new audio jobs after shutdown")
            if self._thread is None:  # started at most once
                thread = threading.Thread(target=self._run, name=f"{self._name}_0", daemon=True)
                thread.start()
                self._thread = thread
                atexit.register(self.shutdown)

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        try:
            self._serve()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _serve(self) -> None:
        get = self._jobs.get
        while (work := get()) is not None:
            head = work[0]
            if isinstance(head, Future):
                future, fn, args, kwargs = work
                if future.set_running_or_notify_cancel():
                    try:
                        result = fn(*args, **kwargs)
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            else:
                loop, fn, arg, done = work
                try:
                    outcome, error = fn(arg), None
                except BaseException as exc:
                    outcome, error = None, exc
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits now
                    loop.call_soon_threadsafe(done, outcome, error)
            del work, head


def audio_executor() -> AudioThread:
    """The audio worker thread (created on first use)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = AudioThread(on_start=_note_audio_thread, on_exit=_forget_audio_thread)
        return _executor


async def run_audio_job(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` on the audio worker thread and await its result."""
    loop = asyncio.get_running_loop()
    if kwargs:
        return await loop.run_in_executor(audio_executor(), lambda: fn(*args, **kwargs))
    return await loop.run_in_executor(audio_executor(), fn, *args)


async def run_turn_job(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` on asyncio's default pool and await its result (see the module)."""
    loop = asyncio.get_running_loop()
    if kwargs:
        return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))
    return await loop.run_in_executor(None, fn, *args)


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
