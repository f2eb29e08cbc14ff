"""Verified callers on the web: short-lived tokens the embedding site's backend signs.

An `Agent` puts a known caller's earlier conversations into the LLM's history, so the caller id of a
web session must not be whatever the page says. A page proves it with a *caller token*: a JWT
(RFC 7519) signed HS256 with the secret the site's backend shares with agentkit
(`AGENTKIT_CALLER_SECRET`), carrying

```
{"sub": "<caller id, 1-128 characters>", "aud": "agentkit", "iat": <now>, "exp": <now + a few minutes>}
```

`exp` and `iat` are required and the token may live at most `MAX_TTL_S` (24 h). Any JWT library
mints one (docs/web-client.md); in Python, `agentkit.caller_token(caller_id)`. The page sends it as
`caller_token` (the `/ws` start message, the WebRTC offer): a valid one makes its `sub` the
session's caller, an invalid one is refused. A plain `caller` string without a token is a label only
(`call_info["caller_label"]`): the session has no caller, so no history is loaded or linked.

PyJWT is imported when a token is made or checked, so `import agentkit` stays light.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agentkit.config import load_settings
from agentkit.exceptions import CallerTokenError, ConfigError

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "MAX_TTL_S",
    "CallerIdentity",
    "CallerTokenError",
    "caller_token",
    "configured_caller_secret",
    "identify_caller",
    "verify_caller_token",
]

AUDIENCE = "agentkit"
"""The `aud` claim every caller token carries."""
ALGORITHM = "HS256"
"""The only signature algorithm accepted (never `none`)."""
MAX_TTL_S = 24 * 3600
"""Longest lifetime (`exp` - `iat`, and `exp` - now) a caller token may have, in seconds."""
LEEWAY_S = 5
"""Clock skew tolerated between the site's backend and this server, in seconds."""
MIN_SECRET_BYTES = 32
"""Shortest secret accepted: HS256's digest size (RFC 7518 section 3.2)."""
MAX_CALLER_CHARS = 128
"""Longest caller id (the `sub` claim) and caller label."""
MAX_TOKEN_CHARS = 4096
"""Longest caller token read; anything longer is refused unparsed."""


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who a web session's caller is, as far as the server can tell."""

    caller: str | None
    """The verified caller id (a valid token's `sub`): it links the caller's earlier conversations."""
    label: str | None
    """What the client calls itself (`caller`): shown to the handler, linked to nothing."""

    def call_info(self) -> dict[str, str]:
        """The session's `call_info`: `caller_label` when there is a label."""
        return {"caller_label": self.label} if self.label is not None else {}


def _key(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"AGENTKIT_CALLER_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
    return key


def configured_caller_secret(secret: str | None = None) -> str | None:
    """`secret`, else `AGENTKIT_CALLER_SECRET` (None when unset or empty); `ConfigError` when it is
    shorter than 32 bytes, so a weak secret stops the server at startup."""
    if not secret:
        setting = load_settings().caller_secret
        secret = setting.get_secret_value() if setting is not None else ""
    if not secret:
        return None
    _key(secret)
    return secret


def caller_token(caller_id: str, *, secret: str | None = None, ttl_s: int = 300) -> str:
    """A caller token for `caller_id`, valid for `ttl_s` seconds (at most 24 h).

    `secret`: the HS256 secret shared with the agentkit server (default `AGENTKIT_CALLER_SECRET`;
    `ConfigError` when there is none, or when it is shorter than 32 bytes). Mint it in the site's
    backend for a signed-in user, just before the page starts a session, and hand it to the page.
    """
    import jwt

    if secret is None:
        secret = configured_caller_secret()
        if secret is None:
            raise ConfigError("caller_token() needs a secret: set AGENTKIT_CALLER_SECRET or pass secret=")
    key = _key(secret)
    if not isinstance(caller_id, str) or not 0 < len(caller_id) <= MAX_CALLER_CHARS:
        raise ValueError(f"caller_id must be a string of 1 to {MAX_CALLER_CHARS} characters")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be 1 to {MAX_TTL_S} seconds")
    now = int(time.time())  # JWT times are Unix time, checked on another machine
    claims = {"sub": caller_id, "aud": AUDIENCE, "iat": now, "exp": now + int(ttl_s)}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_caller_token(token: object, secret: str | None) -> str | None:
    """The caller id (`sub`) a caller token (as the client sent it) vouches for; None for no token.

    Raises `CallerTokenError` (code `bad_caller_token`, with a message fit for the client) for a
    token that is malformed, expired, too long-lived, not for `agentkit`, not signed HS256 with
    `secret`, or presented to a server without a secret.
    """
    import jwt

    if token is None:
        return None
    if secret is None:
        raise CallerTokenError("this server accepts no caller tokens (it has no caller secret)")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise CallerTokenError(f"caller_token must be a JWT of at most {MAX_TOKEN_CHARS} characters")
    try:
        claims = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise CallerTokenError("caller_token has expired") from None
    except jwt.InvalidAudienceError:
        raise CallerTokenError(f'caller_token is not for this server (aud must be "{AUDIENCE}")') from None
    except jwt.InvalidAlgorithmError:
        raise CallerTokenError(f"caller_token must be signed with {ALGORITHM}") from None
    except jwt.InvalidSignatureError:
        raise CallerTokenError("caller_token is not signed with this server's caller secret") from None
    except jwt.MissingRequiredClaimError as exc:
        raise CallerTokenError(f"caller_token lacks the {exc.claim!r} claim") from None
    except jwt.ImmatureSignatureError:
        raise CallerTokenError("caller_token is not valid yet (iat or nbf in the future)") from None
    except jwt.InvalidTokenError:
        raise CallerTokenError("caller_token is not a valid JWT") from None
    return _checked_caller(claims)


def _checked_caller(claims: dict[str, object]) -> str:
    """What PyJWT leaves to its caller (or only newer versions check): `sub`, `iat` and the lifetime."""
    subject, issued, expires = claims["sub"], claims["iat"], claims["exp"]
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_CALLER_CHARS:
        raise CallerTokenError(f"caller_token's sub must be a string of 1 to {MAX_CALLER_CHARS} characters")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise CallerTokenError("caller_token's iat and exp must be numbers")
    now = time.time()
    if issued > now + LEEWAY_S:
        raise CallerTokenError("caller_token is not valid yet (iat or nbf in the future)")
    if expires - issued > MAX_TTL_S or expires - now > MAX_TTL_S + LEEWAY_S:
        raise CallerTokenError(f"caller_token may live at most {MAX_TTL_S // 3600} h")
    return subject


def identify_caller(token: object, label: str | None, secret: str | None) -> CallerIdentity:
    """The caller of a web session that presented `token` (`caller_token`) and `label` (`caller`).

    A valid token names the caller; a label alone names nobody. Raises `CallerTokenError` for an
    invalid token (never quietly treats it as no token).
    """
    return CallerIdentity(caller=verify_caller_token(token, secret), label=label)
