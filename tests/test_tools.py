"""Tools: how `@tool` describes a function, and the agent's tool loop through real sessions (real
Silero turn-taking on recorded speech, scripted STT, a scripted LLM step, tone TTS) — round trip,
errors, the filler, barge-in safety, handoff, and the built-in end_call and transfer_call."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import pydantic
import pytest
from test_agent import Helper, feed, start, utterance

from agentkit import AgentSession, ToolError, tool
from agentkit.agent import (
    AgentEvent,
    AgentHandoff,
    ToolCallFinished,
    ToolCallStarted,
    end_call_tool,
    transfer_call_tool,
)
from agentkit.agent._tools import make_tool
from agentkit.exceptions import ConfigError
from agentkit.providers.llm import ChatMessage, LLMChunk, ToolCall, ToolResult
from agentkit.store import MemoryStore
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

pytestmark = pytest.mark.usefixtures("models_dir")


# -- describing tools ------------------------------------------------------------------------------


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


class Address(pydantic.BaseModel):
    street: str
    city: str


def test_a_function_becomes_a_tool_with_a_schema_from_its_hints_and_docstring() -> None:
    def order_pizza(  # noqa: PLR0917 - a tool's arguments are the LLM's, by name
        size: Size,
        toppings: list[str],
        crust: Literal["thin", "thick"] = "thin",
        extra_cheese: bool = False,
        deliver_to: Address | None = None,
        tip_percent: float = 10.0,
    ) -> str:
        """Order a pizza for the caller.

        Args:
            size: How big.
            toppings: What goes on it.
            crust: The kind of crust.
        """
        return "ok"

    made = make_tool(order_pizza)
    schema = made.parameters
    assert made.name == "order_pizza" and made.description == "Order a pizza for the caller."
    assert schema["type"] == "object" and schema["required"] == ["size", "toppings"]
    props = schema["properties"]
    assert props["toppings"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "What goes on it.",
    }
    assert (
        props["crust"]["enum"] == ["thin", "thick"] and props["crust"]["description"] == "The kind of crust."
    )
    assert props["extra_cheese"]["type"] == "boolean" and props["tip_percent"]["type"] == "number"
    assert "Size" in str(props["size"]) and "$defs" in schema  # enums and models by reference
    assert "title" not in str(schema["properties"]["size"])


def test_the_session_parameter_is_not_offered_to_the_llm() -> None:
    async def whoami(session: AgentSession, loud: bool = False) -> str:
        """Say who is calling."""
        return session.caller or "unknown"

    made = make_tool(whoami)
    assert made.session_param == "session" and list(made.parameters["properties"]) == ["loud"]


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda x: x, "needs a type hint"),
        (lambda *args: None, r"\*args"),
    ],
)
def test_tools_that_cannot_be_described_are_refused_clearly(fn: Any, message: str) -> None:
    fn.__name__ = "bad_tool"
    with pytest.raises(ConfigError, match=message):
        make_tool(fn)


async def test_arguments_are_validated_and_converted_before_the_tool_runs() -> None:
    seen: list[Any] = []

    def add(a: int, b: int = 1) -> int:
        seen.append((a, b))
        return a + b

    made = make_tool(add)
    assert await made.run({"a": "41"}, None) == 42 and seen == [(41, 1)]
    with pytest.raises(ToolError, match="invalid arguments: a:"):
        await made.run({"a": "many"}, None)
    with pytest.raises(ToolError, match="not valid JSON"):
        await made.run(None, None)


# -- the tool loop ---------------------------------------------------------------------------------


def call(name: str, arguments: dict[str, Any] | None, call_id: str = "call_1") -> LLMChunk:
    return LLMChunk(tool_call=ToolCall(call_id, name, arguments))


class Shop(Helper):
    """Its LLM step is scripted: it calls `order_status` on the caller's turn, then answers with the
    tool's result (or says what went wrong)."""

    tool_filler = None
    first_piece_words = None  # whole sentences to the TTS: the tests read them back

    def __init__(self, **options: Any) -> None:
        options.setdefault("llm", ScriptedLLM())  # its steps are scripted in `llm_node` below
        super().__init__(**options)
        self.ran: list[int] = []
        self.events: list[AgentEvent] = []
        self.arguments: dict[str, Any] = {"order": "42"}
        self.tool_name = "order_status"
        self.before_call = "Let me check."

    @tool
    async def order_status(self, order: int) -> dict[str, Any]:
        """Where an order is.

        Args:
            order: The order number.
        """
        self.ran.append(order)
        return {"order": order, "status": "shipped"}

    async def on_event(self, event: AgentEvent) -> None:
        self.events.append(event)

    async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        last = history[-1]
        if last.role == "tool":
            [result] = last.tool_results
            yield ("Sorry: " if result.is_error else "Done: ") + result.content
            return
        if last.text == "Never mind.":  # the caller's second turn, in the barge-in tests
            yield "Okay."
            return
        yield self.before_call
        yield call(self.tool_name, self.arguments)


