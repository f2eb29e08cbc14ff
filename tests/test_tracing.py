"""OpenTelemetry spans per turn and per provider call, recorded by the SDK in memory, through real
sessions (real Silero turn-taking on recorded speech, scripted STT/LLM, tone TTS): the span tree of
a turn and of a tool loop, a barge-in, failing providers, no words in any attribute; and, in a
fresh interpreter with no SDK, the same turn on the API's no-op tracer.

The API takes one global `TracerProvider` per process: this module installs an SDK one once (or
adds its exporter to one already installed) and clears the exporter before each test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_agent import Helper, feed, start, utterance

from agentkit import tool
from agentkit.agent._tracing import provider_call, tool_call
from agentkit.exceptions import ProviderError
from agentkit.store import MemoryStore
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

pytestmark = pytest.mark.usefixtures("models_dir")

ASKED = "What time is it?"
ANSWER = "It is three o'clock. Anything else?"
LATENCIES = ("end_of_turn_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "voice_to_voice_ms")


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process: it stays for later tests
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # later tests' spans are not kept


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan, name: str) -> list[ReadableSpan]:
    """`parent`'s direct children called `name`, checked to be in its trace."""
    found = []
    for span in named(spans, name):
        assert span.parent is not None and span.context is not None and parent.context is not None
        if span.parent.span_id == parent.context.span_id:
            assert span.context.trace_id == parent.context.trace_id
            found.append(span)
    return found


def attribute_texts(spans: Sequence[ReadableSpan]) -> list[str]:
    return [str(value) for span in spans for value in (span.attributes or {}).values()]


async def test_a_turn_is_one_span_with_its_provider_calls_as_children(spans: InMemorySpanExporter) -> None:
    store = MemoryStore()
    agent = Helper(stt=ScriptedSTT(ASKED), llm=ScriptedLLM(ANSWER), tts=ToneTTS(ms_per_char=10), store=store)
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        metrics = await transport.wait_for("metrics", timeout_s=10)
        session_id, conversation_id = handler.session.session_id, handler.session.conversation_id
    finally:
        await session.close()
    finished = spans.get_finished_spans()
    [turn] = named(finished, "agentkit.turn")
    attributes = dict(turn.attributes or {})
    assert attributes["agentkit.session.id"] == session_id
    assert attributes["agentkit.conversation.id"] == conversation_id
    assert attributes["agentkit.turn.index"] == 0
    assert attributes["agentkit.channel"] == "websocket"
    assert attributes["agentkit.agent.name"] == "Helper"
    assert attributes["agentkit.interrupted"] is False
    figures = metrics.event.metrics  # type: ignore[union-attr]
    for latency in LATENCIES:
        assert attributes[f"agentkit.turn.{latency}"] == figures[latency], latency
    assert attributes["agentkit.turn.output_tokens"] == figures["output_tokens"]
    assert turn.status.status_code is StatusCode.UNSET

    [stt] = children(finished, turn, "agentkit.stt")
    [llm] = children(finished, turn, "agentkit.llm")
    tts = children(finished, turn, "agentkit.tts")
    assert len(tts) == 2  # one per sentence
    assert (stt.attributes or {})["agentkit.provider"] == "scripted-stt"
    llm_attributes = dict(llm.attributes or {})
    assert llm_attributes["agentkit.provider"] == "scripted-llm"
    assert llm_attributes["gen_ai.system"] == "scripted-llm"
    assert llm_attributes["gen_ai.operation.name"] == "chat"
    assert float(llm_attributes["agentkit.time_to_first_output_ms"]) >= 0  # type: ignore[arg-type]
    assert llm_attributes["gen_ai.usage.output_tokens"] == figures["output_tokens"]
    for piece in tts:
        assert (piece.attributes or {})["agentkit.provider"] == "tone-tts"
        assert float((piece.attributes or {})["agentkit.time_to_first_output_ms"]) >= 0  # type: ignore[arg-type]
    for span in (stt, llm, *tts):
        assert span.status.status_code is StatusCode.UNSET and "agentkit.interrupted" not in (
            span.attributes or {}
        )
    assert turn.start_time is not None and turn.end_time is not None and stt.start_time is not None
    assert turn.start_time <= stt.start_time and all(s.end_time <= turn.end_time for s in tts)  # type: ignore[operator]

    texts = attribute_texts(finished)
    for words in (ASKED, ANSWER, "three o'clock", "time is it"):
        assert not [t for t in texts if words.lower() in t.lower()], words


async def test_a_reply_to_no_turn_is_a_reply_span(spans: InMemorySpanExporter) -> None:
    session, _, handler = await start(
        Helper(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(ms_per_char=5))
    )
    try:
        await asyncio.wait_for(handler.session.say("Hello there. Welcome."), 10)
    finally:
        await session.close()
    finished = spans.get_finished_spans()
    assert not named(finished, "agentkit.turn") and not named(finished, "agentkit.llm")  # fixed words
    [reply] = named(finished, "agentkit.reply")
    assert (reply.attributes or {})["agentkit.reply.kind"] == "say"
    assert (reply.attributes or {})["agentkit.interrupted"] is False
    assert len(children(finished, reply, "agentkit.tts")) == 2


class Shop(Helper):
    tool_filler = None

    @tool
    async def order_status(self, order: int) -> str:
        """Where an order is.

        Args:
            order: The order number.
        """
        return f"order {order} has shipped"


