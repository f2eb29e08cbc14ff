"""The default agent: Moonshine speech-to-text, SmolLM2 on llama.cpp, Kokoro speech. No key, no network.

`agentkit run` with no file serves this same agent; `agentkit run agents/local.py` serves this copy,
which you can edit. Its instructions are in `prompts/local.md`.
"""

from agentkit import Agent, prompt
from agentkit.providers import LocalLLM


class Local(Agent):
    instructions = prompt("local")
    greeting = "Hi! I'm a small assistant running on this computer. What would you like to talk about?"
    stt = "moonshine/tiny"
    # Greedy decoding, short replies cut after two sentences: what a 135M model does best. With
    # internet, `agentkit models download qwen2.5-1.5b` and `LocalLLM("qwen2.5-1.5b")` answer better.
    llm = LocalLLM("smollm2-135m", temperature=0.0, repeat_penalty=1.1, max_tokens=60, max_sentences=2)
    tts = "kokoro/af_heart"
    partial_transcripts = True  # Moonshine is fast enough to transcribe while the caller talks
