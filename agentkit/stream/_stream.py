"""`SessionHost`: one handler served to many callers, each in a `Session` of its own.

This is the core of a `Stream` without any wire: transports (`agentkit.transports`) open sessions on
it, and `agentkit.Stream` adds the endpoints that carry them (`Stream.mount`).

With a shared `SessionBus` (`bus`; see `agentkit.stream._remote`), `aset_input`, `output_stream` and
`hang_up` reach a session whichever process holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

from agentkit.clock import Clock
from agentkit.exceptions import BusyError, CapacityError, ConfigError, ProtocolError
from agentkit.store import LocalSessionBus, SessionBus
from agentkit.stream._handlers import AdditionalOutputs, AsyncStreamHandler, StreamHandler
from agentkit.stream._load import LoadMonitor
from agentkit.stream._refusals import Refusals
from agentkit.stream._remote import RemoteSessions, check_reason
from agentkit.stream._session import Mode, Session, Transport

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "RETRY_AFTER_S", "Admission", "Mode", "SessionHost"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""`SessionHost.max_message_bytes` unless given: far above any audio or control message."""

RETRY_AFTER_S = 5
"""What an HTTP refusal for capacity or load suggests as `Retry-After`, in seconds: about how long an
overloaded `LoadMonitor` takes to recover once load eases (and a slot may have freed by then)."""

