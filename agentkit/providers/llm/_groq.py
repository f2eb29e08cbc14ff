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
from agentkit.providers.llm._base import ChatMessage, LLMChunk, LLMUsage
from agentkit.providers.llm._cloud import CloudChatLLM

if TYPE_CHECKING:
    from groq import AsyncGroq  # noqa: F401  # named in the base class, as a string
    from groq.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
    from groq.types.completion_usage import CompletionUsage

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
        self, messages: Sequence[ChatMessage], *, instructions: str
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the model's reply to `messages`, with `instructions` as the system message."""
        client = self._client.get()
        sdk = import_sdk("groq")
        with provider_errors("groq"):
            chunks = await client.chat.completions.create(
                model=self.model,
                messages=to_groq_messages(messages, instructions),
                max_completion_tokens=self.max_tokens,
                temperature=sdk.NOT_GIVEN if self.temperature is None else self.temperature,
                stream=True,
            )
        usage: LLMUsage | None = None
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
                    if choice.finish_reason is not None:
                        finished = True
                        if choice.finish_reason != "stop":
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


def to_groq_messages(messages: Sequence[ChatMessage], instructions: str) -> list[ChatCompletionMessageParam]:
    """The system message (if any instructions), then the history with empty messages dropped."""
    result: list[ChatCompletionMessageParam] = []
    if instructions:
        result.append({"role": "system", "content": instructions})
    for message in messages:
        text = message.text.strip()
        if not text:
            continue
        if message.role == "user":
            result.append({"role": "user", "content": text})
        else:
            result.append({"role": "assistant", "content": text})
    return result
