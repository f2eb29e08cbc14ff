"""`GroqLLM`: chat models on Groq through the official `groq` SDK's streaming chat completions.

```python
llm = GroqLLM("llama-3.3-70b-versatile")         # key from GROQ_API_KEY
async for chunk in llm.stream(history, instructions="Be brief."):
    print(chunk.text, end="")
```

Wire format (`POST /openai/v1/chat/completions` with `"stream": true`, OpenAI-compatible):
server-sent `data: {chunk}` events whose `choices[0].delta.content` carry the text; the last chunk
has a `finish_reason` and the usage, in `x_groq.usage` (Groq's own field) or `usage` (when the
OpenAI-style `stream_options.include_usage` applies); then `data: [DONE]`.

Tools go out as `tools: [{"type": "function", "function": {"name", "description", "parameters"}}]`.
Calls come back in `delta.tool_calls`, each piece naming its call by `index`: the first piece of a
call carries its `id` and `function.name`, and `function.arguments` arrives as JSON text in one or
more pieces (Groq usually sends it whole). A call is yielded once it is complete: when a call of a
later index starts, or when the reply ends, with `finish_reason: "tool_calls"`. In the history, the
calls are the assistant message's `tool_calls` (`id`, `type: "function"`, `function: {name,
arguments}`, the arguments as a JSON string), each result a `role: "tool"` message naming its
`tool_call_id` (a failed tool's content starts with `Error: `: the format has no error flag).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING

from agentkit._aio import next_within
from agentkit.exceptions import ProviderError
from agentkit.providers._errors import provider_errors
from agentkit.providers._keys import import_sdk
from agentkit.providers.llm._base import ChatMessage, LLMChunk, LLMUsage, ToolCall, ToolSpec
from agentkit.providers.llm._cloud import CallParts, CloudChatLLM, paired_history

if TYPE_CHECKING:
    from groq import AsyncGroq  # noqa: F401  # named in the base class, as a string
    from groq.types.chat import (
        ChatCompletionChunk,
        ChatCompletionMessageParam,
        ChatCompletionMessageToolCallParam,
        ChatCompletionToolParam,
    )
    from groq.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
    from groq.types.completion_usage import CompletionUsage
    from groq.types.shared_params import FunctionDefinition

__all__ = ["GroqLLM"]

logger = logging.getLogger(__name__)


class GroqLLM(CloudChatLLM["AsyncGroq"]):
    """A Groq-hosted chat model, streamed.

    Like `AnthropicLLM`: the client opens on `warm_up()` or first use (a missing key raises
    `ConfigError` there), closing the generator closes the HTTP stream, and `max_retries` defaults
    to 0 so that every failure reaches the agent at once with `retryable` set.
    """

    vendor = "groq"
    default_model = "llama-3.3-70b-versatile"

    async def stream(
        self, messages: Sequence[ChatMessage], *, instructions: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the model's reply to `messages`, with `instructions` as the system message,
        offering `tools`: each call it makes is yielded once its arguments are complete."""
        client = self._client.get()
        sdk = import_sdk("groq")
        with provider_errors("groq"):
            chunks = await client.chat.completions.create(
                model=self.model,
                messages=to_groq_messages(messages, instructions),
                tools=[to_groq_tool(tool) for tool in tools] if tools else sdk.NOT_GIVEN,
                max_completion_tokens=self.max_tokens,
                temperature=sdk.NOT_GIVEN if self.temperature is None else self.temperature,
                stream=True,
            )
        usage: LLMUsage | None = None
        calls = _Calls()
        finished = False
        try:
            while True:
                try:
                    with provider_errors("groq"):
                        chunk = await next_within(chunks, self.timeout_s, "groq reply chunk", provider="groq")
                except StopAsyncIteration:
                    break
                usage = _usage(chunk) or usage
                for choice in chunk.choices[:1]:
                    if choice.delta.content:
                        yield LLMChunk(text=choice.delta.content)
                    for piece in choice.delta.tool_calls or ():
                        for call in calls.add(piece):
                            yield LLMChunk(tool_call=call)
                    if choice.finish_reason is not None:
                        finished = True
                        for call in calls.finish():
                            yield LLMChunk(tool_call=call)
                        if choice.finish_reason not in ("stop", "tool_calls"):
                            logger.debug("groq reply stopped early: %s", choice.finish_reason)
        finally:
            with contextlib.suppress(Exception):
                await chunks.close()
        if not finished:
            raise ProviderError("groq stream ended without a finish_reason", retryable=True, provider="groq")
        if usage is not None:
            yield LLMChunk(usage=usage)


