"""G.711 mu-law, vectorised in numpy (the stdlib `audioop` is gone in Python 3.13).

Bit-exact with the ITU-T G.711 reference (and with CPython's former `audioop.lin2ulaw`/`ulaw2lin`):
14-bit magnitude with a bias of 33, eight segments, inverted bits on the wire.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["mulaw_decode", "mulaw_encode", "mulaw_to_float"]

_BIAS = 0x84  # 132: the bias in the 16-bit domain (33 in the 14-bit domain)
_CLIP14 = 8159  # largest 14-bit magnitude that still fits the top segment
_BIAS14 = 33


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


_DECODE = _build_decode_table()
_DECODE_FLOAT = _DECODE.astype(np.float32) * np.float32(1.0 / 32768.0)


def mulaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Mu-law bytes → signed 16-bit linear samples (a table look-up)."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def mulaw_to_float(data: bytes | bytearray | memoryview) -> npt.NDArray[np.float32]:
    """Mu-law bytes → float32 samples in [-1, 1) (one table look-up: the decoded value / 32768)."""
    return _DECODE_FLOAT[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(pcm16: npt.NDArray[np.int16]) -> bytes:
    """Signed 16-bit linear samples → mu-law bytes (a table look-up for int16 input)."""
    if pcm16.dtype == np.int16:
        return _ENCODE[pcm16.view(np.uint16)].tobytes()
    return _encode_by_formula(pcm16).tobytes()


def _encode_by_formula(pcm16: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
    """G.711's segment arithmetic, vectorised; it fills `_ENCODE`, which is 10x faster per frame."""
    x14 = pcm16.astype(np.int32) >> 2  # G.711 works on 14-bit magnitudes
    negative = x14 < 0
    magnitude = np.minimum(np.where(negative, -x14, x14), _CLIP14) + _BIAS14
    segment = np.floor(np.log2(magnitude)).astype(np.int32) - 5  # 0..7, 8 means out of range
    clamped = np.minimum(np.maximum(segment, 0), 7)
    code = np.where(segment >= 8, 0x7F, (clamped << 4) | ((magnitude >> (clamped + 1)) & 0x0F))
    code = np.where(negative, code ^ 0x7F, code ^ 0xFF)
    return code.astype(np.uint8)


_ENCODE = _encode_by_formula(np.arange(65536, dtype=np.uint16).view(np.int16))
"""The mu-law code of every 16-bit sample, indexed by the sample's bits read as unsigned (64 KiB)."""
