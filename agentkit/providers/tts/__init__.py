"""Text-to-speech: the `TTS` Protocol and its providers."""

from agentkit.providers.tts._base import TTS
from agentkit.providers.tts._elevenlabs import ElevenLabsTTS
from agentkit.providers.tts._kokoro import KokoroTTS

__all__ = ["TTS", "ElevenLabsTTS", "KokoroTTS"]
