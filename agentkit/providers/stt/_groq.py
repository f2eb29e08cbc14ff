"""`GroqSTT`: Whisper on Groq through the official `groq` SDK.

```python
stt = GroqSTT("whisper-large-v3-turbo", language="en")   # key from GROQ_API_KEY
transcript = await stt.transcribe(turn_audio)              # 16 kHz mono AudioFrame
```

Wire format: `POST /openai/v1/audio/transcriptions`, `multipart/form-data` with the fields `file`
(here a 16-bit mono WAV), `model`, `language` (ISO-639-1, optional), `response_format` (`json`) and
`temperature`; the answer is `{"text": "..."}`.
"""

from __future__ import annotations

import io
import wave
from typing import TYPE_CHECKING

from agentkit.audio import AudioFrame, float_to_pcm16
from agentkit.providers._clients import LazyClient, check_timing, sdk_client
from agentkit.providers._errors import provider_errors
from agentkit.providers._keys import import_sdk
from agentkit.providers.stt._base import Transcript

if TYPE_CHECKING:
    from groq import AsyncGroq

__all__ = ["GroqSTT", "wav_bytes"]

_SAMPLE_RATE = 16000


class GroqSTT:
    """Speech-to-text over a whole turn with a Groq-hosted Whisper model.

    The turn's audio is uploaded as a WAV file (about 32 kB per second at 16 kHz). The client opens
    on `warm_up()` or first use; a missing key raises `ConfigError` there. `timeout_s` bounds the
    upload and the wait for the answer. `max_retries` (SDK retries) defaults to 0, as for the LLMs.
    """

    def __init__(
        self,
        model: str = "whisper-large-v3-turbo",
        *,
        language: str | None = None,
        prompt: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        max_retries: int = 0,
    ) -> None:
        check_timing(timeout_s, max_retries)
        self.model = model
        self.language = language
        self.prompt = prompt
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client: LazyClient[AsyncGroq] = sdk_client(
            "groq",
            api_key=api_key,
            base_url=base_url,
            timeout_s=timeout_s,
            max_retries=max_retries,
            owner="GroqSTT",
        )

    @property
    def name(self) -> str:
        return f"groq/{self.model}"

    @property
    def sample_rate(self) -> int:
        return _SAMPLE_RATE

    def __repr__(self) -> str:
        return f"GroqSTT({self.model!r}, language={self.language!r})"

    async def warm_up(self) -> None:
        """Resolve the key and create the SDK client; idempotent."""
        self._client.get()

    async def aclose(self) -> None:
        """Close the SDK client and its connections; idempotent (a later call opens a new client)."""
        await self._client.aclose()

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        """Transcribe one turn; empty audio gives an empty transcript without a request."""
        client = self._client.get()
        if audio.num_samples == 0:
            return Transcript(text="", audio_s=0.0, language=self.language)
        sdk = import_sdk("groq")
        # Encoding is a scaled copy of the samples: ~1 ms for 10 s of audio, fine on the loop.
        upload = ("audio.wav", wav_bytes(audio), "audio/wav")
        with provider_errors("groq"):
            result = await client.audio.transcriptions.create(
                file=upload,
                model=self.model,
                language=self.language or sdk.NOT_GIVEN,
                prompt=self.prompt or sdk.NOT_GIVEN,
                response_format="json",
                temperature=0.0,
            )
        return Transcript(text=result.text.strip(), audio_s=audio.duration_s, language=self.language)


def wav_bytes(audio: AudioFrame) -> bytes:
    """`audio` as the bytes of a mono 16-bit PCM WAV file at the frame's own rate."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(audio.sample_rate)
        wav.writeframes(float_to_pcm16(audio.samples))
    return buffer.getvalue()
