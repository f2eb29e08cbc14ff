"""`RedisStore`: the conversation store in Redis (`redis://`), shared by every worker of an agent.

When several processes (or machines) serve one agent, each opens a `RedisStore` on the same server
and sees the others' writes at once: a caller who reaches worker B remembers what they told worker A.

Layout, under a key prefix (`agentkit:` by default; `?prefix=` in the URL):

| key | type | holds |
|---|---|---|
| `{prefix}conv:{id}` | hash | `agent`, `channel`, `caller`, `call_id`, times, `end_reason`, `owner` |
| `{prefix}open` | set | ids of the conversations not yet ended |
| `{prefix}lease:{owner}` | string | present while that owner's process renews its lease (expires with it) |
| `{prefix}messages:{id}` | list | one JSON object per message; its position is its `index` |
| `{prefix}metrics:{id}` | hash | turn index → `TurnMetrics` as JSON |
| `{prefix}tools:{id}` | list | one `ToolCallRecord` as JSON per tool call, in order |
| `{prefix}index:all`, `index:agent:…`, `index:caller:…` | sorted sets | ids scored by `started_at` |
| `{prefix}index:agent-caller:…` | sorted set | one agent's conversations with one caller, likewise |
| `{prefix}index:call:…` | sorted set | the conversations of one call (`call_id`), likewise |

Every write is one atomic step on the server (a single command, or a short Lua script that checks
the conversation exists before it appends), so concurrent writers never interleave a message's
index and its content. Times are sent as Python's shortest round-tripping float text, so records
read back are equal to those written. How durable a write is depends on the server's persistence
(`appendonly yes`, `appendfsync everysec` or `always`): configure Redis for it.

Needs the `redis` package (`pip install 'agentkit[redis]'`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentkit.exceptions import ConfigError
from agentkit.store._base import DEFAULT_LIST_LIMIT, check_limits
from agentkit.store._models import (
    Conversation,
    Role,
    StoredMessage,
    ToolCallRecord,
    TurnMetrics,
    check_role,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

DEFAULT_PREFIX = "agentkit:"
_TIMEOUT_S = 5.0

# KEYS: conversation hash, the open set. ARGV: id, end time, reason, owner ('' for any). Returns the
# hash's fields (first end kept; unchanged when another owner holds it), or nil.
_END = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[4] then
    return redis.call('HGETALL', KEYS[1])
end
if redis.call('HSETNX', KEYS[1], 'ended_at', ARGV[2]) == 1 then
    redis.call('HSET', KEYS[1], 'end_reason', ARGV[3])
end
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
# KEYS: conversation hash, the open set, then the index sets. ARGV: id, started_at, then hash
# field/value pairs.
_START = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[1])
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1]) end
return 1
"""
# KEYS: the open set. ARGV: key prefix, this owner, end time, reason. Ends every open conversation
# of another owner whose lease key is gone; returns their ids.
_END_ABANDONED = """
local ended = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local conv = ARGV[1] .. 'conv:' .. id
    local owner = redis.call('HGET', conv, 'owner')
    if owner ~= ARGV[2] and (not owner or redis.call('EXISTS', ARGV[1] .. 'lease:' .. owner) == 0) then
        if redis.call('HSETNX', conv, 'ended_at', ARGV[3]) == 1 then
            redis.call('HSET', conv, 'end_reason', ARGV[4])
        end
        redis.call('SREM', KEYS[1], id)
        table.insert(ended, id)
    end
end
return ended
"""
# KEYS: conversation hash, the open set. ARGV: id, this owner. Reopens the conversation as this
# owner's; returns its fields, or nil.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HDEL', KEYS[1], 'ended_at', 'end_reason')
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""
# KEYS: conversation hash, message list. ARGV: the message's JSON. Returns the new length, or -1.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('RPUSH', KEYS[2], ARGV[1])
"""
# KEYS: conversation hash, metrics hash. ARGV: turn index, JSON. Returns 1 stored, 0 taken, -1 unknown.
_METRICS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
"""


