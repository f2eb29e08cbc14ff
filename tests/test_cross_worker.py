"""Sessions reached from any worker, and a killed worker's phone call resumed on another.

In process: the session bus (local and Redis: delivery, watching, what it refuses, what it drops) and
two `SessionHost`s on one Redis, as two workers would be. Across processes: one `redis-server` and
two real `agentkit run` servers sharing it: the Twilio webhook on one and the media stream on the
other, `aset_input` / `output_stream` / the hang-up API from the process that does not hold the
session, and a worker killed mid-call whose caller reconnects (as Twilio does, through the
`<Connect action>`) to the other one, which goes on with the call's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _redis_server import redis_server
from conftest import speech
from redis.asyncio import Redis
from websockets.asyncio.client import connect as websockets_connect
from websockets.typing import Origin

from agentkit import AsyncStreamHandler, AudioFrame
from agentkit.store import (
    BusMessage,
    LocalSessionBus,
    RedisSessionBus,
    RedisStore,
    SessionBus,
    open_session_bus,
)
from agentkit.stream import AdditionalOutputs, EmitType, SessionHost
from agentkit.testing import TwilioCaller, open_recorded_session
from agentkit.transports.webrtc import _cancel_elsewhere

REPO = Path(__file__).resolve().parent.parent
TOKEN = "cross-worker-auth-token-0123456789"
API_TOKEN = "cross-worker-api-token"
PUBLIC = "https://agent.example"
FROM = "+15550107777"
WAIT_S = 10.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def eventually(condition: Any, what: str, timeout_s: float = WAIT_S) -> None:
    """Poll an (async or plain) condition until it holds; fail naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                result = condition()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout_s} s") from None


# -- the bus ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_buses(kind: str, url: str) -> AsyncIterator[tuple[SessionBus, SessionBus]]:
    """Two processes' buses (Redis: a prefix of their own), or one local bus seen twice."""
    if kind == "local":
        bus: SessionBus = LocalSessionBus(max_message_bytes=1024)
        yield bus, bus
        return
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    a = RedisSessionBus(url, prefix=prefix, max_message_bytes=1024)
    b = RedisSessionBus(url, prefix=prefix, max_message_bytes=1024)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_the_bus_reaches_the_holder_and_the_watchers(kind: str, redis_url: str) -> None:
    async with two_buses(kind, redis_url) as (holder, other):
        got: list[BusMessage] = []

        async def deliver(message: BusMessage) -> None:
            got.append(message)

        holder.hold("s1", deliver)
        await eventually(lambda: other.send("s1", {"op": "ping"}), "the holder's subscription")
        assert await other.send("s1", {"op": "input", "args": [1, "two", None, {"k": [True]}]})
        assert not await other.send("s2", {"op": "ping"})  # nobody holds it: an answer, not a wait
        await eventually(lambda: len(got) >= 2, "delivery")
        assert got[-1] == {"op": "input", "args": [1, "two", None, {"k": [True]}]}
        async with other.watch("s1") as queue:
            holder.publish("s1", {"op": "outputs", "args": ["hi"]})
            assert await asyncio.wait_for(queue.get(), WAIT_S) == {"op": "outputs", "args": ["hi"]}
        holder.release("s1")
        await eventually(lambda: _not(other.send("s1", {"op": "ping"})), "the release")
        assert holder.dropped == other.dropped == 0


async def _not(result: Any) -> bool:
    return not await result


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_the_bus_refuses_what_json_cannot_carry_and_oversized_messages(
    kind: str, redis_url: str
) -> None:
    async with two_buses(kind, redis_url) as (holder, other):
        for bad in ({"op": "input", "args": [b"bytes"]}, {"op": "input", "args": [math.nan]}, {"args": []}):
            with pytest.raises(TypeError):
                await other.send("s1", bad)
            with pytest.raises(TypeError):
                holder.publish("s1", bad)
        with pytest.raises(ValueError, match="at most 1024 bytes"):
            await other.send("s1", {"op": "input", "args": ["x" * 2000]})
        with pytest.raises(ValueError, match="at most 1024 bytes"):
            holder.publish("s1", {"op": "outputs", "args": ["x" * 2000]})


