"""The local providers on real models: Kokoro speaks, Moonshine listens, SmolLM2 replies.

The models are loaded once per process (the providers share them), so the file stays fast; the
round trips check words, not timings.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest

from agentkit._executor import run_audio_job, run_model_job
from agentkit.audio import AudioFrame, StreamingResampler
from agentkit.exceptions import AudioFormatError, ConfigError, ModelNotFoundError
from agentkit.providers.llm import ChatMessage, LLMChunk, LocalLLM
from agentkit.providers.stt import MoonshineSTT
from agentkit.providers.stt._moonshine import _pieces
from agentkit.providers.tts import KokoroTTS
from agentkit.providers.tts._kokoro import split_phonemes
from tests.conftest import speech

pytestmark = pytest.mark.slow


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


async def speak(tts: KokoroTTS, text: str) -> tuple[list[AudioFrame], AudioFrame]:
    """Kokoro's frames for `text`, and the whole of them at 16 kHz for Moonshine."""
    frames = [frame async for frame in tts.synthesize(text)]
    assert frames, text
    joined = AudioFrame.concat(frames)
    resampled = StreamingResampler(joined.sample_rate, 16000).process(joined.samples, last=True)
    return frames, AudioFrame(resampled, 16000)


@pytest.fixture(scope="module")
def stt(models_dir: object) -> MoonshineSTT:
    return MoonshineSTT("tiny")


# -- Kokoro -> Moonshine ----------------------------------------------------------------------------


async def test_kokoro_sentence_reads_back_through_moonshine(stt: MoonshineSTT) -> None:
    tts = KokoroTTS()
    await tts.warm_up()
    await stt.warm_up()
    frames, audio = await speak(tts, "The quick brown fox jumps over the lazy dog.")

    assert all(f.sample_rate == tts.sample_rate == 24000 for f in frames)
    assert all(f.num_samples <= 2400 for f in frames)  # yielded in 100 ms pieces
    assert [f.timestamp_samples for f in frames] == [0, *np.cumsum([f.num_samples for f in frames[:-1]])]
    assert 1.5 < audio.duration_s < 6.0
    assert float(np.sqrt(np.mean(audio.samples**2))) > 0.01

    transcript = await stt.transcribe(audio)
    assert {"quick", "brown", "fox", "jumps", "lazy", "dog"} <= set(words(transcript.text))
    assert transcript.audio_s == pytest.approx(audio.duration_s)


@pytest.mark.parametrize("voice", ["af_heart", "am_michael", "bf_emma", "bm_george"])
async def test_voices_speak_intelligibly(stt: MoonshineSTT, voice: str) -> None:
    tts = KokoroTTS(voice=voice)
    assert tts.name == f"kokoro/{voice}"
    _, audio = await speak(tts, "Please call me tomorrow morning.")
    heard = set(words((await stt.transcribe(audio)).text))
    assert {"call", "tomorrow", "morning"} <= heard, (voice, heard)


async def test_two_sessions_synthesising_at_once_both_get_their_sentence(stt: MoonshineSTT) -> None:
    first, second = KokoroTTS(voice="af_bella"), KokoroTTS(voice="am_adam", speed=1.1)
    (_, audio_a), (_, audio_b) = await asyncio.gather(
        speak(first, "My sister plays the piano every evening."),
        speak(second, "The train leaves at nine o'clock."),
    )
    text_a, text_b = await asyncio.gather(stt.transcribe(audio_a), stt.transcribe(audio_b))
    heard_a, heard_b = set(words(text_a.text)), set(words(text_b.text))
    assert {"sister", "piano", "evening"} <= heard_a
    assert {"train", "leaves", "nine"} <= heard_b
    assert "piano" not in heard_b and "train" not in heard_a  # no mixing between the two


async def test_kokoro_threads_stop_spinning_when_a_piece_is_done() -> None:
    """Its intra-op threads spin within a run only: a finished piece leaves no CPU burning."""
    tts = KokoroTTS()
    [frame async for frame in tts.synthesize("Spinning stops here.")]
    idle_from = time.process_time()
    await asyncio.sleep(0.3)
    assert time.process_time() - idle_from < 0.01  # ~0.04 s with the threads left spinning


async def test_unknown_voice_is_a_config_error_naming_real_ones() -> None:
    tts = KokoroTTS(voice="zz_nobody")
    with pytest.raises(ConfigError, match="zz_nobody") as caught:
        await tts.warm_up()
    assert re.search(r"\b[ab][fm]_[a-z]+", caught.value.message)
    with pytest.raises(ConfigError):
        async for _ in tts.synthesize("Hello there."):
            pass


