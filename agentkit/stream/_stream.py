"""`SessionHost`: one handler served to many callers, each in a `Session` of its own.

This is the core of a `Stream` without any wire: transports (`agentkit.transports`) open sessions on
it, and `agentkit.Stream` adds the endpoints that carry them (`Stream.mount`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

from agentkit.clock import Clock
from agentkit.exceptions import CapacityError, ConfigError, ProtocolError
from agentkit.stream._handlers import AdditionalOutputs, AsyncStreamHandler, StreamHandler
from agentkit.stream._refusals import Refusals
from agentkit.stream._session import Mode, Session, Transport

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Mode", "SessionHost"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""`SessionHost.max_message_bytes` unless given: far above any audio or control message."""


class SessionHost:
    """Serve `handler` to callers; each session gets its own `handler.copy()`.

    `mode` is seen from the caller: "send-receive" (talk and listen), "send" (the caller only sends
    audio: no audio goes back, events and additional outputs still do) or "receive" (the caller only
    listens; audio from it is refused). `concurrency_limit` caps simultaneous sessions across all
    transports (None: no cap) and `time_limit` caps each session's length in seconds. A session that
    receives no audio for `no_audio_timeout_s` (from its start, or since its last audio) is closed:
    live clients send audio all the time, silence included, so an idle one only holds a slot (None:
    never). `max_message_bytes` caps one message from a caller, on every transport. Refusals are
    explicit: an `over_capacity`, `time_limit` or `no_audio` error reaches the caller before the
    close, and `refused` counts them (and the transports' own refusals) by reason.

    Whoever carries the sessions registers its own shutdown steps with `on_close`; `aclose()` runs them,
    then closes every open session.
    """

    def __init__(
        self,
        handler: AsyncStreamHandler | StreamHandler,
        *,
        modality: Literal["audio"] = "audio",
        mode: Mode = "send-receive",
        concurrency_limit: int | None = 20,
        time_limit: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        no_audio_timeout_s: float | None = 10.0,
    ) -> None:
        if modality != "audio":
            raise ConfigError("only modality='audio' is supported", modality=modality)
        if mode not in ("send-receive", "send", "receive"):
            raise ConfigError("mode must be 'send-receive', 'send' or 'receive'", mode=mode)
        if concurrency_limit is not None and concurrency_limit < 1:
            raise ConfigError("concurrency_limit must be at least 1 (or None)")
        if time_limit is not None and time_limit <= 0:
            raise ConfigError("time_limit must be positive (or None)")
        if no_audio_timeout_s is not None and no_audio_timeout_s <= 0:
            raise ConfigError("no_audio_timeout_s must be positive (or None)")
        if max_message_bytes < 1:
            raise ConfigError("max_message_bytes must be at least 1")
        if not isinstance(handler, AsyncStreamHandler | StreamHandler):
            raise ConfigError("handler must be a StreamHandler, AsyncStreamHandler or ReplyOnPause")
        self.handler = handler
        self.modality = modality
        self.mode: Mode = mode
        self.concurrency_limit = concurrency_limit
        self.time_limit = time_limit
        self.max_message_bytes = max_message_bytes
        self.no_audio_timeout_s = no_audio_timeout_s
        self.refused = Refusals()
        """How often callers were refused or cut off, by reason (shown by `/healthz`)."""
        self._sessions: dict[str, Session] = {}
        self._shutdown_steps: list[Callable[[], Awaitable[None]]] = []

    @property
    def sessions(self) -> dict[str, Session]:
        """Open sessions by id (a copy)."""
        return dict(self._sessions)

    def open_session(
        self,
        transport: Transport,
        *,
        input_sample_rate: int,
        output_sample_rate: int | None = None,
        session_id: str | None = None,
        channel: str = "websocket",
        caller: str | None = None,
        clock: Clock | None = None,
        call_info: Mapping[str, str] | None = None,
    ) -> Session:
        """Register a new session for `transport`.

        Raises `CapacityError` at the concurrency limit and `ProtocolError` for a `session_id` in use.

        The caller (a transport) must `await session.start()` and, in the end, `await session.close()`.
        """
        if self.concurrency_limit is not None and len(self._sessions) >= self.concurrency_limit:
            self.refused.note("over_capacity", f"{len(self._sessions)} of {self.concurrency_limit} in use")
            raise CapacityError("the server is at capacity; try again later", limit=self.concurrency_limit)
        if session_id is not None and session_id in self._sessions:
            raise ProtocolError("a session with this id is already open")
        handler = self.handler.copy()
        session = Session(
            handler,
            transport,
            input_sample_rate=input_sample_rate,
            output_sample_rate=output_sample_rate or handler.output_sample_rate,
            session_id=session_id,
            channel=channel,
            caller=caller,
            clock=clock,
            call_info=call_info,
            mode=self.mode,
            time_limit=self.time_limit,
            no_audio_timeout_s=self.no_audio_timeout_s,
            on_closed=self._forget,
        )
        self._sessions[session.id] = session
        return session

    def _forget(self, session: Session) -> None:
        """A session has closed: it no longer counts against the concurrency limit."""
        self._sessions.pop(session.id, None)
        if session.stop_reason == "no_audio":
            self.refused.note("no_audio", f"a session sent no audio for {self.no_audio_timeout_s:g} s")

    def set_input(self, session_id: str, *args: Any) -> None:
        """Give a session's handler new input values (passed to a `ReplyOnPause` fn after the audio)."""
        self._session(session_id).set_args(args)

    async def output_stream(self, session_id: str) -> AsyncIterator[AdditionalOutputs]:
        """The `AdditionalOutputs` a session's handler emits, from now until the session ends."""
        session = self._session(session_id)
        queue = session.subscribe()
        try:
            while not session.closed:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
        finally:
            session.unsubscribe(queue)

    def _session(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise KeyError(f"no open session {session_id!r}") from None

    def on_close(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` first when the host closes (e.g. a transport ending its peer connections)."""
        self._shutdown_steps.append(step)

    async def aclose(self) -> None:
        """Run the `on_close` steps in order, then close every open session (server shutdown)."""
        steps, self._shutdown_steps = self._shutdown_steps, []
        for step in steps:
            await step()
        await asyncio.gather(*(s.close("server_shutdown") for s in list(self._sessions.values())))
