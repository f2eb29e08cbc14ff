"""Every provider lets go of what it holds on `aclose()`, safely twice; the scripted fakes keep bounded
records.

The cloud providers run through their real SDKs against the loopback fakes of their APIs: closing one
closes its SDK client, which hangs up the kept-alive connection the fake still holds.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentkit.audio import AudioFrame
from agentkit.exceptions import ProviderError
from agentkit.providers.llm import AnthropicLLM, ChatMessage, GroqLLM, LocalLLM
from agentkit.providers.stt import GroqSTT, MoonshineSTT
from agentkit.providers.tts import ElevenLabsTTS, KokoroTTS
from agentkit.providers.vad import SileroVAD
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, tone
from agentkit.testing.fakes import FakeAnthropic, FakeElevenLabs, FakeGroq, FakeServer
from tests._cloud import KEY, isolate_cloud_env

FAST_S = 0.3
HISTORY = [ChatMessage("user", "Hello?")]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_cloud_env(monkeypatch, tmp_path)


async def _chat(provider: Any) -> object:
    return [chunk async for chunk in provider.stream(HISTORY, instructions="Be brief.")]


async def _listen(provider: Any) -> object:
    return await provider.transcribe(tone(440, 0.5, amplitude=0.3))


async def _speak(provider: Any) -> object:
    return [frame async for frame in provider.synthesize("Hello there.")]


@dataclass(frozen=True)
class Cloud:
    fake: type[FakeServer]
    make: Callable[[str], Any]
    """The provider, given the fake's base URL."""
    use: Callable[[Any], Awaitable[object]]
    """One call through the provider."""
    sdk_client: bool = True
    """The provider's client is the SDK's own (`AsyncAnthropic`, `AsyncGroq`), with `is_closed()`."""


CLOUDS = {
    "anthropic-llm": Cloud(
        FakeAnthropic, lambda url: AnthropicLLM(api_key=KEY, base_url=url, timeout_s=FAST_S), _chat
    ),
    "groq-llm": Cloud(FakeGroq, lambda url: GroqLLM(api_key=KEY, base_url=url, timeout_s=FAST_S), _chat),
    "groq-stt": Cloud(FakeGroq, lambda url: GroqSTT(api_key=KEY, base_url=url, timeout_s=FAST_S), _listen),
    "elevenlabs-tts": Cloud(
        FakeElevenLabs,
        lambda url: ElevenLabsTTS(voice_id="voice-1", api_key=KEY, base_url=url, timeout_s=FAST_S),
        _speak,
        sdk_client=False,  # the SDK client wraps an httpx client of ours, which aclose() closes
    ),
}


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  # the fake's state has no event to wait on
            await asyncio.sleep(0.01)


# -- cloud providers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLOUDS))
async def test_aclose_closes_the_sdk_client_and_hangs_up(name: str) -> None:
    cloud = CLOUDS[name]
    async with cloud.fake(api_key=KEY) as fake:
        provider = cloud.make(fake.base_url)
        await cloud.use(provider)
        client = provider._client.get()
        assert fake.open_connections == 1  # kept alive in the SDK's pool for the next call
        await provider.aclose()
        await _until(lambda: fake.open_connections == 0)
        if cloud.sdk_client:
            assert client.is_closed()
        await provider.aclose()  # a second time is fine


@pytest.mark.parametrize("name", sorted(CLOUDS))
async def test_aclose_before_any_call_needs_no_key_and_no_server(name: str) -> None:
    provider = CLOUDS[name].make("http://127.0.0.1:9")  # discard port: nothing answers
    await provider.aclose()
    await provider.aclose()


@pytest.mark.parametrize("name", sorted(CLOUDS))
async def test_a_call_after_aclose_opens_a_new_client(name: str) -> None:
    cloud = CLOUDS[name]
    async with cloud.fake(api_key=KEY) as fake:
        provider = cloud.make(fake.base_url)
        await cloud.use(provider)
        first = provider._client.get()
        await provider.aclose()
        await cloud.use(provider)
        assert provider._client.get() is not first
        await provider.aclose()
        await _until(lambda: fake.open_connections == 0)
    assert len(fake.requests) == 2


