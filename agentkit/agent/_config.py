"""What a running agent session is given: a frozen config and the agent's hooks.

`AgentSession` does not read settings back from the `Agent` while it runs: the agent hands it an
`AgentConfig` (a snapshot of its declarations for this session) and itself as `AgentHooks`, the
small set of stages and callbacks the session calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agentkit.agent._events import AgentEvent
from agentkit.agent._pipeline import StageTimeouts
from agentkit.agent._tools import Tool
from agentkit.audio import AudioFrame
from agentkit.providers.llm import ChatMessage, LLMChunk
from agentkit.store import ConversationStore

__all__ = ["AgentConfig", "AgentHooks"]


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The settings one agent session runs with (see `Agent` for what each means)."""

    name: str
    """The agent's name in the store and in logs."""
    greeting: str | None
    apology: str
    timeouts: StageTimeouts
    partial_transcripts: bool
    partial_interval_ms: int
    first_piece_words: int | None
    input_sample_rate: int
    """Rate of the caller's audio the turn detector hands over."""
    store: ConversationStore | None
    max_tool_steps: int = 5
    """LLM calls in one reply that may end in tool calls; the next one is offered no tools."""
    tool_timeout_s: float = 10.0
    """Longest a tool call may take unless its `@tool(timeout_s=...)` says otherwise."""
    tool_filler: str | None = "One moment."
    """Said once per reply when tools take longer than `tool_filler_after_s`; None: never."""
    tool_filler_after_s: float = 1.0
    event_sinks: Sequence[Callable[[AgentEvent], None]] = ()
    """`Agent.event_sinks`: called with every event of the session (kept across handoffs)."""
    preemptive_generation: bool = False
    """Transcribe and start the LLM in the caller's pauses (`Agent.preemptive_generation`, resolved)."""
    preemptive_after_ms: int = 120
    """...once a pause has lasted this long."""


class AgentHooks(Protocol):
    """The stages and callbacks of an `Agent` that its session calls (all overridable)."""

    async def stt_node(self, audio: AudioFrame) -> str: ...

    async def on_transcript(self, text: str) -> str | None: ...

    def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]: ...

    def tts_node(self, text: str) -> AsyncIterator[AudioFrame]: ...

    async def on_event(self, event: AgentEvent) -> None: ...

    def agent_tools(self) -> Mapping[str, Tool]: ...

    async def handoff(self, target: object) -> str | None:
        """If `target` (what a tool returned) is an agent, hand the call to it and say so (for the
        LLM); None otherwise."""
        ...
