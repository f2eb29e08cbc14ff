"""In-process provider fakes for testing agents: scripted STT and LLM, a tone TTS.

They implement the provider Protocols exactly, record what they were asked, and can be told to
fail or stall, so an agent's pipeline (history, barge-in, apologies, metrics) is testable with
exact words and no models. For the cloud SDKs' wire formats, see `agentkit.testing.fakes`.

What they record is bounded, so a fake can serve a long run (a benchmark, a soak test): each keeps
the last `keep` calls (`KEEP` by default; `None` keeps all, 0 none) in a plain list, oldest first,
and counts every call in `call_count`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from agentkit.audio import AudioFrame
from agentkit.exceptions import ConfigError, ProviderError
from agentkit.providers.llm import ChatMessage, LLMChunk, LLMUsage, ToolCall, ToolSpec
from agentkit.providers.stt import Transcript

__all__ = ["KEEP", "LLMCall", "ScriptedLLM", "ScriptedReply", "ScriptedSTT", "ToneTTS"]

KEEP = 32
"""Calls each fake keeps for inspection by default (`heard`, `calls`, `texts`): the most recent ones."""

T = TypeVar("T")


def _check_keep(keep: int | None) -> int | None:
    if keep is not None and keep < 0:
        raise ValueError("keep must be 0 or more (or None to keep every call)")
    return keep


def _record(items: list[T], item: T, keep: int | None) -> None:
    """Append `item`, then drop the oldest items beyond the last `keep` (all kept when `None`)."""
    items.append(item)
    if keep is not None and len(items) > keep:
        del items[: len(items) - keep]


class ScriptedSTT:
    """Returns the scripted transcripts in order (the last one repeats); records the last turns' audio."""

    name = "scripted-stt"
    sample_rate = 16000

    def __init__(self, *texts: str, delay_s: float = 0.0, keep: int | None = KEEP) -> None:
        self.texts = list(texts) or [""]
        self.delay_s = delay_s
        self.keep = _check_keep(keep)
        self.heard: list[AudioFrame] = []
        """The audio of the last `keep` turns, oldest first."""
        self.call_count = 0
        """Turns transcribed so far, kept in `heard` or not."""
        self.fail_next: ProviderError | None = None
        """Raised (once) by the next call instead of a transcript."""
        self.closed = False
        """Set by `aclose()`."""

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        self.call_count += 1
        _record(self.heard, audio, self.keep)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        index = min(self.call_count - 1, len(self.texts) - 1)
        return Transcript(self.texts[index], audio.duration_s)


@dataclass(frozen=True, slots=True)
class LLMCall:
    """What one `ScriptedLLM.stream` call was given."""

    messages: tuple[ChatMessage, ...]
    instructions: str
    tools: tuple[ToolSpec, ...] = ()
    """The tools it offered (none: a plain reply was asked for)."""


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """A scripted reply: words, then the tool calls it makes (see `ScriptedLLM.calls_tool`)."""

    text: str = ""
    """Streamed word by word first (none when empty)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Yielded one by one after the words (several: called at once)."""


