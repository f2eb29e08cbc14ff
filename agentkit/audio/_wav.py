"""WAV file reading and writing (8/16/24/32-bit PCM in, 16-bit out; stereo is mixed down to mono)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from agentkit.audio._frame import AudioFrame, Samples
from agentkit.audio._pcm import float_to_pcm16
from agentkit.exceptions import AudioFormatError

__all__ = ["read_wav", "write_wav"]


def read_wav(path: str | Path) -> AudioFrame:
    """Read an 8, 16, 24 or 32-bit PCM WAV file as one mono frame at the file's own sample rate.

    Raises `AudioFormatError` naming the file for a missing file, a file that is not a WAV, or a
    compressed or floating-point WAV (the message says how to convert it).
    """
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise AudioFormatError(f"no such WAV file: {path}", path=str(path)) from None
    except IsADirectoryError:
        raise AudioFormatError(f"{path} is a folder, not a WAV file", path=str(path)) from None
    except wave.Error as exc:
        if "unknown format" in str(exc):  # e.g. 32-bit float, mu-law, ADPCM: `wave` reads only PCM
            raise AudioFormatError(
                f"{path}: only PCM WAV files can be read ({exc}); convert it with `sox {path} -b 16 out.wav`",
                path=str(path),
            ) from exc
        raise AudioFormatError(f"{path} is not a WAV file ({exc})", path=str(path)) from exc
    except EOFError as exc:
        raise AudioFormatError(f"{path} is not a WAV file (it ends too early)", path=str(path)) from exc
    samples = _pcm_to_float(data, width)
    if channels > 1:
        samples = samples[: samples.shape[0] // channels * channels]
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return AudioFrame(samples, rate)


def _pcm_to_float(data: bytes, width: int) -> Samples:
    """Little-endian PCM samples of `width` bytes as floats in [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:  # packed: widen each sample to 4 bytes, low byte zero, and read as int32
        raw = np.frombuffer(data[: len(data) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
        widened = np.zeros((raw.shape[0], 4), dtype=np.uint8)
        widened[:, 1:] = raw
        return widened.view("<i4").reshape(-1).astype(np.float32) / 2147483648.0
    if width == 4:
        return np.frombuffer(data, dtype="<i4").astype(np.float32) / 2147483648.0
    raise AudioFormatError(f"{width * 8}-bit WAV samples are not supported", sample_width=width)


def write_wav(path: str | Path, frame: AudioFrame) -> None:
    """Write a frame as a mono 16-bit PCM WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(frame.sample_rate)
        wav.writeframes(float_to_pcm16(frame.samples))
