"""The end-of-turn model Protocol: does the audio of a turn so far sound finished?"""

from __future__ import annotations

from typing import Protocol

from agentkit.audio import Samples

__all__ = ["EndOfTurnModel"]


class EndOfTurnModel(Protocol):
    """A model shared by every session that scores how finished a turn sounds.

    `probability` runs the model off the event loop (and may batch calls from many sessions).
    """

    @property
    def sample_rate(self) -> int:
        """Rate of the audio `probability` takes (the turn-taking VAD's rate)."""
        ...

    @property
    def max_audio_samples(self) -> int:
        """The model looks at no more than this much of the end of a turn; pass no more."""
        ...

    def load(self) -> bool:
        """Load the model now (blocking: call it in a thread); False, logged once, if it cannot be used."""
        ...

    async def probability(self, samples: Samples) -> float:
        """Probability in [0, 1] that the speaker has finished, from the end of the turn's audio."""
        ...

    async def aclose(self) -> None:
        """Stop batching and let go of the model; safe to call twice."""
        ...