async def test_unknown_language_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="xx-yy"):
        await KokoroTTS(lang="xx-yy").warm_up()
    assert [f async for f in KokoroTTS(lang="en-gb").synthesize("Hello.")]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
async def test_empty_text_yields_nothing(text: str) -> None:
    assert [f async for f in KokoroTTS().synthesize(text)] == []


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigError):
        KokoroTTS(speed=3.0)
    with pytest.raises(ConfigError):
        KokoroTTS(threads=0)
    with pytest.raises(ConfigError):
        MoonshineSTT("huge")


async def test_closing_synthesis_early_stops_it() -> None:
    tts = KokoroTTS()
    stream = tts.synthesize("One, two, three, four, five.")
    first = await anext(stream)
    await stream.aclose()  # what the agent does on barge-in
    assert first.num_samples > 0
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert [f async for f in tts.synthesize("Six.")]  # the shared model is still usable


def test_long_text_is_split_at_clauses_into_growing_batches() -> None:
    clause = "ðə kwˈɪk bɹˈaʊn fˈɑːks dʒˈʌmps ˌoʊvɚ ðə lˈeɪzi dˈɑːɡ"  # 52 phonemes
    text = ", ".join([clause] * 12) + "."
    batches = split_phonemes(text)
    assert len(batches) > 2
    assert " ".join(batches) == " ".join(text.split())  # nothing lost, nothing added
    assert len(batches[0]) <= 100
    assert all(len(b) <= 300 for b in batches)
    assert all(b.endswith((",", ".")) for b in batches)  # cut only after marks
    assert split_phonemes(clause) == [clause]  # short text: one batch
    assert split_phonemes("  ") == []
    one_long_clause = " ".join(["wˈɜːd"] * 120)  # no marks at all: cut between words
    assert all(len(b) <= 300 and not b.startswith(" ") for b in split_phonemes(one_long_clause))


# -- Moonshine on its own ---------------------------------------------------------------------------


async def test_moonshine_transcribes_a_recording(stt: MoonshineSTT) -> None:
    transcript = await stt.transcribe(speech("utt2"))
    assert {"table", "two", "people", "seven", "thirty"} <= set(words(transcript.text))
    assert transcript.language == "en"


async def test_silence_and_very_short_audio_give_empty_transcripts(stt: MoonshineSTT) -> None:
    rng = np.random.default_rng(1)
    quiet_noise = (rng.standard_normal(16000) * 3e-4).astype(np.float32)
    word = speech("utt2").samples
    for audio in (
        AudioFrame.silence(2.0, 16000),
        AudioFrame(quiet_noise, 16000),
        AudioFrame(word[8000:11000], 16000),  # under a quarter of a second
        AudioFrame(np.zeros(0, np.float32), 16000),
    ):
        transcript = await stt.transcribe(audio)
        assert transcript.text == ""
        assert transcript.audio_s == pytest.approx(audio.duration_s)


async def test_moonshine_wants_16khz(stt: MoonshineSTT) -> None:
    with pytest.raises(AudioFormatError):
        await stt.transcribe(AudioFrame.silence(1.0, 24000))


async def test_audio_over_thirty_seconds_is_transcribed_in_pieces(stt: MoonshineSTT) -> None:
    utterance = speech("utt2").samples
    gap = np.zeros(8000, np.float32)
    long_audio = np.concatenate([utterance, gap] * 10)  # about 37 s
    pieces = _pieces(long_audio)
    assert len(pieces) == 2
    assert all(p.shape[0] <= 28 * 16000 for p in pieces)
    assert sum(p.shape[0] for p in pieces) == long_audio.shape[0]
    assert float(np.abs(pieces[1][:400]).max()) < 0.01  # cut in a pause, not inside a word

    transcript = await stt.transcribe(AudioFrame(long_audio, 16000))
    assert words(transcript.text).count("table") >= 9


# -- the executors ----------------------------------------------------------------------------------


async def test_model_jobs_do_not_hold_up_audio_jobs() -> None:
    release = threading.Event()
    names: list[str] = []

    def busy_model() -> str:
        names.append(threading.current_thread().name)
        release.wait(10)
        return "model done"

    model_job = asyncio.ensure_future(run_model_job(busy_model))
    try:
        audio_thread = await run_audio_job(lambda: threading.current_thread().name)
        assert audio_thread.startswith("agentkit-audio")
        assert not model_job.done()  # the audio job finished while the model job was still busy
    finally:
        release.set()
    assert await model_job == "model done"
    assert names[0].startswith("agentkit-model")