ASKED = {"order": "42"}


async def test_a_tool_round_trip_through_a_session() -> None:
    store = MemoryStore()
    tts = ToneTTS(ms_per_char=5)
    session, transport, agent = await start(Shop(stt=ScriptedSTT("Where is order 42?"), tts=tts, store=store))
    assert isinstance(agent, Shop)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = agent.session.history
        conversation_id = agent.session.conversation_id
    finally:
        await session.close()
    assert agent.ran == [42]  # "42" from the LLM, converted by the tool's type hint
    result = '{"order": 42, "status": "shipped"}'
    assert history == [
        ChatMessage("user", "Where is order 42?"),
        ChatMessage(
            "assistant", "Let me check.", tool_calls=(ToolCall("call_1", "order_status", {"order": "42"}),)
        ),
        ChatMessage("tool", "", tool_results=(ToolResult("call_1", "order_status", result),)),
        ChatMessage("assistant", f"Done: {result}"),
    ]
    assert tts.texts[0] == "Let me check."  # the words before the call were spoken at once
    started = [e for e in agent.events if isinstance(e, ToolCallStarted)]
    finished = [e for e in agent.events if isinstance(e, ToolCallFinished)]
    assert [(e.name, e.arguments) for e in started] == [("order_status", '{"order": "42"}')]
    assert [(e.result, e.is_error, e.cancelled) for e in finished] == [(result, False, False)]
    wire = [(e.event.name, e.event.status) for e in transport.events_of("tool")]  # type: ignore[union-attr]
    assert wire == [("order_status", "started"), ("order_status", "finished")]
    assert conversation_id is not None
    [stored] = await store.tool_calls(conversation_id)
    assert (stored.name, stored.arguments, stored.result, stored.turn_index) == (
        "order_status",
        '{"order": "42"}',
        result,
        0,
    )
    messages = [m.text for m in await store.messages(conversation_id)]
    assert messages == ["Where is order 42?", f"Let me check. Done: {result}"]


@pytest.mark.parametrize(
    ("tool_name", "arguments", "expected"),
    [
        ("order_status", {"order": "forty-two"}, "Sorry: invalid arguments: order:"),
        ("order_statuz", {"order": 1}, "Sorry: there is no tool named 'order_statuz'"),
        ("order_status", None, "Sorry: the arguments were not valid JSON"),
    ],
)
async def test_bad_calls_become_error_results_the_llm_reads(
    tool_name: str, arguments: dict[str, Any] | None, expected: str
) -> None:
    agent = Shop(stt=ScriptedSTT("Where is my order?"), tts=ToneTTS(ms_per_char=2))
    agent.tool_name, agent.arguments = tool_name, arguments  # type: ignore[assignment]
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = handler.session.history
    finally:
        await session.close()
    assert history[-1].text.startswith(expected)
    assert history[-2].tool_results[0].is_error


class Slow(Shop):
    tool_filler = "One moment."
    tool_filler_after_s = 0.2

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.delay_s = 0.8
        self.finished_ok = False

    @tool(timeout_s=5)
    async def order_status(self, order: int) -> str:
        """Where an order is (slowly)."""
        self.ran.append(order)
        await asyncio.sleep(self.delay_s)
        self.finished_ok = True
        return "shipped"

    @tool(cancellable=False)
    async def book(self, order: int) -> str:
        """A write that must finish."""
        self.ran.append(order)
        await asyncio.sleep(self.delay_s)
        self.finished_ok = True
        return "booked"


