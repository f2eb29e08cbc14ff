"""Telephony through Twilio, end to end over loopback: the signed voice webhook and its TwiML, the
one-time token, the Media Stream with an Agent on scripted providers (greeting, a spoken question,
barge-in with `clear`, DTMF, a returning caller, hang-up), and each kind of bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import httpx
import pytest
from _server import Silent, live_server, wait_for
from conftest import speech
from websockets.asyncio.client import connect

from agentkit import Agent, Stream, TurnTakingOptions
from agentkit.agent import AgentEvent, DtmfReceived, SessionStarted, UserTurnStarted
from agentkit.audio import AudioFrame
from agentkit.store import MemoryStore
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, TwilioCaller, sign_twilio_request
from agentkit.transports._twilio_webhook import token_secret
from agentkit.transports.twilio import CallTokens, TwilioConnection

pytestmark = pytest.mark.slow

TOKEN = "test-auth-token-0123456789abcdef"
FROM = "+15550101234"


@pytest.fixture(autouse=True)
def _twilio_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("AGENTKIT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("AGENTKIT_TWILIO_VALIDATE", raising=False)


class Served(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Hello."

    def __init__(self, **overrides: object) -> None:
        super().__init__(**overrides)
        self.events: list[AgentEvent] = []

    def copy(self) -> Served:
        clone = super().copy()
        assert isinstance(clone, Served)
        return clone

    async def on_event(self, event: AgentEvent) -> None:
        self.events.append(event)  # shared by every session's copy: the test reads it


def served(*replies: str, store: MemoryStore | None = None, ms_per_char: float = 10) -> Served:
    return Served(
        stt=ScriptedSTT("What time is it?"),
        llm=ScriptedLLM(*(replies or ("It is noon.",))),
        tts=ToneTTS(ms_per_char=ms_per_char, sample_rate=24000),
        store=store or MemoryStore(),
    )


# -- the webhook ---------------------------------------------------------------------------------


async def test_webhook_answers_signed_requests_with_a_media_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with live_server(Stream(Silent())) as server:
        call = TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM)
        answer = await call.post_webhook()
        unsigned = await TwilioCaller(server.http_url, auth_token=None).post_webhook()
        wrong = await TwilioCaller(server.http_url, auth_token="another-token").post_webhook()
        # signed for another URL than the one requested
        elsewhere = TwilioCaller(server.http_url, auth_token=TOKEN, public_url="https://other.example")
        misdirected = await elsewhere.post_webhook()
        # the parameters changed after signing
        tampered = await call.post_webhook(
            signature=sign_twilio_request(TOKEN, call.webhook_url, call.webhook_params()),
            params={**call.webhook_params(), "From": "+15550000000"},
        )
    assert answer.status_code == 200 and answer.text.startswith("<?xml")
    assert answer.stream_url == f"ws://127.0.0.1:{server.port}/telephone/media"
    assert answer.parameters["caller"] == FROM and answer.parameters["called"] == call.to_number
    assert len(answer.parameters["token"]) >= 32
    assert [a.status_code for a in (unsigned, wrong, misdirected, tampered)] == [403] * 4
    assert answer.stream_url not in unsigned.text
    refusals = [r.getMessage() for r in caplog.records if "refused a webhook" in r.getMessage()]
    assert len(refusals) == 4
    assert not any(FROM[1:] in r.getMessage() for r in caplog.records)  # numbers never logged


async def test_public_url_comes_from_config_or_proxy_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_PUBLIC_URL", "https://agent.example/")
    async with live_server(Stream(Silent())) as server:
        public = TwilioCaller(server.http_url, auth_token=TOKEN, public_url="https://agent.example")
        configured = await public.post_webhook()
    monkeypatch.delenv("AGENTKIT_PUBLIC_URL")
    async with live_server(Stream(Silent())) as server:
        proxied = TwilioCaller(server.http_url, auth_token=TOKEN, public_url="https://tunnel.example")
        params = proxied.webhook_params()
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            headers = {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "tunnel.example",
                "X-Twilio-Signature": sign_twilio_request(TOKEN, proxied.webhook_url, params),
            }
            response = await http.post("/telephone/incoming", data=params, headers=headers)
    assert configured.status_code == 200
    assert configured.stream_url == "wss://agent.example/telephone/media"
    assert response.status_code == 200 and 'url="wss://tunnel.example/telephone/media"' in response.text


async def test_validation_is_off_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    async with live_server(Stream(Silent())) as server:
        no_token = await TwilioCaller(server.http_url, auth_token=None).post_webhook()
    async with live_server(Stream(Silent()), validate_twilio_signatures=False) as server:
        unchecked = await TwilioCaller(server.http_url, auth_token=None).post_webhook()
    monkeypatch.setenv("AGENTKIT_TWILIO_VALIDATE", "0")
    async with live_server(Stream(Silent())) as server:
        by_env = await TwilioCaller(server.http_url, auth_token=None).post_webhook()
    assert no_token.status_code == 403  # no auth token configured: nothing is accepted
    assert unchecked.status_code == 200 and by_env.status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "NOT checked" in r.getMessage()]
    assert len(warnings) == 2


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        self.t = max(self.t, deadline)


def test_tokens_are_single_use_and_expire() -> None:
    clock = ManualClock()
    tokens = CallTokens(ttl_s=60, max_pending=2, clock=clock)
    first = tokens.issue(caller=FROM, called=None, call_sid="CA1")
    grant = tokens.redeem(first)
    assert grant is not None and grant.caller == FROM and grant.call_sid == "CA1"
    assert tokens.redeem(first) is None  # replayed
    assert tokens.redeem("made-up") is None and tokens.redeem(None) is None
    late = tokens.issue(caller=None, called=None, call_sid=None)
    clock.t += 61
    assert tokens.redeem(late) is None  # expired
    a, b, c = (tokens.issue(caller=None, called=None, call_sid=None) for _ in range(3))
    assert tokens.redeem(a) is None and tokens.dropped == 1  # the oldest made room
    assert tokens.redeem(b) is not None and tokens.redeem(c) is not None


def test_signed_tokens_work_on_any_worker_once_and_only_untouched() -> None:
    """With a secret (derived from the auth token every worker has), a token issued by one worker
    is accepted by another, once there; a forged, altered, expired or foreign-secret one is not."""
    clock = ManualClock()
    secret = token_secret(TOKEN)
    answering, streaming = (CallTokens(ttl_s=60, clock=clock, secret=secret) for _ in range(2))
    other_account = CallTokens(ttl_s=60, clock=clock, secret=token_secret("another-auth-token"))
    assert answering.signed and not CallTokens().signed
    token = answering.issue(caller=FROM, called="+15550100002", call_sid="CA1")
    assert other_account.redeem(token) is None
    grant = streaming.redeem(token)
    assert grant is not None and (grant.caller, grant.called, grant.call_sid) == (FROM, "+15550100002", "CA1")
    assert streaming.redeem(token) is None  # used up on this worker
    payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(b'["+15559999999",null,"CA1",1e12,"x"]').decode()
    assert streaming.redeem(f"{forged}.{mac}") is None and streaming.redeem(payload) is None
    late = answering.issue(caller=None, called=None, call_sid=None)
    clock.t += 61
    assert streaming.redeem(late) is None
    assert streaming.redeem("x" * 100_000) is None and streaming.redeem(None) is None


async def test_one_worker_answers_the_webhook_another_takes_the_stream() -> None:
    """Two workers of one agent behind a load balancer: the media stream lands on the other one."""
    async with live_server(Stream(Silent())) as answering, live_server(Stream(Silent())) as streaming:
        other = streaming.ws_url("/telephone/media")
        async with TwilioCaller(answering.http_url, auth_token=TOKEN, from_number=FROM, ws_url=other) as call:
            await wait_for(lambda: len(streaming.stream.sessions) == 1, what="a session on the other worker")
            assert not answering.stream.sessions
            await call.stop()
        await wait_for(lambda: not streaming.stream.sessions, what="the call to end")
        # a token is only good for the call it was issued for: another call's start is refused
        issued = await TwilioCaller(answering.http_url, auth_token=TOKEN, from_number=FROM).post_webhook()
        thief = TwilioCaller(answering.http_url, auth_token=TOKEN, from_number=FROM, ws_url=other)
        thief.answer = issued
        async with thief:
            assert await thief.wait_closed() == 1008
        assert not streaming.stream.sessions


# -- the media stream: bad input -----------------------------------------------------------------


async def test_bad_or_replayed_tokens_close_with_1008() -> None:
    async with live_server(Stream(Silent())) as server:
        first = TwilioCaller(server.http_url, auth_token=TOKEN)
        async with first:
            await wait_for(lambda: len(server.stream.sessions) == 1, what="the first call's session")
            # Twilio (or anyone) replaying the same start: the token is used up
            replay = TwilioCaller(server.http_url, auth_token=TOKEN)
            replay.answer = first.answer
            async with replay:
                replayed = await replay.wait_closed()
        for parameters in ({"token": "wrong"}, {}):
            async with TwilioCaller(server.http_url, auth_token=TOKEN, custom_parameters=parameters) as bad:
                assert await bad.wait_closed() == 1008
        await wait_for(lambda: not server.stream.sessions, what="no sessions left")
    assert replayed == 1008


async def test_a_stream_that_never_starts_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TwilioConnection, "start_timeout_s", 0.2)
    async with live_server(Stream(Silent())) as server:
        answer = await TwilioCaller(server.http_url, auth_token=TOKEN).post_webhook()
        assert answer.stream_url is not None
        async with connect(answer.stream_url) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1008 and not server.stream.sessions


async def test_bad_input_is_handled_and_nothing_leaks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with live_server(Stream(Silent())) as server:
        call = TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM)
        answer = await call.post_webhook()
        assert answer.stream_url is not None
        async with connect(answer.stream_url) as ws:
            media = {"event": "media", "streamSid": "MZ1", "media": {"payload": "//8="}}
            await ws.send(json.dumps(media))  # before start: dropped
            start = {
                "event": "start",
                "streamSid": "MZ1",
                "start": {
                    "streamSid": "MZ1",
                    "callSid": call.call_sid,
                    "customParameters": answer.parameters,
                },
            }
            await ws.send(json.dumps(start))
            await wait_for(lambda: len(server.stream.sessions) == 1, what="the session")
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "%%%"}}))
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ1"}))
            await ws.send(json.dumps({"event": "teleport", "streamSid": "MZ1"}))
            await ws.send("not json")
            await ws.send(json.dumps({"event": "dtmf", "dtmf": {"digit": "xyz"}}))
            await ws.send(json.dumps(media))  # still alive: audio is taken
            await ws.send(json.dumps(start))  # a second start is ignored
            await ws.send(b"\x00\x01")  # binary: not Twilio's protocol
            await ws.wait_closed()
            assert ws.close_code == 1003
        await wait_for(lambda: not server.stream.sessions, what="the session to close")

        answer = await call.post_webhook()
        assert answer.stream_url is not None
        async with connect(answer.stream_url, max_size=None) as ws:
            start["start"]["customParameters"] = answer.parameters  # type: ignore[index]
            await ws.send(json.dumps(start))
            await wait_for(lambda: len(server.stream.sessions) == 1, what="the session")
            huge = base64.b64encode(bytes(64 * 1024)).decode()
            await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": huge}}))
            await ws.wait_closed()
            assert ws.close_code == 1009
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    messages = " ".join(r.getMessage() for r in caplog.records)
    for code in ("not_started", "bad_media", "unknown_event", "bad_json", "bad_dtmf", "already_started"):
        assert code in messages, code
    assert FROM[1:] not in messages


# -- calls with an agent -------------------------------------------------------------------------


async def test_a_full_call(models_dir: object) -> None:
    store = MemoryStore()
    agent = served("It is noon. Anything else?", store=store)
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM) as call:
            await wait_for(lambda: any(n.startswith("end-") for n, _ in call.marks_answered), 10, "greeting")
            greeting_s = call.heard_audio().duration_s
            played = await call.play(speech("utt2", 8000), lead_silence_s=0.3, tail_silence_s=0.8)
            await wait_for(
                lambda: sum(n.startswith("end-") for n, _ in call.marks_answered) == 2, 10, "the reply"
            )
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    [conversation] = await store.list_conversations(caller=FROM)
    messages = await store.messages(conversation.id)
    metrics = await store.metrics(conversation.id)
    tts = agent.tts_provider
    assert isinstance(tts, ToneTTS)
    assert greeting_s == pytest.approx(tts.duration_s("Hello."), abs=0.05)
    reply_s = sum(tts.duration_s(text) for text in tts.texts[1:])
    assert played.completed and call.heard_audio().duration_s == pytest.approx(greeting_s + reply_s, abs=0.05)
    assert conversation.channel == "twilio" and conversation.ended_at is not None
    assert [(m.role, m.text, m.interrupted) for m in messages] == [
        ("assistant", "Hello.", False),
        ("user", "What time is it?", False),
        ("assistant", "It is noon. Anything else?", False),
    ]
    assert len(metrics) == 1 and metrics[0].voice_to_voice_ms is not None
    assert call.protocol_violations == []
    media = call.events_of("media")
    frame_bytes = TwilioConnection.output_frame_ms * 8  # mu-law at 8 kHz: a byte per sample
    sizes = [len(base64.b64decode(m.data["media"]["payload"])) for m in media]
    assert sizes and max(sizes) == frame_bytes  # fewer, larger messages than 20 ms frames
    marks = [e.data["mark"]["name"] for e in call.events_of("mark")]
    assert [n for n, _ in call.marks_answered] == marks  # every mark answered, in order


@pytest.mark.parametrize("ws", [None, "websockets-sansio"])
async def test_media_is_taken_as_parsed_where_the_server_offers_it(
    ws: str | None, models_dir: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Under `agentkit run`'s uvicorn protocol the call's media messages are taken as they are parsed
    (`take_text_now`), not through the ASGI receive queue; under plain uvicorn they go through the
    queue. The call is the same either way."""
    caplog.set_level(logging.DEBUG, logger="agentkit.transports._ws_common")
    agent = served("It is noon.")
    async with live_server(Stream(agent), ws=ws) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM) as call:
            await wait_for(lambda: any(n.startswith("end-") for n, _ in call.marks_answered), 10, "greeting")
            played = await call.play(speech("utt2", 8000), lead_silence_s=0.3, tail_silence_s=0.8)
            await wait_for(
                lambda: sum(n.startswith("end-") for n, _ in call.marks_answered) == 2, 10, "the reply"
            )
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    tts = agent.tts_provider
    assert isinstance(tts, ToneTTS) and tts.texts == ["Hello.", "It is noon."]
    assert played.completed and call.protocol_violations == []
    logged = [r.getMessage() for r in caplog.records if "taken as parsed" in r.getMessage()]
    taken = int(logged[0].split()[1]) if logged else 0
    if ws is None:
        assert taken > played.frames_sent // 2  # most: the rest came while other work was in progress
    else:
        assert taken == 0