# -- SmolLM2 through llama.cpp ----------------------------------------------------------------------


def _instance(n_ctx: int) -> tuple[object, threading.Lock]:
    """The shared llama.cpp instance (and its lock) of that context size."""
    [instance] = [v for k, v in LocalLLM._instances.items() if k[1] == n_ctx]
    return instance


async def test_local_llm_streams_a_reply_with_usage() -> None:
    llm = LocalLLM(temperature=0.0, max_tokens=48, seed=7)
    await llm.warm_up()
    history = [
        ChatMessage("user", "My name is Anna."),
        ChatMessage("assistant", "Nice to meet you, Anna."),
        ChatMessage("user", "What is the capital of France?"),
    ]
    chunks = [c async for c in llm.stream(history, instructions="You are a helpful assistant. Be brief.")]
    text = "".join(c.text for c in chunks)
    assert text.strip()  # what a 135M model says is not checked, only that it says something
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    usage = chunks[-1].usage
    assert usage is not None
    assert 30 < usage.input_tokens < 200
    assert 0 < usage.output_tokens <= 48


async def test_usage_counts_every_token_when_the_reply_hits_max_tokens() -> None:
    llm = LocalLLM(temperature=0.0, max_tokens=6)
    chunks = [
        c
        async for c in llm.stream(
            [ChatMessage("user", "Write a long story about a dragon.")], instructions=""
        )
    ]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.output_tokens == 6
    assert sum(1 for c in chunks if c.text) <= 6


async def test_closing_the_stream_stops_generation_and_the_next_call_works() -> None:
    llm = LocalLLM(temperature=0.8, max_tokens=400, seed=3)
    prompt = [ChatMessage("user", "Count from one to two hundred, one number per line.")]
    stream = llm.stream(prompt, instructions="")
    received: list[LLMChunk] = []
    async for chunk in stream:
        received.append(chunk)
        if len(received) == 3:
            break
    await stream.aclose()  # what the agent does on barge-in
    llama, lock = _instance(2048)
    assert not lock.locked()  # the generation has ended by the time aclose returns
    assert int(llama.n_tokens) < 200  # type: ignore[attr-defined]  # it did not run on to max_tokens
    assert sum(t.name.startswith("agentkit-llm") for t in threading.enumerate()) == 1  # no thread leaked

    again = [c async for c in llm.stream([ChatMessage("user", "Say hello.")], instructions="Be brief.")]
    assert "".join(c.text for c in again).strip()
    assert again[-1].usage is not None


async def test_a_stream_waiting_for_the_model_closes_without_waiting_for_the_other() -> None:
    llm = LocalLLM(temperature=0.8, max_tokens=400, seed=5)
    talking = llm.stream([ChatMessage("user", "Count from one to two hundred.")], instructions="")
    await anext(talking)
    # `talking` is not read on: its worker pauses once the queue is full, still holding the model.
    waiting = asyncio.ensure_future(
        anext(llm.stream([ChatMessage("user", "Hi.")], instructions=""))  # queued behind it
    )
    for _ in range(5):
        await asyncio.sleep(0)
    waiting.cancel()  # the caller of the second session hangs up
    with pytest.raises(asyncio.CancelledError):
        await waiting
    _, lock = _instance(2048)
    assert lock.locked()  # the first generation is still under way: the second did not wait for it
    await talking.aclose()
    assert not lock.locked()


async def test_long_history_is_trimmed_to_fit_the_context() -> None:
    llm = LocalLLM(temperature=0.0, max_tokens=16, n_ctx=256)
    history = [ChatMessage("user" if i % 2 == 0 else "assistant", "blah " * 40) for i in range(20)]
    history.append(ChatMessage("user", "Say yes."))
    chunks = [c async for c in llm.stream(history, instructions="Answer in one word.")]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.input_tokens <= 256 - 16


async def test_local_llm_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        LocalLLM("gpt-17")
    with pytest.raises(ConfigError):
        LocalLLM(max_tokens=4096, n_ctx=2048)
    missing = LocalLLM(model_path="/nonexistent/model.gguf")
    with pytest.raises(ModelNotFoundError):
        await missing.warm_up()
    with pytest.raises(ModelNotFoundError):
        async for _ in missing.stream([ChatMessage("user", "hi")], instructions=""):
            pass
