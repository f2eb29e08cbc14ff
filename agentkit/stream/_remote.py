"""`RemoteSessions`: a `SessionHost`'s side of the session bus, for sessions other processes hold.

A session lives in the process whose transport carries it. Through the host's `SessionBus`
(`agentkit.store`; `agentkit.server.create_app` opens a Redis one when the conversation store is
`redis://`) any worker reaches a session another one holds:

- `await host.aset_input(id, *args)`: new input values. `set_input` stays synchronous and reaches
  only this process's sessions (it raises `KeyError` naming `aset_input` for any other): a remote
  delivery is a network round trip whose outcome (delivered, or no such session) the caller should
  see, which a fire-and-forget task would swallow.
- `host.output_stream(id)`: the `AdditionalOutputs` the session's handler emits. What crosses
  processes is JSON: outputs whose values are JSON values (str, int, float, bool, None, lists, and
  dicts with str keys; no NaN) arrive as `AdditionalOutputs` of those values; the holder announces
  any others as not JSON values, and a remote `output_stream` raises `TypeError` saying so. Input
  values sent to another process must be JSON values too (`TypeError` otherwise).
- `await host.hang_up(id)`: the holder hangs the call up (`Session.hang_up`, reason `api`).

Each raises `KeyError` at once for a session no process holds, and a remote `output_stream` ends
when the session closes, or when its process no longer answers (it was killed).

Bus messages (`op`): to the holder `input` (`args`), `hang_up` (`reason`) and `ping`; from it
`outputs` (`args`), `not_json` (`detail`: the value types) and `closed`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from agentkit._tasks import TaskSet
from agentkit.store import BusMessage, SessionBus
from agentkit.stream._handlers import AdditionalOutputs
from agentkit.stream._session import Session

__all__ = ["RemoteSessions", "check_reason"]

logger = logging.getLogger(__name__)

LIVENESS_CHECK_S = 2.0
"""How long a remote `output_stream` waits in silence before it checks that the session still lives."""
_REASON = re.compile(r"[a-z_]{1,32}")


def check_reason(reason: str) -> None:
    """Raise `ValueError` unless `reason` is a short lowercase word (it becomes a stop reason)."""
    if not isinstance(reason, str) or _REASON.fullmatch(reason) is None:
        raise ValueError("a hang-up reason is 1 to 32 lowercase letters or underscores")


class RemoteSessions:
    """Connects a host's `sessions` (the host's own dict, read only) to `bus`, both ways."""

    def __init__(self, bus: SessionBus, sessions: Mapping[str, Session]) -> None:
        self.bus = bus
        self._sessions = sessions
        self._tasks = TaskSet("session-bus-hang-ups")
        self._not_json: set[str] = set()  # sessions whose outputs were once not JSON values (logged)

    # -- sessions held here ------------------------------------------------------------------------
    def held(self, session: Session) -> None:
        """`session` opened here: messages to it from other processes now reach it."""
        session_id = session.id

        async def deliver(message: BusMessage) -> None:
            await self._on_message(session_id, message)

        self.bus.hold(session_id, deliver)

    def closed(self, session: Session) -> None:
        """`session` closed: remote watchers are told, and messages to it go nowhere."""
        self._not_json.discard(session.id)
        self.bus.release(session.id)
        self.bus.publish(session.id, {"op": "closed"})

    def outputs(self, session: Session, outputs: AdditionalOutputs) -> None:
        """Pass a session's outputs on to the processes watching it."""
        try:
            self.bus.publish(session.id, {"op": "outputs", "args": list(outputs.args)})
        except (TypeError, ValueError) as exc:
            detail = str(exc)[:200] if isinstance(exc, ValueError) else _types_of(outputs.args)
            if session.id not in self._not_json:
                self._not_json.add(session.id)
                logger.info("session %s: its outputs cannot reach other processes (%s)", session.id, detail)
            self.bus.publish(session.id, {"op": "not_json", "detail": detail})

    async def _on_message(self, session_id: str, message: BusMessage) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        op = message["op"]
        if op == "input" and isinstance(message.get("args"), list):
            session.set_args(tuple(message["args"]))
        elif op == "hang_up":
            reason = message.get("reason")
            reason = reason if isinstance(reason, str) and _REASON.fullmatch(reason) else "api"
            self._tasks.spawn(session.hang_up(reason), f"hang-up-{session_id[:8]}")  # may call Twilio
        elif op != "ping":
            logger.info("session %s: ignored a bus message with an unknown op", session_id)

    # -- sessions held elsewhere -------------------------------------------------------------------
    async def set_input(self, session_id: str, args: tuple[Any, ...]) -> None:
        try:
            delivered = await self.bus.send(session_id, {"op": "input", "args": list(args)})
        except TypeError as exc:
            raise TypeError(
                f"input values for a session another process holds must be JSON values ({exc})"
            ) from None
        if not delivered:
            raise KeyError(f"no open session {session_id!r}")

    async def hang_up(self, session_id: str, reason: str) -> None:
        if not await self.bus.send(session_id, {"op": "hang_up", "reason": reason}):
            raise KeyError(f"no open session {session_id!r}")

    async def output_stream(self, session_id: str) -> AsyncIterator[AdditionalOutputs]:
        async with self.bus.watch(session_id) as queue:  # watching before asking: nothing is missed
            if not await self.bus.send(session_id, {"op": "ping"}):
                raise KeyError(f"no open session {session_id!r}")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=LIVENESS_CHECK_S)
                except TimeoutError:  # quiet: is its process still there?
                    if not await self.bus.send(session_id, {"op": "ping"}):
                        return
                    continue
                op, args = message["op"], message.get("args")
                if op == "closed":
                    return
                if op == "outputs" and isinstance(args, list):
                    yield AdditionalOutputs(*args)
                elif op == "not_json":
                    raise TypeError(
                        f"session {session_id!r} emitted AdditionalOutputs that are not JSON values "
                        f"({message.get('detail')}); only JSON values (str, int, float, bool, None, "
                        "lists, dicts with str keys) reach output_stream in another process"
                    )

    async def aclose(self) -> None:
        """Stop the hang-ups under way (the host is closing); a host that serves again may ask for more."""
        tasks, self._tasks = self._tasks, TaskSet("session-bus-hang-ups")
        await tasks.aclose(timeout_s=2.0)


def _types_of(values: tuple[Any, ...]) -> str:
    """The type names of `values`, for a message that says which ones JSON cannot carry."""
    return "values of type " + ", ".join(sorted({type(v).__name__ for v in values}))
