"""Audio primitives: frames, PCM, mu-law (bit-exact G.711), streaming resampling, WAV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agentkit.audio import (
    AudioFrame,
    StreamingResampler,
    float_to_pcm16,
    mulaw_decode,
    mulaw_encode,
    mulaw_to_float,
    pcm16_to_float,
    read_wav,
    resample,
    write_wav,
)
from agentkit.exceptions import AudioFormatError


def _g711_ulaw_reference(sample: int) -> int:
    """Per-sample G.711 mu-law encoder written from the standard's segment table."""
    value = sample >> 2  # 14-bit
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, 8159) + 33
    segment_ends = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]
    for segment, end in enumerate(segment_ends):
        if value <= end:
            return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


def test_mulaw_encode_matches_reference_on_every_16_bit_value() -> None:
    samples = np.arange(-32768, 32768, dtype=np.int16)
    expected = bytes(_g711_ulaw_reference(int(s)) for s in samples)
    assert mulaw_encode(samples) == expected


def test_mulaw_decode_inverts_encode_within_segment_step() -> None:
    codes = bytes(range(256))
    decoded = mulaw_decode(codes)
    assert decoded.dtype == np.int16
    # every code word decodes to a value that encodes back, except negative zero (0x7F -> 0 -> 0xFF)
    expected = codes[:0x7F] + b"\xff" + codes[0x80:]
    assert mulaw_encode(decoded) == expected
    assert decoded[0xFF] == 0 and decoded[0x7F] == 0
    assert decoded.max() == 32124 and decoded.min() == -32124


def test_mulaw_to_float_is_the_decoded_value_over_32768() -> None:
    codes = bytes(range(256)) * 2
    floats = mulaw_to_float(codes)
    assert floats.dtype == np.float32 and floats.shape == (512,)
    assert np.array_equal(floats, mulaw_decode(codes).astype(np.float32) / np.float32(32768.0))


def test_pcm16_roundtrip_and_odd_length() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0], dtype=np.float32)
    data = float_to_pcm16(samples)
    assert len(data) == 10
    back = pcm16_to_float(data)
    assert np.allclose(back, samples, atol=1 / 32768)
    with pytest.raises(AudioFormatError, match="even"):
        pcm16_to_float(data[:-1])


def test_frame_validation() -> None:
    with pytest.raises(AudioFormatError):
        AudioFrame(np.zeros(10, dtype=np.float32), 1000)
    with pytest.raises(AudioFormatError):
        AudioFrame(np.zeros((2, 10), dtype=np.float32), 16000)
    frame = AudioFrame(np.ones((1, 160), dtype=np.int16), 16000, timestamp_samples=320)
    assert frame.samples.dtype == np.float32 and frame.num_samples == 160
    assert frame.duration_s == pytest.approx(0.01)
    sub = frame.slice_samples(40, 80)
    assert sub.timestamp_samples == 360 and sub.num_samples == 40


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(48000, 16000), (8000, 16000), (16000, 24000), (24000, 8000)]
)
def test_streaming_resampler_is_seamless(in_rate: int, out_rate: int) -> None:
    """20 ms chunks through one stream give the same signal as resampling it whole: no clicks."""
    t = np.arange(in_rate) / in_rate
    signal = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    stream = StreamingResampler(in_rate, out_rate)
    step = in_rate // 50
    chunks = [stream.process(signal[i : i + step]) for i in range(0, signal.shape[0], step)]
    streamed = np.concatenate([*chunks, stream.flush()])
    assert abs(streamed.shape[0] - out_rate) <= 2
    whole = StreamingResampler(in_rate, out_rate).process(signal, last=True)
    n = min(streamed.shape[0], whole.shape[0])
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3
    # the sample-to-sample step of a 440 Hz sine never jumps (a seam would)
    expected_step = 0.5 * 2 * np.pi * 440 / out_rate
    assert np.max(np.abs(np.diff(streamed[100:-100]))) < expected_step * 1.05


def test_resampler_frames_carry_output_timestamps() -> None:
    stream = StreamingResampler(48000, 16000, quality="QQ")
    first = stream.process_frame(AudioFrame(np.zeros(960, dtype=np.float32), 48000))
    second = stream.process_frame(AudioFrame(np.zeros(960, dtype=np.float32), 48000, 960))
    assert second.timestamp_samples == first.num_samples
    with pytest.raises(ValueError, match="48000"):
        stream.process_frame(AudioFrame(np.zeros(10, dtype=np.float32), 16000))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (24000, 16000)])
def test_resample_keeps_the_whole_turn_to_its_last_sample(in_rate: int, out_rate: int) -> None:
    # a turn resampled for an STT: the filter's delay (tens of ms at these rates) is drained, not
    # left behind as a stream would for its next frame
    t = np.arange(in_rate) / in_rate
    signal = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    turn = AudioFrame(signal, in_rate)
    out = resample(turn, out_rate)
    assert out.sample_rate == out_rate
    assert abs(out.num_samples - out_rate) <= 2
    assert np.sqrt(np.mean(out.samples[-out_rate // 50 :] ** 2)) > 0.3  # the last 20 ms are there
    cut = StreamingResampler(in_rate, out_rate).process_frame(turn)
    assert cut.num_samples < out.num_samples  # what a stream's frame leaves for later
    assert resample(turn, in_rate) is turn


def test_wav_roundtrip(tmp_path: Path) -> None:
    frame = AudioFrame((0.25 * np.sin(np.arange(8000) / 5)).astype(np.float32), 8000)
    path = tmp_path / "tone.wav"
    write_wav(path, frame)
    back = read_wav(path)
    assert back.sample_rate == 8000
    assert np.allclose(back.samples, frame.samples, atol=1 / 16384)


def test_unreadable_wav_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioFormatError, match="WAV"):
        read_wav(path)
