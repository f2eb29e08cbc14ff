"""GroqSTT and ElevenLabsTTS through their real SDKs against the loopback fakes of their APIs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentkit import Agent, Stream
from agentkit.audio import AudioFrame
from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers.stt import GroqSTT
from agentkit.providers.tts import ElevenLabsTTS
from agentkit.providers.tts._elevenlabs import PcmFramer
from agentkit.store import MemoryStore
from agentkit.testing import ScriptedLLM, ScriptedSTT, open_recorded_session, tone
from agentkit.testing.fakes import FakeElevenLabs, FakeGroq, Reply
from tests._cloud import KEY, isolate_cloud_env

FAST_S = 0.3
LSB = 1.0 / 32768.0  # one step of 16-bit PCM


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_cloud_env(monkeypatch, tmp_path)


@pytest.fixture
async def groq() -> AsyncIterator[FakeGroq]:
    async with FakeGroq(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def stt(groq: FakeGroq) -> AsyncIterator[GroqSTT]:
    provider = GroqSTT(language="en", api_key=KEY, base_url=groq.base_url, timeout_s=FAST_S)
    yield provider
    await provider.aclose()


@pytest.fixture
async def eleven() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def tts(eleven: FakeElevenLabs) -> AsyncIterator[ElevenLabsTTS]:
    provider = ElevenLabsTTS(voice_id="voice-1", api_key=KEY, base_url=eleven.base_url, timeout_s=FAST_S)
    yield provider
    await provider.aclose()


def turn_audio() -> AudioFrame:
    """0.6 s at 16 kHz: a tone, then a quieter, different one (so order and scale both matter)."""
    first, second = tone(300, 0.3, amplitude=0.5), tone(700, 0.3, amplitude=0.2)
    return AudioFrame(np.concatenate([first.samples, second.samples]), 16000)


# -- GroqSTT ------------------------------------------------------------------------------------------


async def test_transcribe_uploads_a_wav_of_the_turn(groq: FakeGroq, stt: GroqSTT) -> None:
    groq.push(Reply(text="  What's the weather in Paris?  "))
    audio = turn_audio()
    transcript = await stt.transcribe(audio)
    assert transcript.text == "What's the weather in Paris?"
    assert transcript.audio_s == pytest.approx(0.6)
    assert transcript.language == "en"
    request = groq.requests[0]
    assert request.path == "/openai/v1/audio/transcriptions"
    assert request.form == {
        "model": "whisper-large-v3-turbo",
        "language": "en",
        "response_format": "json",
        "temperature": "0.0",
    }
    upload = request.files["file"]
    assert upload.filename == "audio.wav"
    assert upload.content_type == "audio/wav"
    [heard] = groq.received_audio()
    assert heard.sample_rate == 16000
    assert heard.num_samples == audio.num_samples
    assert np.max(np.abs(heard.samples - audio.samples)) <= LSB


async def test_a_transcription_goes_out_in_a_few_writes_on_one_connection(
    groq: FakeGroq, stt: GroqSTT, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx streams a multipart form in about 25 pieces, each a socket write and a wait for a busy
    # event loop; the upload is read whole first: the headers, the body, done
    import httpcore._backends.anyio as httpcore_anyio  # the transport httpx uses on asyncio

    writes: list[int] = []
    original = httpcore_anyio.AnyIOStream.write

    async def counted(self: httpcore_anyio.AnyIOStream, buffer: bytes, **kwargs: Any) -> None:
        writes.append(len(buffer))
        await original(self, buffer, **kwargs)

    monkeypatch.setattr(httpcore_anyio.AnyIOStream, "write", counted)
    audio = turn_audio()
    for _ in range(3):
        writes.clear()
        assert (await stt.transcribe(audio)).text == "Hello! How can I help you today?"
        assert 1 <= len([n for n in writes if n]) <= 2
        assert sum(writes) > audio.num_samples * 2  # the WAV went out whole
    assert groq.connections_accepted == 1


async def test_empty_turn_is_not_sent(groq: FakeGroq, stt: GroqSTT) -> None:
    transcript = await stt.transcribe(AudioFrame.silence(0.0, 16000))
    assert transcript.text == ""
    assert transcript.audio_s == 0.0
    assert groq.requests == []


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (401, False), (400, False)])
async def test_transcription_errors_map_to_provider_errors(
    groq: FakeGroq, stt: GroqSTT, status: int, retryable: bool
) -> None:
    groq.push(Reply(status=status))
    with pytest.raises(ProviderError) as caught:
        await stt.transcribe(turn_audio())
    assert caught.value.retryable is retryable
    assert caught.value.context == {"provider": "groq", "status": status}


async def test_transcription_stall_times_out(groq: FakeGroq, stt: GroqSTT) -> None:
    groq.push(Reply(stall_before_s=5.0))
    async with asyncio.timeout(5):  # a guard against hanging, not a measurement
        with pytest.raises(ProviderTimeoutError):
            await stt.transcribe(turn_audio())


async def test_transcription_cut_is_a_retryable_error(groq: FakeGroq, stt: GroqSTT) -> None:
    groq.push(Reply(cut_after=0))
    with pytest.raises(ProviderError) as caught:
        await stt.transcribe(turn_audio())
    assert not isinstance(caught.value, ProviderTimeoutError)
    assert caught.value.retryable
    assert groq.requests[0].outcome == "cut"


async def test_stt_missing_key_names_the_variable() -> None:
    stt = GroqSTT()
    assert stt.sample_rate == 16000
    with pytest.raises(ConfigError, match="GROQ_API_KEY"):
        await stt.warm_up()


# -- ElevenLabsTTS ------------------------------------------------------------------------------------


async def test_synthesize_streams_the_pcm_as_frames(eleven: FakeElevenLabs, tts: ElevenLabsTTS) -> None:
    frames = [frame async for frame in tts.synthesize("Hello there, caller.")]
    assert len(frames) > 1  # streamed, not one block at the end
    assert all(f.sample_rate == 24000 and f.num_samples > 0 for f in frames)
    position = 0
    for frame in frames:
        assert frame.timestamp_samples == position
        position = frame.end_samples
    received = AudioFrame.concat(frames)
    [sent] = eleven.sent_audio
    assert received.num_samples == sent.num_samples == round(len("Hello there, caller.") * 0.06 * 24000)
    assert np.max(np.abs(received.samples - sent.samples)) <= LSB
    request = eleven.requests[0]
    assert request.path == "/v1/text-to-speech/voice-1/stream"
    assert request.query == {"output_format": "pcm_24000"}
    assert request.headers["xi-api-key"] == KEY
    assert request.json() == {"text": "Hello there, caller.", "model_id": "eleven_flash_v2_5"}


async def test_other_sample_rates_ask_for_their_pcm_format(eleven: FakeElevenLabs) -> None:
    voice = tone(440, 0.25, sample_rate=16000)
    eleven.push(Reply(audio=voice))
    tts = ElevenLabsTTS(
        api_key=KEY,
        base_url=eleven.base_url,
        sample_rate=16000,
        model="eleven_turbo_v2_5",
        language_code="de",
    )
    frames = [frame async for frame in tts.synthesize("Hi.")]
    await tts.aclose()
    assert eleven.requests[0].query["output_format"] == "pcm_16000"
    assert eleven.requests[0].json() == {
        "text": "Hi.",
        "model_id": "eleven_turbo_v2_5",
        "language_code": "de",
    }
    received = AudioFrame.concat(frames)
    assert received.sample_rate == tts.sample_rate == 16000
    assert np.max(np.abs(received.samples - voice.samples)) <= LSB


async def test_an_agent_asks_elevenlabs_for_its_calls_output_rate(
    eleven: FakeElevenLabs, models_dir: object
) -> None:
    """`at_sample_rate`: a phone call (8 kHz out) gets `pcm_8000` from ElevenLabs and plays it as it
    came, a 16 kHz call `pcm_16000`; the configured provider and its client serve both. A call that
    plays above the configured rate (WebRTC's 48 kHz) keeps it (a higher one may need a higher plan)."""
    tts = ElevenLabsTTS(voice_id="voice-1", api_key=KEY, base_url=eleven.base_url)
    assert tts.at_sample_rate(24000) is tts and tts.at_sample_rate(11025) is None
    phone = tts.at_sample_rate(8000)
    assert phone is not None and (phone.sample_rate, phone.output_format) == (8000, "pcm_8000")
    assert tts.sample_rate == 24000  # unchanged
    agent = Agent(
        stt=ScriptedSTT("Hello."), llm=ScriptedLLM("Hi."), tts=tts, greeting="Welcome.", store=MemoryStore()
    )
    played: dict[int, np.ndarray] = {}
    for rate in (8000, 16000, 48000):
        session, transport = open_recorded_session(Stream(agent), output_sample_rate=rate)
        await session.start()
        try:
            await transport.wait_for("response_done", timeout_s=10)  # the greeting
        finally:
            await session.close()
        played[rate] = np.concatenate([sent.samples for sent in transport.audio])
    await agent.aclose()
    assert [r.query["output_format"] for r in eleven.requests] == ["pcm_8000", "pcm_16000", "pcm_24000"]
    assert [a.sample_rate for a in eleven.sent_audio] == [8000, 16000, 24000]
    assert played[48000].shape[0] == pytest.approx(eleven.sent_audio[2].samples.shape[0] * 2, abs=480)
    for rate, sent in zip((8000, 16000), eleven.sent_audio, strict=False):
        # played as it came, not resampled: the same samples, as long as ElevenLabs sent
        assert played[rate].shape == sent.samples.shape
        assert np.max(np.abs(played[rate] - sent.samples)) <= 2 * LSB
    # as much audio either way: the rate changed, not the speech
    assert eleven.sent_audio[0].duration_s == pytest.approx(eleven.sent_audio[1].duration_s, abs=0.01)


async def test_consecutive_syntheses_keep_one_connection(eleven: FakeElevenLabs, tts: ElevenLabsTTS) -> None:
    for text in ("One.", "Two.", "Three."):
        assert [frame async for frame in tts.synthesize(text)]
    assert eleven.connections_accepted == 1
    assert [r.outcome for r in eleven.requests] == ["completed"] * 3


async def test_blank_text_sends_nothing(eleven: FakeElevenLabs, tts: ElevenLabsTTS) -> None:
    assert [frame async for frame in tts.synthesize("  \n")] == []
    assert eleven.requests == []


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (401, False), (404, False)])
async def test_tts_errors_map_to_provider_errors(
    eleven: FakeElevenLabs, tts: ElevenLabsTTS, status: int, retryable: bool
) -> None:
    eleven.push(Reply(status=status))
    with pytest.raises(ProviderError) as caught:
        _ = [frame async for frame in tts.synthesize("Hello.")]
    assert caught.value.retryable is retryable
    assert caught.value.context == {"provider": "elevenlabs", "status": status}


