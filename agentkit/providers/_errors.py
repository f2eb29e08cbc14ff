"""Cloud SDK errors → agentkit's typed errors.

The three SDKs raise their own exception trees (Anthropic's on httpx2, Groq's and ElevenLabs' on
httpx), and a connection that breaks in the middle of a streamed body surfaces as a bare transport
error from the HTTP library. `provider_errors()` turns all of them into:

| what happened | raised | `retryable` |
|---|---|---|
| HTTP 408, 409, 429, 5xx (529 overloaded included) | `ProviderError` | yes |
| other HTTP 4xx (400 bad request, 401/403 key, 404 model, 422) | `ProviderError` | no |
| connection refused, reset or cut mid-stream; error event mid-stream | `ProviderError` | yes |
| no byte within `timeout_s` (before the reply or in the middle of it) | `ProviderTimeoutError` | yes |

The SDKs' own read timeouts catch a silent socket; `agentkit._aio.next_within` bounds each wait for
the next chunk of a stream however the SDK waits (retries, connection pool, a peer that trickles
keep-alive bytes but no content) and raises `ProviderTimeoutError` itself.

Errors carry `provider=` and, for HTTP errors, `status=` as context; never the response body (it can
quote the request), the prompt or the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agentkit.exceptions import AgentkitError, ProviderError, ProviderTimeoutError

__all__ = ["provider_errors", "to_provider_error"]

_SDK_ROOTS = frozenset({"anthropic", "groq", "elevenlabs", "httpx", "httpx2", "httpcore", "httpcore2"})
_RETRYABLE_4XX = frozenset({408, 409, 429})
# Body `error.type` values of errors sent as an SSE `error` event after a 200 (Anthropic).
_RETRYABLE_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _from_sdk(exc: BaseException) -> bool:
    return any(cls.__module__.split(".")[0] in _SDK_ROOTS for cls in type(exc).__mro__)


def _body_error_type(exc: BaseException) -> str | None:
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


def to_provider_error(exc: BaseException, provider: str) -> ProviderError | None:
    """The agentkit error for an SDK or HTTP-library exception, or `None` if `exc` is not one."""
    timed_out = isinstance(exc, TimeoutError)  # a builtin one, as an asyncio timeout raises
    if isinstance(exc, AgentkitError) or not (timed_out or _from_sdk(exc)):
        return None
    names = _class_names(exc)
    if timed_out or names & {"APITimeoutError", "TimeoutException"}:
        return ProviderTimeoutError(f"{provider} did not answer in time", provider=provider)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        hint = " (check the API key)" if status in (401, 403) else ""
        retryable = status >= 500 or status in _RETRYABLE_4XX
        return ProviderError(
            f"{provider} answered HTTP {status}{hint}", retryable=retryable, provider=provider, status=status
        )
    if names & {"APIConnectionError", "TransportError"}:
        message, retryable = f"{provider} connection failed ({type(exc).__name__})", True
    elif "APIResponseValidationError" in names:
        message, retryable = f"{provider} sent a reply the SDK could not read", False
    elif names & {"APIError", "ApiError"}:  # an error event inside a 200 stream, or no status at all
        kind = _body_error_type(exc)
        message = f"{provider} reported an error mid-stream ({kind or 'unknown'})"
        retryable = kind is None or kind in _RETRYABLE_TYPES
    else:
        return None
    return ProviderError(message, retryable=retryable, provider=provider)


@contextmanager
def provider_errors(provider: str) -> Iterator[None]:
    """Re-raise SDK, HTTP-library and timeout errors inside the block as `ProviderError`s."""
    try:
        yield
    except Exception as exc:
        mapped = to_provider_error(exc, provider)
        if mapped is None:
            raise
        raise mapped from exc