async def test_a_tool_loop_has_an_llm_span_per_request_and_a_tool_span(spans: InMemorySpanExporter) -> None:
    llm = ScriptedLLM(
        ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check."), "It has shipped."
    )
    session, transport, _ = await start(Shop(stt=ScriptedSTT("Where is order 42?"), llm=llm, tts=ToneTTS()))
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
    finally:
        await session.close()
    finished = spans.get_finished_spans()
    [turn] = named(finished, "agentkit.turn")
    assert len(children(finished, turn, "agentkit.llm")) == 2
    [called] = children(finished, turn, "agentkit.tool")
    assert dict(called.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "order_status",
        "gen_ai.tool.call.id": "call_order_status",
    }
    assert called.status.status_code is StatusCode.UNSET
    texts = attribute_texts(finished)
    for words in ("Where is order", '{"order"', "has shipped"):  # the caller's, the arguments, the result
        assert not [t for t in texts if words in t], words


async def test_a_barge_in_ends_the_turn_span_interrupted_and_not_failed(spans: InMemorySpanExporter) -> None:
    story = " ".join(f"Sentence number {n} is here to be spoken slowly." for n in range(1, 9))
    tts = ToneTTS(ms_per_char=40)
    agent = Helper(stt=ScriptedSTT("Tell me a story.", "Stop."), llm=ScriptedLLM(story, "Sure."), tts=tts)
    session, transport, _ = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("response_starting", timeout_s=10)
        while not transport.audio:
            await transport.changed()
        await feed(session, utterance(lead_s=0.5), realtime=True)  # the caller speaks over the story
        await transport.wait_for("interrupted", timeout_s=5)
        await transport.wait_for("metrics", timeout_s=10, count=2)
    finally:
        await session.close()
    finished = spans.get_finished_spans()
    first, second = named(finished, "agentkit.turn")  # in the order they ended
    assert [(s.attributes or {})["agentkit.turn.index"] for s in (first, second)] == [0, 1]
    assert (first.attributes or {})["agentkit.interrupted"] is True
    assert (second.attributes or {})["agentkit.interrupted"] is False
    calls = [s for s in finished if s.name in ("agentkit.stt", "agentkit.llm", "agentkit.tts")]
    assert all(s.status.status_code is not StatusCode.ERROR for s in (first, second, *calls))
    cut = [
        s
        for s in children(finished, first, "agentkit.tts")
        if (s.attributes or {}).get("agentkit.interrupted")
    ]
    assert len(cut) == 1  # the sentence playing when the caller spoke was stopped
    assert not [t for t in attribute_texts(finished) if "Sentence number" in t]


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
async def test_a_failing_provider_call_is_an_error_span(spans: InMemorySpanExporter, stage: str) -> None:
    stt, llm, tts = ScriptedSTT(ASKED), ScriptedLLM(ANSWER), ToneTTS(ms_per_char=10)
    error = ProviderError("the service is down", retryable=False, provider=f"scripted-{stage}", status=503)
    if stage == "stt":
        stt.fail_next = error
    elif stage == "llm":
        llm.fail_next = error
    else:
        tts.fail_next = error
    session, transport, _ = await start(Helper(stt=stt, llm=llm, tts=tts))
    try:
        await feed(session, utterance())
        await transport.wait_for("response_done", timeout_s=10)  # the apology was said
    finally:
        await session.close()
    finished = spans.get_finished_spans()
    [turn] = named(finished, "agentkit.turn")
    failed = [s for s in finished if s.status.status_code is StatusCode.ERROR]
    assert [s.name for s in failed] == [f"agentkit.{stage}"]
    [span] = failed
    assert (
        span.parent is not None and turn.context is not None and span.parent.span_id == turn.context.span_id
    )
    assert span.status.description == "ProviderError"
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "ProviderError"
    assert attributes["agentkit.error.code"] == "provider_error"
    assert attributes["http.response.status_code"] == 503
    assert not [t for t in attribute_texts(finished) if "down" in t]  # no exception messages
    assert not span.events  # nor a recorded exception (its message and traceback)


def test_calls_of_an_untraced_reply_are_inert() -> None:
    """A reply whose span does not record has no `ReplyTrace`: its calls share one inert `Call`."""
    with provider_call(None, "llm") as call:
        call.first_output()
        call.failed(RuntimeError("nothing is recorded"))
    assert provider_call(None, "tts") is call and tool_call(None, "order_status", "call_1") is call
    with pytest.raises(KeyError), provider_call(None, "stt"):  # an exception still goes through
        raise KeyError("x")


_NO_SDK = """
import asyncio, sys
from opentelemetry import trace
from test_agent import Helper, feed, start, utterance
from agentkit.agent._session import AgentSession
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

traces = []
start_reply = AgentSession._start

def recording_start(self, reply, coro, name):
    start_reply(self, reply, coro, name)
    traces.append(reply.trace)

AgentSession._start = recording_start

async def main():
    agent = Helper(stt=ScriptedSTT("What time?"), llm=ScriptedLLM("Three."), tts=ToneTTS(ms_per_char=10))
    session, transport, _ = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
    finally:
        await session.close()

asyncio.run(main())
assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
assert traces == [None], traces
assert "opentelemetry.sdk" not in sys.modules
print("ok")
"""


def test_without_an_sdk_a_turn_runs_on_the_no_op_tracer() -> None:
    """In a fresh interpreter (this one has an SDK provider installed): no SDK, no `ReplyTrace`."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_NO_SDK)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "ok"
