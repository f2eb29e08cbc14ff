"""Telephony through Twilio: a voice webhook that answers with TwiML, and the Media Stream it opens.

```python
app = FastAPI()
add_twilio_routes(app, stream)  # POST /telephone/incoming, WS /telephone/media
```

Point the phone number's "A call comes in" webhook at `https://PUBLIC_HOST/telephone/incoming`.
The webhook checks `X-Twilio-Signature` with `TWILIO_AUTH_TOKEN` against the URL Twilio requested
(`AGENTKIT_PUBLIC_URL` + the path, or the `X-Forwarded-Proto`/`X-Forwarded-Host` of the proxy in
front), answers `<Connect><Stream url="wss://PUBLIC_HOST/telephone/media">` with the caller, the
called number and a one-time token as `<Parameter>`s, and the media stream must present that token
in its `start` message within a minute. With `TWILIO_ACCOUNT_SID` set too (or `calls=` given), the
agent can end the call through Twilio's REST API (`await context.hang_up()`). See docs/telephony.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import Request, Response
from starlette.requests import ClientDisconnect
from starlette.websockets import WebSocket

from agentkit.config import load_settings
from agentkit.exceptions import CapacityError
from agentkit.transports._close_codes import CLOSE_POLICY
from agentkit.transports._twilio_media import TwilioConnection
from agentkit.transports._twilio_rest import TwilioCalls
from agentkit.transports._twilio_resume import (
    MAX_RECONNECTS,
    RECONNECT_PARAMETER,
    action_url,
    may_reconnect,
    reconnect_attempt,
)
from agentkit.transports._twilio_webhook import (
    CallGrant,
    CallTokens,
    SignatureCheck,
    busy_twiml,
    hangup_twiml,
    media_stream_twiml,
    parse_form,
    public_base_url,
    token_secret,
    websocket_url,
)
from agentkit.transports._untrusted import is_id, is_text

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.datastructures import ImmutableMultiDict

    from agentkit.store import ConversationStore
    from agentkit.stream import SessionHost

__all__ = ["CallGrant", "CallTokens", "TwilioCalls", "TwilioConnection", "add_twilio_routes"]

logger = logging.getLogger(__name__)

_warned_no_token: list[bool] = []
"""Not empty once the missing TWILIO_AUTH_TOKEN was logged: a server without Twilio never says it."""

PURPOSE_PARAMETER = "purpose"
"""Query parameter of the webhook URL `agentkit call --purpose` places a call with."""
MAX_PURPOSE_CHARS = 500

MAX_WEBHOOK_BYTES = 64 * 1024
"""Twilio's voice webhook bodies are a few hundred bytes; anything far larger is refused."""


