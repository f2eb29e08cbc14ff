"""Claude on a voice call: Moonshine hears, Claude thinks, Kokoro speaks.

    ANTHROPIC_API_KEY=... agentkit run agents/claude.py

Cloud speech instead of local, chosen by environment variables:
- `AGENTKIT_CLAUDE_STT=groq`: Groq Whisper (`GROQ_API_KEY`);
- `AGENTKIT_CLAUDE_TTS=elevenlabs`: ElevenLabs (`ELEVENLABS_API_KEY`; `AGENTKIT_CLAUDE_VOICE_ID` picks
  the voice).
"""

import os
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentkit import Agent, ToolError, end_call_tool, prompt, tool
from agentkit.providers import AnthropicLLM, ElevenLabsTTS, GroqSTT, KokoroTTS, MoonshineSTT

GROQ_STT = os.environ.get("AGENTKIT_CLAUDE_STT") == "groq"
ELEVENLABS_TTS = os.environ.get("AGENTKIT_CLAUDE_TTS") == "elevenlabs"
ELEVENLABS_VOICE = os.environ.get("AGENTKIT_CLAUDE_VOICE_ID", "JBFqnCBsd6RMkjVDRZzb")  # a premade voice


class Claude(Agent):
    instructions = prompt("claude")
    greeting = "Hi, I'm Claude. What can I do for you?"
    stt = GroqSTT("whisper-large-v3-turbo") if GROQ_STT else MoonshineSTT("tiny")
    llm = AnthropicLLM("claude-haiku-4-5", max_tokens=300)
    tts = ElevenLabsTTS(voice_id=ELEVENLABS_VOICE) if ELEVENLABS_TTS else KokoroTTS(voice="af_heart")
    partial_transcripts = not GROQ_STT  # live captions from local STT; not worth a cloud call each time
    tools = (end_call_tool("Thanks for calling. Goodbye!"),)

    @tool
    def current_time(self, timezone: str = "UTC") -> str:
        """The current date and time, to answer "what time is it" (never guess it).

        Args:
            timezone: An IANA time zone such as Europe/Paris or America/New_York.
        """
        try:
            now = datetime.now(ZoneInfo(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris") from None
        return now.strftime("%A %d %B %Y, %H:%M %Z")
