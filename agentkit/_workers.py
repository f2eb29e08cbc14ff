"""`agentkit run --workers N`: N processes serving one app on one port, and the parent that keeps them.

```
parent (this module's Supervisor)              worker i = 1..N (a fresh interpreter, its own loop)
──────────────────────────────────             ────────────────────────────────────────────────────
bind(host, port), once ──── the socket ──────► target(i, socket, …): build the app, serve it
wait until every worker ◄── its pipe ──────── "started" once accepting, or "failed" + the error
log "serving … (N workers)"
a worker exits ──► log how (status, signal) ──► a new worker i after a back-off (capped: see below)
Ctrl+C / SIGTERM ──► SIGTERM to each ─────────► it stops accepting, closes its calls, runs its
                                                app's shutdown (sessions, store), exits
```

Workers come from multiprocessing's *spawn* context: a fresh interpreter each, never a fork of a
parent that may already run threads. Each runs `target`, a top-level function (so it can be pickled)
that the CLI passes: it builds the app itself and serves it (`agentkit._serve.serve`) on the worker's
inherited copy of the listening socket; the kernel hands each new connection to one of them.

Failures read as they do with one process. A worker whose start-up raises an `AgentkitError` (a bad
voice, a missing key or model) sends the error's class and message to the parent, which stops the
others and raises the same error, so `agentkit` prints one `agentkit: error:` line; another
exception's traceback is sent too, and logged once by the parent, not by every worker. A worker that
stops on its own is logged and replaced after `backoff_s` (doubling, at most `max_backoff_s`); one
that stops more than `max_restarts` times within `restart_window_s` ends the server with an error that
says how it stopped. A worker whose parent dies sees its pipe close and stops too.

The workers' environment says they are several: `AGENTKIT_WORKERS=N` (`load_settings().workers`), and
`PROMETHEUS_MULTIPROC_DIR`, a private folder made for prometheus-client's multiprocess mode, removed
when the parent ends. The parent must run this from its main thread (it handles SIGINT and SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from prometheus_client import multiprocess

from agentkit import exceptions
from agentkit.exceptions import AgentkitError

__all__ = ["METRICS_DIR_ENV", "WORKERS_ENV", "Supervisor", "Target"]

logger = logging.getLogger(__name__)

Target = Callable[[int, socket.socket, Callable[[], None]], None]
"""Run in worker `index` (1..N): `target(index, sock, on_started)` serves on `sock` until SIGINT or
SIGTERM, calling `on_started` once it accepts connections, and raises what its start-up raised. It is
pickled to reach the worker, so: a module-level function, or a `functools.partial` of one."""

WORKERS_ENV = "AGENTKIT_WORKERS"
"""How many workers serve the app, as each worker sees it (read it as `load_settings().workers`)."""
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess folder, where each worker writes its metrics."""


@dataclass(eq=False)
class _Worker:
    """One worker process, as its parent sees it."""

    index: int
    """1..N; a replacement keeps the index of the worker it replaces."""
    process: BaseProcess
    conn: Connection | None
    """The parent's end of the worker's pipe; None once the worker closed its end."""
    started: bool = False
    """It reported accepting connections."""
    failure: _Failure | None = None
    """What it reported failing with."""


@dataclass(frozen=True)
class _Failure:
    """An exception that ended a worker, as it reported it."""

    kind: str
    """The exception's class name."""
    message: str
    traceback: str | None
    """The formatted traceback of an unexpected exception; None for an `AgentkitError`."""