async def test_the_redis_bus_drops_malformed_and_oversized_messages(redis_url: str) -> None:
    """Another client publishes garbage on a session's channel: the holder logs, counts and drops
    it, and the next good message still arrives."""
    async with two_buses("redis", redis_url) as (holder, other):
        assert isinstance(holder, RedisSessionBus)
        got: list[BusMessage] = []

        async def deliver(message: BusMessage) -> None:
            got.append(message)

        holder.hold("s1", deliver)
        await eventually(lambda: other.send("s1", {"op": "ping"}), "the holder's subscription")
        channel = f"{holder._to}s1"  # the session's channel, as another (hostile or buggy) client sees it
        raw = Redis.from_url(redis_url)
        try:
            for garbage in (
                b"\xff\xfe",
                b"not json",
                b"[1, 2]",
                b'{"op": 7}',
                json.dumps({"op": "x" * 2000}),
            ):
                await raw.publish(channel, garbage)
        finally:
            await raw.aclose()
        assert await other.send("s1", {"op": "input", "args": ["after"]})
        await eventually(lambda: got and got[-1].get("args") == ["after"], "the good message")
        assert holder.dropped == 5
        assert {m["op"] for m in got} == {"ping", "input"}


def test_the_bus_follows_the_store_url(redis_url: str) -> None:
    assert isinstance(open_session_bus("memory://"), LocalSessionBus)
    assert isinstance(open_session_bus("sqlite:///x.db"), LocalSessionBus)
    bus = open_session_bus(redis_url + "?prefix=mine:")
    assert isinstance(bus, RedisSessionBus) and "mine:" in repr(bus) and "127.0.0.1" not in repr(bus)


# -- two hosts on one Redis, as two workers -------------------------------------------------------


class Emits(AsyncStreamHandler):
    """Emits what the test puts in `outbox` (shared by every copy)."""

    def __init__(self, outbox: asyncio.Queue[EmitType]) -> None:
        super().__init__()
        self.outbox = outbox

    def copy(self) -> Emits:
        return Emits(self.outbox)

    async def receive(self, frame: AudioFrame) -> None:
        pass

    async def emit(self) -> EmitType:
        return await self.outbox.get()


@contextlib.asynccontextmanager
async def two_hosts(
    redis_url: str,
) -> AsyncIterator[tuple[SessionHost, SessionHost, asyncio.Queue[EmitType]]]:
    outbox: asyncio.Queue[EmitType] = asyncio.Queue()
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    hosts = []
    for _ in range(2):
        bus = RedisSessionBus(redis_url, prefix=prefix)
        await bus.start()
        host = SessionHost(Emits(outbox), no_audio_timeout_s=None)
        host.use_bus(bus, close_with_host=True)
        hosts.append(host)
    try:
        yield hosts[0], hosts[1], outbox
    finally:
        for host in hosts:
            await host.aclose()


async def test_another_host_sets_input_watches_outputs_and_hangs_up(redis_url: str) -> None:
    async with two_hosts(redis_url) as (holder, other, outbox):
        session, transport = open_recorded_session(holder)
        await session.start()
        await eventually(lambda: other.bus.send(session.id, {"op": "ping"}), "the session on the bus")
        with pytest.raises(KeyError, match="aset_input"):
            other.set_input(session.id, "x")  # synchronous: this process only
        await other.aset_input(session.id, "voice-b", 3, {"speed": 1.5})
        await eventually(lambda: session.latest_args == ("voice-b", 3, {"speed": 1.5}), "the input")
        with pytest.raises(TypeError, match="JSON values"):
            await other.aset_input(session.id, b"bytes")

        received: list[AdditionalOutputs] = []

        async def watch() -> None:
            async for outputs in other.output_stream(session.id):
                received.append(outputs)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.3)  # its subscription is made before the first message
        await outbox.put(AdditionalOutputs("transcript", {"words": 2}))
        await eventually(lambda: received, "the outputs in the other host")
        assert received[0].args == ("transcript", {"words": 2})

        await other.hang_up(session.id)
        await eventually(lambda: transport.close_reason == "hang_up", "the hang-up")
        assert session.stop_reason == "api"
        await session.close("client_stop")  # what the transport's reader does once the socket closes
        await asyncio.wait_for(watcher, WAIT_S)  # the watcher ends with the session
        for call in (
            other.aset_input(session.id, 1),
            other.hang_up(session.id),
            anext(other.output_stream(session.id)),
        ):
            with pytest.raises(KeyError):
                await call


