"""`Agent`: subclass it, declare how it listens, thinks and speaks; every transport serves it.

```python
class Claude(Agent):
    instructions = prompt("claude")
    greeting = "Hi, I'm Claude. What can I do for you?"
    stt = "moonshine/tiny"
    llm = AnthropicLLM("claude-haiku-4-5")
    tts = KokoroTTS(voice="af_heart")
```

An agent is a Stream handler: the `Stream` keeps the declared agent as a prototype and gives each
session a shallow copy (providers and store shared, conversation state its own). A turn goes
turn-taking → STT → `on_transcript` → history → `llm_node` → sentences → TTS → paced audio; see
`_turns.py` for the turn itself and `_pipeline.py` for the LLM-to-audio part.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from agentkit._executor import run_audio_job
from agentkit.agent._events import AgentEvent, DtmfReceived
from agentkit.agent._pipeline import StageTimeouts
from agentkit.agent._turns import AgentSession
from agentkit.audio import AudioFrame
from agentkit.exceptions import ConfigError, ProviderError
from agentkit.providers import resolve_llm, resolve_stt, resolve_tts
from agentkit.providers.llm import LLM, ChatMessage, LLMChunk
from agentkit.providers.stt import STT
from agentkit.providers.tts import TTS
from agentkit.providers.vad import VAD, SileroVAD
from agentkit.store import ConversationStore
from agentkit.stream._events import StartedTalking
from agentkit.stream._handlers import AsyncStreamHandler, EmitType, PlayoutEvent
from agentkit.stream._turn import (
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnStarted,
    TurnState,
    TurnTakingOptions,
)

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.25

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant on a live call. Your words are spoken aloud, so answer in one "
    "to three short, plain sentences, with no lists, markdown or emoji."
)


class Agent(AsyncStreamHandler):
    """A voice agent: turn-taking, STT, an LLM with the conversation's history, streaming TTS.

    Declare the class attributes below in a subclass (or pass them as keyword arguments). Providers
    may be objects or short strings (`"moonshine/tiny"`, `"anthropic/claude-haiku-4-5"`,
    `"kokoro/af_heart"`; see `agentkit.providers.resolve_stt` and friends).

    Hooks to override: `on_transcript` (change or drop what the caller said), `llm_node` (replace
    the LLM step), `on_event` (typed events: turns, replies, interruptions, metrics, session
    start and end). Per-session state lives in `self.conversation` once the session has started.
    """

    instructions: str = DEFAULT_INSTRUCTIONS
    """System prompt for the LLM (e.g. `prompt("claude")` reads `prompts/claude.md`)."""
    greeting: str | None = None
    """Said when a caller connects; None to wait for the caller to speak first."""
    stt: STT | str = "moonshine/tiny"
    llm: LLM | str = "local/smollm2-135m"
    tts: TTS | str = "kokoro/af_heart"
    vad: VAD | None = None
    """Voice activity detector for turn-taking; None means the shared Silero model."""
    turn_taking: TurnTakingOptions = TurnTakingOptions()
    can_interrupt: bool = True
    """Speech over a reply stops it (barge-in); otherwise turns taken during a reply are ignored."""
    timeouts: StageTimeouts = StageTimeouts()
    apology: str = "Sorry, I ran into a problem on my side. Could you say that again?"
    """Said instead of (or after) a reply when a provider fails or is too slow."""
    max_history_messages: int = 40
    """Messages of history sent to the LLM (the oldest are left out beyond this)."""
    llm_retries: int = 1
    """Retries of an LLM call that failed with a retryable error before producing any text."""
    partial_transcripts: bool = False
    """Send partial transcripts while the caller talks (STT on the turn so far, every
    `partial_interval_ms`) and as each reply sentence is spoken. Costs an STT call per interval:
    meant for fast local STT."""
    partial_interval_ms: int = 700
    store: ConversationStore | None = None
    """Where conversations, messages and metrics are kept; `agentkit run` sets one."""
    name: str = ""
    """Agent name in the store and logs; defaults to the class name."""

    _CONFIG: ClassVar[tuple[str, ...]] = (
        "instructions",
        "greeting",
        "stt",
        "llm",
        "tts",
        "vad",
        "turn_taking",
        "can_interrupt",
        "timeouts",
        "apology",
        "max_history_messages",
        "llm_retries",
        "partial_transcripts",
        "partial_interval_ms",
        "store",
        "name",
    )

    def __init__(self, **overrides: Any) -> None:
        unknown = sorted(set(overrides) - set(self._CONFIG))
        if unknown:
            raise ConfigError(f"unknown Agent setting(s): {', '.join(unknown)}")
        for key, value in overrides.items():
            setattr(self, key, value)
        self.stt_provider: STT = resolve_stt(self.stt)
        self.llm_provider: LLM = resolve_llm(self.llm)
        self.tts_provider: TTS = resolve_tts(self.tts)
        self.vad_provider: VAD = self.vad if self.vad is not None else SileroVAD()
        self.input_sample_rate = self.vad_provider.sample_rate
        self.output_sample_rate = self.tts_provider.sample_rate
        self._detector: TurnDetector | None = None
        self._conversation: AgentSession | None = None
        self._event_tasks: set[asyncio.Task[None]] = set()  # `on_event` calls for keys pressed

    @property
    def agent_name(self) -> str:
        return self.name or type(self).__name__

    @property
    def conversation(self) -> AgentSession:
        """This session's conversation: history, turns, the reply in progress."""
        if self._conversation is None:
            raise RuntimeError("the agent's session has not started")
        return self._conversation

    # -- hooks -------------------------------------------------------------------------------------
    async def on_transcript(self, text: str) -> str | None:
        """What the caller said, before it goes into the history. Return None or "" to ignore the
        turn (no reply), or different text to reply to that instead."""
        return text

    def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        """The reply's text as a stream of pieces (`str` or `LLMChunk`). Override to replace the LLM
        step, e.g. with an async generator that calls tools or answers from a script."""
        return self._llm_with_retry(history)

    async def on_event(self, event: AgentEvent) -> None:
        """React to typed events (see `agentkit.agent.AgentEvent`). Errors here are logged, not raised."""

    # -- setup -------------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        """Load models and open clients ahead of the first caller (the server calls this at start)."""
        await asyncio.gather(
            self.stt_provider.warm_up(), self.llm_provider.warm_up(), self.tts_provider.warm_up()
        )

    def copy(self) -> Agent:
        clone = copy.copy(self)
        clone._detector = None
        clone._conversation = None
        clone._event_tasks = set()
        return clone

    async def start_up(self) -> None:
        await self.warm_up()
        vad_stream = await asyncio.to_thread(self.vad_provider.stream)
        self._detector = TurnDetector(
            vad_stream,
            sample_rate=self.vad_provider.sample_rate,
            chunk_samples=self.vad_provider.chunk_samples,
            options=self.turn_taking,
        )
        self._conversation = AgentSession(self, self.context)
        await self._conversation.open()

    async def shutdown(self) -> None:
        for task in list(self._event_tasks):
            task.cancel()
        if self._conversation is not None:
            await self._conversation.close()

    # -- audio in and out --------------------------------------------------------------------------
    async def receive(self, frame: AudioFrame) -> None:
        if self._detector is None or self._conversation is None:
            raise RuntimeError("Agent.receive before start_up")
        conversation = self._conversation
        rate = self.input_sample_rate
        for event in await run_audio_job(self._detector.process, frame.samples):
            if isinstance(event, TurnStarted):
                await self.context.send_event(StartedTalking(t_ms=event.onset_samples * 1000 // rate))
                await conversation.caller_started(event, barge_in=self.can_interrupt)
            elif isinstance(event, TurnEnded):
                await conversation.caller_finished(event)
            elif isinstance(event, TurnDiscarded):
                conversation.caller_discarded()
        if self.partial_transcripts and self._detector.state is not TurnState.SILENT:
            await conversation.partial_user_transcript(self._detector)

    async def emit(self) -> EmitType:
        return await self.conversation.next_output()

    def on_playout(self, event: PlayoutEvent) -> None:
        if self._conversation is not None:
            self._conversation.on_playout(event)

    def on_dtmf(self, digit: str) -> None:
        """A phone key reaches `on_event` as `DtmfReceived` (in a task the agent owns)."""
        task = asyncio.create_task(self._deliver(DtmfReceived(digit)), name="agent-dtmf")
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _deliver(self, event: AgentEvent) -> None:
        try:
            await self.on_event(event)
        except Exception:
            logger.exception("%s: on_event failed for %s", self.agent_name, type(event).__name__)

    # -- the default LLM step ----------------------------------------------------------------------
    def call_instructions(self) -> str:
        """`instructions`, plus why the agent placed this call when it did (`agentkit call
        --purpose`): what the default LLM step sends. Override to word it differently."""
        info = self._context.call_info if self._context is not None else {}
        purpose = info.get("purpose")
        if info.get("direction") != "outbound" or not purpose:
            return self.instructions
        return f"{self.instructions}\n\nYou placed this phone call yourself. Its purpose: {purpose}"

    async def _llm_with_retry(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        messages = list(history)[-self.max_history_messages :]
        while messages and messages[0].role != "user":
            messages.pop(0)  # a history cut in the middle starts with the caller's words
        for attempt in range(self.llm_retries + 1):
            produced = False
            try:
                stream = self.llm_provider.stream(messages, instructions=self.call_instructions())
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for chunk in stream:
                        produced = produced or bool(chunk.text)
                        yield chunk
                return
            except ProviderError as exc:
                if produced or not exc.retryable or attempt == self.llm_retries:
                    raise
                logger.warning("%s: LLM call failed (%s), retrying", self.agent_name, exc.code)
                await asyncio.sleep(_RETRY_DELAY_S)