class Supervisor:
    """Runs `workers` processes of `target` on `sock` (bound, not yet listening) until a signal."""

    def __init__(
        self,
        target: Target,
        sock: socket.socket,
        workers: int,
        *,
        max_restarts: int = 5,
        restart_window_s: float = 60.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        stop_timeout_s: float = 45.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("a supervisor needs at least one worker")
        self.target = target
        self.sock = sock
        self.workers = workers
        self.max_restarts = max_restarts
        """Replacements of one worker allowed within `restart_window_s`; one more ends the server."""
        self.restart_window_s = restart_window_s
        self.backoff_s = backoff_s
        """Wait before replacing a worker that stopped, doubled for each recent stop of its index."""
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        """How long the workers get to stop gracefully before they are killed (SIGKILL)."""
        self._now = clock
        self._context = multiprocessing.get_context("spawn")
        self._running: dict[int, _Worker] = {}
        self._stops: dict[int, deque[float]] = {}  # index -> when its workers stopped, recently
        self._due: dict[int, float] = {}  # index -> when its replacement starts
        self._signals: list[int] = []
        self._signal_count = 0
        self._serving = False
        self._stopping = False
        self._metrics_dir = ""
        self._wakeup: socket.socket | None = None

    def run(self, on_started: Callable[[], None]) -> None:
        """Start the workers, call `on_started` once all accept, keep them until SIGINT or SIGTERM.

        Raises the first start-up failure (after stopping the other workers), or `AgentkitError`
        when a worker keeps stopping.
        """
        with self._environment(), self._signal_handlers():
            try:
                for index in range(1, self.workers + 1):
                    self._spawn(index)
                while self._signal_count == 0:
                    if not self._serving and self._all_started():
                        self._serving = True
                        on_started()
                    self._poll(self._next_restart_in())
                    self._restart_due()
            finally:
                self._stop_all()

    # -- the loop --------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        here, there = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(index, self.target, self.sock, there),
            name=f"agentkit-worker-{index}",
        )
        process.start()
        there.close()  # the worker has its own copy; ours would hide its end closing
        self._running[index] = _Worker(index, process, here)
        logger.debug("worker %d started as pid %s", index, process.pid)

    def _poll(self, timeout_s: float | None) -> None:
        """Wait for one thing to happen (a message, a worker's exit, a signal) and handle it."""
        assert self._wakeup is not None
        watched: list[Any] = [self._wakeup]
        for worker in self._running.values():
            watched.append(worker.process.sentinel)
            if worker.conn is not None:
                watched.append(worker.conn)
        ready = wait(watched, timeout_s)
        if self._wakeup in ready:
            with contextlib.suppress(BlockingIOError):
                self._wakeup.recv(64)
        for worker in list(self._running.values()):
            if worker.conn is not None and worker.conn in ready:
                self._receive(worker)
            if worker.process.sentinel in ready:
                self._receive(worker)  # what it said before it exited, which `ready` may not show
                self._exited(worker)
        while self._signals:
            self._on_signal(self._signals.pop(0))

    def _receive(self, worker: _Worker) -> None:
        while worker.conn is not None:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.conn.close()
                worker.conn = None
                return
            if message[0] == "started":
                worker.started = True
                if self._serving:
                    logger.info("worker %d (pid %s) is serving again", worker.index, worker.process.pid)
            elif message[0] == "failed":
                worker.failure = _Failure(*message[1:])

    def _exited(self, worker: _Worker) -> None:
        process = worker.process
        process.join()
        del self._running[worker.index]
        if worker.conn is not None:
            worker.conn.close()
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        how = _describe(process.exitcode)
        if self._stopping:
            logger.debug("worker %d (pid %s) %s", worker.index, process.pid, how)
            return
        if not self._serving and not worker.started:
            raise _startup_error(worker, how)
        reason = ""
        if worker.failure is not None:
            reason = f" ({worker.failure.kind}: {worker.failure.message})"
            if worker.failure.traceback is not None:
                logger.error("worker %d failed:\n%s", worker.index, worker.failure.traceback.rstrip())
        history = self._stops.setdefault(worker.index, deque())
        now = self._now()
        history.append(now)
        while history and history[0] < now - self.restart_window_s:
            history.popleft()
        if len(history) > self.max_restarts:
            raise AgentkitError(
                f"worker {worker.index} stopped {len(history)} times within {self.restart_window_s:g} s "
                f"(last: it {how}{reason}); stopping the server",
                worker=worker.index,
            )
        delay_s = min(self.backoff_s * 2 ** (len(history) - 1), self.max_backoff_s)
        logger.error(
            "worker %d (pid %s) %s%s; starting a new one in %.1f s",
            worker.index,
            process.pid,
            how,
            reason,
            delay_s,
        )
        self._due[worker.index] = now + delay_s

    def _all_started(self) -> bool:
        return len(self._running) == self.workers and all(w.started for w in self._running.values())

    def _next_restart_in(self) -> float | None:
        return max(0.0, min(self._due.values()) - self._now()) if self._due else None

    def _restart_due(self) -> None:
        now = self._now()
        for index, at in sorted(self._due.items()):
            if at <= now and self._signal_count == 0:
                del self._due[index]
                self._spawn(index)

    # -- stopping --------------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self._signal_count += 1
        if self._signal_count == 1:
            logger.info("stopping %d worker(s) (%s)", len(self._running), signal.Signals(signum).name)
            return
        logger.warning("stopping the workers at once, without waiting for calls to end")
        for worker in self._running.values():  # as a second Ctrl+C makes uvicorn quit at once
            _send(worker, signal.SIGINT)

    def _stop_all(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL for those still there after `stop_timeout_s`."""
        self._stopping = True
        self._due.clear()
        for worker in self._running.values():
            _send(worker, signal.SIGTERM)
        deadline = self._now() + self.stop_timeout_s
        while self._running:
            left_s = deadline - self._now()
            if left_s <= 0:
                for worker in list(self._running.values()):
                    logger.error(
                        "worker %d (pid %s) did not stop in %g s; killing it",
                        worker.index,
                        worker.process.pid,
                        self.stop_timeout_s,
                    )
                    worker.process.kill()
                    self._exited(worker)
                break
            self._poll(left_s)

    # -- the parent's process state ----------------------------------------------------------------

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        """The workers' environment (inherited at spawn), restored afterwards; the metrics folder."""
        saved = {name: os.environ.get(name) for name in (WORKERS_ENV, METRICS_DIR_ENV)}
        self._metrics_dir = tempfile.mkdtemp(prefix="agentkit-metrics-")  # mode 0700: ours alone
        os.environ[WORKERS_ENV] = str(self.workers)
        os.environ[METRICS_DIR_ENV] = self._metrics_dir
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        """SIGINT and SIGTERM recorded, and waking `_poll` through a socket pair."""
        wakeup, wakeup_writer = socket.socketpair()
        wakeup.setblocking(False)
        wakeup_writer.setblocking(False)

        def record(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, record) for signum in handled}
        previous_fd = signal.set_wakeup_fd(wakeup_writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = wakeup
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._wakeup = None
            wakeup.close()
            wakeup_writer.close()


def _send(worker: _Worker, signum: signal.Signals) -> None:
    if worker.process.pid is not None and worker.process.exitcode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, signum)


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _startup_error(worker: _Worker, how: str) -> AgentkitError:
    """The error a worker failed to start with: an `AgentkitError` as the one process would have
    raised it; another exception's traceback logged, and named in the error."""
    failure = worker.failure
    if failure is None:
        return AgentkitError(
            f"worker {worker.index} {how} while starting; its output above says why", worker=worker.index
        )
    if failure.traceback is not None:
        logger.error("worker %d failed to start:\n%s", worker.index, failure.traceback.rstrip())
        return AgentkitError(
            f"worker {worker.index} failed to start: {failure.kind}: {failure.message} (traceback above)",
            worker=worker.index,
        )
    kind = getattr(exceptions, failure.kind, None)
    if isinstance(kind, type) and issubclass(kind, AgentkitError):
        with contextlib.suppress(TypeError):  # a subclass whose constructor wants more
            return kind(failure.message)
    return AgentkitError(failure.message)


# -- the worker's side ----------------------------------------------------------------------------


def _worker_main(index: int, target: Target, sock: socket.socket, conn: Connection) -> None:
    """A worker process: run `target` on `sock`, report to the parent over `conn`."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl+C does
    threading.Thread(target=_stop_with_parent, args=(conn,), name="agentkit-parent", daemon=True).start()
    try:
        target(index, sock, lambda: conn.send(("started",)))
    except KeyboardInterrupt:  # stopped: uvicorn re-raises the signal it shut down for
        pass
    except AgentkitError as exc:
        conn.send(("failed", type(exc).__name__, exc.message, None))
        sys.exit(1)
    except Exception as exc:  # the parent logs it, once, rather than each worker printing it
        conn.send(("failed", type(exc).__name__, str(exc), traceback.format_exc()))
        sys.exit(1)
    finally:
        sock.close()


def _stop_with_parent(conn: Connection) -> None:
    """Wait for the parent's end of the pipe to close (the parent never writes), then stop."""
    with contextlib.suppress(EOFError, OSError):
        while True:
            conn.recv()
    os.kill(os.getpid(), signal.SIGTERM)
