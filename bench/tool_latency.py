"""What one tool round trip costs in agentkit itself: decision → first reply audio, with and without
a tool call, everything else instant.

    python bench/tool_latency.py [--turns 30] [--json bench/results/tools/summary.json]

Both variants run the same `Agent` on a real session (real Silero turn-taking on a recorded
utterance, scripted STT, a tone TTS, the session's real pacing and resampling):

- `no tool`: the LLM step answers "It has shipped." at once;
- `tool`: the first LLM step calls `order_status` (an instant async tool), the second answers the
  same words from its result; no words before the call, so the first audio waits for the round trip.

Per turn it takes `voice_to_voice_ms - end_of_turn_ms` from the turn's metrics (the end-of-turn
decision to the first reply audio sent) and reports median and p95 of each variant and their
difference: the framework cost of a tool round trip (target ≤ 10 ms). Reported, not asserted.
Needs the model files (AGENTKIT_MODELS_DIR) for Silero.
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
sys.path.insert(0, str(REPO / "tests"))

from conftest import speech  # noqa: E402

from agentkit import Agent, Stream, TurnTakingOptions, tool  # noqa: E402
from agentkit.audio import float_to_pcm16  # noqa: E402
from agentkit.providers.llm import ChatMessage, LLMChunk, ToolCall  # noqa: E402
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, open_recorded_session  # noqa: E402

RATE = 16000
FRAME = 320


class Bench(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    tool_filler = None
    use_tool = False

    @tool
    async def order_status(self, order: int) -> str:
        """Where an order is."""
        return "shipped"

    async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        if history[-1].role == "tool" or not self.use_tool:
            yield "It has shipped."
            return
        yield LLMChunk(tool_call=ToolCall(f"call_{len(history)}", "order_status", {"order": 42}))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def run(use_tool: bool, turns: int) -> list[float]:
    agent = Bench(stt=ScriptedSTT("Where is my order?"), llm=ScriptedLLM(), tts=ToneTTS(ms_per_char=2))
    agent.use_tool = use_tool
    session, transport = open_recorded_session(Stream(agent))
    await session.start()
    audio = np.concatenate(
        [np.zeros(RATE // 5, np.float32), speech("utt2").samples, np.zeros(RATE * 6 // 10, np.float32)]
    )
    gaps: list[float] = []
    try:
        for turn in range(turns):
            for start in range(0, audio.shape[0], FRAME):
                await session.receive_audio(float_to_pcm16(audio[start : start + FRAME]))
            event = await transport.wait_for("metrics", timeout_s=20, count=turn + 1)
            figures: dict[str, Any] = event.event.metrics  # type: ignore[union-attr]
            gaps.append(figures["voice_to_voice_ms"] - figures["end_of_turn_ms"])
            await transport.wait_for("response_done", timeout_s=20, count=turn + 1)
    finally:
        await session.close()
    return gaps[2:]  # the first turns warm up the model threads


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "tools" / "summary.json")
    args = parser.parse_args()
    summary: dict[str, Any] = {}
    for label, use_tool in (("no tool", False), ("tool", True)):
        gaps = asyncio.run(run(use_tool, args.turns + 2))
        summary[label] = {
            "turns": len(gaps),
            "median_ms": round(statistics.median(gaps), 2),
            "p95_ms": round(percentile(gaps, 0.95), 2),
        }
    cost = {
        "median_ms": round(summary["tool"]["median_ms"] - summary["no tool"]["median_ms"], 2),
        "p95_ms": round(summary["tool"]["p95_ms"] - summary["no tool"]["p95_ms"], 2),
    }
    summary["tool round trip cost"] = cost
    print("variant | turns | decision→first audio median | p95")
    for label in ("no tool", "tool"):
        row = summary[label]
        print(f"{label} | {row['turns']} | {row['median_ms']:.2f} ms | {row['p95_ms']:.2f} ms")
    verdict = "met" if cost["median_ms"] <= 10 else "missed"
    median, p95 = cost["median_ms"], cost["p95_ms"]
    print(f"tool round trip cost: median {median:.2f} ms, p95 {p95:.2f} ms (≤ 10 ms: {verdict})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
