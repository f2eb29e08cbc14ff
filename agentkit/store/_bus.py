"""`SessionBus`: messages to and from live sessions, whichever process (or machine) holds them.

A session lives in the process whose transport carries it. Code in any other worker reaches it
through the bus:

- the process that holds a session `hold`s it: messages `send` to that session id from anywhere are
  handed to its `deliver` callback (its `SessionHost` applies them: new input values, a hang-up);
  `send` returns False when no process holds the session, so an unknown id is an answer, never a wait;
- the holder `publish`es what the session emits (its outputs, its end) to every process that
  `watch`es the session.

Messages are JSON objects with a string `op` (`{"op": "input", "args": [...]}`), at most
`max_message_bytes` once encoded. Sending anything else raises: `TypeError` for values JSON cannot
carry (bytes, arrays, NaN, objects), `ValueError` for a message over the cap. A message that
arrives malformed (not UTF-8 JSON, not an object with a string `op`, over the cap) is logged without
its content, counted in `dropped` and dropped.

Two implementations, chosen by the store URL (`open_session_bus`):

- `LocalSessionBus` (`memory://`, `sqlite://`, and the default): this process only, so a session is
  reachable from the process that holds it, as before. Messages still make the JSON round trip, so
  code that works on it works across processes too.
- `RedisSessionBus` (`redis://`, the store's own URL and key prefix): Redis pub/sub over one
  subscriber connection per process. The holder subscribes to `{prefix}bus:to:{session_id}` while
  it holds the session, and watchers to `{prefix}bus:from:{session_id}`; PUBLISH's receiver count
  tells `send` whether anyone holds the session. Delivery is at most once: pub/sub keeps nothing,
  so a watcher sees what is published after it began watching, and a process that dies takes its
  sessions' subscriptions with it.

`hold`, `release` and `publish` are synchronous (the host calls them from `open_session` and from a
session's output loop, which must not wait for Redis): subscription changes and published messages
go out in order through the bus's own task. Published messages wait in a bounded queue
(`max_pending`) that drops the oldest, counted in `dropped`, when Redis falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agentkit._tasks import TaskSet
from agentkit.exceptions import ConfigError
from agentkit.store._open import parse_redis_url
from agentkit.store._redis import DEFAULT_PREFIX

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = [
    "DEFAULT_BUS_MESSAGE_BYTES",
    "BusMessage",
    "LocalSessionBus",
    "RedisSessionBus",
    "SessionBus",
    "open_session_bus",
]

logger = logging.getLogger(__name__)

BusMessage = dict[str, Any]
"""A JSON object with a string `op`."""
Deliver = Callable[[BusMessage], Awaitable[None]]

DEFAULT_BUS_MESSAGE_BYTES = 64 * 1024
"""The largest message a bus carries unless told otherwise, encoded (UTF-8 JSON)."""
WATCH_QUEUE_SIZE = 64
"""Messages a watcher may fall behind by; beyond that the oldest is dropped (and counted)."""
_TIMEOUT_S = 5.0
_RETRY_S = 1.0


@runtime_checkable
class SessionBus(Protocol):
    """Messages to the process holding a session, and from it to whoever watches (see above)."""

    @property
    def dropped(self) -> int:
        """Messages dropped: malformed or oversized on arrival, or behind a full queue."""
        ...

    def hold(self, session_id: str, deliver: Deliver) -> None:
        """This process holds `session_id`: messages sent to it go to `deliver`, in order."""
        ...

    def release(self, session_id: str) -> None:
        """The session is gone from this process (closed)."""
        ...

    async def send(self, session_id: str, message: BusMessage) -> bool:
        """Deliver `message` to the process holding the session; False when none holds it."""
        ...

    def publish(self, session_id: str, message: BusMessage) -> None:
        """From the holder: `message` to every watcher of the session (none: it is dropped)."""
        ...

    def watch(self, session_id: str) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[BusMessage]]:
        """`async with bus.watch(id) as queue:` the session's published messages from now on."""
        ...

    async def start(self) -> None:
        """Connect (the server calls this at startup, so a wrong URL fails fast)."""
        ...

    async def aclose(self) -> None: ...


