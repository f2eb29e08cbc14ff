"""Backchannels and short interruptions in many voices, judged as an agent judges sound over a reply.

    python bench/interruption_voices.py [--json bench/results/interruption_voices.json]

bench/interruption_eval.py plays eight backchannels in two voices over a real reply; this asks how
the same rule does beyond them. Each phrase below is spoken by ten Kokoro voices and two espeak-ng
voices, with silence around it and the evaluation set's noise floor, and fed in 20 ms frames to what
`TurnTakingHandler` runs for a sound over a reply: the `TurnDetector` on Silero, an
`InterruptionGate` suspected at the onset, and Moonshine tiny's transcript of the sound so far
whenever the gate asks for a decision (at the deadline, at the sound's end when it waits for it, or
at the turn's end). No reply is played: the decision counts caller audio only, so it is the one the
agent would make. Printed and kept per clip: the verdict, the speech and the transcripts it saw.

A backchannel should not stop the reply; a short interruption ("Wait.", "Slow down.") should. The
counts are reported, not asserted.
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
sys.path.insert(0, str(REPO / "bench"))

import turn_eval_set  # noqa: E402

from agentkit.audio import AudioFrame  # noqa: E402
from agentkit.providers import MoonshineSTT, SileroVAD  # noqa: E402
from agentkit.stream._interruption import InterruptionGate, InterruptionState  # noqa: E402
from agentkit.stream._turn import (  # noqa: E402
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnStarted,
    TurnState,
    TurnTakingOptions,
)

RATE = 16000
FRAME = 320
VOICES = (
    "af_heart", "bm_george", "am_michael", "bf_emma", "af_bella", "am_adam", "bf_isabella",
    "bm_lewis", "af_nicole", "am_echo", "espeak:en-us", "espeak:en-gb",
)  # fmt: skip
PHRASES = {
    "backchannel": (
        "Mm-hmm.", "Uh-huh.", "Mhm.", "Hmm.", "Yeah.", "Right.", "Okay.", "Sure.", "Yep.", "I see.",
        "Got it.", "Mm.", "All right.",
    ),
    "short interruption": (
        "Wait.", "Stop.", "No.", "Hold on.", "Sorry?", "Excuse me.", "Hey!", "What?", "One second.",
        "Slow down.", "Not now.", "Go back.", "That's wrong.", "I disagree.", "Never mind.",
        "Actually, no.", "Hang on.", "Say that again?", "Too fast.", "No, no, no.",
    ),
}  # fmt: skip
OPTIONS = TurnTakingOptions(end_of_turn_silence_ms=300)  # as bench/interruption_eval.py


async def _speak(text: str, voice: str) -> np.ndarray:
    if voice.startswith("espeak:"):
        return turn_eval_set._espeak(text, voice.removeprefix("espeak:"), [])
    return await turn_eval_set._kokoro(text, voice)


async def judge(sound: np.ndarray, stt: MoonshineSTT, vad: SileroVAD) -> dict[str, Any]:
    """The gate's decision on `sound` (after 0.5 s of silence), as the handler drives the gate."""
    detector = TurnDetector(vad.stream(), sample_rate=RATE, chunk_samples=vad.chunk_samples, options=OPTIONS)
    gate = InterruptionGate(OPTIONS, sample_rate=RATE, words=True)
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), sound, np.zeros(2 * RATE, np.float32)])
    rng = np.random.default_rng(0)
    audio = audio + (turn_eval_set.NOISE_FLOOR_RMS * rng.standard_normal(audio.shape[0])).astype(np.float32)
    heard: list[str | None] = []

    def result(verdict: str | None, speech_ms: int) -> dict[str, Any]:
        return {"verdict": verdict, "speech_ms": speech_ms, "heard": heard}

    for start in range(0, audio.shape[0], FRAME):
        for event in detector.process(audio[start : start + FRAME]):
            if isinstance(event, TurnStarted) and gate.state is InterruptionState.IDLE:
                gate.suspect(event, at_samples=event.decided_samples)
            elif isinstance(event, TurnEnded) and gate.state is InterruptionState.SUSPECTED:
                heard.append((await stt.transcribe(event.audio)).text)
                return result(gate.judge(event.speech_ms, heard[-1]), event.speech_ms)
            elif isinstance(event, TurnDiscarded) and gate.state is InterruptionState.SUSPECTED:
                return result("too_short", event.speech_ms)
        if gate.state is not InterruptionState.SUSPECTED:
            continue
        speaking = detector.state is TurnState.SPEAKING
        speech_ms = detector.speech_ms
        if (
            gate.step(position_samples=detector.position_samples, speech_ms=speech_ms, speaking=speaking)
            != "decide"
        ):
            continue
        text = None
        so_far = detector.turn_so_far()
        if speech_ms >= OPTIONS.interrupt_min_speech_ms and so_far is not None:
            text = (await stt.transcribe(AudioFrame(so_far, RATE))).text
        heard.append(text)
        verdict = gate.judge_so_far(speech_ms, text) if speaking else gate.judge(speech_ms, text)
        if verdict is not None:
            return result(verdict, speech_ms)
    return result(None, 0)  # Silero never called it speech


async def main() -> dict[str, Any]:
    stt, vad = MoonshineSTT("tiny"), SileroVAD()
    table: dict[str, Any] = {}
    for kind, phrases in PHRASES.items():
        clips: list[dict[str, Any]] = []
        for voice in VOICES:
            for text in phrases:
                clip = {"voice": voice, "said": text, **await judge(await _speak(text, voice), stt, vad)}
                clips.append(clip)
                print(f"{kind:18} {voice:13} {text!r:18} {clip['verdict']!s:11} {clip['heard']}", flush=True)
        stopped = sum(c["verdict"] == "confirmed" for c in clips)
        table[kind] = {"stopped": stopped, "clips": len(clips), "per_clip": clips}
        print(f"{kind}: {stopped} of {len(clips)} stopped the reply", flush=True)
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "interruption_voices.json")
    args = parser.parse_args()
    result = asyncio.run(main())
    args.json.write_text(json.dumps(result, indent=1) + "\n")
