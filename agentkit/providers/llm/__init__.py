"""Chat LLMs: the `LLM` Protocol and its providers."""

from agentkit.providers.llm._anthropic import AnthropicLLM
from agentkit.providers.llm._base import (
    LLM,
    ChatMessage,
    LLMChunk,
    LLMUsage,
    Role,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from agentkit.providers.llm._groq import GroqLLM
from agentkit.providers.llm._local import LocalLLM

__all__ = [
    "LLM",
    "AnthropicLLM",
    "ChatMessage",
    "GroqLLM",
    "LLMChunk",
    "LLMUsage",
    "LocalLLM",
    "Role",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
]
