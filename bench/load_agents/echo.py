"""The echo agent of `bench/concurrent_calls.py`: each caller turn comes straight back."""

from collections.abc import Iterator

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    yield audio


# no session cap of its own: the benchmark measures where latency breaks, not where a cap refuses.
# ReplyOnPause(echo, input_sample_rate=8000) takes phone audio as it comes (Silero at 8 kHz): 10-20 %
# less CPU per call, but its turns end about 20 ms later on this benchmark's recording, which costs
# more against the p95 bar than the CPU saves (docs/benchmarks.md)
stream = Stream(ReplyOnPause(echo), concurrency_limit=None)
