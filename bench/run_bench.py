"""Side-by-side echo benchmark: FastRTC 0.0.34 vs agentkit, in one run, on this machine.

    python bench/run_bench.py [--runs 20] [--quick] [--frameworks fastrtc agentkit]

For each framework in turn it starts an echo server on a free 127.0.0.1 port (FastRTC:
`shared/baselines/fastrtc/server_echo.py` in bench/.fastrtc/venv; agentkit:
bench/agentkit_echo_server.py in this interpreter), waits for `GET /healthz`, and drives it with the
shared, unmodified clients in `shared/baselines/fastrtc`, run by path with identical arguments:

- `ws_latency_client.py --wav utt2_raw.wav|utt1_raw.wav --runs N --seed 0 --lead-jitter 0.6`:
  fresh WebSocket connections (FastRTC protocol, `/websocket/offer`, 48 kHz mu-law in, 24 kHz out)
  that stream the WAV in real time (20 ms frames) and then silence. It measures

      latency = t(first response `media` message) - t(end of speech)

  where end of speech is the end of the last 10 ms WAV frame above -45 dBFS, on the client's
  real-time send schedule. A connection with no response audio within `--max-wait` s is a failure,
  counted separately and left out of the latency statistics. Median and p95 (linear interpolation
  between order statistics) are computed here from the per-turn JSON.
- `idle_cpu_probe.py --sessions 1|3 --seconds S`: server CPU time (utime + stime from /proc) per
  wall second while N connected sessions stream silence; per-session cost = cores / N.

Then it prints `metric | FastRTC | agentkit | ratio (agentkit/FastRTC)` and checks agentkit against the
targets: median latency <= configured end-of-turn silence + 40 ms with 0 failures, and <= 0.05 core
per silent session. Small JSON + text results go to bench/results/<tag>/; logs to bench/.logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
BASELINE_DIR = SHARED_DIR / "baselines" / "fastrtc"
FASTRTC_ENV = BENCH_DIR / ".fastrtc"
FASTRTC_PY = FASTRTC_ENV / "venv" / "bin" / "python"
FASTRTC_HF_CACHE = FASTRTC_ENV / "hf_cache"
LOG_DIR = BENCH_DIR / ".logs"
RESULTS_DIR = BENCH_DIR / "results"

FRAMEWORKS = ("fastrtc", "agentkit")
LABELS = {"fastrtc": "FastRTC", "agentkit": "agentkit"}
WAVS = ("utt2_raw.wav", "utt1_raw.wav")
INPUT_SR = 48000
OUTPUT_SR = 24000
LATENCY_SLACK_S = 0.040  # target: median <= configured silence + 40 ms
IDLE_CORES_TARGET = 0.05  # target: <= 0.05 core per silent connected session
HEALTHZ_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(port: int, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET http://127.0.0.1:<port><path> and decode the JSON body."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


@dataclass
class ServerSpec:
    """How to start one framework's echo server."""

    framework: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def server_spec(framework: str, port: int, silence_ms: int | None) -> ServerSpec:
    common = [
        "--port",
        str(port),
        "--input-sr",
        str(INPUT_SR),
        "--output-sr",
        str(OUTPUT_SR),
    ]
    common += ["--concurrency", "10"]
    env = dict(os.environ)
    if framework == "fastrtc":
        env.update(HF_HUB_CACHE=str(FASTRTC_HF_CACHE), HF_HUB_OFFLINE="1")
        argv = [
            str(FASTRTC_PY),
            "-W",
            "ignore",
            str(BASELINE_DIR / "server_echo.py"),
            *common,
        ]
        return ServerSpec(framework, argv, env, BASELINE_DIR)
    env.setdefault("AGENTKIT_MODELS_DIR", str(SHARED_DIR / "models"))
    env.setdefault("AGENTKIT_OFFLINE", "1")
    argv = [sys.executable, str(BENCH_DIR / "agentkit_echo_server.py"), *common]
    if silence_ms is not None:
        argv += ["--silence-ms", str(silence_ms)]
    return ServerSpec(framework, argv, env, REPO_ROOT)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn's graceful shutdown), wait, then SIGKILL the server's own process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"  server pid {proc.pid} ignored SIGINT for {STOP_TIMEOUT_S:.0f}s; killing it")
    # the server runs in a session of its own: this reaches only it and its children
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def running_server(spec: ServerSpec, port: int, log_path: Path) -> Iterator[dict[str, Any]]:
    """Start the server, yield its /healthz JSON once it answers, always stop it afterwards."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=spec.env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + HEALTHZ_TIMEOUT_S
            health: dict[str, Any] | None = None
            while health is None:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{spec.framework} server exited with {proc.returncode}; see {log_path}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{spec.framework} server not healthy in {HEALTHZ_TIMEOUT_S:.0f}s; see {log_path}"
                    )
                try:
                    health = get_json(port, "/healthz", timeout_s=2.0)
                except OSError:
                    time.sleep(0.25)
            yield health
        finally:
            stop_process(proc)


# --------------------------------------------------------------------------------------------------
# shared clients
# --------------------------------------------------------------------------------------------------
def run_client(script: str, args: list[str], log_path: Path) -> str:
    """Run a shared baseline client by path in the FastRTC venv (websockets, numpy, soxr); stdout."""
    argv = [str(FASTRTC_PY), "-W", "ignore", str(BASELINE_DIR / script), *args]
    with log_path.open("w") as log_file:
        done = subprocess.run(
            argv,
            cwd=BASELINE_DIR,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            check=False,
        )
        log_file.write(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"{script} exited with {done.returncode}; see {log_path}")
    return done.stdout


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latency_stats(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/p95 of end-of-speech -> first reply audio over the turns that got a reply."""
    lat = [float(t["latency_s"]) for t in turns if t.get("latency_s") is not None]
    return {
        "turns": len(turns),
        "n": len(lat),
        "failures": len(turns) - len(lat),
        "median_s": percentile(lat, 50),
        "p95_s": percentile(lat, 95),
        "min_s": min(lat) if lat else None,
        "max_s": max(lat) if lat else None,
        "early_replies": sum(1 for t in turns if t.get("early_msgs")),
        # server CPU seconds burned during one whole connection (utterance, reply, silence)
        "server_cpu_s_per_connection_median": percentile(
            [t["server_cpu_s"] for t in turns if t.get("server_cpu_s") is not None], 50
        ),
        "pause_detected_median_s": percentile(
            [t["pause_detected_s"] for t in turns if t.get("pause_detected_s") is not None],
            50,
        ),
    }


