"""The smallest agent: it waits until you pause, then plays your words back to you.

Run it with `agentkit run agents/echo.py`. `ReplyOnPause` listens with Silero VAD and calls `echo`
once per turn with everything you said as one `agentkit.AudioFrame`; each frame `echo` yields is
played back, and speaking over the reply interrupts it.
"""

from agentkit import ReplyOnPause, Stream


def echo(audio):
    yield audio


stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive")
