"""End of speech to first reply audio over WebRTC, next to the same over the native WebSocket.

    python bench/webrtc_latency.py [--runs 20] [--seed 0] [--json FILE]

One echo server (`Stream(ReplyOnPause(echo))`, default turn-taking: 500 ms end-of-turn silence) runs
in a child process on a free loopback port; this process calls it `--runs` times per transport,
alternating the two baseline WAVs, each call a fresh connection:

- WebRTC: an aiortc peer (`agentkit.testing.WebRTCCaller`) posts its offer to
  `/webrtc/offer`, then plays the WAV through its microphone track (48 kHz, Opus, 20 ms frames on a
  real-time schedule) after 0-0.6 s of seeded silence;
- WebSocket: `agentkit.testing.WebSocketCaller` on `/ws`, 48 kHz 16-bit PCM in 20 ms frames, the same
  WAV and lead silence.

Latency = first reply audio received - end of speech (end of the last 10 ms block above -45 dBFS, at
the moment the frame holding it was handed to the socket / RTP sender). "Reply audio" is the first
received 20 ms frame (WebRTC) or message (WebSocket) above -80 dBFS, on both transports: an idle
WebRTC track carries digital silence, so the digital silence at the head of an echo (its pre-roll
reaches back into the lead silence) cannot be told apart there, and the WebSocket figure skips it
too. Both peers use only 127.0.0.1 (`loopback_ice()` in both processes) and no STUN/TURN server.
Reported, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SPEECH_DIR = REPO.parent / "shared" / "baselines" / "fastrtc" / "audio"
WAVS = ("utt2_raw.wav", "utt1_raw.wav")
REPLY_DBFS = -80.0
TIMEOUT_S = 10.0


def serve(port: int) -> None:
    """The child process: the echo stream on 127.0.0.1:`port`, ICE on loopback only."""
    import uvicorn

    from agentkit import ReplyOnPause, Stream
    from agentkit.server import create_app
    from agentkit.testing import loopback_ice

    def echo(audio: Any) -> Any:
        yield audio

    with loopback_ice():
        uvicorn.run(create_app(Stream(ReplyOnPause(echo))), host="127.0.0.1", port=port, log_level="warning")


async def wait_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError("the echo server exited")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the echo server did not start")


async def webrtc_run(base_url: str, audio: Any, lead_s: float) -> float | None:
    from agentkit.testing import WebRTCCaller

    async with WebRTCCaller(base_url) as caller:
        await asyncio.sleep(lead_s)  # the microphone sends silence meanwhile
        speech_end_t = await caller.play(audio, tail_silence_s=0.5)
        if speech_end_t is None:
            return None
        try:
            reply_t = await caller.wait_for_audio_after(speech_end_t, TIMEOUT_S, dbfs=REPLY_DBFS)
        except TimeoutError:
            return None
        caller.send_json({"type": "stop"})
        return reply_t - speech_end_t


async def websocket_run(ws_url: str, audio: Any, lead_s: float) -> float | None:
    from agentkit.testing import WebSocketCaller, rms_dbfs

    async with WebSocketCaller(ws_url, sample_rate=48000) as caller:
        played = await caller.play(audio, lead_silence_s=lead_s, tail_silence_s=0.5)
        if played.speech_end_t is None:
            return None
        try:
            await caller.wait_for_event("response_done", TIMEOUT_S)
        except TimeoutError:
            return None
        await caller.stop()
        loud = [c.t for c in caller.audio_chunks if rms_dbfs(c.samples) > REPLY_DBFS]
        return loud[0] - played.speech_end_t if loud else None


def summary(latencies: list[float | None]) -> dict[str, Any]:
    ok = sorted(x for x in latencies if x is not None)
    p95 = ok[min(len(ok) - 1, round(0.95 * (len(ok) - 1)))] if ok else None
    return {
        "runs": len(latencies),
        "failures": len(latencies) - len(ok),
        "median_s": statistics.median(ok) if ok else None,
        "p95_s": p95,
        "latencies_s": latencies,
    }


async def measure(port: int, runs: int, seed: int) -> dict[str, Any]:
    from agentkit.audio import AudioFrame, StreamingResampler, read_wav
    from agentkit.testing import loopback_ice

    recordings = []
    for name in WAVS:
        frame = read_wav(SPEECH_DIR / name)
        samples = StreamingResampler(frame.sample_rate, 48000).process(frame.samples, last=True)
        recordings.append(AudioFrame(samples, 48000))
    rng = random.Random(seed)
    plan = [(recordings[i % len(recordings)], rng.uniform(0.0, 0.6)) for i in range(runs)]
    base_url = f"http://127.0.0.1:{port}"
    results: dict[str, list[float | None]] = {"webrtc": [], "websocket": []}
    with loopback_ice():
        for audio, lead_s in plan:  # interleaved, so drifts in machine load hit both alike
            results["webrtc"].append(await webrtc_run(base_url, audio, lead_s))
            results["websocket"].append(await websocket_run(f"ws://127.0.0.1:{port}/ws", audio, lead_s))
    return {name: summary(values) for name, values in results.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="calls per transport")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    os.environ.setdefault("AGENTKIT_MODELS_DIR", str(REPO.parent / "shared" / "models"))
    os.environ.setdefault("AGENTKIT_STORE", "memory://")
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        asyncio.run(wait_healthy(f"http://127.0.0.1:{port}", process))
        started = time.monotonic()
        figures = asyncio.run(measure(port, args.runs, args.seed))
    finally:
        process.terminate()
        process.wait(timeout=15)
    rtc, ws = figures["webrtc"], figures["websocket"]
    took_s = time.monotonic() - started
    print(f"{args.runs} calls per transport in {took_s:.0f} s (echo, 500 ms end-of-turn silence)")
    print(f"{'':10} {'median':>8} {'p95':>8} {'failures':>9}")
    for name, row in (("webrtc", rtc), ("websocket", ws)):
        median, p95 = row["median_s"], row["p95_s"]
        print(f"{name:10} {median or float('nan'):8.3f} {p95 or float('nan'):8.3f} {row['failures']:9d}")
    if rtc["median_s"] and ws["median_s"] and rtc["p95_s"] and ws["p95_s"]:
        median_ratio, p95_ratio = rtc["median_s"] / ws["median_s"], rtc["p95_s"] / ws["p95_s"]
        print(f"ratio webrtc/websocket: median {median_ratio:.2f}, p95 {p95_ratio:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
