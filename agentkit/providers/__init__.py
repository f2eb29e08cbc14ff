"""Providers: small adapters behind Protocols for each stage (VAD, STT, LLM, TTS).

Each stage's package holds its Protocol and its providers; `resolve_stt`, `resolve_llm` and
`resolve_tts` turn short strings such as `"kokoro/af_heart"` into provider objects. `FallbackSTT`,
`FallbackLLM` and `FallbackTTS` put several providers of a stage behind one, tried in order.
"""

from agentkit.providers._fallback import FallbackLLM, FallbackSTT, FallbackTTS
from agentkit.providers._registry import resolve_llm, resolve_stt, resolve_tts
from agentkit.providers.llm import LLM, AnthropicLLM, ChatMessage, GroqLLM, LLMChunk, LLMUsage, LocalLLM
from agentkit.providers.stt import STT, GroqSTT, MoonshineSTT, Transcript
from agentkit.providers.tts import TTS, ElevenLabsTTS, KokoroTTS
from agentkit.providers.turn import EndOfTurnModel, SmartTurn
from agentkit.providers.vad import VAD, SileroVAD, VADStream

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "VAD",
    "AnthropicLLM",
    "ChatMessage",
    "ElevenLabsTTS",
    "EndOfTurnModel",
    "FallbackLLM",
    "FallbackSTT",
    "FallbackTTS",
    "GroqLLM",
    "GroqSTT",
    "KokoroTTS",
    "LLMChunk",
    "LLMUsage",
    "LocalLLM",
    "MoonshineSTT",
    "SileroVAD",
    "SmartTurn",
    "Transcript",
    "VADStream",
    "resolve_llm",
    "resolve_stt",
    "resolve_tts",
]
