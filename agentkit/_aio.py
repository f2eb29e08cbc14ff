"""`next_within`: `anext` with a deadline, for every wait on a provider's stream.

Both layers wait on streams they do not control: a provider on its SDK's stream of chunks (a server
that trickles keep-alive bytes but no content, retries, a busy connection pool), the agent on a
provider's stream of text or audio. Each such wait is bounded the same way, with the same error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from agentkit.exceptions import ProviderTimeoutError

__all__ = ["closing", "next_within"]

T = TypeVar("T")


async def next_within(iterator: AsyncIterator[T], timeout_s: float, what: str, **context: Any) -> T:
    """The next item of `iterator`, like `anext`, but waiting at most `timeout_s` for it.

    At the iterator's end this raises `StopAsyncIteration`, as `anext` does (inside an async
    generator, catch it: it may not escape one). When no item comes in time it raises
    `ProviderTimeoutError` with the message "<what> did not arrive within <timeout_s> s" and
    `context` as the error's context (e.g. `stage=` or `provider=`). Closing the iterator stays
    with its owner (`contextlib.aclosing`).
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await anext(iterator)
    except TimeoutError:
        raise ProviderTimeoutError(f"{what} did not arrive within {timeout_s:g} s", **context) from None


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """`contextlib.aclosing` for any async iterator: an async generator (what providers return) is
    closed on the way out, at once, even when cancelled; one without `aclose` (a user's `llm_node`
    or `tts_node` may return any async iterator) is simply let go."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
