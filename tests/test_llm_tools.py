"""Tool calls through the LLM Protocol: AnthropicLLM and GroqLLM through their real SDKs against the
loopback fakes of their APIs, LocalLLM's refusal, and ScriptedLLM's scripted calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers.llm import (
    LLM,
    AnthropicLLM,
    ChatMessage,
    GroqLLM,
    LLMChunk,
    LLMUsage,
    LocalLLM,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from agentkit.providers.llm._anthropic import CALL_STARTED
from agentkit.testing import ScriptedLLM, ScriptedReply
from agentkit.testing.fakes import FakeAnthropic, FakeGroq, FakeServer, FakeToolCall, Reply
from tests._cloud import KEY, isolate_cloud_env

ORDER_STATUS = ToolSpec(
    "order_status",
    "Where an order is, by its number.",
    {
        "type": "object",
        "properties": {"order": {"type": "integer"}, "express": {"type": "boolean"}},
        "required": ["order"],
    },
)
FIND_STORE = ToolSpec(
    "find_store",
    "The nearest store to a place.",
    {"type": "object", "properties": {"near": {"type": "object"}, "open_now": {"type": "boolean"}}},
)
TOOLS = (ORDER_STATUS, FIND_STORE)
QUESTION = [ChatMessage("user", "Where is my order 42?")]
ARGUMENTS: dict[str, Any] = {
    "order": 42,
    "express": True,
    "weight_kg": 1.5,
    "note": None,
    "address": {"city": "Zürich", "lines": ['1 "Bahnhof" Str.', "Floor 3"], "geo": [47.37, 8.54]},
    "items": [1, 2, 3],
}
FAST_S = 0.3  # the providers' timeout in these tests


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_cloud_env(monkeypatch, tmp_path)


VENDORS: dict[str, tuple[type[FakeServer], Callable[..., Any]]] = {
    "anthropic": (FakeAnthropic, AnthropicLLM),
    "groq": (FakeGroq, GroqLLM),
}


@pytest.fixture(params=sorted(VENDORS))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeServer, Any]]:
    """A fake server and an LLM provider pointed at it (closed afterwards)."""
    fake_cls, llm_cls = VENDORS[request.param]
    async with fake_cls(api_key=KEY) as fake:
        llm = llm_cls(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        try:
            yield fake, llm
        finally:
            await llm.aclose()


async def reply(
    llm: LLM, messages: Sequence[ChatMessage] = QUESTION, tools: Sequence[ToolSpec] = TOOLS
) -> tuple[str, list[ToolCall], list[LLMChunk]]:
    """The reply's text, its tool calls, and every chunk."""
    chunks = [c async for c in llm.stream(messages, instructions="Be brief.", tools=tools)]
    calls = [c.tool_call for c in chunks if c.tool_call is not None]
    return "".join(c.text for c in chunks), calls, chunks


def calls_reply(*calls: FakeToolCall, text: str = "", **faults: Any) -> Reply:
    return Reply(text=text, tool_calls=calls, **faults)


def is_anthropic(fake: FakeServer) -> bool:
    return isinstance(fake, FakeAnthropic)


# -- requests ---------------------------------------------------------------------------------------


async def test_tool_definitions_go_out_in_each_apis_shape(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    await reply(llm)
    sent = fake.requests[-1].json()["tools"]
    if is_anthropic(fake):
        assert sent == [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)} for t in TOOLS
        ]
    else:
        assert sent == [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
            }
            for t in TOOLS
        ]
    await reply(llm, tools=())
    assert "tools" not in fake.requests[-1].json()  # no tools offered: a plain request, as before


# -- streamed calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fragment_chars", [1, 5, None])
async def test_a_streamed_call_comes_back_whole_with_typed_arguments(
    pair: tuple[FakeServer, Any], fragment_chars: int | None
) -> None:
    fake, llm = pair
    call = FakeToolCall("order_status", ARGUMENTS, id="call-7", fragment_chars=fragment_chars)
    fake.push(calls_reply(call, input_tokens=40, output_tokens=9))
    text, calls, chunks = await reply(llm)
    assert text == ""
    assert calls == [ToolCall("call-7", "order_status", ARGUMENTS, json.dumps(ARGUMENTS))]
    arguments = calls[0].arguments
    assert arguments is not None
    assert type(arguments["order"]) is int and type(arguments["weight_kg"]) is float
    assert arguments["express"] is True and arguments["note"] is None
    assert arguments["address"]["lines"][0] == '1 "Bahnhof" Str.'  # escapes split across pieces
    assert chunks[-1] == LLMChunk(usage=LLMUsage(input_tokens=40, output_tokens=9))
    assert [c for c in chunks if c.tool_call is None and c.usage is None and c.text] == []
    assert fake.requests[-1].chunks_sent == len(call.fragments())
    assert fake.requests[-1].outcome == "completed"


