"""Providers named by a short string: `"kind/argument"`, e.g. `"anthropic/claude-haiku-4-5"`.

| stage | string | provider |
|---|---|---|
| STT | `moonshine/tiny` | `MoonshineSTT("tiny")` (local) |
| STT | `groq/<model>` | `GroqSTT(<model>)`, e.g. `groq/whisper-large-v3-turbo` |
| LLM | `local/smollm2-135m` | `LocalLLM()` (llama.cpp, local) |
| LLM | `anthropic/<model>` | `AnthropicLLM(<model>)` |
| LLM | `groq/<model>` | `GroqLLM(<model>)` |
| TTS | `kokoro/<voice>` | `KokoroTTS(voice=<voice>)` (local), e.g. `kokoro/af_heart` |
| TTS | `elevenlabs/<voice id>` | `ElevenLabsTTS(voice_id=<voice id>)` |

The tables are plain dicts of factories, read when a string is resolved; providers are imported
only then, so an SDK that is not installed matters only to agents that use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, TypeVar

from agentkit.exceptions import ConfigError
from agentkit.providers.llm import LLM
from agentkit.providers.stt import STT
from agentkit.providers.tts import TTS

__all__ = ["resolve_llm", "resolve_stt", "resolve_tts"]

P = TypeVar("P")


def _moonshine(arg: str) -> STT:
    from agentkit.providers.stt._moonshine import MoonshineSTT

    return MoonshineSTT(arg)


def _groq_stt(arg: str) -> STT:
    from agentkit.providers.stt._groq import GroqSTT

    return GroqSTT(arg)


def _local_llm(arg: str) -> LLM:
    from agentkit.providers.llm._local import LocalLLM

    return LocalLLM(arg)


def _anthropic(arg: str) -> LLM:
    from agentkit.providers.llm._anthropic import AnthropicLLM

    return AnthropicLLM(arg)


def _groq_llm(arg: str) -> LLM:
    from agentkit.providers.llm._groq import GroqLLM

    return GroqLLM(arg)


def _kokoro(arg: str) -> TTS:
    from agentkit.providers.tts._kokoro import KokoroTTS

    return KokoroTTS(voice=arg)


def _elevenlabs(arg: str) -> TTS:
    from agentkit.providers.tts._elevenlabs import ElevenLabsTTS

    return ElevenLabsTTS(voice_id=arg)


STT_PROVIDERS: dict[str, Callable[[str], STT]] = {"moonshine": _moonshine, "groq": _groq_stt}
LLM_PROVIDERS: dict[str, Callable[[str], LLM]] = {
    "local": _local_llm,
    "anthropic": _anthropic,
    "groq": _groq_llm,
}
TTS_PROVIDERS: dict[str, Callable[[str], TTS]] = {"kokoro": _kokoro, "elevenlabs": _elevenlabs}


def _resolve(spec: Any, table: dict[str, Callable[[str], P]], stage: str) -> P:
    if not isinstance(spec, str):
        return spec  # type: ignore[no-any-return]  # already a provider object
    kind, _, arg = spec.partition("/")
    factory = table.get(kind)
    if factory is None or not arg:
        known = ", ".join(f"'{name}/...'" for name in table)
        close = difflib.get_close_matches(kind, table, n=1)
        hint = f"did you mean '{close[0]}/{arg}'? " if close and factory is None else ""
        raise ConfigError(
            f"unknown {stage} provider {spec!r}: {hint}use one of {known}, or a provider object"
        )
    return factory(arg)


def resolve_stt(spec: STT | str) -> STT:
    """An STT provider from an object or a string like `"moonshine/tiny"`."""
    return _resolve(spec, STT_PROVIDERS, "STT")


def resolve_llm(spec: LLM | str) -> LLM:
    """An LLM provider from an object or a string like `"anthropic/claude-haiku-4-5"`."""
    return _resolve(spec, LLM_PROVIDERS, "LLM")


def resolve_tts(spec: TTS | str) -> TTS:
    """A TTS provider from an object or a string like `"kokoro/af_heart"`."""
    return _resolve(spec, TTS_PROVIDERS, "TTS")
