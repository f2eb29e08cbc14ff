"""Concurrent calls: how many simultaneous callers one machine serves before replies get late.

    python bench/concurrent_calls.py --target echo --workers 1 --calls 100,200,300
    python bench/concurrent_calls.py --target echo --workers 2 --calls 200,300,400,500
    python bench/concurrent_calls.py --target agent --workers 2 --calls 200,300
    python bench/concurrent_calls.py --target cloud --workers 2 --calls 100,150
    python bench/concurrent_calls.py --target cloud --workers 2 --calls 100 --preemptive
    python bench/concurrent_calls.py --target fastrtc --calls 1,2,4,8
    python bench/concurrent_calls.py --transport websocket --target echo --calls 200
    python bench/concurrent_calls.py --workers 2 --calls 200 --phases spread
    python bench/concurrent_calls.py --workers 2 --calls 200,250 --repeat 2 --against ../before

Each step starts a fresh server (`agentkit run bench/load_agents/<target>.py --workers W`, or FastRTC
0.0.34's `server_echo.py` from `bench/setup_fastrtc.sh`) on a free 127.0.0.1 port and places N
calls at irregular start times over `--ramp-s`. A Twilio call is what Twilio does: the signed voice
webhook, then the media WebSocket from the TwiML (`connected`, `start` with the token parameter,
20 ms mu-law 8 kHz `media` in real time, every `mark` answered, `stop` at the end); FastRTC has no
webhook, so its calls open `/telephone/handler` directly. `--transport websocket` uses agentkit's
native protocol (`/ws`, 16-bit PCM at 16 kHz) instead. Every call speaks `--turns` times (the
shared FastRTC baseline's `utt2_raw.wav`) and waits for the reply between them.

Measured per step: end of speech -> first reply audio (median, p95; end of speech is the WAV's last
loud sample on the call's media schedule, as in `shared/baselines/fastrtc/ws_latency_client.py`),
failures (a call refused or dropped, or a turn with no reply within `--max-wait-s`), the server's
CPU per call (all its processes, over the window in which every call is connected), its resident
memory per call, and this load generator's own CPU. The fakes of the `cloud` target run in a process
of their own; their CPU is reported apart.

The generator stays cheap, since every core it uses is taken from the server under test: payloads
are encoded once, one task paces every call's frames on one 20 ms grid, each call is a minimal
WebSocket client (`bench/_ws_client.py`, an asyncio Protocol) that frames and writes a message at
once and handles each message it receives as it is read (no task, no queue), and only non-audio
messages are parsed. With `--phases aligned` (the default) every call's frame goes out on the same
tick; `--phases spread` sends each call's in one of five 4 ms slots of the tick (where the call's
start time falls), as calls that began at random times reach a server: still one pacing task on one
absolute grid. Loopback only; every step is bounded in time.
A step "holds" when p95 <= the target's silence setting + 50 ms with no failure (FastRTC: its own
one-call p95 + 50 ms, since its pause detection is not a silence setting); the largest holding N is
printed with the ratio to FastRTC's.

Side by side with another agentkit tree (`--against DIR`, e.g. a `git worktree` of an older commit):
each step also runs there, its server importing that tree, back to back with this one, and with
`--repeat K` the pair runs K times, alternating which goes first. On a shared machine the p95 of
one N moves by up to 200 ms from run to run, so only such pairs compare two trees fairly. A step
then holds when every run of this tree holds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

import run_bench as rb  # noqa: E402  (servers, FastRTC paths, statistics helpers)
from _ws_client import WebSocketClient  # noqa: E402  (one asyncio Protocol per call)

from agentkit.audio import StreamingResampler, float_to_pcm16, mulaw_encode, read_wav  # noqa: E402
from agentkit.testing import sign_twilio_request, speech_bounds  # noqa: E402

FRAME_S = 0.020
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
SILENCE_MS = 500  # agentkit's end_of_turn_silence_ms default, which these agents keep
HOLD_SLACK_S = 0.050
WAV = rb.BASELINE_DIR / "audio" / "utt2_raw.wav"
RESULTS = rb.RESULTS_DIR / "concurrent"
TICKS_PER_S = round(1 / FRAME_S)
SPREAD_SLOTS = 5
"""`--phases spread`: sub-ticks per 20 ms tick (4 ms apart); each call sends in one of them."""


# -- audio, encoded once ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Utterance:
    frames: list[str] | list[bytes]
    """The utterance as one wire payload per 20 ms frame (base64 mu-law, or 16-bit PCM bytes)."""
    silence: str | bytes
    """One frame of silence in the same form."""
    speech_end_s: float
    """Where the speech ends in the utterance."""


def utterance(transport: str) -> Utterance:
    wav = read_wav(WAV)
    bounds = speech_bounds(wav.samples, wav.sample_rate)
    assert bounds is not None, f"{WAV} has no speech"
    rate = 8000 if transport == "twilio" else 16000
    samples = StreamingResampler(wav.sample_rate, rate).process(wav.samples, last=True)
    n = round(rate * FRAME_S)
    samples = samples[: len(samples) // n * n]
    pcm = np.frombuffer(float_to_pcm16(samples), dtype="<i2")
    if transport == "twilio":
        frames: list[str] | list[bytes] = [
            base64.b64encode(mulaw_encode(pcm[i : i + n])).decode("ascii") for i in range(0, len(pcm), n)
        ]
        silence: str | bytes = base64.b64encode(mulaw_encode(np.zeros(n, dtype=np.int16))).decode("ascii")
    else:
        frames = [pcm[i : i + n].tobytes() for i in range(0, len(pcm), n)]
        silence = bytes(2 * n)
    return Utterance(frames, silence, bounds[1])


# -- one call --------------------------------------------------------------------------------------
@dataclass
class Call:
    index: int
    start_at_s: float
    lead_frames: int
    slot: int = 0  # the sub-tick of the 20 ms tick its frames go out in (`--phases spread`)
    ws: WebSocketClient | None = None
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    sequence: int = 0
    media_ms: int = 0
    phase: str = "connecting"  # connecting, lead, speech, gap, done
    frame: int = 0  # within the phase
    turn: int = 0
    speech_end_t: float | None = None  # perf_counter time of this turn's end of speech
    first_reply_t: float | None = None
    last_audio_t: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    missed: int = 0
    error: str | None = None
    refused: bool = False  # the webhook said busy (TwiML without a stream that hangs up)


class Load:
    """N calls against one server: placed, paced, measured."""

    def __init__(self, opts: argparse.Namespace, port: int, n: int, audio: Utterance) -> None:
        self.opts = opts
        self.port = port
        self.audio = audio
        self.rng = random.Random(opts.seed * 1000 + n)
        self.calls = [Call(i, self.rng.uniform(0.0, opts.ramp_s), self.rng.randint(10, 50)) for i in range(n)]
        slots = SPREAD_SLOTS if opts.phases == "spread" else 1
        for call in self.calls:  # where its start falls within a tick, as a real call's would
            call.slot = int(call.start_at_s / (FRAME_S / slots)) % slots
        self.active: list[list[Call]] = [[] for _ in range(slots)]  # the calls sending, by slot
        self.ended = 0  # calls done
        self.all_connected_t: float | None = None
        self.first_done_t: float | None = None
        self.late_ticks = 0

    # the pacing task: one frame per active call every 20 ms, on one absolute grid
    async def pace(self, deadline: float) -> None:
        """Every 20 ms tick (`--phases aligned`), or every sub-tick of it (`spread`), send the next
        frame of each call of that slot. The grid is absolute, so a late wake-up sends at once and the
        next one is due on time again; a 20 ms tick is counted late (once) when one of its sub-ticks
        went out more than a frame after it was due."""
        slots = len(self.active)
        t0 = time.perf_counter()
        sub = 0
        late_tick = -1
        while time.perf_counter() < deadline and self.ended < len(self.calls):
            sub += 1
            due = t0 + sub * FRAME_S / slots
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME_S and (sub - 1) // slots != late_tick:
                late_tick = (sub - 1) // slots
                self.late_ticks += 1
            now = time.perf_counter()
            for call in list(self.active[sub % slots]):
                self._send_next(call, now, due)

    def _send_next(self, call: Call, now: float, due: float) -> None:
        audio, opts = self.audio, self.opts
        payload = audio.silence
        if call.phase == "lead":
            call.frame += 1
            if call.frame >= call.lead_frames:
                call.phase, call.frame = "speech", 0
                # a frame goes out once it has been captured: its first sample was spoken 20 ms
                # before, so the utterance starts at this tick (the next frame carries it)
                call.speech_end_t = due + audio.speech_end_s
                call.first_reply_t = None
        elif call.phase == "speech":
            payload = audio.frames[call.frame]
            call.frame += 1
            if call.frame >= len(audio.frames):
                call.phase, call.frame = "gap", 0
        elif call.phase == "gap":
            call.frame += 1
            assert call.speech_end_t is not None
            replied = call.first_reply_t is not None and now - call.last_audio_t > opts.response_gap_s
            timed_out = now - call.speech_end_t > opts.max_wait_s
            if replied or timed_out:
                if call.first_reply_t is None:
                    call.missed += 1
                call.turn += 1
                if call.turn >= opts.turns:
                    self.first_done_t = self.first_done_t or now
                    self._end(call)
                    self._hang_up(call)
                    return
                call.phase, call.frame, call.lead_frames = "lead", 0, self.rng.randint(10, 50)
        try:
            assert call.ws is not None  # an active call is connected
            call.ws.send(self._media(call, payload))
        except Exception as exc:  # the server dropped the call
            self._end(call, f"send failed: {type(exc).__name__}")

    def _media(self, call: Call, payload: str | bytes) -> str | bytes:
        if isinstance(payload, bytes):
            return payload
        call.sequence += 1
        ts = call.media_ms
        call.media_ms += 20
        return (
            f'{{"event":"media","sequenceNumber":"{call.sequence}","media":{{"track":"inbound",'
            f'"chunk":"{call.sequence}","timestamp":"{ts}","payload":"{payload}"}},'
            f'"streamSid":"{call.stream_sid}"}}'
        )

    def _hang_up(self, call: Call) -> None:
        """Say the call is over (Twilio's `stop`, or the native one); the server then closes it."""
        if self.opts.transport == "twilio":
            stop = {"event": "stop", "streamSid": call.stream_sid, "stop": {"callSid": call.call_sid}}
        else:
            stop = {"type": "stop"}
        with contextlib.suppress(Exception):
            assert call.ws is not None
            call.ws.send(json.dumps(stop))

    def _end(self, call: Call, error: str | None = None) -> None:
        """The call is over: hung up (no error), refused, failed or dropped. The first error stays."""
        if call.phase == "done":
            return
        call.error = call.error or error
        call.phase = "done"
        self.ended += 1
        with contextlib.suppress(ValueError):  # not active yet (still connecting)
            self.active[call.slot].remove(call)

    # placing a call, and reading what comes back
    async def place(self, call: Call, http: Any, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + call.start_at_s - time.perf_counter()))
        opts = self.opts
        base = f"http://127.0.0.1:{self.port}"
        try:
            if opts.transport == "websocket":
                url = f"ws://127.0.0.1:{self.port}/ws"
                first = json.dumps({"type": "start", "sample_rate": 16000, "output_sample_rate": 16000})
                extra: list[str] = []
            elif opts.target == "fastrtc":
                url = f"ws://127.0.0.1:{self.port}/telephone/handler"
                first, extra = self._twilio_start(call, {})
            else:
                form = {
                    "AccountSid": "AC" + "0" * 32,
                    "CallSid": call.call_sid,
                    "CallStatus": "ringing",
                    "Direction": "inbound",
                    "From": f"+1555{call.index:07d}",
                    "To": "+15550100002",
                }
                signature = sign_twilio_request(AUTH_TOKEN, base + "/telephone/incoming", form)
                response = await http.post(
                    "/telephone/incoming", data=form, headers={"X-Twilio-Signature": signature}
                )
                from agentkit.testing._twilio_caller import parse_twiml

                answer = parse_twiml(response.status_code, response.text)
                if answer.stream_url is None:
                    call.refused = answer.hangs_up
                    raise RuntimeError(f"webhook answered {response.status_code} without a stream")
                url = answer.stream_url
                first, extra = self._twilio_start(call, answer.parameters)
            # what the server sends is handled as it is read, by the connection's data_received
            call.ws = WebSocketClient(
                functools.partial(self._on_message, call), functools.partial(self._on_close, call)
            )
            await call.ws.open(url, timeout_s=10.0)
            call.ws.send(first)
            for message in extra:
                call.ws.send(message)
        except Exception as exc:
            self._end(call, f"connect failed: {type(exc).__name__}: {str(exc)[:80]}")
            self._note_connected()
            return
        call.phase = "lead"
        self.active[call.slot].append(call)
        self._note_connected()

    def _note_connected(self) -> None:
        """The server's window opens once no call is still connecting (refused ones included)."""
        if self.all_connected_t is None and not any(c.phase == "connecting" for c in self.calls):
            self.all_connected_t = time.perf_counter()

    def _twilio_start(self, call: Call, parameters: dict[str, str]) -> tuple[str, list[str]]:
        connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": call.stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": call.stream_sid,
                "callSid": call.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            },
        }
        call.sequence = 1
        return connected, [json.dumps(start)]

    def _on_message(self, call: Call, text: bool, payload: bytes) -> None:
        """A message from the server, as soon as its connection has read it (no task wakes up for
        it). Reply audio (a binary frame, or text with the media event) is timed; a mark is echoed
        at once, as Twilio does once the audio before it has played; other text is ignored."""
        now = time.perf_counter()
        if text:
            head = payload[:40]
            if b'"media"' not in head:
                if b'"mark"' in head:
                    name = json.loads(payload).get("mark", {}).get("name", "")
                    mark = {"event": "mark", "streamSid": call.stream_sid, "mark": {"name": name}}
                    assert call.ws is not None
                    call.ws.send(json.dumps(mark))
                return
        call.last_audio_t = now
        if (
            call.phase == "gap"
            and call.first_reply_t is None
            and call.speech_end_t is not None
            and now >= call.speech_end_t
        ):
            call.first_reply_t = now
            call.latencies_s.append(now - call.speech_end_t)

    def _on_close(self, call: Call, reason: str | None) -> None:
        """The server closed the call (None: cleanly) or its connection failed: unless the call
        had hung up already, it failed."""
        self._end(call, "closed by the server" if reason is None else f"receive failed: {reason}")

    async def run(self) -> dict[str, Any]:
        import httpx

        opts = self.opts
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", timeout=10.0, limits=limits
        ) as http:
            t0 = time.perf_counter()
            bound = opts.ramp_s + opts.turns * (4.0 + opts.max_wait_s + 1.0) + 30.0
            deadline = t0 + bound
            cpu0 = time.process_time()
            placing = [asyncio.create_task(self.place(c, http, t0)) for c in self.calls]
            pacing = asyncio.create_task(self.pace(deadline))
            sampler = asyncio.create_task(self._sample_server(t0))
            await pacing
            # up to 5 s for calls still connecting, and for the server to close those that hung up
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*placing, return_exceptions=True)
                    await asyncio.gather(*(c.ws.wait_closed() for c in self.calls if c.ws is not None))
            for task in placing:
                task.cancel()
            await asyncio.gather(*placing, return_exceptions=True)
            await asyncio.gather(*(c.ws.close(2.0) for c in self.calls if c.ws is not None))
            sampler.cancel()
            window = await asyncio.gather(sampler, return_exceptions=True)
            generator_cpu_s = time.process_time() - cpu0
            wall_s = time.perf_counter() - t0
        return self._summary(window[0] if isinstance(window[0], dict) else {}, generator_cpu_s, wall_s)

    async def _sample_server(self, t0: float) -> dict[str, Any]:
        """Server CPU (cores) over the window in which every call is connected (from the last call
        placed to the first one hanging up), and its peak resident memory."""
        samples: list[tuple[float, float, dict[tuple[int, int], tuple[float, float]]]] = []
        rss_peak = 0
        try:
            while True:
                cpu, rss, mains = tree_threads(self.opts.server_pid)
                samples.append((time.perf_counter(), cpu, mains))
                rss_peak = max(rss_peak, rss)
                await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            pass
        result: dict[str, Any] = {"rss_peak_bytes": rss_peak}
        start, end = self.all_connected_t, self.first_done_t
        inside = [s for s in samples if start is not None and end is not None and start <= s[0] <= end]
        if len(inside) >= 2 and inside[-1][0] - inside[0][0] >= 2.0:
            (ta, ca, ma), (tb, cb, mb) = inside[0], inside[-1]
            result["cpu_cores"] = (cb - ca) / (tb - ta)
            result["window_s"] = tb - ta
            # the busiest worker's event loop (its main thread), and its loop and audio thread
            # together (taken as its two busiest threads), in cores over the window
            # (the load monitor's `media_busy` is the second figure's demand: CPU + run-queue wait)
            keys = mb.keys() & ma.keys()
            used = {key: (mb[key][0] - ma[key][0]) / (tb - ta) for key in keys}
            demand = {key: (mb[key][1] - ma[key][1]) / (tb - ta) for key in keys}
            result["loop_busy_max"] = max(used[key] for key in used if key[0] == key[1])
            by_process: dict[int, list[tuple[float, float]]] = {}
            for key in keys:
                by_process.setdefault(key[0], []).append((used[key], demand[key]))
            top_two = [sorted(threads)[-2:] for threads in by_process.values()]
            result["two_threads_busy_max"] = max(sum(c for c, _ in top) for top in top_two)
            result["two_threads_demand_max"] = max(sum(d for _, d in top) for top in top_two)
        return result

    def _summary(self, server: dict[str, Any], generator_cpu_s: float, wall_s: float) -> dict[str, Any]:
        latencies = [x for c in self.calls for x in c.latencies_s]
        errors = [c.error for c in self.calls if c.error]
        missed = sum(c.missed for c in self.calls)
        n = len(self.calls)
        cores = server.get("cpu_cores")
        return {
            "calls": n,
            "turns_answered": len(latencies),
            "median_s": statistics.median(latencies) if latencies else None,
            "p95_s": float(np.percentile(latencies, 95)) if latencies else None,
            "failures": len(errors) + missed,
            "failed_calls": len(errors),
            "refused_calls": sum(c.refused for c in self.calls),
            "missed_turns": missed,
            "errors": sorted(set(errors))[:5],
            "server_cores": cores,
            "loop_busy_max": server.get("loop_busy_max"),
            "two_threads_busy_max": server.get("two_threads_busy_max"),
            "two_threads_demand_max": server.get("two_threads_demand_max"),
            "server_core_per_call": cores / n if cores is not None else None,
            "server_rss_mb": server.get("rss_peak_bytes", 0) / 1e6,
            "generator_cores": generator_cpu_s / wall_s,
            "generator_late_ticks": self.late_ticks,
        }