class RedisStore:
    """A `ConversationStore` on a Redis server.

    `url`: `redis://[[user]:password@]host[:port][/db]` (or `rediss://` for TLS), as redis-py reads
    it. `prefix`: prepended to every key, so several agents or test runs can share one database.
    `wall_clock` gives unix seconds for `started_at` / `ended_at` (inject a fake one in tests).
    Connecting is lazy: the first call opens the connection pool.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            from redis.asyncio import Redis
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise ConfigError("the redis conversation store needs: pip install 'agentkit[redis]'") from None
        try:
            self._redis: Redis = Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=_TIMEOUT_S,
                socket_connect_timeout=_TIMEOUT_S,
            )
        except ValueError as exc:  # redis-py's message names the URL's scheme problem, not its password
            raise ConfigError(f"not a usable redis URL: {exc}"[:200], scheme=url.partition(":")[0]) from None
        self._prefix = prefix
        self._now = wall_clock
        self._start = self._redis.register_script(_START)
        self._end = self._redis.register_script(_END)
        self._append = self._redis.register_script(_APPEND)
        self._add_metrics = self._redis.register_script(_METRICS)
        self._end_abandoned = self._redis.register_script(_END_ABANDONED)
        self._claim = self._redis.register_script(_CLAIM)
        self._owner = uuid.uuid4().hex
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"  # never the URL: it may hold a password

    # -- keys ------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _index(self, *, agent: str | None = None, caller: str | None = None, call: str | None = None) -> str:
        """The sorted set of conversation ids for this filter (names are JSON: any text is safe)."""
        if call is not None:
            return self._key("index", "call", json.dumps(call))
        if agent is not None and caller is not None:
            return self._key("index", "agent-caller", json.dumps([agent, caller]))
        if agent is not None:
            return self._key("index", "agent", json.dumps(agent))
        if caller is not None:
            return self._key("index", "caller", json.dumps(caller))
        return self._key("index", "all")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the conversation store is closed")

    # -- writes ------------------------------------------------------------------------------------
    async def start_conversation(
        self,
        agent: str,
        channel: str,
        caller: str | None = None,
        conversation_id: str | None = None,
        *,
        call_id: str | None = None,
    ) -> Conversation:
        self._check_open()
        cid = conversation_id if conversation_id is not None else uuid.uuid4().hex
        conversation = Conversation(cid, agent, channel, caller, self._now(), None, call_id=call_id)
        fields = ["agent", agent, "channel", channel, "started_at", repr(conversation.started_at)]
        fields += ["owner", self._owner]
        if caller is not None:
            fields += ["caller", caller]
        indexes = [self._index(), self._index(agent=agent)]
        if caller is not None:
            indexes += [self._index(caller=caller), self._index(agent=agent, caller=caller)]
        if call_id is not None:
            fields += ["call_id", call_id]
            indexes.append(self._index(call=call_id))
        created = await self._start(
            keys=[self._key("conv", cid), self._key("open"), *indexes],
            args=[cid, repr(conversation.started_at), *fields],
        )
        if not created:
            raise ValueError(f"a conversation with id {cid!r} already exists")
        return conversation

    async def end_conversation(
        self, conversation_id: str, *, reason: str = "ended", if_owner: bool = False
    ) -> Conversation:
        self._check_open()
        flat = await self._end(
            keys=[self._key("conv", conversation_id), self._key("open")],
            args=[conversation_id, repr(self._now()), reason, self._owner if if_owner else ""],
        )
        if flat is None:
            raise KeyError(f"no conversation with id {conversation_id!r}")
        return _conversation(conversation_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def conversation_of_call(self, call_id: str) -> Conversation | None:
        self._check_open()
        ids = await self._redis.zrevrange(self._index(call=call_id), 0, 0)
        found = await self._conversations([str(cid) for cid in ids])
        return found[0] if found else None

    async def claim_conversation(self, conversation_id: str) -> Conversation:
        self._check_open()
        flat = await self._claim(
            keys=[self._key("conv", conversation_id), self._key("open")], args=[conversation_id, self._owner]
        )
        if flat is None:
            raise KeyError(f"no conversation with id {conversation_id!r}")
        return _conversation(conversation_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        text: str,
        *,
        started_at: float,
        ended_at: float | None = None,
        interrupted: bool = False,
    ) -> StoredMessage:
        check_role(role)
        self._check_open()
        record = {
            "role": role,
            "text": text,
            "started_at": started_at,
            "ended_at": ended_at,
            "interrupted": bool(interrupted),
        }
        length = await self._append(
            keys=[self._key("conv", conversation_id), self._key("messages", conversation_id)],
            args=[json.dumps(record)],
        )
        if length < 0:
            raise KeyError(f"no conversation with id {conversation_id!r}")
        return _message(conversation_id, int(length) - 1, record)

    async def add_metrics(self, metrics: TurnMetrics) -> None:
        self._check_open()
        cid = metrics.conversation_id
        stored = await self._add_metrics(
            keys=[self._key("conv", cid), self._key("metrics", cid)],
            args=[str(metrics.turn_index), json.dumps(metrics.to_dict())],
        )
        if stored < 0:
            raise KeyError(f"no conversation with id {cid!r}")
        if stored == 0:
            raise ValueError(f"metrics for turn {metrics.turn_index} are already stored")

    async def add_tool_call(self, record: ToolCallRecord) -> None:
        self._check_open()
        cid = record.conversation_id
        length = await self._append(
            keys=[self._key("conv", cid), self._key("tools", cid)], args=[json.dumps(record.to_dict())]
        )
        if length < 0:
            raise KeyError(f"no conversation with id {cid!r}")

    async def tool_calls(self, conversation_id: str) -> list[ToolCallRecord]:
        self._check_open()
        raw = await self._redis.lrange(self._key("tools", conversation_id), 0, -1)
        return [ToolCallRecord.from_dict(json.loads(item)) for item in raw]

    @property
    def owner(self) -> str:
        return self._owner

    async def renew_lease(self, ttl_s: float) -> None:
        self._check_open()
        await self._redis.set(self._key("lease", self._owner), "1", px=max(1, round(ttl_s * 1000)))

    async def end_abandoned(self, reason: str = "crashed") -> list[str]:
        self._check_open()
        ended = await self._end_abandoned(
            keys=[self._key("open")], args=[self._prefix, self._owner, repr(self._now()), reason]
        )
        return sorted(str(cid) for cid in ended)

    async def ping(self) -> None:
        from redis.exceptions import RedisError

        self._check_open()
        try:
            await self._redis.ping()
        except RedisError as exc:  # redis-py names host and port, never the password
            raise ConfigError(f"the redis conversation store does not answer: {exc}"[:300]) from exc

    # -- reads -------------------------------------------------------------------------------------
    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        self._check_open()
        data = _texts(await self._redis.hgetall(self._key("conv", conversation_id)))
        return _conversation(conversation_id, data) if data else None

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        self._check_open()
        raw = await self._redis.lrange(self._key("messages", conversation_id), 0, -1)
        return [_message(conversation_id, i, json.loads(item)) for i, item in enumerate(raw)]

    async def metrics(self, conversation_id: str) -> list[TurnMetrics]:
        self._check_open()
        raw = await self._redis.hgetall(self._key("metrics", conversation_id))
        return [TurnMetrics.from_dict(json.loads(raw[k])) for k in sorted(raw, key=int)]

    async def list_conversations(
        self,
        *,
        agent: str | None = None,
        caller: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        before: float | None = None,
    ) -> list[Conversation]:
        self._check_open()
        check_limits(limit=limit)
        top = "+inf" if before is None else f"({before!r}"
        # newest first; equal start times by id, descending (as the other backends)
        ids = await self._redis.zrevrangebyscore(
            self._index(agent=agent, caller=caller), top, "-inf", start=0, num=limit
        )
        return await self._conversations([str(cid) for cid in ids])

    async def caller_history(
        self,
        agent: str,
        caller: str,
        *,
        limit_messages: int = 50,
        exclude_conversation_id: str | None = None,
    ) -> list[StoredMessage]:
        self._check_open()
        check_limits(limit_messages=limit_messages)
        if limit_messages == 0:
            return []
        ids = await self._redis.zrevrange(self._index(agent=agent, caller=caller), 0, -1)
        newest_first: list[StoredMessage] = []
        for cid in map(str, ids):  # newest conversation first, until enough messages are in hand
            if cid == exclude_conversation_id:
                continue
            want = limit_messages - len(newest_first)
            async with self._redis.pipeline(transaction=True) as pipe:  # one snapshot of the list
                pipe.llen(self._key("messages", cid))
                pipe.lrange(self._key("messages", cid), -want, -1)
                length, raw = await pipe.execute()
            first = length - len(raw)
            newest_first += reversed(
                [_message(cid, first + i, json.loads(item)) for i, item in enumerate(raw)]
            )
            if len(newest_first) >= limit_messages:
                break
        return newest_first[::-1]

    async def _conversations(self, ids: list[str]) -> list[Conversation]:
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(self._key("conv", cid))
            found = await pipe.execute()
        return [_conversation(cid, _texts(data)) for cid, data in zip(ids, found, strict=True) if data]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()


def _texts(data: Any) -> dict[str, str]:
    """A hash as redis-py hands it over (typed loosely; text, with `decode_responses`)."""
    return {str(k): str(v) for k, v in data.items()}


def _conversation(cid: str, data: dict[str, str]) -> Conversation:
    ended = data.get("ended_at")
    return Conversation(
        cid,
        data["agent"],
        data["channel"],
        data.get("caller"),
        float(data["started_at"]),
        None if ended is None else float(ended),
        data.get("end_reason"),
        data.get("call_id"),
    )


def _message(cid: str, index: int, record: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        cid,
        index,
        record["role"],
        record["text"],
        record["started_at"],
        record["ended_at"],
        bool(record["interrupted"]),
    )
