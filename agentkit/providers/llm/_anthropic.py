"""`AnthropicLLM`: Claude through the official `anthropic` SDK's streaming Messages API.

```python
llm = AnthropicLLM("claude-haiku-4-5")           # key from ANTHROPIC_API_KEY
async for chunk in llm.stream(history, instructions="Be brief."):
    print(chunk.text, end="")
```

Wire format (`POST /v1/messages` with `"stream": true`): server-sent events `message_start`
(input token usage), `content_block_start`, `ping`, `content_block_delta` (`text_delta`),
`content_block_stop`, `message_delta` (stop reason, cumulative output usage) and `message_stop`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING

from agentkit._aio import next_within
from agentkit.exceptions import ProviderError
from agentkit.providers._errors import provider_errors
from agentkit.providers._keys import import_sdk
from agentkit.providers.llm._base import ChatMessage, LLMChunk, LLMUsage, Role
from agentkit.providers.llm._cloud import CloudChatLLM

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic  # noqa: F401  # named in the base class, as a string
    from anthropic.types import MessageParam

__all__ = ["AnthropicLLM"]

logger = logging.getLogger(__name__)

CALL_STARTED = "(The call has started.)"
"""Stands in for the caller's first turn when the history starts with the agent (its greeting):
the Messages API wants the first message to be the user's."""


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
        self, messages: Sequence[ChatMessage], *, instructions: str
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream Claude's reply to `messages` under `instructions` (sent as the system prompt)."""
        client = self._client.get()
        sdk = import_sdk("anthropic")
        with provider_errors("anthropic"):
            events = await client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                system=instructions or sdk.NOT_GIVEN,
                messages=to_anthropic_messages(messages),
                stream=True,
                # Through extra_body: some SDK versions no longer name it (newer models reject it).
                extra_body=None if self.temperature is None else {"temperature": self.temperature},
            )
        input_tokens = output_tokens = 0
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
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        yield LLMChunk(text=event.delta.text)
                elif event.type == "message_delta":
                    output_tokens = event.usage.output_tokens
                    if event.delta.stop_reason not in (None, "end_turn", "stop_sequence"):
                        logger.debug("anthropic reply stopped early: %s", event.delta.stop_reason)
                elif event.type == "message_stop":
                    stopped = True
        finally:
            with contextlib.suppress(Exception):
                await events.close()
        if not stopped:
            raise ProviderError(
                "anthropic stream ended before message_stop", retryable=True, provider="anthropic"
            )
        yield LLMChunk(usage=LLMUsage(input_tokens=input_tokens, output_tokens=output_tokens))


def to_anthropic_messages(messages: Sequence[ChatMessage]) -> list[MessageParam]:
    """History as the Messages API wants it: alternating roles, starting with the user.

    Consecutive messages of one role are joined with a newline, empty ones dropped, and a history
    that starts with the agent (or is empty) gets `CALL_STARTED` as the caller's first turn.
    """
    turns: list[tuple[Role, list[str]]] = []
    for message in messages:
        text = message.text.strip()
        if not text:
            continue
        if turns and turns[-1][0] == message.role:
            turns[-1][1].append(text)
        else:
            turns.append((message.role, [text]))
    if not turns or turns[0][0] != "user":
        turns.insert(0, ("user", [CALL_STARTED]))
    result: list[MessageParam] = []
    for role, parts in turns:
        if role == "user":
            result.append({"role": "user", "content": "\n".join(parts)})
        else:
            result.append({"role": "assistant", "content": "\n".join(parts)})
    return result
