"""The agent `agentkit run` serves when given no file: `Local`, the same agent as `agents/local.py`.

Moonshine hears, SmolLM2 (llama.cpp) thinks, Kokoro speaks: no key and no network, only the model
files (see `agentkit.models`) and the `local` extra. Its instructions are `prompts/local.md`, shipped
inside the package as `agentkit/_prompts/local.md`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from agentkit.agent import Agent, prompt

__all__ = ["Local"]


def _instructions() -> str:
    shipped = resources.files("agentkit").joinpath("_prompts", "local.md")
    if shipped.is_file():  # an installed wheel
        return shipped.read_text(encoding="utf-8").strip()
    return prompt("local", directory=Path(__file__).resolve().parents[1] / "prompts")  # a checkout


class Local(Agent):
    instructions = _instructions()
    greeting = "Hi! I'm a small assistant running on this computer. What would you like to talk about?"
    stt = "moonshine/tiny"
    llm = "local/smollm2-135m"
    tts = "kokoro/af_heart"
    partial_transcripts = True  # Moonshine is fast enough to transcribe while the caller talks
