"""Voice-to-voice latency per stage of the default local agent, and agentkit's own overhead.

    python bench/agent_latency.py [--turns 10] [--json bench/results/agent/summary.json]

Caller turns are questions spoken by Kokoro (voice `am_michael`, not the agent's), played into a real
session in real time (20 ms frames on a fixed schedule, then silence), and the agent's per-turn
metrics are collected. Three runs, one after another in this process:

1. `local`: `agents/local.py` as shipped: Moonshine tiny, SmolLM2-135M on llama.cpp, Kokoro.
2. `local, LLM not streamed`: the same, but the LLM's whole reply is awaited before any of it goes
   to the TTS: the baseline a pipeline without sentence streaming would give. The ratio of (1) to
   (2) is what streaming buys.
3. `instant LLM`: the LLM replaced by a scripted one that answers at once, so that
   overhead = voice-to-voice − (silence setting + STT + LLM first token + TTS first audio)
   is what agentkit itself adds (turn decision granularity, queues, resampling, pacing).

Reported, not asserted. Needs the model files (AGENTKIT_MODELS_DIR) and the `local` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentkit import Agent  # noqa: E402
from agentkit._talk import talk  # noqa: E402
from agentkit.audio import AudioFrame  # noqa: E402
from agentkit.providers import KokoroTTS  # noqa: E402
from agentkit.providers.llm import ChatMessage, LLMChunk  # noqa: E402
from agentkit.store import TurnMetrics  # noqa: E402
from agentkit.testing import ScriptedLLM  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Can you tell me a fun fact about the moon?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "How far away is the sun?",
    "What is your favourite colour?",
    "Give me a tip for sleeping better.",
    "What day comes after Tuesday?",
    "How do plants make their food?",
    "Recommend a good book to read.",
    "What is two plus two?",
]
STAGES = ("end_of_turn_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "voice_to_voice_ms")


def load_local_agent() -> type[Agent]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_local_agent", REPO / "agents" / "local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    local: type[Agent] = module.Local
    return local


async def synthesise_questions(count: int) -> list[AudioFrame]:
    voice = KokoroTTS(voice="am_michael")
    await voice.warm_up()
    turns = []
    for text in (QUESTIONS * 2)[:count]:
        frames = [frame async for frame in voice.synthesize(text)]
        turns.append(AudioFrame.concat(frames))
    return turns


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarise(name: str, metrics: list[TurnMetrics], silence_ms: int) -> dict[str, Any]:
    row: dict[str, Any] = {"run": name, "turns": len(metrics)}
    for stage in STAGES:
        values = [getattr(m, stage) for m in metrics if getattr(m, stage) is not None]
        row[stage] = {"median": statistics.median(values), "p95": percentile(values, 95)} if values else None
    overheads = [
        m.voice_to_voice_ms - (silence_ms + (m.stt_ms or 0) + (m.llm_ttft_ms or 0) + (m.tts_ttfa_ms or 0))
        for m in metrics
        if m.voice_to_voice_ms is not None
    ]
    row["overhead_ms"] = {"median": statistics.median(overheads), "p95": percentile(overheads, 95)}
    return row


async def run(name: str, agent: Agent, turns: list[AudioFrame]) -> dict[str, Any]:
    print(f"== {name}: {len(turns)} turns in real time", flush=True)
    result = await talk(agent, turns, realtime=True, on_line=lambda who, text: print(f"   {who:<12}{text}"))
    return summarise(name, result.metrics, agent.turn_taking.end_of_turn_silence_ms)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ["stage (median / p95 ms)", *[r["run"] for r in rows]]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for stage in (*STAGES, "overhead_ms"):
        cells = []
        for row in rows:
            value = row.get(stage)
            cells.append("–" if value is None else f"{value['median']:.0f} / {value['p95']:.0f}")
        print(f"| {stage} | " + " | ".join(cells) + " |")
    streamed, unstreamed = rows[0]["voice_to_voice_ms"], rows[1]["voice_to_voice_ms"]
    if streamed and unstreamed:
        ratio = streamed["median"] / unstreamed["median"]
        print(f"\nvoice-to-voice median, streamed / not streamed: {ratio:.2f}")
    overhead = rows[2]["overhead_ms"]["median"]
    print(f"framework overhead (instant LLM), median: {overhead:.0f} ms (target <= 30 ms)")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "agent" / "summary.json")
    args = parser.parse_args(argv)
    local = load_local_agent()
    turns = await synthesise_questions(args.turns)

    class NotStreamed(local):  # type: ignore[valid-type,misc]
        async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            parts = [chunk async for chunk in super().llm_node(history)]
            for part in parts:
                yield part

    instant = ScriptedLLM("Sure, here is a short answer for you. I hope it helps.")
    rows = [
        await run("local", local(greeting=None), turns),
        await run("local, LLM not streamed", NotStreamed(greeting=None), turns),
        await run("instant LLM", local(greeting=None, llm=instant), turns),
    ]
    print_table(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
