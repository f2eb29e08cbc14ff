"""`AnthropicLLM`: Claude through the official `anthropic` SDK's streaming Messages API.

```python
llm = AnthropicLLM("claude-haiku-4-5")           # key from ANTHROPIC_API_KEY
async for chunk in llm.stream(history, instructions="Be brief."):
    print(chunk.text, end="")
```

Wire format (`POST /v1/messages` with `"stream": true`): server-sent events `message_start`
(input token usage), `content_block_start`, `ping`, `content_block_delta` (`text_delta`),
`content_block_stop`, `message_delta` (stop reason, cumulative output usage) and `message_stop`.

Tools go out as `tools: [{"name", "description", "input_schema"}]`. A call comes back as a
content block of its own: `content_block_start` with a `tool_use` block (`id`, `name`, empty
`input`), `content_block_delta`s of type `input_json_delta` whose `partial_json` pieces make up the
arguments' JSON, and `content_block_stop`, at which the call is complete and is yielded; several
calls are several blocks, after the text block if the model said something first. The reply ends
with `stop_reason: "tool_use"`. In the history, the calls are `tool_use` blocks after the text of
the assistant's message, and their results `tool_result` blocks (`tool_use_id`, `content`,
`is_error`) at the start of the next user message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentkit._aio import next_within
from agentkit.exceptions import ProviderError
from agentkit.providers._errors import provider_errors
from agentkit.providers._keys import import_sdk
from agentkit.providers.llm._base import (
    ChatMessage,
    LLMChunk,
    LLMUsage,
    Role,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from agentkit.providers.llm._cloud import CallParts, CloudChatLLM, paired_history

if TYPE_CHECKING:
    from anthropic import (
        AsyncAnthropic,  # noqa: F401  # named in the base class, as a string
        AsyncStream,
    )
    from anthropic.types import (
        MessageParam,
        RawMessageStreamEvent,
        TextBlockParam,
        ToolParam,
        ToolResultBlockParam,
        ToolUseBlockParam,
    )

__all__ = ["AnthropicLLM"]

logger = logging.getLogger(__name__)

CALL_STARTED = "(The call has started.)"
"""Stands in for the caller's first turn when the history starts with the agent (its greeting):
the Messages API wants the first message to be the user's."""

_READ_TO_END_S = 2.0
"""Longest wait for a streamed body's end after its `message_stop` (it follows at once)."""


