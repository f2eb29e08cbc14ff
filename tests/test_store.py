"""The conversation store: one behavioural suite over every backend, the SQLite file's guarantees
(durability across SIGKILL, several openers), `open_store` URLs, and the read-only JSON API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _redis_server import redis_server
from _store_writer import AGENT, CALLER, turn_metrics, turn_text
from fastapi import FastAPI
from redis.exceptions import RedisError

import agentkit.store
from agentkit.exceptions import ConfigError
from agentkit.server import conversation_api
from agentkit.store import (
    SCHEMA_VERSION,
    Conversation,
    ConversationStore,
    LeaseKeeper,
    MemoryStore,
    RedisStore,
    Role,
    SQLiteStore,
    StoredMessage,
    ToolCallRecord,
    TurnMetrics,
    open_store,
)

WRITER = Path(__file__).resolve().parent / "_store_writer.py"
REPO = WRITER.parent.parent
T0 = 1_700_000_000.0


class StepClock:
    """Unix seconds that advance by one second on every reading."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway `redis-server` on a free loopback port, no persistence (installed by .ci/run)."""
    with redis_server() as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConversationStore]:
    if request.param == "memory":
        s: ConversationStore = MemoryStore(wall_clock=StepClock())
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "store.db", wall_clock=StepClock())
    else:  # a fresh key prefix per test: one server, no test sees another's data
        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}:", wall_clock=StepClock())
    yield s
    await s.aclose()


def metrics_for(conversation_id: str, turn: int, **changes: object) -> TurnMetrics:
    values = turn_metrics(conversation_id, turn).to_dict() | changes
    return TurnMetrics.from_dict(values)


async def add_turns(store: ConversationStore, conversation_id: str, texts: list[str]) -> list[StoredMessage]:
    out = []
    for i, text in enumerate(texts):
        role: Role = "user" if i % 2 == 0 else "assistant"
        out.append(await store.add_message(conversation_id, role, text, started_at=T0 + i))
    return out


# -- the behavioural suite, on every backend --------------------------------------------------------


async def test_conversation_lifecycle(store: ConversationStore) -> None:
    assert isinstance(store, ConversationStore)
    a = await store.start_conversation("claude", "websocket")
    b = await store.start_conversation("claude", "twilio", caller="+15550123", conversation_id="call-1")
    assert len(a.id) == 32 and a.id != b.id
    assert (b.id, b.agent, b.channel, b.caller, b.ended_at) == (
        "call-1",
        "claude",
        "twilio",
        "+15550123",
        None,
    )
    assert b.started_at > a.started_at
    assert await store.get_conversation("call-1") == b
    assert await store.get_conversation("nope") is None

    ended = await store.end_conversation("call-1")
    assert ended.ended_at is not None and ended.ended_at > b.started_at
    assert await store.end_conversation("call-1") == ended, "ending twice keeps the first end time"
    assert await store.get_conversation("call-1") == ended
    assert (await store.get_conversation(a.id)) == a

    with pytest.raises(ValueError, match="already exists"):
        await store.start_conversation("claude", "websocket", conversation_id="call-1")
    with pytest.raises(KeyError):
        await store.end_conversation("nope")


async def test_messages_keep_their_order_and_fields(store: ConversationStore) -> None:
    conv = await store.start_conversation("claude", "webrtc")
    other = await store.start_conversation("claude", "webrtc")
    texts = ["hello", "hi there", "what's the time?", "noon", "thanks"]
    written = await add_turns(store, conv.id, texts)
    await store.add_message(other.id, "user", "elsewhere", started_at=T0)
    cut = await store.add_message(
        conv.id, "assistant", "you're welc", started_at=T0 + 9, ended_at=T0 + 9.5, interrupted=True
    )
    stored = await store.messages(conv.id)
    assert stored == [*written, cut]
    assert [m.index for m in stored] == list(range(6))
    assert [m.text for m in stored[:5]] == texts
    assert (cut.role, cut.ended_at, cut.interrupted) == ("assistant", T0 + 9.5, True)
    assert not stored[0].interrupted and stored[0].ended_at is None
    assert [m.index for m in await store.messages(other.id)] == [0]
    assert await store.messages("nope") == []
    json.dumps([m.to_dict() for m in stored])


async def test_message_errors_store_nothing(store: ConversationStore) -> None:
    conv = await store.start_conversation("claude", "talk")
    with pytest.raises(ValueError, match="role"):
        await store.add_message(conv.id, "system", "x", started_at=T0)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        await store.add_message("nope", "user", "x", started_at=T0)
    assert await store.messages(conv.id) == []
    assert await store.messages("nope") == []


