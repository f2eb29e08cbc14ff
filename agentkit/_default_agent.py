"""The agent `agentkit run` serves when given no file: `Local`, the same agent as `agents/local.py`.

Moonshine hears, SmolLM2 (llama.cpp) thinks, Kokoro speaks: no key and no network, only the model
files (see `agentkit.models`) and the `local` extra. Its instructions are `prompts/local.md`, shipped
inside the package as `agentkit/_prompts/local.md`.

SmolLM2-135M knows simple facts but drifts when left to talk, so the instructions ask for one short
English sentence and show six example answers, decoding is greedy, and the reply stops after two
sentences (`bench/default_llm_eval.py` measures what this buys).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from agentkit.agent import Agent, prompt
from agentkit.providers.llm import LocalLLM

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
    llm = LocalLLM("smollm2-135m", temperature=0.0, repeat_penalty=1.1, max_tokens=60, max_sentences=2)
    tts = "kokoro/af_heart"
    partial_transcripts = True  # Moonshine is fast enough to transcribe while the caller talks