async def test_text_before_a_call_streams_first(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(calls_reply(FakeToolCall("order_status", {"order": 42}), text="Let me check that."))
    text, calls, chunks = await reply(llm)
    assert [c.text for c in chunks[:4]] == ["Let ", "me ", "check ", "that."]
    assert chunks[4].tool_call is not None and chunks[4].tool_call.arguments == {"order": 42}
    assert chunks[5].usage is not None and len(chunks) == 6
    assert text == "Let me check that." and len(calls) == 1


async def test_parallel_calls_come_back_one_by_one_in_order(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(
        calls_reply(
            FakeToolCall("order_status", {"order": 42}),
            FakeToolCall("find_store", {"near": {"city": "Lyon"}, "open_now": False}, fragment_chars=3),
            FakeToolCall("order_status", {}),  # no arguments at all
            text="Checking both.",
        )
    )
    text, calls, _ = await reply(llm)
    assert text == "Checking both."
    assert [(c.name, c.arguments) for c in calls] == [
        ("order_status", {"order": 42}),
        ("find_store", {"near": {"city": "Lyon"}, "open_now": False}),
        ("order_status", {}),
    ]
    prefix = "toolu_fake_" if is_anthropic(fake) else "call_fake_"
    assert [c.id for c in calls] == [f"{prefix}0", f"{prefix}1", f"{prefix}2"]


@pytest.mark.parametrize("raw", ['{"order": 42', '{"order": 42}}', "[42]", '"42"', "order=42"])
async def test_arguments_that_are_not_a_json_object_give_none_and_keep_the_raw_text(
    pair: tuple[FakeServer, Any], raw: str
) -> None:
    fake, llm = pair
    fake.push(calls_reply(FakeToolCall("order_status", raw, id="c1", fragment_chars=4)))
    _, calls, _ = await reply(llm)
    assert calls == [ToolCall("c1", "order_status", None, raw)]


async def test_empty_arguments_are_an_empty_object(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(calls_reply(FakeToolCall("order_status", "", id="c1")))
    _, calls, _ = await reply(llm)
    assert calls == [ToolCall("c1", "order_status", {}, "")]


# -- faults in the middle of a call -----------------------------------------------------------------


@pytest.mark.parametrize("pieces_sent", [0, 2])
async def test_a_connection_cut_in_the_middle_of_a_call_raises_and_yields_no_call(
    pair: tuple[FakeServer, Any], pieces_sent: int
) -> None:
    fake, llm = pair
    call = FakeToolCall("order_status", ARGUMENTS, fragment_chars=6)
    fake.push(calls_reply(call, text="One moment.", cut_after=2 + pieces_sent))
    received: list[LLMChunk] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in llm.stream(QUESTION, instructions="x", tools=TOOLS):
            received.append(chunk)
    assert caught.value.retryable and not isinstance(caught.value, ProviderTimeoutError)
    assert "".join(c.text for c in received) == "One moment."
    assert all(c.tool_call is None for c in received)  # never half a call
    assert fake.requests[0].outcome == "cut"


async def test_a_second_call_cut_short_raises_after_the_first_one_came(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    first = FakeToolCall("order_status", {"order": 1}, id="a", fragment_chars=None)
    second = FakeToolCall("order_status", {"order": 2}, id="b", fragment_chars=4)
    fake.push(calls_reply(first, second, cut_after=2))
    received: list[ToolCall] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in llm.stream(QUESTION, instructions="x", tools=TOOLS):
            if chunk.tool_call is not None:
                received.append(chunk.tool_call)
    assert caught.value.retryable
    # The first call was complete (its block ended, or a later index started): only it came out.
    assert [c.id for c in received] == ["a"]


@pytest.mark.parametrize("status", [500, 529])
async def test_a_server_error_event_in_the_middle_of_a_call_is_retryable(
    pair: tuple[FakeServer, Any], status: int
) -> None:
    fake, llm = pair
    fake.push(calls_reply(FakeToolCall("order_status", ARGUMENTS), error_after=3, error_status=status))
    received: list[LLMChunk] = []
    with pytest.raises(ProviderError, match="mid-stream") as caught:
        async for chunk in llm.stream(QUESTION, instructions="x", tools=TOOLS):
            received.append(chunk)
    assert caught.value.retryable
    assert received == []
    assert fake.requests[0].chunks_sent == 3
    # The provider still works afterwards.
    fake.push(calls_reply(FakeToolCall("order_status", {"order": 42})))
    _, calls, _ = await reply(llm)
    assert calls[0].arguments == {"order": 42}


async def test_anthropic_invalid_request_event_mid_call_is_not_retryable() -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        fake.push(calls_reply(FakeToolCall("order_status", ARGUMENTS), error_after=2, error_status=400))
        llm = AnthropicLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        with pytest.raises(ProviderError, match="invalid_request_error") as caught:
            await reply(llm)
        await llm.aclose()
    assert not caught.value.retryable


async def test_a_stall_in_the_middle_of_a_call_times_out(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(calls_reply(FakeToolCall("order_status", ARGUMENTS), stall_after=2, stall_s=5.0))
    async with asyncio.timeout(5):  # a guard against hanging, not a measurement
        with pytest.raises(ProviderTimeoutError):
            await reply(llm)
    await fake.wait_idle()
    assert fake.requests[0].outcome == "disconnected"


async def test_closing_the_stream_during_a_call_hangs_up(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    call = FakeToolCall("order_status", ARGUMENTS, fragment_chars=2)
    fake.push(calls_reply(call, text="Checking now.", chunk_delay_s=0.02))
    stream = llm.stream(QUESTION, instructions="x", tools=TOOLS)
    assert (await anext(stream)).text == "Checking "
    await stream.aclose()  # barge-in
    await fake.wait_idle()
    assert fake.requests[0].outcome == "disconnected"
    assert fake.requests[0].chunks_sent < 2 + len(call.fragments())


# -- the follow-up request --------------------------------------------------------------------------


async def round_trip(fake: FakeServer, llm: Any) -> tuple[list[ToolCall], Any]:
    """Ask, get two calls, answer them (one failed), ask again: the calls and the second request's
    `messages`."""
    fake.push(
        calls_reply(
            FakeToolCall("order_status", {"order": 42}, id="call_a"),
            FakeToolCall("find_store", {"near": {"city": "Lyon"}}, id="call_b"),
            text="Let me look.",
        ),
        Reply(text="It has shipped."),
    )
    text, calls, _ = await reply(llm)
    history = [
        *QUESTION,
        ChatMessage("assistant", text, tool_calls=tuple(calls)),
        ChatMessage(
            "tool",
            "",
            tool_results=(
                ToolResult("call_a", "order_status", '{"status": "shipped"}'),
                ToolResult("call_b", "find_store", "the store service timed out", is_error=True),
            ),
        ),
    ]
    text, _, _ = await reply(llm, history)
    assert text == "It has shipped."
    return calls, fake.requests[-1].json()["messages"]


async def test_anthropic_follow_up_carries_tool_use_then_tool_result_blocks() -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        llm = AnthropicLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        calls, messages = await round_trip(fake, llm)
        await llm.aclose()
    assert [c.id for c in calls] == ["call_a", "call_b"]
    assert messages == [
        {"role": "user", "content": "Where is my order 42?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_a", "name": "order_status", "input": {"order": 42}},
                {
                    "type": "tool_use",
                    "id": "call_b",
                    "name": "find_store",
                    "input": {"near": {"city": "Lyon"}},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_a",
                    "content": '{"status": "shipped"}',
                    "is_error": False,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": "the store service timed out",
                    "is_error": True,
                },
            ],
        },
    ]


async def test_groq_follow_up_carries_tool_calls_then_one_tool_message_per_result() -> None:
    async with FakeGroq(api_key=KEY) as fake:
        llm = GroqLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        calls, messages = await round_trip(fake, llm)
        await llm.aclose()
    assert [c.id for c in calls] == ["call_a", "call_b"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is my order 42?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "order_status", "arguments": '{"order": 42}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "find_store", "arguments": '{"near": {"city": "Lyon"}}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "shipped"}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "Error: the store service timed out"},
    ]


def call(call_id: str, arguments: dict[str, Any] | None = None) -> ToolCall:
    arguments = {"order": 42} if arguments is None else arguments
    return ToolCall(call_id, "order_status", arguments, json.dumps(arguments))


def result(call_id: str, content: str = '"shipped"') -> ToolResult:
    return ToolResult(call_id, "order_status", content)


MESSY_HISTORY = [
    ChatMessage("assistant", "Hi, how can I help?"),  # the greeting: the history starts with the agent
    ChatMessage("user", "Where is my order?"),
    ChatMessage("user", "It's 42."),
    ChatMessage("assistant", "Let me look.", tool_calls=(call("t1"), call("t_lost"))),
    ChatMessage("user", "Thanks."),  # said while the tool ran
    ChatMessage("tool", "", tool_results=(result("t1"),)),  # t_lost never got a result
    ChatMessage("assistant", "It has shipped. And"),
    ChatMessage("assistant", "", interrupted=True, tool_calls=(call("t2"),)),  # cut off: no result
    ChatMessage("tool", "", tool_results=(result("t_stray"),)),  # answers no call before it
    ChatMessage("user", "Great, bye."),
]


async def test_anthropic_history_keeps_every_call_answered_right_after_it() -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        llm = AnthropicLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        await reply(llm, MESSY_HISTORY)
        await reply(llm, MESSY_HISTORY, tools=())
        await llm.aclose()
    t1_use = {"type": "tool_use", "id": "t1", "name": "order_status", "input": {"order": 42}}
    t1_result = {"type": "tool_result", "tool_use_id": "t1", "content": '"shipped"', "is_error": False}
    assert fake.requests[0].json()["messages"] == [
        {"role": "user", "content": CALL_STARTED},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Where is my order?\nIt's 42."},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me look."}, t1_use]},
        {"role": "user", "content": [t1_result, {"type": "text", "text": "Thanks."}]},  # results first
        {"role": "assistant", "content": "It has shipped. And"},
        {"role": "user", "content": "Great, bye."},
    ]
    # Without tools in the request the API refuses tool blocks: only the words go.
    assert fake.requests[1].json()["messages"] == [
        {"role": "user", "content": CALL_STARTED},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Where is my order?\nIt's 42."},
        {"role": "assistant", "content": "Let me look."},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": "It has shipped. And"},
        {"role": "user", "content": "Great, bye."},
    ]


async def test_groq_history_keeps_every_call_answered_right_after_it() -> None:
    async with FakeGroq(api_key=KEY) as fake:
        llm = GroqLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        await reply(llm, MESSY_HISTORY)
        await llm.aclose()
    t1 = {"id": "t1", "type": "function", "function": {"name": "order_status", "arguments": '{"order": 42}'}}
    assert fake.requests[0].json()["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi, how can I help?"},
        {"role": "user", "content": "Where is my order?"},
        {"role": "user", "content": "It's 42."},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [t1]},
        {"role": "tool", "tool_call_id": "t1", "content": '"shipped"'},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": "It has shipped. And"},
        {"role": "user", "content": "Great, bye."},
    ]