async def test_barge_in_clears_twilio_and_keeps_what_was_heard(models_dir: object) -> None:
    store = MemoryStore()
    long_reply = " ".join(f"Sentence number {i} of a long answer." for i in range(30))
    agent = served(long_reply, "Okay.", store=store, ms_per_char=60)
    utterance = speech("utt2", 8000)
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM) as call:
            await wait_for(lambda: any(n.startswith("end-") for n, _ in call.marks_answered), 10, "greeting")
            await call.play(utterance, lead_silence_s=0.2, tail_silence_s=0.5)
            start_s = call.received_audio().duration_s
            await wait_for(lambda: call.received_audio().duration_s > start_s + 2, 10, "two seconds of reply")
            barge = await call.play(
                AudioFrame(utterance.samples[:12000], 8000), lead_silence_s=0.0, tail_silence_s=0.6
            )
            await wait_for(lambda: bool(call.events_of("clear")), 5, "clear")
            await asyncio.sleep(0.3)
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    [clear] = call.events_of("clear")
    # In simulated time (the media timeline both sides count in): the VAD dates the onset to the
    # first of the two 32 ms chunks that proved it, and `clear` reaches the caller within 100 ms of it.
    [onset] = [e for e in agent.events if isinstance(e, UserTurnStarted) and e.barge_in]
    [clear_media_ms] = call.clears_at_media_ms
    assert 64 <= clear_media_ms - onset.t_ms <= 100, (onset.t_ms, clear_media_ms)
    # (68 ms measured.) On the wall clock, from the first audible 10 ms of the recording, which can
    # come before Silero hears speech: about 93 ms measured. The bound rules out a clear at the end of
    # the turn (>= 500 ms) and leaves room for a loaded CI machine.
    assert barge.speech_start_t is not None
    onset_to_clear_s = clear.t - barge.speech_start_t
    assert 0.064 <= onset_to_clear_s <= 0.25, onset_to_clear_s
    # nothing of the old reply follows the clear: the next audio is the answer to the new turn
    assert barge.speech_end_t is not None
    assert all(m.t > barge.speech_end_t for m in call.events_of("media") if m.t > clear.t)
    [conversation] = await store.list_conversations(caller=FROM)
    messages = await store.messages(conversation.id)
    interrupted = [m for m in messages if m.interrupted]
    assert len(interrupted) == 1
    heard_words = interrupted[0].text.split()
    assert 0 < len(heard_words) < len(long_reply.split())
    assert long_reply.startswith(interrupted[0].text)
    # the stored words match the audio the caller heard (60 ms a character), within a word or two
    heard_reply_s = call.heard_audio(at_t=clear.t).duration_s - 0.36  # less the greeting, "Hello."
    assert len(interrupted[0].text) * 0.06 == pytest.approx(heard_reply_s, abs=0.6)


