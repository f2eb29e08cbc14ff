"""Speech-to-text: the `STT` Protocol and its providers."""

from agentkit.providers.stt._base import STT, Transcript
from agentkit.providers.stt._groq import GroqSTT
from agentkit.providers.stt._moonshine import MoonshineSTT

__all__ = ["STT", "GroqSTT", "MoonshineSTT", "Transcript"]