class AnthropicLLM(CloudChatLLM["AsyncAnthropic"]):
    """Claude, streamed.

    The client is created on `warm_up()` (or the first `stream()`), so constructing this object
    needs no key; a missing key raises `ConfigError` there. Closing the generator returned by
    `stream()` closes the HTTP stream, which stops generation on Anthropic's side.

    `max_retries` is the SDK's own retry count for 408/409/429/5xx and connection errors. It
    defaults to 0: the SDK's backoff (and its obedience to `retry-after`) would leave a caller in
    silence for seconds, while the agent can do better (say so, or switch to another provider), and
    every failure surfaces at once as a `ProviderError` with `retryable` set.
    """

    vendor = "anthropic"
    default_model = "claude-haiku-4-5"

    async def stream(
        self, messages: Sequence[ChatMessage], *, instructions: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream Claude's reply to `messages` under `instructions` (sent as the system prompt),
        offering `tools`: each call it makes is yielded once its arguments are complete."""
        client = self._client.get()
        sdk = import_sdk("anthropic")
        with provider_errors("anthropic"):
            events = await client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=instructions or sdk.NOT_GIVEN,
                messages=to_anthropic_messages(messages, tools=bool(tools)),
                tools=[to_anthropic_tool(tool) for tool in tools] if tools else sdk.NOT_GIVEN,
                stream=True,
                # Through extra_body: some SDK versions no longer name it (newer models reject it).
                extra_body=None if self.temperature is None else {"temperature": self.temperature},
            )
        input_tokens = output_tokens = 0
        content = _Content()
        stopped = False
        try:
            while not stopped:
                try:
                    with provider_errors("anthropic"):
                        event = await next_within(
                            events, self.timeout_s, "anthropic stream event", provider="anthropic"
                        )
                except StopAsyncIteration:
                    break
                if event.type == "message_start":
                    usage = event.message.usage
                    input_tokens = (
                        usage.input_tokens
                        + (usage.cache_creation_input_tokens or 0)
                        + (usage.cache_read_input_tokens or 0)
                    )
                    output_tokens = usage.output_tokens
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
                    if event.delta.stop_reason not in (None, "end_turn", "stop_sequence", "tool_use"):
                        logger.debug("anthropic reply stopped early: %s", event.delta.stop_reason)
                elif event.type == "message_stop":
                    stopped = True
                elif (chunk := content.take(event)) is not None:
                    yield chunk
            if stopped:
                await _read_to_end(events, min(self.timeout_s, _READ_TO_END_S))
        finally:
            with contextlib.suppress(Exception):
                await events.close()
        if not stopped:
            raise ProviderError(
                "anthropic stream ended before message_stop", retryable=True, provider="anthropic"
            )
        yield LLMChunk(usage=LLMUsage(input_tokens=input_tokens, output_tokens=output_tokens))


async def _read_to_end(events: AsyncStream[RawMessageStreamEvent], timeout_s: float) -> None:
    """Read the body past `message_stop` to its end, so that httpx keeps the connection for the next
    request. Closed before its last bytes were read, a response takes its connection with it, and
    the next turn's request opened a new one: on the real API, a TCP and TLS handshake more before
    the first token. Anything after `message_stop` is ignored; a body that does not end within
    `timeout_s` is closed as before."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            async for _ in events:
                pass


class _Content:
    """The reply's content blocks as they stream: text deltas pass through, tool calls are gathered
    per block index and come out whole at their block's end."""

    def __init__(self) -> None:
        self._calls: dict[int, CallParts] = {}

    def take(self, event: RawMessageStreamEvent) -> LLMChunk | None:
        """The chunk a content block event makes, if any (other events make none)."""
        if event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self._calls[event.index] = CallParts(block.id, block.name)
        elif event.type == "content_block_delta":
            if event.delta.type == "text_delta" and event.delta.text:
                return LLMChunk(text=event.delta.text)
            if event.delta.type == "input_json_delta" and event.index in self._calls:
                self._calls[event.index].pieces.append(event.delta.partial_json)
        elif event.type == "content_block_stop":
            call = self._calls.pop(event.index, None)
            if call is not None:
                return LLMChunk(tool_call=call.complete())
        return None


def to_anthropic_tool(tool: ToolSpec) -> ToolParam:
    """A tool definition as the Messages API takes it."""
    return {"name": tool.name, "description": tool.description, "input_schema": dict(tool.parameters)}


@dataclass(slots=True)
class _Turn:
    """One message of the request: its role, its texts, and its tool blocks."""

    role: Role
    texts: list[str] = field(default_factory=list)
    blocks: list[ToolUseBlockParam | ToolResultBlockParam] = field(default_factory=list)
    """`tool_use` blocks (assistant) or `tool_result` blocks (user)."""


def to_anthropic_messages(messages: Sequence[ChatMessage], *, tools: bool = True) -> list[MessageParam]:
    """History as the Messages API wants it: alternating roles, starting with the user.

    Consecutive messages of one role are joined (texts with a newline), empty ones dropped, and a
    history that starts with the agent (or is empty) gets `CALL_STARTED` as the caller's first turn.

    Tool calls become `tool_use` blocks after the assistant's text, and their results (a `tool`
    message) `tool_result` blocks that open the next user message, before anything the caller
    said meanwhile; calls without results and results without calls are left out
    (`paired_history`). Without `tools` in the request the API refuses tool blocks, so only the
    words are sent.
    """
    turns: list[_Turn] = []
    for message in paired_history(messages) if tools else messages:
        role: Role = "user" if message.role == "tool" else message.role
        text = "" if message.role == "tool" else message.text.strip()
        blocks: list[ToolUseBlockParam | ToolResultBlockParam] = []
        if tools and message.role == "assistant":
            blocks.extend(_tool_use(call) for call in message.tool_calls)
        elif tools and message.role == "tool":
            blocks.extend(_tool_result(result) for result in message.tool_results)
        if not text and not blocks:
            continue
        if not turns or turns[-1].role != role:
            turns.append(_Turn(role))
        if text:
            turns[-1].texts.append(text)
        turns[-1].blocks.extend(blocks)
    if not turns or turns[0].role != "user":
        turns.insert(0, _Turn("user", [CALL_STARTED]))
    return [_to_message(turn) for turn in turns]


def _to_message(turn: _Turn) -> MessageParam:
    text = "\n".join(turn.texts)
    text_blocks: list[TextBlockParam] = [{"type": "text", "text": text}] if text else []
    if turn.role == "user":
        # A user message's tool results come first, before anything the caller said.
        return {"role": "user", "content": [*turn.blocks, *text_blocks] if turn.blocks else text}
    # An assistant's calls come after its words.
    return {"role": "assistant", "content": [*text_blocks, *turn.blocks] if turn.blocks else text}


def _tool_use(call: ToolCall) -> ToolUseBlockParam:
    arguments = dict(call.arguments) if call.arguments is not None else {}
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _tool_result(result: ToolResult) -> ToolResultBlockParam:
    block: ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": result.call_id,
        "is_error": result.is_error,
    }
    if result.content:  # optional; empty text is refused in places where text is required
        block["content"] = result.content
    return block
