"""Telephony echo benchmark: Twilio Media Streams into FastRTC 0.0.34 and into agentkit, one run.

    python bench/twilio_latency.py [--runs 20] [--seed 0] [--lead-jitter 0.6] [--idle-seconds 10]

Both servers run an echo handler (the caller's turn comes straight back) on a free 127.0.0.1 port:
FastRTC's `shared/baselines/fastrtc/server_echo.py` in bench/.fastrtc/venv (Twilio protocol at
`/telephone/handler`), and agentkit's `Stream(ReplyOnPause(echo))` with `add_twilio_routes` (this
script with `--serve`, in this interpreter). Both are driven by the shared, unmodified clients of
`shared/baselines/fastrtc`, with identical arguments:

- `ws_latency_client.py --protocol twilio --ack-marks` (agentkit: `--path /telephone/media`): fresh
  connections send `connected`, `start`, the WAV as 20 ms mu-law 8 kHz `media` in real time, then
  silence, echoing every `mark` as Twilio does. Latency = first reply `media` - end of speech; no
  reply within `--max-wait` is a failure, left out of median/p95.
- `idle_cpu_probe.py --protocol twilio --sessions 1|3`: server CPU while connected calls stream
  silence; per call = cores / sessions. The probe dials `/telephone/handler`, so the agentkit bench
  server serves the same media stream there too.

The load generators send no session token (Twilio's `<Parameter>` from the webhook), so the agentkit
bench server mounts the routes with `require_token=False` and signature checks off. That option is
for loopback benchmarks only; this server refuses to bind anywhere but 127.0.0.1.

Prints `metric | FastRTC | agentkit | ratio (agentkit/FastRTC)`; results go to
bench/results/twilio/, logs to bench/.logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))  # the working tree, whatever is installed

import run_bench as rb  # noqa: E402  (the side-by-side harness: servers, clients, statistics)
from starlette.websockets import WebSocket  # noqa: E402  (module level: FastAPI resolves the annotation)

RESULTS = rb.RESULTS_DIR / "twilio"
PATHS = {"fastrtc": "/telephone/handler", "agentkit": "/telephone/media"}
IDLE_SESSIONS = (1, 3)


# -- the agentkit server (child process) ----------------------------------------------------------
def serve(port: int) -> None:
    """agentkit's echo stream with the Twilio routes, for load generators that skip the webhook."""
    import uvicorn
    from fastapi import FastAPI

    from agentkit import ReplyOnPause, Stream
    from agentkit.transports.twilio import TwilioConnection, add_twilio_routes

    def echo(audio: Any) -> Any:
        yield audio

    stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive", concurrency_limit=10)
    app = FastAPI()
    book = add_twilio_routes(app, stream, validate_signatures=False, require_token=False)

    async def handler(websocket: WebSocket) -> None:  # the path idle_cpu_probe.py dials
        await TwilioConnection(websocket, stream, book, require_token=False).run()

    app.add_api_websocket_route("/telephone/handler", handler)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "input_sample_rate": 8000, "output_sample_rate": 8000}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- the benchmark ---------------------------------------------------------------------------------
def spec(framework: str, port: int) -> rb.ServerSpec:
    if framework == "fastrtc":
        return rb.server_spec("fastrtc", port, None)
    env = dict(os.environ)
    env.setdefault("AGENTKIT_MODELS_DIR", str(rb.SHARED_DIR / "models"))
    env.setdefault("AGENTKIT_OFFLINE", "1")
    env.pop("AGENTKIT_TWILIO_VALIDATE", None)
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port)]
    return rb.ServerSpec(framework, argv, env, rb.REPO_ROOT)


