"""The full `Agent` of `bench/concurrent_calls.py` with in-process scripted providers.

Real Silero turn-taking, the agent pipeline (history, sentence streaming, pacing, barge-in) and the
conversation store (`AGENTKIT_STORE`, SQLite or Redis); STT and LLM answer at once and the TTS
speaks a tone, so the figures are agentkit's own cost per call. Semantic end of turn is off: it is a
quality feature with a model run per pause (see docs/benchmarks.md, "Turn-taking quality").
"""

import os

from agentkit import Agent, Stream
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

agent = Agent(
    instructions="You answer briefly.",
    stt=ScriptedSTT("What are your opening hours today?", keep=0),
    llm=ScriptedLLM("We are open until six. Anything else?", keep=0),
    tts=ToneTTS(sample_rate=16000, ms_per_char=25.0, keep=0),
    semantic_turn=None,
    preemptive_generation=os.environ.get("BENCH_PREEMPTIVE") == "1",  # --preemptive
)
stream = Stream(agent, concurrency_limit=None)
