"""Whisper-style log-mel features for Smart Turn, in numpy, for a batch of clips at once.

Smart Turn v3 looks at the last 8 s of a turn at 16 kHz. For each clip:

1. keep the last 8 s; left-pad shorter audio with zeros (the end of the turn stays at the end);
2. normalise the 8 s buffer to zero mean and unit variance (upstream runs Whisper's extractor with
   `do_normalize=True`; without this step the same speech at another gain scores differently);
3. a 400-point periodic Hann STFT with hop 160, centred (200 samples of reflect padding each side),
   power spectrum, 80 Slaney-normalised mel filters from 0 to 8 kHz;
4. log10 floored at 1e-10, the last frame dropped (800 frames remain), clipped below at the clip's
   maximum minus 8, then `(x + 4) / 4`.

The window and the filterbank are computed once, at import. This matches
`transformers.WhisperFeatureExtractor(chunk_length=8)` to float32 rounding (see the tests).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from agentkit.audio import Samples

__all__ = ["CLIP_SAMPLES", "FRAMES", "MEL_BANDS", "SAMPLE_RATE", "clip_batch", "log_mel_features"]

SAMPLE_RATE = 16000
CLIP_SAMPLES = 8 * SAMPLE_RATE
"""The model sees this much audio: the last 8 s of the turn."""
MEL_BANDS = 80
FRAMES = CLIP_SAMPLES // 160
"""800 frames of 10 ms."""

_N_FFT = 400
_HOP = 160
_MEL_FLOOR = 1e-10
_NORM_EPS = 1e-7


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    above = hz >= 1000.0
    return np.where(above, 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * 27.0 / np.log(6.4), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    above = mel >= 15.0
    return np.asarray(np.where(above, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), hz))


def _mel_filterbank() -> np.ndarray:
    """(80, 201): triangular filters evenly spaced in mels over 0-8 kHz, each of unit area (Slaney)."""
    edges_mel = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), MEL_BANDS + 2)
    edges = _mel_to_hz(edges_mel)
    bins = np.linspace(0.0, SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    rising = (bins[None, :] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - bins[None, :]) / (edges[2:] - edges[1:-1])[:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    normalised: np.ndarray = filters * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return normalised


_WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(_N_FFT) / _N_FFT)).astype(np.float32)  # periodic
_FILTERS = _mel_filterbank().astype(np.float32)


def clip_batch(clips: list[Samples]) -> Samples:
    """(n, 8 s): each clip's last 8 s, shorter ones left-padded with zeros."""
    batch = np.zeros((len(clips), CLIP_SAMPLES), dtype=np.float32)
    for row, clip in zip(batch, clips, strict=True):
        tail = clip[-CLIP_SAMPLES:]
        if tail.shape[0]:
            row[-tail.shape[0] :] = tail
    return batch


def log_mel_features(batch: Samples) -> Samples:
    """(n, 80, 800) float32 features of an (n, 128000) batch from `clip_batch`."""
    if batch.ndim != 2 or batch.shape[1] != CLIP_SAMPLES:
        raise ValueError(f"expected a batch of shape (n, {CLIP_SAMPLES}), got {batch.shape}")
    x = batch.astype(np.float32, copy=True)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.sqrt(x.var(axis=1, keepdims=True) + _NORM_EPS)
    padded = np.pad(x, ((0, 0), (_N_FFT // 2, _N_FFT // 2)), mode="reflect")
    frames = sliding_window_view(padded, _N_FFT, axis=1)[:, ::_HOP][:, :FRAMES]  # (n, 800, 400)
    spectrum = np.fft.rfft(frames * _WINDOW, axis=-1)  # (n, 800, 201)
    power = spectrum.real**2 + spectrum.imag**2
    mel = np.matmul(power, _FILTERS.T)  # (n, 800, 80)
    log_mel = np.log10(np.maximum(mel, _MEL_FLOOR)).transpose(0, 2, 1)  # (n, 80, 800)
    floor = log_mel.max(axis=(1, 2), keepdims=True) - 8.0
    features: Samples = ((np.maximum(log_mel, floor) + 4.0) / 4.0).astype(np.float32)
    return features
