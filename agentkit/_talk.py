"""`agentkit talk`: run turns through an agent offline, from WAV files, and report each stage.

Each input WAV is one caller turn: it is resampled to the agent's input rate, followed by enough
silence to end the turn, and fed through a real session (turn-taking, STT, LLM, TTS) on a
`FastForwardClock`, so replies are not paced out in real time but every stage's latency is real.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from agentkit.agent import (
    Agent,
    AgentEvent,
    ReplyFinished,
    ReplyInterrupted,
    TurnMetricsReady,
    UserTurnEnded,
)
from agentkit.audio import AudioFrame, Samples, StreamingResampler, float_to_pcm16, pcm16_to_float
from agentkit.clock import FastForwardClock, MonotonicClock
from agentkit.exceptions import ConfigError
from agentkit.store import TurnMetrics
from agentkit.stream import CloseReason, Event, SessionHost

__all__ = ["TalkResult", "find_agent", "talk"]

_FRAME_MS = 20
_TURN_TIMEOUT_S = 120.0


def find_agent(module: ModuleType, where: str) -> Agent | None:
    """The agent a module defines: its `agent`, its `stream`'s handler, or its one `Agent` subclass."""
    agent = getattr(module, "agent", None)
    if isinstance(agent, Agent):
        return agent
    stream = getattr(module, "stream", None)
    if isinstance(stream, SessionHost) and isinstance(stream.handler, Agent):
        return stream.handler
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Agent) and value.__module__ == module.__name__
    ]
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise ConfigError(f"{where} defines several agents ({names}); set `agent = OneOfThem()`")
    return classes[0]() if classes else None


class _Collector:
    """The session's transport: keeps reply audio and events in memory."""

    bytes_per_sample = 2

    def __init__(self) -> None:
        self.audio: list[Samples] = []
        self.events: list[Event] = []

    def encode_audio(self, samples: Samples) -> bytes:
        return float_to_pcm16(samples)

    async def send_audio(self, payload: bytes) -> None:
        self.audio.append(pcm16_to_float(payload))

    async def send_event(self, event: Event) -> None:
        self.events.append(event)

    async def close(self, reason: CloseReason, detail: str | None = None) -> None:
        return None


class _Recorder:
    """Turns the agent's events into transcript lines and metrics, and says when a turn is done."""

    def __init__(
        self,
        on_line: Callable[[str, str], None] | None,
        on_metrics: Callable[[TurnMetrics], None] | None,
    ) -> None:
        self.result = TalkResult()
        self.turn_done = asyncio.Event()
        self._on_line = on_line
        self._on_metrics = on_metrics

    def record(self, event: AgentEvent) -> None:
        if isinstance(event, UserTurnEnded):
            if event.text:
                self._line("you", event.text)
            else:
                self.turn_done.set()  # the turn was dropped: no reply will come
        elif isinstance(event, ReplyFinished):
            self._line("agent", event.text)
            self.turn_done.set()
        elif isinstance(event, ReplyInterrupted):
            self._line("agent (cut)", event.heard_text)
            self.turn_done.set()
        elif isinstance(event, TurnMetricsReady):
            self.result.metrics.append(event.metrics)
            if self._on_metrics is not None:
                self._on_metrics(event.metrics)

    def _line(self, who: str, text: str) -> None:
        self.result.lines.append((who, text))
        if self._on_line is not None:
            self._on_line(who, text)


