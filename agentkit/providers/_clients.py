"""How each cloud SDK's async client is built and owned: opened on first use, closed by `aclose()`.

Every client gets one `timeout_s` for connecting, writing and each read, so a server that stops
sending bytes (before its reply or in the middle of a stream) fails within `timeout_s`, and an
explicit `max_retries` (the providers default to 0; see `AnthropicLLM`).

An httpx client belongs to the event loop that first used it: a provider opens its client lazily on
that loop, and `aclose()` releases it (a later call opens a new one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from agentkit.providers._keys import import_sdk, resolve

if TYPE_CHECKING:
    from elevenlabs.client import AsyncElevenLabs

__all__ = ["LazyClient", "check_timing", "elevenlabs_client", "sdk_client"]

C = TypeVar("C")
Opener = Callable[[], tuple[C, Callable[[], Awaitable[None]]]]
"""Makes a client; returns it with the coroutine function that closes it."""


class LazyClient(Generic[C]):
    """An SDK client made on first `get()` (key and SDK checked then) and closed by `aclose()`."""

    def __init__(self, opener: Opener[C]) -> None:
        self._opener = opener
        self._client: C | None = None
        self._close: Callable[[], Awaitable[None]] | None = None

    def get(self) -> C:
        """The client, made now if needed; raises `ConfigError` for a missing key or SDK."""
        if self._client is None:
            self._client, self._close = self._opener()
        return self._client

    async def aclose(self) -> None:
        """Close the client's connections, if it was made."""
        close, self._client, self._close = self._close, None, None
        if close is not None:
            await close()


def check_timing(timeout_s: float, max_retries: int) -> None:
    """Reject a non-positive timeout or a negative retry count (a constructor's first check)."""
    if not timeout_s > 0:
        raise ValueError("timeout_s must be positive")
    if max_retries < 0:
        raise ValueError("max_retries must be 0 or more")


def sdk_client(
    vendor: Literal["anthropic", "groq"],
    *,
    api_key: str | None,
    base_url: str | None,
    timeout_s: float,
    max_retries: int,
    owner: str,
) -> LazyClient[Any]:
    """`AsyncAnthropic` or `AsyncGroq`: both SDKs are generated alike (same constructor, `close()`).

    The caller annotates the result, e.g. `LazyClient[AsyncAnthropic]`.
    """
    class_name = {"anthropic": "AsyncAnthropic", "groq": "AsyncGroq"}[vendor]

    def open_client() -> tuple[Any, Callable[[], Awaitable[None]]]:
        sdk = import_sdk(vendor)
        creds = resolve(vendor, api_key=api_key, base_url=base_url, owner=owner)
        extra: dict[str, Any] = {}
        if vendor == "groq":  # uploads audio: see `_whole_body`
            extra["http_client"] = sdk.DefaultAsyncHttpxClient(event_hooks={"request": [_whole_body]})
        client = getattr(sdk, class_name)(
            api_key=creds.api_key,
            base_url=creds.base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            **extra,
        )
        return client, client.close

    return LazyClient(open_client)


async def _whole_body(request: Any) -> None:
    """An httpx request hook: read the request's body into one piece before it is sent.

    httpx streams a multipart form (a transcription's WAV and its five fields) as about 25 pieces,
    and each piece is one socket write and one wait for the event loop: on a loop busy with a hundred
    calls' media, a transcription request took 27 loop turns to leave instead of 3. Read whole, the
    body goes out in one write (a turn's audio is already in memory: nothing is streamed from disk).
    """
    await request.aread()


def elevenlabs_client(
    *, api_key: str | None, base_url: str | None, timeout_s: float, owner: str
) -> LazyClient[AsyncElevenLabs]:
    """ElevenLabs' streaming endpoints never retry in the SDK, so there is no `max_retries` here.

    The SDK client has no close method: it is given an httpx client of ours, which `aclose()` closes.
    """

    def open_client() -> tuple[AsyncElevenLabs, Callable[[], Awaitable[None]]]:
        sdk = import_sdk("elevenlabs", "elevenlabs.client")
        creds = resolve("elevenlabs", api_key=api_key, base_url=base_url, owner=owner)
        import httpx  # a dependency of the elevenlabs SDK

        http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=True)
        client: AsyncElevenLabs = sdk.AsyncElevenLabs(
            api_key=creds.api_key, base_url=creds.base_url, timeout=timeout_s, httpx_client=http
        )
        return client, http.aclose

    return LazyClient(open_client)
