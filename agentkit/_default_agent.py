"""The agent `agentkit run` serves when given no file: for now, the echo agent (`agents/echo.py`).

It needs no key and no network (only the Silero VAD model, see `agentkit.models`).
"""

from __future__ import annotations

from collections.abc import Iterator

from agentkit.audio import AudioFrame
from agentkit.stream import ReplyOnPause, Stream

__all__ = ["echo", "stream"]


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    """Play the caller's turn back to them."""
    yield audio


stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive")
