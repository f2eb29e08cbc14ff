"""CPU cost per 20 ms frame on each transport's path, and Silero's cost per chunk by batch size.

    python bench/frame_cost.py [--sessions 50] [--seconds 6] [--batch-sizes 1,10,50,200] [--only in,out,vad]

No network and no server: each transport's connection class runs on a socket that drops what it is
sent, in this process, so what is measured is agentkit's own work per frame.

1. In: `--sessions` callers on each transport at once, each pushing `--seconds` of real speech (the
   baseline WAVs, a silent gap between them) as fast as the server takes it, message by message as
   the wire carries it (Twilio: JSON + base64 mu-law 8 kHz; FastRTC: the same at 48 kHz; native:
   binary 16-bit PCM at 16 kHz). The handler is `ReplyOnPause` with a reply that says nothing, so the
   figures are turn-taking and the transport alone. Printed: CPU microseconds per input frame on the
   event loop's thread (what saturates first) and in the whole process (the audio thread included),
   with turn detection batched across sessions (`TurnBatcher`) and unbatched (one executor hop and
   one VAD call per session, as before the batcher).
2. Out: one reply frame (20 ms at 24 kHz from the TTS) resampled, encoded and sent, per transport.
3. VAD: Silero microseconds per session-chunk for N sessions' chunks, one call per stream versus one
   batched call (`SileroVAD.probabilities`), and through the batcher's whole job (split, VAD, state
   machine) for N sessions with one 20 ms frame each.

Models: `AGENTKIT_MODELS_DIR` (default ../shared/models).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmark the working tree this script belongs to
os.environ.setdefault("AGENTKIT_MODELS_DIR", str(REPO.parent / "shared" / "models"))
SPEECH = REPO.parent / "shared" / "baselines" / "fastrtc" / "audio"

from starlette.websockets import WebSocketState  # noqa: E402

from agentkit import AudioFrame, ReplyOnPause, Stream, StreamingResampler  # noqa: E402
from agentkit._executor import run_audio_job  # noqa: E402
from agentkit.audio import Samples, float_to_pcm16, read_wav  # noqa: E402
from agentkit.providers.vad import SileroVAD  # noqa: E402
from agentkit.stream import TurnDetector, TurnEvent, _turn_handler  # noqa: E402
from agentkit.transports._twilio_webhook import CallTokens  # noqa: E402
from agentkit.transports._ws_common import samples_to_mulaw  # noqa: E402
from agentkit.transports.twilio import TwilioConnection  # noqa: E402
from agentkit.transports.websocket import FastRTCConnection, NativeConnection  # noqa: E402

try:
    from agentkit.stream import _turn_batch
except ImportError:  # a tree from before the batcher: run this file there for the "before" figures
    _turn_batch = None  # type: ignore[assignment]

FRAME_S = 0.02


class NullSocket:
    """Enough of Starlette's `WebSocket` for a connection class: it drops what it is sent."""

    application_state = WebSocketState.CONNECTED
    client = None

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: dict[str, Any]) -> None:
        self.sent += 1

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        pass


class Unbatched:
    """Turn detection as before the batcher: one audio-thread job per session per frame."""

    async def process(self, vad: Any, detector: TurnDetector, samples: Samples) -> list[TurnEvent]:
        return await run_audio_job(detector.process, samples)

    async def convert_and_process(
        self, vad: Any, detector: TurnDetector, convert: Callable[[], Samples]
    ) -> tuple[list[TurnEvent], int]:
        def job() -> tuple[list[TurnEvent], int]:
            samples = convert()
            return detector.process(samples), samples.shape[0]

        return await run_audio_job(job)

    def convert_and_process_soon(
        self,
        vad: Any,
        detector: TurnDetector,
        convert: Callable[[], Samples],
        done: Callable[[list[TurnEvent] | BaseException, int], None],
    ) -> None:
        async def hop() -> None:
            try:
                events, n = await self.convert_and_process(vad, detector, convert)
            except Exception as exc:
                done(exc, 0)
            else:
                done(events, n)

        _PENDING.add(task := asyncio.get_running_loop().create_task(hop()))
        task.add_done_callback(_PENDING.discard)

    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def hold(self, detector: TurnDetector) -> None:
        pass

    def release(self, detector: TurnDetector) -> None:
        pass


_PENDING: set[asyncio.Task[None]] = set()


@functools.cache
def speech(rate: int, seconds: float) -> Samples:
    """The baseline utterances with a second of silence after each, looped to `seconds`, at `rate`."""
    parts: list[Samples] = []
    for name in ("utt1", "utt2"):
        frame = read_wav(SPEECH / f"{name}_raw.wav")
        parts += [StreamingResampler(frame.sample_rate, rate).process(frame.samples, last=True)]
        parts += [np.zeros(rate, dtype=np.float32)]
    audio = np.concatenate(parts)
    return np.resize(audio, round(seconds * rate)).astype(np.float32)


