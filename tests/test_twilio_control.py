"""Twilio call control against `FakeTwilio`: the agent hangs up, `agentkit call`, and marks as the
playout clock on barge-in."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from _server import Silent, live_server, wait_for
from conftest import speech
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agentkit import Agent, Stream, TurnTakingOptions
from agentkit.agent import AgentEvent, DtmfReceived, SessionStarted
from agentkit.audio import AudioFrame
from agentkit.cli import main
from agentkit.exceptions import ConfigError, ProviderError
from agentkit.store import MemoryStore
from agentkit.testing import FakeTwilio, ScriptedLLM, ScriptedSTT, ToneTTS, TwilioCaller
from agentkit.testing.fakes import Reply
from agentkit.transports.twilio import TwilioCalls, add_twilio_routes

pytestmark = pytest.mark.slow

TOKEN = "test-auth-token-0123456789abcdef"
SID = "AC" + "1" * 32
FROM = "+15550101234"
PURPOSE = "Remind them of their dentist appointment tomorrow at 3 pm."


@pytest.fixture(autouse=True)
def _twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    for name in (
        "AGENTKIT_PUBLIC_URL",
        "AGENTKIT_TWILIO_VALIDATE",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_API_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


class HangsUpOnHash(Agent):
    """Ends the call when the caller presses `#`."""

    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Hello."

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.started: list[SessionStarted] = []

    async def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, SessionStarted):
            self.started.append(event)
        if isinstance(event, DtmfReceived) and event.digit == "#":
            await self.context.hang_up()


def hanging_up_agent(
    store: MemoryStore, *, reply: str = "It is noon.", ms_per_char: float = 10
) -> HangsUpOnHash:
    return HangsUpOnHash(
        stt=ScriptedSTT("What time is it?"),
        llm=ScriptedLLM(reply, "Okay."),
        tts=ToneTTS(ms_per_char=ms_per_char, sample_rate=24000),
        store=store,
    )


# -- the fake and the REST client ----------------------------------------------------------------


async def test_fake_checks_basic_auth_and_answers_like_twilio() -> None:
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        url = f"{fake.base_url}/2010-04-01/Accounts/{SID}/Calls.json"
        form = {
            "To": "+15550001111",
            "From": "+15550002222",
            "Url": "https://agent.example/telephone/incoming",
        }
        async with httpx.AsyncClient() as client:
            wrong = await client.post(url, data=form, auth=(SID, "not-the-token"))
            missing = await client.post(url, data={"To": "+15550001111"}, auth=(SID, TOKEN))
            made = await client.post(url, data=form, auth=(SID, TOKEN))
            other = await client.post(url.replace(SID, "AC" + "2" * 32), data=form, auth=(SID, TOKEN))
    assert wrong.status_code == 401 and wrong.json()["code"] == 20003
    assert missing.status_code == 400 and missing.json()["code"] == 21213
    assert made.status_code == 201
    call = made.json()
    assert call["sid"].startswith("CA") and len(call["sid"]) == 34
    assert (call["to"], call["from"], call["status"], call["account_sid"]) == (
        "+15550001111",
        "+15550002222",
        "queued",
        SID,
    )
    assert fake.calls[call["sid"]].url == form["Url"]
    assert other.status_code == 403
    assert [r.form.get("To") for r in fake.requests] == ["+15550001111"] * 4


async def test_hang_up_ends_a_call_once_and_a_second_time_is_not_an_error() -> None:
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        sid = fake.add_call()
        calls = TwilioCalls(SID, TOKEN, api_base_url=fake.base_url)
        assert await calls.hang_up(sid) is True
        assert await calls.hang_up(sid) is False  # Twilio's 21220: the call is not in progress
        assert await calls.hang_up("CA" + "9" * 32) is False  # unknown (long gone): 20404
        first, second, _ = fake.requests
    assert fake.calls[sid].status == "completed"
    assert first.path == f"/2010-04-01/Accounts/{SID}/Calls/{sid}.json"
    assert first.form == {"Status": "completed"}
    assert second.status == 400 and second.form == {"Status": "completed"}


async def test_rest_failures_become_provider_errors() -> None:
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        sid = fake.add_call()
        fake.push(Reply(status=503))
        with pytest.raises(ProviderError) as unavailable:
            await TwilioCalls(SID, TOKEN, api_base_url=fake.base_url).hang_up(sid)
        with pytest.raises(ProviderError) as refused:
            await TwilioCalls(SID, "wrong-token", api_base_url=fake.base_url).hang_up(sid)
    assert unavailable.value.retryable and "20503" in unavailable.value.message
    assert not refused.value.retryable and "401" in refused.value.message
    assert fake.calls[sid].status == "in-progress"
    with pytest.raises(ConfigError):
        TwilioCalls("", TOKEN)


# -- the agent hangs up --------------------------------------------------------------------------


async def call_and_press_hash(store: MemoryStore, call_sid: str | None = None) -> None:
    """One call to the agent that hangs up on `#`: wait for the greeting, press `#`, wait for the end."""
    agent = hanging_up_agent(store)
    async with (
        live_server(Stream(agent)) as server,
        TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM, call_sid=call_sid) as call,
    ):
        await wait_for(lambda: bool(call.marks_answered), 10, "the greeting")
        await call.press("#")
        await wait_for(lambda: not server.stream.sessions, what="the session to close")


async def test_the_agent_hangs_up_through_the_rest_api(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_API_BASE_URL", fake.base_url)
        sid = fake.add_call(from_=FROM)
        await call_and_press_hash(store, sid)
        await wait_for(lambda: bool(fake.requests), what="the REST request")
        [request] = fake.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Calls/{sid}.json"
    assert request.form == {"Status": "completed"}
    assert fake.calls[sid].status == "completed"
    [conversation] = await store.list_conversations(caller=FROM)
    assert conversation.ended_at is not None
    messages = await store.messages(conversation.id)
    assert [(m.role, m.text) for m in messages] == [("assistant", "Hello.")]


async def test_hanging_up_a_call_that_already_ended_still_closes_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_API_BASE_URL", fake.base_url)
        sid = fake.add_call(from_=FROM, status="completed")
        await call_and_press_hash(store, sid)
    assert [r.status for r in fake.requests] == [400]  # 21220, taken as "already over"
    [conversation] = await store.list_conversations(caller=FROM)
    assert conversation.ended_at is not None


async def test_without_call_control_a_hang_up_closes_the_stream() -> None:
    store = MemoryStore()
    await call_and_press_hash(store)
    [conversation] = await store.list_conversations(caller=FROM)
    assert conversation.ended_at is not None


async def call_them_back(agent: HangsUpOnHash, fake: FakeTwilio, ours: str) -> str:
    """FROM calls in and hangs up; then `ours` calls FROM through the REST API, with a purpose, FROM
    asks a question, and the agent hangs up on `#`."""
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM, to_number=ours) as call:
            await wait_for(lambda: bool(call.marks_answered), 10, "the greeting")
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the first call to end")
        calls = TwilioCalls(SID, TOKEN, api_base_url=fake.base_url)
        url = f"{server.http_url}/telephone/incoming?{urlencode({'purpose': PURPOSE})}"
        sid = await calls.place_call(to=FROM, from_=ours, url=url)
        placed = fake.calls[sid]
        assert placed.url is not None
        where = urlsplit(placed.url)
        # "Twilio" dials, the person answers, and it fetches the TwiML from the URL it was given
        async with TwilioCaller(
            server.http_url,
            auth_token=TOKEN,
            from_number=ours,
            to_number=FROM,
            direction="outbound-api",
            call_sid=sid,
            webhook_path=f"{where.path}?{where.query}",  # Twilio signs the URL with its query
        ) as answered:
            await wait_for(lambda: bool(answered.marks_answered), 10, "the greeting")
            await answered.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.6)
            await wait_for(lambda: sum(n.startswith("end-") for n, _ in answered.marks_answered) == 2, 10)
            await answered.press("#")
            await wait_for(lambda: not server.stream.sessions, what="the agent to hang up")
    return sid


async def test_an_outbound_call_remembers_the_person_called(
    monkeypatch: pytest.MonkeyPatch, models_dir: object
) -> None:
    """They called in once; then the agent's number calls them (`agentkit call --purpose`), and the
    agent knows them (on an outbound call the person is Twilio's `To`, not its `From`) and why it
    called (the purpose reaches its instructions for this call only)."""
    store = MemoryStore()
    agent = hanging_up_agent(store)
    ours = "+15550109999"  # the Twilio number
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_API_BASE_URL", fake.base_url)
        sid = await call_them_back(agent, fake, ours)
    assert [(e.caller, e.earlier_messages) for e in agent.started] == [(FROM, 0), (FROM, 1)]
    first_sid = agent.started[0].call_info["call_id"]
    assert agent.started[0].call_info == {"direction": "inbound", "called": ours, "call_id": first_sid}
    assert agent.started[1].call_info == {
        "direction": "outbound",
        "called": ours,
        "call_id": sid,
        "purpose": PURPOSE,
    }
    llm = agent.llm_provider
    assert isinstance(llm, ScriptedLLM)
    [asked] = llm.calls
    assert asked.instructions.startswith(agent.instructions) and asked.instructions.endswith(PURPOSE)
    assert fake.calls[sid].status == "completed"
    assert len(await store.list_conversations(caller=FROM)) == 2
    assert await store.list_conversations(caller=ours) == []


# -- agentkit call -------------------------------------------------------------------------------


def test_agentkit_call_places_a_call_whose_twiml_is_this_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
        monkeypatch.setenv("TWILIO_API_BASE_URL", fake.base_url)
        monkeypatch.setenv("AGENTKIT_PUBLIC_URL", "https://agent.example/")
        assert main(["call", "+15550001111", "--from", "+15550002222"]) == 0
        assert main(["call", "+15550001111", "--from", "+15550002222", "--purpose", "a & b?"]) == 0
        assert main(["call", "+15550001111", "--from", "+15550002222", "--purpose", "x" * 501]) == 1
    plain, with_purpose = fake.requests
    assert plain.path == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert plain.form == {
        "To": "+15550001111",
        "From": "+15550002222",
        "Url": "https://agent.example/telephone/incoming",
    }
    assert with_purpose.form["Url"] == "https://agent.example/telephone/incoming?purpose=a+%26+b%3F"
    printed = capsys.readouterr().out
    assert len(fake.calls) == 2 and all(sid in printed for sid in fake.calls)


@pytest.mark.parametrize(
    ("env", "argv", "says"),
    [
        ({"AGENTKIT_PUBLIC_URL": "https://a.example"}, [], "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": SID}, [], "AGENTKIT_PUBLIC_URL"),
        ({"TWILIO_ACCOUNT_SID": SID}, ["--public-url", "agent.example"], "https://"),
        ({"TWILIO_ACCOUNT_SID": SID, "AGENTKIT_PUBLIC_URL": "https://a.example"}, ["no-such.py"], "no such"),
    ],
)
def test_agentkit_call_explains_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    argv: list[str],
    says: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["call", "+15550001111", *argv, "--from", "+15550002222"]) == 1
    assert says in capsys.readouterr().err


def test_agentkit_call_refuses_numbers_that_are_not_e164(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "5550001111", "--from", "+15550002222"]) == 1
    assert "E.164" in capsys.readouterr().err


# -- marks are the playout clock -----------------------------------------------------------------


async def test_interrupted_text_follows_the_marks_not_the_pacer(models_dir: object) -> None:
    store = MemoryStore()
    long_reply = " ".join(f"Sentence number {i} of a long answer." for i in range(30))
    agent = hanging_up_agent(store, reply=long_reply, ms_per_char=60)
    utterance = speech("utt2", 8000)
    async with live_server(Stream(agent)) as server:
        # this "Twilio" confirms each mark 1.5 s after the audio before it played
        async with TwilioCaller(
            server.http_url, auth_token=TOKEN, from_number=FROM, mark_delay_s=1.5
        ) as call:
            await wait_for(lambda: any(n.startswith("end-") for n, _ in call.marks_answered), 10, "greeting")
            await call.play(utterance, lead_silence_s=0.2, tail_silence_s=0.5)
            start_s = call.received_audio().duration_s
            heard_s = call.received_audio
            await wait_for(lambda: heard_s().duration_s > start_s + 3, 10, "three seconds of reply")
            await call.play(
                AudioFrame(utterance.samples[:12000], 8000), lead_silence_s=0.0, tail_silence_s=0.6
            )
            await wait_for(lambda: bool(call.events_of("clear")), 5, "clear")
            await asyncio.sleep(0.3)
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    [clear] = call.events_of("clear")
    [conversation] = await store.list_conversations(caller=FROM)
    [interrupted] = [m for m in await store.messages(conversation.id) if m.interrupted]
    assert long_reply.startswith(interrupted.text)
    played_s = call.heard_audio(at_t=clear.t).duration_s - 0.36  # the reply, less the greeting
    # the marks lag 1.5 s behind the audio, and the stored text follows them: about 1.5 s less than
    # was played (at 60 ms a character), where the pacer's estimate would match what was played
    lag_s = played_s - len(interrupted.text) * 0.06
    assert 0.8 <= lag_s <= 2.2, lag_s


# -- the benchmark-only option -------------------------------------------------------------------


@pytest.mark.parametrize(("require_token", "close_code"), [(True, 1008), (False, 1000)])
def test_streams_without_a_token_are_accepted_only_when_asked(require_token: bool, close_code: int) -> None:
    app = FastAPI()
    add_twilio_routes(app, Stream(Silent()), require_token=require_token)
    start = {"streamSid": "MZ1", "callSid": "CA1", "customParameters": {}}
    with TestClient(app) as client, client.websocket_connect("/telephone/media") as ws:
        ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        ws.send_json({"event": "start", "streamSid": "MZ1", "start": start})
        ws.send_json({"event": "stop", "streamSid": "MZ1"})  # a started stream ends normally
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_json()
    assert closed.value.code == close_code


async def test_a_purpose_over_500_characters_is_refused() -> None:
    async with live_server(Stream(Silent())) as server:
        path = "/telephone/incoming?" + urlencode({"purpose": "x" * 501})
        call = TwilioCaller(server.http_url, auth_token=TOKEN, webhook_path=path, direction="outbound-api")
        answer = await call.post_webhook()
    assert answer.status_code == 400 and answer.stream_url is None