async def test_a_slow_tool_gets_the_filler_once_and_a_stuck_one_times_out() -> None:
    tts = ToneTTS(ms_per_char=2)
    agent = Slow(stt=ScriptedSTT("Where is my order?"), tts=tts, tool_timeout_s=5)
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        first = handler.session.history
    finally:
        await session.close()
    assert tts.texts == ["Let me check.", "One moment.", "Done: shipped"]
    assert first[-1] == ChatMessage("assistant", "Done: shipped")

    class Stuck(Slow):
        tool_filler = None

        @tool(timeout_s=0.3)
        async def order_status(self, order: int) -> str:
            """Where an order is (never answers)."""
            await asyncio.sleep(30)
            return "never"

    session, transport, handler = await start(Stuck(stt=ScriptedSTT("Where is my order?"), tts=ToneTTS()))
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = handler.session.history
    finally:
        await session.close()
    assert history[-1].text == "Sorry: timed out after 0.3 s"


async def barge_in_while(agent: Shop, *, wait_s: float) -> tuple[list[ChatMessage], Shop]:
    session, transport, handler = await start(agent)
    assert isinstance(handler, Shop)
    try:
        await feed(session, utterance())
        await transport.wait_for("response_starting", timeout_s=10)
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(wait_s)
        await feed(session, utterance(lead_s=0.0), realtime=True)
        await transport.wait_for("interrupted", timeout_s=5)
        await asyncio.sleep(1.2)  # long enough for any tool to have finished
        history = handler.session.history
    finally:
        await session.close()
    return history, handler


async def test_a_call_the_llm_had_not_finished_asking_for_never_runs() -> None:
    class Late(Shop):
        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            if history[-1].role == "tool":
                yield "Done."
                return
            yield "Let me look that up for you, it will only take a moment to find."
            await asyncio.sleep(3)  # the caller interrupts while the call is still being written
            yield call("order_status", {"order": 1})

    history, agent = await barge_in_while(
        Late(stt=ScriptedSTT("Where is my order?", "Never mind."), tts=ToneTTS(ms_per_char=30)), wait_s=0.8
    )
    assert agent.ran == []
    assert not any(m.tool_calls for m in history)
    assert history[1].text == "Let me look that up for you,"  # what was heard, and no call


async def test_a_running_cancellable_call_is_cancelled_and_the_history_says_so() -> None:
    agent = Slow(stt=ScriptedSTT("Where is my order?", "Never mind."), tts=ToneTTS(ms_per_char=30))
    agent.tool_filler, agent.delay_s = None, 3.0
    history, handler = await barge_in_while(agent, wait_s=0.1)
    assert handler.ran == [42] and not handler.finished_ok
    [assistant, results] = [m for m in history if m.tool_calls or m.tool_results]
    assert assistant.tool_calls[0].name == "order_status"
    assert results.tool_results[0].is_error and "cancelled" in results.tool_results[0].content
    finished = [e for e in handler.events if isinstance(e, ToolCallFinished)]
    assert [(e.name, e.cancelled) for e in finished] == [("order_status", True)]


async def test_a_running_call_that_must_finish_finishes_and_its_result_is_kept() -> None:
    agent = Slow(stt=ScriptedSTT("Book it.", "Never mind."), tts=ToneTTS(ms_per_char=30))
    agent.tool_filler, agent.delay_s, agent.tool_name = None, 0.8, "book"
    history, handler = await barge_in_while(agent, wait_s=0.1)
    assert handler.finished_ok
    [results] = [m for m in history if m.tool_results]
    assert results.tool_results == (ToolResult("call_1", "book", "booked"),)  # filled in when done
    finished = [e for e in handler.events if isinstance(e, ToolCallFinished)]
    assert [(e.name, e.cancelled, e.result) for e in finished] == [("book", False, "booked")]


async def test_after_max_tool_steps_the_llm_is_offered_no_tools() -> None:
    offered: list[int] = []

    class Loops(Shop):
        max_tool_steps = 2

        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            offered.append(len(self.session.offered_tools))
            if self.session.offered_tools:
                yield call("order_status", {"order": len(offered)}, f"call_{len(offered)}")
            else:
                yield "I have what I need."

    session, transport, agent = await start(Loops(stt=ScriptedSTT("Go."), tts=ToneTTS(ms_per_char=2)))
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = agent.session.history
    finally:
        await session.close()
    assert offered == [1, 1, 0]
    assert history[-1] == ChatMessage("assistant", "I have what I need.")
    assert sum(1 for m in history if m.tool_calls) == 2