def bench(framework: str, opts: argparse.Namespace) -> dict[str, Any]:
    port = rb.free_port()
    result: dict[str, Any] = {"latency": {}, "idle": {}}
    print(f"== {rb.LABELS[framework]}: server on 127.0.0.1:{port}", flush=True)
    with rb.running_server(spec(framework, port), port, rb.LOG_DIR / f"twilio_{framework}_server.log"):
        turns: list[dict[str, Any]] = []
        for wav in rb.WAVS:
            stem = Path(wav).stem
            out = RESULTS / f"{framework}_{stem}.json"
            args = ["--port", str(port), "--protocol", "twilio", "--path", PATHS[framework], "--ack-marks"]
            args += ["--wav", str(rb.BASELINE_DIR / "audio" / wav), "--runs", str(opts.runs)]
            args += ["--seed", str(opts.seed), "--lead-jitter", str(opts.lead_jitter)]
            args += ["--max-wait", str(opts.max_wait), "--out", str(out)]
            print(f"  latency: {wav}, {opts.runs} calls ...", flush=True)
            rb.run_client("ws_latency_client.py", args, rb.LOG_DIR / f"twilio_{framework}_{stem}_client.log")
            wav_turns = json.loads(out.read_text())["turns"]
            turns += wav_turns
            result["latency"][stem] = rb.latency_stats(wav_turns)
            print(f"    {rb.format_latency(result['latency'][stem])}", flush=True)
        result["latency"]["all"] = rb.latency_stats(turns)
        for sessions in IDLE_SESSIONS:
            args = ["--port", str(port), "--protocol", "twilio", "--sessions", str(sessions)]
            args += ["--seconds", str(opts.idle_seconds)]
            log = rb.LOG_DIR / f"twilio_{framework}_idle{sessions}_client.log"
            probe: dict[str, Any] = json.loads(
                rb.run_client("idle_cpu_probe.py", args, log).strip().splitlines()[-1]
            )
            probe["cores_per_session"] = probe["with_sessions_cores"] / sessions
            result["idle"][sessions] = probe
            print(f"  idle: {sessions} call(s): {probe['cores_per_session']:.3f} core per call", flush=True)
    return result


def table(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(metric: str, fastrtc: float | None, agentkit: float | None, unit: str = "") -> None:
        rows.append(
            [metric, rb.fmt_num(fastrtc, unit), rb.fmt_num(agentkit, unit), rb.ratio(agentkit, fastrtc)]
        )

    for group in (*(Path(w).stem for w in rb.WAVS), "all"):
        fr, ak = results["fastrtc"]["latency"][group], results["agentkit"]["latency"][group]
        add(f"{group}: median latency", _ms(fr["median_s"]), _ms(ak["median_s"]), " ms")
        add(f"{group}: p95 latency", _ms(fr["p95_s"]), _ms(ak["p95_s"]), " ms")
        add(f"{group}: failures (of {ak['turns']} turns)", fr["failures"], ak["failures"])
        add(f"{group}: early replies", fr["early_replies"], ak["early_replies"])
    for sessions in IDLE_SESSIONS:
        fr, ak = results["fastrtc"]["idle"][sessions], results["agentkit"]["idle"][sessions]
        add(
            f"idle CPU per call ({sessions} calls)", fr["cores_per_session"], ak["cores_per_session"], " core"
        )
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help="(internal) run the agentkit bench server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--runs", type=int, default=20, help="calls per WAV and framework")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lead-jitter", type=float, default=0.6)
    p.add_argument("--max-wait", type=float, default=6.0)
    p.add_argument("--idle-seconds", type=float, default=10.0)
    opts = p.parse_args(argv)
    if opts.serve:
        serve(opts.port)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {framework: bench(framework, opts) for framework in rb.FRAMEWORKS}
    header = ["metric", "FastRTC 0.0.34", "agentkit", "ratio (agentkit/FastRTC)"]
    text = rb.render_table(header, table(results))
    print(text)
    print(
        f"({opts.runs} calls per WAV, seed {opts.seed}, jitter {opts.lead_jitter} s, "
        f"{time.perf_counter() - started:.0f} s in all)"
    )
    (RESULTS / "summary.txt").write_text(text + "\n")
    (RESULTS / "summary.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
