"""Where turn-taking puts the end of speech in phone audio: Silero at 16 kHz (the call resampled up)
against Silero at 8 kHz (the call as it comes), for several `vad_tail_ms`.

    python bench/end_of_speech_rates.py [--tails 64,96,128,160] [--set DIR]

Each `complete`, `paused` and `list` item of the labelled turn-taking set (bench/turn_eval_set.py,
built if needed) goes through what a Twilio call does to it: down to 8 kHz, mu-law, 20 ms messages.
The detector (`TurnDetector`, silence setting 500 ms) runs at each rate; every turn it ends is paired
with the nearest labelled boundary (a pause's start or the end of speech: last 10 ms block above
-45 dBFS). The benchmark's own recording (`utt2_raw.wav`, digital silence after the speech) is run
too. Printed per rate and tail: the located end of speech minus the label (negative: earlier), and
the decision's delay after the label (the silence setting plus what the detector adds), in ms.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soxr

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run_bench as rb  # noqa: E402
import turn_eval_set as eval_set  # noqa: E402

from agentkit.audio import StreamingResampler, mulaw_encode, mulaw_to_float, read_wav  # noqa: E402
from agentkit.providers.vad import SileroVAD  # noqa: E402
from agentkit.stream import TurnTakingOptions  # noqa: E402
from agentkit.stream._turn import TurnDetector, TurnEnded  # noqa: E402

PHONE = 8000
MESSAGE = PHONE // 50  # Twilio's 20 ms


def phone_payload(samples: np.ndarray, rate: int) -> bytes:
    """`samples` as a Twilio call carries them: 8 kHz mu-law."""
    narrow = soxr.resample(samples.astype(np.float32), rate, PHONE)
    return mulaw_encode((np.clip(narrow, -1.0, 1.0) * 32767).astype(np.int16))


def turn_ends(payload: bytes, vad: SileroVAD, tail_ms: int) -> list[tuple[float, float]]:
    """(located end of speech, decision) in seconds for every turn the detector ends."""
    rate = vad.sample_rate
    options = TurnTakingOptions(vad_tail_ms=tail_ms)
    detector = TurnDetector(vad.stream(), sample_rate=rate, chunk_samples=vad.chunk_samples, options=options)
    upsample = StreamingResampler(PHONE, rate, quality="QQ") if rate != PHONE else None
    ends: list[tuple[float, float]] = []
    for start in range(0, len(payload), MESSAGE):
        samples = mulaw_to_float(payload[start : start + MESSAGE])
        if upsample is not None:
            samples = upsample.process(samples)
        for event in detector.process(samples):
            if isinstance(event, TurnEnded):
                ends.append((event.speech_end_samples / rate, event.decided_samples / rate))
    return ends


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tails", default="64,96,128,160", help="vad_tail_ms values, comma-separated")
    parser.add_argument(
        "--set", type=Path, default=eval_set.default_out(), help="set folder (built if needed)"
    )
    args = parser.parse_args()
    tails = [int(t) for t in args.tails.split(",")]
    items = [i for i in eval_set.ensure_set(args.set) if i["kind"] in ("complete", "paused", "list")]
    wide = SileroVAD()
    vads = {16000: wide, PHONE: wide.at_rate(PHONE)}
    recording = read_wav(rb.BASELINE_DIR / "audio" / "utt2_raw.wav")
    padded = np.concatenate([recording.samples, np.zeros(2 * recording.sample_rate, np.float32)])
    recording_payload = phone_payload(padded, recording.sample_rate)
    recording_end = eval_set.speech_bounds_s(
        soxr.resample(recording.samples, recording.sample_rate, eval_set.RATE)
    )[1]
    payloads = [
        (phone_payload(eval_set.read_wav16(args.set / f"{item['id']}.wav"), eval_set.RATE), item)
        for item in items
    ]
    print(f"{len(items)} items; ms after the label: end of speech located (mean, p10, p90, max), decided")
    print(
        f"{'rate':>6} {'tail':>5} {'turns':>5} | {'end mean':>8} {'p10':>5} {'p90':>5} {'max':>5} | "
        f"{'decided':>7} {'p90':>5} | utt2 end, decided"
    )
    for rate, vad in vads.items():
        for tail in tails:
            errors: list[float] = []
            delays: list[float] = []
            for payload, item in payloads:
                bounds = [pause[0] for pause in item["pauses_s"]] + [item["speech_end_s"]]
                for end, decided in turn_ends(payload, vad, tail):
                    label = min(bounds, key=lambda b: abs(b - end))
                    errors.append(1000 * (end - label))
                    delays.append(1000 * (decided - label))
            utt2 = turn_ends(recording_payload, vad, tail)
            e, d = np.array(errors), np.array(delays)
            utt2_text = (
                f"{1000 * (utt2[0][0] - recording_end):+.0f}, {1000 * (utt2[0][1] - recording_end):.0f}"
                if utt2
                else "-"
            )
            print(
                f"{rate:>6} {tail:>5} {e.size:>5} | {e.mean():>8.1f} {np.percentile(e, 10):>5.0f} "
                f"{np.percentile(e, 90):>5.0f} {e.max():>5.0f} | {d.mean():>7.1f} "
                f"{np.percentile(d, 90):>5.0f} | {utt2_text}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
