"""A spoken question → a tool call with the right typed arguments → the result in the next request →
a spoken answer, per cloud provider: a real agent session (Silero turn-taking on recorded speech,
scripted STT, tone TTS) whose LLM is the real Anthropic or Groq SDK talking to the
`agentkit.testing` fakes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _cloud import KEY, isolate_cloud_env
from test_agent import Helper, feed, start, utterance

from agentkit import tool
from agentkit.providers import AnthropicLLM, GroqLLM
from agentkit.providers.llm import ChatMessage, ToolResult
from agentkit.testing import FakeAnthropic, FakeGroq, ScriptedSTT, ToneTTS
from agentkit.testing.fakes import FakeToolCall, Reply

pytestmark = pytest.mark.slow


class Shop(Helper):
    tool_filler = None
    asked: list[tuple[int, bool]]

    @tool
    def order_status(self, order: int, express: bool = False) -> dict[str, Any]:
        """Where an order is.

        Args:
            order: The order number.
            express: Whether it was sent express.
        """
        self.asked.append((order, express))
        return {"order": order, "status": "shipped"}


@pytest.fixture(params=["anthropic", "groq"])
async def provider(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[Any, Any]]:
    isolate_cloud_env(monkeypatch, tmp_path)
    if request.param == "anthropic":
        async with FakeAnthropic(api_key=KEY) as fake:
            llm: Any = AnthropicLLM(api_key=KEY, base_url=fake.base_url, timeout_s=5.0)
            yield fake, llm
            await llm.aclose()  # its HTTP client, before the fake server goes
    else:
        async with FakeGroq(api_key=KEY) as fake:
            llm = GroqLLM(api_key=KEY, base_url=fake.base_url, timeout_s=5.0)
            yield fake, llm
            await llm.aclose()


async def test_a_spoken_question_is_answered_through_a_tool(
    provider: tuple[Any, Any], models_dir: object
) -> None:
    fake, llm = provider
    fake.push(
        Reply(
            text="Let me check.",
            tool_calls=(FakeToolCall("order_status", {"order": 42, "express": True}, fragment_chars=5),),
        )
    )
    fake.push(Reply(text="Order 42 has shipped."))
    tts = ToneTTS(ms_per_char=2)
    agent = Shop(stt=ScriptedSTT("Where is order 42?"), llm=llm, tts=tts)
    agent.asked = []
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=15)
        history = handler.session.history
    finally:
        await session.close()
    assert handler.asked == [(42, True)]  # it ran once, with typed arguments
    assert tts.texts == ["Let me check.", "Order 42 has shipped."]
    first, second = (r.json() for r in fake.requests)
    tools = first["tools"]
    assert len(tools) == 1 and json.dumps(tools[0]).count('"order"') >= 1
    assert history[0] == ChatMessage("user", "Where is order 42?")
    [call] = history[1].tool_calls
    assert (call.name, dict(call.arguments or {})) == ("order_status", {"order": 42, "express": True})
    assert history[2].tool_results == (
        ToolResult(call.id, "order_status", '{"order": 42, "status": "shipped"}'),
    )
    assert history[3] == ChatMessage("assistant", "Order 42 has shipped.")
    sent = json.dumps(second["messages"])
    assert call.id in sent and '\\"status\\": \\"shipped\\"' in sent  # the result went back
