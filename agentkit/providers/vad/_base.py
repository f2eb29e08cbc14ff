"""The VAD Protocol: a model shared by every session, and a small stateful stream per session."""

from __future__ import annotations

from typing import Protocol

from agentkit.audio import Samples

__all__ = ["VAD", "VADStream"]


class VADStream(Protocol):
    """One session's view of a VAD model: carries the recurrent state between chunks.

    `probability` is CPU work: call it from an executor, never on the event loop.
    """

    def probability(self, chunk: Samples) -> float:
        """Speech probability in [0, 1] for the next `chunk_samples` samples at `sample_rate`."""
        ...

    def reset(self) -> None:
        """Forget the recurrent state (start of a new, unrelated stream)."""
        ...


class VAD(Protocol):
    """A voice activity detector that scores fixed-size chunks of audio at one sample rate."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def chunk_samples(self) -> int: ...

    def stream(self) -> VADStream:
        """A fresh per-session stream over the shared model."""
        ...

    async def aclose(self) -> None:
        """Release clients, sessions and threads; safe to call twice; the provider may not be used after."""
        ...