async def test_groq_sends_unparsed_arguments_back_as_an_empty_object() -> None:
    history = [
        *QUESTION,
        ChatMessage("assistant", "", tool_calls=(ToolCall("c1", "order_status", None, '{"order": 4'),)),
        ChatMessage("tool", "", tool_results=(ToolResult("c1", "order_status", "bad arguments", True),)),
    ]
    async with FakeGroq(api_key=KEY) as fake:
        llm = GroqLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        await reply(llm, history)
        await llm.aclose()
    assistant = fake.requests[0].json()["messages"][2]
    assert assistant == {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "order_status", "arguments": "{}"}}
        ],
    }


# -- who can call tools -----------------------------------------------------------------------------


async def test_local_llm_refuses_tools_with_one_clear_message() -> None:
    llm = LocalLLM()
    assert llm.supports_tools is False
    assert AnthropicLLM().supports_tools is True and GroqLLM().supports_tools is True
    with pytest.raises(ConfigError) as caught:
        await reply(llm)
    message = str(caught.value)
    assert message.startswith("local/smollm2-135m cannot call tools; use ")
    assert AnthropicLLM().name in message and GroqLLM().name in message
    assert not caught.value.retryable
    await llm.aclose()


# -- ScriptedLLM ------------------------------------------------------------------------------------