@dataclass
class TalkResult:
    """What happened in an offline conversation."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    """(`you`/`agent`/`agent (cut)`, text) in order."""
    metrics: list[TurnMetrics] = field(default_factory=list)
    reply_audio: AudioFrame | None = None
    """Everything the agent said, at its output rate."""


async def talk(
    agent: Agent,
    inputs: list[AudioFrame],
    *,
    on_line: Callable[[str, str], None] | None = None,
    on_metrics: Callable[[TurnMetrics], None] | None = None,
    realtime: bool = False,
) -> TalkResult:
    """Play each input as a caller turn and wait for the agent's reply to it.

    With `realtime`, audio goes in at the speed of speech and replies are paced as on a call (for
    benchmarks); otherwise input is fed as fast as it is taken and playout costs no time.
    """
    recorder = _Recorder(on_line, on_metrics)
    result, turns_done = recorder.result, recorder.turn_done
    prototype = agent.copy()
    collector = _Collector()
    # no idle watchdog: between turns nothing is fed, and on the fast-forward clock its wait is instant
    stream = SessionHost(prototype, no_audio_timeout_s=None)
    rate = prototype.input_sample_rate
    session = stream.open_session(
        collector,  # implements the Transport protocol
        input_sample_rate=rate,
        channel="talk",
        clock=MonotonicClock() if realtime else FastForwardClock(),
    )
    await session.start()
    handler = session.handler
    assert isinstance(handler, Agent)

    async def follow() -> None:
        async for event in handler.session.events():  # from the session's first event on
            recorder.record(event)

    reader = asyncio.create_task(follow(), name="talk-events")
    try:
        if prototype.greeting:
            await _wait(turns_done, "the greeting")
        options = prototype.turn_taking  # the silence that ends a turn whatever the end-of-turn model says
        silence_ms = options.semantic_max_silence_ms if handler.semantic else options.end_of_turn_silence_ms
        tail = np.zeros(rate * (silence_ms + 500) // 1000, np.float32)
        for number, frame in enumerate(inputs, 1):
            turns_done.clear()
            pauses = _count(collector.events, "pause_detected")
            resampled = StreamingResampler(frame.sample_rate, rate).process(frame.samples, last=True)
            samples = np.concatenate([resampled, tail])
            step = rate * _FRAME_MS // 1000
            loop, began = asyncio.get_running_loop(), asyncio.get_running_loop().time()
            seen_pauses = pauses
            for number_sent, start in enumerate(range(0, samples.shape[0], step), 1):
                await session.receive_audio(float_to_pcm16(samples[start : start + step]))
                if realtime:  # on a fixed schedule, like a microphone: no drift
                    await asyncio.sleep(max(0.0, began + number_sent * _FRAME_MS / 1000 - loop.time()))
                elif _count(collector.events, "pause_detected") > seen_pauses:
                    # fast-forward: the models take no time on the input's timeline, so a turn's
                    # reply is made (and, on the fast-forward clock, played) before the next frame;
                    # without this, a pause mid-input would cut the first turn's reply before its
                    # transcript and merge the two turns, which real time does not do
                    seen_pauses = _count(collector.events, "pause_detected")
                    await _settle(handler, f"the reply to a turn of input {number}")
            if _count(collector.events, "pause_detected") == pauses:
                raise ConfigError(
                    f"input {number}: no speech detected (is it a recording of someone talking?)"
                )
            await _wait(turns_done, f"a reply to input {number}")
    finally:
        await session.close()  # ends the event log, and so the reader
        await asyncio.wait({reader}, timeout=1.0)
        reader.cancel()
    if collector.audio:
        result.reply_audio = AudioFrame(np.concatenate(collector.audio), session.output_sample_rate)
    return result


async def _settle(agent: Agent, what: str) -> None:
    """Wait until `agent` has no reply in the making or playing."""
    try:
        async with asyncio.timeout(_TURN_TIMEOUT_S):
            while agent.session.replying:  # noqa: ASYNC110 - the session has no event for "idle"
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise ConfigError(f"no end to {what} within {_TURN_TIMEOUT_S:g} s") from None


def _count(events: list[Event], type: str) -> int:
    return sum(1 for e in events if e.type == type)


async def _wait(event: asyncio.Event, what: str) -> None:
    try:
        async with asyncio.timeout(_TURN_TIMEOUT_S):
            await event.wait()
    except TimeoutError:
        raise ConfigError(f"no {what} within {_TURN_TIMEOUT_S:g} s (was speech detected?)") from None
