"""The default agent: Moonshine speech-to-text, SmolLM2 on llama.cpp, Kokoro speech. No key, no network.

`agentkit run` with no file serves this same agent; `agentkit run agents/local.py` serves this copy,
which you can edit. Its instructions are in `prompts/local.md`.
"""

from agentkit import Agent, prompt


class Local(Agent):
    instructions = prompt("local")
    greeting = "Hi! I'm a small assistant running on this computer. What would you like to talk about?"
    stt = "moonshine/tiny"
    llm = "local/smollm2-135m"
    tts = "kokoro/af_heart"
    partial_transcripts = True  # Moonshine is fast enough to transcribe while the caller talks
