"""`TwilioCalls`: call control through Twilio's REST API (hang up, place a call), with `twilio.rest`.

The official client is synchronous (requests); every call runs in a worker thread so the event loop
never waits on the network. `api_base_url` replaces `https://api.twilio.com` (tests point it at
`agentkit.testing.FakeTwilio`; `TWILIO_API_BASE_URL` in the environment does the same).

```python
calls = TwilioCalls.from_settings()               # TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
sid = await calls.place_call(to="+15550001111", from_="+15550002222", url=f"{public}/telephone/incoming")
await calls.hang_up(sid)                          # an already-ended call is not an error
```
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from agentkit.config import load_settings
from agentkit.exceptions import ConfigError, ProviderError

__all__ = ["TwilioCalls"]

logger = logging.getLogger(__name__)

TWILIO_API_URL = "https://api.twilio.com"
_NOT_IN_PROGRESS = 21220  # "Call is not in-progress. Cannot redirect." (the call already ended)
_NOT_FOUND = 20404


class _RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """Twilio's HTTP client, sending `https://api.twilio.com/...` requests to another base URL."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        super().__init__(timeout=timeout_s)
        self._base_url = base_url.rstrip("/")
        if self.session is not None:
            self.session.trust_env = False  # a local fake: no proxy from the environment

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API_URL):
            url = self._base_url + url[len(TWILIO_API_URL) :]
        response: Response = super().request(method, url, *args, **kwargs)
        return response


class TwilioCalls:
    """Hang up and place calls on one Twilio account."""

    def __init__(
        self, account_sid: str, auth_token: str, *, api_base_url: str | None = None, timeout_s: float = 10.0
    ) -> None:
        if not account_sid or not auth_token:
            raise ConfigError("Twilio call control needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        http = TwilioHttpClient(timeout=timeout_s)
        if api_base_url and api_base_url.rstrip("/") != TWILIO_API_URL:
            http = _RebasedHttpClient(api_base_url, timeout_s)
        self.account_sid = account_sid
        self._client = Client(account_sid, auth_token, http_client=http)

    @classmethod
    def from_settings(cls) -> TwilioCalls:
        """From `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN` and `TWILIO_API_BASE_URL` (optional).

        Raises `ConfigError` naming what is missing.
        """
        settings = load_settings()
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        missing = [
            name
            for name, value in (
                ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", token),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"Twilio call control needs {' and '.join(missing)} in the environment")
        assert settings.twilio_account_sid is not None
        return cls(settings.twilio_account_sid, token, api_base_url=settings.twilio_api_base_url)

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (`Status=completed`). False if it had already ended: that is not an error.

        Raises `ProviderError` (retryable for 429/5xx) when Twilio refuses for another reason.
        """

        def update() -> None:
            self._client.calls(call_sid).update(status="completed")

        try:
            await asyncio.to_thread(update)
        except TwilioRestException as exc:
            if exc.code in (_NOT_IN_PROGRESS, _NOT_FOUND) or exc.status == 404:
                logger.info("twilio: call %s had already ended", call_sid)
                return False
            raise _provider_error("hang up", exc) from exc
        except Exception as exc:  # requests' connection errors and timeouts
            raise ProviderError(f"twilio: hang-up failed ({type(exc).__name__})", retryable=True) from exc
        logger.info("twilio: hung up call %s", call_sid)
        return True

    async def transfer(self, call_sid: str, to: str) -> None:
        """Send the call to `to` (E.164 number or `sip:` URI): it leaves its media stream for a
        `<Dial>`. Raises `ProviderError` when Twilio refuses."""
        from twilio.twiml.voice_response import Dial, VoiceResponse

        dial = Dial()
        if to.startswith("sip:"):
            dial.sip(to)
        else:
            dial.number(to)
        twiml = str(VoiceResponse().append(dial))

        def update() -> None:
            self._client.calls(call_sid).update(twiml=twiml)

        try:
            await asyncio.to_thread(update)
        except TwilioRestException as exc:
            raise _provider_error("transfer the call", exc) from exc
        except Exception as exc:
            raise ProviderError(f"twilio: transfer failed ({type(exc).__name__})", retryable=True) from exc
        logger.info("twilio: transferred call %s", call_sid)

    async def place_call(self, *, to: str, from_: str, url: str) -> str:
        """Dial `to` from `from_`; Twilio fetches its TwiML from `url` when answered. Returns the call SID."""

        def create() -> str:
            call = self._client.calls.create(to=to, from_=from_, url=url)
            return str(call.sid)

        try:
            sid = await asyncio.to_thread(create)
        except TwilioRestException as exc:
            raise _provider_error("place the call", exc) from exc
        except Exception as exc:
            raise ProviderError(
                f"twilio: placing the call failed ({type(exc).__name__})", retryable=True
            ) from exc
        logger.info("twilio: placed call %s", sid)
        return sid


def _provider_error(action: str, exc: TwilioRestException) -> ProviderError:
    retryable = exc.status == 429 or exc.status >= 500
    return ProviderError(
        f"twilio: could not {action}: {exc.msg} (error {exc.code}, HTTP {exc.status})",
        retryable=retryable,
        status=exc.status,
        twilio_code=exc.code,
    )