def frames(audio: Samples, rate: int) -> Iterator[Samples]:
    size = round(FRAME_S * rate)
    for start in range(0, audio.shape[0] - size + 1, size):
        yield audio[start : start + size]


def say_nothing(audio: AudioFrame) -> Iterator[AudioFrame]:
    yield from ()


# -- 1. inbound ---------------------------------------------------------------------------------------
Feed = Callable[[Any], Awaitable[None]]


async def _twilio(stream: Any, index: int) -> tuple[Any, list[Feed]]:
    conn = TwilioConnection(NullSocket(), stream, CallTokens(), require_token=False)  # type: ignore[arg-type]
    sid = f"MZ{index:032d}"
    start = {"event": "start", "streamSid": sid, "start": {"streamSid": sid, "callSid": f"CA{index:032d}"}}
    await conn._on_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await conn._on_text(json.dumps(start))
    texts = []
    for n, frame in enumerate(frames(speech(8000, ARGS.seconds), 8000)):
        payload = base64.b64encode(samples_to_mulaw(frame)).decode()
        media = {"track": "inbound", "chunk": str(n + 1), "timestamp": str(20 * n), "payload": payload}
        texts.append(
            json.dumps({"event": "media", "sequenceNumber": str(n + 2), "media": media, "streamSid": sid})
        )
    return conn, [functools.partial(_twilio_feed, t) for t in texts]


async def _twilio_feed(text: str, conn: TwilioConnection) -> None:
    """As the server takes a message: as it is parsed where it can be (`take_text_now`, what
    `DirectTextProtocol` offers it to), else through the connection's reader."""
    if not conn.take_text_now(text):
        await conn._on_text(text)


async def _fastrtc(stream: Any, index: int) -> tuple[Any, list[Feed]]:
    conn = FastRTCConnection(NullSocket(), stream, input_sample_rate=48000, output_sample_rate=24000)  # type: ignore[arg-type]
    await conn._on_text(json.dumps({"event": "start", "websocket_id": f"bench-{index}"}))
    texts = []
    for frame in frames(speech(48000, ARGS.seconds), 48000):
        payload = base64.b64encode(samples_to_mulaw(frame)).decode()
        texts.append(json.dumps({"event": "media", "media": {"payload": payload}}))
    return conn, [lambda c, t=t: c._on_text(t) for t in texts]


async def _native(stream: Any, index: int) -> tuple[Any, list[Feed]]:
    conn = NativeConnection(NullSocket(), stream)  # type: ignore[arg-type]
    await conn._on_text(json.dumps({"type": "start", "sample_rate": 16000, "session_id": f"bench-{index}"}))
    blobs = [float_to_pcm16(frame) for frame in frames(speech(16000, ARGS.seconds), 16000)]
    return conn, [lambda c, b=b: c.on_bytes(b) for b in blobs]


TRANSPORTS = {"twilio": _twilio, "fastrtc": _fastrtc, "native": _native}


async def inbound(transport: str, batched: bool, rate: int | None = None) -> tuple[float, float, int]:
    """(loop-thread µs per frame, process µs per frame, frames) for `--sessions` callers at once;
    `rate`: the handler's `input_sample_rate` (None: Silero's 16 kHz)."""
    _turn_handler.turn_batcher = _turn_batch.turn_batcher if batched else Unbatched  # type: ignore[assignment]
    handler = ReplyOnPause(say_nothing) if rate is None else ReplyOnPause(say_nothing, input_sample_rate=rate)
    stream = Stream(handler, concurrency_limit=None)
    calls = [await TRANSPORTS[transport](stream, i) for i in range(ARGS.sessions)]
    await asyncio.sleep(0.2)  # sessions started, models loaded

    # one frame from every caller per round, as real-time callers give them, but without the waits:
    # the next round starts once the audio thread has taken this one in
    loop0, proc0 = time.thread_time(), time.process_time()
    for k in range(max(len(feeds) for _, feeds in calls)):
        await asyncio.gather(*(feeds[k](conn) for conn, feeds in calls if k < len(feeds)))
        await _taken_in(calls)
    loop_s, proc_s = time.thread_time() - loop0, time.process_time() - proc0
    for conn, _ in calls:
        await conn.session.close("client_stop")
    n = sum(len(feeds) for _, feeds in calls)
    return 1e6 * loop_s / n, 1e6 * proc_s / n, n


async def _taken_in(calls: list[tuple[Any, list[Feed]]]) -> None:
    """Wait until no input given so far is still being scored (polled: a waiter per session would
    add its own cost to the loop's figure)."""
    batcher = _turn_batch.turn_batcher() if _turn_batch is not None else None
    while _PENDING or (batcher is not None and (batcher._running or batcher._waiting)):  # noqa: ASYNC110
        await asyncio.sleep(0.0005)


