"""`Agent`: subclass it, declare how it listens, thinks and speaks; every transport serves it.

```python
class Claude(Agent):
    instructions = prompt("claude")
    greeting = "Hi, I'm Claude. What can I do for you?"
    stt = "moonshine/tiny"
    llm = AnthropicLLM("claude-haiku-4-5")
    tts = KokoroTTS(voice="af_heart")
```

An agent is a Stream handler on the one turn-taking base (`TurnTakingHandler`): the `Stream` keeps
the declared agent as a prototype and gives each session a shallow copy (providers and store
shared, conversation state its own). Once a call has started, `self.session` (`AgentSession`) is
the handle on it. The fixed pipeline order, with the hooks an agent may override:

turn-taking → `stt_node` → `on_transcript` → history → `llm_node` → sentences → `tts_node` → paced
audio; `on_event` sees every typed event. docs/agents.md has the same picture with examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final, Never

from agentkit._executor import run_turn_job
from agentkit.agent._config import AgentConfig
from agentkit.agent._events import AgentEvent
from agentkit.agent._mcp import MCPConnections, MCPServer
from agentkit.agent._pipeline import FIRST_PIECE_WORDS, StageTimeouts
from agentkit.agent._session import AgentSession, history_for_llm
from agentkit.agent._tools import Tool, collect_tools
from agentkit.audio import AudioFrame, resample
from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers import resolve_llm, resolve_stt, resolve_tts
from agentkit.providers._fallback import note_answer
from agentkit.providers.llm import LLM, ChatMessage, LLMChunk, LocalLLM
from agentkit.providers.stt import STT, MoonshineSTT
from agentkit.providers.tts import TTS
from agentkit.providers.turn import EndOfTurnModel, SmartTurn
from agentkit.providers.vad import VAD, SileroVAD
from agentkit.store import ConversationStore
from agentkit.stream._handlers import PlayoutEvent
from agentkit.stream._interruption import InterruptionDecision
from agentkit.stream._turn import TurnDetector, TurnEnded, TurnStarted, TurnState, TurnTakingOptions
from agentkit.stream._turn_handler import TurnTakingHandler

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

_RETRY_DELAY_S = 0.25

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant on a live call. Your words are spoken aloud, so answer in one "
    "to three short, plain sentences, with no lists, markdown or emoji."
)


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET: Final = _Unset.UNSET
"""A keyword argument of `Agent(...)` not given: the class attribute stays in force."""

DEFAULT_SEMANTIC_TURN: Final = SmartTurn(optional=True)
"""Every agent's default end-of-turn model, one instance so that checks from all calls batch
together: Smart Turn v3.2 when its file is in the models dir, else off (one info line)."""


class Agent(TurnTakingHandler):
    """A voice agent: turn-taking, STT, an LLM with the conversation's history, streaming TTS.

    Declare the class attributes below in a subclass, or pass them as keyword arguments (typed, so
    a type checker catches a misspelt one). Providers may be objects or short strings
    (`"moonshine/tiny"`, `"anthropic/claude-haiku-4-5"`, `"kokoro/af_heart"`; see
    `agentkit.providers.resolve_stt` and friends).

    Stages to override, each with a default an override may call with `super()`: `stt_node` (audio
    to text), `llm_node` (history to the reply's text), `tts_node` (one sentence to audio). Hooks:
    `on_transcript` (change or drop what the caller said), `on_event` (typed events). The call
    itself is `self.session` once it has started.
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
    follow_call_rate: bool = True
    """Score a phone call's 8 kHz audio as it arrives, with the VAD at 8 kHz (no resampling, about
    half the VAD's cost per chunk), when the VAD runs at that rate and no end-of-turn model takes
    another (Smart Turn takes 16 kHz, so with it on this changes nothing); what is transcribed is
    resampled to the STT's rate once per turn. Browser calls stay at the VAD's own rate."""
    turn_taking: TurnTakingOptions = TurnTakingOptions()
    semantic_turn: EndOfTurnModel | None = DEFAULT_SEMANTIC_TURN
    """Semantic end of turn, on by default: in a pause, Smart Turn v3.2 is asked whether the caller
    has finished (the `semantic_*` settings of `turn_taking`), so a finished sentence ends the turn
    after ~200 ms of silence and an unfinished one waits. Used only if the model file is in the
    models dir (`agentkit models download smart-turn`); without it, or with None here, turns end on
    `turn_taking.end_of_turn_silence_ms` of silence alone. docs/agents.md explains it."""
    can_interrupt: bool = True
    """Speech over a reply stops it (barge-in); otherwise turns taken during a reply are ignored.
    Only real speech does: a sound over a reply pauses it, and a cough or a backchannel ("mm-hmm",
    "right") lets it resume (see the `interrupt_*` settings of `turn_taking`)."""
    interruption_stt: STT | str | None = None
    """What transcribes a sound over a reply, so that it interrupts only with words that are not
    backchannels (`turn_taking.interrupt_min_words`). None: the agent's `stt` when it runs locally
    (Moonshine: ~50-100 ms on a short clip), else none (speech alone decides)."""
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
    first_piece_words: int | None = FIRST_PIECE_WORDS
    """The first piece of each reply goes to the TTS after this many words at most, if its sentence
    (or a clause past 24 characters) has not ended sooner; later pieces are whole sentences. A TTS
    that speaks whole pieces (Kokoro) starts sooner on a short one. None: the first sentence whole."""
    preemptive_generation: bool | None = None
    """Begin the reply in the caller's pauses, before the turn is known to be over: once a pause
    reaches `preemptive_after_ms`, the turn so far is transcribed (`stt_node`), and once the pause
    has had its first end-of-turn check (at once without `semantic_turn`) the LLM (`llm_node`)
    starts on the history plus that transcript. Nothing of it is spoken, no tool runs and the
    history is untouched until the turn ends in that same pause; the turn's reply then goes on
    from there (no second transcription). If the caller speaks again instead, the work is
    cancelled and thrown away. The price is that wasted work: a transcription for every pause that
    was not the end, and an LLM call started for those that outlast the check (CPU with local
    models, billed calls with cloud ones). None: on when both the STT and the LLM run on this
    machine (`MoonshineSTT`, `LocalLLM`) and turns end on silence alone (no end-of-turn model in
    use), where it is a clear win on two cores (~260 ms median, voice to voice); with Smart Turn
    the gain there was within the noise, so it is off (docs/benchmarks.md, "Preemptive
    generation")."""
    preemptive_after_ms: int = 120
    """Silence after which a pause is worked on (with `preemptive_generation`). Below the semantic
    end of turn's first check (`turn_taking.semantic_check_after_ms`, 200), so the work is under
    way when a finished sentence is recognised; at least `turn_taking.trailing_ms` plus a VAD
    chunk passes before the turn's audio is complete."""
    store: ConversationStore | None = None
    """Where conversations, messages and metrics are kept; `agentkit run` sets one."""
    name: str = ""
    """Agent name in the store and logs; defaults to the class name."""
    tools: Sequence[Callable[..., Any] | Tool] = ()
    """Plain functions (or `@tool`s) the LLM may call, besides the agent's own `@tool` methods."""
    mcp_servers: Sequence[MCPServer] = ()
    """MCP servers whose tools the LLM may call too, connected for each call (`MCPServer.stdio`,
    `MCPServer.http`; see agentkit/agent/_mcp.py)."""
    max_tool_steps: int = 5
    """LLM calls in one reply that may end in tool calls (then the LLM must answer in words)."""
    tool_timeout_s: float = 10.0
    """Longest a tool call may take (a tool's own `@tool(timeout_s=...)` wins)."""
    tool_filler: str | None = "One moment."
    """Said once in a reply whose tools take longer than `tool_filler_after_s`; None: never."""
    tool_filler_after_s: float = 1.0

    def __init__(
        self,
        *,
        instructions: str | _Unset = UNSET,
        greeting: str | _Unset | None = UNSET,
        stt: STT | str | _Unset = UNSET,
        llm: LLM | str | _Unset = UNSET,
        tts: TTS | str | _Unset = UNSET,
        vad: VAD | _Unset | None = UNSET,
        follow_call_rate: bool | _Unset = UNSET,
        turn_taking: TurnTakingOptions | _Unset = UNSET,
        semantic_turn: EndOfTurnModel | _Unset | None = UNSET,
        can_interrupt: bool | _Unset = UNSET,
        interruption_stt: STT | str | _Unset | None = UNSET,
        timeouts: StageTimeouts | _Unset = UNSET,
        apology: str | _Unset = UNSET,
        max_history_messages: int | _Unset = UNSET,
        llm_retries: int | _Unset = UNSET,
        partial_transcripts: bool | _Unset = UNSET,
        partial_interval_ms: int | _Unset = UNSET,
        first_piece_words: int | _Unset | None = UNSET,
        preemptive_generation: bool | _Unset | None = UNSET,
        preemptive_after_ms: int | _Unset = UNSET,
        store: ConversationStore | _Unset | None = UNSET,
        name: str | _Unset = UNSET,
        tools: Sequence[Callable[..., Any] | Tool] | _Unset = UNSET,
        mcp_servers: Sequence[MCPServer] | _Unset = UNSET,
        max_tool_steps: int | _Unset = UNSET,
        tool_timeout_s: float | _Unset = UNSET,
        tool_filler: str | _Unset | None = UNSET,
        tool_filler_after_s: float | _Unset = UNSET,
        **unknown: Never,
    ) -> None:
        if unknown:
            raise ConfigError(f"unknown Agent setting(s): {', '.join(sorted(unknown))}")
        given: dict[str, object] = {
            "instructions": instructions,
            "greeting": greeting,
            "stt": stt,
            "llm": llm,
            "tts": tts,
            "vad": vad,
            "follow_call_rate": follow_call_rate,
            "turn_taking": turn_taking,
            "semantic_turn": semantic_turn,
            "can_interrupt": can_interrupt,
            "interruption_stt": interruption_stt,
            "timeouts": timeouts,
            "apology": apology,
            "max_history_messages": max_history_messages,
            "llm_retries": llm_retries,
            "partial_transcripts": partial_transcripts,
            "partial_interval_ms": partial_interval_ms,
            "first_piece_words": first_piece_words,
            "preemptive_generation": preemptive_generation,
            "preemptive_after_ms": preemptive_after_ms,
            "store": store,
            "name": name,
            "tools": tools,
            "mcp_servers": mcp_servers,
            "max_tool_steps": max_tool_steps,
            "tool_timeout_s": tool_timeout_s,
            "tool_filler": tool_filler,
            "tool_filler_after_s": tool_filler_after_s,
        }
        for key, value in given.items():
            if value is not UNSET:
                setattr(self, key, value)
        if self.first_piece_words is not None and self.first_piece_words < 1:
            raise ConfigError("first_piece_words must be at least 1 (or None)", value=self.first_piece_words)
        if self.preemptive_after_ms <= 0:
            raise ConfigError("preemptive_after_ms must be positive", value=self.preemptive_after_ms)
        self.stt_provider: STT = resolve_stt(self.stt)
        self.interruption_stt_provider: STT | None = (
            resolve_stt(self.interruption_stt)
            if self.interruption_stt is not None
            else self.stt_provider
            if isinstance(self.stt_provider, MoonshineSTT)
            else None
        )
        self.llm_provider: LLM = resolve_llm(self.llm)
        self.tts_provider: TTS = resolve_tts(self.tts)
        self.vad_provider: VAD = self.vad if self.vad is not None else SileroVAD()
        self.turn_vad = self.vad_provider
        self.turn_options = self.turn_taking
        self.input_sample_rate = self.vad_provider.sample_rate
        self.output_sample_rate = self.tts_provider.sample_rate
        self._session: AgentSession | None = None
        self._tts_at_call_rate: TTS | None = None  # `_call_tts`, chosen once per call
        self.event_sinks: list[Callable[[AgentEvent], None]] = []
        """Plain callables given every event of every call (`on_event` sees them too), e.g. the
        server's `/metrics`. Its per-call copies share this list; a sink must be quick and not block."""
        self._tools = collect_tools(self, self.tools)
        # MCP: the call's connections (shared with agents it hands the call to) and their tools.
        self._mcp: MCPConnections | None = None
        self._mcp_tools: dict[str, Tool] = {}
        for server in self.mcp_servers:
            if not isinstance(server, MCPServer):
                raise ConfigError(f"mcp_servers takes MCPServer.stdio(...) or .http(...), not {server!r}")
        if (self._tools or self.mcp_servers) and not getattr(self.llm_provider, "supports_tools", True):
            raise ConfigError(
                f"{self.agent_name} declares tools, but {self.llm_provider.name} cannot call tools: "
                "use a cloud LLM such as anthropic/claude-haiku-4-5 or groq/llama-3.3-70b-versatile"
            )

    @property
    def preemptive(self) -> bool:
        """`preemptive_generation`, resolved: whether this agent begins replies in pauses. For None,
        whether an end-of-turn model is in use is known once turn-taking has started (an optional
        Smart Turn without its file is not); before that, `semantic_turn` is taken as declared."""
        if self.preemptive_generation is not None:
            return self.preemptive_generation
        local = isinstance(self.stt_provider, MoonshineSTT) and isinstance(self.llm_provider, LocalLLM)
        started = self._detector is not None
        return local and (self.semantic is None if started else self.semantic_turn is None)

    @property
    def agent_name(self) -> str:
        return self.name or type(self).__name__

    @property
    def session(self) -> AgentSession:
        """This call: its history and caller, and `say`, `generate_reply`, `interrupt`, `hang_up`,
        `events()`. Raises `RuntimeError` before the call has started."""
        if self._session is None:
            raise RuntimeError("the agent's session has not started")
        return self._session

    # -- stages and hooks --------------------------------------------------------------------------
    async def stt_node(self, audio: AudioFrame) -> str:
        """The caller's words in `audio` (one turn, at the turn detector's rate). The default runs
        the STT provider (resampling to its rate) within `timeouts.stt_s`. Override to replace or
        wrap it, e.g. `text = await super().stt_node(audio)` and fix the spelling of names."""
        stt = self.stt_provider
        if audio.sample_rate != stt.sample_rate:
            audio = await run_turn_job(resample, audio, stt.sample_rate)
        timeout_s = self.timeouts.stt_s
        try:
            async with asyncio.timeout(timeout_s):
                note_answer("stt", stt)
                transcript = await stt.transcribe(audio)
        except TimeoutError:
            raise ProviderTimeoutError(f"STT took over {timeout_s:g} s", stage="stt") from None
        return transcript.text

    async def on_transcript(self, text: str) -> str | None:
        """What the caller said, before it goes into the history. Return None or "" to ignore the
        turn (no reply), or different text to reply to that instead."""
        return text

    def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        """The reply's text as a stream of pieces (`str` or `LLMChunk`). The default calls the LLM
        provider with `call_instructions()` on the last `max_history_messages`, retrying a
        retryable failure before any text. Override to replace or wrap it."""
        return self._llm_with_retry(history)

    def tts_node(self, text: str) -> AsyncIterator[AudioFrame]:
        """One sentence of the reply as audio frames. The default runs the TTS provider. Override to
        replace or wrap it, e.g. fix a pronunciation: `return super().tts_node(text.replace("SQL",
        "sequel"))` (the history keeps the words as written)."""
        note_answer("tts", self.tts_provider)
        return self._call_tts().synthesize(text)

    def _call_tts(self) -> TTS:
        """The TTS provider at this call's output rate where that rate is below the configured one
        and the provider offers it (`at_sample_rate`: 8 kHz on the phone), else the provider as
        configured (the session resamples what it gives). Never above the configured rate: a call
        that plays 48 kHz (WebRTC) gains little from it, and a provider may charge more for it or
        refuse it (ElevenLabs' 44.1 kHz needs a Pro plan)."""
        tts, context = self._tts_at_call_rate, self._context
        if tts is None:
            tts = self.tts_provider
            if context is None:  # not in a call (yet): the provider as configured, chosen again later
                return tts
            at_rate: Callable[[int], TTS | None] | None = getattr(tts, "at_sample_rate", None)
            if at_rate is not None and context.output_sample_rate < tts.sample_rate:
                tts = at_rate(context.output_sample_rate) or tts
            self._tts_at_call_rate = tts
        return tts

    async def on_event(self, event: AgentEvent) -> None:
        """React to typed events (see `agentkit.agent.AgentEvent`). Errors here are logged, not raised."""

    async def handoff(self, target: object) -> str | None:
        """A tool returned `target`: when it is an `Agent`, it takes the call over (its
        instructions, tools and voice; the history and the turn-taking stay)."""
        if not isinstance(target, Agent):
            return None
        session = self.session
        successor = target.copy()
        successor._context, successor._session = self._context, session
        successor._mcp = self._mcp  # MCP: its servers join the call's connections, closed with it
        if self._mcp is not None and successor.mcp_servers:
            connecting = self._mcp.start(successor.mcp_servers)
            successor._mcp_tools = await self._mcp.tools(connecting, reserved=successor._tools)
        await successor.warm_up()
        successor.input_sample_rate = self.input_sample_rate  # the call's turn-taking stays, at its rate
        await session.hand_off(successor, successor._config(), self.agent_name)
        logger.info("%s handed the call to %s", self.agent_name, successor.agent_name)
        return f"The call is now handled by {successor.agent_name}; continue as {successor.agent_name}."

    def agent_tools(self) -> Mapping[str, Tool]:
        """The tools the LLM is offered, by name: the `@tool` methods, `tools`, and the tools of the
        `mcp_servers` (once the call has connected them)."""
        return {**self._tools, **self._mcp_tools} if self._mcp_tools else self._tools

    def call_instructions(self) -> str:
        """`instructions`, plus why the agent placed this call when it did (`agentkit call
        --purpose`): what the default LLM step sends. Override to word it differently."""
        info = self._context.call_info if self._context is not None else {}
        purpose = info.get("purpose")
        if info.get("direction") != "outbound" or not purpose:
            return self.instructions
        return f"{self.instructions}\n\nYou placed this phone call yourself. Its purpose: {purpose}"

    # -- setup -------------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        """Load models and open clients ahead of the first caller (the server calls this at start)."""
        await asyncio.gather(
            self.stt_provider.warm_up(), self.llm_provider.warm_up(), self.tts_provider.warm_up()
        )
        if self.interruption_stt_provider not in (None, self.stt_provider):
            assert self.interruption_stt_provider is not None
            await self.interruption_stt_provider.warm_up()

    async def aclose(self) -> None:
        """Release the providers' clients and threads (the server calls this at shutdown). Safe to
        call twice; providers reopen what they need if the agent is used again."""
        providers: list[STT | LLM | TTS | VAD] = [
            self.stt_provider,
            self.llm_provider,
            self.tts_provider,
            self.vad_provider,
        ]
        if self.interruption_stt_provider not in (None, self.stt_provider):
            assert self.interruption_stt_provider is not None
            providers.append(self.interruption_stt_provider)
        for provider in providers:
            try:
                await provider.aclose()
            except Exception:
                logger.exception("%s: closing %s failed", self.agent_name, type(provider).__name__)

    def copy(self) -> Agent:
        clone = copy.copy(self)
        clone._session = None
        clone._tts_at_call_rate = None
        clone._tools = {name: t.bind(clone) if t.owner is self else t for name, t in self._tools.items()}
        clone._mcp, clone._mcp_tools = None, {}
        clone.reset_turn_taking()
        return clone

    def _config(self) -> AgentConfig:
        return AgentConfig(
            name=self.agent_name,
            greeting=self.greeting,
            apology=self.apology,
            timeouts=self.timeouts,
            partial_transcripts=self.partial_transcripts,
            partial_interval_ms=self.partial_interval_ms,
            first_piece_words=self.first_piece_words,
            input_sample_rate=self.input_sample_rate,
            store=self.store,
            max_tool_steps=self.max_tool_steps,
            tool_timeout_s=self.tool_timeout_s,
            tool_filler=self.tool_filler,
            tool_filler_after_s=self.tool_filler_after_s,
            event_sinks=tuple(self.event_sinks),
            preemptive_generation=self.preemptive,
            preemptive_after_ms=self.preemptive_after_ms,
        )

    async def start_up(self) -> None:
        self._mcp = MCPConnections(self.agent_name)
        connecting = self._mcp.start(self.mcp_servers)  # the MCP servers start while the models warm up
        try:
            await self.warm_up()
            await super().start_up()
            self._mcp_tools = await self._mcp.tools(connecting, reserved=self._tools)
            self._session = AgentSession(self._config(), self, self.context, self)
            await self._session.open()
        except BaseException:
            await self._mcp.aclose()
            raise

    async def shutdown(self) -> None:
        try:
            if self._session is not None:
                await self._session.close()
        finally:
            if self._mcp is not None:
                await self._mcp.aclose()

    # -- turn-taking (the TurnTakingHandler hooks) -------------------------------------------------
    @property
    def replying(self) -> bool:
        return self.session.replying

    async def stop_reply(self) -> None:
        await self.session.stop_replies()

    async def interrupt(self) -> int:
        """Barge-in: stop the reply, flush its audio, keep in the history what the caller heard."""
        heard_ms = await super().interrupt()
        await self.session.interrupted(heard_ms)
        return heard_ms

    async def on_turn_started(self, event: TurnStarted, *, barge_in: bool) -> None:
        await self.session.caller_started(event, barge_in=barge_in)

    async def on_turn_ended(self, event: TurnEnded) -> None:
        await self.session.caller_finished(event, speech_end_at=self.arrival_time(event.speech_end_samples))

    async def on_turn_discarded(self, event: object) -> None:
        self.session.caller_discarded()

    @property
    def transcribes_interruptions(self) -> bool:
        return self.interruption_stt_provider is not None

    async def transcribe_interruption(self, audio: AudioFrame) -> str | None:
        """The words of a sound over a reply, by `interruption_stt` (resampled to its rate)."""
        stt = self.interruption_stt_provider
        if stt is None:
            return None
        if audio.sample_rate != stt.sample_rate:
            audio = await run_turn_job(resample, audio, stt.sample_rate)
        return (await stt.transcribe(audio)).text

    async def on_interruption(self, decision: InterruptionDecision) -> None:
        await self.session.interruption(decision)

    def wants_after_audio(self, detector: TurnDetector) -> bool:
        if self.partial_transcripts and detector.state is not TurnState.SILENT:
            return True
        return self._session is not None and self._session.preempting

    async def after_audio(self, detector: TurnDetector) -> None:
        if self.partial_transcripts and detector.state is not TurnState.SILENT:
            await self.session.partial_user_transcript(detector)
        # with `preemptive_generation` (the session's config); its LLM call waits for the pause's
        # first end-of-turn check: both at once would slow the check (docs/benchmarks.md)
        semantic = self.semantic
        check_ms = semantic.options.semantic_check_after_ms if semantic is not None else 0
        await self.session.preempt(detector, llm_after_ms=check_ms)

    def on_playout(self, event: PlayoutEvent) -> None:
        if self._session is not None:
            self._session.on_playout(event)

    def on_dtmf(self, digit: str) -> None:
        """A phone key reaches `on_event` as `DtmfReceived`."""
        if self._session is not None:
            self._session.dtmf(digit)

    async def on_text(self, text: str) -> None:
        """A message the caller typed is a turn like a spoken one, minus the STT: a barge-in when
        `can_interrupt`, then `on_transcript`, the history and a (spoken) reply, tools included."""
        await self.session.user_text(text, interrupt=self.can_interrupt)

    # -- the default LLM step ----------------------------------------------------------------------
    async def _llm_with_retry(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        messages = history_for_llm(history, self.max_history_messages)
        instructions = self.call_instructions()
        extra = self._session.reply_instructions if self._session is not None else None
        if extra:
            instructions = f"{instructions}\n\n{extra}"
        for attempt in range(self.llm_retries + 1):
            produced = False
            try:
                tools = self._session.offered_tools if self._session is not None else []
                note_answer("llm", self.llm_provider)
                stream = self.llm_provider.stream(messages, instructions=instructions, tools=tools)
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        produced = produced or bool(chunk.text)
                        yield chunk
                return
            except ProviderError as exc:
                if produced or not exc.retryable or attempt == self.llm_retries:
                    raise
                logger.warning("%s: LLM call failed (%s), retrying", self.agent_name, exc.code)
                await asyncio.sleep(_RETRY_DELAY_S)
