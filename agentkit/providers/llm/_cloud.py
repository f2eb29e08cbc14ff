"""What the SDK-backed chat LLMs (`AnthropicLLM`, `GroqLLM`) share: settings, a lazily opened client,
name, warm-up and close. Each subclass adds only its wire mapping (`stream`)."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar

from agentkit.providers._clients import LazyClient, check_timing, sdk_client

__all__ = ["CloudChatLLM"]

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
