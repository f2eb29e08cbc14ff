"""WAV file reading and writing (16-bit PCM; stereo input is mixed down to mono)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from agentkit.audio._frame import AudioFrame
from agentkit.audio._pcm import float_to_pcm16
from agentkit.exceptions import AudioFormatError

__all__ = ["read_wav", "write_wav"]


def read_wav(path: str | Path) -> AudioFrame:
    """Read a 16-bit PCM WAV file as one mono frame at the file's own sample rate."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"not a readable WAV file: {exc}", path=str(path)) from exc
    if width != 2:
        raise AudioFormatError("only 16-bit PCM WAV files are supported", path=str(path), sample_width=width)
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return AudioFrame(samples, rate)


def write_wav(path: str | Path, frame: AudioFrame) -> None:
    """Write a frame as a mono 16-bit PCM WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(frame.sample_rate)
        wav.writeframes(float_to_pcm16(frame.samples))