async def test_outputs_that_are_not_json_say_so_in_the_other_host(redis_url: str) -> None:
    async with two_hosts(redis_url) as (holder, other, outbox):
        session, _ = open_recorded_session(holder)
        await session.start()
        await eventually(lambda: other.bus.send(session.id, {"op": "ping"}), "the session on the bus")
        stream = other.output_stream(session.id)
        first = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.3)
        await outbox.put(AdditionalOutputs(b"raw bytes"))
        with pytest.raises(TypeError, match=r"not JSON values.*bytes"):
            await asyncio.wait_for(first, WAIT_S)
        await stream.aclose()
        await session.close()


async def test_a_local_host_hangs_up_its_own_sessions_and_knows_no_others() -> None:
    host = SessionHost(Emits(asyncio.Queue()), no_audio_timeout_s=None)
    session, transport = open_recorded_session(host)
    await session.start()
    try:
        await host.aset_input(session.id, object())  # in this process anything goes, as set_input
        await host.hang_up(session.id)
        assert (transport.close_reason, session.stop_reason) == ("hang_up", "api")
        with pytest.raises(ValueError):
            await host.hang_up(session.id, reason="Not A Reason!")
        for call in (host.aset_input("nope", 1), host.hang_up("nope")):
            with pytest.raises(KeyError):
                await call
    finally:
        await session.close()


# -- two `agentkit run` processes on one Redis ------------------------------------------------------

