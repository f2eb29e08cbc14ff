"""Build the labelled turn-taking evaluation set: WAVs and labels in a cache folder, not in git.

    python bench/turn_eval_set.py [--out DIR] [--force]

The utterances are defined in tests/data/turn_eval.json (text, voice, pause lengths); this script
speaks them offline and writes `<id>.wav` (16 kHz mono PCM16) and `labels.json` to DIR (default
`($XDG_CACHE_HOME or ~/.cache)/agentkit/turn_eval`). A set already built from the same definitions
is kept (`--force` rebuilds it).

Kinds of item:

- `complete`: a whole question or statement, then silence. A good end of turn comes soon after it.
- `paused`: a sentence with one or two pauses (0.5-1.2 s) where it is clearly unfinished
  ("My order number is ... four five seven two nine."). Ending the turn in such a pause is a
  false split.
- `list`: items read with pauses between them ("eggs, ... milk, ... and bread"); same rule.
- `backchannel` ("Mm-hmm.", "Yeah.", "Right.", "Okay.") and `noise` (synthetic: shaped-noise
  coughs, a noise burst and knocks, which Silero does not call speech; and voiced coughs, a fit of
  coughing, a throat clear, a laugh and a sigh, which it does, from `agentkit.testing`): for the
  interruption metrics (should they barge in, should they get a reply).

How a pause is made, two ways (`style`):

- `spoken` (default): the whole sentence is spoken in one go with "..." at the pause (Kokoro) or an
  SSML `<break>` there (espeak-ng), and the silence the engine left there is set to the exact length
  asked for. The words before it are said as a hesitation, which the engines often make sound
  final (a trailing-off fall), so this is the hard case for an end-of-turn model.
- `cut`: the sentence is spoken fluently, without the marker, and cut open at that word boundary
  (the quietest 10 ms within 120 ms of where the words before it, said alone, end). The words
  before the pause keep the intonation of a sentence that goes on (the cut lands within a word of
  the marker: where the engine runs words together, no cut is perfect).

Every clip has 0.6 s of lead silence, 2.5 s of trailing silence and a constant noise floor (about
-66 dBFS) under it all, like a quiet microphone.

Labels (times in seconds from the start of the WAV): `speech_start_s` and `speech_end_s` (first and
last 10 ms block above -45 dBFS, the benchmark client's definition), and for paused items `pauses_s`
as [start, end] pairs: a turn ended before the last one ends is a false split.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = REPO_ROOT / "tests" / "data" / "turn_eval.json"
RATE = 16000
LEAD_S = 0.6
TAIL_S = 2.5
NOISE_FLOOR_RMS = 5e-4  # about -66 dBFS
SPEECH_DBFS = -45.0
GAP_DBFS = -50.0  # a 10 ms block this quiet is silence when looking for the engine's pause
MARKER = "..."
SET_VERSION = "2"


def default_out() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "agentkit" / "turn_eval"


def load_definitions(path: Path = DEFINITIONS) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(path.read_text())["items"]
    return items


def block_levels_db(samples: np.ndarray, hop: int = RATE // 100) -> np.ndarray:
    n = samples.shape[0] // hop
    blocks = samples[: n * hop].astype(np.float64).reshape(n, hop)
    return np.asarray(10 * np.log10((blocks**2).mean(axis=1) + 1e-12))


def speech_bounds_s(samples: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms block above -45 dBFS (as in tests/conftest.py and the bench client)."""
    loud = np.nonzero(block_levels_db(samples) > SPEECH_DBFS)[0]
    return float(loud[0]) / 100, float(loud[-1] + 1) / 100


def _trim(samples: np.ndarray) -> np.ndarray:
    loud = np.nonzero(np.abs(samples) > 0.01)[0]
    return samples[loud[0] : loud[-1] + 1]


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    from agentkit.audio import StreamingResampler

    if rate == RATE:
        return samples.astype(np.float32)
    return StreamingResampler(rate, RATE).process(samples.astype(np.float32), last=True)


