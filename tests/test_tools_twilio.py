"""The built-in call tools over the Twilio caller simulator and `FakeTwilio`: `end_call` hangs up
through the REST API only once Twilio has echoed the goodbye's last mark (it was heard), and
`transfer_call` sends the call to a `<Dial>` of the chosen destination."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from _server import live_server, wait_for
from conftest import speech

from agentkit import Agent, Stream, TurnTakingOptions, end_call_tool, transfer_call_tool
from agentkit.providers.llm import ChatMessage, LLMChunk, ToolCall
from agentkit.testing import FakeTwilio, ScriptedLLM, ScriptedSTT, ToneTTS, TwilioCaller

pytestmark = pytest.mark.slow

TOKEN = "test-auth-token-0123456789abcdef"
SID = "AC" + "1" * 32
FROM = "+15550101234"
GOODBYE = "Thank you for calling, have a lovely evening. Goodbye!"


class Desk(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    tool_filler = None
    tools = (end_call_tool(GOODBYE), transfer_call_tool({"billing": "+14155550100"}))
    action = "end_call"

    async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        arguments = {"to": "billing"} if self.action == "transfer_call" else {}
        yield LLMChunk(tool_call=ToolCall("call_1", self.action, arguments))


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTwilio]:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    for name in ("AGENTKIT_PUBLIC_URL", "AGENTKIT_TWILIO_VALIDATE"):
        monkeypatch.delenv(name, raising=False)
    async with FakeTwilio(account_sid=SID, auth_token=TOKEN) as twilio:
        monkeypatch.setenv("TWILIO_API_BASE_URL", twilio.base_url)
        yield twilio


async def test_end_call_hangs_up_only_after_twilio_confirms_the_goodbye_was_played(
    fake: FakeTwilio, models_dir: object
) -> None:
    agent = Desk(stt=ScriptedSTT("That is all, goodbye."), llm=ScriptedLLM(), tts=ToneTTS(ms_per_char=10))
    sid = fake.add_call(from_=FROM)
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(
            server.http_url, auth_token=TOKEN, from_number=FROM, call_sid=sid, mark_delay_s=0.4
        ) as call:
            await call.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.6)
            await wait_for(lambda: bool(fake.requests), 15, "the REST hang-up")
            hung_up_at = call._clock.now()
            end_marks = [(name, t) for name, t in call.marks_answered if name.startswith("end-")]
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    [request] = fake.requests
    assert request.form == {"Status": "completed"} and fake.calls[sid].status == "completed"
    assert end_marks, "the goodbye's end mark was echoed"
    assert hung_up_at >= end_marks[-1][1]  # not before Twilio said the goodbye had played


async def test_transfer_call_dials_the_named_destination(fake: FakeTwilio, models_dir: object) -> None:
    agent = Desk(stt=ScriptedSTT("Billing, please."), llm=ScriptedLLM(), tts=ToneTTS(ms_per_char=5))
    agent.action = "transfer_call"
    sid = fake.add_call(from_=FROM)
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN, from_number=FROM, call_sid=sid) as call:
            await call.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.6)
            await wait_for(lambda: bool(fake.calls[sid].redirects), 15, "the transfer")
            await asyncio.sleep(0.2)
        await wait_for(lambda: not server.stream.sessions, what="the session to end")
    [twiml] = fake.calls[sid].redirects
    assert "<Dial><Number>+14155550100</Number></Dial>" in twiml
    assert fake.calls[sid].status == "in-progress"  # transferred, not hung up