Admission = Literal["shutting_down", "over_capacity", "busy"]
"""Why a new session would be refused (`SessionHost.admission()`): the host is closing, it is at its
`concurrency_limit`, or its `load` monitor says the process is overloaded."""


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

    With a `load` monitor (`agentkit.server.create_app` gives it one and runs it), new sessions are
    also refused while it says the process is overloaded (`busy`): past its capacity one event loop
    would degrade every call, not just the newest. Open sessions are never cut off for load.

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
        bus: SessionBus | None = None,
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
        self._load: LoadMonitor | None = None
        self._sessions: dict[str, Session] = {}
        self._shutdown_steps: list[Callable[[], Awaitable[None]]] = []
        self._dropped_by_closed: Counter[str] = Counter()
        self._closing = False
        self._remote = RemoteSessions(bus or LocalSessionBus(), self._sessions)
        self._owns_bus = False

    @property
    def load(self) -> LoadMonitor | None:
        """Measures the process's load; while it refuses (`LoadMonitor.refuses`), new sessions are
        refused (`busy`). None: load is not considered. Whoever runs the event loop sets it and runs
        it (`create_app`); setting it lets it count this host's sessions."""
        return self._load

    @load.setter
    def load(self, monitor: LoadMonitor | None) -> None:
        if monitor is not None:
            monitor.count_sessions = lambda: len(self._sessions)
        self._load = monitor

    @property
    def bus(self) -> SessionBus:
        """How sessions other processes hold are reached, and this one's by them (default: this
        process only)."""
        return self._remote.bus

    def use_bus(self, bus: SessionBus, *, close_with_host: bool = False) -> None:
        """Reach other processes' sessions through `bus` (e.g. a `RedisSessionBus`); only while no
        session is open. Whoever opened it closes it, or with `close_with_host` the host's `aclose()`
        does, once its sessions have closed."""
        if self._sessions:
            raise RuntimeError("the session bus can only be changed while no session is open")
        self._remote.bus = bus
        self._owns_bus = close_with_host

    @property
    def sessions(self) -> dict[str, Session]:
        """Open sessions by id (a copy)."""
        return dict(self._sessions)

    def admission(self) -> Admission | None:
        """Why a new session would be refused right now; None: it would be admitted (`/readyz`)."""
        if self._closing:
            return "shutting_down"
        if self.concurrency_limit is not None and len(self._sessions) >= self.concurrency_limit:
            return "over_capacity"
        if self._load is not None and self._load.refuses(len(self._sessions)):
            return "busy"
        return None

    def check_admission(self, *, resuming: bool = False) -> None:
        """Raise what `open_session` would raise now for a new session, counting it in `refused`:
        `CapacityError` at the concurrency limit, `BusyError` (`busy`) while overloaded or
        (`shutting_down`) while `aclose()` runs. Endpoints call it before work a refusal would
        waste (a WebRTC offer, a Twilio webhook's media stream). `resuming`: the session carries on
        a call already in progress (a Twilio stream reconnecting after its server died, or one whose
        webhook admitted the call), which load does not turn away: hanging up on a caller mid-call
        is worse than a late reply (the hard `concurrency_limit` still applies)."""
        admission = self.admission()
        if resuming and admission == "busy":
            return
        if admission == "shutting_down":
            raise BusyError("the server is shutting down", code="shutting_down")
        if admission == "over_capacity":
            self.refused.note("over_capacity", f"{len(self._sessions)} of {self.concurrency_limit} in use")
            raise CapacityError("the server is at capacity; try again later", limit=self.concurrency_limit)
        if admission == "busy":
            assert self.load is not None
            load, open_now = self.load, len(self._sessions)
            detail = (
                f"event-loop lag {load.lag_ms:.0f} ms, CPU {load.cpu_cores:.2f} cores, media threads "
                f"{load.media_busy:.2f} ({load.projected_media_busy(open_now + 1):.2f} with one more call)"
            )
            self.refused.note("busy", detail)
            raise BusyError("the server is busy; try again later", limit=self.concurrency_limit)

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
        resuming: bool = False,
    ) -> Session:
        """Register a new session for `transport` (`resuming`: see `check_admission`).

        Raises `CapacityError` at the concurrency limit, `BusyError` while the process is overloaded
        or the host is closing (see `check_admission`) and `ProtocolError` for a `session_id` in use.

        The caller (a transport) must `await session.start()` and, in the end, `await session.close()`.
        """
        self.check_admission(resuming=resuming)
        if session_id is not None and session_id in self._sessions:
            raise ProtocolError("a session with this id is already open")
        handler = self.handler.copy()
        handler.match_call_rate(input_sample_rate)
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
            on_outputs=self._remote.outputs,
        )
        self._sessions[session.id] = session
        self._remote.held(session)
        return session

    def _forget(self, session: Session) -> None:
        """A session has closed: it no longer counts against the concurrency limit."""
        self._sessions.pop(session.id, None)
        self._remote.closed(session)
        self._dropped_by_closed.update(session.dropped_counts())
        if session.stop_reason == "no_audio":
            self.refused.note("no_audio", f"a session sent no audio for {self.no_audio_timeout_s:g} s")

    def dropped_frames(self) -> dict[str, int]:
        """Output dropped on the way to callers since the host started, by kind (`Session.dropped_counts`)."""
        total = Counter(self._dropped_by_closed)
        for session in list(self._sessions.values()):
            total.update(session.dropped_counts())
        return dict(total)

    def set_input(self, session_id: str, *args: Any) -> None:
        """Give a session's handler new input values (passed to a `ReplyOnPause` fn after the audio).

        Only a session this process holds (else `KeyError`); `aset_input` reaches any."""
        self._session(session_id).set_args(args)

    async def aset_input(self, session_id: str, *args: Any) -> None:
        """`set_input` whichever process holds the session (then the values must be JSON values:
        `TypeError`); `KeyError` when none does."""
        session = self._sessions.get(session_id)
        if session is None:
            await self._remote.set_input(session_id, args)
        else:
            session.set_args(args)

    async def hang_up(self, session_id: str, *, reason: str = "api") -> None:
        """End a session's call whichever process holds it (`Session.hang_up`; `reason`, a short
        lowercase word, becomes its stop reason); `KeyError` when none does. Returns once the holder
        has been told; the session then closes as usual."""
        check_reason(reason)
        session = self._sessions.get(session_id)
        if session is None:
            await self._remote.hang_up(session_id, reason)
        else:
            await session.hang_up(reason)

    async def output_stream(self, session_id: str) -> AsyncIterator[AdditionalOutputs]:
        """The `AdditionalOutputs` a session's handler emits, from now until the session ends,
        whichever process holds it (across processes only JSON values cross: `TypeError` else)."""
        if session_id not in self._sessions:
            async for outputs in self._remote.output_stream(session_id):
                yield outputs
            return
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
            raise KeyError(f"no open session {session_id!r} in this process (see aset_input)") from None

    def on_close(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` first when the host closes (e.g. a transport ending its peer connections)."""
        self._shutdown_steps.append(step)

    async def aclose(self) -> None:
        """Run the `on_close` steps in order, then close every open session (server shutdown).
        Meanwhile new sessions are refused (`shutting_down`); once it is done, the host may serve again."""
        self._closing = True
        try:
            steps, self._shutdown_steps = self._shutdown_steps, []
            for step in steps:
                await step()
            await self._remote.aclose()  # hang-ups asked for by other processes
            await asyncio.gather(*(s.close("server_shutdown") for s in list(self._sessions.values())))
            if self._owns_bus:
                await self.bus.aclose()
        finally:
            self._closing = False