# -- speaking ---------------------------------------------------------------------------------------


async def _kokoro(text: str, voice: str) -> np.ndarray:
    from agentkit.audio import AudioFrame
    from agentkit.providers import KokoroTTS

    tts = KokoroTTS(voice=voice)
    frames = [frame async for frame in tts.synthesize(text)]
    joined = AudioFrame.concat(frames)
    return _trim(_resample(joined.samples, joined.sample_rate))


def _espeak(text: str, voice: str, pauses_s: list[float]) -> np.ndarray:
    parts = text.split(MARKER)
    ssml = parts[0]
    for pause, part in zip(pauses_s, parts[1:], strict=True):
        ssml += f'<break time="{round(pause * 1000)}ms"/>{part}'
    out = subprocess.run(
        ["espeak-ng", "--stdout", "-m", "-v", voice, f"<speak>{ssml}</speak>"],
        capture_output=True,
        check=True,
    ).stdout
    with wave.open(io.BytesIO(out)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return _trim(_resample(pcm.astype(np.float32) / 32768.0, rate))


def _gaps(samples: np.ndarray, min_ms: int = 40) -> list[tuple[int, int]]:
    """Internal silent stretches (start, end) in samples, at 10 ms resolution."""
    quiet = block_levels_db(samples) < GAP_DBFS
    hop = RATE // 100
    found: list[tuple[int, int]] = []
    i = 0
    while i < quiet.shape[0]:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < quiet.shape[0] and quiet[j]:
            j += 1
        if (j - i) * 10 >= min_ms and i > 0 and j < quiet.shape[0]:
            found.append((i * hop, j * hop))
        i = j
    return found


def _quietest(samples: np.ndarray, expected: int, *, after: int, reach: int = RATE // 5) -> tuple[int, int]:
    hop = RATE // 100
    levels = block_levels_db(samples)
    lo = max(expected - reach, after) // hop
    hi = max(min(expected + reach, samples.shape[0]) // hop, lo + 1)
    block = lo + int(np.argmin(levels[lo:hi]))
    return block * hop, (block + 1) * hop


def _set_pauses(
    speech: np.ndarray, expected: list[int], pauses_s: list[float]
) -> tuple[np.ndarray, list[int]]:
    """Find the engine's pause near each expected position and make it exactly as long as asked.

    Returns the new audio and where each pause starts in it (samples)."""
    gaps = _gaps(speech, min_ms=20)
    near = round(0.35 * RATE)
    chosen: list[tuple[int, int]] = []
    for at in expected:
        after = chosen[-1][1] + round(0.15 * RATE) if chosen else 0  # a word at least between pauses
        window = [g for g in gaps if g[0] >= after and abs((g[0] + g[1]) // 2 - at) < near]
        if window:  # the longest, unless much farther away
            chosen.append(max(window, key=lambda g: (g[1] - g[0]) - abs((g[0] + g[1]) // 2 - at) // 2))
        else:  # the engine ran the words together: cut at the quietest 10 ms near the marker
            chosen.append(_quietest(speech, at, after=after))
    return _insert_pauses(speech, chosen, pauses_s)


def _insert_pauses(
    speech: np.ndarray, gaps: list[tuple[int, int]], pauses_s: list[float]
) -> tuple[np.ndarray, list[int]]:
    """Replace each (start, end) stretch of `speech` with silence of the matching length."""
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    at = 0
    length = 0
    for (start, end), pause in zip(gaps, pauses_s, strict=True):
        pieces.append(speech[at:start])
        length += start - at
        starts.append(length)
        pieces.append(np.zeros(round(pause * RATE), dtype=np.float32))
        length += round(pause * RATE)
        at = end
    pieces.append(speech[at:])
    return np.concatenate(pieces), starts


def _char_ratios(text: str) -> list[float]:
    """Where each marker falls in the text without markers, as a fraction of its letters."""
    plain = text.replace(f" {MARKER}", "")
    ratios, cursor, removed = [], 0, 0
    for _ in range(text.count(MARKER)):
        cursor = text.index(MARKER, cursor)
        ratios.append((cursor - removed) / len(plain))
        removed += len(f" {MARKER}")
        cursor += len(MARKER)
    return ratios


async def _kokoro_marked(text: str, voice: str, *, fluent: bool = False) -> tuple[np.ndarray, list[int]]:
    """The whole sentence (`fluent`: without the markers), and where each marker is expected in it:
    the length of the words before it spoken on their own (a little late, for their final
    lengthening, hence the search window)."""
    speech = await _kokoro(text.replace(f" {MARKER}", "") if fluent else text, voice)
    expected: list[int] = []
    cursor = 0
    for _ in range(text.count(MARKER)):
        cursor = text.index(MARKER, cursor)
        before = text[:cursor].replace(f" {MARKER}", "") if fluent else text[:cursor]
        prefix = await _kokoro(before.rstrip(" ,:"), voice)
        expected.append(prefix.shape[0] - round(0.05 * RATE))
        cursor += len(MARKER)
    return speech, expected


def _espeak_marked(speech: np.ndarray, pauses_s: list[float]) -> list[int]:
    """espeak-ng left a silence at least as long as each break: the longest ones, in order."""
    if not pauses_s:
        return []
    gaps = _gaps(speech, min_ms=20)
    longest = sorted(sorted(gaps, key=lambda g: g[1] - g[0])[-len(pauses_s) :])
    return [(start + end) // 2 for start, end in longest]


def _noise(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Synthetic non-speech: coughs (shaped, low-passed noise), a noise burst, knocks (which Silero
    does not call speech), and voiced sounds of a throat (`agentkit.testing._throat_sounds`: coughs,
    a throat clear, a laugh, a sigh; which it does)."""
    from agentkit.testing._throat_sounds import THROAT_SOUNDS, throat_sound

    for sound in THROAT_SOUNDS:
        if kind == sound:
            return throat_sound(sound, rng)

    def burst(duration_s: float, attack_s: float, decay_s: float, peak: float) -> np.ndarray:
        t = np.arange(round(duration_s * RATE)) / RATE
        envelope = np.minimum(t / attack_s, 1.0) * np.exp(-np.maximum(t - attack_s, 0) / decay_s)
        white = rng.standard_normal(t.shape[0])
        smooth = np.convolve(white, np.ones(4) / 4, mode="same")  # a gentle low-pass
        return np.asarray(peak * envelope * smooth / np.abs(smooth).max(), dtype=np.float32)

    def knock() -> np.ndarray:
        t = np.arange(round(0.04 * RATE)) / RATE
        return np.asarray(0.5 * np.sin(2 * np.pi * 180 * t) * np.exp(-t / 0.008), dtype=np.float32)

    gap = np.zeros(round(0.12 * RATE), dtype=np.float32)
    if kind == "cough":
        return burst(0.28, 0.01, 0.07, 0.5)
    if kind == "double-cough":
        return np.concatenate([burst(0.25, 0.01, 0.06, 0.5), gap, burst(0.3, 0.01, 0.08, 0.45)])
    if kind == "noise-burst":
        samples = 0.15 * rng.standard_normal(round(0.4 * RATE))
        ramp = np.minimum(
            1.0, np.minimum(np.arange(samples.shape[0]), np.arange(samples.shape[0])[::-1]) / 320
        )
        return np.asarray(samples * ramp, dtype=np.float32)
    if kind == "knock":
        return np.concatenate([knock(), gap, knock(), gap, knock()])
    raise ValueError(f"unknown noise {kind!r}")


async def build_item(item: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """One item's audio (16 kHz float32) and its labels."""
    seed = int.from_bytes(hashlib.sha256(item["id"].encode()).digest()[:4], "little")
    rng = np.random.default_rng(seed)
    text: str = item["text"]
    voice: str = item["voice"]
    pauses: list[float] = list(item.get("pauses_s", []))
    if item["kind"] == "noise":
        sound = _noise(text, rng)
        pause_starts: list[int] = []
    elif voice.startswith("espeak:") and item.get("style") == "cut":
        sound = _espeak(text.replace(f" {MARKER}", ""), voice.removeprefix("espeak:"), [])
        ratios = _char_ratios(text)
        cuts = [_quietest(sound, round(r * sound.shape[0]), after=0, reach=RATE // 5) for r in ratios]
        sound, pause_starts = _insert_pauses(sound, cuts, pauses)
    elif voice.startswith("espeak:"):
        sound = _espeak(text, voice.removeprefix("espeak:"), pauses)
        sound, pause_starts = _set_pauses(sound, _espeak_marked(sound, pauses), pauses)
    elif item.get("style") == "cut":
        sound, expected = await _kokoro_marked(text, voice, fluent=True)
        cuts = [_quietest(sound, at, after=0, reach=RATE * 12 // 100) for at in expected]
        sound, pause_starts = _insert_pauses(sound, cuts, pauses)
    else:
        sound, expected = await _kokoro_marked(text, voice)
        sound, pause_starts = _set_pauses(sound, expected, pauses)
    lead = round(LEAD_S * RATE)
    audio = np.concatenate([np.zeros(lead, np.float32), sound, np.zeros(round(TAIL_S * RATE), np.float32)])
    start_s, end_s = speech_bounds_s(audio)
    audio = audio + (NOISE_FLOOR_RMS * rng.standard_normal(audio.shape[0])).astype(np.float32)
    labels = {
        "id": item["id"],
        "kind": item["kind"],
        "style": item.get("style", "spoken") if pauses else None,
        "voice": voice,
        "text": text.replace(f" {MARKER}", "").replace(MARKER, ""),
        "duration_s": audio.shape[0] / RATE,
        "speech_start_s": start_s,
        "speech_end_s": end_s,
        "pauses_s": [
            [(lead + s) / RATE, (lead + s) / RATE + p] for s, p in zip(pause_starts, pauses, strict=True)
        ],
    }
    return audio, labels


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.tobytes())


def read_wav16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        if wav.getframerate() != RATE or wav.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16 kHz mono")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def definitions_digest(path: Path = DEFINITIONS) -> str:
    """Changes with the definitions and with `SET_VERSION` (bump it when this script changes the audio)."""
    return hashlib.sha256(path.read_bytes() + SET_VERSION.encode()).hexdigest()[:16]


def ensure_set(out: Path, *, force: bool = False) -> list[dict[str, Any]]:
    """Build the set into `out` unless it is there already from the same definitions; its labels."""
    labels_path = out / "labels.json"
    digest = definitions_digest()
    if labels_path.is_file() and not force:
        stored = json.loads(labels_path.read_text())
        if stored.get("digest") == digest:
            items: list[dict[str, Any]] = stored["items"]
            return items
    out.mkdir(parents=True, exist_ok=True)

    async def build_all() -> list[dict[str, Any]]:
        built = []
        for item in load_definitions():
            audio, labels = await build_item(item)
            _write_wav(out / f"{item['id']}.wav", audio)
            built.append(labels)
            print(
                f"  {item['id']:16} {item['voice']:14} {labels['duration_s']:5.2f} s  {labels['text']}",
                file=sys.stderr,
            )
        return built

    items = asyncio.run(build_all())
    labels_path.write_text(json.dumps({"digest": digest, "rate": RATE, "items": items}, indent=1) + "\n")
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out(), help="cache folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the set is up to date")
    args = parser.parse_args()
    items = ensure_set(args.out, force=args.force)
    kinds: dict[str, int] = {}
    for item in items:
        kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    print(f"{len(items)} items in {args.out}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