def encode(message: BusMessage, max_bytes: int) -> str:
    """`message` as JSON text; `TypeError` unless it is a JSON object of JSON values with a string
    `op`, `ValueError` when it is over `max_bytes` encoded."""
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise TypeError("a bus message is a JSON object with a string 'op'")
    try:
        text = json.dumps(message, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise TypeError("NaN and infinity cannot cross the session bus (JSON has neither)") from None
    size = len(text.encode())
    if size > max_bytes:
        raise ValueError(f"a session bus message is at most {max_bytes} bytes (this one has {size})")
    return text


class _Bus:
    """What both buses share: the holders, the watchers, and checking what arrives."""

    def __init__(self, *, max_message_bytes: int) -> None:
        if max_message_bytes < 64:
            raise ConfigError("a session bus needs max_message_bytes of at least 64")
        self.max_message_bytes = max_message_bytes
        self._holders: dict[str, Deliver] = {}
        self._watchers: dict[str, set[asyncio.Queue[BusMessage]]] = {}
        self._dropped = 0

    @property
    def dropped(self) -> int:
        return self._dropped

    def _decode(self, raw: str | bytes, where: str) -> BusMessage | None:
        """The message in `raw`, or None (logged and counted) when it is malformed or too large."""
        size = len(raw.encode() if isinstance(raw, str) else raw)
        why = None
        message = None
        if size > self.max_message_bytes:
            why = f"{size} bytes, over {self.max_message_bytes}"
        else:
            try:
                message = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                why = "not UTF-8 JSON"
        if why is None and (not isinstance(message, dict) or not isinstance(message.get("op"), str)):
            why = "not an object with a string 'op'"
        if why is not None:
            self._dropped += 1
            logger.warning("session bus: dropped a message %s (%s)", where, why)  # never its content
            return None
        return message

    async def _deliver(self, session_id: str, raw: str | bytes) -> None:
        deliver = self._holders.get(session_id)
        if deliver is None:
            return
        message = self._decode(raw, f"to session {session_id[:8]}")
        if message is None:
            return
        try:
            await deliver(message)
        except Exception:
            logger.exception("session bus: handling a message to session %s failed", session_id[:8])

    def _fan_out(self, session_id: str, raw: str | bytes) -> None:
        queues = self._watchers.get(session_id)
        if not queues:
            return
        message = self._decode(raw, f"from session {session_id[:8]}")
        if message is None:
            return
        for queue in queues:
            if queue.full():  # keep the latest: a watcher that fell behind loses the oldest
                queue.get_nowait()
                self._dropped += 1
            queue.put_nowait(message)

    def _add_watcher(self, session_id: str) -> asyncio.Queue[BusMessage]:
        queue: asyncio.Queue[BusMessage] = asyncio.Queue(maxsize=WATCH_QUEUE_SIZE)
        self._watchers.setdefault(session_id, set()).add(queue)
        return queue

    def _remove_watcher(self, session_id: str, queue: asyncio.Queue[BusMessage]) -> bool:
        """Forget `queue`; True when it was the session's last watcher."""
        queues = self._watchers.get(session_id, set())
        queues.discard(queue)
        if queues:
            return False
        self._watchers.pop(session_id, None)
        return True


class LocalSessionBus(_Bus):
    """A `SessionBus` within this process (the default): a session is reachable where it is held."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_BUS_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)

    def __repr__(self) -> str:
        return f"LocalSessionBus(holding={len(self._holders)})"

    def hold(self, session_id: str, deliver: Deliver) -> None:
        self._holders[session_id] = deliver

    def release(self, session_id: str) -> None:
        self._holders.pop(session_id, None)

    async def send(self, session_id: str, message: BusMessage) -> bool:
        text = encode(message, self.max_message_bytes)
        if session_id not in self._holders:
            return False
        await self._deliver(session_id, text)
        return True

    def publish(self, session_id: str, message: BusMessage) -> None:
        self._fan_out(session_id, encode(message, self.max_message_bytes))

    @contextlib.asynccontextmanager
    async def watch(self, session_id: str) -> AsyncIterator[asyncio.Queue[BusMessage]]:
        queue = self._add_watcher(session_id)
        try:
            yield queue
        finally:
            self._remove_watcher(session_id, queue)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._holders.clear()


class RedisSessionBus(_Bus):
    """A `SessionBus` over Redis pub/sub, shared by every worker on one Redis server (see above).

    `url` is the store's `redis://` URL (redis-py reads it; never logged: it may hold a password),
    `prefix` its key prefix. `start()` connects and starts the bus's reader and writer tasks;
    `aclose()` stops them and closes the connections.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_message_bytes: int = DEFAULT_BUS_MESSAGE_BYTES,
        max_pending: int = 256,
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        try:
            from redis.asyncio import Redis
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ConfigError("the redis session bus needs: pip install 'agentkit[redis]'") from None
        try:
            self._redis: Redis = Redis.from_url(
                url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S
            )
        except ValueError as exc:  # redis-py's message names the URL's scheme problem, not its password
            raise ConfigError(f"not a usable redis URL: {exc}"[:200], scheme=url.partition(":")[0]) from None
        self._pubsub: PubSub = self._redis.pubsub()
        self._to = f"{prefix}bus:to:"
        self._from = f"{prefix}bus:from:"
        self._changes: deque[tuple[str, str, asyncio.Future[None] | None]] = deque()  # never dropped
        self._outgoing: deque[tuple[str, str]] = deque()  # (channel, text) to publish, bounded
        self._max_pending = max_pending
        self._wake = asyncio.Event()
        self._tasks = TaskSet("session-bus")
        self._started = False

    def __repr__(self) -> str:
        return f"RedisSessionBus(prefix={self._to.removesuffix('bus:to:')!r}, holding={len(self._holders)})"

    # -- holding sessions --------------------------------------------------------------------------
    def hold(self, session_id: str, deliver: Deliver) -> None:
        self._holders[session_id] = deliver
        self._change("subscribe", self._to + session_id)

    def release(self, session_id: str) -> None:
        if self._holders.pop(session_id, None) is not None:
            self._change("unsubscribe", self._to + session_id)

    def _change(self, kind: str, channel: str, done: asyncio.Future[None] | None = None) -> None:
        self._changes.append((kind, channel, done))
        self._wake.set()

    # -- sending and publishing --------------------------------------------------------------------
    async def send(self, session_id: str, message: BusMessage) -> bool:
        text = encode(message, self.max_message_bytes)
        receivers = await self._redis.publish(self._to + session_id, text)
        return int(receivers) > 0

    def publish(self, session_id: str, message: BusMessage) -> None:
        text = encode(message, self.max_message_bytes)
        if len(self._outgoing) >= self._max_pending:  # Redis is behind: the oldest goes
            self._outgoing.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                logger.warning("session bus: %d message(s) dropped (Redis is behind)", self._dropped)
        self._outgoing.append((self._from + session_id, text))
        self._wake.set()

    @contextlib.asynccontextmanager
    async def watch(self, session_id: str) -> AsyncIterator[asyncio.Queue[BusMessage]]:
        first = session_id not in self._watchers
        queue = self._add_watcher(session_id)
        try:
            if first:  # subscribed before the caller goes on, so nothing published from now is missed
                done = asyncio.get_running_loop().create_future()
                self._change("subscribe", self._from + session_id, done)
                await asyncio.wait_for(done, _TIMEOUT_S)
            yield queue
        finally:
            if self._remove_watcher(session_id, queue):
                self._change("unsubscribe", self._from + session_id)

    # -- the connection ----------------------------------------------------------------------------
    async def start(self) -> None:
        from redis.exceptions import RedisError

        if self._started:
            return
        try:
            await self._pubsub.connect()  # type: ignore[no-untyped-call]  # the one subscriber connection
        except (RedisError, OSError) as exc:  # redis-py names host and port, never the password
            raise ConfigError(f"the redis session bus cannot connect: {exc}"[:300]) from exc
        self._started = True
        self._tasks.spawn(self._read(), "read")
        self._tasks.spawn(self._write(), "write")

    async def _read(self) -> None:
        from redis.exceptions import RedisError

        while True:
            try:
                item = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            except (RedisError, OSError) as exc:  # redis-py reconnects and resubscribes on the next read
                logger.warning("session bus: reading failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(_RETRY_S)
                continue
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            channel = item["channel"].decode("utf-8", "replace")
            data = item["data"]
            if channel.startswith(self._to):
                await self._deliver(channel.removeprefix(self._to), data)
            elif channel.startswith(self._from):
                self._fan_out(channel.removeprefix(self._from), data)

    async def _write(self) -> None:
        from redis.exceptions import RedisError

        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._changes or self._outgoing:
                try:
                    if self._changes:
                        kind, channel, done = self._changes[0]
                        await (self._pubsub.subscribe if kind == "subscribe" else self._pubsub.unsubscribe)(
                            channel
                        )
                        self._changes.popleft()
                        if done is not None and not done.done():
                            done.set_result(None)
                    else:
                        channel, text = self._outgoing[0]
                        await self._redis.publish(channel, text)
                        self._outgoing.popleft()
                except (RedisError, OSError) as exc:
                    logger.warning("session bus: writing failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(_RETRY_S)

    async def aclose(self) -> None:
        """Stop the bus's tasks and close its connections (`start()` connects again)."""
        tasks, self._tasks = self._tasks, TaskSet("session-bus")
        await tasks.aclose(timeout_s=2.0)
        self._holders.clear()
        self._changes.clear()
        self._outgoing.clear()
        with contextlib.suppress(Exception):  # going away: a connection already gone is fine
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()
        self._pubsub = self._redis.pubsub()
        self._started = False


def open_session_bus(url: str, *, max_message_bytes: int = DEFAULT_BUS_MESSAGE_BYTES) -> SessionBus:
    """The bus that goes with the conversation store at `url`: Redis pub/sub for `redis://` and
    `rediss://` (same server, same key prefix), else `LocalSessionBus` (one process). Call
    `await bus.start()` before use and `await bus.aclose()` at the end."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        location, prefix = parse_redis_url(url)
        return RedisSessionBus(location, prefix=prefix, max_message_bytes=max_message_bytes)
    return LocalSessionBus(max_message_bytes=max_message_bytes)