AGENT_FILE = '''
"""A probe agent: it says who heard each turn, and recalls every turn the LLM was given."""

import asyncio
import os
from typing import Any

from fastapi import HTTPException

from agentkit import AdditionalOutputs, Agent, Stream, TurnTakingOptions
from agentkit.agent import AgentEvent, UserTurnEnded
from agentkit.providers.llm import LLMChunk
from agentkit.server import create_app
from agentkit.testing import ScriptedSTT, ToneTTS

LABEL = os.environ["PROBE_LABEL"]


class RecallLLM:
    """Replies with every caller turn it was given, so the store shows what the LLM saw."""

    name = "recall-llm"
    supports_tools = False

    async def warm_up(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def stream(self, messages, *, instructions, tools=()):
        said = " | ".join(m.text for m in messages if m.role == "user")
        yield LLMChunk(text=f"You said: {said}.")


class Probe(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # the silence rule alone: these tests play short silent tails
    greeting = "Hello."

    async def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, UserTurnEnded):
            await self.put_output(AdditionalOutputs(LABEL, event.text, list(self.context.latest_args)))


stream = Stream(
    Probe(stt=ScriptedSTT(f"this is {LABEL}"), llm=RecallLLM(), tts=ToneTTS(ms_per_char=10))
)
app = create_app(stream)


@app.get("/probe/sessions")
async def sessions() -> dict[str, Any]:
    return {"ids": sorted(stream.sessions)}


@app.post("/probe/input/{session_id}")
async def set_input(session_id: str, args: list[Any]) -> dict[str, Any]:
    try:
        await stream.aset_input(session_id, *args)
    except KeyError:
        raise HTTPException(404) from None
    return {"ok": True}


@app.get("/probe/outputs/{session_id}")
async def outputs(session_id: str) -> dict[str, Any]:
    try:
        async with asyncio.timeout(20):
            async for item in stream.output_stream(session_id):
                return {"args": list(item.args)}
    except KeyError:
        raise HTTPException(404) from None
    return {"args": None}
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Worker:
    """One `agentkit run FILE` process on a free loopback port."""

    def __init__(
        self,
        label: str,
        folder: Path,
        store_url: str,
        *,
        public: str = PUBLIC,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.label = label
        self.port = _free_port()
        self.log = folder / f"worker-{label}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTKIT_", "TWILIO_"))}
        env.update(
            PROBE_LABEL=label,
            AGENTKIT_STORE=store_url,
            AGENTKIT_MODELS_DIR=os.environ.get("AGENTKIT_MODELS_DIR", str(REPO.parent / "shared" / "models")),
            AGENTKIT_OFFLINE="1",
            AGENTKIT_PUBLIC_URL=public,  # both answer Twilio with the same URLs, as behind one balancer
            AGENTKIT_API_TOKEN=API_TOKEN,
            TWILIO_AUTH_TOKEN=TOKEN,
            PYTHONPATH=str(REPO),
            **(extra_env or {}),
        )
        argv = [
            sys.executable,
            "-m",
            "agentkit.cli",
            "run",
            str(folder / "probe.py"),
            "--port",
            str(self.port),
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/telephone/media"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"worker {self.label} exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, (
                f"worker {self.label} not up in {timeout_s} s:\n{self.log.read_text()}"
            )
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def output(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def two_workers(
    tmp_path: Path, redis_url: str, *, public: str = PUBLIC, env: dict[str, str] | None = None
) -> Iterator[tuple[Worker, Worker, str]]:
    (tmp_path / "probe.py").write_text(textwrap.dedent(AGENT_FILE))
    store_url = f"{redis_url}?prefix=xw-{uuid.uuid4().hex[:8]}:"
    workers: list[Worker] = []
    try:
        workers = [Worker(label, tmp_path, store_url, public=public, extra_env=env) for label in ("A", "B")]
        for worker in workers:
            worker.wait_ready()
        yield workers[0], workers[1], store_url
    finally:
        for worker in workers:
            worker.stop()
    for worker in workers:
        assert "Traceback" not in worker.output(), worker.output()
        assert FROM not in worker.output()  # no phone numbers in the logs


def open_store_at(store_url: str) -> RedisStore:
    location, _, query = store_url.partition("?prefix=")
    return RedisStore(location, prefix=query)


async def greeted_and_turn(call: TwilioCaller, turns: int) -> None:
    """The caller speaks one turn and waits until the agent has answered it (`turns` replies heard)."""
    await call.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.6)
    await eventually(
        lambda: sum(n.startswith("end-") for n, _ in call.marks_answered) >= turns, "the reply", 20
    )


@pytest.mark.slow
async def test_a_session_on_one_worker_is_controlled_from_the_other(tmp_path: Path, redis_url: str) -> None:
    with two_workers(tmp_path, redis_url) as (a, b, store_url):
        store = open_store_at(store_url)
        api = httpx.AsyncClient(timeout=30.0, headers={"Authorization": f"Bearer {API_TOKEN}"})
        # the webhook reaches A, the media stream B: the stream token is signed with the shared token
        call = TwilioCaller(
            a.http_url, auth_token=TOKEN, from_number=FROM, public_url=PUBLIC, ws_url=b.media_url
        )
        try:
            async with call:
                assert call.answer is not None and call.answer.action_url is not None
                assert call.answer.action_url.startswith(f"{PUBLIC}/telephone/incoming?reconnect=1")
                await eventually(lambda: call.marks_answered, "the greeting", 20)
                [sid] = (await api.get(f"{b.http_url}/probe/sessions")).json()["ids"]
                assert (await api.get(f"{a.http_url}/probe/sessions")).json()["ids"] == []

                # A sets B's session's input and watches its outputs; the caller's next turn shows both
                put = await api.post(f"{a.http_url}/probe/input/{sid}", json=["from A", 42])
                assert put.status_code == 200, put.text
                watching = asyncio.create_task(api.get(f"{a.http_url}/probe/outputs/{sid}"))
                await asyncio.sleep(0.5)  # A subscribes before the turn
                await greeted_and_turn(call, 2)
                outputs = (await asyncio.wait_for(watching, WAIT_S)).json()
                assert outputs == {"args": ["B", "this is B", ["from A", 42]]}

                # A hangs the call up; B holds it and closes the stream (no REST call control here)
                assert (await api.post(f"{a.http_url}/api/sessions/nope/hang-up")).status_code == 404
                assert (await api.post(f"{a.http_url}/probe/input/nope", json=[1])).status_code == 404
                hung = await api.post(f"{a.http_url}/api/sessions/{sid}/hang-up")
                assert hung.status_code == 202, hung.text
                await call.wait_closed(WAIT_S)
                # Twilio then requests the <Connect action>: the call ended on purpose, so it hangs up
                answer = await call.follow_action(http_url=a.http_url)
                assert answer.hangs_up and answer.stream_url is None
            conversation = await store.conversation_of_call(call.call_sid)
            assert conversation is not None and conversation.end_reason == "api"
            async with httpx.AsyncClient() as anonymous:
                refused = await anonymous.post(f"{a.http_url}/api/sessions/{sid}/hang-up")
            assert refused.status_code == 401
        finally:
            await api.aclose()
            await store.aclose()


@pytest.mark.slow
async def test_a_killed_workers_call_goes_on_on_the_other_with_its_history(
    tmp_path: Path, redis_url: str
) -> None:
    with two_workers(tmp_path, redis_url) as (a, b, store_url):
        store = open_store_at(store_url)
        call = TwilioCaller(
            a.http_url, auth_token=TOKEN, from_number=FROM, public_url=PUBLIC, ws_url=a.media_url
        )
        try:
            async with call:
                await eventually(lambda: call.marks_answered, "the greeting", 20)
                await greeted_and_turn(call, 2)
                before = await store.conversation_of_call(call.call_sid)
                assert before is not None and before.ended_at is None
                await eventually(lambda: _count(store.messages(before.id), 3), "A's turn in the store")

                a.process.send_signal(signal.SIGKILL)  # mid-call: no goodbye, no end in the store
                a.process.wait(timeout=10)
                await call.wait_closed(WAIT_S)
                # Twilio requests the action URL; the balancer sends it to B, which reconnects the call
                answer = await call.follow_action(http_url=b.http_url, ws_url=b.media_url)
                assert answer.stream_url is not None and answer.action_url is not None
                assert "reconnect=2" in answer.action_url
                marks_before = len(call.marks_answered)
                await call.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.6)
                await eventually(
                    lambda: any(n.startswith("end-") for n, _ in call.marks_answered[marks_before:]),
                    "B's reply",
                    20,
                )
                await eventually(lambda: _count(store.messages(before.id), 5), "B's turn in the store")
                await call.stop()
            await eventually(lambda: _ended(store, call.call_sid), "the end of the call in the store")
            after = await store.conversation_of_call(call.call_sid)
            assert after is not None and after.id == before.id  # the same conversation, not a new one
            assert after.end_reason == "client_stop"
            texts = [(m.role, m.text) for m in await store.messages(before.id)]
            assert texts == [
                ("assistant", "Hello."),
                ("user", "this is A"),
                ("assistant", "You said: this is A."),
                ("user", "this is B"),  # no second greeting: the call was only reconnected
                ("assistant", "You said: this is A | this is B."),  # B's LLM saw A's turn
            ]
            # a call that ended normally does not loop back
            assert (await call.follow_action(http_url=b.http_url)).hangs_up
        finally:
            await store.aclose()


async def _count(messages: Any, n: int) -> bool:
    return len(await messages) >= n


async def _ended(store: RedisStore, call_sid: str) -> bool:
    conversation = await store.conversation_of_call(call_sid)
    return conversation is not None and conversation.ended_at is not None


async def test_a_webrtc_cancel_landing_on_another_worker_reaches_the_holder(redis_url: str) -> None:
    """`DELETE /webrtc/sessions/{id}` may land on any worker sharing the port; the one without the
    session passes it on over the bus (`_cancel_elsewhere`), and an unknown or malformed id is no."""
    async with two_hosts(redis_url) as (holder, other, _):
        session, transport = open_recorded_session(holder)
        await session.start()
        await eventually(lambda: other.bus.send(session.id, {"op": "ping"}), "the session on the bus")
        assert not await _cancel_elsewhere(other, "no-such-session")
        assert not await _cancel_elsewhere(other, "bad id with spaces")
        assert not await _cancel_elsewhere(holder, session.id)  # held here: the peers' own cancel's job
        assert await _cancel_elsewhere(other, session.id)
        await eventually(lambda: transport.close_reason == "hang_up", "the hang-up")
        assert session.stop_reason == "client_cancel"
        await session.close("client_stop")


# -- the reverse-proxy recipe, run: deploy/nginx.conf in front of the two servers -------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (what the recipe's Let's Encrypt files would be)."""
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _nginx_conf(folder: Path, port: int, upstreams: list[int], cert: Path, key: Path) -> Path:
    """`deploy/nginx.conf` with only what a test must change: the servers' and its own addresses,
    the certificate's files, and where a non-installed nginx keeps its logs and temporary files."""
    conf = (REPO / "deploy" / "nginx.conf").read_text()
    temp = "".join(
        f"    {kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    swaps = {
        "server agentkit-a:8000 ": f"server 127.0.0.1:{upstreams[0]} ",
        "server agentkit-b:8000 ": f"server 127.0.0.1:{upstreams[1]} ",
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "/etc/nginx/certs/fullchain.pem": str(cert),
        "/etc/nginx/certs/privkey.pem": str(key),
        "\nhttp {\n": f"\nhttp {{\n    access_log {folder / 'access.log'};\n{temp}",
    }  # fmt: skip
    for old, new in swaps.items():
        assert conf.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} once: update this test"
        conf = conf.replace(old, new)
    path = folder / "nginx.conf"
    path.write_text(conf)
    return path


@contextlib.contextmanager
def nginx(folder: Path, port: int, upstreams: list[int]) -> Iterator[Path]:
    """Debian's nginx (installed by .ci/run) serving the recipe on 127.0.0.1:`port`; yields the
    certificate to trust."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.fail("nginx is not installed (apt install nginx; .ci/run does)")
    folder.mkdir()
    cert, key = _self_signed(folder)
    conf = _nginx_conf(folder, port, upstreams, cert, key)
    main = f"daemon off; pid {folder / 'nginx.pid'}; error_log {folder / 'error.log'};"
    if os.geteuid() == 0:
        main += " user root;"  # its workers write temporary files in a folder only root may enter
    with (folder / "stderr.log").open("wb") as err:
        process = subprocess.Popen(
            [binary, "-p", str(folder), "-c", str(conf), "-g", main], stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 15.0
        while True:
            assert process.poll() is None, (
                f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
            assert time.monotonic() < deadline, "nginx did not come up in 15 s"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        yield cert
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
async def test_the_proxy_recipe_carries_calls_over_tls_to_either_server(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe's nginx terminates TLS, upgrades the media WebSockets, keeps Host (with its port)
    for same-origin checks, sticks one client address to one server and hides /metrics."""
    port = _free_port()
    public = f"https://127.0.0.1:{port}"
    with two_workers(
        tmp_path, redis_url, public=public, env={"AGENTKIT_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    ) as (
        a,
        b,
        _,
    ):
        with nginx(tmp_path / "nginx", port, [a.port, b.port]) as cert:
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # httpx and websockets trust it
            async with httpx.AsyncClient(base_url=public, timeout=10.0) as http:
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.get("/readyz")).status_code == 200
                assert (await http.get("/metrics")).status_code == 404  # scraped per server, not here
                page = await http.get("/")
                assert page.status_code == 200 and "Talk to the agent" in page.text

            # a phone call: webhook and media stream both through the proxy, over TLS
            direct = httpx.AsyncClient(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10.0)
            try:
                call = TwilioCaller(public, auth_token=TOKEN, from_number=FROM)
                async with call:
                    assert call.answer is not None
                    assert call.answer.stream_url == f"wss://127.0.0.1:{port}/telephone/media"
                    await eventually(lambda: call.marks_answered, "the greeting", 20)
                    await greeted_and_turn(call, 2)
                    held = [(await direct.get(f"{w.http_url}/probe/sessions")).json()["ids"] for w in (a, b)]
                    assert sorted(len(ids) for ids in held) == [0, 1]  # one server holds the call
                    await call.stop()

                # the talk page's own origin (a port other than 443: Host must keep it) opens sessions;
                # the browser is at 127.0.0.2, the servers name it (not the proxy), and each of its
                # sessions reaches the same server (WebRTC needs that)
                holders = []
                for _ in range(3):
                    async with websockets_connect(
                        f"wss://127.0.0.1:{port}/ws",
                        origin=Origin(public),
                        open_timeout=10,
                        local_addr=("127.0.0.2", 0),
                    ) as ws:
                        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
                        started = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                        assert started["type"] == "started", started
                        holders += [
                            w.label
                            for w in (a, b)
                            if started["session_id"]
                            in (await direct.get(f"{w.http_url}/probe/sessions")).json()["ids"]
                        ]
                        await ws.send(json.dumps({"type": "stop"}))
                assert len(holders) == 3 and len(set(holders)) == 1, holders
            finally:
                await direct.aclose()
        seen = a.output() + b.output()
        assert "127.0.0.2:" in seen and '"WebSocket /ws" [accepted]' in seen, seen
        log = (tmp_path / "nginx" / "error.log").read_text()
        assert "[emerg]" not in log and "[crit]" not in log, log
