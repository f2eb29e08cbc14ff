"""Keep query-string values out of the server's access log.

A query string may hold personal data: `GET /api/conversations?caller=%2B15551234567` names a phone
number, `POST /telephone/incoming?purpose=...` why the agent called someone. uvicorn writes request
lines to its log as they came; `RedactQueryValues` keeps the parameter names and replaces the values
with `…`. `agentkit run` installs it on uvicorn's handlers (`uvicorn_log_config()`); an app served
another way can do the same with its own logging configuration. The library itself never touches
global logging.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

__all__ = ["RedactQueryValues", "redact_query", "uvicorn_log_config"]

_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,40}")


def redact_query(text: str) -> str:
    """`/path?a=1&b=2` as `/path?a=…&b=…` (a name that is not a plain word becomes `…` too)."""
    if not text.startswith("/") or "?" not in text:
        return text
    path, _, query = text.partition("?")
    names = [part.partition("=")[0] for part in query.split("&")]
    return path + "?" + "&".join(f"{n}=…" if _NAME.fullmatch(n) else "…" for n in names)


class RedactQueryValues(logging.Filter):
    """A handler (or logger) filter that redacts the query strings in a record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with `RedactQueryValues` on both of its handlers
    (request lines go to `access`, WebSocket handshakes to `default`)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": f"{__name__}.RedactQueryValues"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_query")
    return config