@dataclass
class FrameworkResult:
    framework: str
    healthz: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # wav stem / "all" -> stats
    idle: dict[int, dict[str, Any]] = field(default_factory=dict)  # sessions -> probe output
    error: str | None = None


def bench_framework(framework: str, opts: argparse.Namespace, out_dir: Path) -> FrameworkResult:
    """Start one framework's server, run the latency series and idle probes against it, stop it."""
    result = FrameworkResult(framework)
    port = free_port()
    spec = server_spec(framework, port, opts.silence_ms)
    print(f"== {LABELS[framework]}: starting server on 127.0.0.1:{port}", flush=True)
    t_start = time.perf_counter()
    with running_server(spec, port, LOG_DIR / f"{framework}_server.log") as health:
        print(
            f"  healthy after {time.perf_counter() - t_start:.1f}s: {json.dumps(health)[:160]}",
            flush=True,
        )
        result.healthz = health
        rates = (health.get("input_sample_rate"), health.get("output_sample_rate"))
        if rates != (INPUT_SR, OUTPUT_SR):
            raise RuntimeError(
                f"{framework} /healthz reports rates {rates}, expected {(INPUT_SR, OUTPUT_SR)}"
            )
        with contextlib.suppress(OSError, ValueError):
            result.config = get_json(port, "/bench/config")
        all_turns: list[dict[str, Any]] = []
        for wav in WAVS:
            stem = Path(wav).stem
            out_json = out_dir / f"{framework}_{stem}.json"
            client_args = [
                "--port",
                str(port),
                "--wav",
                str(BASELINE_DIR / "audio" / wav),
            ]
            client_args += [
                "--runs",
                str(opts.runs),
                "--seed",
                str(opts.seed),
                "--lead-jitter",
                str(opts.lead_jitter),
            ]
            client_args += ["--max-wait", str(opts.max_wait), "--out", str(out_json)]
            print(f"  latency: {wav}, {opts.runs} connections ...", flush=True)
            run_client(
                "ws_latency_client.py",
                client_args,
                LOG_DIR / f"{framework}_{stem}_client.log",
            )
            turns = json.loads(out_json.read_text())["turns"]
            all_turns += turns
            stats = latency_stats(turns)
            result.latency[stem] = stats
            print(f"    {format_latency(stats)}", flush=True)
        result.latency["all"] = latency_stats(all_turns)
        for sessions in opts.idle_sessions:
            print(
                f"  idle CPU: {sessions} silent session(s), {opts.idle_seconds:g}s ...",
                flush=True,
            )
            probe_args = [
                "--port",
                str(port),
                "--sessions",
                str(sessions),
                "--seconds",
                str(opts.idle_seconds),
            ]
            stdout = run_client(
                "idle_cpu_probe.py",
                probe_args,
                LOG_DIR / f"{framework}_idle{sessions}_client.log",
            )
            probe: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
            probe["cores_per_session"] = probe["with_sessions_cores"] / sessions
            result.idle[sessions] = probe
            (out_dir / f"{framework}_idle{sessions}.json").write_text(json.dumps(probe, indent=1) + "\n")
            print(
                f"    {probe['with_sessions_cores']:.3f} cores total, "
                f"{probe['cores_per_session']:.3f} per session",
                flush=True,
            )
    return result


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def format_latency(stats: dict[str, Any]) -> str:
    med, p95 = stats["median_s"], stats["p95_s"]
    return (
        f"median {fmt_s(med)}, p95 {fmt_s(p95)}, failures {stats['failures']}/{stats['turns']}, "
        f"early replies {stats['early_replies']}"
    )


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def fmt_num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}{unit}"


