"""The echo agent of `bench/concurrent_calls.py`: each caller turn comes straight back."""

from collections.abc import Iterator

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    yield audio


# no session cap of its own: the benchmark measures where latency breaks, not where a cap refuses.
# input_sample_rate="call": a phone call's 8 kHz audio is scored as it comes (Silero at 8 kHz) and
# the echo goes back at 8 kHz, so neither way is resampled; a browser call stays at 16 kHz
stream = Stream(ReplyOnPause(echo, input_sample_rate="call"), concurrency_limit=None)
