"""Twilio's voice webhook: who may ask (`X-Twilio-Signature`), where the media stream goes (TwiML),
and the one-time tokens that tie a media stream to the webhook request that announced it.

Twilio signs each webhook request with the account's auth token over the URL it requested and the
form parameters (HMAC-SHA1, base64); `twilio.request_validator.RequestValidator` checks that. The
media WebSocket itself carries no signature we can check here, so the TwiML hands Twilio a token
(as a `<Parameter>`) that the media stream must present once, within `ttl_s`, for the same call.

With a `secret` (the server derives one from `TWILIO_AUTH_TOKEN`, which every worker has), tokens
are signed rather than remembered: `<grant as base64 JSON>.<HMAC-SHA256>`, so the worker that gets
the media stream need not be the one that answered the webhook. Each worker still accepts a token
once; since workers do not share what they have seen, a token could be replayed on another worker
within `ttl_s`, but only for the call it names (`start.callSid` must match). Without a secret,
tokens are random and kept in memory: one process only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
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
    "busy_twiml",
    "hangup_twiml",
    "media_stream_twiml",
    "parse_form",
    "public_base_url",
    "token_secret",
]

logger = logging.getLogger(__name__)

BUSY_MESSAGE = "Sorry, we can't take your call right now. Please try again in a few minutes. Goodbye."
"""What a caller hears when the server turns the call away (overloaded, or at its limit)."""

TOKEN_PARAMETER = "token"
CALLER_PARAMETER = "caller"
CALLED_PARAMETER = "called"

_TOKEN = re.compile(r"[A-Za-z0-9_=.-]{1,16384}")
"""What a token can look like (URL-safe base64 and a dot); anything else is refused unread. A signed
token's claims hold at most a 500-character purpose, escaped in JSON: under 16384 characters."""


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
    outbound: bool = False
    """The agent placed this call (`agentkit call`): `caller` is the person it called."""
    purpose: str | None = None
    """Why the agent placed the call (`agentkit call --purpose`), for its instructions."""
    resuming: bool = False
    """The call's stream dropped (its server died) and this one carries it on (`<Connect action>`)."""

    def call_info(self) -> dict[str, str]:
        """What the session's handler learns of the call besides the caller (`HandlerContext.call_info`)."""
        info = {"direction": "outbound" if self.outbound else "inbound"}
        if self.call_sid:  # signed with the token: a call that reconnects goes on in its conversation
            info["call_id"] = self.call_sid
        if self.called:
            info["called"] = self.called
        if self.purpose:
            info["purpose"] = self.purpose
        return info


class _WallClock:
    """Unix time: signed tokens carry their expiry to other processes and machines."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:  # pragma: no cover - not used for tokens
        raise NotImplementedError


def token_secret(auth_token: str) -> bytes:
    """The signing key for stream tokens, derived from the Twilio auth token every worker has."""
    return hmac.new(auth_token.encode(), b"agentkit twilio stream token v1", hashlib.sha256).digest()


class CallTokens:
    """One-time tokens: each is accepted once, within `ttl_s` of being issued (see the module doc).

    In memory (no `secret`), at most `max_pending` wait for their media stream; beyond that the
    oldest is forgotten (counted in `dropped`), so a flood of webhook requests cannot grow memory
    without bound. Signed (`secret`), only the used ones are remembered, until they expire.
    `clock` defaults to the monotonic clock in memory and to unix time when signed.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 60.0,
        max_pending: int = 1024,
        clock: Clock | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._secret = secret
        self._clock: Clock = clock or (_WallClock() if secret is not None else MonotonicClock())
        self._pending: OrderedDict[str, CallGrant] = OrderedDict()  # in memory: token -> grant
        self._used: OrderedDict[str, float] = OrderedDict()  # signed: nonce -> expiry
        self.dropped = 0
        """Tokens forgotten unused because too many were pending."""

    @property
    def signed(self) -> bool:
        """Tokens are signed (any worker with the secret accepts them), not remembered."""
        return self._secret is not None

    def __len__(self) -> int:
        return len(self._pending)

    def issue(
        self,
        *,
        caller: str | None,
        called: str | None,
        call_sid: str | None,
        outbound: bool = False,
        purpose: str | None = None,
        resuming: bool = False,
    ) -> str:
        now = self._clock.now()
        if self._secret is not None:
            nonce = secrets.token_urlsafe(12)
            claims = [caller, called, call_sid, now + self.ttl_s, nonce, outbound, purpose, resuming]
            payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode())
            return f"{payload.decode()}.{self._mac(payload)}"
        self._forget_expired(now)
        while len(self._pending) >= self.max_pending:
            self._pending.popitem(last=False)
            self.dropped += 1
        token = secrets.token_urlsafe(24)
        self._pending[token] = CallGrant(
            caller, called, call_sid, now + self.ttl_s, outbound, purpose, resuming
        )
        return token

    def redeem(self, token: object) -> CallGrant | None:
        """The grant for `token` if it is valid, fresh and unused (it is used up either way); else None."""
        if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:  # e.g. a lone surrogate
            return None
        if self._secret is not None:
            return self._redeem_signed(token)
        grant = self._pending.pop(token, None)
        if grant is None or grant.expires_at_s < self._clock.now():
            return None
        return grant

    def _mac(self, payload: bytes) -> str:
        assert self._secret is not None
        digest = hmac.new(self._secret, payload, hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def _redeem_signed(self, token: str) -> CallGrant | None:
        payload, _, mac = token.encode().partition(b".")  # `redeem` bounded its length
        if not hmac.compare_digest(mac, self._mac(payload).encode()):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload))
            caller, called, call_sid, expires_at_s, nonce, outbound, purpose, resuming = claims
        except (ValueError, TypeError, binascii.Error):  # signed by us, so only if the format changed
            return None
        now = self._clock.now()
        while self._used and next(iter(self._used.values())) < now:
            self._used.popitem(last=False)
        if expires_at_s < now or nonce in self._used:
            return None
        self._used[nonce] = expires_at_s
        return CallGrant(caller, called, call_sid, expires_at_s, bool(outbound), purpose, bool(resuming))

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


def media_stream_twiml(
    stream_url: str, *, token: str, caller: str | None, called: str | None, action: str | None = None
) -> str:
    """`<Response><Connect><Stream url=...>` with the caller, called number and token as parameters;
    `action`: the URL Twilio requests when the stream ends while the call goes on (`_twilio_resume`)."""
    response = VoiceResponse()
    connect = Connect() if action is None else Connect(action=action)
    stream = connect.stream(url=stream_url)
    if caller:
        stream.parameter(name=CALLER_PARAMETER, value=caller)
    if called:
        stream.parameter(name=CALLED_PARAMETER, value=called)
    stream.parameter(name=TOKEN_PARAMETER, value=token)
    response.append(connect)
    return str(response)


def busy_twiml(message: str = BUSY_MESSAGE) -> str:
    """`<Response><Say>message</Say><Hangup/></Response>`: turn a call away politely. Twilio plays
    TwiML only from a 200 answer (an error status would play its own "application error")."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def hangup_twiml() -> str:
    """`<Response><Hangup/></Response>`: the call is over (an action request after its end)."""
    response = VoiceResponse()
    response.hangup()
    return str(response)
