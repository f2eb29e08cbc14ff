"""Optional OpenTelemetry spans: one per reply, with a child per provider call and per tool call.

```
agentkit.turn              a caller's turn: from its end to the reply heard in full or interrupted
├── agentkit.stt           its transcription
├── agentkit.llm           each LLM request (one per step of a tool loop)
├── agentkit.tool          each tool call
└── agentkit.tts           each synthesised piece of the reply
```

A reply that answers no caller turn (the greeting, `session.say()`, `generate_reply()`) is an
`agentkit.reply` span instead, with the same children.

Only `opentelemetry-api` is used, and nothing is configured here: until the application installs
an SDK `TracerProvider` (`opentelemetry-instrument agentkit run ...`, or `trace.set_tracer_provider`
in the agent's module; docs/agents.md, "Tracing"), the API's tracer is a no-op whose spans do not
record. A reply whose span does not record gets no `ReplyTrace` at all (`ReplyTrace.start` returns
None), so its provider and tool calls share one inert `Call`: no spans, no attributes, nothing per
audio frame.

Attributes (a call's provider is read as the call ends, so a failed or cut-off one is named too):

- reply spans: `agentkit.session.id`, `agentkit.conversation.id` (with a store),
  `agentkit.channel`, `agentkit.agent.name`, `agentkit.turn.index` (turns) or `agentkit.reply.kind`
  (`greeting`, `say`, `generate`); at the end `agentkit.interrupted` and, for a turn that was
  transcribed, its `TurnMetrics` latencies as `agentkit.turn.end_of_turn_ms`, `.stt_ms`,
  `.llm_ttft_ms`, `.tts_ttfa_ms`, `.voice_to_voice_ms` and token counts `.input_tokens`,
  `.output_tokens`;
- provider spans (kind CLIENT): `agentkit.provider` (its name, e.g. `anthropic/claude-haiku-4-5`),
  `gen_ai.system` (the part before the `/`), `gen_ai.request.model` (the part after it, for STT and
  LLM), `gen_ai.operation.name` `chat` (LLM), `agentkit.time_to_first_output_ms` (LLM: first text,
  TTS: first audio), `gen_ai.usage.input_tokens` / `output_tokens` (LLM, when reported);
- tool spans: `gen_ai.operation.name` `execute_tool`, `gen_ai.tool.name`, `gen_ai.tool.call.id`.

A failure sets status ERROR with `error.type` (the exception's class) and, for a `ProviderError`,
`agentkit.error.code` and `http.response.status_code` when known. A cancelled call (barge-in, a
closed session) is not an error: it ends with `agentkit.interrupted` true. Spans carry ids, names
and figures only: never transcripts, reply text, tool arguments, caller ids or exception messages.

The parent is passed explicitly (`context=`), not through the current context: a reply's calls run
in tasks and async generators the reply starts, where a context token set in one place may be
reset in another.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
from collections.abc import Mapping
from types import TracebackType
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentkit.clock import Clock
from agentkit.exceptions import ProviderError
from agentkit.providers.llm import LLMUsage
from agentkit.store import TurnMetrics

__all__ = ["Call", "ReplyTrace", "provider_call", "tool_call"]

Stage = Literal["stt", "llm", "tts"]

_TURN_FIGURES = (
    "end_of_turn_ms",
    "stt_ms",
    "llm_ttft_ms",
    "tts_ttfa_ms",
    "voice_to_voice_ms",
    "input_tokens",
    "output_tokens",
)
"""`TurnMetrics` fields set on a turn's span as `agentkit.turn.<field>` (latencies in ms)."""


@functools.cache
def _tracer() -> trace.Tracer:
    """agentkit's tracer: the global provider's, or a proxy that follows one installed later."""
    try:
        version: str | None = importlib.metadata.version("agentkit")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        version = None
    return trace.get_tracer("agentkit", version)


