"""What the cloud providers need before their first call: an API key, a base URL, the SDK.

| variable | used by | meaning |
|---|---|---|
| `ANTHROPIC_API_KEY` | `AnthropicLLM` | API key (required) |
| `ANTHROPIC_BASE_URL` | `AnthropicLLM` | API root; default `https://api.anthropic.com` |
| `GROQ_API_KEY` | `GroqLLM`, `GroqSTT` | API key (required) |
| `GROQ_BASE_URL` | `GroqLLM`, `GroqSTT` | API root; default `https://api.groq.com` |
| `ELEVENLABS_API_KEY` | `ElevenLabsTTS` | API key (required) |
| `ELEVENLABS_BASE_URL` | `ElevenLabsTTS` | API root; default `https://api.elevenlabs.io` |

A provider's `api_key=` and `base_url=` arguments win over the environment. The environment is read
when a provider opens its client (`warm_up()` or first use), never at import time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentkit.exceptions import ConfigError

__all__ = ["CloudCredentials", "CloudSettings", "Vendor", "import_sdk", "load_cloud_settings", "resolve"]

Vendor = Literal["anthropic", "groq", "elevenlabs"]
"""The cloud services agentkit has providers for; also the name of each one's SDK and extra."""


class CloudSettings(BaseSettings):
    """Cloud API keys and base URLs from the environment (no prefix: the vendors' own names)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    anthropic_api_key: SecretStr | None = None
    """`ANTHROPIC_API_KEY`."""
    anthropic_base_url: str | None = None
    """`ANTHROPIC_BASE_URL`."""
    groq_api_key: SecretStr | None = None
    """`GROQ_API_KEY`."""
    groq_base_url: str | None = None
    """`GROQ_BASE_URL`."""
    elevenlabs_api_key: SecretStr | None = None
    """`ELEVENLABS_API_KEY`."""
    elevenlabs_base_url: str | None = None
    """`ELEVENLABS_BASE_URL`."""


@dataclass(frozen=True, slots=True)
class CloudCredentials:
    """The key and API root one provider will use."""

    api_key: str
    """The secret key; never log it."""
    base_url: str | None
    """API root, or `None` for the SDK's default (the vendor's production endpoint)."""

    def __repr__(self) -> str:
        return f"CloudCredentials(api_key='**********', base_url={self.base_url!r})"


def load_cloud_settings() -> CloudSettings:
    """Read the cloud settings from the environment now."""
    try:
        return CloudSettings()
    except ValidationError as exc:  # only possible for malformed values; names, never values
        names = ", ".join(str(err["loc"][0]).upper() for err in exc.errors() if err["loc"])
        raise ConfigError(f"invalid cloud setting in the environment: {names}") from None


def resolve(
    vendor: Vendor,
    *,
    api_key: str | SecretStr | None,
    base_url: str | None,
    owner: str,
) -> CloudCredentials:
    """The key and base URL for `vendor`: arguments first, then the environment.

    A missing key raises one `ConfigError` that names the variable and says how to set it; `owner`
    names the provider class in that message (e.g. `AnthropicLLM`).
    """
    settings = load_cloud_settings()
    variable = f"{vendor.upper()}_API_KEY"
    key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if not key:
        env_key: SecretStr | None = getattr(settings, f"{vendor}_api_key")
        key = env_key.get_secret_value() if env_key is not None else None
    if not key:
        raise ConfigError(
            f"{owner} needs an API key: {variable} is not set. "
            f"Set it in the environment (export {variable}=...) or pass {owner}(api_key=...).",
            variable=variable,
        )
    url = base_url or getattr(settings, f"{vendor}_base_url")
    return CloudCredentials(api_key=key, base_url=url or None)


def import_sdk(vendor: Vendor, module: str | None = None) -> ModuleType:
    """Import the vendor's SDK (or one of its modules), or say which extra installs it."""
    name = module or vendor
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"the {vendor} SDK is not installed: pip install 'agentkit[{vendor}]' "
            "(or 'agentkit[cloud]' for every cloud provider)",
            module=name,
        ) from exc
