"""What the SDK-backed chat LLMs (`AnthropicLLM`, `GroqLLM`) share: settings, a lazily opened client,
name, warm-up and close, and the tool-call bookkeeping both wire formats need (`paired_history`,
`parse_arguments`). Each subclass adds only its wire mapping (`stream`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, Literal, TypeVar

from agentkit.providers._clients import LazyClient, check_timing, sdk_client
from agentkit.providers.llm._base import ChatMessage, ToolCall

__all__ = ["CallParts", "CloudChatLLM", "paired_history", "parse_arguments"]

C = TypeVar("C")


class CloudChatLLM(Generic[C]):
    """A chat model behind a vendor SDK client of type `C`.

    The client is created on `warm_up()` (or the first call), so constructing the object needs no
    key; a missing key raises `ConfigError` there. `max_retries` is the SDK's own retry count; it
    defaults to 0: SDK backoff (and obedience to `retry-after`) would leave a caller in silence for
    seconds, while the agent can do better, and every failure surfaces at once as a `ProviderError`
    with `retryable` set.
    """

    vendor: ClassVar[Literal["anthropic", "groq"]]
    default_model: ClassVar[str]
    supports_tools = True
    """Both APIs take tool definitions and stream tool calls."""

    def __init__(
        self,
        model: str | None = None,
        *,
        max_tokens: int = 1024,
        temperature: float | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 0,
    ) -> None:
        check_timing(timeout_s, max_retries)
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.model = model or self.default_model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        client: LazyClient[Any] = sdk_client(
            self.vendor,
            api_key=api_key,
            base_url=base_url,
            timeout_s=timeout_s,
            max_retries=max_retries,
            owner=type(self).__name__,
        )
        self._client: LazyClient[C] = client

    @property
    def name(self) -> str:
        return f"{self.vendor}/{self.model}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"

    async def warm_up(self) -> None:
        """Resolve the key and create the SDK client; idempotent."""
        self._client.get()

    async def aclose(self) -> None:
        """Close the SDK client and its connections; idempotent (a later call opens a new client)."""
        await self._client.aclose()


def paired_history(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The history with every tool call answered right after it, as both APIs require.

    An `assistant` message keeps the tool calls that a `tool` message answers before the next
    `assistant` message; their results follow it at once, in one `tool` message in the calls'
    order, and the caller's words said while the tools ran come after them. Calls left unanswered
    (the reply was cut short before its results were recorded) and results that answer no call
    before them are left out: both APIs refuse a history with either.
    """
    result: list[ChatMessage] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        i += 1
        if message.role == "tool":
            continue  # answers no call of an assistant message before it
        if message.role == "user" or not message.tool_calls:
            result.append(message)
            continue
        end = i
        while end < len(messages) and messages[end].role != "assistant":
            end += 1
        window = messages[i:end]
        answers = {r.call_id: r for m in window if m.role == "tool" for r in m.tool_results}
        calls = tuple(call for call in message.tool_calls if call.id in answers)
        result.append(replace(message, tool_calls=calls))
        if calls:
            result.append(ChatMessage("tool", "", tool_results=tuple(answers[call.id] for call in calls)))
        result.extend(m for m in window if m.role == "user")
        i = end
    return result


def parse_arguments(raw: str) -> Mapping[str, Any] | None:
    """A tool call's streamed JSON arguments, parsed: an object, `{}` for none at all, else None."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(slots=True)
class CallParts:
    """A tool call being streamed: its id and name as they arrive, and its JSON argument pieces."""

    id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)

    def complete(self) -> ToolCall:
        """The call, with its arguments parsed (None when their JSON does not parse)."""
        raw = "".join(self.pieces)
        return ToolCall(self.id, self.name, parse_arguments(raw), raw)
