"""Non-speech sounds a throat makes, synthesised: a cough, a fit of coughing, a throat clear, a laugh
and a sigh, for tests and evaluations of what should *not* interrupt an agent.

The noise bursts and knocks a test can make from plain shaped noise never reach the interruption
logic: Silero's VAD does not call them speech. Real coughs and laughs are voiced, and a VAD does
hear them. So these are built like speech, with a source-filter model (Klatt's): a voice source
(one smoothed glottal pulse per period, its pitch gliding and jittering) plus breath noise, through
parallel second-order resonators at the formants of a vowel, under an envelope:

- cough: a sharp attack (6 ms), a rough voice decaying over about a quarter of its 0.35 s;
- cough fit: three such coughs, 150-180 ms apart;
- throat clear: a low (about 90 Hz), creaky, trembling "uh-hm" of 0.45 s;
- laugh: four breathy "ha"s, each a little lower and shorter;
- sigh: 0.8 s of breath with a voice falling from 190 to 100 Hz and fading out.

Each is deterministic for a given `numpy.random.Generator` seed, at 16 kHz, peaking at -6 to -9 dBFS.
Silero calls each of them speech for at least 64 ms (a suspected interruption), which
bench/turn_eval_set.py checks for the clips of its evaluation set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from agentkit.audio import Samples

__all__ = ["THROAT_SOUNDS", "ThroatSound", "throat_sound"]

RATE = 16000
ThroatSound = Literal["voiced-cough", "cough-fit", "throat-clear", "laugh", "sigh"]
THROAT_SOUNDS: tuple[ThroatSound, ...] = ("voiced-cough", "cough-fit", "throat-clear", "laugh", "sigh")

_Formants = tuple[tuple[float, float, float], ...]
_UH: _Formants = ((600.0, 150.0, 1.0), (1050.0, 180.0, 0.6), (2400.0, 300.0, 0.2))
_AH: _Formants = ((700.0, 130.0, 1.0), (1220.0, 160.0, 0.5), (2600.0, 250.0, 0.25))
_THROAT: _Formants = ((450.0, 200.0, 1.0), (1100.0, 250.0, 0.4), (2400.0, 300.0, 0.15))
_VOICE_GAIN = 20.0  # the pulse train's level against unit-variance breath noise
_Signal = npt.NDArray[np.float64]  # while it is being shaped; float32 `Samples` once done


def _resonate(x: _Signal, freq_hz: float, bandwidth_hz: float) -> _Signal:
    """Klatt's second-order resonator: `x` through one formant at `freq_hz`, `bandwidth_hz` wide."""
    c = -float(np.exp(-2 * np.pi * bandwidth_hz / RATE))
    b = 2 * float(np.exp(-np.pi * bandwidth_hz / RATE) * np.cos(2 * np.pi * freq_hz / RATE))
    a = 1 - b - c
    y = np.zeros(x.shape[0], dtype=np.float64)
    y1 = y2 = 0.0
    for n, sample in enumerate(x.tolist()):
        y0 = a * sample + b * y1 + c * y2
        y[n] = y0
        y2, y1 = y1, y0
    return y


def _vocal_tract(x: _Signal, formants: _Formants) -> _Signal:
    """`x` through parallel formants, each (Hz, bandwidth in Hz, gain)."""
    out = np.zeros(x.shape[0], dtype=np.float64)
    for freq, bandwidth, gain in formants:
        out += gain * _resonate(x, freq, bandwidth)
    return out


def _glottal(n: int, f0_start: float, f0_end: float, rng: np.random.Generator, jitter: float) -> _Signal:
    """A voice source of `n` samples: one smoothed pulse per period, the pitch gliding from
    `f0_start` to `f0_end` Hz, each period off by `jitter` (a fraction; large is rough, creaky)."""
    impulses = np.zeros(n, dtype=np.float64)
    t = 0.0
    while t < n:
        f0 = f0_start + (f0_end - f0_start) * t / n
        impulses[int(t)] = 1.0
        t += RATE / f0 * (1 + jitter * float(rng.standard_normal()))
    k = np.arange(40)
    return np.convolve(impulses, np.exp(-k / 6.0) * np.sin(np.pi * k / 40), mode="same")


def _envelope(n: int, attack_s: float, hold_s: float, decay_s: float) -> _Signal:
    t = np.arange(n) / RATE
    rise = np.minimum(t / attack_s, 1.0)
    return np.asarray(rise * np.exp(-np.maximum(t - attack_s - hold_s, 0.0) / decay_s))


def _peak(x: _Signal, peak: float) -> Samples:
    return np.asarray(peak * x / np.abs(x).max(), dtype=np.float32)


def _gap(seconds: float) -> _Signal:
    return np.zeros(round(seconds * RATE), dtype=np.float64)


def _cough(duration_s: float, peak: float, rng: np.random.Generator) -> Samples:
    n = round(duration_s * RATE)
    source = 0.8 * _VOICE_GAIN * _glottal(n, 250, 170, rng, 0.05) + 0.2 * rng.standard_normal(n)
    return _peak(_vocal_tract(source, _UH) * _envelope(n, 0.006, 0.02, duration_s / 4), peak)


def throat_sound(kind: ThroatSound, rng: np.random.Generator) -> Samples:
    """One sound of the module docstring: float32 samples at 16 kHz, without lead or tail silence."""
    if kind == "voiced-cough":
        return _cough(0.35, 0.5, rng)
    if kind == "cough-fit":
        first, second, third = _cough(0.3, 0.5, rng), _cough(0.28, 0.45, rng), _cough(0.34, 0.5, rng)
        return np.concatenate([first, _gap(0.15), second, _gap(0.18), third], dtype=np.float32)
    if kind == "throat-clear":
        n = round(0.45 * RATE)
        f0 = 90 + 10 * float(rng.standard_normal())
        source = _VOICE_GAIN * _glottal(n, f0, 0.9 * f0, rng, 0.12) + 0.6 * rng.standard_normal(n)
        tremble = 1 + 0.4 * np.sin(2 * np.pi * 7 * np.arange(n) / RATE)
        return _peak(_vocal_tract(source, _THROAT) * _envelope(n, 0.03, 0.18, 0.12) * tremble, 0.4)
    if kind == "laugh":
        syllables: list[_Signal] = []
        for k in range(4):
            breath = 0.3 * rng.standard_normal(round(0.05 * RATE))
            n = round((0.11 - 0.01 * k) * RATE)
            f0 = 240 - 15 * k
            vowel = _VOICE_GAIN * _glottal(n, f0, 0.92 * f0, rng, 0.03) + 0.3 * rng.standard_normal(n)
            source = np.concatenate([breath, vowel])
            ha = _vocal_tract(source, _AH) * _envelope(source.shape[0], 0.02, 0.08, 0.06)
            syllables += [ha, _gap(0.09)]
        return _peak(np.concatenate(syllables), 0.45)
    if kind == "sigh":
        n = round(0.8 * RATE)
        voice = _VOICE_GAIN * _glottal(n, 190, 100, rng, 0.03) * np.linspace(1.0, 0.3, n)
        source = voice + 0.7 * rng.standard_normal(n)
        return _peak(_vocal_tract(source, _AH) * _envelope(n, 0.06, 0.2, 0.25), 0.35)
    raise ValueError(f"unknown throat sound {kind!r}")