# -- 2. outbound --------------------------------------------------------------------------------------
async def outbound(transport: str, count: int = 3000) -> float:
    """Process µs per 20 ms of reply audio: 24 kHz → wire rate, encode, send, in the transport's
    output frames (`output_frame_ms`, e.g. Twilio's 100 ms; 20 ms otherwise)."""
    stream = Stream(ReplyOnPause(say_nothing), concurrency_limit=None)
    conn, _ = await TRANSPORTS[transport](stream, 10_000)
    session = conn.session
    tts = speech(24000, count * FRAME_S)
    resampler = StreamingResampler(24000, session.output_sample_rate)
    per_send = getattr(conn, "output_frame_ms", 20) // 20
    pieces = list(frames(tts, 24000))
    t0 = time.process_time()
    for k in range(0, len(pieces), per_send):
        out = resampler.process(np.concatenate(pieces[k : k + per_send]))
        await conn.send_audio(conn.encode_audio(out))
    seconds = time.process_time() - t0
    await session.close("client_stop")
    return 1e6 * seconds / count


# -- 3. VAD -------------------------------------------------------------------------------------------
def vad_costs(vad: SileroVAD, batch_sizes: list[int]) -> list[tuple[int, float, float, float]]:
    """(sessions, per-stream µs/chunk, batched µs/chunk, batcher job µs/session-frame) per batch size."""
    chunk = speech(16000, 0.032)
    rows = []
    for b in batch_sizes:
        rounds = max(5, 2000 // b)
        streams = [vad.stream() for _ in range(b)]
        chunks = [chunk] * b
        t0 = time.process_time()
        for _ in range(rounds):
            for s in streams:
                s.probability(chunk)
        one = (time.process_time() - t0) / (rounds * b)
        if _turn_batch is None:
            rows.append((b, 1e6 * one, 0.0, 0.0))
            continue
        t0 = time.process_time()
        for _ in range(rounds):
            vad.probabilities(streams, chunks)
        together = (time.process_time() - t0) / (rounds * b)
        # the batcher's job: b sessions, one 20 ms frame each (0 or 1 chunk per session per frame)
        detectors = [TurnDetector(vad.stream(), sample_rate=16000, chunk_samples=512) for _ in range(b)]
        frame = speech(16000, 1.0)
        t0 = time.process_time()
        frames_run = 0
        for k in range(max(8, rounds * 2)):
            piece = frame[(k * 320) % 15680 :][:320]
            jobs = [_turn_batch._Job(vad, d, piece, _DONE) for d in detectors]
            _turn_batch._run_batch(jobs)
            frames_run += b
        job = (time.process_time() - t0) / frames_run
        rows.append((b, 1e6 * one, 1e6 * together, 1e6 * job))
    return rows


_DONE: Any = None


def best(run: Callable[[], Any]) -> Any:
    """The lowest of `--repeat` runs (the machine's other work only ever adds)."""
    return min(run() for _ in range(ARGS.repeat))


def main() -> None:
    print(f"# agentkit frame cost ({os.cpu_count()} CPUs, {ARGS.sessions} sessions, {ARGS.seconds:g} s each)")
    if "in" in ARGS.only:
        print("\n## In: CPU µs per 20 ms input frame (loop thread / whole process)")
        head = ("unbatched loop", "unbatched proc", "batched loop", "batched proc")
        print(f"{'transport':<10} {head[0]:>15} {head[1]:>15} {head[2]:>13} {head[3]:>13}")
        for name in TRANSPORTS:
            before = best(lambda n=name: asyncio.run(inbound(n, batched=False)))
            after = best(lambda n=name: asyncio.run(inbound(n, batched=True))) if _turn_batch else (0, 0, 0)
            print(f"{name:<10} {before[0]:>15.0f} {before[1]:>15.0f} {after[0]:>13.0f} {after[1]:>13.0f}")
        if _turn_batch is not None and hasattr(SileroVAD(), "at_rate"):  # phone audio as it comes
            phone = best(lambda: asyncio.run(inbound("twilio", batched=True, rate=8000)))
            print(f"{'twilio 8k':<10} {'':>15} {'':>15} {phone[0]:>13.0f} {phone[1]:>13.0f}")
    if "out" in ARGS.only:
        print("\n## Out: CPU µs per 20 ms reply frame (resample from 24 kHz, encode, send)")
        for name in TRANSPORTS:
            print(f"{name:<10} {best(lambda n=name: asyncio.run(outbound(n))):>8.1f}")
    if "vad" in ARGS.only:
        vad = SileroVAD()
        vad.load()
        print("\n## VAD: Silero CPU µs per session-chunk; batcher job µs per session-frame (20 ms)")
        print(f"{'sessions':>8} {'per stream':>11} {'batched':>8} {'batcher job':>12}")
        for b, one, together, job in vad_costs(vad, ARGS.batch_sizes):
            print(f"{b:>8} {one:>11.1f} {together:>8.1f} {job:>12.1f}")
    print(f"\n(threads at the end: {threading.active_count()})")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=6.0, help="audio per caller")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50, 200]
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the lowest is shown")
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default={"in", "out", "vad"})
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = _args()
    main()
