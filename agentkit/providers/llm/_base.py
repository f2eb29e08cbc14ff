"""The LLM Protocol: chat history in, a stream of text deltas out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["LLM", "ChatMessage", "LLMChunk", "LLMUsage", "Role"]

Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation, as the LLM sees it."""

    role: Role
    """`user` (what the caller said) or `assistant` (what the agent said)."""
    text: str
    """The words; for an interrupted reply, only the words the caller heard."""
    interrupted: bool = False
    """The caller spoke over this reply and `text` is the part that was played to them."""


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """Token counts of one LLM call, as the provider reports them."""

    input_tokens: int
    """Prompt tokens (instructions and history included)."""
    output_tokens: int
    """Generated tokens."""


@dataclass(frozen=True, slots=True)
class LLMChunk:
    """One piece of a streamed reply: some text, and at the end the call's usage."""

    text: str = ""
    """The next text delta (may be empty)."""
    usage: LLMUsage | None = None
    """Set on the last chunk when the provider reports token counts."""


class LLM(Protocol):
    """A chat model that streams its reply.

    `stream` returns an async generator: iterate it for the reply, `aclose()` it to stop early (the
    agent does so on barge-in, and the provider must then stop generating). Failures raise
    `agentkit.ProviderError` (`retryable` set when trying again may help); a provider that does not
    answer in time raises `ProviderTimeoutError`. `aclose()` on the provider itself releases it.
    """

    @property
    def name(self) -> str:
        """Short label for logs and metrics, e.g. `anthropic/claude-haiku-4-5`."""
        ...

    async def warm_up(self) -> None:
        """Load models or open clients ahead of the first call; idempotent."""
        ...

    def stream(self, messages: Sequence[ChatMessage], *, instructions: str) -> AsyncGenerator[LLMChunk, None]:
        """Reply to `messages` (oldest first, the last one the caller's) under `instructions`."""
        ...

    async def aclose(self) -> None:
        """Release clients, sessions and threads; safe to call twice; the provider may not be used after."""
        ...
