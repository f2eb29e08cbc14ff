"""Every error agentkit raises, in one documented tree.

```
AgentkitError                 base; carries `retryable` and keyword context
├── ConfigError               bad or missing configuration (never retryable)
│   └── ModelNotFoundError    a model file is missing; the message says how to fix it
├── AudioFormatError          audio that cannot be used (wrong rate, odd-length PCM, bad codec data)
├── ProtocolError             a transport message that breaks its protocol
│   └── MessageTooLargeError  a message over the configured size limit
├── CallerTokenError          a caller token that is malformed, expired or not signed for this server
├── CapacityError             the stream is at its `concurrency_limit` (retryable)
│   ├── AddressLimitError     one client address holds as many sessions or offers as it may
│   └── BusyError             the process is overloaded (or shutting down): no new sessions now
├── TimeLimitError            a session ran past its `time_limit`
├── TransportClosedError      the caller's connection is gone (sending to it failed)
└── ProviderError             a VAD/STT/LLM/TTS provider failed
    └── ProviderTimeoutError  ... by not answering in time (retryable)
```

Errors carry context as keyword arguments (`err.context`); never put audio, transcripts, phone
numbers or keys in them: they end up in logs and in client-facing `error` events.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AddressLimitError",
    "AgentkitError",
    "AudioFormatError",
    "BusyError",
    "CallerTokenError",
    "CapacityError",
    "ConfigError",
    "MessageTooLargeError",
    "ModelNotFoundError",
    "ProtocolError",
    "ProviderError",
    "ProviderTimeoutError",
    "TimeLimitError",
    "TransportClosedError",
]


class AgentkitError(Exception):
    """Base of every agentkit error.

    `code` is a short stable identifier used in client-facing `error` events; `retryable` says whether
    trying the same thing again later may succeed.
    """

    code: str = "error"
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.context: dict[str, Any] = context


class ConfigError(AgentkitError):
    code = "config_error"


class ModelNotFoundError(ConfigError):
    code = "model_not_found"


class AudioFormatError(AgentkitError):
    code = "bad_audio"


class ProtocolError(AgentkitError):
    code = "protocol_error"


class MessageTooLargeError(ProtocolError):
    code = "message_too_large"


class CallerTokenError(AgentkitError):
    code = "bad_caller_token"


class CapacityError(AgentkitError):
    code = "over_capacity"
    retryable = True


class AddressLimitError(CapacityError):
    """One client address already holds its share: `code` says of what (`too_many_sessions`,
    `too_many_pending_offers`). Retryable once one of them ends."""

    code = "too_many_sessions"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        if code is not None:
            self.code = code


class BusyError(CapacityError):
    """The server has free slots but takes no new session now: `code` says why (`busy`: its event
    loop or CPU is overloaded, see `agentkit.stream.LoadMonitor`; `shutting_down`). Retryable: later,
    or on another server. Sessions already open are never cut off for this."""

    code = "busy"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        if code is not None:
            self.code = code


class TimeLimitError(AgentkitError):
    code = "time_limit"


class TransportClosedError(AgentkitError):
    code = "transport_closed"


class ProviderError(AgentkitError):
    code = "provider_error"


class ProviderTimeoutError(ProviderError):
    code = "provider_timeout"
    retryable = True
