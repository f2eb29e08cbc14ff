"""`self.session`, the handle agent code holds on a call: `say`, `generate_reply`, `interrupt`,
`events()`, and the stages an agent may wrap (`stt_node`, `tts_node`), each through a real session
(real Silero turn-taking on recorded speech, scripted STT/LLM, tone TTS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_agent import Helper, feed, make_agent, start, utterance

from agentkit.agent import (
    Agent,
    AgentEvent,
    ReplyFinished,
    ReplyStarted,
    SessionEnded,
    SessionStarted,
    TurnMetricsReady,
    UserTurnEnded,
    UserTurnStarted,
)
from agentkit.agent._event_log import EventLog
from agentkit.agent._recorder import Recorder
from agentkit.audio import AudioFrame
from agentkit.exceptions import ConfigError
from agentkit.providers.llm import ChatMessage
from agentkit.store import MemoryStore
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

pytestmark = pytest.mark.usefixtures("models_dir")


async def test_say_speaks_and_records_the_words() -> None:
    tts = ToneTTS(ms_per_char=5)
    session, transport, agent = await start(make_agent(tts=tts))
    try:
        outcome = await asyncio.wait_for(agent.session.say("Hello there. How are you today?"), 10)
        history = agent.session.history
    finally:
        await session.close()
    assert outcome.text == "Hello there. How are you today?" and not outcome.interrupted
    assert outcome.audio_s == pytest.approx(sum(tts.duration_s(t) for t in tts.texts), abs=0.01)
    assert tts.texts == ["Hello there.", "How are you today?"]
    assert history == [ChatMessage("assistant", "Hello there. How are you today?")]
    types = transport.event_types()
    assert types.index("response_starting") < types.index("response_done") < types.index("transcript")


async def test_replies_take_the_floor_in_turn() -> None:
    """The greeting is still playing when agent code says two more things: they follow it, in order."""
    tts = ToneTTS(ms_per_char=5)
    agent = make_agent(tts=tts)
    agent.greeting = "Welcome."
    session, transport, handler = await start(agent)
    try:
        first = handler.session.say("First thing.")
        second = handler.session.say("Second thing.")
        assert not first.done() and first.outcome is None
        await asyncio.wait_for(second, 10)
        assert first.done() and first.outcome is not None and first.outcome.text == "First thing."
        history = handler.session.history
    finally:
        await session.close()
    assert [m.text for m in history] == ["Welcome.", "First thing.", "Second thing."]
    assert len(transport.events_of("response_done")) == 3


async def test_generate_reply_runs_the_llm_with_extra_instructions_for_that_reply_only() -> None:
    llm = ScriptedLLM("Could I have your order number?", "It is on its way.")
    session, transport, agent = await start(make_agent(llm=llm, tts=ToneTTS(ms_per_char=5)))
    try:
        await feed(session, utterance())  # "What time is it?" -> the first scripted reply
        await transport.wait_for("metrics", timeout_s=10)
        outcome = await asyncio.wait_for(
            agent.session.generate_reply(instructions="Tell them their order has shipped."), 10
        )
        history = agent.session.history
    finally:
        await session.close()
    assert outcome.text == "It is on its way." and not outcome.interrupted
    assert llm.calls[0].instructions == "Be brief."
    assert llm.calls[1].instructions == "Be brief.\n\nTell them their order has shipped."
    assert llm.calls[1].messages == (
        ChatMessage("user", "What time is it?"),
        ChatMessage("assistant", "Could I have your order number?"),
    )
    assert history[-1] == ChatMessage("assistant", "It is on its way.")


async def test_interrupt_keeps_what_was_heard_and_drops_what_waits() -> None:
    tts = ToneTTS(ms_per_char=40)
    session, transport, agent = await start(make_agent(tts=tts))
    text = "This is a long announcement that nobody will hear to the end. " * 3
    try:
        speaking = agent.session.say(text)
        waiting = agent.session.say("And this never gets said.")
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(1.5)
        heard_ms = await agent.session.interrupt()
        cut = await asyncio.wait_for(speaking, 5)
        dropped = await asyncio.wait_for(waiting, 5)
        history = agent.session.history
        audio_after = sum(
            a.samples.shape[0] for a in transport.audio if a.t > transport.events_of("interrupted")[0].t
        )
    finally:
        await session.close()
    assert 1000 < heard_ms < 2500
    assert cut.interrupted and cut.text and text.startswith(cut.text) and len(cut.text) < len(text) / 2
    assert cut.audio_s == pytest.approx(heard_ms / 1000)
    assert dropped.interrupted and dropped.text == "" and dropped.audio_s == 0
    assert history == [ChatMessage("assistant", cut.text, interrupted=True)]
    assert "And this never gets said." not in tts.texts
    assert audio_after == 0


async def test_events_follow_the_whole_session_for_a_reader_that_starts_late() -> None:
    agent = make_agent(tts=ToneTTS(ms_per_char=5))
    agent.greeting = "Hi."
    session, transport, handler = await start(agent)
    seen: list[AgentEvent] = []

    async def read() -> None:
        async for event in handler.session.events():
            seen.append(event)

    await transport.wait_for("response_done", timeout_s=10)  # the greeting, before anyone reads
    async with asyncio.timeout(5):  # and played out: speech over it would be a (suspected) barge-in
        while handler.replying:  # noqa: ASYNC110 - the playout clock has no event to await
            await asyncio.sleep(0.01)
    reader = asyncio.create_task(read())
    await feed(session, utterance())
    await transport.wait_for("metrics", timeout_s=10)
    await session.close()
    await asyncio.wait_for(reader, 2)  # the iterator ends with the session
    kinds = [type(e) for e in seen]
    assert kinds == [
        SessionStarted,
        ReplyStarted,
        ReplyFinished,
        UserTurnStarted,
        UserTurnEnded,
        ReplyStarted,
        TurnMetricsReady,
        ReplyFinished,
        SessionEnded,
    ]
    assert isinstance(seen[4], UserTurnEnded) and seen[4].text == "What time is it?"


async def test_a_slow_event_reader_skips_rather_than_holding_the_agent_up() -> None:
    log = EventLog(maxlen=4)
    reader = log.follow()
    await log.append(UserTurnEnded(0, "turn 0"))
    first = await anext(reader)
    for n in range(1, 11):  # the reader reads nothing while ten more arrive
        await log.append(UserTurnEnded(n, f"turn {n}"))
    await log.close()
    got = [first] + [e async for e in reader]
    assert [e.turn_index for e in got if isinstance(e, UserTurnEnded)] == [0, 7, 8, 9, 10]
    assert log.missed == 6


async def test_stages_can_be_wrapped_with_super() -> None:
    """`stt_node` and `tts_node` overrides call the defaults: the transcript is corrected, the TTS
    says a word its own way, and the history keeps the words as written."""

    class Careful(Helper):
        first_piece_words = None  # whole sentences to the TTS, as the assertion reads

        async def stt_node(self, audio: AudioFrame) -> str:
            text = await super().stt_node(audio)
            return text.replace("time", "TIME")

        def tts_node(self, text: str) -> Any:
            return super().tts_node(text.replace("SQL", "sequel"))

    tts = ToneTTS(ms_per_char=5)
    llm = ScriptedLLM("We store it in SQL.")
    agent = Careful(stt=ScriptedSTT("What time is it?"), llm=llm, tts=tts)
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = handler.session.history
    finally:
        await session.close()
    assert history == [
        ChatMessage("user", "What TIME is it?"),
        ChatMessage("assistant", "We store it in SQL."),
    ]
    assert tts.texts == ["We store it in sequel."]


async def test_the_turn_is_resampled_for_the_stt_while_the_audio_thread_is_busy() -> None:
    """A phone turn (8 kHz) goes to a 16 kHz STT whole, resampled off the audio thread: a reply
    does not queue behind the VAD batch running there (here, one that does not end)."""
    import threading

    from agentkit._executor import audio_executor

    stt = ScriptedSTT("What time is it?")
    agent = make_agent(stt=stt)
    turn = AudioFrame(utterance()[::2].copy(), 8000)  # 16 kHz speech taken down to 8 kHz
    release = threading.Event()
    busy = asyncio.get_running_loop().run_in_executor(audio_executor(), release.wait, 5.0)
    try:
        text = await asyncio.wait_for(agent.stt_node(turn), 2.0)
    finally:
        release.set()
        await busy
    assert text == "What time is it?"
    [heard] = stt.heard
    assert heard.sample_rate == 16000
    assert abs(heard.num_samples - 2 * turn.num_samples) <= 2  # to the turn's last sample


def test_agent_settings_are_typed_keywords() -> None:
    agent = Helper(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), greeting=None, llm_retries=3)
    assert agent.greeting is None and agent.llm_retries == 3
    assert agent.instructions == "Be brief."  # not given: the class's declaration stays
    with pytest.raises(ConfigError, match=r"unknown Agent setting.*instrucions"):
        Agent(instrucions="typo", stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS())  # type: ignore[call-arg]


async def test_a_store_that_falls_behind_loses_counted_writes_not_memory() -> None:
    gate = asyncio.Event()

    class SlowStore(MemoryStore):
        async def add_message(self, *args: Any, **kwargs: Any) -> Any:
            await gate.wait()
            return await super().add_message(*args, **kwargs)

    store = SlowStore()
    recorder = Recorder(store, agent_name="a", label="test", owner="store-test", max_pending=3)
    await recorder.open("websocket", None)
    for n in range(10):
        recorder.message("user", f"m{n}", interrupted=False)
    await asyncio.sleep(0.01)
    assert recorder.dropped == 10 - 3  # queued before the writer ran: three fit
    gate.set()
    await recorder.close(timeout_s=2)
    assert recorder.conversation_id is not None
    kept = [m.text for m in await store.messages(recorder.conversation_id)]
    assert kept == ["m0", "m1", "m2"]
