"""Turn-taking quality, side by side: fixed silence (500 ms, 1000 ms), semantic end of turn (ours,
Smart Turn v3.2) and FastRTC 0.0.34's `ReplyOnPause`, on the labelled set of bench/turn_eval_set.py.

    python bench/turn_taking_eval.py [--set DIR] [--sweep] [--no-fastrtc] [--tag turn_taking]

Every column hears the same 16 kHz WAVs, offline and as fast as the code runs (no wall clock is in
any decision: positions are media-clock samples):

- ours (fixed 500 ms, fixed 1000 ms, semantic): each WAV goes in 20 ms frames through a real
  `ReplyOnPause` session (`agentkit.testing.open_recorded_session`), exactly the path a call takes;
  an end of turn is a `pause_detected` event (`t_ms`: where it was decided).
- FastRTC: bench/_fastrtc_turns.py in bench/.fastrtc/venv feeds the same frames to FastRTC's own
  `ReplyOnPause.process_audio` (default `AlgoOptions`, its Silero VAD v4), one subprocess for all.

Metrics, from the labels (`speech_end_s`: last 10 ms block above -45 dBFS):

- complete utterances: end-of-turn delay = decision - end of speech, median and p95 (ms); "early"
  counts turns ended before the speech did (e.g. at "Yes, ... please").
- paused and list utterances: a false split is an end of turn decided before the last pause ends
  (the sentence was clearly unfinished there); counted per utterance.
- backchannels and coughs/noise: whether the clip started a turn (`started_talking`: a barge-in
  over a reply) and whether a turn ended on it (a reply to it). For the false-interruption work.
- model cost: one check (ONNX run incl. features, 8 s clip) and 50 sessions checking at once
  through `SmartTurn.probability` (batched): wall time until all have answered, and each caller's wait.

`--sweep` also scores schedules of checks (first check, recheck interval, thresholds, max silence;
then the unsure band's threshold and silence on the chosen schedule) on probability curves computed
once per pause at every 20 ms frame (the frames a real session checks at), to choose the defaults;
the tables it prints are what docs/benchmarks.md quotes.
Results go to bench/results/<tag>/ (JSON and the Markdown table).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import turn_eval_set as eval_set  # noqa: E402

FASTRTC_PY = BENCH_DIR / ".fastrtc" / "venv" / "bin" / "python"
FASTRTC_HF_CACHE = BENCH_DIR / ".fastrtc" / "hf_cache"
RESULTS_DIR = BENCH_DIR / "results"
RATE = eval_set.RATE
FRAME = 320  # 20 ms
CURVE_MAX_MS = 2000
COLUMNS = ("fixed 500 ms", "fixed 1000 ms", "semantic (ours)", "FastRTC 0.0.34")


@dataclass(frozen=True)
class ItemResult:
    """What one column did on one WAV: positions in ms from the start of the WAV."""

    started_ms: list[int]
    ended_ms: list[int]


# -- running our handler ----------------------------------------------------------------------------


async def run_ours(wavs: dict[str, np.ndarray], options: Any, semantic: Any) -> dict[str, ItemResult]:
    from agentkit import ReplyOnPause, Stream
    from agentkit.audio import AudioFrame, float_to_pcm16
    from agentkit.testing import open_recorded_session

    def reply(audio: AudioFrame) -> Iterator[AudioFrame]:
        del audio
        yield from ()

    stream = Stream(ReplyOnPause(reply, options=options, semantic_turn=semantic))
    results: dict[str, ItemResult] = {}
    for item_id, audio in wavs.items():
        session, transport = open_recorded_session(stream)
        await session.start()
        try:
            for start in range(0, audio.shape[0], FRAME):
                await session.receive_audio(float_to_pcm16(audio[start : start + FRAME]))
            await asyncio.sleep(0.02)
        finally:
            await session.close()
        started = [e.event.t_ms for e in transport.events_of("started_talking")]  # type: ignore[attr-defined]
        ended = [e.event.t_ms for e in transport.events_of("pause_detected")]  # type: ignore[attr-defined]
        results[item_id] = ItemResult(started, ended)
    return results


def run_fastrtc(paths: dict[str, Path]) -> dict[str, ItemResult] | None:
    if not FASTRTC_PY.exists():
        print(f"FastRTC venv missing ({FASTRTC_PY}): run bench/setup_fastrtc.sh", file=sys.stderr)
        return None
    env = dict(os.environ, HF_HUB_CACHE=str(FASTRTC_HF_CACHE), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [str(FASTRTC_PY), str(BENCH_DIR / "_fastrtc_turns.py"), *map(str, paths.values())],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    by_path = {str(p): k for k, p in paths.items()}
    results: dict[str, ItemResult] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        to_ms = lambda xs: [x * 1000 // RATE for x in xs]  # noqa: E731
        results[by_path[row["wav"]]] = ItemResult(to_ms(row["started_talking"]), to_ms(row["pause_detected"]))
    return results


# -- scoring ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def score(items: list[dict[str, Any]], results: dict[str, ItemResult]) -> dict[str, Any]:
    delays: list[float] = []
    early = 0
    unended = 0
    split_items: list[str] = []
    splits = {"spoken": 0, "cut": 0, "list": 0}
    paused_delays: list[float] = []
    reactions = {"backchannel": [0, 0, 0], "noise": [0, 0, 0]}  # clips, started, ended
    for item in items:
        result = results[item["id"]]
        end_ms = item["speech_end_s"] * 1000
        kind = item["kind"]
        if kind == "complete":
            early += sum(1 for t in result.ended_ms if t < end_ms)
            after = [t - end_ms for t in result.ended_ms if t >= end_ms]
            if after:
                delays.append(after[0])
            else:
                unended += 1
        elif kind in ("paused", "list"):
            last_pause_end = item["pauses_s"][-1][1] * 1000
            if any(t < last_pause_end for t in result.ended_ms):
                split_items.append(item["id"])
                splits["list" if kind == "list" else item.get("style") or "spoken"] += 1
            after = [t - end_ms for t in result.ended_ms if t >= end_ms]
            if after:
                paused_delays.append(after[0])
        else:
            counts = reactions[kind]
            counts[0] += 1
            counts[1] += bool(result.started_ms)
            counts[2] += bool(result.ended_ms)
    n_paused = sum(1 for item in items if item["kind"] in ("paused", "list"))
    groups = {
        "spoken": sum(1 for i in items if i["kind"] == "paused" and i.get("style", "spoken") == "spoken"),
        "cut": sum(1 for i in items if i["kind"] == "paused" and i.get("style") == "cut"),
        "list": sum(1 for i in items if i["kind"] == "list"),
    }
    return {
        "complete_n": len(delays) + unended,
        "complete_median_ms": percentile(delays, 50),
        "complete_p95_ms": percentile(delays, 95),
        "complete_early": early,
        "complete_unended": unended,
        "paused_n": n_paused,
        "false_splits": len(split_items),
        "splits_by_style": splits,
        "paused_by_style": groups,
        "split_items": split_items,
        "paused_end_median_ms": percentile(paused_delays, 50),
        "backchannel": reactions["backchannel"],
        "noise": reactions["noise"],
    }


# -- the schedule sweep -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    check_after_ms: int
    recheck_ms: int
    max_silence_ms: int
    threshold: float
    recheck_threshold: float
    unsure_silence_ms: int | None = None  # None: no unsure band, every pause waits for max_silence_ms
    unsure_threshold: float = 1.0


def curves(
    items: list[dict[str, Any]], wavs: dict[str, np.ndarray], cache: Path
) -> dict[str, list[list[float]]]:
    """For each item, the pauses the detector sees on the no-split path, one row per 20 ms frame:
    [position, speech_end, silence (samples), probability]. Cached beside the set, per WAV."""
    stored: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    known: dict[str, Any] = stored.get("by_audio", {})
    from agentkit.providers import SileroVAD, SmartTurn
    from agentkit.stream import TurnDetector, TurnTakingOptions

    vad = SileroVAD()
    vad.load()
    model = SmartTurn()
    assert model.load()
    options = TurnTakingOptions(end_of_turn_silence_ms=5000)
    out: dict[str, list[list[float]]] = {}
    for item in items:
        audio = wavs[item["id"]]
        key = hashlib.sha256(audio.tobytes()).hexdigest()[:16]
        if key in known:
            out[item["id"]] = known[key]
            continue
        detector = TurnDetector(
            vad.stream(), sample_rate=RATE, chunk_samples=vad.chunk_samples, options=options
        )
        rows_item: list[list[float]] = []
        clips: list[np.ndarray] = []
        for start in range(0, audio.shape[0], FRAME):
            detector.process(audio[start : start + FRAME])
            silence = detector.silence_samples
            if 0 < silence <= CURVE_MAX_MS * RATE // 1000:
                clip = detector.recent_audio(model.max_audio_samples)
                assert clip is not None
                rows_item.append([detector.position_samples, detector.speech_end_samples, silence, 0.0])
                clips.append(clip)
        for k in range(0, len(clips), 16):
            for j, p in enumerate(model.predict(clips[k : k + 16])):
                rows_item[k + j][3] = float(p)
        out[item["id"]] = known[key] = rows_item
        print(f"  curve {item['id']}: {len(rows_item)} frames in pauses", file=sys.stderr)
    cache.write_text(json.dumps({"by_audio": known}))
    return out


def simulate(rows: list[list[float]], schedule: Schedule) -> list[int]:
    """Where (ms) the schedule would end turns on this no-split path: its first end (then it stops).
    The same decisions as `SemanticEndOfTurn`, frame by frame."""
    first = schedule.check_after_ms * RATE // 1000
    every = schedule.recheck_ms * RATE // 1000
    most = schedule.max_silence_ms * RATE // 1000
    band = most if schedule.unsure_silence_ms is None else schedule.unsure_silence_ms * RATE // 1000
    pause, due, checks, unsure = -1.0, first, 0, False
    for position, speech_end, silence, probability in rows:
        if speech_end != pause:
            pause, due, checks, unsure = speech_end, first, 0, False
        if silence >= most or (unsure and silence >= band):
            return [int(position) * 1000 // RATE]
        if due >= 0 and silence >= due:
            threshold = schedule.threshold if checks == 0 else schedule.recheck_threshold
            checks += 1
            due = int(silence) + every if every else -1
            unsure = unsure or probability >= schedule.unsure_threshold
            if probability >= threshold or (unsure and silence >= band):
                return [int(position) * 1000 // RATE]
    if rows:  # the last pause ran into the trailing silence: the detector ends it at max silence
        return [int(pause + most) * 1000 // RATE]
    return []


def sweep(
    items: list[dict[str, Any]], rows: dict[str, list[list[float]]]
) -> list[tuple[Schedule, dict[str, Any]]]:
    scored: list[tuple[Schedule, dict[str, Any]]] = []
    for after in (150, 180, 200, 250):
        for recheck in (0, 100, 150, 200, 300):
            for most in (1500, 1750, 2000):
                for threshold in (0.5, 0.7, 0.8, 0.9, 0.95, 0.97):
                    for again in sorted({threshold, 0.9, 0.95, 0.97, 0.98, 0.99}):
                        if again < threshold or (recheck == 0 and again != threshold):
                            continue
                        schedule = Schedule(after, recheck, most, threshold, again)
                        results = {i["id"]: ItemResult([], simulate(rows[i["id"]], schedule)) for i in items}
                        scored.append((schedule, score(items, results)))
    return scored


BAND_THRESHOLDS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93)
BAND_SILENCES_MS = tuple(range(1000, 1501, 50))


def band_sweep(
    items: list[dict[str, Any]], rows: dict[str, list[list[float]]], base: Schedule
) -> dict[tuple[int, float], dict[str, Any]]:
    """The unsure band on `base` (the other defaults): every silence x threshold of the grids above."""
    scored: dict[tuple[int, float], dict[str, Any]] = {}
    for silence_ms in BAND_SILENCES_MS:
        for threshold in BAND_THRESHOLDS:
            schedule = replace(base, unsure_silence_ms=silence_ms, unsure_threshold=threshold)
            results = {i["id"]: ItemResult([], simulate(rows[i["id"]], schedule)) for i in items}
            scored[silence_ms, threshold] = score(items, results)
    return scored


# -- model cost -------------------------------------------------------------------------------------


def model_cost(wav: np.ndarray) -> dict[str, float]:
    from agentkit.providers import SmartTurn

    model = SmartTurn()
    assert model.load()
    clip = wav[-model.max_audio_samples :]
    model.predict([clip])
    singles = []
    for _ in range(20):
        t0 = time.perf_counter()
        model.predict([clip])
        singles.append((time.perf_counter() - t0) * 1000)

    async def fifty() -> tuple[float, list[float]]:
        waits: list[float] = []

        async def one() -> None:
            t0 = time.perf_counter()
            await model.probability(clip)
            waits.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(50)))
        wall = (time.perf_counter() - t0) * 1000
        await model.aclose()
        return wall, waits

    walls, all_waits = [], []
    for _ in range(3):
        wall, waits = asyncio.run(fifty())
        walls.append(wall)
        all_waits += waits
    return {
        "check_median_ms": statistics.median(singles),
        "check_p95_ms": percentile(singles, 95),
        "fifty_wall_ms": statistics.median(walls),
        "fifty_wait_median_ms": statistics.median(all_waits),
        "fifty_wait_p95_ms": percentile(all_waits, 95),
        "fifty_per_check_ms": statistics.median(walls) / 50,
    }


# -- report -----------------------------------------------------------------------------------------


def fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.0f}"


def table(scores: dict[str, dict[str, Any]], cost: dict[str, float] | None) -> str:
    cols = [c for c in COLUMNS if c in scores]
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]

    def row(name: str, f: Any) -> None:
        lines.append(f"| {name} | " + " | ".join(f(scores[c]) for c in cols) + " |")

    any_ = next(iter(scores.values()))
    row(
        f"complete ({any_['complete_n']}): median end-of-turn delay, ms",
        lambda s: fmt(s["complete_median_ms"]),
    )
    row("complete: p95 delay, ms", lambda s: fmt(s["complete_p95_ms"]))
    row("complete: turns ended before the speech did", lambda s: str(s["complete_early"]))
    row(
        f"paused + lists ({any_['paused_n']}): false splits (utterances)",
        lambda s: str(s["false_splits"]),
    )
    groups = any_["paused_by_style"]
    for key, name in (
        ("spoken", "spoken hesitation"),
        ("cut", "fluent sentence cut open"),
        ("list", "lists"),
    ):
        row(f"... {name} ({groups[key]})", lambda s, key=key: str(s["splits_by_style"][key]))
    row("paused/lists: median delay of the final end, ms", lambda s: fmt(s["paused_end_median_ms"]))
    b, n = any_["backchannel"][0], any_["noise"][0]
    row(
        f"backchannels ({b}): started a turn / got a turn end",
        lambda s: f"{s['backchannel'][1]} / {s['backchannel'][2]}",
    )
    row(
        f"coughs, noise ({n}): started a turn / got a turn end",
        lambda s: f"{s['noise'][1]} / {s['noise'][2]}",
    )
    text = "\n".join(lines) + "\n"
    if cost is not None:
        text += (
            f"\nSmart Turn cost: one check {cost['check_median_ms']:.0f} ms "
            f"(p95 {cost['check_p95_ms']:.0f} ms); "
            f"50 sessions checking at once: all answered in {cost['fifty_wall_ms']:.0f} ms "
            f"({cost['fifty_per_check_ms']:.1f} ms per check), each caller waited "
            f"{cost['fifty_wait_median_ms']:.0f} ms median, {cost['fifty_wait_p95_ms']:.0f} ms p95.\n"
        )
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--set", type=Path, default=eval_set.default_out(), help="set folder (built if needed)"
    )
    parser.add_argument("--sweep", action="store_true", help="also score schedules of checks")
    parser.add_argument("--no-fastrtc", action="store_true")
    parser.add_argument("--no-cost", action="store_true")
    parser.add_argument("--tag", default="turn_taking")
    args = parser.parse_args()

    from agentkit.providers import SmartTurn
    from agentkit.stream import TurnTakingOptions

    items = eval_set.ensure_set(args.set)
    paths = {item["id"]: args.set / f"{item['id']}.wav" for item in items}
    wavs = {k: eval_set.read_wav16(p) for k, p in paths.items()}
    out_dir = RESULTS_DIR / args.tag
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}

    if args.sweep:
        rows = curves(items, wavs, args.set / "curves.json")
        scored = sweep(items, rows)
        fixed1000 = score(
            items, asyncio.run(run_ours(wavs, TurnTakingOptions(end_of_turn_silence_ms=1000), None))
        )
        print(f"\nfixed 1000 ms: {fixed1000['false_splits']} false splits; per number of false splits, the")
        print("fastest schedules with a median delay of at most 250 ms (sorted by p95, then median):")
        fast = [(s, m) for s, m in scored if m["complete_median_ms"] <= 250]
        for splits in sorted({m["false_splits"] for _, m in fast})[:8]:
            best = sorted(
                (sm for sm in fast if sm[1]["false_splits"] == splits),
                key=lambda sm: (
                    sm[1]["complete_p95_ms"],
                    sm[1]["complete_median_ms"],
                    sm[1]["complete_early"],
                ),
            )
            for schedule, m in best[:3]:
                print(
                    f"  splits {splits:2} {m['splits_by_style']}  median {m['complete_median_ms']:.0f}  "
                    f"p95 {m['complete_p95_ms']:.0f}  early {m['complete_early']}  {schedule}"
                )
        keep = ("complete_median_ms", "complete_p95_ms", "complete_early", "false_splits", "splits_by_style")
        ranked = sorted(scored, key=lambda sm: (sm[1]["false_splits"], sm[1]["complete_p95_ms"]))
        report["sweep_best_100"] = [
            {"schedule": asdict(s), **{k: m[k] for k in keep}} for s, m in ranked[:100]
        ]
        chosen = TurnTakingOptions()
        base = Schedule(
            chosen.semantic_check_after_ms,
            chosen.semantic_recheck_ms,
            chosen.semantic_max_silence_ms,
            chosen.semantic_threshold,
            chosen.semantic_recheck_threshold,
        )
        band = band_sweep(items, rows, base)
        print("\nthe unsure band on the other defaults: false splits / complete p95 (ms)")
        print("  silence \\ p >= " + " ".join(f"{t:>9}" for t in BAND_THRESHOLDS))
        for silence_ms in BAND_SILENCES_MS:
            cells = (band[silence_ms, t] for t in BAND_THRESHOLDS)
            print(
                f"  {silence_ms:>7} ms    "
                + " ".join(f"{m['false_splits']:>3} / {m['complete_p95_ms']:4.0f}" for m in cells)
            )
        medians = sorted({m["complete_median_ms"] for m in band.values()})
        print(f"  complete median: {medians[0]:.0f}-{medians[-1]:.0f} ms")
        report["band_sweep"] = [
            {"unsure_silence_ms": u, "unsure_threshold": t, **{k: m[k] for k in keep}}
            for (u, t), m in band.items()
        ]

    defaults = TurnTakingOptions()
    runs: dict[str, dict[str, ItemResult]] = {}
    runs["fixed 500 ms"] = asyncio.run(run_ours(wavs, replace(defaults, end_of_turn_silence_ms=500), None))
    runs["fixed 1000 ms"] = asyncio.run(run_ours(wavs, replace(defaults, end_of_turn_silence_ms=1000), None))
    runs["semantic (ours)"] = asyncio.run(run_ours(wavs, defaults, SmartTurn()))
    if not args.no_fastrtc:
        fastrtc = run_fastrtc(paths)
        if fastrtc is not None:
            runs["FastRTC 0.0.34"] = fastrtc
    scores = {name: score(items, result) for name, result in runs.items()}
    cost = None if args.no_cost else model_cost(wavs[items[0]["id"]])
    text = table(scores, cost)
    print()
    print(text)
    for name, s in scores.items():
        print(f"{name}: split {s['split_items']}")
    report.update(
        semantic_options={k: getattr(defaults, k) for k in dir(defaults) if k.startswith("semantic_")},
        scores=scores,
        cost=cost,
        per_item={name: {k: asdict(v) for k, v in r.items()} for name, r in runs.items()},
        labels=items,
    )
    (out_dir / "results.json").write_text(json.dumps(report, separators=(",", ":")) + "\n")
    (out_dir / "table.md").write_text(text)
    print(f"results in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