def add_twilio_routes(
    app: FastAPI,
    stream: SessionHost,
    *,
    public_url: str | None = None,
    validate_signatures: bool = True,
    prefix: str = "/telephone",
    auth_token: str | None = None,
    tokens: CallTokens | None = None,
    calls: TwilioCalls | None = None,
    require_token: bool = True,
    store: ConversationStore | None = None,
) -> CallTokens:
    """Mount `POST {prefix}/incoming` (Twilio's voice webhook) and `WS {prefix}/media`.

    The media WebSocket refuses (HTTP 403) any request with an `Origin` header: Twilio sends none,
    so such a request comes from a web page. While the stream would refuse a new session (the
    process is overloaded, or at its `concurrency_limit`; see `SessionHost.check_admission`), the
    webhook answers TwiML that tells the caller so (`<Say>`) and hangs up (`<Hangup/>`), and a media
    stream that arrives anyway is closed with 1013.

    `public_url`: the base URL Twilio reaches the server at (default `AGENTKIT_PUBLIC_URL`; unset:
    trust the proxy's `X-Forwarded-Proto`/`X-Forwarded-Host`). `auth_token`: the Twilio auth token
    that signs webhooks (default `TWILIO_AUTH_TOKEN`). Signatures are checked unless
    `validate_signatures=False` or `AGENTKIT_TWILIO_VALIDATE=0`, which logs a warning: only for local
    development. `calls`: REST call control for hang-ups (default: from `TWILIO_ACCOUNT_SID`,
    `TWILIO_AUTH_TOKEN` and `TWILIO_API_BASE_URL` when both credentials are set; else a hang-up only
    closes the stream). `require_token=False` accepts media streams that carry no valid token: only
    for benchmarks on 127.0.0.1 (Twilio-protocol load generators dial the WebSocket directly); never
    on a server Twilio can reach, since anyone could then open a call. Returns the one-time token book
    the two routes share.

    `store`: the conversation store the agent keeps its calls in. With one (shared by every worker,
    e.g. Redis), the TwiML's `<Connect action>` brings a call whose media stream dropped, or whose
    worker died, back to a worker, which goes on with the same conversation (`_twilio_resume`).
    """
    settings = load_settings()
    public_url = public_url or settings.public_url
    if auth_token is None and settings.twilio_auth_token is not None:
        auth_token = settings.twilio_auth_token.get_secret_value()
    validate = validate_signatures and settings.twilio_validate
    signatures = SignatureCheck(auth_token)
    # signed stream tokens when there is an auth token (every worker has it): any worker may then
    # take the media stream of a call another one answered
    book = tokens or CallTokens(secret=token_secret(auth_token) if auth_token else None)
    if calls is None and settings.twilio_account_sid and auth_token:
        calls = TwilioCalls(
            settings.twilio_account_sid, auth_token, api_base_url=settings.twilio_api_base_url
        )
    prefix = prefix.rstrip("/")
    _warn_if_unsafe(validate=validate, require_token=require_token)

    async def incoming(request: Request) -> Response:
        if validate and not signatures.configured and not _warned_no_token:
            _warned_no_token.append(True)  # said once per process, when a call could not be answered
            logger.warning("twilio: TWILIO_AUTH_TOKEN is not set; every webhook request will get 403")
        try:
            body = await _read_body(request)
        except ClientDisconnect:  # gone before its body ended: no one to answer
            logger.info("twilio: a webhook client disconnected before its request ended")
            return Response(status_code=400)
        if body is None:
            logger.warning("twilio: refused a webhook request over %d bytes", MAX_WEBHOOK_BYTES)
            return Response("request too large", status_code=413, media_type="text/plain")
        form = parse_form(body)
        base = public_base_url(public_url, request.headers, request.url.scheme, request.url.netloc)
        url = base + f"{prefix}/incoming" + (f"?{request.url.query}" if request.url.query else "")
        if validate:
            signature = request.headers.get("x-twilio-signature")
            if not signatures.valid(url, form, signature):
                logger.warning(
                    "twilio: refused a webhook request with %s signature",
                    "an invalid" if signature else "no",
                )
                return Response("invalid Twilio signature", status_code=403, media_type="text/plain")
        call_sid = form.get("CallSid") or None
        attempt = _attempt(request)
        refusal = await _call_over(store, call_sid, form, attempt) or _refused_call(
            stream, call_sid, resuming=attempt is not None
        )
        if refusal is not None:
            return refusal
        caller, called = _number(form.get("From")), _number(form.get("To"))
        outbound = form.get("Direction", "").startswith("outbound")
        if outbound:  # `agentkit call`: the person is `To`
            caller, called = called, caller
        purpose = request.query_params.get(PURPOSE_PARAMETER) or None  # in the URL Twilio signed
        if purpose is not None and len(purpose) > MAX_PURPOSE_CHARS:
            logger.warning("twilio: refused a webhook whose purpose is over %d characters", MAX_PURPOSE_CHARS)
            return Response("purpose too long", status_code=400, media_type="text/plain")
        token = book.issue(
            caller=caller,
            called=called,
            call_sid=call_sid,
            outbound=outbound,
            purpose=purpose,
            resuming=attempt is not None,
        )
        logger.info("twilio: incoming call %s answered with a media stream", call_sid or "?")
        twiml = media_stream_twiml(
            websocket_url(base, f"{prefix}/media"),
            token=token,
            caller=caller,
            called=called,
            action=_next_action(store, url, attempt),
        )
        return Response(twiml, media_type="text/xml")

    async def media(websocket: WebSocket) -> None:
        if await _refused_web_page(websocket):
            return
        # exempt from the per-address session cap (`_admission`): the peer is always Twilio, and a
        # stream is only served for a signed, single-use token from a webhook Twilio signed
        await TwilioConnection(websocket, stream, book, calls=calls, require_token=require_token).run()

    app.add_api_route(f"{prefix}/incoming", incoming, methods=["POST"], include_in_schema=False)
    app.add_api_websocket_route(f"{prefix}/media", media)
    return book