async def test_concurrent_writers_get_distinct_consecutive_indexes(store: ConversationStore) -> None:
    conv = await store.start_conversation("claude", "websocket")
    written = await asyncio.gather(
        *(store.add_message(conv.id, "user", f"m{i}", started_at=T0 + i) for i in range(20))
    )
    assert sorted(m.index for m in written) == list(range(20))
    assert await store.messages(conv.id) == sorted(written, key=lambda m: m.index)


async def test_metrics_round_trip_in_turn_order(store: ConversationStore) -> None:
    conv = await store.start_conversation("claude", "twilio", caller="+15550123")
    turns = [metrics_for(conv.id, i) for i in (2, 0, 1)]
    for m in turns:
        await store.add_metrics(m)
    stored = await store.metrics(conv.id)
    assert stored == sorted(turns, key=lambda m: m.turn_index)
    assert stored[0].stt_ms is None and stored[0].tts_ttfa_ms is None and stored[1].interrupted
    assert json.loads(json.dumps(stored[1].to_dict())) == stored[1].to_dict()
    with pytest.raises(ValueError, match="already stored"):
        await store.add_metrics(metrics_for(conv.id, 1, stt_ms=1.0))
    assert (await store.metrics(conv.id))[1] == turns[2]
    with pytest.raises(KeyError):
        await store.add_metrics(metrics_for("nope", 0))
    assert await store.metrics("nope") == []


async def test_tool_calls_round_trip_in_order(store: ConversationStore) -> None:
    conv = await store.start_conversation("claude", "websocket")
    calls = [
        ToolCallRecord(
            conv.id, 0, f"call_{i}", "lookup", f'{{"n": {i}}}', f"r{i}", i == 1, i == 2, T0 + i, 1.5
        )
        for i in range(3)
    ]
    for call in calls:
        await store.add_tool_call(call)
    assert await store.tool_calls(conv.id) == calls
    assert await store.tool_calls("nope") == []
    with pytest.raises(KeyError):
        await store.add_tool_call(ToolCallRecord("nope", 0, "c", "t", "{}", "", False, False, T0, 0.0))


