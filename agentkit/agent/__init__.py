"""Agents as pipelines: turn-taking → STT → LLM with history → streaming TTS."""

from agentkit.agent._agent import Agent
from agentkit.agent._events import (
    AgentEvent,
    DtmfReceived,
    ReplyFinished,
    ReplyInterrupted,
    ReplyStarted,
    SessionEnded,
    SessionStarted,
    TurnMetricsReady,
    UserTurnEnded,
    UserTurnStarted,
)
from agentkit.agent._pipeline import StageTimeouts
from agentkit.agent._prompts import prompt
from agentkit.agent._reply import ReplyHandle, ReplyOutcome
from agentkit.agent._sentences import SentenceSplitter, split_sentences
from agentkit.agent._session import AgentSession

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentSession",
    "DtmfReceived",
    "ReplyFinished",
    "ReplyHandle",
    "ReplyInterrupted",
    "ReplyOutcome",
    "ReplyStarted",
    "SentenceSplitter",
    "SessionEnded",
    "SessionStarted",
    "StageTimeouts",
    "TurnMetricsReady",
    "UserTurnEnded",
    "UserTurnStarted",
    "prompt",
    "split_sentences",
]