def _usage(chunk: ChatCompletionChunk) -> LLMUsage | None:
    """Token counts from a chunk's `x_groq.usage` or `usage`, whichever is there."""
    reported: CompletionUsage | None = chunk.usage
    if reported is None and chunk.x_groq is not None:
        reported = chunk.x_groq.usage
    if reported is None:
        return None
    return LLMUsage(input_tokens=reported.prompt_tokens, output_tokens=reported.completion_tokens)


class _Calls:
    """The tool calls of one streamed reply, gathered from their pieces by `index`."""

    def __init__(self) -> None:
        self._open: dict[int, CallParts] = {}
        self._done: set[int] = set()

    def add(self, piece: ChoiceDeltaToolCall) -> list[ToolCall]:
        """Take one piece; the calls it shows complete (those of earlier indexes, when a new one starts)."""
        if piece.index in self._done:
            logger.debug("groq sent more of tool call %d after a later one had started", piece.index)
            return []
        complete = []
        if piece.index not in self._open:
            complete = self._close(lambda index: index < piece.index)
            self._open[piece.index] = CallParts(id=f"call_{piece.index}")
        call = self._open[piece.index]
        if piece.id:
            call.id = piece.id
        if piece.function is not None:
            if piece.function.name and not call.name:
                call.name = piece.function.name
            if piece.function.arguments:
                call.pieces.append(piece.function.arguments)
        return complete

    def finish(self) -> list[ToolCall]:
        """The reply ended: every call still open is complete."""
        return self._close(lambda index: True)

    def _close(self, which: Callable[[int], bool]) -> list[ToolCall]:
        indexes = sorted(index for index in self._open if which(index))
        self._done.update(indexes)
        return [self._open.pop(index).complete() for index in indexes]


def to_groq_tool(tool: ToolSpec) -> ChatCompletionToolParam:
    """A tool definition as the chat completions API takes it."""
    function: FunctionDefinition = {
        "name": tool.name,
        "description": tool.description,
        "parameters": dict(tool.parameters),
    }
    return {"type": "function", "function": function}


def to_groq_messages(messages: Sequence[ChatMessage], instructions: str) -> list[ChatCompletionMessageParam]:
    """The system message (if any instructions), then the history with empty messages dropped.

    An assistant message's tool calls go in its `tool_calls` (its `content` left out when it said
    nothing), each result in a `tool` message of its own right after it; calls without results and
    results without calls are left out (`paired_history`).
    """
    result: list[ChatCompletionMessageParam] = []
    if instructions:
        result.append({"role": "system", "content": instructions})
    for message in paired_history(messages):
        text = message.text.strip()
        if message.role == "tool":
            result.extend(
                {
                    "role": "tool",
                    "tool_call_id": r.call_id,
                    "content": f"Error: {r.content}" if r.is_error else r.content,
                }
                for r in message.tool_results
            )
        elif message.role == "assistant" and message.tool_calls:
            calls = [_tool_call(call) for call in message.tool_calls]
            if text:
                result.append({"role": "assistant", "content": text, "tool_calls": calls})
            else:
                result.append({"role": "assistant", "tool_calls": calls})
        elif not text:
            continue
        elif message.role == "user":
            result.append({"role": "user", "content": text})
        else:
            result.append({"role": "assistant", "content": text})
    return result


def _tool_call(call: ToolCall) -> ChatCompletionMessageToolCallParam:
    """A call as the assistant message lists it, its arguments as the model wrote them when they
    parsed (else `{}`: the API may refuse JSON that does not)."""
    if call.arguments is None:
        arguments = "{}"
    elif call.raw_arguments.strip():
        arguments = call.raw_arguments
    else:
        arguments = json.dumps(dict(call.arguments))
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}
