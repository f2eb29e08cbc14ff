"""Twilio's voice webhook: who may ask (`X-Twilio-Signature`), where the media stream goes (TwiML),
and the one-time tokens that tie a media stream to the webhook request that announced it.

Twilio signs each webhook request with the account's auth token over the URL it requested and the
form parameters (HMAC-SHA1, base64); `twilio.request_validator.RequestValidator` checks that. The
media WebSocket itself carries no signature we can check here, so the TwiML hands Twilio a random
token (as a `<Parameter>`) that the media stream must present once, within `ttl_s`.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from agentkit.clock import Clock, MonotonicClock

__all__ = [
    "CallGrant",
    "CallTokens",
    "SignatureCheck",
    "media_stream_twiml",
    "parse_form",
    "public_base_url",
]

logger = logging.getLogger(__name__)

TOKEN_PARAMETER = "token"
CALLER_PARAMETER = "caller"
CALLED_PARAMETER = "called"


@dataclass(frozen=True, slots=True)
class CallGrant:
    """What a webhook request announced, handed to the media stream that redeems its token."""

    caller: str | None
    """The calling number (`From`), as Twilio signed it."""
    called: str | None
    """The number that was called (`To`)."""
    call_sid: str | None
    """Twilio's id of the call (`CallSid`)."""
    expires_at_s: float
    """Clock time after which the token is no longer accepted, in seconds."""


class CallTokens:
    """One-time tokens, kept in memory: each is accepted once, within `ttl_s` of being issued.

    At most `max_pending` wait for their media stream; beyond that the oldest is forgotten (counted in
    `dropped`), so a flood of webhook requests cannot grow memory without bound.
    """

    def __init__(self, *, ttl_s: float = 60.0, max_pending: int = 1024, clock: Clock | None = None) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._clock: Clock = clock or MonotonicClock()
        self._pending: OrderedDict[str, CallGrant] = OrderedDict()
        self.dropped = 0
        """Tokens forgotten unused because too many were pending."""

    def __len__(self) -> int:
        return len(self._pending)

    def issue(self, *, caller: str | None, called: str | None, call_sid: str | None) -> str:
        now = self._clock.now()
        self._forget_expired(now)
        while len(self._pending) >= self.max_pending:
            self._pending.popitem(last=False)
            self.dropped += 1
        token = secrets.token_urlsafe(24)
        self._pending[token] = CallGrant(caller, called, call_sid, now + self.ttl_s)
        return token

    def redeem(self, token: object) -> CallGrant | None:
        """The grant for `token` if it is pending and fresh (it is used up either way); else None."""
        if not isinstance(token, str):
            return None
        grant = self._pending.pop(token, None)
        if grant is None or grant.expires_at_s < self._clock.now():
            return None
        return grant

    def _forget_expired(self, now: float) -> None:
        while self._pending:
            token, grant = next(iter(self._pending.items()))
            if grant.expires_at_s >= now:
                break
            del self._pending[token]


def public_base_url(configured: str | None, headers: Mapping[str, str], scheme: str, host: str | None) -> str:
    """The server's base URL as Twilio sees it, without a trailing slash.

    `configured` (`AGENTKIT_PUBLIC_URL`) wins. Otherwise the first `X-Forwarded-Proto` /
    `X-Forwarded-Host` values are trusted: the server must sit behind a proxy or tunnel that sets
    them (overwriting what the client sent), or be reached directly.
    """
    if configured:
        return configured.rstrip("/")
    proto = headers.get("x-forwarded-proto", "").split(",")[0].strip() or scheme
    forwarded_host = headers.get("x-forwarded-host", "").split(",")[0].strip()
    return f"{proto}://{forwarded_host or headers.get('host') or host or 'localhost'}"


def websocket_url(base_url: str, path: str) -> str:
    """`base_url` + `path` with the scheme switched to `wss` (or `ws` for plain http)."""
    parts = urlsplit(base_url)
    scheme = "ws" if parts.scheme in ("http", "ws") else "wss"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


def parse_form(body: bytes) -> ImmutableMultiDict[str, str]:
    """Twilio's `application/x-www-form-urlencoded` webhook body (repeated keys kept)."""
    return ImmutableMultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


class SignatureCheck:
    """Checks `X-Twilio-Signature` with the account's auth token (None: every request fails)."""

    def __init__(self, auth_token: str | None) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None

    @property
    def configured(self) -> bool:
        return self._validator is not None

    def valid(self, url: str, form: ImmutableMultiDict[str, str], signature: str | None) -> bool:
        if self._validator is None or not signature:
            return False
        return bool(self._validator.validate(url, form, signature))


def media_stream_twiml(stream_url: str, *, token: str, caller: str | None, called: str | None) -> str:
    """`<Response><Connect><Stream url=...>` with the caller, called number and token as parameters."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    if caller:
        stream.parameter(name=CALLER_PARAMETER, value=caller)
    if called:
        stream.parameter(name=CALLED_PARAMETER, value=called)
    stream.parameter(name=TOKEN_PARAMETER, value=token)
    response.append(connect)
    return str(response)
