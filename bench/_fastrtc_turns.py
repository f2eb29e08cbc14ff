"""FastRTC 0.0.34's own turn logic, offline: run by bench/turn_taking_eval.py in bench/.fastrtc/venv.

    bench/.fastrtc/venv/bin/python bench/_fastrtc_turns.py WAV [WAV ...]   (16 kHz mono PCM16)

Each WAV is fed in 20 ms frames to a fresh `fastrtc.ReplyOnPause` (default `AlgoOptions`: 0.6 s
chunks, started talking above 0.2 s of speech in a chunk, a pause below 0.1 s) through its own
`process_audio`, exactly as its `receive` does. When it detects a pause, the state is renewed as its
`emit` does when it starts the reply. Prints one JSON line per WAV: the sample positions at which it
said `started_talking` and `pause_detected` (the position of the end of the frame that decided it).
Needs HF_HUB_CACHE pointing at bench/.fastrtc/hf_cache (its Silero VAD v4) and HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import sys
import wave

import numpy as np
from fastrtc import ReplyOnPause
from fastrtc.reply_on_pause import AppState

FRAME = 320


class _Offline(ReplyOnPause):
    def send_message_sync(self, msg):  # type: ignore[no-untyped-def]
        if "started_talking" in str(msg):
            self.started.append(self.position)


def _reply(audio):  # type: ignore[no-untyped-def]
    yield audio


def run(path: str) -> dict[str, object]:
    with wave.open(path) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    handler = _Offline(_reply, input_sample_rate=rate)
    handler.started, handler.position = [], 0
    pauses: list[int] = []
    for start in range(0, pcm.shape[0], FRAME):
        frame = pcm[start : start + FRAME].reshape(1, -1)
        handler.position = start + frame.shape[1]
        handler.process_audio((rate, frame), handler.state)
        if handler.state.pause_detected:
            pauses.append(handler.position)
            handler.state = AppState()  # what emit() does when it starts the reply
    return {"wav": path, "started_talking": handler.started, "pause_detected": pauses}


def main() -> int:
    for path in sys.argv[1:]:
        print(json.dumps(run(path)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