class ScriptedLLM:
    """Streams scripted replies word by word (the last reply repeats), `token_delay_s` apart.

    A reply is a string, or a `ScriptedReply` that also calls tools, most simply made with
    `calls_tool`:

    ```python
    llm = ScriptedLLM(
        ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check."),
        "It has shipped.",  # the reply once the tool's result is in
    )
    ```

    The calls are yielded whatever `tools` the call offered (a model may name a tool that does
    not exist); `supports_tools=False` makes it refuse tools like `LocalLLM` does (`ConfigError`).

    `fail_next` raises before the first word; `fail_after_words` raises after that many words (a
    reply's tool calls come after its words: its word count fails just before them); `stall_s`
    waits that long before the first word. Each takes effect on the next call only.
    """

    name = "scripted-llm"

    def __init__(
        self,
        *replies: str | ScriptedReply,
        token_delay_s: float = 0.0,
        keep: int | None = KEEP,
        supports_tools: bool = True,
    ) -> None:
        self.replies: list[str | ScriptedReply] = list(replies) or ["OK."]
        self.token_delay_s = token_delay_s
        self.supports_tools = supports_tools
        """Whether `stream` takes tools (the LLM Protocol's flag; settable)."""
        self.keep = _check_keep(keep)
        self.calls: list[LLMCall] = []
        """What the last `keep` calls were given, oldest first."""
        self.call_count = 0
        """Calls so far, kept in `calls` or not."""
        self.closed_early = 0
        """Calls that were closed before their reply was complete (barge-in)."""
        self.fail_next: ProviderError | None = None
        self.fail_after_words: int | None = None
        self.stall_s = 0.0
        self.closed = False
        """Set by `aclose()`."""

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    @staticmethod
    def calls_tool(
        name: str, arguments: Mapping[str, Any] | None = None, *, text: str = "", id: str | None = None
    ) -> ScriptedReply:
        """A reply that says `text` (if any), then calls tool `name` with `arguments` (id: `call_<name>`
        unless given)."""
        arguments = dict(arguments or {})
        call = ToolCall(id or f"call_{name}", name, arguments, json.dumps(arguments))
        return ScriptedReply(text, (call,))

    async def stream(
        self, messages: Sequence[ChatMessage], *, instructions: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        if tools and not self.supports_tools:
            raise ConfigError(f"{self.name} cannot call tools (supports_tools=False)", provider=self.name)
        self.call_count += 1
        _record(self.calls, LLMCall(tuple(messages), instructions, tuple(tools)), self.keep)
        scripted = self.replies[min(self.call_count - 1, len(self.replies) - 1)]
        reply = ScriptedReply(scripted) if isinstance(scripted, str) else scripted
        error, self.fail_next = self.fail_next, None
        fail_after, self.fail_after_words = self.fail_after_words, None
        stall, self.stall_s = self.stall_s, 0.0
        if stall:
            await asyncio.sleep(stall)
        if error is not None:
            raise error
        words = reply.text.split(" ") if reply.text or not reply.tool_calls else []
        complete = False
        try:
            for i, word in enumerate(words):
                if fail_after is not None and i == fail_after:
                    raise ProviderError("scripted failure mid-reply", retryable=True, provider=self.name)
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield LLMChunk(text=word if i == 0 else " " + word)
            if reply.tool_calls and fail_after is not None and fail_after >= len(words):
                raise ProviderError("scripted failure before a tool call", retryable=True, provider=self.name)
            for call in reply.tool_calls:
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                yield LLMChunk(tool_call=call)
            complete = True
            yield LLMChunk(
                usage=LLMUsage(
                    input_tokens=sum(len(m.text.split()) for m in messages),
                    output_tokens=len(words) + len(reply.tool_calls),
                )
            )
        finally:
            if not complete:
                self.closed_early += 1


class ToneTTS:
    """Speaks each text as a tone, `ms_per_char` milliseconds per character, in `frame_ms` frames.

    Every sentence gets its own pitch (cycling through `pitches_hz`), so a test can tell from the
    audio which sentence was playing. Records the last `keep` texts it was given, in `texts`.
    """

    name = "tone-tts"

    def __init__(
        self,
        *,
        sample_rate: int = 24000,
        ms_per_char: float = 60.0,
        frame_ms: int = 100,
        delay_s: float = 0.0,
        pitches_hz: Sequence[float] = (220.0, 330.0, 440.0, 550.0),
        keep: int | None = KEEP,
    ) -> None:
        self.sample_rate = sample_rate
        self.ms_per_char = ms_per_char
        self.frame_ms = frame_ms
        self.delay_s = delay_s
        self.pitches_hz = tuple(pitches_hz)
        self.keep = _check_keep(keep)
        self.texts: list[str] = []
        """The last `keep` texts, oldest first."""
        self.call_count = 0
        """Texts synthesised so far, kept in `texts` or not."""
        self.fail_next: ProviderError | None = None
        self.closed = False
        """Set by `aclose()`."""

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    def duration_s(self, text: str) -> float:
        """Length of the audio `synthesize(text)` yields."""
        return round(len(text) * self.ms_per_char * self.sample_rate / 1000) / self.sample_rate

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        self.call_count += 1
        _record(self.texts, text, self.keep)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        pitch = self.pitches_hz[(self.call_count - 1) % len(self.pitches_hz)]
        total = round(len(text) * self.ms_per_char * self.sample_rate / 1000)
        step = self.sample_rate * self.frame_ms // 1000
        for start in range(0, total, step):
            n = min(step, total - start)
            t = (start + np.arange(n)) / self.sample_rate
            yield AudioFrame((0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), self.sample_rate)
            await asyncio.sleep(0)