# -- the server's processes ------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
    return found


def _cpu_s(stat_path: str) -> float:
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _demand_s(task_dir: str) -> float:
    """A thread's time on a CPU plus its time waiting for one (schedstat), in seconds."""
    with open(f"{task_dir}/schedstat") as f:
        on_cpu_ns, waiting_ns, _ = f.read().split()
    return (int(on_cpu_ns) + int(waiting_ns)) / 1e9


def tree_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of `pid` and all its descendants."""
    cpu, rss, _ = tree_threads(pid, per_thread=False)
    return cpu, rss


def tree_threads(
    pid: int, *, per_thread: bool = True
) -> tuple[float, int, dict[tuple[int, int], tuple[float, float]]]:
    """`tree_usage`, and (`per_thread`) the CPU seconds and demand (CPU + waiting for a core) seconds
    of every thread, by (process, thread id); a worker's event loop is its main thread (id = pid)."""
    page = os.sysconf("SC_PAGE_SIZE")
    cpu, rss, todo = 0.0, 0, [pid]
    threads: dict[tuple[int, int], tuple[float, float]] = {}
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            cpu += _cpu_s(f"/proc/{p}/stat")
            for tid in os.listdir(f"/proc/{p}/task") if per_thread else ():
                with contextlib.suppress(OSError):
                    task = f"/proc/{p}/task/{tid}"
                    threads[p, int(tid)] = (_cpu_s(f"{task}/stat"), _demand_s(task))
            with open(f"/proc/{p}/statm") as f:
                rss += int(f.read().split()[1]) * page
            todo += _children(p)
    return cpu, rss, threads


