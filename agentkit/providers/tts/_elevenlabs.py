"""`ElevenLabsTTS`: ElevenLabs voices through the official `elevenlabs` SDK, streamed as raw PCM.

```python
tts = ElevenLabsTTS(voice_id="JBFqnCBsd6RMkjVDRZzb")   # key from ELEVENLABS_API_KEY
async for frame in tts.synthesize("Hello there."):
    play(frame)                                         # 24 kHz mono AudioFrames
```

Wire format: `POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_24000` with a JSON body
(`text`, `model_id`, ...) and the key in the `xi-api-key` header; the answer is a chunked stream of
signed 16-bit little-endian mono samples.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

from agentkit._aio import next_within
from agentkit.audio import AudioFrame, pcm16_to_float
from agentkit.providers._clients import check_timing, elevenlabs_client
from agentkit.providers._errors import provider_errors

if TYPE_CHECKING:
    from elevenlabs.text_to_speech.types import TextToSpeechStreamRequestOutputFormat

__all__ = ["ElevenLabsTTS", "PcmFramer"]

_OMIT: Any = ...  # the SDK's sentinel for "leave this field out of the request body"

SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""The `pcm_*` output formats this provider asks for (44.1 kHz needs a Pro plan or above)."""


class PcmFramer:
    """Turns arbitrary byte chunks of 16-bit PCM into frames, carrying an odd byte to the next chunk.

    Each frame's `timestamp_samples` continues from the previous one, starting at 0.
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._pending = b""
        self._position = 0

    def push(self, data: bytes) -> AudioFrame | None:
        """The whole samples in `pending + data` as a frame, or `None` if there are none."""
        data = self._pending + data
        usable = len(data) - len(data) % 2
        self._pending = data[usable:]
        if usable == 0:
            return None
        frame = AudioFrame(pcm16_to_float(data[:usable]), self.sample_rate, self._position)
        self._position += usable // 2
        return frame

    @property
    def leftover_bytes(self) -> int:
        """Bytes held back waiting for the other half of a sample (0 or 1)."""
        return len(self._pending)


class ElevenLabsTTS:
    """Streaming text-to-speech from ElevenLabs, yielding frames as the bytes arrive.

    `sample_rate` picks the `pcm_<rate>` output format, so no decoding or resampling happens here.
    The client opens on `warm_up()` or first use (a missing key raises `ConfigError` there);
    `timeout_s` bounds the wait for every chunk, the first included. Closing the generator returned
    by `synthesize()` closes the HTTP stream (barge-in). The SDK never retries this endpoint.
    """

    def __init__(
        self,
        voice_id: str = "JBFqnCBsd6RMkjVDRZzb",
        *,
        model: str = "eleven_flash_v2_5",
        sample_rate: int = 24000,
        language_code: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        check_timing(timeout_s, 0)
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, not {sample_rate!r}")
        if not voice_id:
            raise ValueError("voice_id must not be empty")
        self.voice_id = voice_id
        self.model = model
        self.language_code = language_code
        self.timeout_s = timeout_s
        self._sample_rate = sample_rate
        self._client = elevenlabs_client(
            api_key=api_key, base_url=base_url, timeout_s=timeout_s, owner="ElevenLabsTTS"
        )

    @property
    def name(self) -> str:
        return f"elevenlabs/{self.voice_id}"

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def output_format(self) -> str:
        """The ElevenLabs `output_format` requested, e.g. `pcm_24000`."""
        return f"pcm_{self._sample_rate}"

    def __repr__(self) -> str:
        return f"ElevenLabsTTS(voice_id={self.voice_id!r}, model={self.model!r})"

    def at_sample_rate(self, sample_rate: int) -> ElevenLabsTTS | None:
        """The same voice asked for `pcm_<sample_rate>`, sharing this provider's client (closing this
        one closes it); None for a rate ElevenLabs does not offer. An `Agent` asks for its call's
        output rate, so a phone call gets 8 kHz from ElevenLabs instead of 24 kHz resampled here."""
        if sample_rate == self._sample_rate:
            return self
        if sample_rate not in SAMPLE_RATES:
            return None
        other = copy.copy(self)
        other._sample_rate = sample_rate
        return other

    async def warm_up(self) -> None:
        """Resolve the key and create the SDK client; idempotent."""
        self._client.get()

    async def aclose(self) -> None:
        """Close the SDK client and its connections; idempotent (a later call opens a new client)."""
        await self._client.aclose()

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        """Speak `text`; empty or blank text yields nothing and sends no request."""
        client = self._client.get()
        if not text.strip():
            return
        chunks = client.text_to_speech.stream(
            self.voice_id,
            text=text,
            model_id=self.model,
            output_format=cast("TextToSpeechStreamRequestOutputFormat", self.output_format),
            language_code=self.language_code or _OMIT,
        )
        framer = PcmFramer(self._sample_rate)
        try:
            while True:
                try:
                    with provider_errors("elevenlabs"):
                        data = await next_within(
                            chunks, self.timeout_s, "elevenlabs audio chunk", provider="elevenlabs"
                        )
                except StopAsyncIteration:
                    break
                frame = framer.push(data)
                if frame is not None:
                    yield frame
        finally:
            aclose = getattr(chunks, "aclose", None)  # the SDK's stream() is an async generator
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
