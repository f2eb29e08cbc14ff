"""Running the tools an LLM calls, safely under barge-in.

Each call runs in a task of the session's `ToolRunner`, not in the reply's own task, so what a
barge-in does to it is decided here, explicitly:

- a call the LLM had not finished asking for when the caller interrupted never runs (the reply's LLM
  stream is closed before the call is complete);
- a running call of a `cancellable` tool (the default) is cancelled; its result says so;
- a running call of a tool declared `cancellable=False` (a booking, a payment) finishes; its result
  lands in the history in the place the interrupted reply left for it.

Every call ends with exactly one `ToolResult` (an unknown tool, invalid arguments, an exception, a
timeout and a cancellation are error results the LLM reads), one `ToolCallFinished` event and one
stored record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from agentkit._tasks import TaskSet
from agentkit.agent._tools import Tool, ToolError
from agentkit.agent._tracing import ReplyTrace, tool_call
from agentkit.clock import Clock
from agentkit.providers.llm import ChatMessage, ToolCall, ToolResult

__all__ = ["ToolRun", "ToolRunner", "ToolStep", "reply_messages"]

logger = logging.getLogger(__name__)

CANCELLED = "cancelled: the caller interrupted before the tool finished"


@dataclass(eq=False)
class ToolRun:
    """One call of a tool, from the LLM's request to its result."""

    call: ToolCall
    tool: Tool | None
    turn_index: int
    started_at: float
    task: asyncio.Task[ToolResult] | None = None
    result: ToolResult | None = None
    duration_ms: float | None = None
    cancelled: bool = False
    on_result: list[Callable[[ToolRun], None]] = field(default_factory=list)
    """Called once the result is in (the session uses it to fill a place kept in the history)."""

    @property
    def cancellable(self) -> bool:
        return self.tool is None or self.tool.cancellable

    @property
    def done(self) -> bool:
        return self.result is not None


@dataclass(eq=False)
class ToolStep:
    """One LLM step of a reply that ended in tool calls: where its words are, and its calls."""

    first_sentence: int
    """Index of the reply's first sentence this step spoke (`SpokenReply.segments`)."""
    end_sentence: int | None = None
    """One past its last sentence, once its calls are done (None: the step is still going on, so
    its words run to the reply's end)."""
    runs: list[ToolRun] = field(default_factory=list)


class ToolRunner:
    """Starts tool calls for one session and owns their tasks."""

    def __init__(
        self,
        *,
        owner: str,
        clock: Clock,
        default_timeout_s: float,
        session: object,
        interpret: Callable[[object], Awaitable[str]],
        notify_started: Callable[[ToolRun], Awaitable[None]],
        notify_finished: Callable[[ToolRun], Awaitable[None]],
    ) -> None:
        self._tasks = TaskSet(owner)
        self._clock = clock
        self._default_timeout_s = default_timeout_s
        self._session = session
        self._interpret = interpret
        self._notify_started = notify_started
        self._notify_finished = notify_finished

    async def start(
        self, call: ToolCall, tools: Mapping[str, Tool], turn_index: int, trace: ReplyTrace | None = None
    ) -> ToolRun:
        """Begin running `call` (at once; the reply awaits `run.task` when it needs the result).
        With the reply's `trace`, the call is an `agentkit.tool` span under it."""
        run = ToolRun(call, tools.get(call.name), turn_index, self._clock.now())
        await self._notify_started(run)
        run.task = self._tasks.spawn(self._execute(run, trace), f"tool-{call.name}")
        return run

    async def _execute(self, run: ToolRun, trace: ReplyTrace | None) -> ToolResult:
        call, tool = run.call, run.tool
        wall_start = time.perf_counter()
        timeout_s = (tool.timeout_s if tool is not None else None) or self._default_timeout_s
        with tool_call(trace, call.name, call.id) as span:
            try:
                if tool is None:
                    raise ToolError(f"there is no tool named {call.name!r}")
                async with asyncio.timeout(timeout_s):
                    content = await self._interpret(await tool.run(call.arguments, self._session))
                result = ToolResult(call.id, call.name, content)
            except ToolError as exc:
                span.failed(exc)
                result = ToolResult(call.id, call.name, str(exc), is_error=True)
            except TimeoutError as exc:
                span.failed(exc)
                logger.warning("tool %s timed out after %.1f s", call.name, timeout_s)
                result = ToolResult(call.id, call.name, f"timed out after {timeout_s:g} s", is_error=True)
            except asyncio.CancelledError:
                run.cancelled = True
                await self._settle(run, ToolResult(call.id, call.name, CANCELLED, is_error=True), wall_start)
                raise
        await self._settle(run, result, wall_start)
        return result

    async def _settle(self, run: ToolRun, result: ToolResult, wall_start: float) -> None:
        run.result = result
        run.duration_ms = round((time.perf_counter() - wall_start) * 1000, 1)
        for callback in run.on_result:
            try:
                callback(run)
            except Exception:
                logger.exception("a tool result callback failed")
        await asyncio.shield(self._notify_finished(run))  # told in full even if cancelled meanwhile

    def interrupt(self, runs: list[ToolRun]) -> None:
        """Barge-in: cancel the running calls of cancellable tools; the others are left to finish."""
        for run in runs:
            if run.cancellable and not run.done and run.task is not None:
                run.task.cancel()

    async def aclose(self) -> None:
        await self._tasks.aclose(timeout_s=2.0)


def arguments_json(call: ToolCall) -> str:
    """A call's arguments as JSON text, for events and the store."""
    if call.arguments is None:
        return call.raw_arguments
    try:
        return json.dumps(call.arguments)
    except (TypeError, ValueError):
        return call.raw_arguments


RUNNING = "still running: its result will replace this message when the tool finishes"


def reply_messages(
    steps: list[ToolStep], sentences: list[str], heard: list[str], *, interrupted: bool
) -> tuple[list[tuple[int, ChatMessage]], str, bool]:
    """The history a reply with tool steps leaves: per step, the agent's words (as heard) with its
    tool calls, then the results; and the words after the last step.

    `sentences` are the reply's sentences, `heard` the part of each the caller heard. Returns the
    step messages (each with the position of its step in `steps`, for filling in a result later),
    the final words, and whether the cut falls in the final words.
    """
    messages: list[tuple[int, ChatMessage]] = []
    cut = next((i for i, (s, h) in enumerate(zip(sentences, heard, strict=True)) if s != h), len(sentences))
    for number, step in enumerate(steps):
        end = len(sentences) if step.end_sentence is None else step.end_sentence
        words = " ".join(h for h in heard[step.first_sentence : end] if h)
        cut_here = interrupted and step.first_sentence <= cut < end
        calls = tuple(run.call for run in step.runs)
        messages.append((number, ChatMessage("assistant", words, cut_here, tool_calls=calls)))
        messages.append((number, ChatMessage("tool", "", tool_results=tuple(_result(r) for r in step.runs))))
    last = steps[-1].end_sentence if steps else 0
    last_end = len(sentences) if last is None else last
    final = " ".join(h for h in heard[last_end:] if h)
    return messages, final, interrupted and cut >= last_end


def _result(run: ToolRun) -> ToolResult:
    if run.result is not None:
        return run.result
    if run.cancellable:  # being cancelled right now: its own result will say the same
        return ToolResult(run.call.id, run.call.name, CANCELLED, is_error=True)
    return ToolResult(run.call.id, run.call.name, RUNNING)