@contextlib.contextmanager
def server(opts: argparse.Namespace, log: Path) -> Iterator[tuple[int, int]]:
    """Start the target's server on a free port; yield (port, pid of its root process); stop it."""
    port = rb.free_port()
    if opts.target == "fastrtc":
        spec = rb.server_spec("fastrtc", port, None)
        argv = [*spec.argv[:-2], "--concurrency", "1000", "--input-sr", "8000", "--output-sr", "8000"]
        env, cwd = spec.env, spec.cwd
        env["PYTHONWARNINGS"] = "ignore"
    else:
        agentkit = [str(Path(sys.executable).with_name("agentkit"))]
        if opts.profile is not None:  # the server's event loop under cProfile (one process)
            agentkit = [sys.executable, "-m", "cProfile", "-o", str(opts.profile), "-m", "agentkit.cli"]
        tree: Path = opts.tree or rb.REPO_ROOT
        agent_file = tree / "bench" / "load_agents" / f"{opts.target}.py"
        argv = [*agentkit, "run", str(agent_file), "--port", str(port)]
        if opts.workers != 1:
            argv += ["--workers", str(opts.workers)]
        env = dict(os.environ)
        env.setdefault("AGENTKIT_MODELS_DIR", str(rb.SHARED_DIR / "models"))
        env.setdefault("AGENTKIT_OFFLINE", "1")
        env.update(
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            AGENTKIT_MAX_SESSIONS_PER_ADDRESS="0",  # every call comes from 127.0.0.1 here
            AGENTKIT_STORE=f"sqlite:///{opts.tmp}/conversations-{port}.db",
        )
        env.update(opts.fake_env)
        if opts.preemptive:  # read by bench/load_agents/agent.py and cloud.py
            env["BENCH_PREEMPTIVE"] = "1"
        if opts.tree is not None:  # the other tree's agentkit ahead of the one installed here
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(opts.tree), env.get("PYTHONPATH")]))
        cwd = tree
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + rb.HEALTHZ_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {proc.returncode}; see {log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer /healthz; see {log}")
                try:
                    rb.get_json(port, "/healthz", timeout_s=2.0)
                    break
                except OSError:
                    time.sleep(0.25)
            yield port, proc.pid
        finally:
            rb.stop_process(proc)


@contextlib.contextmanager
def cloud_fakes(opts: argparse.Namespace) -> Iterator[subprocess.Popen[str] | None]:
    if opts.target != "cloud":
        opts.fake_env = {}
        yield None
        return
    proc = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "load_agents" / "cloud_fakes.py")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        opts.fake_env = {
            "BENCH_GROQ_URL": urls["groq"],
            "BENCH_ANTHROPIC_URL": urls["anthropic"],
            "BENCH_ELEVENLABS_URL": urls["elevenlabs"],
        }
        opts.fakes_pid = proc.pid
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def step(opts: argparse.Namespace, n: int, audio: Utterance) -> dict[str, Any]:
    log = rb.LOG_DIR / f"concurrent_{opts.target}_{opts.transport}_w{opts.workers}_{n}.log"
    with cloud_fakes(opts), server(opts, log) as (port, pid):
        opts.server_pid = pid
        fakes_cpu0 = tree_usage(opts.fakes_pid)[0] if opts.target == "cloud" else 0.0
        t0 = time.perf_counter()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            result = runner.run(_run_load(opts, port, n, audio))
        if opts.target == "cloud":
            result["fakes_cores"] = (tree_usage(opts.fakes_pid)[0] - fakes_cpu0) / (time.perf_counter() - t0)
    if opts.target in ("agent", "cloud"):
        result["stages"] = stages(Path(opts.tmp) / f"conversations-{port}.db")
    return result


