"""`SQLiteStore`: the default conversation store, one SQLite file (`sqlite:///path.db`).

Durability. The file is in WAL mode with `synchronous=NORMAL` by default, and every write is its own
`BEGIN IMMEDIATE ... COMMIT` transaction. When a write's coroutine returns, its commit record is in
the WAL file: written to the operating system, which keeps it if the process is killed (SIGKILL, OOM,
a crash), so no committed turn is lost then; SQLite documents WAL transactions as durable across
application crashes whatever the `synchronous` setting. What NORMAL gives up is an fsync per commit:
after a power cut or kernel crash the last commits may roll back (the file stays consistent). Voice
turns come seconds apart, so `synchronous="full"` (`sqlite:///path.db?synchronous=full`) is there for
deployments that want those too, at one fsync per write.

Threads. Every sqlite call of a store runs on that store's own single worker thread, so the event
loop never blocks on disk and the connection never crosses threads (sqlite3's `check_same_thread`
stays on to prove it). Several stores, in one process or several, may open the same file: writers
wait up to `busy_timeout_s` for each other, and readers never wait in WAL mode.

Schema. Created on first open and versioned with `PRAGMA user_version` (`SCHEMA_VERSION`); a file
with a newer version, or one that is not a conversation store, is refused with `ConfigError`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from agentkit.exceptions import ConfigError
from agentkit.store._base import DEFAULT_LIST_LIMIT, check_limits
from agentkit.store._models import (
    METRIC_COLUMNS,
    TOOL_CALL_COLUMNS,
    Conversation,
    Role,
    StoredMessage,
    ToolCallRecord,
    TurnMetrics,
    check_role,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 4
"""The `PRAGMA user_version` this code writes and reads (version 1 to 3 files are upgraded in place)."""

_OWNERSHIP = (  # schema v2: who serves each open conversation, whether it is alive; tool calls
    "CREATE INDEX conversations_open ON conversations (owner) WHERE ended_at IS NULL",
    "CREATE TABLE leases (owner TEXT PRIMARY KEY NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID",
    """CREATE TABLE tool_calls (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        seq INTEGER NOT NULL,
        turn_index INTEGER NOT NULL,
        call_id TEXT NOT NULL,
        name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        result TEXT NOT NULL,
        is_error INTEGER NOT NULL,
        cancelled INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_ms REAL NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID""",
)
_CALLS = (  # schema v3: the transport's id of each conversation's call, to resume a reconnected call
    "CREATE INDEX conversations_by_call ON conversations (call_id, started_at) WHERE call_id IS NOT NULL",
)
_SCHEMA = (
    """CREATE TABLE conversations (
        id TEXT PRIMARY KEY NOT NULL,
        agent TEXT NOT NULL,
        channel TEXT NOT NULL,
        caller TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        end_reason TEXT,
        owner TEXT,
        call_id TEXT
    )""",
    "CREATE INDEX conversations_by_start ON conversations (started_at, id)",
    "CREATE INDEX conversations_by_caller ON conversations (agent, caller, started_at)",
    """CREATE TABLE messages (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        idx INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        text TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        interrupted INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE turn_metrics (
        conversation_id TEXT NOT NULL REFERENCES conversations (id),
        turn_index INTEGER NOT NULL,
        end_of_turn_ms REAL,
        stt_ms REAL,
        llm_ttft_ms REAL,
        tts_ttfa_ms REAL,
        voice_to_voice_ms REAL,
        input_tokens INTEGER,
        output_tokens INTEGER,
        user_chars INTEGER NOT NULL,
        reply_chars INTEGER NOT NULL,
        user_audio_s REAL NOT NULL,
        reply_audio_s REAL NOT NULL,
        interrupted INTEGER NOT NULL,
        created_at REAL NOT NULL,
        stt_provider TEXT,
        llm_provider TEXT,
        tts_provider TEXT,
        preemptive INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (conversation_id, turn_index)
    ) WITHOUT ROWID""",
    *_OWNERSHIP,
    *_CALLS,
)
_UPGRADE_1_TO_2 = (
    "ALTER TABLE conversations ADD COLUMN end_reason TEXT",
    "ALTER TABLE conversations ADD COLUMN owner TEXT",
    "ALTER TABLE turn_metrics ADD COLUMN stt_provider TEXT",
    "ALTER TABLE turn_metrics ADD COLUMN llm_provider TEXT",
    "ALTER TABLE turn_metrics ADD COLUMN tts_provider TEXT",
    *_OWNERSHIP,
)
_UPGRADE_2_TO_3 = ("ALTER TABLE conversations ADD COLUMN call_id TEXT", *_CALLS)
_UPGRADE_3_TO_4 = ("ALTER TABLE turn_metrics ADD COLUMN preemptive INTEGER NOT NULL DEFAULT 0",)
_CONVERSATION_COLUMNS = "id, agent, channel, caller, started_at, ended_at, end_reason, call_id"
_INSERT_TOOL_CALL = (
    f"INSERT INTO tool_calls (conversation_id, seq, {', '.join(TOOL_CALL_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' * (len(TOOL_CALL_COLUMNS) + 1))})"
)
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({_CONVERSATION_COLUMNS}, owner) VALUES ({', '.join('?' * 9)})"
)

_INSERT_METRICS = (
    f"INSERT INTO turn_metrics ({', '.join(METRIC_COLUMNS)}) VALUES ({', '.join('?' * len(METRIC_COLUMNS))})"
)

MEMORY_PATH = ":memory:"
"""The path of a private in-memory SQLite database (for tests; gone on `aclose()`)."""


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        row["id"],
        row["agent"],
        row["channel"],
        row["caller"],
        row["started_at"],
        row["ended_at"],
        row["end_reason"],
        row["call_id"],
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        row["conversation_id"],
        row["idx"],
        row["role"],
        row["text"],
        row["started_at"],
        row["ended_at"],
        bool(row["interrupted"]),
    )


def _journal_mode_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> str:
    """`PRAGMA journal_mode = WAL`, retried while the file is locked. Switching a new file to WAL
    takes an exclusive lock, and SQLite answers "database is locked" at once, without its busy
    timeout, when another connection is switching it too: workers starting together on one new
    file did (about one start in seven with six at once). Once the file is in WAL mode the pragma
    only reads it."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return mode


class SQLiteStore:
    """A `ConversationStore` in one SQLite file (see the module docstring for its guarantees).

    The constructor opens the file (creating it, its folder and the schema as needed) on the store's
    worker thread and waits for it, so a bad path fails at once with a `ConfigError` naming it. Call
    it at startup; `aclose()` closes the connection and lets the worker thread go.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = os.fspath(path)
        """Where the database is (`:memory:` for a private in-memory one)."""
        self.synchronous = synchronous
        """`normal` (survives a killed process) or `full` (also survives power loss)."""
        self._now = wall_clock
        self._closed = False
        self._owner = uuid.uuid4().hex
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentkit-store")
        try:
            self._executor.submit(self._open, synchronous, busy_timeout_s).result()
        except BaseException:
            self._closed = True
            self._executor.shutdown(wait=False)
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- worker-thread side ------------------------------------------------------------------------

    def _open(self, synchronous: str, busy_timeout_s: float) -> None:
        target = self.path
        if target != MEMORY_PATH:
            file = Path(target).expanduser()
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._unusable(f"its folder cannot be created ({exc})") from exc
            if file.is_dir():
                raise self._unusable("it is a folder")
            target = str(file)
        try:
            conn = sqlite3.connect(target, timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unusable(str(exc)) from exc
        try:
            conn.row_factory = sqlite3.Row
            mode = _journal_mode_wal(conn, busy_timeout_s)
            if mode != "wal" and target != MEMORY_PATH:
                logger.warning("conversation store is in journal mode %s, not WAL", mode)
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._create_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unusable(str(exc)) from exc
            raise
        self._conn = conn
        logger.debug("conversation store open (schema v%d, synchronous=%s)", SCHEMA_VERSION, synchronous)

    def _unusable(self, reason: str) -> ConfigError:
        return ConfigError(f"cannot use {self.path} as the conversation store: {reason}", path=self.path)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        def create(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise self._unusable(
                    f"its schema version {version} is newer than this agentkit's {SCHEMA_VERSION}"
                )
            if version in (1, 2, 3):  # conversations left open by v1 have no owner: abandoned
                steps = (_UPGRADE_1_TO_2, _UPGRADE_2_TO_3, _UPGRADE_3_TO_4)[version - 1 :]
                upgrades = [statement for step in steps for statement in step]
                for statement in upgrades:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                logger.info("conversation store upgraded from schema v%d to v%d", version, SCHEMA_VERSION)
                return
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise self._unusable("it is an SQLite database of something else")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self._transaction(conn, create)

    @staticmethod
    def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in its own write transaction: all of it commits, or none of it."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _connection(self) -> sqlite3.Connection:
        assert self._conn is not None, "used before open or after close"
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(self._connection(), fn)

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
        return self._connection().execute(sql, args).fetchall()

    @staticmethod
    def _require(conn: sqlite3.Connection, conversation_id: str) -> None:
        if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
            raise KeyError(f"no conversation with id {conversation_id!r}")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- event-loop side ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("the conversation store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start_conversation(
        self,
        agent: str,
        channel: str,
        caller: str | None = None,
        conversation_id: str | None = None,
        *,
        call_id: str | None = None,
    ) -> Conversation:
        cid = conversation_id if conversation_id is not None else uuid.uuid4().hex
        conversation = Conversation(cid, agent, channel, caller, self._now(), None, call_id=call_id)

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    _INSERT_CONVERSATION,
                    (*dataclasses.astuple(conversation), self._owner),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a conversation with id {cid!r} already exists") from None

        await self._run(self._write, insert)
        return conversation

    async def end_conversation(
        self, conversation_id: str, *, reason: str = "ended", if_owner: bool = False
    ) -> Conversation:
        now = self._now()
        sql = "UPDATE conversations SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL"
        params: tuple[object, ...] = (now, reason, conversation_id)
        if if_owner:
            sql, params = f"{sql} AND owner = ?", (*params, self._owner)

        def update(conn: sqlite3.Connection) -> Conversation:
            conn.execute(sql, params)
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise KeyError(f"no conversation with id {conversation_id!r}")
            return _conversation(row)

        return await self._run(self._write, update)

    async def conversation_of_call(self, call_id: str) -> Conversation | None:
        sql = "SELECT * FROM conversations WHERE call_id = ? ORDER BY started_at DESC, id DESC LIMIT 1"
        rows = await self._run(self._read, sql, (call_id,))
        return _conversation(rows[0]) if rows else None

    async def claim_conversation(self, conversation_id: str) -> Conversation:
        def update(conn: sqlite3.Connection) -> Conversation:
            conn.execute(
                "UPDATE conversations SET ended_at = NULL, end_reason = NULL, owner = ? WHERE id = ?",
                (self._owner, conversation_id),
            )
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise KeyError(f"no conversation with id {conversation_id!r}")
            return _conversation(row)

        return await self._run(self._write, update)

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

        def insert(conn: sqlite3.Connection) -> StoredMessage:
            self._require(conn, conversation_id)
            sql = "SELECT coalesce(max(idx) + 1, 0) FROM messages WHERE conversation_id = ?"
            index = conn.execute(sql, (conversation_id,)).fetchone()[0]
            message = StoredMessage(
                conversation_id, index, role, text, started_at, ended_at, bool(interrupted)
            )
            conn.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", dataclasses.astuple(message))
            return message

        return await self._run(self._write, insert)

    async def add_metrics(self, metrics: TurnMetrics) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            self._require(conn, metrics.conversation_id)
            try:
                conn.execute(_INSERT_METRICS, dataclasses.astuple(metrics))
            except sqlite3.IntegrityError:
                raise ValueError(f"metrics for turn {metrics.turn_index} are already stored") from None

        await self._run(self._write, insert)

    async def add_tool_call(self, record: ToolCallRecord) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            self._require(conn, record.conversation_id)
            sql = "SELECT coalesce(max(seq) + 1, 0) FROM tool_calls WHERE conversation_id = ?"
            seq = conn.execute(sql, (record.conversation_id,)).fetchone()[0]
            values = dataclasses.astuple(record)
            conn.execute(_INSERT_TOOL_CALL, (values[0], seq, *values[1:]))

        await self._run(self._write, insert)

    async def tool_calls(self, conversation_id: str) -> list[ToolCallRecord]:
        sql = "SELECT * FROM tool_calls WHERE conversation_id = ? ORDER BY seq"
        rows = await self._run(self._read, sql, (conversation_id,))
        return [ToolCallRecord.from_dict(dict(row)) for row in rows]

    @property
    def owner(self) -> str:
        return self._owner

    async def renew_lease(self, ttl_s: float) -> None:
        expires_at = self._now() + ttl_s

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO leases VALUES (?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at",
                (self._owner, expires_at),
            )

        await self._run(self._write, upsert)

    async def end_abandoned(self, reason: str = "crashed") -> list[str]:
        now = self._now()

        def sweep(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                """UPDATE conversations SET ended_at = ?, end_reason = ?
                WHERE ended_at IS NULL AND owner IS NOT ?
                  AND (owner IS NULL OR owner NOT IN (SELECT owner FROM leases WHERE expires_at > ?))
                RETURNING id""",
                (now, reason, self._owner, now),
            ).fetchall()
            conn.execute("DELETE FROM leases WHERE expires_at <= ? AND owner IS NOT ?", (now, self._owner))
            return sorted(row[0] for row in rows)

        return await self._run(self._write, sweep)

    async def ping(self) -> None:
        await self._run(self._read, "SELECT 1", ())  # opened (and checked) in __init__ already

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        rows = await self._run(self._read, "SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return _conversation(rows[0]) if rows else None

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        sql = "SELECT * FROM messages WHERE conversation_id = ? ORDER BY idx"
        return [_message(row) for row in await self._run(self._read, sql, (conversation_id,))]

    async def metrics(self, conversation_id: str) -> list[TurnMetrics]:
        sql = "SELECT * FROM turn_metrics WHERE conversation_id = ? ORDER BY turn_index"
        rows = await self._run(self._read, sql, (conversation_id,))
        return [TurnMetrics.from_dict(dict(row)) for row in rows]

    async def list_conversations(
        self,
        *,
        agent: str | None = None,
        caller: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        before: float | None = None,
    ) -> list[Conversation]:
        check_limits(limit=limit)
        where = ["1"]
        args: list[Any] = []
        for clause, value in (("agent = ?", agent), ("caller = ?", caller), ("started_at < ?", before)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = (
            f"SELECT * FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY started_at DESC, id DESC LIMIT ?"
        )
        rows = await self._run(self._read, sql, (*args, limit))
        return [_conversation(row) for row in rows]

    async def caller_history(
        self,
        agent: str,
        caller: str,
        *,
        limit_messages: int = 50,
        exclude_conversation_id: str | None = None,
    ) -> list[StoredMessage]:
        check_limits(limit_messages=limit_messages)
        sql = """SELECT m.* FROM messages AS m JOIN conversations AS c ON c.id = m.conversation_id
            WHERE c.agent = ? AND c.caller = ? AND c.id IS NOT ?
            ORDER BY c.started_at DESC, c.id DESC, m.idx DESC LIMIT ?"""
        args = (agent, caller, exclude_conversation_id, limit_messages)
        rows = await self._run(self._read, sql, args)
        return [_message(row) for row in reversed(rows)]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)
