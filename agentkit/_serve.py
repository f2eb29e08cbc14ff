"""How `agentkit run` serves an app with uvicorn, so that start-up failures are one line.

uvicorn would run the app's lifespan itself and report a failed start-up (a bad voice, a missing key
or model, a store that does not answer) as the app's traceback and "Application startup failed",
exit status 3; and it reports a taken port as a log line. Here the port is bound first (`bind`: a
taken port is a `ConfigError` that names it), then the app's lifespan runs under `LifespanDriver`,
which raises the app's own exception, so `agentkit.cli.main` prints it as one `agentkit: error:` line.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentkit.exceptions import AgentkitError, ConfigError

__all__ = ["LifespanDriver", "OneLineStartupErrors", "bind", "serve"]

logger = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_S = 30.0

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Net allocations of container objects between two collections of the youngest generation while
serving (Python's default is 700; the older generations keep their default ratios). See `serve`."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening); `ConfigError` if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} is already in use on {host} (another server?); "
                f"pick another with --port, e.g. --port {port + 1}",
                port=port,
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", port=port) from None
    return sock


class LifespanDriver:
    """Runs an ASGI app's lifespan protocol as uvicorn's `LifespanOn` would (the same `startup`,
    `shutdown`, `state` and `should_exit`), but a failed start-up raises the app's own exception."""

    def __init__(self, app: ASGIApp) -> None:
        self.state: dict[str, Any] = {}
        """What the app's lifespan yields, copied into each request's scope by uvicorn."""
        self.should_exit = False
        self._app = app
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """Start the app; raises what its start-up raised. An app without a lifespan is fine."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self._task = asyncio.create_task(self._run(scope), name="asgi-lifespan")
        await self._to_app.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is None:  # it ended without answering: the app does not speak the lifespan protocol
            await self._finish(quiet=True)
            return
        if reply["type"] == "lifespan.startup.failed":
            await self._finish(quiet=False)  # raises the app's exception, if it raised one
            raise ConfigError(f"the app failed to start: {reply.get('message') or 'no reason given'}")

    async def shutdown(self) -> None:
        """Stop the app (its lifespan's clean-up); failures are logged, not raised."""
        if self._task is None:
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        try:
            async with asyncio.timeout(_SHUTDOWN_TIMEOUT_S):
                reply = await self._reply()
                if reply is not None and reply["type"] == "lifespan.shutdown.failed":
                    logger.error("the app's shutdown failed: %s", reply.get("message") or "no reason")
                await self._finish(quiet=False)
        except TimeoutError:
            logger.error("the app's shutdown took more than %g s; stopped waiting", _SHUTDOWN_TIMEOUT_S)
            self._task.cancel()
        except Exception:
            logger.exception("the app's shutdown failed")

    async def _run(self, scope: dict[str, Any]) -> None:
        await self._app(scope, self._to_app.get, self._from_app.put)

    async def _reply(self) -> Message | None:
        """The app's next message, or None if its lifespan task ended first."""
        assert self._task is not None
        getter = asyncio.create_task(self._from_app.get(), name="asgi-lifespan-reply")
        try:
            await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def _finish(self, *, quiet: bool) -> None:
        """Wait for the lifespan task; its exception is raised (or, `quiet`, dropped)."""
        task, self._task = self._task, None
        assert task is not None
        try:
            await task
        except Exception:
            if not quiet:
                raise
            logger.debug("the app has no lifespan", exc_info=True)


class OneLineStartupErrors:
    """Wraps an app for uvicorn's own lifespan (`agentkit run --reload`, whose worker process uvicorn
    runs): a failed start-up is reported as one `agentkit: error:` line instead of the traceback
    Starlette puts in its `lifespan.startup.failed` message. The reloader keeps watching, so fixing
    the file starts the app again."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def send_held(message: Message) -> None:
            if message["type"] in ("lifespan.startup.failed", "lifespan.shutdown.failed"):
                held.append(message)  # sent below, once the exception says what went wrong
                return
            await send(message)

        try:
            await self.app(scope, receive, send_held)
        except Exception as exc:
            failed = held[0]["type"] if held else "lifespan.startup.failed"
            await send({"type": failed, "message": f"agentkit: error: {_one_line(exc)}"})
            return
        for message in held:  # failed without raising: pass it on as it was
            await send(message)


def _one_line(exc: Exception) -> str:
    """What `agentkit.cli.main` prints for an error: its message, or its type and text."""
    if isinstance(exc, AgentkitError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class _Server(uvicorn.Server):
    """uvicorn's server with agentkit's lifespan driver, calling `on_started` once it accepts."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.lifespan = LifespanDriver(self.config.loaded_app)  # instead of uvicorn's own
        await super().startup(sockets)
        if self.started:
            gc.freeze()  # see `serve`
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
            self._on_started()


def serve(app: ASGIApp, sock: socket.socket, on_started: Callable[[], None], **options: Any) -> None:
    """Serve `app` on the bound `sock` until Ctrl+C; `options` go to `uvicorn.Config`.

    Once the app has started, everything it loaded (modules, models, the app itself) is moved out of
    the cyclic garbage collector's reach with `gc.freeze()`: they live as long as the process, and a
    full collection walked all of them every few seconds under load, pausing the event loop and the
    audio thread for up to 117 ms at 100 calls a worker (20 ms once frozen; docs/benchmarks.md).
    Then the youngest generation is collected every `YOUNG_COLLECTION_THRESHOLD` net allocations
    instead of every 700. Each media message allocates a few short-lived containers, so at 150 calls
    a worker the default ran 15-20 young collections a second and a full one every six to nine seconds
    (37-73 ms each: a pause of the loop and the audio thread, which a phone call hears as late
    audio); with the higher threshold a whole 300-call benchmark run saw two or three collections.
    Garbage in reference cycles is still collected, only later, and what refcounting frees (most of
    it) is freed at once as before.

    Raises the app's start-up exception (after nothing was served).
    """
    config = uvicorn.Config(app, lifespan="off", **options)
    _Server(config, on_started).run(sockets=[sock])
