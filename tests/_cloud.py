"""Shared by the cloud provider tests: an environment where no real key, proxy or profile leaks in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

KEY = "test-key"

_VENDOR_PREFIXES = ("ANTHROPIC_", "GROQ_", "ELEVENLABS_", "OPENAI_")
_PROXY_NAMES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def isolate_cloud_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Drop every vendor variable and proxy setting; keep loopback off any proxy."""
    for name in list(os.environ):
        if name.upper().startswith(_VENDOR_PREFIXES) or name.lower() in _PROXY_NAMES:
            monkeypatch.delenv(name)
    # The Anthropic SDK looks for credential profiles on disk when it has no key: point it at nothing.
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic-config"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