class Call:
    """The span of one provider or tool call, as a context manager: `first_output()` when its
    first text or audio comes, `failed(exc)` for a failure it turns into a result (a tool's). An
    exception leaving the block is recorded (a cancellation as `agentkit.interrupted`)."""

    __slots__ = ("_clock", "_first", "_providers", "_span", "_stage", "_started_at")

    def __init__(
        self, span: Span | None, clock: Clock | None, stage: Stage | None, providers: Mapping[str, str]
    ) -> None:
        self._span = span
        self._clock = clock
        self._stage = stage
        self._providers = providers
        self._started_at = clock.now() if clock is not None else 0.0
        self._first = span is None  # an inert call has nothing to note

    def first_output(self) -> None:
        """The call's first text or audio is here (later calls do nothing: cheap per frame)."""
        if self._first:
            return
        self._first = True
        if self._span is not None and self._clock is not None:
            elapsed_ms = round((self._clock.now() - self._started_at) * 1000, 1)
            self._span.set_attribute("agentkit.time_to_first_output_ms", elapsed_ms)

    def usage(self, usage: LLMUsage) -> None:
        """Token counts the LLM reported for this request."""
        if self._span is not None:
            self._span.set_attributes(
                {
                    "gen_ai.usage.input_tokens": usage.input_tokens,
                    "gen_ai.usage.output_tokens": usage.output_tokens,
                }
            )

    def failed(self, exc: BaseException) -> None:
        """Status ERROR with the exception's class (and a provider's error code), not its message."""
        if self._span is None:
            return
        attributes: dict[str, AttributeValue] = {"error.type": type(exc).__qualname__}
        if isinstance(exc, ProviderError):
            attributes["agentkit.error.code"] = exc.code
            status = exc.context.get("status")
            if isinstance(status, int):
                attributes["http.response.status_code"] = status
        self._span.set_attributes(attributes)
        self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

    def __enter__(self) -> Call:
        return self

    async def __aenter__(self) -> Call:  # async too: it can share an `async with` with its stream
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        if span is None:
            return
        if self._stage is not None:
            span.set_attributes(_provider_attributes(self._stage, self._providers.get(self._stage)))
        if isinstance(exc, asyncio.CancelledError):
            span.set_attribute("agentkit.interrupted", True)
        elif exc is not None:
            self.failed(exc)
        span.end()


_INERT = Call(None, None, None, {})
"""The call of a reply that is not traced: shared, and never changed (every method checks `_span`)."""


def _provider_attributes(stage: Stage, provider: str | None) -> dict[str, AttributeValue]:
    if provider is None:  # a stage the agent overrode without calling a provider
        return {}
    system, _, model = provider.partition("/")
    attributes: dict[str, AttributeValue] = {"agentkit.provider": provider, "gen_ai.system": system}
    if model and stage != "tts":  # a TTS name ends in a voice, not a model
        attributes["gen_ai.request.model"] = model
    if stage == "llm":
        attributes["gen_ai.operation.name"] = "chat"
    return attributes


class ReplyTrace:
    """The span of one reply, parent of its calls' spans."""

    __slots__ = ("_clock", "_context", "_providers", "_span")

    def __init__(self, span: Span, clock: Clock, providers: Mapping[str, str]) -> None:
        self._span: Span | None = span
        self._context: Context = trace.set_span_in_context(span)
        self._clock = clock
        self._providers = providers

    @classmethod
    def start(
        cls,
        *,
        turn_index: int,
        kind: str,
        session_id: str,
        conversation_id: str | None,
        channel: str,
        agent: str,
        clock: Clock,
        providers: Mapping[str, str],
    ) -> ReplyTrace | None:
        """Start the span of a reply: a caller's turn (`turn_index` >= 0) or another reply of
        `kind`. `providers` is the reply's stage → provider record (`ReplyTimings.providers`),
        read as each call ends. None when the span does not record (no SDK, or not sampled)."""
        attributes: dict[str, AttributeValue] = {
            "agentkit.session.id": session_id,
            "agentkit.channel": channel,
            "agentkit.agent.name": agent,
        }
        if conversation_id is not None:
            attributes["agentkit.conversation.id"] = conversation_id
        if turn_index >= 0:
            attributes["agentkit.turn.index"] = turn_index
        else:
            attributes["agentkit.reply.kind"] = kind
        name = "agentkit.turn" if turn_index >= 0 else "agentkit.reply"
        span = _tracer().start_span(name, attributes=attributes)
        if not span.is_recording():
            span.end()
            return None
        return cls(span, clock, providers)

    def call(self, stage: Stage) -> Call:
        """A child span for one provider call of `stage`."""
        span = _tracer().start_span(f"agentkit.{stage}", context=self._context, kind=SpanKind.CLIENT)
        return Call(span, self._clock, stage, self._providers)

    def tool(self, name: str, call_id: str) -> Call:
        """A child span for one tool call."""
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
        }
        span = _tracer().start_span("agentkit.tool", context=self._context, attributes=attributes)
        return Call(span, self._clock, None, self._providers)

    def end(self, *, interrupted: bool, metrics: TurnMetrics | None) -> None:
        """End the reply's span (once; later calls do nothing)."""
        span, self._span = self._span, None
        if span is None:
            return
        attributes: dict[str, AttributeValue] = {"agentkit.interrupted": interrupted}
        if metrics is not None:
            for figure in _TURN_FIGURES:
                value = getattr(metrics, figure)
                if value is not None:
                    attributes[f"agentkit.turn.{figure}"] = value
        span.set_attributes(attributes)
        span.end()


def provider_call(reply: ReplyTrace | None, stage: Stage) -> Call:
    """The span of one call of `stage` for `reply` (an inert one when the reply is not traced)."""
    return _INERT if reply is None else reply.call(stage)


def tool_call(reply: ReplyTrace | None, name: str, call_id: str) -> Call:
    """The span of one tool call made by `reply` (an inert one when the reply is not traced)."""
    return _INERT if reply is None else reply.tool(name, call_id)