def _warn_if_unsafe(*, validate: bool, require_token: bool) -> None:
    if not validate:
        logger.warning(
            "twilio: webhook signatures are NOT checked; anyone can start calls (development only)"
        )
    if not require_token:
        logger.warning(
            "twilio: media streams are accepted WITHOUT a session token (loopback benchmarks only)"
        )


def _attempt(request: Request) -> int | None:
    """Which reconnection of its call a webhook request is (None: the call's first request)."""
    return reconnect_attempt(request.query_params.get(RECONNECT_PARAMETER))


def _next_action(store: ConversationStore | None, url: str, attempt: int | None) -> str | None:
    """The TwiML's `<Connect action>`: this webhook's URL for the next reconnection, if any is left
    (and there is a store to tell a dropped stream from a finished call)."""
    if store is None or (attempt or 0) >= MAX_RECONNECTS:
        return None
    return action_url(url, (attempt or 0) + 1)


async def _call_over(
    store: ConversationStore | None,
    call_sid: str | None,
    form: ImmutableMultiDict[str, str],
    attempt: int | None,
) -> Response | None:
    """`<Hangup/>` for an action request (`attempt`) of a call that is over; None for a call that
    goes on (a first request, or a stream that dropped: see `_twilio_resume`)."""
    if attempt is None:
        return None
    if (
        store is not None
        and call_sid is not None
        and is_id(call_sid)
        and await may_reconnect(store, call_sid, call_status=form.get("CallStatus"), attempt=attempt)
    ):
        logger.info("twilio: the media stream of call %s ended early; reconnecting it", call_sid)
        return None
    logger.info("twilio: call %s is over; hanging up", call_sid or "?")
    return Response(hangup_twiml(), media_type="text/xml")


def _refused_call(stream: SessionHost, call_sid: str | None, *, resuming: bool) -> Response | None:
    """The answer to a signed webhook request that is not to become a media stream, or None.

    A malformed `CallSid` gets 400 (it goes into logs and the stream token). While the stream would
    refuse a new session (overloaded, at its limit), the caller hears why and Twilio hangs up: TwiML
    with status 200, since Twilio plays nothing from an error status. The refusal is counted. A call
    `resuming` after its stream dropped is not turned away for load (only at the hard limit).
    """
    if call_sid is not None and not is_id(call_sid):
        logger.info("twilio: refused a webhook request with a malformed CallSid")
        return Response("malformed CallSid", status_code=400, media_type="text/plain")
    try:
        stream.check_admission(resuming=resuming)
    except CapacityError as exc:
        logger.info("twilio: incoming call %s turned away (%s)", call_sid or "?", exc.code)
        return Response(busy_twiml(), media_type="text/xml")
    return None


async def _refused_web_page(websocket: WebSocket) -> bool:
    """Refuse (HTTP 403, before the handshake) a media stream request with an `Origin` header: Twilio
    sends none, so it comes from a web page (a DNS-rebinding one, say). True when refused."""
    if "origin" not in websocket.headers:
        return False
    logger.info("twilio: refused a media stream opened by a web page")
    await websocket.close(CLOSE_POLICY)
    return True


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None once it grows over `MAX_WEBHOOK_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _number(value: str | None) -> str | None:
    """A phone number (or SIP/client address) from the webhook form; None if absent or malformed
    (control characters would forge log lines and break the store)."""
    if not value:
        return None
    if not is_text(value):
        logger.info("twilio: ignored a malformed From/To in a webhook request")
        return None
    return value
