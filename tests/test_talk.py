"""`agentkit talk`: WAV turns through an agent file offline, transcript and timings printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import SPEECH_DIR

from agentkit.audio import read_wav
from agentkit.cli import main

AGENT_FILE = """
from agentkit import Agent, TurnTakingOptions
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

class Scripted(Agent):
    greeting = "Hello."
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    stt = ScriptedSTT("What is the time?", "Thanks.")
    llm = ScriptedLLM("It is noon. Anything else?", "You are welcome.")
    tts = ToneTTS(ms_per_char=20)
"""


def test_talk_runs_turns_and_writes_the_replies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models_dir: object
) -> None:
    agent_file = tmp_path / "scripted.py"
    agent_file.write_text(AGENT_FILE)
    out = tmp_path / "reply.wav"
    turn = str(SPEECH_DIR / "utt2_raw.wav")
    assert main(["talk", str(agent_file), "-i", turn, "-i", turn, "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    said = [line.split(None, 1) for line in printed if not line.startswith((" ", "wrote"))]
    assert said == [
        ["agent:", "Hello."],
        ["you:", "What is the time?"],
        ["agent:", "It is noon. Anything else?"],
        ["you:", "Thanks."],
        ["agent:", "You are welcome."],
    ]
    timings = [line for line in printed if line.startswith(" ")]
    assert len(timings) == 2 and all("voice-to-voice" in line and "stt" in line for line in timings)
    reply = read_wav(out)
    chars = len("Hello.") + len("It is noon.") + len("Anything else?") + len("You are welcome.")
    assert reply.duration_s == pytest.approx(chars * 0.020, abs=0.05)


def test_talk_says_when_an_input_has_no_speech(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], models_dir: object
) -> None:
    import numpy as np

    from agentkit.audio import AudioFrame, write_wav

    agent_file = tmp_path / "scripted.py"
    agent_file.write_text(AGENT_FILE.replace('greeting = "Hello."', "greeting = None"))
    quiet = tmp_path / "quiet.wav"
    write_wav(quiet, AudioFrame(np.zeros(16000, dtype=np.float32), 16000))
    assert main(["talk", str(agent_file), "-i", str(quiet)]) == 1
    assert "no speech detected" in capsys.readouterr().err


def test_fast_forward_takes_the_same_turns_as_real_time(tmp_path: Path, models_dir: object) -> None:
    """One WAV with a 0.8 s pause mid-sentence is two turns (500 ms silence rule): fast-forward must
    hear and transcribe both, as real time does, not cut the first turn's reply before its
    transcript (which used to print two empty agent lines and no caller line)."""
    from test_turn_taking_synth import synthesise

    from agentkit import Agent
    from agentkit._talk import talk
    from agentkit.audio import AudioFrame
    from agentkit.testing import ScriptedLLM, ToneTTS

    class Paused(Agent):
        llm = ScriptedLLM("First answer.", "Second answer.", "Third answer.", "Fourth answer.")
        tts = ToneTTS(ms_per_char=20)
        semantic_turn = None  # the 500 ms silence rule, which splits this sentence in two

    samples = synthesise(tmp_path, 'My order number is <break time="800ms"/> four five seven two nine.')
    turn = AudioFrame(samples, 16000)
    fast = asyncio.run(talk(Paused(), [turn]))
    real = asyncio.run(talk(Paused(), [turn], realtime=True))
    callers = [[text for who, text in r.lines if who == "you"] for r in (fast, real)]
    assert len(callers[0]) == 2 and all(callers[0])
    assert callers[0] == callers[1]
    assert [who for who, _ in fast.lines] == ["you", "agent", "you", "agent"]