def test_records_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="finite"):
        metrics_for("c", 0, voice_to_voice_ms=float("nan"))
    with pytest.raises(ValueError, match="turn_index"):
        metrics_for("c", -1)
    with pytest.raises(ValueError, match="role"):
        StoredMessage("c", 0, "robot", "x", T0, None, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        StoredMessage("c", -1, "user", "x", T0, None, False)
    with pytest.raises(TypeError):
        TurnMetrics.from_dict({"conversation_id": "c", "turn_index": 0})


async def test_list_conversations_filters_and_pages(store: ConversationStore) -> None:
    made: list[Conversation] = []
    for i in range(7):
        agent = "claude" if i % 2 == 0 else "groq"
        made.append(await store.start_conversation(agent, "twilio", caller=f"+1555000{i % 3}"))
    newest_first = made[::-1]
    assert await store.list_conversations() == newest_first
    assert await store.list_conversations(agent="claude") == [c for c in newest_first if c.agent == "claude"]
    assert await store.list_conversations(caller="+15550001") == [
        c for c in newest_first if c.caller == "+15550001"
    ]
    assert await store.list_conversations(agent="groq", caller="+15550000") == [made[3]]
    assert await store.list_conversations(agent="nobody") == []

    pages: list[list[Conversation]] = []
    before = None
    while page := await store.list_conversations(limit=3, before=before):
        pages.append(page)
        before = page[-1].started_at
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [c for p in pages for c in p] == newest_first
    assert await store.list_conversations(before=made[0].started_at) == []

    for bad in (0, -1, 501):
        with pytest.raises(ValueError, match="limit"):
            await store.list_conversations(limit=bad)


async def test_caller_history_spans_their_earlier_conversations_only(store: ConversationStore) -> None:
    first = await store.start_conversation("claude", "twilio", caller="+15550123")
    mine1 = await add_turns(store, first.id, ["my name is Ada", "hello Ada"])
    await store.end_conversation(first.id)
    other_agent = await store.start_conversation("groq", "twilio", caller="+15550123")
    await add_turns(store, other_agent.id, ["not for claude"])
    other_caller = await store.start_conversation("claude", "twilio", caller="+15550999")
    await add_turns(store, other_caller.id, ["someone else"])
    anonymous = await store.start_conversation("claude", "websocket")
    await add_turns(store, anonymous.id, ["no caller id"])
    second = await store.start_conversation("claude", "twilio", caller="+15550123")
    mine2 = await add_turns(store, second.id, ["it's Ada again", "welcome back", "bye"])
    now = await store.start_conversation("claude", "twilio", caller="+15550123")
    current = await add_turns(store, now.id, ["hi"])

    assert await store.caller_history("claude", "+15550123") == mine1 + mine2 + current
    earlier = await store.caller_history("claude", "+15550123", exclude_conversation_id=now.id)
    assert earlier == mine1 + mine2
    assert await store.caller_history("claude", "+15550123", limit_messages=3) == [*mine2[1:], *current]
    assert await store.caller_history("claude", "+15550123", limit_messages=0) == []
    assert await store.caller_history("claude", "+15559999") == []
    assert await store.caller_history("nobody", "+15550123") == []
    with pytest.raises(ValueError, match="limit_messages"):
        await store.caller_history("claude", "+15550123", limit_messages=-1)


async def test_closed_store_refuses_calls(store: ConversationStore) -> None:
    await store.start_conversation("claude", "websocket", conversation_id="c")
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.get_conversation("c")
    with pytest.raises(RuntimeError, match="closed"):
        await store.add_message("c", "user", "x", started_at=T0)


async def test_a_call_is_found_by_its_id_and_a_claim_reopens_its_conversation(
    store: ConversationStore,
) -> None:
    first = await store.start_conversation("claude", "twilio", caller="+15550123", call_id="CA1")
    other = await store.start_conversation("claude", "twilio", call_id="CA2")
    plain = await store.start_conversation("claude", "websocket")
    assert (first.call_id, other.call_id, plain.call_id) == ("CA1", "CA2", None)
    assert await store.conversation_of_call("CA1") == first
    assert await store.conversation_of_call("CA9") is None
    ended = await store.end_conversation(first.id, reason="crashed")
    assert await store.conversation_of_call("CA1") == ended
    claimed = await store.claim_conversation(first.id)
    assert (claimed.id, claimed.call_id, claimed.ended_at, claimed.end_reason) == (
        first.id,
        "CA1",
        None,
        None,
    )
    assert await store.get_conversation(first.id) == claimed
    assert claimed.to_dict()["call_id"] == "CA1"
    again = await store.start_conversation("claude", "twilio", call_id="CA1")  # a later stream of the call
    assert await store.conversation_of_call("CA1") == again  # the newest
    with pytest.raises(KeyError):
        await store.claim_conversation("no-such-id")


# -- the JSON API, on every backend ----------------------------------------------------------------


@pytest.fixture
async def api(store: ConversationStore) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(conversation_api(store, local=True))  # local development: this machine only
    transport = httpx.ASGITransport(app=app)  # a 127.0.0.1 client
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        yield client


async def guarded_get(
    store: ConversationStore,
    *,
    token: str | None,
    client: str,
    headers: dict[str, str] | None = None,
    local: bool = False,
    host: str = "127.0.0.1:8000",
) -> httpx.Response:
    app = FastAPI()
    app.include_router(conversation_api(store, token=token, local=local))
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
        return await http.get("/api/conversations", headers=headers)


PROXY_HEADERS = {  # each as a proxy or tunnel would send it
    "forwarded": "for=203.0.113.9;proto=https",
    "x-forwarded-for": "203.0.113.9",
    "x-forwarded-host": "agent.example",
    "x-forwarded-proto": "https",
    "x-forwarded-port": "443",
    "x-real-ip": "203.0.113.9",
    "cf-connecting-ip": "203.0.113.9",
    "true-client-ip": "203.0.113.9",
    "fastly-client-ip": "203.0.113.9",
    "x-client-ip": "203.0.113.9",
    "x-cluster-client-ip": "203.0.113.9",
    "x-envoy-external-address": "203.0.113.9",
    "x-original-forwarded-for": "203.0.113.9",
    "via": "1.1 relay.example",
}


async def test_api_is_off_without_a_token(store: ConversationStore) -> None:
    """Transcripts and phone numbers: with no token and no explicit local mode nobody gets them, not
    even a direct loopback reader, and the refusal says how to turn the API on."""
    for client, host in (("127.0.0.1", "127.0.0.1:8000"), ("::1", "localhost"), ("203.0.113.9", "a.example")):
        refused = await guarded_get(store, token=None, client=client, host=host)
        assert refused.status_code == 403, (client, host)
        assert "AGENTKIT_API_TOKEN" in refused.json()["detail"]
        assert "AGENTKIT_API_LOCAL" in refused.json()["detail"]


async def test_local_mode_answers_only_direct_requests_on_this_machine(store: ConversationStore) -> None:
    """`AGENTKIT_API_LOCAL=1`: a loopback client naming a loopback host, with no proxy header. Not a
    remote reader, not a DNS-rebinding page (loopback client, its own name as `Host`), not a TCP
    relay (likewise), not a reader behind a tunnel or proxy (loopback client, but says so)."""
    for client, host in (("127.0.0.1", "127.0.0.1:8000"), ("::1", "[::1]:8000"), ("127.0.0.1", "localhost")):
        allowed = await guarded_get(store, token=None, client=client, host=host, local=True)
        assert allowed.status_code == 200, (client, host)
    refusals: list[tuple[str, str, dict[str, str] | None]] = [
        ("203.0.113.9", "127.0.0.1:8000", None),  # remote
        ("127.0.0.1", "evil.example:8000", None),  # DNS rebinding: the attacker's name
        ("127.0.0.1", "agent.example", None),  # a relay that keeps the public name
        ("127.0.0.1", "127.0.0.1.evil.example", None),
        ("127.0.0.1", "localhost.evil.example:8000", None),
        *(("127.0.0.1", "127.0.0.1:8000", {name: value}) for name, value in PROXY_HEADERS.items()),
        ("127.0.0.1", "127.0.0.1:8000", {"X-Forwarded-Anything": "x"}),
        ("127.0.0.1", "127.0.0.1:8000", {"X-Original-Host": "agent.example"}),
    ]
    for client, host, headers in refusals:
        refused = await guarded_get(store, token=None, client=client, host=host, headers=headers, local=True)
        assert refused.status_code == 403, (client, host, headers)
        assert "AGENTKIT_API_LOCAL" in refused.json()["detail"]


async def test_api_with_a_token_needs_it_from_everywhere(store: ConversationStore) -> None:
    await store.start_conversation("claude", "twilio", caller="+15550100")
    token = "s3cret-token"
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {token}"}):
        refused = await guarded_get(store, token=token, client="127.0.0.1", headers=headers)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "+15550100" not in refused.text
    allowed = await guarded_get(
        store, token=token, client="203.0.113.9", headers={"authorization": f"Bearer {token}"}
    )
    assert allowed.status_code == 200 and allowed.json()["conversations"][0]["caller"] == "+15550100"
    # a token makes the Host and proxy checks moot: a proxied reader with the token is answered
    with_token = {"authorization": f"Bearer {token}", **PROXY_HEADERS}
    proxied = await guarded_get(
        store, token=token, client="127.0.0.1", host="agent.example", headers=with_token
    )
    assert proxied.status_code == 200
    # an empty token (AGENTKIT_API_TOKEN= ) is no token, not "anyone with no password": off, or local
    assert (await guarded_get(store, token="", client="127.0.0.1")).status_code == 403
    assert (await guarded_get(store, token="", client="203.0.113.9", local=True)).status_code == 403
    assert (await guarded_get(store, token="", client="127.0.0.1", local=True)).status_code == 200


async def test_api_lists_conversations_with_filters_and_pages(
    store: ConversationStore, api: httpx.AsyncClient
) -> None:
    made = [
        await store.start_conversation("claude" if i < 3 else "groq", "twilio", caller=f"+1555{i % 2}")
        for i in range(5)
    ]
    body = (await api.get("/api/conversations")).json()
    assert body == {"conversations": [c.to_dict() for c in made[::-1]], "next_before": None}
    body = (await api.get("/api/conversations", params={"agent": "claude", "caller": "+15550"})).json()
    assert [c["id"] for c in body["conversations"]] == [made[2].id, made[0].id]

    seen: list[str] = []
    params: dict[str, str | int | float] = {"limit": 2}
    while True:
        page = (await api.get("/api/conversations", params=params)).json()
        seen += [c["id"] for c in page["conversations"]]
        if page["next_before"] is None:
            break
        params["before"] = page["next_before"]
    assert seen == [c.id for c in made[::-1]]

    for bad in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"before": "nan"}, {"before": "soon"}):
        response = await api.get("/api/conversations", params=bad)
        assert response.status_code == 422, bad
        assert "detail" in response.json()
    assert (await api.get("/api/conversations", params={"limit": 500})).status_code == 200