def ratio(agentkit: float | None, fastrtc: float | None) -> str:
    if agentkit is None or fastrtc is None or fastrtc == 0:
        return "-"
    return f"{agentkit / fastrtc:.2f}"


def build_table(results: dict[str, FrameworkResult], idle_sessions: list[int]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(metric: str, pick: Any, unit: str = "") -> None:
        values = {fw: pick(res) for fw, res in results.items()}
        fr, ak = values.get("fastrtc"), values.get("agentkit")
        rows.append([metric, fmt_num(fr, unit), fmt_num(ak, unit), ratio(ak, fr)])

    groups = [Path(w).stem for w in WAVS] + ["all"]
    for group in groups:

        def lat(key: str, g: str = group) -> Any:
            return lambda r: r.latency.get(g, {}).get(key)

        name = "both WAVs" if group == "all" else group
        add(f"latency median, {name}", lat("median_s"), " s")
        add(f"latency p95, {name}", lat("p95_s"), " s")
        add(f"failures, {name}", lat("failures"))
        add(f"early replies, {name}", lat("early_replies"))
        add(f"server CPU per connection (median), {name}", lat("server_cpu_s_per_connection_median"), " s")
    for n in idle_sessions:
        add(
            f"idle CPU per session, {n} session(s)",
            lambda r, n=n: r.idle.get(n, {}).get("cores_per_session"),
            " core",
        )
    return rows


def render_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def target_checks(agentkit: FrameworkResult) -> list[str]:
    """The issue's targets, checked on the agentkit result."""
    lines: list[str] = []
    silence_ms = agentkit.config.get("end_of_turn_silence_ms")
    if silence_ms is None:
        lines.append("target latency: unknown configured silence (no /bench/config) - not checked")
    else:
        limit_s = silence_ms / 1000 + LATENCY_SLACK_S
        for group, stats in agentkit.latency.items():
            med, fails = stats["median_s"], stats["failures"]
            ok = med is not None and med <= limit_s and fails == 0
            lines.append(
                f"target latency [{group}]: median {fmt_s(med)} <= {limit_s:.3f} s "
                f"(silence {silence_ms} ms + 40 ms), failures {fails} == 0: {'PASS' if ok else 'FAIL'}"
            )
    for n, probe in sorted(agentkit.idle.items()):
        cores = probe["cores_per_session"]
        ok = cores <= IDLE_CORES_TARGET
        lines.append(
            f"target idle CPU [{n} session(s)]: {cores:.3f} <= {IDLE_CORES_TARGET} core/session: "
            f"{'PASS' if ok else 'FAIL'}"
        )
    return lines


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="connections per WAV (default 20; --quick: 3)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 runs per WAV, 5 s idle probes, 1 session only",
    )
    p.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    p.add_argument(
        "--silence-ms",
        type=int,
        default=None,
        help="agentkit end-of-turn silence (default: its own)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lead-jitter", type=float, default=0.6)
    p.add_argument(
        "--max-wait",
        type=float,
        default=10.0,
        help="client: failure after this long without reply",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=None,
        help="idle probe length (default 10; --quick: 5)",
    )
    p.add_argument(
        "--tag",
        default=None,
        help="results subfolder (default: frameworks joined by '-')",
    )
    opts = p.parse_args(argv)
    opts.runs = opts.runs if opts.runs is not None else (3 if opts.quick else 20)
    opts.idle_seconds = opts.idle_seconds if opts.idle_seconds is not None else (5.0 if opts.quick else 10.0)
    opts.idle_sessions = [1] if opts.quick else [1, 3]
    opts.frameworks = [fw for fw in FRAMEWORKS if fw in opts.frameworks]  # fixed order
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if not FASTRTC_PY.exists() or not (FASTRTC_HF_CACHE / "models--freddyaboulton--silero-vad").is_dir():
        print(f"FastRTC baseline env missing under {FASTRTC_ENV}: run `bash bench/setup_fastrtc.sh` first")
        return 2
    if not BASELINE_DIR.is_dir():
        print(f"shared baseline harness not found at {BASELINE_DIR}")
        return 2
    tag = opts.tag or "-".join(opts.frameworks) + ("-quick" if opts.quick else "")
    out_dir = RESULTS_DIR / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(
        f"# load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"cpus {os.cpu_count()}"
    )
    if load_before[0] > 0.5:
        print("# WARNING: the machine is busy; latency and CPU numbers may be disturbed")

    t0 = time.perf_counter()
    results: dict[str, FrameworkResult] = {}
    failed = False
    for framework in opts.frameworks:
        try:
            results[framework] = bench_framework(framework, opts, out_dir)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            print(f"!! {LABELS[framework]} failed: {exc}")
            results[framework] = FrameworkResult(framework, error=str(exc))
            failed = True

    header = ["metric", "FastRTC 0.0.34", "agentkit", "ratio (agentkit/FastRTC)"]
    rows = build_table(results, opts.idle_sessions)
    title = (
        f"# side-by-side echo benchmark: {opts.runs} connections per WAV, seed {opts.seed}, "
        f"lead jitter {opts.lead_jitter} s, {INPUT_SR} Hz in / {OUTPUT_SR} Hz out mu-law, "
        f"idle probes {opts.idle_seconds:g} s"
    )
    lines = [title, render_table(header, rows)]
    if "agentkit" in results and results["agentkit"].error is None:
        silence = results["agentkit"].config.get("end_of_turn_silence_ms")
        lines.append(f"agentkit end-of-turn silence: {silence} ms")
        lines += target_checks(results["agentkit"])
    for fw, res in results.items():
        if res.error:
            lines.append(f"{LABELS[fw]} ERROR: {res.error}")
    load_after = os.getloadavg()
    lines.append(
        f"load average before/after: {load_before[0]:.2f}/{load_after[0]:.2f}; "
        f"took {time.perf_counter() - t0:.0f} s"
    )
    report = "\n".join(lines)
    print()
    print(report)

    summary = {
        "runs_per_wav": opts.runs,
        "seed": opts.seed,
        "lead_jitter_s": opts.lead_jitter,
        "max_wait_s": opts.max_wait,
        "idle_seconds": opts.idle_seconds,
        "wavs": list(WAVS),
        "input_sample_rate": INPUT_SR,
        "output_sample_rate": OUTPUT_SR,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "python": sys.version.split()[0],
        "frameworks": {
            fw: {
                "healthz": r.healthz,
                "config": r.config,
                "latency": r.latency,
                "idle": r.idle,
                "error": r.error,
            }
            for fw, r in results.items()
        },
        "table": {"header": header, "rows": rows},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "summary.txt").write_text(report + "\n")
    print(
        f"\nresults: {out_dir.relative_to(REPO_ROOT)}/ (summary.txt, summary.json, per-series JSON); "
        f"logs: {LOG_DIR.relative_to(REPO_ROOT)}/"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
