"""`open_store(url)`: pick and open a conversation-store backend by URL.

| URL | backend |
|---|---|
| `sqlite:///relative/path.db` | `SQLiteStore`, relative to the current directory (see `AGENTKIT_STORE`) |
| `sqlite:////absolute/path.db` | `SQLiteStore`, absolute path (four slashes, as in SQLAlchemy) |
| `sqlite:///:memory:` | `SQLiteStore` on a private in-memory database (tests) |
| `...?synchronous=full` | `SQLiteStore` that also survives power loss (one fsync per write) |
| `memory://` | `MemoryStore` (this process only) |
| `redis://[[user]:password@]host[:port][/db]` | `RedisStore`, shared by several workers (`rediss://`: TLS) |
| `redis://...?prefix=myagent:` | `RedisStore` with its keys under that prefix (default `agentkit:`) |

Error messages name the scheme and path, never a whole URL (a Redis URL may hold a password).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal
from urllib.parse import parse_qsl, unquote

from agentkit.config import load_settings
from agentkit.exceptions import ConfigError
from agentkit.store._base import ConversationStore
from agentkit.store._memory import MemoryStore
from agentkit.store._redis import DEFAULT_PREFIX, RedisStore
from agentkit.store._sqlite import SQLiteStore

__all__ = ["SUPPORTED_SCHEMES", "open_store", "parse_redis_url"]

SUPPORTED_SCHEMES = ("sqlite", "memory", "redis", "rediss")
"""URL schemes `open_store` accepts."""

_USAGE = "use sqlite:///relative/path.db, sqlite:////absolute/path.db, redis://host:port/db or memory://"


def open_store(url: str | None = None, *, wall_clock: Callable[[], float] = time.time) -> ConversationStore:
    """Open the conversation store named by `url` (by default the `AGENTKIT_STORE` setting).

    Opening a SQLite store touches the disk (and may wait for another process's write lock): call
    this at startup, not on a hot path. Raises `ConfigError` for an unknown scheme, a malformed URL,
    or a path that cannot be used.
    """
    if url is None:
        url = load_settings().store
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not scheme:
        raise ConfigError(f"the conversation store URL needs a scheme: {_USAGE}")
    if scheme in ("redis", "rediss"):
        location, prefix = parse_redis_url(url)
        return RedisStore(location, prefix=prefix, wall_clock=wall_clock)
    if scheme == "memory":
        if rest.strip("/"):
            raise ConfigError(f"memory:// takes no path or options: {_USAGE}", scheme=scheme)
        return MemoryStore(wall_clock=wall_clock)
    if scheme == "sqlite":
        path, synchronous = _parse_sqlite(rest)
        return SQLiteStore(path, synchronous=synchronous, wall_clock=wall_clock)
    raise ConfigError(
        f"unknown conversation store scheme {scheme!r}; supported: {', '.join(SUPPORTED_SCHEMES)} ({_USAGE})",
        scheme=scheme,
    )


def _parse_sqlite(rest: str) -> tuple[str, Literal["normal", "full"]]:
    """`rest` is what follows `sqlite://`: `/path[?synchronous=normal|full]`."""
    location, _, query = rest.partition("?")
    if not location.startswith("/"):
        raise ConfigError(f"an sqlite store URL has no host part: {_USAGE}", scheme="sqlite")
    path = unquote(location[1:])
    if not path:
        raise ConfigError(f"the sqlite store URL names no file: {_USAGE}", scheme="sqlite")
    synchronous: Literal["normal", "full"] = "normal"
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != "synchronous":
            raise ConfigError(f"unknown sqlite store option {key!r} (known: synchronous)", path=path)
        if value.lower() == "normal":
            synchronous = "normal"
        elif value.lower() == "full":
            synchronous = "full"
        else:
            raise ConfigError(f"synchronous must be normal or full, not {value!r}", path=path)
    return path, synchronous


def parse_redis_url(url: str) -> tuple[str, str]:
    """Split agentkit's `prefix` option off a redis URL; redis-py reads the rest (and its options)."""
    location, _, query = url.partition("?")
    prefix = DEFAULT_PREFIX
    kept = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "prefix":
            prefix = value
        else:
            kept.append(f"{key}={value}")
    return location + ("?" + "&".join(kept) if kept else ""), prefix
