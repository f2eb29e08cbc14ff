"""The STT Protocol: one finished turn of audio in, its transcript out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agentkit.audio import AudioFrame

__all__ = ["STT", "Transcript"]


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the caller said in one turn."""

    text: str
    """The words, stripped; empty when nothing intelligible was said."""
    audio_s: float
    """Length of the audio that was transcribed, in seconds."""
    language: str | None = None
    """Language code when the provider reports one."""


class STT(Protocol):
    """Speech-to-text over a whole turn.

    `transcribe` gets mono audio at `sample_rate` (the agent resamples to it). Model inference is CPU
    work: local providers run it in an executor, never on the event loop. Failures raise
    `agentkit.ProviderError` / `ProviderTimeoutError`.
    """

    @property
    def name(self) -> str:
        """Short label for logs and metrics, e.g. `moonshine/tiny`."""
        ...

    @property
    def sample_rate(self) -> int:
        """Rate of the audio `transcribe` wants."""
        ...

    async def warm_up(self) -> None:
        """Load models or open clients ahead of the first call; idempotent."""
        ...

    async def transcribe(self, audio: AudioFrame) -> Transcript: ...

    async def aclose(self) -> None:
        """Release clients, sessions and threads; safe to call twice; the provider may not be used after."""
        ...
