"""`FakeTwilio`: a loopback server speaking the part of Twilio's REST API that call control uses.

```python
async with FakeTwilio(account_sid="AC" + "0" * 32, auth_token="secret") as fake:
    calls = TwilioCalls(fake.account_sid, "secret", api_base_url=fake.base_url)
    sid = await calls.place_call(to="+15550001111", from_="+15550002222", url="https://x/telephone/incoming")
    assert fake.calls[sid].status == "queued"
    await calls.hang_up(sid)
```

Only two endpoints of the 2010-04-01 API, with HTTP Basic auth (Account SID and auth token):

- `POST /2010-04-01/Accounts/{AccountSid}/Calls.json` creates a call from the form fields `To`,
  `From` and `Url` or `Twiml`, and answers 201 with the Call resource (`sid`, `status: queued`...).
- `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` updates a call: `Twiml` redirects
  it (a transfer's `<Dial>`), `Status=completed` (or `canceled`) ends it. Ending a call that has
  already ended gets Twilio's error 21220 ("Call is not in-progress. Cannot redirect.") with HTTP
  400; an unknown SID gets 20404 with HTTP 404.

Errors carry Twilio's body, `{"code": ..., "message": ..., "more_info": ..., "status": ...}`. Calls
the server did not create can be added with `add_call` (an inbound call Twilio would know about).
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from agentkit.testing.fakes._script import FakeRequest
from agentkit.testing.fakes._server import Exchange, FakeServer

__all__ = ["FakeCall", "FakeTwilio"]

_CALLS = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Calls(?:/(?P<call>[^/]+))?\.json$")
_ENDED = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})
_ERRORS = {
    400: (21220, "Call is not in-progress. Cannot redirect."),
    401: (20003, "Authentication Error - invalid username"),
    404: (20404, "The requested resource was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


@dataclass(slots=True)
class FakeCall:
    """One call the fake knows about (mutable: updates change its status)."""

    sid: str
    """`CA` followed by 32 hex digits."""
    to: str
    """The number called."""
    from_: str
    """The caller ID it was placed from."""
    status: str = "queued"
    """`queued`, `in-progress`, `completed`, `canceled`..."""
    url: str | None = None
    """The TwiML URL Twilio fetches when the call connects (`Url`)."""
    twiml: str | None = None
    """Inline TwiML (`Twiml`) instead of a URL."""
    redirects: list[str] = field(default_factory=list)
    """TwiML the call was updated with (`Twiml`), in order: a transfer is a `<Dial>` here."""


class FakeTwilio(FakeServer):
    """Twilio's Calls resource (create, and update to end a call), Basic-auth checked."""

    def __init__(self, *, account_sid: str = "AC" + "0" * 32, auth_token: str = "test-token") -> None:
        super().__init__(api_key=auth_token)
        self.account_sid = account_sid
        """The account the fake serves; its SID is the Basic-auth user name."""
        self.calls: dict[str, FakeCall] = {}
        """Every call the fake knows about, by SID."""
        self._error: tuple[int, str] | None = None  # a (code, message) override for the next error body

    def add_call(
        self, *, to: str = "+15550100", from_: str = "+15550199", status: str = "in-progress"
    ) -> str:
        """Make the fake know a call it did not place (an incoming one); returns its SID."""
        sid = _call_sid()
        self.calls[sid] = FakeCall(sid=sid, to=to, from_=from_, status=status)
        return sid

    def authorized(self, request: FakeRequest) -> bool:
        """HTTP Basic with the Account SID as user name and the auth token as password."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.account_sid and (self.api_key is None or password == self.api_key)

    def error_body(self, status: int) -> Any:
        code, message = self._error or _ERRORS.get(status, (20500 if status >= 500 else 20001, "Error"))
        self._error = None
        return {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }

    async def _fail(self, exchange: Exchange, status: int, code: int, message: str) -> None:
        self._error = (code, message)
        await self.send_error(exchange, status)

    async def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        match = _CALLS.match(request.path)
        if request.method != "POST" or match is None:
            await self._fail(exchange, 404, 20404, "The requested resource was not found")
            return
        if match["account"] != self.account_sid:
            await self._fail(exchange, 403, 20003, "Account SID does not match the credentials")
            return
        if match["call"] is None:
            await self._create(exchange, request.form)
        else:
            await self._update(exchange, match["call"], request.form)

    async def _create(self, exchange: Exchange, form: dict[str, str]) -> None:
        to, from_ = form.get("To"), form.get("From")
        if not to or not from_:
            missing = "To" if not to else "From"
            await self._fail(exchange, 400, 21201 if missing == "To" else 21213, f"'{missing}' is required")
            return
        if not form.get("Url") and not form.get("Twiml") and not form.get("ApplicationSid"):
            await self._fail(exchange, 400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' is required")
            return
        call = FakeCall(sid=_call_sid(), to=to, from_=from_, url=form.get("Url"), twiml=form.get("Twiml"))
        self.calls[call.sid] = call
        await exchange.send_json(201, self._resource(call))

    async def _update(self, exchange: Exchange, sid: str, form: dict[str, str]) -> None:
        call = self.calls.get(sid)
        if call is None:
            await self._fail(exchange, 404, 20404, f"The requested resource /Calls/{sid}.json was not found")
            return
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            await self._fail(exchange, 400, 21218, "Invalid Status: use 'completed' or 'canceled'")
            return
        if call.status in _ENDED:
            await self._fail(exchange, 400, *_ERRORS[400])
            return
        if status is not None:
            call.status = status
        if form.get("Twiml"):  # the call is redirected to new TwiML (e.g. a <Dial> transfer)
            call.twiml = form["Twiml"]
            call.redirects.append(form["Twiml"])
        await exchange.send_json(200, self._resource(call))

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        """The Call resource as Twilio's API returns it (the fields the SDK reads; nulls elsewhere)."""
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Calls/{call.sid}.json"
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "status": call.status,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "parent_call_sid": None,
            "phone_number_sid": None,
            "date_created": None,
            "date_updated": None,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "forwarded_from": None,
            "caller_name": None,
            "group_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {"recordings": uri.replace(".json", "/Recordings.json")},
        }


def _call_sid() -> str:
    return "CA" + uuid.uuid4().hex