async def test_tts_wrong_key_is_refused(eleven: FakeElevenLabs) -> None:
    tts = ElevenLabsTTS(api_key="wrong", base_url=eleven.base_url, timeout_s=FAST_S)
    with pytest.raises(ProviderError, match="check the API key"):
        _ = [frame async for frame in tts.synthesize("Hello.")]
    await tts.aclose()


@pytest.mark.parametrize("reply", [Reply(stall_before_s=5.0), Reply(stall_after=2, stall_s=5.0)])
async def test_tts_stalls_time_out(eleven: FakeElevenLabs, tts: ElevenLabsTTS, reply: Reply) -> None:
    eleven.push(reply)
    async with asyncio.timeout(5):
        with pytest.raises(ProviderTimeoutError):
            _ = [frame async for frame in tts.synthesize("A sentence long enough for several chunks.")]


async def test_tts_cut_stream_is_a_retryable_error(eleven: FakeElevenLabs, tts: ElevenLabsTTS) -> None:
    eleven.push(Reply(cut_after=3))
    with pytest.raises(ProviderError) as caught:
        _ = [frame async for frame in tts.synthesize("A sentence long enough for several chunks.")]
    assert caught.value.retryable
    assert not isinstance(caught.value, ProviderTimeoutError)


async def test_closing_synthesis_early_hangs_up_on_the_server(
    eleven: FakeElevenLabs, tts: ElevenLabsTTS
) -> None:
    eleven.push(Reply(chunk_delay_s=0.02))
    stream = tts.synthesize("A long sentence that the caller is about to interrupt, rather rudely.")
    first = await anext(stream)
    await stream.aclose()
    assert first.num_samples > 0
    await eleven.wait_idle()
    request = eleven.requests[0]
    assert request.outcome == "disconnected"
    assert request.chunks_sent < len(eleven.sent_audio[0].samples) // 2400


async def test_tts_missing_key_names_the_variable() -> None:
    tts = ElevenLabsTTS()
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        await tts.warm_up()


def test_tts_refuses_unsupported_sample_rates() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        ElevenLabsTTS(sample_rate=11025)
    with pytest.raises(ValueError, match="voice_id"):
        ElevenLabsTTS(voice_id="")


def test_pcm_framer_carries_an_odd_byte_to_the_next_chunk() -> None:
    samples = np.array([1000, -2000, 3000, -4000, 32767], dtype="<i2")
    data = samples.tobytes()
    framer = PcmFramer(24000)
    frames = [framer.push(piece) for piece in (data[:1], data[1:5], data[5:])]
    assert frames[0] is None  # half a sample: held back
    assert framer.leftover_bytes == 0
    kept = [f for f in frames if f is not None]
    assert [f.num_samples for f in kept] == [2, 3]
    assert [f.timestamp_samples for f in kept] == [0, 2]
    expected = (samples.astype(np.float32) / 32768.0).tolist()
    assert np.concatenate([f.samples for f in kept]).tolist() == expected
    assert framer.push(b"\x01") is None
    assert framer.leftover_bytes == 1
