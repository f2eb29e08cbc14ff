"""`TurnTakingHandler`: the one turn-taking base, shared by `ReplyOnPause` and `Agent`.

It owns what both need and what must not be written twice:

- the `TurnDetector` over the handler's VAD (created in `start_up`, fed off the event loop by the
  loop's `TurnBatcher` together with the other sessions' detectors);
- the input path: small messages undecoded into the batch (`receive_converting`), held back while
  they could decide nothing (`input_can_wait`), and not waited for where nothing after them needs
  awaiting (`receive_converting_nowait`: the batch calls back, and a task handles any events in
  order; `settle_input` waits for all of it);
- the turn events on the wire (`started_talking`, `pause_detected`);
- the barge-in rule: speech over a reply interrupts it when `can_interrupt` is on, and a turn that
  ends while a reply is still playing is ignored when it is off;
- false interruptions (`_interruption.py`): an onset over a reply pauses it at once; enough speech
  (and words that are not backchannels, where `transcribe_interruption` gives them) confirms the
  barge-in, anything less resumes the reply where it paused;
- the outbox of reply outputs and its end-of-reply sentinel, so `emit()` is written once and a
  barge-in flushes with the same `Outbox` epoch mechanism the session uses;
- the semantic end of turn (`semantic_turn`; on by default for `Agent`, by argument for
  `ReplyOnPause`): after each frame, a pause that reached its
  next check awaits the model (`SemanticEndOfTurn`), whose yes ends the turn as a `TurnEnded`.

Subclasses say what a reply is:

```
receive(frame) ─► TurnDetector ─► TurnStarted ──► on_turn_started(event, barge_in)  [then interrupt()]
                                  │  over a reply: pause_output() ─► InterruptionGate ─► confirmed:
                                  │  on_turn_started(event, barge_in=True), interrupt(); false:
                                  │  resume_output(reason)   (each step: on_interruption(decision))
                                  TurnEnded ────► on_turn_ended(event)   (unless a reply is playing)
                                  TurnDiscarded ► on_turn_discarded(event)
producers ─► put_output(item) / end_reply() ─► Outbox ─► emit() ─► the session
interrupt(): stop_reply() ─► flush the outbox ─► context.interrupt() (the session flushes its own)
```

New decision logic (semantic end of turn, stop words, false-interruption handling) plugs in here,
once, for every handler kind.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from agentkit._tasks import cancel_and_wait
from agentkit.audio import AudioFrame, Samples
from agentkit.exceptions import ConfigError
from agentkit.providers.turn import EndOfTurnModel
from agentkit.providers.vad import VAD
from agentkit.stream._events import PauseDetected, StartedTalking
from agentkit.stream._handlers import AsyncStreamHandler, EmitType, ReplyEnd
from agentkit.stream._interruption import InterruptionDecision, InterruptionGate, InterruptionState, Verdict
from agentkit.stream._outbox import Outbox
from agentkit.stream._semantic_turn import SemanticEndOfTurn
from agentkit.stream._turn import (
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnEvent,
    TurnStarted,
    TurnState,
    TurnTakingOptions,
)
from agentkit.stream._turn_batch import TurnBatcher, turn_batcher

__all__ = ["TurnTakingHandler"]

logger = logging.getLogger(__name__)

_REPLY_END = object()
_STOP_TIMEOUT_S = 2.0
_MAX_INFLIGHT = 4  # inputs given without waiting that may be unscored at once (80 ms of a phone call)


class TurnTakingHandler(AsyncStreamHandler):
    """An `AsyncStreamHandler` that takes turns on a VAD and replies through a flushable outbox.

    Subclasses set `turn_vad`, `turn_options` and `can_interrupt` (in `__init__` or as class
    attributes) and implement the `on_turn_*` hooks, `replying` and `stop_reply`.
    """

    turn_vad: VAD
    """The VAD the detector runs on (its `sample_rate` is the handler's input rate)."""
    turn_options: TurnTakingOptions = TurnTakingOptions()
    can_interrupt: bool = True
    """Speech over a reply stops it (barge-in); otherwise turns taken during a reply are ignored."""
    max_queued_outputs: int = 32
    """Room in the outbox; a producer that gets ahead of playback waits (is paced) beyond it."""
    semantic_turn: EndOfTurnModel | None = None
    """An end-of-turn model (e.g. `SmartTurn()`) asked in pauses whether the caller has finished (the
    `semantic_*` settings of `turn_options`); None: turns end on `end_of_turn_silence_ms` alone. A
    model that cannot be loaded is logged once and turn-taking falls back to silence alone. `Agent`
    defaults to `SmartTurn(optional=True)`: on whenever the model file is present."""

    follow_call_rate: bool = False
    """Take a call's audio at its own rate when that is below the VAD's and the VAD runs at it too
    (a `MultiRateVAD`; Silero runs at 8 kHz): a phone call's audio is then scored as it arrives,
    without resampling, by a model that costs about half as much per chunk at 8 kHz. Not when an
    end-of-turn model (`semantic_turn`) takes another rate. Each session decides for itself
    (`match_call_rate`), so one handler serves phones at 8 kHz and browsers at 16 kHz. Off here;
    `Agent` turns it on (it resamples what it transcribes), `ReplyOnPause(input_sample_rate="call")`
    asks for it."""

    interruption_words_timeout_s: float = 0.5
    """Longest a suspected interruption's transcript (`transcribe_interruption`) may take; a slower
    one counts as none, and speech alone decides."""

    _detector: TurnDetector | None = None
    _semantic: SemanticEndOfTurn | None = None
    _outbox: Outbox[Any] | None = None
    _gate: InterruptionGate | None = None
    _batcher: TurnBatcher | None = None  # the session's event loop's, found on the first input
    _paused_heard_ms = 0
    _arrival: tuple[float, int] = (0.0, 0)  # (clock time, media position) of the latest frame's end
    # inputs given without waiting (`receive_converting_nowait`): jobs not yet run, the events still
    # to be handled in order (`_follow_up`), and an error to raise at the next input
    _inflight = 0
    _inflight_arrivals: deque[float] | None = None  # their arrival times, oldest first
    _on_samples: Callable[[int], None] | None = None  # the session's, told how much each job gave
    _awaiting = 0  # inputs being awaited (`receive`, `receive_converting`)
    _submitted_position = 0  # media position after the jobs in flight (-1: not known)
    _settled: asyncio.Future[None] | None = None  # resolved when the last job in flight has run
    _followups: deque[list[TurnEvent]] | None = None
    _follow_task: asyncio.Task[None] | None = None
    _input_error: BaseException | None = None
    _input_stopped = False

    def match_call_rate(self, sample_rate: int) -> None:
        """With `follow_call_rate`, run this session's turn-taking at `sample_rate` where it can (see
        `follow_call_rate`); `input_sample_rate` follows."""
        vad = self.turn_vad
        if not self.follow_call_rate or sample_rate >= vad.sample_rate:
            return
        model = self.semantic_turn
        if model is not None and model.sample_rate != sample_rate:
            return
        at_rate: Callable[[int], VAD] | None = getattr(vad, "at_rate", None)
        if at_rate is None:
            return
        try:
            self.turn_vad = at_rate(sample_rate)
        except ValueError:  # a rate this VAD does not run at: the session resamples, as without
            return
        self.input_sample_rate = sample_rate

    # -- what a subclass provides ---------------------------------------------------------------
    @property
    @abc.abstractmethod
    def replying(self) -> bool:
        """A reply is being made, or its audio is still queued or playing."""

    @abc.abstractmethod
    async def stop_reply(self) -> None:
        """Stop making the reply in progress (cancel its task and wait for it), if there is one."""

    async def on_turn_started(self, event: TurnStarted, *, barge_in: bool) -> None:
        """The caller started talking; `barge_in`: over a reply, which `interrupt()` stops next."""
        del event, barge_in

    @abc.abstractmethod
    async def on_turn_ended(self, event: TurnEnded) -> None:
        """The caller's turn ended (and no reply is playing): reply to `event.audio`."""

    async def on_turn_discarded(self, event: TurnDiscarded) -> None:
        """A burst too short to be a turn (a cough, a click) ended."""
        del event

    async def after_audio(self, detector: TurnDetector) -> None:
        """Called after each input's turn events (e.g. for partial transcripts); not while a sound
        over a reply is being judged (see `on_interruption`). An input is one message of the caller's
        audio, or two or three small ones that completed no VAD chunk outside a pause
        (`input_can_wait`)."""
        del detector

    def wants_after_audio(self, detector: TurnDetector) -> bool:
        """Whether `after_audio` has work after an input that gave no turn events (called on the
        loop, right after the input was scored). A subclass that overrides `after_audio` should
        override this too where it can tell: an input after which it has none is not waited for
        (`receive_converting_nowait`). The default: yes when `after_audio` is overridden."""
        del detector
        return type(self).after_audio is not TurnTakingHandler.after_audio

    @property
    def transcribes_interruptions(self) -> bool:
        """`transcribe_interruption` gives words, so `interrupt_min_words` applies (the default: no,
        speech alone decides)."""
        return False

    async def transcribe_interruption(self, audio: AudioFrame) -> str | None:
        """The words of a suspected interruption so far (`audio` at the VAD's rate), within
        `interruption_words_timeout_s`; None: not known."""
        del audio
        return None

    async def on_interruption(self, decision: InterruptionDecision) -> None:
        """Sound over a reply paused it (`suspected`), then interrupted it (`confirmed`, after
        `on_turn_started(..., barge_in=True)`) or did not (`false`: the reply resumed)."""
        del decision

    # -- the shared machinery -------------------------------------------------------------------
    @property
    def detector(self) -> TurnDetector:
        if self._detector is None:
            raise RuntimeError(f"{type(self).__name__}: turn-taking has not started (start_up)")
        return self._detector

    @property
    def outbox(self) -> Outbox[Any]:
        if self._outbox is None:
            self._outbox = Outbox(self.max_queued_outputs)
        return self._outbox

    def reset_turn_taking(self) -> None:
        """Forget the detector and the outbox (for `copy()`: each session gets its own)."""
        self._detector = None
        self._semantic = None
        self._outbox = None
        self._gate = None
        self._batcher = None
        self._inflight = 0
        self._inflight_arrivals = None
        self._on_samples = None
        self._awaiting = 0
        self._submitted_position = 0
        self._settled = None
        self._followups = None
        self._follow_task = None
        self._input_error = None
        self._input_stopped = False

    @property
    def semantic(self) -> SemanticEndOfTurn | None:
        """This session's end-of-turn checks; None when `semantic_turn` is off or unavailable."""
        return self._semantic

    async def start_up(self) -> None:
        vad = self.turn_vad
        stream = await asyncio.to_thread(vad.stream)  # loads the shared model on first use
        options = self.turn_options
        model = self.semantic_turn
        self._semantic = None
        if model is not None and await asyncio.to_thread(model.load):
            if model.sample_rate != vad.sample_rate:
                raise ConfigError(
                    f"semantic_turn takes {model.sample_rate} Hz audio, "
                    f"but the VAD runs at {vad.sample_rate} Hz"
                )
            self._semantic = SemanticEndOfTurn(model, options, sample_rate=vad.sample_rate)
            options = SemanticEndOfTurn.detector_options(options)
        self._detector = TurnDetector(
            stream, sample_rate=vad.sample_rate, chunk_samples=vad.chunk_samples, options=options
        )
        words = self.transcribes_interruptions
        self._gate = InterruptionGate(self.turn_options, sample_rate=vad.sample_rate, words=words)

    def _turn_batcher(self) -> TurnBatcher:
        if self._batcher is None:
            self._batcher = turn_batcher()
        return self._batcher

    def arrival_time(self, position_samples: int) -> float:
        """Clock time at which the caller's audio at media position `position_samples` arrived, dated
        back from the latest frame's arrival: what a turn's latencies count from. (Dating it back
        from the moment a decision is made instead would leave out the time the decision took: a
        busy VAD batch, an end-of-turn model's check.)"""
        arrived_at, end_samples = self._arrival
        return arrived_at - (end_samples - position_samples) / self.turn_vad.sample_rate

    async def receive(self, frame: AudioFrame) -> None:
        self._awaiting += 1  # inputs given meanwhile without waiting would overtake this one
        try:
            await self.settle_input()
            detector = self.detector
            arrived_at = self.context.clock.now()
            self._arrival = (arrived_at, detector.position_samples + frame.num_samples)
            # with the other sessions' waiting input: one audio-thread job, one VAD call per chunk round
            batcher = self._turn_batcher()
            await self._after_batch(await batcher.process(self.turn_vad, detector, frame.samples))
        finally:
            self._awaiting -= 1

    @property
    def converts_input(self) -> bool:
        """Whether the session may hand this handler its input undecoded (`receive_converting`):
        yes, unless a subclass overrides `receive`, which then gets every frame."""
        return type(self).receive is TurnTakingHandler.receive

    async def receive_converting(self, convert: Callable[[], Samples]) -> int:
        """`receive(AudioFrame(convert(), ...))`, with `convert` (the session's decoding and
        resampling of one small input message, at this handler's rate) run in the audio-thread job
        that scores it rather than on the event loop. Returns the number of samples it gave."""
        self._awaiting += 1
        try:
            await self.settle_input()
            detector = self.detector
            arrived_at = self.context.clock.now()
            batcher = self._turn_batcher()
            events, num_samples = await batcher.convert_and_process(self.turn_vad, detector, convert)
            self._arrival = (arrived_at, detector.position_samples)
            await self._after_batch(events)
            return num_samples
        finally:
            self._awaiting -= 1

    def receive_converting_nowait(
        self, convert: Callable[[], Samples], num_samples: int, on_samples: Callable[[int], None]
    ) -> bool:
        """`receive_converting` without waiting for the batch: the batch calls back instead
        (`on_samples(n)`, on the loop, in order), and only an input after which there is something
        to do (turn events, an end-of-turn check that is due, `after_audio` work by
        `wants_after_audio`, a sound over a reply being judged) wakes a task, which does it in
        order. The connection's reader goes straight on to the next message: one task switch and
        one resumption of its coroutine chain less per message. Not while that task is busy, nor
        with `_MAX_INFLIGHT` inputs unscored. `num_samples`: what `convert` is expected to give
        (-1: not known), for `input_can_wait` while jobs are in flight. Returns False, having done
        nothing, when the caller must use `receive_converting`."""
        if self._inflight_blocked():
            return False
        detector = self.detector
        arrivals = self._inflight_arrivals
        if arrivals is None:
            arrivals = self._inflight_arrivals = deque()
        arrivals.append(self.context.clock.now())  # the jobs of one detector run in order
        self._on_samples = on_samples
        if num_samples < 0:
            self._submitted_position = -1
        elif self._inflight == 0:
            self._submitted_position = detector.position_samples + num_samples
        elif self._submitted_position >= 0:
            self._submitted_position += num_samples
        self._inflight += 1
        self._turn_batcher().convert_and_process_soon(self.turn_vad, detector, convert, self._input_done)
        return True

    def _inflight_blocked(self) -> bool:
        if self._inflight >= _MAX_INFLIGHT:  # the audio thread is behind: wait, and the reading waits
            return True
        if self._input_error is not None or self._follow_task is not None or self._input_stopped:
            return True
        if self._awaiting:  # an input being awaited (`receive_converting`) goes first
            return True
        gate = self._gate
        return gate is not None and gate.state is not InterruptionState.IDLE

    def _input_done(self, result: list[TurnEvent] | BaseException, n: int) -> None:
        """A job given without waiting has run (called by the batcher on the loop, in order)."""
        assert self._inflight_arrivals is not None and self._on_samples is not None
        arrived_at = self._inflight_arrivals.popleft()
        self._inflight -= 1
        settled = self._settled
        if not self._inflight and settled is not None and not settled.done():
            settled.set_result(None)
        if self._input_stopped:
            return
        if isinstance(result, BaseException):
            self._input_error = self._input_error or result
            return
        self._on_samples(n)
        self._arrival = (arrived_at, self.detector.position_samples)
        detector, gate, semantic = self.detector, self._gate, self._semantic
        judging = gate is not None and gate.state is not InterruptionState.IDLE
        if (  # what `_after_batch` would do, if anything
            result
            or judging
            or self._follow_task is not None
            or (semantic is not None and semantic.due(detector))
            or self.wants_after_audio(detector)
        ):
            if self._followups is None:
                self._followups = deque()
            self._followups.append(result)
            if self._follow_task is None:
                batcher = self._turn_batcher()
                batcher.hold(detector)  # the work reads the detector: its next inputs wait for it
                self._follow_task = batcher.loop().create_task(self._follow_up(), name="turn-events")

    async def _follow_up(self) -> None:
        """Handle the events of inputs given without waiting, in order, as `receive_converting`
        would have after each; an error is raised at the session's next input."""
        followups = self._followups
        assert followups is not None
        try:
            while followups:
                await self._after_batch(followups.popleft())
        except Exception as exc:
            self._input_error = self._input_error or exc
            followups.clear()
        finally:
            self._follow_task = None
            self._turn_batcher().release(self.detector)

    async def settle_input(self) -> None:
        """Wait until the inputs given without waiting have run and their events have been handled
        (done before each input that is awaited, so that events keep their order); raise what one
        of them raised."""
        while self._inflight or self._follow_task is not None:
            if self._inflight:
                self._settled = settled = self._turn_batcher().loop().create_future()
                await settled
            task = self._follow_task
            if task is not None:
                await asyncio.wait([task])  # not cancelled with the caller: it belongs to the session
        if self._input_error is not None:
            error, self._input_error = self._input_error, None
            raise error

    async def stop_input(self) -> None:
        """The session is closing: drop the events of inputs given without waiting."""
        self._input_stopped = True
        task = self._follow_task
        if task is not None:
            await cancel_and_wait(task, _STOP_TIMEOUT_S)
            # a task cancelled before it ran never reached its `finally`: the batcher must not go on
            # holding this detector's inputs back (nor, once it is gone, another's at its address)
            self._turn_batcher().release(self.detector)

    def input_can_wait(self, num_samples: int) -> bool:
        """Whether `num_samples` more input (at this handler's rate) may wait for the caller's next
        message before it is scored: it would complete no VAD chunk, no pause is in progress and no
        sound over a reply is being judged, so scoring it now could decide nothing. The session then
        holds the message and hands both over together (one job, one decode, one wake-up instead of
        two); `after_audio` runs after each input the detector took."""
        gate = self._gate
        if self._awaiting or (gate is not None and gate.state is not InterruptionState.IDLE):
            return False
        detector = self.detector
        if not self._inflight:
            return not detector.decides_on(num_samples)
        # jobs in flight: the partial chunk they will leave is known from the samples given; the
        # state may be a job behind, which matters only at a pause's start, not at its end
        if self._submitted_position < 0 or detector.state is TurnState.PAUSED:
            return False
        return self._submitted_position % detector.chunk_samples + num_samples < detector.chunk_samples

    async def _after_batch(self, events: list[TurnEvent]) -> None:
        detector = self.detector
        for event in events:
            await self._on_turn_event(event)
        semantic = self._semantic
        if semantic is not None and semantic.due(detector):
            ended = await semantic.check(detector)
            if ended is not None:
                await self._on_turn_event(ended)
        if self._gate is not None and self._gate.state is not InterruptionState.IDLE:
            await self._judge_interruption(detector, self._gate)
            return
        await self.after_audio(detector)

    async def _on_turn_event(self, event: TurnEvent) -> None:
        rate = self.turn_vad.sample_rate
        gate = self._gate
        if isinstance(event, TurnStarted):
            await self.context.send_event(StartedTalking(t_ms=event.onset_samples * 1000 // rate))
            barge_in = self.can_interrupt and self.replying
            if barge_in and gate is not None and not gate.immediate:
                await self._suspect(gate, event, event.decided_samples, speech_ms=self.detector.speech_ms)
                return
            await self.on_turn_started(event, barge_in=barge_in)
            if barge_in:
                await self.interrupt()
        elif isinstance(event, TurnEnded):
            judging = gate is not None and gate.state is not InterruptionState.IDLE
            if judging and gate is not None and not await self._judge_turn_end(gate, event):
                return
            if self.replying:
                logger.debug("turn ignored: a reply is still playing and can_interrupt is off")
                return
            await self.context.send_event(
                PauseDetected(
                    t_ms=event.decided_samples * 1000 // rate,
                    speech_end_ms=event.speech_end_samples * 1000 // rate,
                )
            )
            await self.on_turn_ended(event)
        elif isinstance(event, TurnDiscarded):
            if gate is not None and gate.state is InterruptionState.SUSPECTED:
                await self._dismiss(gate, "too_short", event.decided_samples, event.speech_ms, None)
            if gate is not None:
                gate.reset()
            await self.on_turn_discarded(event)

    # -- false interruptions (the gate's actions; see `_interruption.py`) --------------------------
    async def _suspect(self, gate: InterruptionGate, onset: TurnStarted, at: int, *, speech_ms: int) -> None:
        gate.suspect(onset, at_samples=at)
        self._paused_heard_ms = await self.context.pause_output()
        await self.on_interruption(
            InterruptionDecision("suspected", onset, at, speech_ms, self._paused_heard_ms)
        )

    async def _confirm(self, gate: InterruptionGate, at: int, speech_ms: int, text: str | None) -> None:
        onset = gate.onset
        gate.confirmed()
        await self.on_turn_started(onset, barge_in=True)
        heard_ms = await self.interrupt() if self.replying else self._paused_heard_ms
        await self.on_interruption(
            InterruptionDecision("confirmed", onset, at, speech_ms, heard_ms, text=text)
        )

    async def _dismiss(
        self, gate: InterruptionGate, reason: Verdict, at: int, speech_ms: int, text: str | None
    ) -> None:
        assert reason != "confirmed"
        onset = gate.onset
        gate.dismissed(speech_ms)
        await self.context.resume_output(reason)
        decision = InterruptionDecision(
            "false", onset, at, speech_ms, self._paused_heard_ms, reason=reason, text=text
        )
        await self.on_interruption(decision)

    async def _judge_interruption(self, detector: TurnDetector, gate: InterruptionGate) -> None:
        """After a frame, while a sound over a reply is being judged: act on the gate's step."""
        at, speech_ms = detector.position_samples, detector.speech_ms
        speaking = detector.state is TurnState.SPEAKING
        action = gate.step(position_samples=at, speech_ms=speech_ms, speaking=speaking)
        if action is None:
            return
        if action == "suspect":  # a dismissed sound went on into more speech
            if self.can_interrupt and self.replying:
                await self._suspect(gate, gate.onset, at, speech_ms=speech_ms)
            else:  # the reply is over meanwhile: it is simply the caller's turn
                onset = gate.onset
                gate.confirmed()
                await self.on_turn_started(onset, barge_in=False)
            return
        if action == "confirm":
            await self._confirm(gate, at, speech_ms, None)
            return
        text = None
        if gate.words and speech_ms >= gate.options.interrupt_min_speech_ms:
            samples = detector.turn_so_far()
            if samples is not None:
                text = await self._interruption_words(AudioFrame(samples, self.turn_vad.sample_rate))
        verdict = gate.judge_so_far(speech_ms, text) if speaking else gate.judge(speech_ms, text)
        if verdict is None:  # a short sound still going on, its words settle nothing: wait for its end
            return
        if verdict == "confirmed":
            await self._confirm(gate, at, speech_ms, text)
        else:
            await self._dismiss(gate, verdict, at, speech_ms, text)

    async def _judge_turn_end(self, gate: InterruptionGate, event: TurnEnded) -> bool:
        """A sound over a reply ended as a turn: True when it is one (confirmed: it is answered)."""
        if gate.state is InterruptionState.DISMISSED:
            gate.reset()
            return False  # judged already, and not a turn
        text = None
        if gate.words and event.speech_ms >= gate.options.interrupt_min_speech_ms:
            text = await self._interruption_words(event.audio)
        verdict = gate.judge(event.speech_ms, text)
        if verdict == "confirmed":
            await self._confirm(gate, event.decided_samples, event.speech_ms, text)
            return True
        await self._dismiss(gate, verdict, event.decided_samples, event.speech_ms, text)
        gate.reset()
        return False

    async def _interruption_words(self, audio: AudioFrame) -> str | None:
        try:
            async with asyncio.timeout(self.interruption_words_timeout_s):
                return await self.transcribe_interruption(audio)
        except TimeoutError:
            logger.info(
                "interruption words took over %.2f s; speech alone decides", self.interruption_words_timeout_s
            )
        except Exception as exc:
            logger.warning("interruption words failed (%s); speech alone decides", type(exc).__name__)
        return None

    async def put_output(self, item: Any) -> None:
        """Queue one output of the reply in progress (audio, `AdditionalOutputs`); waits for room."""
        await self.outbox.put(item)

    async def end_reply(self) -> None:
        """Mark the end of the reply in progress (the session answers with `response_done`)."""
        await self.outbox.put(_REPLY_END)

    async def emit(self) -> EmitType:
        item = await self.outbox.get()
        return ReplyEnd() if item is _REPLY_END else item

    async def interrupt(self) -> int:
        """Barge-in: stop the reply, flush every queue between it and the caller's ear.

        Returns how much of the reply the caller had heard, in milliseconds of reply audio.
        """
        await self.stop_reply()
        self.outbox.flush()
        return await self.context.interrupt()
