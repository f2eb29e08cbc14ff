"""Agents as pipelines: turn-taking → STT → LLM with history → streaming TTS."""

from agentkit.agent._agent import Agent
from agentkit.agent._builtin_tools import end_call_tool, transfer_call_tool
from agentkit.agent._events import (
    AgentEvent,
    AgentHandoff,
    DtmfReceived,
    FalseInterruption,
    InterruptionConfirmed,
    InterruptionSuspected,
    ProviderFailed,
    ReplyFinished,
    ReplyInterrupted,
    ReplyStarted,
    SessionEnded,
    SessionStarted,
    ToolCallFinished,
    ToolCallStarted,
    TurnMetricsReady,
    UserTurnEnded,
    UserTurnStarted,
)
from agentkit.agent._mcp import MCPServer
from agentkit.agent._pipeline import StageTimeouts
from agentkit.agent._prompts import prompt
from agentkit.agent._reply import ReplyHandle, ReplyOutcome
from agentkit.agent._sentences import SentenceSplitter, split_sentences
from agentkit.agent._session import AgentSession
from agentkit.agent._tools import Tool, ToolError, tool

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentHandoff",
    "AgentSession",
    "DtmfReceived",
    "FalseInterruption",
    "InterruptionConfirmed",
    "InterruptionSuspected",
    "MCPServer",
    "ProviderFailed",
    "ReplyFinished",
    "ReplyHandle",
    "ReplyInterrupted",
    "ReplyOutcome",
    "ReplyStarted",
    "SentenceSplitter",
    "SessionEnded",
    "SessionStarted",
    "StageTimeouts",
    "Tool",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolError",
    "TurnMetricsReady",
    "UserTurnEnded",
    "UserTurnStarted",
    "end_call_tool",
    "prompt",
    "split_sentences",
    "tool",
    "transfer_call_tool",
]
