"""False interruptions: sounds played over the agent's reply, and whether they stop it, side by side.

    python bench/turn_eval_set.py          # once: the clips, in ~/.cache/agentkit/turn_eval
    python bench/interruption_eval.py [--real 8] [--setting "pause, then decide"]

An `Agent` (Moonshine tiny STT, a scripted long reply spoken as a tone, the silence rule for turns)
answers a first turn; half a second into its reply a clip of the evaluation set is played over it,
then silence. Two settings on the same audio:

- `immediate`: the rule before issue 14 (`interrupt_min_speech_ms=0`, `interrupt_min_words=0`):
  any speech onset over the reply is a barge-in;
- `pause, then decide` (the defaults): the reply pauses at the onset, and is flushed only for at
  least 300 ms of speech with words that interrupt (an interruption word such as "wait", or words
  that are not backchannels: two in a short sound, where one stray word is how Moonshine writes a
  hum; see agentkit/stream/_interruption.py), else resumed.

Counted per kind of clip: backchannels ("mm-hmm", "yeah", ...), noise (the set's synthetic clips:
shaped-noise coughs, a burst and knocks, which Silero ignores, and voiced coughs, a throat clear, a
laugh and a sigh, which it hears), and real interruptions (the set's first `--real` complete
utterances): how many stopped the reply for good, how many paused it and were resumed, and how many
never paused it. Each clip's decisions (speech, transcript, verdict) are printed and kept in the
JSON. Reported, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentkit import Agent, Stream, TurnTakingOptions  # noqa: E402
from agentkit.agent import FalseInterruption, InterruptionConfirmed, ReplyInterrupted  # noqa: E402
from agentkit.audio import StreamingResampler, float_to_pcm16, read_wav  # noqa: E402
from agentkit.providers import MoonshineSTT  # noqa: E402
from agentkit.testing import ScriptedLLM, ToneTTS, open_recorded_session  # noqa: E402

CLIPS = Path.home() / ".cache" / "agentkit" / "turn_eval"
FIRST_TURN = REPO.parent / "shared" / "baselines" / "fastrtc" / "audio" / "utt2_raw.wav"
RATE = 16000
FRAME = 320  # 20 ms
REPLY = "Here is a long answer that keeps going for a while, so there is time to talk over it. " * 3
SETTINGS = {
    "immediate": TurnTakingOptions(
        end_of_turn_silence_ms=300, interrupt_min_speech_ms=0, interrupt_min_words=0
    ),
    "pause, then decide": TurnTakingOptions(end_of_turn_silence_ms=300),
}


def _load(path: Path) -> np.ndarray:
    frame = read_wav(path)
    return StreamingResampler(frame.sample_rate, RATE).process(frame.samples, last=True)


async def _feed(session: Any, samples: np.ndarray) -> None:
    for start in range(0, samples.shape[0], FRAME):
        await session.receive_audio(float_to_pcm16(samples[start : start + FRAME]))


async def _over_reply(options: TurnTakingOptions, clip: np.ndarray, first: np.ndarray) -> dict[str, Any]:
    """The outcome, 'stopped' (flushed for good), 'resumed' (paused, then played on) or 'ignored'
    (never paused), with each decision's speech, transcript and reason (what the gate judged)."""
    events: list[Any] = []

    class Listener(Agent):
        instructions = "Be brief."
        semantic_turn = None
        first_piece_words = None
        interruption_words_timeout_s = 10.0

        async def on_event(self, event: Any) -> None:
            events.append(event)

    agent = Listener(
        stt=MoonshineSTT("tiny"), llm=ScriptedLLM(REPLY), tts=ToneTTS(ms_per_char=60), turn_taking=options
    )
    session, transport = open_recorded_session(Stream(agent))
    await session.start()
    try:
        await _feed(
            session, np.concatenate([np.zeros(RATE // 4, np.float32), first, np.zeros(RATE // 2, np.float32)])
        )
        await transport.wait_for("response_starting", timeout_s=20)
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(0.5)
        await _feed(session, np.concatenate([clip, np.zeros(RATE * 3 // 2, np.float32)]))
        await asyncio.sleep(1.0)  # the decision is made on caller audio; let its answer land
        seen = list(events)  # before the close, which cuts the still-playing reply short itself
    finally:
        await session.close()
    decisions = [
        {"speech_ms": e.speech_ms, "text": e.text, "verdict": getattr(e, "reason", "confirmed")}
        for e in seen
        if isinstance(e, InterruptionConfirmed | FalseInterruption)
    ]
    if any(isinstance(e, InterruptionConfirmed | ReplyInterrupted) for e in seen):
        return {"outcome": "stopped", "decisions": decisions}
    if any(isinstance(e, FalseInterruption) for e in seen):
        return {"outcome": "resumed", "decisions": decisions}
    return {"outcome": "ignored", "decisions": decisions}


async def main(real: int, settings: list[str]) -> dict[str, Any]:
    labels = {item["id"]: item for item in json.loads((CLIPS / "labels.json").read_text())["items"]}
    kinds = {
        "backchannel": sorted(CLIPS.glob("backchannel-*.wav")),
        "noise or cough": sorted(CLIPS.glob("noise-*.wav")),
        "real interruption": sorted(CLIPS.glob("complete-*.wav"))[:real],
    }
    first = _load(FIRST_TURN)
    table: dict[str, Any] = {}
    for name in settings:
        for kind, paths in kinds.items():
            results = [await _over_reply(SETTINGS[name], _load(p), first) for p in paths]
            outcomes = [r["outcome"] for r in results]
            row: dict[str, Any] = {o: outcomes.count(o) for o in ("stopped", "resumed", "ignored")}
            row["clips"] = len(paths)
            row["per_clip"] = {
                p.stem: {"said": labels.get(p.stem, {}).get("text", ""), **r}
                for p, r in zip(paths, results, strict=True)
            }
            table[f"{name} | {kind}"] = row
            counts = {k: row[k] for k in ("stopped", "resumed", "ignored", "clips")}
            print(f"{name:20} {kind:18} {counts}", flush=True)
            for stem, clip in row["per_clip"].items():
                heard = "; ".join(
                    f"{d['verdict']} {d['speech_ms']} ms {d['text']!r}" for d in clip["decisions"]
                )
                print(f"    {stem:16} {clip['said']!r:34} {clip['outcome']:8} {heard}", flush=True)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--real", type=int, default=8, help="complete utterances played as real interruptions"
    )
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "interruptions.json")
    parser.add_argument(
        "--setting", action="append", choices=list(SETTINGS), help="run only this setting (repeatable)"
    )
    args = parser.parse_args()
    if not CLIPS.is_dir():
        sys.exit("no evaluation set: run bench/turn_eval_set.py first")
    result = asyncio.run(main(args.real, args.setting or list(SETTINGS)))
    args.json.write_text(json.dumps(result, indent=1))
