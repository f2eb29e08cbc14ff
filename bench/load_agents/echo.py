"""The echo agent of `bench/concurrent_calls.py`: each caller turn comes straight back.

It takes phone audio as it comes (`input_sample_rate=8000`: no resampling, Silero at 8 kHz), as a
`ReplyOnPause` written for phone lines would; over the native WebSocket its 16 kHz input is
resampled down to that.
"""

from collections.abc import Iterator

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    yield audio


# no session cap of its own: the benchmark measures where latency breaks, not where a cap refuses
stream = Stream(ReplyOnPause(echo, input_sample_rate=8000), concurrency_limit=None)
