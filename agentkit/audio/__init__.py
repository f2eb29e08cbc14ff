"""Audio primitives: frames, PCM and mu-law codecs, streaming resampling, WAV files."""

from agentkit.audio._frame import AudioFrame, Samples, check_sample_rate
from agentkit.audio._mulaw import mulaw_decode, mulaw_encode, mulaw_to_float
from agentkit.audio._pcm import float_to_pcm16, pcm16_to_float
from agentkit.audio._resample import StreamingResampler, resample
from agentkit.audio._wav import read_wav, write_wav

__all__ = [
    "AudioFrame",
    "Samples",
    "StreamingResampler",
    "check_sample_rate",
    "float_to_pcm16",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_to_float",
    "pcm16_to_float",
    "read_wav",
    "resample",
    "write_wav",
]