STAGES = {
    "end_of_turn_ms": "end of turn",
    "stt_ms": "STT",
    "llm_ttft_ms": "LLM first token",
    "tts_ttfa_ms": "TTS first audio",
    "voice_to_voice_ms": "voice to voice",
}
"""The server's own per-stage figures of each turn (`TurnMetrics`, as the agent stored them)."""


def stages(db: Path) -> dict[str, dict[str, float]]:
    """Median and p95 of each stage over the step's turns, read from the server's SQLite store once
    it has stopped: where the agent's share of the latency goes, as the server measured it."""
    if not db.is_file():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(f"SELECT {', '.join(STAGES)} FROM turn_metrics").fetchall()
    out: dict[str, dict[str, float]] = {}
    for i, column in enumerate(STAGES):
        values = sorted(row[i] for row in rows if row[i] is not None)
        if values:
            p95 = float(np.percentile(values, 95))
            out[column] = {"median": statistics.median(values), "p95": p95, "n": len(values)}
    return out


def _loop_factory() -> Any:
    """uvloop when it is installed (it is, with uvicorn[standard]): the generator's cost stays small."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _run_load(opts: argparse.Namespace, port: int, n: int, audio: Utterance) -> dict[str, Any]:
    return await Load(opts, port, n, audio).run()


def fmt(value: float | None, scale: float = 1.0, digits: int = 0, unit: str = "") -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{unit}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["echo", "agent", "cloud", "fastrtc"], default="echo")
    p.add_argument("--transport", choices=["twilio", "websocket"], default="twilio")
    p.add_argument("--workers", default="1", help="agentkit run --workers (N or auto)")
    p.add_argument("--calls", default="50,100,150", help="comma-separated N to try, in order")
    p.add_argument("--turns", type=int, default=3, help="turns each call speaks")
    p.add_argument("--ramp-s", type=float, default=10.0, help="calls start at random times in this window")
    p.add_argument("--max-wait-s", type=float, default=3.0, help="a turn with no reply by then failed")
    p.add_argument("--response-gap-s", type=float, default=0.6, help="reply over after this much quiet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--phases",
        choices=["aligned", "spread"],
        default="aligned",
        help="every call's frame on the same 20 ms tick, or each call's in its own 4 ms slot of it",
    )
    p.add_argument(
        "--preemptive",
        action="store_true",
        help="agent and cloud targets: begin each reply in the caller's pause (Agent.preemptive_generation)",
    )
    p.add_argument("--stop-after-fail", action="store_true", help="stop ramping once a step fails")
    p.add_argument("--json", type=Path, help="write the results here (nothing is saved without it)")
    p.add_argument("--profile", type=Path, help="run the (one-worker) server under cProfile, into this file")
    p.add_argument("--against", type=Path, help="another agentkit tree to run each step in too, back to back")
    p.add_argument("--repeat", type=int, default=1, help="runs of each step (of each pair, with --against)")
    opts = p.parse_args(argv)
    opts.tree = None
    if opts.against is not None:
        opts.against = opts.against.resolve()
        if not (opts.against / "agentkit" / "__init__.py").is_file():
            p.error(f"--against {opts.against}: not an agentkit tree")
        if opts.target == "fastrtc":
            p.error("--against compares two agentkit trees")
    if opts.repeat < 1:
        p.error("--repeat must be at least 1")
    if opts.preemptive and opts.target not in ("agent", "cloud"):
        p.error("--preemptive is for the agent and cloud targets")
    if opts.target == "fastrtc" and opts.transport != "twilio":
        p.error("FastRTC is driven over its Twilio endpoint only")
    if opts.target == "fastrtc" and not rb.FASTRTC_PY.exists():
        p.error("FastRTC is not set up: run bench/setup_fastrtc.sh first")
    opts.workers = opts.workers if opts.workers == "auto" else int(opts.workers)
    counts = [int(x) for x in opts.calls.split(",") if x.strip()]
    audio = utterance(opts.transport)
    rb.LOG_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    runs: list[dict[str, Any]] = []  # every run, of both trees with --against
    with contextlib.ExitStack() as stack:
        opts.tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentkit-bench-"))
        print(
            f"== {opts.target} over {opts.transport}, workers={opts.workers}, {opts.turns} turns per call",
            flush=True,
        )
        print(
            "calls | median | p95 | failures (refused) | server cores | busiest loop (+ audio; demand) "
            "| core/call | RSS MB | generator cores"
        )
        for n in counts:
            for rep in range(opts.repeat):
                trees: list[Path | None] = [None] if opts.against is None else [None, opts.against]
                for tree in trees if rep % 2 == 0 else trees[::-1]:
                    opts.tree = tree
                    r = step(opts, n, audio)
                    label = "" if opts.against is None else ("  this | " if tree is None else "against | ")
                    runs.append(
                        {"calls": n, "tree": "this" if tree is None else str(tree), "repeat": rep, **r}
                    )
                    if tree is None and (n not in results or not holds(opts, r, results)):
                        results[n] = r  # a step holds only if every run of this tree holds
                    print(label + _row(n, r), flush=True)
            if opts.stop_after_fail and not holds(opts, results[n], results):
                break
    opts.tree = None
    if opts.against is not None or opts.repeat > 1:
        _print_pairs(opts, runs)
    best = max((n for n, r in results.items() if holds(opts, r, results)), default=0)
    bar = bar_s(opts, results)
    print(f"largest N with p95 <= {fmt(bar, 1000, 0, ' ms')} and no failure: {best}")
    if opts.json is None:  # an exploratory run never overwrites a committed result
        print(f"(not saved; --json {RESULTS.relative_to(rb.REPO_ROOT)}/<name>.json keeps these figures)")
        return 0
    opts.json.write_text(
        json.dumps(
            {"options": _jsonable(opts), "bar_s": bar, "best": best, "steps": results, "runs": runs}, indent=1
        )
    )
    return 0


def _row(n: int, r: dict[str, Any]) -> str:
    return (
        f"{n:5d} | {fmt(r['median_s'], 1000, 0, ' ms')} | {fmt(r['p95_s'], 1000, 0, ' ms')} | "
        f"{r['failures']} ({r['refused_calls']}) | {fmt(r['server_cores'], 1, 2)} | "
        f"{fmt(r['loop_busy_max'], 1, 2)} ({fmt(r['two_threads_busy_max'], 1, 2)}; "
        f"{fmt(r['two_threads_demand_max'], 1, 2)}) | "
        f"{fmt(r['server_core_per_call'], 1, 4)} | "
        f"{r['server_rss_mb']:.0f} | {r['generator_cores']:.2f}"
        + (f" | fakes {r['fakes_cores']:.2f} cores" if "fakes_cores" in r else "")
        + (f" | errors: {r['errors']}" if r["errors"] else "")
        + _stages_row(r.get("stages"))
    )


def _stages_row(figures: dict[str, dict[str, float]] | None) -> str:
    if not figures:
        return ""
    each = ", ".join(
        f"{STAGES[k]} {v['median']:.0f} / {v['p95']:.0f}" for k, v in figures.items() if k in STAGES
    )
    return f"\n      server, median / p95 ms: {each}"


def _print_pairs(opts: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    """Per N and tree: every run's p95 and server cores, and their medians (and the ratio of the
    medians, this tree over the other)."""
    print("calls | tree | p95 of each run | median p95 | median server cores")
    for n in dict.fromkeys(run["calls"] for run in runs):
        medians: dict[str, float] = {}
        for tree in dict.fromkeys(run["tree"] for run in runs):
            mine = [run for run in runs if run["calls"] == n and run["tree"] == tree]
            p95s = [run["p95_s"] for run in mine if run["p95_s"] is not None]
            if not p95s:
                continue
            medians[tree] = statistics.median(p95s)
            cores = statistics.median(run["server_cores"] for run in mine if run["server_cores"] is not None)
            each = " / ".join(f"{p * 1000:.0f}" for p in p95s)
            name = "this" if tree == "this" else "against"
            print(f"{n:5d} | {name} | {each} ms | {medians[tree] * 1000:.0f} ms | {cores:.2f}")
        if len(medians) == 2:
            this, other = medians["this"], next(v for k, v in medians.items() if k != "this")
            print(f"{n:5d} | p95 this / against: {this / other:.2f}")


def bar_s(opts: argparse.Namespace, results: dict[int, dict[str, Any]]) -> float | None:
    if opts.target != "fastrtc":
        return SILENCE_MS / 1000 + HOLD_SLACK_S
    one = results.get(min(results)) if results else None  # FastRTC: its own least-loaded p95
    return None if one is None or one["p95_s"] is None else one["p95_s"] + HOLD_SLACK_S


def holds(opts: argparse.Namespace, r: dict[str, Any], results: dict[int, dict[str, Any]]) -> bool:
    bar = bar_s(opts, results)
    return bar is not None and r["failures"] == 0 and r["p95_s"] is not None and r["p95_s"] <= bar


def _jsonable(opts: argparse.Namespace) -> dict[str, Any]:
    out = {k: v for k, v in vars(opts).items() if isinstance(v, str | int | float | bool)}
    if opts.against is not None:
        out["against"] = str(opts.against)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
