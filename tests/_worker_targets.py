"""Worker targets for `agentkit._workers.Supervisor` tests, run in spawned processes (so: top level,
importable, and light: no server, no models).

Each has the `Target` signature `(index, sock, on_started)`. Run as a script, this module supervises
two `serve_forever` workers and prints `serving` once both run.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from agentkit.exceptions import ConfigError


def crash_after_start(index: int, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Reports started, then dies with status 3, as a worker with a fatal bug in its loop would."""
    on_started()
    time.sleep(0.05)
    os._exit(3)


def exit_while_starting(index: int, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Dies with status 4 before it accepts, saying nothing (as an interpreter crash would)."""
    os._exit(4)


def raise_while_starting(index: int, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """A bug in the agent file: not an `AgentkitError`."""
    raise RuntimeError(f"boom in worker {index}")


def fail_second(index: int, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Worker 2 fails its start-up with a `ConfigError`; the others serve until stopped."""
    if index == 2:
        time.sleep(0.2)
        raise ConfigError("ANTHROPIC_API_KEY is not set")
    serve_forever(index, sock, on_started)


def serve_forever(index: int, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Reports started and waits; SIGTERM (as KeyboardInterrupt) ends it."""
    on_started()
    while True:
        time.sleep(1)


if __name__ == "__main__":  # a supervisor of two `serve_forever` workers: `python _worker_targets.py`
    import sys

    from agentkit._workers import Supervisor

    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        Supervisor(serve_forever, bound, 2).run(lambda: print("serving", flush=True))
    sys.exit(0)
