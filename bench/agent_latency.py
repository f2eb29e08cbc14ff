"""Voice-to-voice latency per stage of the default local agent, and agentkit's own overhead.

    python bench/agent_latency.py [--turns 10] [--json bench/results/agent/summary.json]
    python bench/agent_latency.py --preemptive-compare [--rounds 2] [--preemptive-after-ms 120] ...
    python bench/agent_latency.py --compare first_piece_words=3 [--rounds 2] ...

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

With `--preemptive-compare`, only run (1) is made, `--rounds` times, with `preemptive_generation`
on for every other turn (the other half in the next round), so that both modes meet the same load
(`--compare FIELD=VALUE` does the same for any field of the session's config, e.g.
`first_piece_words=3`, against the agent as built):
the machine's other work moves single figures by hundreds of milliseconds between runs. Each
round's load average is reported with the figures, which also include
`heard_v2v_ms`: from the moment the turn's last speech sample reached the agent (the arrival time
of the input frame that held it) to the reply's first audio sent. The agent's own
`voice_to_voice_ms` now counts from the same moment (`TurnTakingHandler.arrival_time`), so the two
agree to within a frame; before that change it dated the end of speech back from the end-of-turn
decision, which left out the time the decision itself took (a Smart Turn check blocks the input
for its ~70 ms, more when the cores are busy), and the JSON of earlier runs shows that gap.

Reported, not asserted. Needs the model files (AGENTKIT_MODELS_DIR) and the `local` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
from collections import deque
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
from agentkit.stream import TurnEnded, TurnStarted  # noqa: E402
from agentkit.stream._handlers import PlayoutEvent, PlayoutStarted  # noqa: E402
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
    row["preemptive_turns"] = sum(m.preemptive for m in metrics)
    return row


async def run(name: str, agent: Agent, turns: list[AudioFrame]) -> dict[str, Any]:
    print(f"== {name}: {len(turns)} turns in real time", flush=True)
    load_before = os.getloadavg()[0]
    result = await talk(agent, turns, realtime=True, on_line=lambda who, text: print(f"   {who:<12}{text}"))
    row = summarise(name, result.metrics, agent.turn_taking.end_of_turn_silence_ms)
    row["load_avg_1min"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return row


def alternating(
    local: type[Agent],
    offset: int,
    on_turns: dict[int, bool],
    heard: dict[int, float],
    change: dict[str, Any],
) -> type[Agent]:
    """`local`, with the session settings in `change` for every other turn (for turn n when n +
    `offset` is odd; noted in `on_turns`) and as built for the others, noting each turn's
    `heard_v2v_ms` (see the module docstring)."""

    class Alternating(local):  # type: ignore[valid-type,misc]
        _speech_end_at: float | None = None
        _index = -1
        _built: Any = None

        async def on_turn_started(self, event: TurnStarted, *, barge_in: bool) -> None:
            session = self.session
            if self._built is None:
                self._built = session.config
            on = (session.turns + offset) % 2 == 1
            session.config = dataclasses.replace(self._built, **change) if on else self._built
            on_turns[session.turns] = on
            await super().on_turn_started(event, barge_in=barge_in)

        async def receive(self, frame: AudioFrame) -> None:
            arrivals = self.__dict__.setdefault("_arrivals", deque(maxlen=256))
            arrivals.append((frame.timestamp_samples + frame.num_samples, self.context.clock.now()))
            await super().receive(frame)

        async def on_turn_ended(self, event: TurnEnded) -> None:
            end, self._index = event.speech_end_samples, self.session.turns
            for frame_end, at in self.__dict__.get("_arrivals", ()):
                if frame_end >= end:  # the frame that held the last speech sample
                    self._speech_end_at = at - (frame_end - end) / self.input_sample_rate
                    break
            await super().on_turn_ended(event)

        def on_playout(self, event: PlayoutEvent) -> None:
            if isinstance(event, PlayoutStarted) and self._speech_end_at is not None:
                heard[self._index] = round((event.at_s - self._speech_end_at) * 1000, 1)
                self._speech_end_at = None
            super().on_playout(event)

    return Alternating


async def compare(
    local: type[Agent],
    turns: list[AudioFrame],
    rounds: int,
    after_ms: int,
    *,
    semantic: bool = True,
    change: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run `local` `rounds` times with the session settings in `change` (default: preemptive
    generation on) for every other turn (the other turns in the next round), and summarise the
    turns of each mode over all rounds."""
    change = {"preemptive_generation": True} if change is None else change
    label = ", ".join(f"{key}={value}" for key, value in change.items())
    metrics: dict[bool, list[TurnMetrics]] = {False: [], True: []}
    heard_ms: dict[bool, list[float | None]] = {False: [], True: []}
    loads = []
    for number in range(rounds):
        on_turns: dict[int, bool] = {}
        heard: dict[int, float] = {}
        settings: dict[str, Any] = {} if semantic else {"semantic_turn": None}
        agent = alternating(local, number % 2, on_turns, heard, change)(
            greeting=None, preemptive_after_ms=after_ms, **settings
        )
        print(f"== round {number + 1}: {len(turns)} turns in real time", flush=True)
        load_before = os.getloadavg()[0]
        result = await talk(
            agent, turns, realtime=True, on_line=lambda who, text: print(f"   {who:<12}{text}")
        )
        loads.append((round(load_before, 2), round(os.getloadavg()[0], 2)))
        for m in result.metrics:
            on = on_turns[m.turn_index]
            metrics[on].append(m)
            heard_ms[on].append(heard.get(m.turn_index))
    rows = []
    for on in (False, True):
        row = summarise(label if on else "as built", metrics[on], 0)
        del row["overhead_ms"]
        values = [v for v in heard_ms[on] if v is not None]
        row["heard_v2v_ms"] = {"median": statistics.median(values), "p95": percentile(values, 95)}
        row["after_ms"], row["rounds"], row["load_avg_1min"] = after_ms, rounds, loads
        row["semantic_turn"] = semantic
        row["per_turn"] = [
            {
                **{stage: getattr(m, stage) for stage in ("turn_index", *STAGES, "preemptive")},
                "heard_v2v_ms": h,
            }
            for m, h in zip(metrics[on], heard_ms[on], strict=True)
        ]
        rows.append(row)
    print(f"\n| stage (median / p95 ms; preemptive_after_ms {after_ms}) | as built | {label} |")
    print("|---|---|---|")
    for stage in (*STAGES, "heard_v2v_ms"):
        cells = [
            "–" if r[stage] is None else f"{r[stage]['median']:.0f} / {r[stage]['p95']:.0f}" for r in rows
        ]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    print(
        "| turns (preemptive) | " + " | ".join(f"{r['turns']} ({r['preemptive_turns']})" for r in rows) + " |"
    )
    print("load average (1 min) before–after each round: " + ", ".join(f"{a:.2f}–{b:.2f}" for a, b in loads))
    return rows


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
    parser.add_argument("--preemptive-compare", action="store_true", help="`local`, it on every other turn")
    parser.add_argument("--rounds", type=int, default=2, help="runs with --preemptive-compare")
    parser.add_argument("--preemptive-after-ms", type=int, default=Agent.preemptive_after_ms)
    parser.add_argument("--no-semantic-turn", action="store_true", help="turns end on silence alone")
    parser.add_argument(
        "--compare",
        metavar="FIELD=VALUE",
        action="append",
        help="like --preemptive-compare, with this session setting (JSON value) on every other turn",
    )
    args = parser.parse_args(argv)
    local = load_local_agent()
    turns = await synthesise_questions(args.turns)
    if args.preemptive_compare or args.compare:
        semantic = not args.no_semantic_turn
        pairs = (item.split("=", 1) for item in args.compare or ())
        change = {field: json.loads(value) for field, value in pairs} or None
        rows = await compare(
            local, turns, args.rounds, args.preemptive_after_ms, semantic=semantic, change=change
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\nresults: {args.json}")
        return 0

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
