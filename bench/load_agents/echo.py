"""The echo agent of `bench/concurrent_calls.py`: each caller turn comes straight back."""

from collections.abc import Iterator

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    yield audio


# no session cap of its own: the benchmark measures where latency breaks, not where a cap refuses
stream = Stream(ReplyOnPause(echo), concurrency_limit=None)
