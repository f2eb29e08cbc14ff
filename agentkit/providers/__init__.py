"""Providers: small adapters behind Protocols (VAD now; STT, LLM and TTS come with the agent pipeline)."""

from agentkit.providers.vad import VAD, SileroVAD, VADStream

__all__ = ["VAD", "SileroVAD", "VADStream"]