async def test_scripted_llm_says_its_words_then_makes_its_calls() -> None:
    llm = ScriptedLLM(
        ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check."),
        "It has shipped.",
    )
    text, calls, chunks = await reply(llm)
    assert text == "Let me check."
    assert calls == [ToolCall("call_order_status", "order_status", {"order": 42}, '{"order": 42}')]
    assert [c.text for c in chunks[:3]] == ["Let", " me", " check."]
    assert chunks[3].tool_call == calls[0] and chunks[4].usage == LLMUsage(5, 4) and len(chunks) == 5
    assert llm.calls[0].tools == TOOLS
    text, calls, _ = await reply(llm, tools=())
    assert (text, calls) == ("It has shipped.", [])
    assert llm.calls[1].tools == ()


async def test_scripted_llm_parallel_calls_alone_and_failures() -> None:
    both = ScriptedReply(tool_calls=(call("a"), call("b", {"order": 7})))
    llm = ScriptedLLM(both)
    text, calls, chunks = await reply(llm)
    assert text == "" and [c.id for c in calls] == ["a", "b"]
    assert all(c.text == "" for c in chunks)
    llm.fail_after_words = 0  # no words: fails before the first call
    with pytest.raises(ProviderError):
        await reply(llm)
    assert llm.closed_early == 1
    refusing = ScriptedLLM("OK.", supports_tools=False)
    with pytest.raises(ConfigError, match="cannot call tools"):
        await reply(refusing)
    assert refusing.call_count == 0
    text, _, _ = await reply(refusing, tools=())
    assert text == "OK."
