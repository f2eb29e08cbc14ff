"""Round trips through whole agents on the real local models: a question spoken by Kokoro is heard
by Moonshine, answered (scripted words, SmolLM2, or Claude through the Anthropic SDK and its fake),
spoken by Kokoro, and the reply audio, transcribed back by Moonshine, holds the expected words."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import pytest
from _cloud import KEY, isolate_cloud_env
from conftest import REPO

from agentkit import Agent
from agentkit._talk import TalkResult, talk
from agentkit.audio import AudioFrame
from agentkit.providers import KokoroTTS, LocalLLM, MoonshineSTT
from agentkit.testing import ScriptedLLM
from agentkit.testing.fakes import FakeAnthropic, Reply

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.fixture(scope="module")
def question() -> AudioFrame:
    async def speak() -> AudioFrame:
        voice = KokoroTTS(voice="am_michael")
        return AudioFrame.concat([frame async for frame in voice.synthesize(QUESTION)])

    return asyncio.run(speak())


async def transcribe(audio: AudioFrame) -> str:
    from agentkit.audio import StreamingResampler

    stt = MoonshineSTT("tiny")
    await stt.warm_up()
    samples = StreamingResampler(audio.sample_rate, 16000).process(audio.samples, last=True)
    return (await stt.transcribe(AudioFrame(samples, 16000))).text


def load_agent_class(path: Path, name: str) -> type[Agent]:
    spec = importlib.util.spec_from_file_location(f"test_{path.stem}_agent", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    agent: type[Agent] = getattr(module, name)
    return agent


async def test_scripted_words_come_back_through_kokoro_and_moonshine(
    question: AudioFrame, models_dir: object
) -> None:
    local = load_agent_class(REPO / "agents" / "local.py", "Local")
    agent = local(greeting=None, llm=ScriptedLLM("The capital of France is Paris."))
    result = await talk(agent, [question])
    assert result.lines[0][0] == "you" and {"capital", "france"} <= set(words(result.lines[0][1]))
    assert result.lines[1] == ("agent", "The capital of France is Paris.")
    assert result.reply_audio is not None
    heard = words(await transcribe(result.reply_audio))
    assert {"capital", "france", "paris"} <= set(heard), heard
    metrics = result.metrics[0]
    assert (
        metrics.stt_ms is not None
        and metrics.tts_ttfa_ms is not None
        and metrics.voice_to_voice_ms is not None
    )


async def test_the_default_local_agent_answers_out_loud(question: AudioFrame, models_dir: object) -> None:
    """SmolLM2's words are not predictable; what it says must be what is heard."""
    local = load_agent_class(REPO / "agents" / "local.py", "Local")
    agent = local(greeting=None)
    assert isinstance(agent.llm_provider, LocalLLM)
    result: TalkResult = await talk(agent, [question])
    reply = result.lines[-1]
    assert reply[0] == "agent" and reply[1].strip()
    assert result.reply_audio is not None
    said, heard = set(words(reply[1])), set(words(await transcribe(result.reply_audio)))
    assert len(said & heard) >= 0.5 * len(said), (reply[1], heard)
    usage = result.metrics[0]
    assert usage.output_tokens and usage.input_tokens and usage.llm_ttft_ms is not None


async def test_claude_agent_file_through_the_anthropic_sdk(
    question: AudioFrame, models_dir: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_cloud_env(monkeypatch, tmp_path)
    async with FakeAnthropic(api_key=KEY) as fake:
        fake.push(Reply(text="Paris is the capital of France. Anything else?", chunk_delay_s=0.01))
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        claude = load_agent_class(REPO / "agents" / "claude.py", "Claude")
        result = await talk(claude(), [question])
        await fake.wait_idle()
    assert [who for who, _ in result.lines] == ["agent", "you", "agent"]
    assert result.lines[0][1] == "Hi, I'm Claude. What can I do for you?"
    assert result.lines[2][1] == "Paris is the capital of France. Anything else?"
    body = fake.requests[0].json()
    assert body["system"] == (REPO / "prompts" / "claude.md").read_text().strip()
    assert body["stream"] is True
    roles = [m["role"] for m in body["messages"]]
    assert roles[-1] == "user" and "france" in words(str(body["messages"][-1]["content"]))
    assert result.metrics[0].output_tokens is not None