async def test_dtmf_reaches_the_agent_and_callers_are_remembered(models_dir: object) -> None:
    store = MemoryStore()
    agent = served("It is noon.", store=store)
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM) as call:
            await wait_for(lambda: bool(call.marks_answered), 10, "the greeting")
            for digit in "1#":
                await call.press(digit)
            await wait_for(lambda: sum(isinstance(e, DtmfReceived) for e in agent.events) == 2, 5, "dtmf")
            await call.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.6)
            await wait_for(
                lambda: sum(n.startswith("end-") for n, _ in call.marks_answered) == 2, 10, "reply"
            )
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the first call to end")
        # the same number calls again, and hangs up in the middle of a longer greeting
        agent.greeting = "Welcome back to the line. " * 10
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM) as again:
            await wait_for(lambda: again.received_audio().duration_s > 0.8, 10, "some of the greeting")
        await wait_for(lambda: not server.stream.sessions, what="the second call to end")
    assert [e.digit for e in agent.events if isinstance(e, DtmfReceived)] == ["1", "#"]
    started = [e for e in agent.events if isinstance(e, SessionStarted)]
    assert [e.earlier_messages for e in started] == [0, 3]
    assert all(e.channel == "twilio" and e.caller == FROM for e in started)
    conversations = await store.list_conversations(caller=FROM)
    assert len(conversations) == 2 and all(c.ended_at is not None for c in conversations)
    latest = await store.messages(conversations[0].id)
    assert [(m.role, m.interrupted) for m in latest] == [("assistant", True)]  # hung up mid-greeting
    assert latest[0].text and agent.greeting.startswith(latest[0].text)