# -- local providers ---------------------------------------------------------------------------------


def _llm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("agentkit-llm")]


@pytest.mark.slow
async def test_local_llm_aclose_stops_its_generation_and_the_llm_thread() -> None:
    # LocalLLMs that other tests left behind let go of the shared thread. What else this collects
    # is theirs: a cloud client some earlier test did not close now keeps its idle connection (the
    # providers reuse connections), and its socket's ResourceWarning is not this test's failure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    llm = LocalLLM(temperature=0.8, max_tokens=400, seed=3)
    stream = llm.stream([ChatMessage("user", "Count from one to two hundred.")], instructions="")
    await anext(stream)
    assert len(_llm_threads()) == 1
    await llm.aclose()
    assert _llm_threads() == []  # joined by the time aclose returns
    with pytest.raises(ProviderError, match="closed"):  # a stream still being read learns why it ends
        async for _ in stream:
            pass
    await llm.aclose()  # a second time is fine

    again = [c async for c in llm.stream([ChatMessage("user", "Say hello.")], instructions="")]
    assert again[-1].usage is not None  # a later call starts the thread again
    await llm.aclose()
    assert _llm_threads() == []


@pytest.mark.slow
async def test_local_llm_aclose_without_a_call_is_fine() -> None:
    llm = LocalLLM()
    await llm.aclose()
    await llm.aclose()


@pytest.mark.slow
async def test_onnx_providers_close_and_keep_the_shared_models(models_dir: Path) -> None:
    vad = SileroVAD()
    before = vad.stream()
    await vad.aclose()
    await vad.aclose()
    chunk = tone(440, 512 / 16000).samples
    assert 0.0 <= before.probability(chunk) <= 1.0  # a stream made before keeps working
    assert 0.0 <= vad.stream().probability(chunk) <= 1.0  # the shared session is still loaded

    stt, tts = MoonshineSTT(), KokoroTTS()
    for provider in (stt, tts):
        await provider.aclose()
        await provider.aclose()


# -- the scripted fakes ------------------------------------------------------------------------------


async def test_scripted_fakes_close_trivially() -> None:
    for provider in (ScriptedSTT(), ScriptedLLM(), ToneTTS()):
        assert not provider.closed
        await provider.aclose()
        await provider.aclose()
        assert provider.closed


def _audio(seconds: float) -> AudioFrame:
    return tone(300, seconds)


async def test_scripted_fakes_keep_only_the_last_calls() -> None:
    stt = ScriptedSTT("one", "two", "three", keep=2)
    texts = [(await stt.transcribe(_audio(0.1 * n))).text for n in range(1, 5)]
    assert texts == ["one", "two", "three", "three"]  # the script goes on past what is kept
    assert [round(a.duration_s, 2) for a in stt.heard] == [0.3, 0.4]
    assert stt.call_count == 4

    llm = ScriptedLLM("A.", "B.")
    for n in range(40):
        [_ async for _ in llm.stream([ChatMessage("user", f"turn {n}")], instructions="")]
    assert len(llm.calls) == llm.keep == 32 and llm.call_count == 40
    assert llm.calls[0].messages == (ChatMessage("user", "turn 8"),)  # oldest kept first

    tts = ToneTTS(keep=0)
    frames = [[f async for f in tts.synthesize(text)] for text in ("Hi.", "Hi.")]
    assert tts.texts == [] and tts.call_count == 2
    assert frames[0][0].samples.tolist() != frames[1][0].samples.tolist()  # pitches still take turns

    everything = ToneTTS(keep=None)
    for n in range(40):
        [_ async for _ in everything.synthesize(f"{n}.")]
    assert len(everything.texts) == 40


def test_keep_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="keep"):
        ScriptedSTT(keep=-1)