async def test_api_shows_one_conversation_or_404(store: ConversationStore, api: httpx.AsyncClient) -> None:
    conv = await store.start_conversation("claude", "talk", caller="client-7")
    messages = await add_turns(store, conv.id, ["hello", "hi"])
    await store.add_metrics(metrics_for(conv.id, 0))
    call = ToolCallRecord(
        conv.id, 0, "call_1", "order_status", '{"order": 42}', "shipped", False, False, T0, 3.5
    )
    await store.add_tool_call(call)
    await store.end_conversation(conv.id)

    response = await api.get(f"/api/conversations/{conv.id}")
    assert response.status_code == 200
    body = response.json()
    assert body["conversation"] == (await store.get_conversation(conv.id)).to_dict()  # type: ignore[union-attr]
    assert body["messages"] == [m.to_dict() for m in messages]
    assert body["metrics"] == [metrics_for(conv.id, 0).to_dict()]
    assert body["tool_calls"] == [call.to_dict()]

    missing = await api.get("/api/conversations/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {"detail": "no such conversation"}


# -- SQLite: the file's guarantees -----------------------------------------------------------------


def test_sqlite_workers_starting_together_on_a_new_file_all_open_it(tmp_path: Path) -> None:
    """Six stores (as six workers would) open one new file at the same moment, 20 times over:
    every one opens. Switching a new file to WAL fails at once with "database is locked" for a
    connection that races another doing the same; the store retries it within its busy timeout."""
    import threading

    for round_ in range(20):
        path = tmp_path / f"round-{round_}.db"
        start = threading.Barrier(6)
        opened: list[SQLiteStore] = []
        errors: list[BaseException] = []

        def worker(
            path: Path, start: threading.Barrier, opened: list[SQLiteStore], errors: list[BaseException]
        ) -> None:
            start.wait()
            try:
                opened.append(SQLiteStore(path))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(path, start, opened, errors)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and len(opened) == 6
        for store in opened:
            asyncio.run(store.aclose())
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_file_survives_reopening_and_has_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "c.db"
    first = SQLiteStore(path)
    conv = await first.start_conversation("claude", "twilio", caller="+15550123")
    written = await add_turns(first, conv.id, ["a", "b"])
    await first.aclose()

    second = SQLiteStore(path)
    assert await second.get_conversation(conv.id) == conv
    assert await second.messages(conv.id) == written
    await second.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    a = SQLiteStore(tmp_path / "shared.db")
    b = SQLiteStore(tmp_path / "shared.db")
    try:
        conv = await a.start_conversation("claude", "websocket", caller="x")
        assert await b.get_conversation(conv.id) == conv
        await b.add_message(conv.id, "user", "from b", started_at=T0)
        assert [m.text for m in await a.messages(conv.id)] == ["from b"]
        writes = [
            s.add_message(conv.id, "assistant", f"{name}{i}", started_at=T0 + i)
            for i in range(15)
            for s, name in ((a, "a"), (b, "b"))
        ]
        await asyncio.gather(*writes)
        stored = await a.messages(conv.id)
        assert [m.index for m in stored] == list(range(31))
        assert await b.messages(conv.id) == stored
    finally:
        await a.aclose()
        await b.aclose()


def expected_lines(turns: int) -> list[str]:
    """What the writer prints for `turns` complete turns."""
    return [f"{what} {t}" for t in range(turns) for what in ("user", "assistant", "turn")]


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["turn 24", "user 25", "assistant 25"])
def test_sigkill_loses_no_reported_write(kill_after: str, tmp_path: Path) -> None:
    """Kill the writer right after it reports `kill_after`, i.e. while its next write is under way."""
    path = tmp_path / "kill.db"
    cid = uuid.uuid4().hex
    script = expected_lines(26)
    script = script[: script.index(kill_after) + 1]
    # opened before the writer starts, so it also proves a second process's writes are visible
    watcher = SQLiteStore(path)
    # the checkout first on the path, whether or not agentkit is installed
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    writer = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), cid],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": pythonpath},
    )
    try:
        assert writer.stdin is not None and writer.stdout is not None
        assert writer.stdout.readline() == "started\n"
        for n, expected in enumerate(script, start=1):
            assert writer.stdout.readline() == expected + "\n"
            if n < len(script):  # answered: the writer may go one write further (`_store_writer`)
                writer.stdin.write("seen\n")
                writer.stdin.flush()
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        for pipe in (writer.stdin, writer.stdout):
            if pipe is not None:
                pipe.close()
    assert writer.returncode == -signal.SIGKILL
    turns = sum(line.startswith("turn ") for line in script)
    reported_messages = len(script) - turns

    async def check(store: SQLiteStore) -> None:
        messages = await store.messages(cid)
        metrics = await store.metrics(cid)
        assert len(messages) >= reported_messages and len(metrics) >= turns
        assert len(messages) <= reported_messages + 1 and len(metrics) <= turns + 1
        assert [m.index for m in messages] == list(range(len(messages)))
        for i, message in enumerate(messages[:reported_messages]):
            turn, role = divmod(i, 2)
            assert message.role == ("user", "assistant")[role]
            assert message.text == turn_text(turn, message.role)
            assert message.started_at == turn + 0.5 * role
            assert message.interrupted == (role == 1 and turn % 2 == 1)
        assert metrics[:turns] == [turn_metrics(cid, t) for t in range(turns)]
        assert [c.id for c in await store.list_conversations(agent=AGENT, caller=CALLER)] == [cid]

    async def main() -> None:
        try:
            await check(watcher)
        finally:
            await watcher.aclose()
        reopened = SQLiteStore(path)
        try:
            await check(reopened)
        finally:
            await reopened.aclose()

    asyncio.run(main())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


