"""The VAD Protocol: a model shared by every session, and a small stateful stream per session.

A model may also score many sessions' chunks in one call (`BatchedVAD.probabilities`): a recurrent
VAD's cost per call is mostly fixed overhead, so one call over 50 streams costs about half as much per
chunk as 50 calls, and the audio thread's time goes to the model rather than to Python. The entry
point is optional: turn detection (`agentkit.stream._turn_batch`) uses it when the model has it and
falls back to one `VADStream.probability` per stream otherwise (a test fake needs nothing more than
`VAD`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agentkit.audio import Samples

__all__ = ["VAD", "BatchedVAD", "MultiRateVAD", "VADStream"]


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


class BatchedVAD(VAD, Protocol):
    """A `VAD` that can score one chunk of each of many of its streams in a single model call."""

    def probabilities(self, streams: Sequence[VADStream], chunks: Sequence[Samples]) -> list[float]:
        """`streams[i].probability(chunks[i])` for every i, computed together.

        Each stream appears at most once (its recurrent state advances by exactly one chunk), and
        every stream came from this model's `stream()`. If it raises, no stream's state has changed
        (the caller then scores the streams one by one to find the culprit). CPU work: call it from
        an executor.
        """
        ...


class MultiRateVAD(VAD, Protocol):
    """A `VAD` that also runs at other sample rates (Silero: 8 and 16 kHz), so a session can score a
    call's audio at the rate it arrives at (`TurnTakingHandler.follow_call_rate`)."""

    def at_rate(self, sample_rate: int) -> VAD:
        """This detector at `sample_rate`, the same object for a rate every time (sessions that share
        it share VAD batches); `ValueError` for a rate it does not run at."""
        ...
