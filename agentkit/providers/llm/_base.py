"""The LLM Protocol: chat history and tool definitions in, a stream of text and tool calls out.

A turn with tools, as the history records it (provider-neutral; each adapter maps it to its wire
format: Anthropic `tool_use` / `tool_result` content blocks, OpenAI-style `tool_calls` and `tool`
messages for Groq):

```
ChatMessage("user", "Where is my order 42?")
ChatMessage("assistant", "Let me look.", tool_calls=(ToolCall("call_1", "order_status", {"order": 42}),))
ChatMessage("tool", "", tool_results=(ToolResult("call_1", "order_status", '"shipped"'),))
ChatMessage("assistant", "It has shipped.")
```
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["LLM", "ChatMessage", "LLMChunk", "LLMUsage", "Role", "ToolCall", "ToolResult", "ToolSpec"]

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the LLM may call."""

    name: str
    """What the LLM calls it (`[A-Za-z0-9_-]{1,64}`)."""
    description: str
    """What it does and when to use it, for the LLM."""
    parameters: Mapping[str, Any]
    """Its arguments as a JSON Schema object (`{"type": "object", "properties": ..., "required": ...}`)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The LLM asks for a tool to be run."""

    id: str
    """The provider's id for this call (Anthropic `toolu_...`, OpenAI-style `call_...`); the result
    names it."""
    name: str
    """The tool's name, as the LLM gave it (it may name a tool that does not exist)."""
    arguments: Mapping[str, Any] | None
    """The arguments, parsed; None when the LLM's JSON did not parse (see `raw_arguments`)."""
    raw_arguments: str = ""
    """The arguments as the LLM streamed them (JSON text)."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What running a tool gave, for the LLM to read."""

    call_id: str
    """The `ToolCall.id` it answers."""
    name: str
    """The tool's name."""
    content: str
    """The result as text (JSON for structured results), or the error message."""
    is_error: bool = False
    """The tool failed, timed out, was cancelled, or does not exist; `content` says which."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation, as the LLM sees it."""

    role: Role
    """`user` (what the caller said), `assistant` (what the agent said, and the tools it called) or
    `tool` (what the tools it called gave back)."""
    text: str
    """The words; for an interrupted reply, only the words the caller heard."""
    interrupted: bool = False
    """The caller spoke over this reply and `text` is the part that was played to them."""
    tool_calls: tuple[ToolCall, ...] = ()
    """On an `assistant` message: the tools it called after its words (several: called at once)."""
    tool_results: tuple[ToolResult, ...] = ()
    """On a `tool` message: one result per call of the `assistant` message before it."""


@dataclass(frozen=True, slots=True)
class LLMUsage:
    """Token counts of one LLM call, as the provider reports them."""

    input_tokens: int
    """Prompt tokens (instructions and history included)."""
    output_tokens: int
    """Generated tokens."""


@dataclass(frozen=True, slots=True)
class LLMChunk:
    """One piece of a streamed reply: some text, a complete tool call, and at the end the usage."""

    text: str = ""
    """The next text delta (may be empty)."""
    usage: LLMUsage | None = None
    """Set on the last chunk when the provider reports token counts."""
    tool_call: ToolCall | None = None
    """A tool call, once its arguments are complete (adapters gather the streamed deltas). A reply
    that calls tools ends after its calls; the agent runs them and calls the LLM again."""


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

    @property
    def supports_tools(self) -> bool:
        """Whether `stream` takes `tools` (False: it raises `ConfigError` when given some), so that
        an agent with tools can refuse this LLM at start-up rather than at its first reply."""
        ...

    async def warm_up(self) -> None:
        """Load models or open clients ahead of the first call; idempotent."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], *, instructions: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        """Reply to `messages` (oldest first) under `instructions`, offering `tools` (none: plain
        text). A provider that cannot call tools raises `ConfigError` when given some."""
        ...

    async def aclose(self) -> None:
        """Release clients, sessions and threads; safe to call twice; the provider may not be used after."""
        ...
