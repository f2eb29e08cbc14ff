"""The full `Agent` of `bench/concurrent_calls.py` whose providers go through the real cloud SDKs.

Groq (speech to text), Anthropic (the LLM) and ElevenLabs (text to speech) clients talk to the
`agentkit.testing` HTTP fakes on loopback (`bench/load_agents/cloud_fakes.py`, a process of its
own, whose CPU the benchmark reports separately); their base URLs come from the environment.
"""

import os

from agentkit import Agent, Stream
from agentkit.providers import AnthropicLLM, ElevenLabsTTS, GroqSTT

KEY = "bench-key"

agent = Agent(
    instructions="You answer briefly.",
    stt=GroqSTT(language="en", api_key=KEY, base_url=os.environ["BENCH_GROQ_URL"]),
    llm=AnthropicLLM(api_key=KEY, base_url=os.environ["BENCH_ANTHROPIC_URL"]),
    tts=ElevenLabsTTS(voice_id="bench-voice", api_key=KEY, base_url=os.environ["BENCH_ELEVENLABS_URL"]),
    semantic_turn=None,
    preemptive_generation=os.environ.get("BENCH_PREEMPTIVE") == "1",  # --preemptive
)
stream = Stream(agent, concurrency_limit=None)