# -- crashes: leases and abandoned conversations ---------------------------------------------------


class ManualClock:
    """Unix seconds that move only when told (leases are checked against the stores' wall clock)."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def two_owners(kind: str, tmp_path: Path, request: pytest.FixtureRequest, clock: ManualClock) -> list[Any]:
    """Two store objects on one store, as two server processes would have."""
    if kind == "sqlite":
        return [SQLiteStore(tmp_path / "owners.db", wall_clock=clock) for _ in range(2)]
    url, prefix = request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex[:8]}:"
    return [RedisStore(url, prefix=prefix, wall_clock=clock) for _ in range(2)]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_dead_owners_open_conversations_are_ended_as_crashed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Worker A serves a call and dies (its lease runs out); worker B, alive, ends A's open call as
    `crashed`, but never its own, nor A's ended ones, nor A's while A's lease still runs."""
    clock = ManualClock()
    a, b = two_owners(kind, tmp_path, request, clock)
    try:
        assert a.owner != b.owner
        lease_s = 0.3 if kind == "redis" else 30.0  # redis expires keys on its own clock
        await a.renew_lease(lease_s)
        await b.renew_lease(3600)
        open_a = await a.start_conversation("claude", "twilio", caller="+15550100")
        done_a = await a.start_conversation("claude", "websocket")
        await a.end_conversation(done_a.id, reason="hang_up")
        open_b = await b.start_conversation("claude", "websocket")
        assert await b.end_abandoned() == []  # A is alive
        clock.t += 31.0
        if kind == "redis":
            await asyncio.sleep(0.5)
        assert await b.end_abandoned() == [open_a.id]
        assert await b.end_abandoned() == []  # once
        ended = await a.get_conversation(open_a.id)
        assert ended is not None and (ended.end_reason, ended.ended_at) == ("crashed", clock.t)
        assert (await b.get_conversation(done_a.id)).end_reason == "hang_up"  # type: ignore[union-attr]
        assert (await b.get_conversation(open_b.id)).ended_at is None  # type: ignore[union-attr]
        assert await a.end_abandoned() == []  # B's lease still runs: A ends nothing of B's
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_claimed_conversation_belongs_to_its_new_owner(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Worker A's call reconnected to worker B, which claimed it: A's lease running out no longer
    ends it, and B's sweeps never do."""
    clock = ManualClock()
    a, b = two_owners(kind, tmp_path, request, clock)
    try:
        lease_s = 0.3 if kind == "redis" else 30.0
        await a.renew_lease(lease_s)
        await b.renew_lease(3600)
        call = await a.start_conversation("claude", "twilio", call_id="CA7")
        claimed = await b.claim_conversation(call.id)
        assert claimed.ended_at is None
        clock.t += 31.0
        if kind == "redis":
            await asyncio.sleep(0.5)
        assert await b.end_abandoned() == []
        assert await a.end_abandoned() == []  # B is alive
        assert (await a.get_conversation(call.id)).ended_at is None  # type: ignore[union-attr]
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_the_worker_a_call_left_cannot_end_it_where_it_went_on(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Worker A's Twilio stream dropped and the call reconnected to worker B, which claimed its
    conversation; when A's half-open session finally closes, its end (`if_owner`) changes nothing.
    B's own end does; an end without `if_owner` (the API's, an operator's) still ends it anywhere."""
    clock = ManualClock()
    a, b = two_owners(kind, tmp_path, request, clock)
    try:
        call = await a.start_conversation("claude", "twilio", call_id="CA9")
        await b.claim_conversation(call.id)
        clock.t += 5.0
        late = await a.end_conversation(call.id, reason="dropped", if_owner=True)
        assert late.ended_at is None and (await b.get_conversation(call.id)).ended_at is None  # type: ignore[union-attr]
        ended = await b.end_conversation(call.id, reason="hang_up", if_owner=True)
        assert (ended.end_reason, ended.ended_at) == ("hang_up", clock.t)
        other = await a.start_conversation("claude", "twilio", call_id="CA10")
        assert (await b.end_conversation(other.id, reason="api")).end_reason == "api"
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_memory_store_ends_only_its_own_conversations_if_owner() -> None:
    store = MemoryStore(wall_clock=StepClock())
    mine = await store.start_conversation("claude", "twilio")
    assert (await store.end_conversation(mine.id, reason="hang_up", if_owner=True)).end_reason == "hang_up"


async def test_a_version_2_file_is_upgraded_to_keep_call_ids(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    store = SQLiteStore(path)
    old = await store.start_conversation("claude", "twilio")
    await store.aclose()
    with sqlite3.connect(path) as db:  # back to version 2: no call_id column
        db.executescript(
            """DROP INDEX conversations_by_call;
            ALTER TABLE conversations DROP COLUMN call_id;
            ALTER TABLE turn_metrics DROP COLUMN preemptive;
            PRAGMA user_version = 2;"""
        )
    db.close()
    store = SQLiteStore(path)
    try:
        assert await store.get_conversation(old.id) == old
        new = await store.start_conversation("claude", "twilio", call_id="CA3")
        assert await store.conversation_of_call("CA3") == new
    finally:
        await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    db.close()


async def test_a_version_3_file_is_upgraded_to_keep_whether_a_reply_was_preemptive(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    store = SQLiteStore(path)
    conversation = await store.start_conversation("local", "websocket")
    await store.add_metrics(metrics_for(conversation.id, 0))
    await store.aclose()
    with sqlite3.connect(path) as db:  # back to version 3: no preemptive column
        db.executescript("ALTER TABLE turn_metrics DROP COLUMN preemptive; PRAGMA user_version = 3;")
    db.close()
    store = SQLiteStore(path)
    try:
        await store.add_metrics(metrics_for(conversation.id, 1, preemptive=True))
        assert [m.preemptive for m in await store.metrics(conversation.id)] == [False, True]
    finally:
        await store.aclose()


async def test_a_version_1_file_is_upgraded_and_its_open_conversations_are_abandoned(tmp_path: Path) -> None:
    """Conversations an older agentkit left open have no owner: the first sweep ends them."""
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """CREATE TABLE conversations (id TEXT PRIMARY KEY NOT NULL, agent TEXT NOT NULL,
                channel TEXT NOT NULL, caller TEXT, started_at REAL NOT NULL, ended_at REAL);
            CREATE TABLE messages (conversation_id TEXT NOT NULL, idx INTEGER NOT NULL, role TEXT NOT NULL,
                text TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, interrupted INTEGER NOT NULL,
                PRIMARY KEY (conversation_id, idx)) WITHOUT ROWID;
            CREATE TABLE turn_metrics (conversation_id TEXT NOT NULL, turn_index INTEGER NOT NULL,
                PRIMARY KEY (conversation_id, turn_index)) WITHOUT ROWID;
            INSERT INTO conversations VALUES ('left-open', 'claude', 'ws', NULL, 1.0, NULL);
            INSERT INTO conversations VALUES ('ended', 'claude', 'ws', NULL, 1.0, 2.0);
            PRAGMA user_version = 1;"""
        )
    db.close()
    store = SQLiteStore(path)
    try:
        old = await store.get_conversation("ended")
        assert old is not None and (old.ended_at, old.end_reason) == (2.0, None)
        assert await store.end_abandoned() == ["left-open"]
        crashed = await store.get_conversation("left-open")
        assert crashed is not None and crashed.end_reason == "crashed"
    finally:
        await store.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


async def test_the_lease_keeper_renews_and_sweeps(tmp_path: Path) -> None:
    dead = SQLiteStore(tmp_path / "k.db")
    await dead.renew_lease(0.2)
    left = await dead.start_conversation("claude", "ws")
    await dead.aclose()  # the process is gone; its lease runs out in 0.2 s
    alive = SQLiteStore(tmp_path / "k.db")
    keeper = LeaseKeeper(alive, ttl_s=0.3)
    try:
        assert await keeper.start() == []  # the dead lease still runs at startup...
        for _ in range(50):  # ...and the keeper's next sweeps end the call once it has run out
            await asyncio.sleep(0.05)
            if keeper.ended:
                break
        conversation = await alive.get_conversation(left.id)
        assert conversation is not None and conversation.end_reason == "crashed"
    finally:
        await keeper.aclose()
        await alive.aclose()


# -- redis: several workers, one store -------------------------------------------------------------


async def test_redis_workers_share_one_store(redis_url: str) -> None:
    """Two workers of one agent (two stores on one server, as two processes would have): a caller
    who reaches the second remembers what they told the first, and writes from both interleave
    without losing or reordering a message. Another key prefix (another agent's deployment) sees
    nothing of it."""
    first = open_store(f"{redis_url}?prefix=shop:")
    second = open_store(f"{redis_url}?prefix=shop:")
    elsewhere = open_store(f"{redis_url}?prefix=other:")
    assert isinstance(first, RedisStore) and isinstance(second, RedisStore)
    try:
        earlier = await first.start_conversation(AGENT, "twilio", caller=CALLER)
        await add_turns(first, earlier.id, ["a table for two", "booked"])
        await first.end_conversation(earlier.id)
        now = await second.start_conversation(AGENT, "twilio", caller=CALLER)
        history = await second.caller_history(AGENT, CALLER, exclude_conversation_id=now.id)
        assert [m.text for m in history] == ["a table for two", "booked"]

        async def write(store: ConversationStore, name: str) -> None:
            for i in range(20):
                await store.add_message(now.id, "user", f"{name} {i}", started_at=T0 + i)

        await asyncio.gather(write(first, "one"), write(second, "two"))
        stored = await first.messages(now.id)
        assert [m.index for m in stored] == list(range(40))
        for name in ("one", "two"):
            assert [m.text for m in stored if m.text.startswith(name)] == [f"{name} {i}" for i in range(20)]
        assert await elsewhere.list_conversations() == []
        assert await elsewhere.get_conversation(now.id) is None
    finally:
        for store in (first, second, elsewhere):
            await store.aclose()


async def test_an_unreachable_redis_fails_ping_and_calls_clearly(store: ConversationStore) -> None:
    await store.ping()  # every backend that works answers
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = open_store(f"redis://:hunter2@127.0.0.1:{port}/0")
    try:
        with pytest.raises(ConfigError, match="does not answer") as at_startup:
            await unreachable.ping()
        with pytest.raises(RedisError) as on_a_call:
            await unreachable.start_conversation(AGENT, "ws")
        for text in (str(at_startup.value), str(on_a_call.value), repr(unreachable)):
            assert "hunter2" not in text
    finally:
        await unreachable.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError):
        await store.ping()


# -- opening by URL, and bad places ----------------------------------------------------------------


async def test_open_store_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTKIT_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data home"))  # the default: per user
    opened = [
        (open_store("memory://"), MemoryStore),
        (open_store(), tmp_path / "data home" / "agentkit" / "conversations.db"),
        (open_store("sqlite:///rel/a.db"), tmp_path / "rel" / "a.db"),
        (open_store(f"sqlite:///{tmp_path}/abs%20b.db?synchronous=full"), tmp_path / "abs b.db"),
        (open_store("sqlite:///:memory:"), None),
    ]
    monkeypatch.setenv("AGENTKIT_STORE", "sqlite:///from-env.db")
    opened.append((open_store(), tmp_path / "from-env.db"))
    for store, expected in opened:
        if expected is MemoryStore:
            assert isinstance(store, MemoryStore)
        else:
            assert isinstance(store, SQLiteStore)
            if expected is not None:
                assert isinstance(expected, Path) and expected.is_file()
        conv = await store.start_conversation("claude", "websocket")
        assert await store.get_conversation(conv.id) == conv
        await store.aclose()
    assert opened[3][0].synchronous == "full"  # type: ignore[attr-defined]
    assert opened[2][0].synchronous == "normal"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgres://db/x", "unknown.*sqlite, memory, redis"),
        ("redis://:hunter2@127.0.0.1:notaport/0", "not a usable redis URL"),
        ("redis://:hunter2@127.0.0.1:6379/0?socket_timeout=soon", "not a usable redis URL"),
        ("conversations.db", "needs a scheme"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?journal=off", "unknown sqlite store option"),
        ("sqlite:///x.db?synchronous=sometimes", "normal or full"),
        ("memory://somewhere", "takes no path"),
    ],
)
def test_open_store_rejects_bad_urls(
    url: str, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=match) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_unusable_paths_raise_config_error_naming_them(tmp_path: Path) -> None:
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a folder")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an sqlite database at all" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    db.close()
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()

    cases = {
        a_file / "c.db": "folder cannot be created",
        tmp_path: "is a folder",
        garbage: "not a database",
        foreign: "something else",
        newer: "newer than",
    }
    for path, reason in cases.items():
        with pytest.raises(ConfigError, match=reason) as caught:
            open_store(f"sqlite:///{path}")
        assert str(path) in str(caught.value)
        assert caught.value.context["path"] == str(path)
    with pytest.raises(ConfigError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="off")  # type: ignore[arg-type]


def test_exported_names() -> None:
    assert set(agentkit.store.__all__) == {
        "MAX_LIST_LIMIT",
        "RESUMABLE_END_REASONS",
        "SCHEMA_VERSION",
        "SUPPORTED_SCHEMES",
        "BusMessage",
        "Conversation",
        "ConversationStore",
        "LeaseKeeper",
        "LocalSessionBus",
        "MemoryStore",
        "RedisSessionBus",
        "RedisStore",
        "Role",
        "SQLiteStore",
        "SessionBus",
        "StoredMessage",
        "ToolCallRecord",
        "TurnMetrics",
        "open_session_bus",
        "open_store",
    }
    for name in agentkit.store.__all__:
        assert getattr(agentkit.store, name) is not None