async def test_a_tool_can_hand_the_call_to_another_agent() -> None:
    billing_tts = ToneTTS(ms_per_char=2)

    class Billing(Helper):
        first_piece_words = None  # whole sentences to the TTS: the test reads them back
        instructions = "You handle billing."

        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            yield "Billing here, how can I help?"

    class Reception(Shop):
        @tool
        def to_billing(self) -> Billing:
            """Hand the caller to billing."""
            return Billing(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=billing_tts)

        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            yield "Let me put you through."
            yield call("to_billing", {})

    reception_tts = ToneTTS(ms_per_char=2)
    agent = Reception(stt=ScriptedSTT("I have a billing question."), tts=reception_tts)
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = handler.session.history
        events = list(handler.events)  # type: ignore[attr-defined]
    finally:
        await session.close()
    assert reception_tts.texts == ["Let me put you through."]
    assert billing_tts.texts == ["Billing here, how can I help?"]  # the new voice
    assert history[-1] == ChatMessage("assistant", "Billing here, how can I help?")
    assert history[0] == ChatMessage("user", "I have a billing question.")  # the history is kept
    [handoff] = [e for e in events if isinstance(e, AgentHandoff)]
    assert (handoff.previous, handoff.agent) == ("Reception", "Billing")


async def test_end_call_hangs_up_after_the_goodbye_is_heard_not_before() -> None:
    class Bye(Shop):
        tools = (end_call_tool("Goodbye, and thanks for calling!"),)

        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            yield call("end_call", {})

    session, transport, agent = await start(
        Bye(stt=ScriptedSTT("That's all, bye."), tts=ToneTTS(ms_per_char=20))
    )
    try:
        await feed(session, utterance())
        done = await transport.wait_for("response_done", timeout_s=10)
        for _ in range(100):
            if transport.closed is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        await session.close()
    assert transport.closed is not None and transport.close_reason == "hang_up"
    goodbye_audio_s = ToneTTS(ms_per_char=20).duration_s("Goodbye, and thanks for calling!")
    last_audio = max(a.t for a in transport.audio)
    assert done.t >= last_audio and goodbye_audio_s > 0.5
    assert agent.session.history[-1].text == "Goodbye, and thanks for calling!"


async def test_end_call_does_not_hang_up_on_a_caller_who_talks_over_the_goodbye() -> None:
    class Bye(Shop):
        tools = (end_call_tool("Goodbye, and thank you very much for calling us today, have a great day!"),)

        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            if history[-1].role == "user" and history[-1].text == "Wait, one more thing.":
                yield "Of course."
                return
            yield call("end_call", {})

    agent = Bye(stt=ScriptedSTT("That's all, bye.", "Wait, one more thing."), tts=ToneTTS(ms_per_char=30))
    session, transport, _ = await start(agent)
    try:
        await feed(session, utterance())
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(0.5)
        await feed(session, utterance(lead_s=0.0), realtime=True)
        await transport.wait_for("interrupted", timeout_s=5)
        await transport.wait_for("response_done", timeout_s=10)
        await asyncio.sleep(0.5)
        still_open = transport.closed is None
    finally:
        await session.close()
    assert still_open


async def test_transfer_is_refused_clearly_where_the_channel_cannot_transfer() -> None:
    class Transfers(Shop):
        tools = (transfer_call_tool({"billing": "+14155550100"}),)

        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            if history[-1].role == "tool":
                yield "Result: " + history[-1].tool_results[0].content
                return
            yield call("transfer_call", {"to": "billing"})

    session, transport, agent = await start(
        Transfers(stt=ScriptedSTT("Billing please."), tts=ToneTTS(ms_per_char=2))
    )
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = agent.session.history
    finally:
        await session.close()
    assert history[-1].text == "Result: transferring calls is not supported on this channel (websocket)"
    schema = agent.agent_tools()["transfer_call"].parameters
    assert schema["properties"]["to"]["enum"] == ["billing"]  # a name, never a number


def test_an_llm_that_cannot_call_tools_is_refused_at_construction() -> None:
    llm = ScriptedLLM()
    llm.supports_tools = False  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="cannot call tools"):
        Shop(stt=ScriptedSTT(), llm=llm, tts=ToneTTS())
