"""The TTS Protocol: one sentence of text in, a stream of audio frames out."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from agentkit.audio import AudioFrame

__all__ = ["TTS"]


class TTS(Protocol):
    """Text-to-speech, one sentence (or short run of text) at a time.

    `synthesize` returns an async generator of mono frames at `sample_rate`; the first frame should
    come as soon as the provider has any audio. `aclose()` on the generator stops synthesis (barge-in).
    Model inference is CPU work: local providers run it in an executor. Failures raise
    `agentkit.ProviderError` / `ProviderTimeoutError`.

    Optional: `at_sample_rate(rate) -> TTS | None`, the same voice synthesised at another rate (the
    provider itself for its own rate, None for one it cannot give). An `Agent` asks for its call's
    output rate (8 kHz on the phone), so that the audio needs no resampling on the way out.
    `ElevenLabsTTS` has it; a provider with one model rate (Kokoro's 24 kHz) does not.
    """

    @property
    def name(self) -> str:
        """Short label for logs and metrics, e.g. `kokoro/af_heart`."""
        ...

    @property
    def sample_rate(self) -> int:
        """Rate of the frames `synthesize` yields."""
        ...

    async def warm_up(self) -> None:
        """Load models or open clients ahead of the first call; idempotent."""
        ...

    def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        """Speak `text`; empty or blank text yields nothing."""
        ...

    async def aclose(self) -> None:
        """Release clients, sessions and threads; safe to call twice; the provider may not be used after."""
        ...
