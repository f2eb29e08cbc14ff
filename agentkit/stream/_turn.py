"""Turn-taking: a per-chunk state machine over VAD probabilities, with thresholds in milliseconds.

```
            speech for speech_start_ms               silence < end_of_turn_silence_ms
  SILENT ───────────────────────────────► SPEAKING ◄──────────────────────────────► PAUSED
    ▲        (StartedTalking)                                                         │
    └─────────────────────────────────────────────────────────────────────────────────┘
         silence reaches end_of_turn_silence_ms (TurnEnded, or TurnDiscarded if too little speech)
```

Silence is counted from the acoustic end of speech. Silero's recurrent state keeps its probability
high for one to three chunks after a voice stops, so the VAD alone would end every turn 30-100 ms
late. Once the VAD says silence, the detector looks back through the VAD's tail (`vad_tail_ms`, never
past the VAD's own end of speech, so background noise cannot delay a turn; Silero holds on a chunk
longer at 8 kHz, so the default looks back further there) for the last 8 ms block
that stands `energy_margin_db` above the tracked noise floor and within `speech_drop_db` of the
turn's typical speech level, and counts silence from there. The
decision is checked on every chunk and, in silence, on every partial chunk too, so the end of a turn
is declared within one chunk (usually one input frame) of the configured silence.

Audio from just before the onset (`pre_roll_ms`) is kept with the turn so the first syllable is not
lost. The detector is plain synchronous code: run `process` in an executor.

`process` is three steps, also callable one by one so that a batcher can score many sessions' chunks
in one VAD call (`_turn_batch.py`): `split` the new audio into whole chunks, `step` the state machine
with each chunk and its probability, then `check_partial` once the input is used up.

A semantic end of turn (an end-of-turn model asked in pauses, `_semantic_turn.py`) needs no model
here: the detector exposes the pause (`silence_samples`), the end of the turn's audio
(`recent_audio`) and `end_turn()`, which ends the turn in a pause as enough silence would have.
Work begun in a pause (preemptive generation) takes `pause_audio()`: what the turn will hold if it
ends in that pause.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from agentkit.audio import AudioFrame, Samples
from agentkit.providers.vad import VADStream
from agentkit.stream._interruption import BACKCHANNELS, INTERRUPTION_WORDS

__all__ = [
    "TurnDetector",
    "TurnDiscarded",
    "TurnEnded",
    "TurnEvent",
    "TurnStarted",
    "TurnState",
    "TurnTakingOptions",
]


@dataclass(frozen=True, slots=True)
class TurnTakingOptions:
    """When a caller's turn starts and ends. Durations are in milliseconds of audio."""

    speech_threshold: float = 0.5
    """VAD probability at or above which a chunk counts as speech."""
    silence_threshold: float = 0.35
    """VAD probability below which a chunk counts as silence (between the two, the state holds)."""
    speech_start_ms: int = 64
    """Continuous speech needed before the caller is said to have started talking (and barge-in fires)."""
    min_speech_ms: int = 200
    """Speech a turn must contain in all; shorter bursts (a cough, a click) are discarded."""
    end_of_turn_silence_ms: int = 500
    """Silence after speech that ends the turn."""
    max_turn_ms: int = 30_000
    """A turn this long is ended even if the caller keeps talking."""
    pre_roll_ms: int = 256
    """Audio kept from before the detected onset, so the first syllable reaches the handler."""
    trailing_ms: int = 64
    """Audio kept after the end of speech at the end of the turn."""
    vad_tail_ms: int | None = None
    """How far back from the VAD's end of speech to look for the acoustic end (see `TurnDetector`).
    None: 96 ms, or 128 ms for a VAD at 8 kHz. Silero's probability stays high about a chunk longer
    at 8 kHz than at 16 kHz. On the turn-taking evaluation set, sent as phone audio, 128 ms at 8 kHz
    ends turns with a p90 of 520 ms after the end of speech, against 530 ms at 16 kHz with 96 ms
    (docs/benchmarks.md, "Phone calls scored at 8 kHz")."""
    energy_margin_db: float = 15.0
    """A block this far above the noise floor counts as sound when locating the end of speech..."""
    speech_drop_db: float = 20.0
    """...unless it is this far below the turn's typical speech level (a breath, a fading release)."""
    semantic_check_after_ms: int = 200
    """With an end-of-turn model (`TurnTakingHandler.semantic_turn`): silence after which it is first
    asked whether the turn is over; a yes ends the turn then. The defaults below are tuned on
    bench/turn_taking_eval.py (docs/benchmarks.md, "Turn-taking quality")."""
    semantic_recheck_ms: int = 300
    """...asked again after each further this much silence while it says no (0: once per pause)."""
    semantic_max_silence_ms: int = 1500
    """...silence that ends the turn whatever it says (in place of `end_of_turn_silence_ms`)."""
    semantic_threshold: float = 0.93
    """...its probability at or above which the turn is over, at the first check of a pause."""
    semantic_recheck_threshold: float = 0.99
    """...the same at a recheck: higher, because the model's score rises with the silence alone
    (a pause of 600 ms sounds more final than one of 200 ms), so a later yes must be surer."""
    semantic_unsure_threshold: float = 0.9
    """...its probability at or above which it is unsure rather than saying a clear no: once a check
    of a pause has said so, `semantic_unsure_silence_ms` ends the turn; after clear noes only, the
    maximum does."""
    semantic_unsure_silence_ms: int = 1250
    """...silence that ends a turn the model was unsure about (at or above `semantic_max_silence_ms`:
    no such band, every pause waits for the maximum)."""
    interrupt_min_speech_ms: int = 300
    """While a reply plays, speech the caller's sound must hold to interrupt it. The reply pauses at
    the onset (after `speech_start_ms`) and plays on if the sound stays shorter (a cough, a click;
    see `_interruption.py`). 0 with `interrupt_min_words` 0: every onset interrupts at once."""
    interrupt_min_words: int = 1
    """...and, where the handler can transcribe the sound in time (an `Agent` with local STT), the
    words it must hold that are not `backchannels`; 0: speech alone decides."""
    interrupt_decision_ms: int = 700
    """...caller audio after the onset by which a paused reply is flushed or resumed, on what was
    heard so far (sooner when the sound ends or holds the words; later only for a short sound still
    going on, see `backchannel_max_speech_ms`)."""
    backchannels: tuple[str, ...] = BACKCHANNELS
    """...words and phrases that acknowledge rather than interrupt ("mm-hmm", "right", "I see"),
    compared in lower case without punctuation, runs of a letter as one ("yeahh"), a word that sounds
    the same as one ("ride" for "right"); any hum ("hm", "mhm", "uh-huh") is one too."""
    interruption_words: tuple[str, ...] = INTERRUPTION_WORDS
    """...words and phrases that interrupt on their own however short the sound ("stop", "wait",
    "sorry", "hold"), compared as `backchannels` are."""
    backchannel_max_speech_ms: int = 1000
    """...speech in a sound short enough that a transcript of at most `backchannel_max_words` other
    words (neither `backchannels` nor `interruption_words`) is taken for a backchannel: a speech
    model writes a hum as stray words ("Amen, hm." for "mm-hmm"). While such a sound is still going
    on at `interrupt_decision_ms`, and its words so far settle nothing, the reply stays paused until
    it ends or holds this much speech, rather than judging a word cut in half. 0: neither."""
    backchannel_max_words: int = 1
    """...see `backchannel_max_speech_ms`; 0: only backchannels make a backchannel."""

    def __post_init__(self) -> None:
        if not 0.0 < self.silence_threshold <= self.speech_threshold < 1.0:
            raise ValueError("need 0 < silence_threshold <= speech_threshold < 1")
        for name in ("speech_start_ms", "min_speech_ms", "end_of_turn_silence_ms", "max_turn_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.pre_roll_ms < 0 or self.trailing_ms < 0 or (self.vad_tail_ms or 0) < 0:
            raise ValueError("pre_roll_ms, trailing_ms and vad_tail_ms must not be negative")
        if not 0 < self.semantic_check_after_ms <= self.semantic_max_silence_ms:
            raise ValueError("need 0 < semantic_check_after_ms <= semantic_max_silence_ms")
        if self.semantic_recheck_ms < 0 or not 0.0 < self.semantic_threshold <= 1.0:
            raise ValueError("need semantic_recheck_ms >= 0 and 0 < semantic_threshold <= 1")
        if not self.semantic_threshold <= self.semantic_recheck_threshold <= 1.0:
            raise ValueError("need semantic_threshold <= semantic_recheck_threshold <= 1")
        if not 0.0 < self.semantic_unsure_threshold <= self.semantic_threshold:
            raise ValueError("need 0 < semantic_unsure_threshold <= semantic_threshold")
        if self.semantic_unsure_silence_ms < self.semantic_check_after_ms:
            raise ValueError("need semantic_check_after_ms <= semantic_unsure_silence_ms")
        if (
            self.interrupt_min_words < 0
            or not 0 <= self.interrupt_min_speech_ms <= self.interrupt_decision_ms
        ):
            raise ValueError(
                "need interrupt_min_words >= 0 and 0 <= interrupt_min_speech_ms <= interrupt_decision_ms"
            )
        if self.backchannel_max_speech_ms < 0 or self.backchannel_max_words < 0:
            raise ValueError("backchannel_max_speech_ms and backchannel_max_words must not be negative")


class TurnState(enum.Enum):
    SILENT = "silent"
    SPEAKING = "speaking"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class TurnStarted:
    """The caller started talking: `speech_start_ms` of speech were heard."""

    onset_samples: int
    """Media-clock position where the speech began."""
    decided_samples: int
    """Media-clock position at which the onset was decided."""


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """The caller's turn is over; `audio` holds it, pre-roll included."""

    audio: AudioFrame
    speech_end_samples: int
    """Media-clock position where speech ended (acoustically, see the module docstring)."""
    decided_samples: int
    """Media-clock position at which the end of turn was decided."""
    speech_ms: int
    """Milliseconds of speech in the turn."""
    cut: bool
    """True when `max_turn_ms` ended the turn rather than silence."""


@dataclass(frozen=True, slots=True)
class TurnDiscarded:
    """A burst of speech too short to be a turn ended; nothing is replied."""

    speech_ms: int
    decided_samples: int


TurnEvent = TurnStarted | TurnEnded | TurnDiscarded


_BLOCKS_PER_CHUNK = 4  # energy resolution: 8 ms blocks at 16 kHz
_NOISE_FLOOR_INIT_DB = -60.0
_NOISE_FLOOR_RANGE_DB = (-90.0, -25.0)


def _default_tail_ms(sample_rate: int) -> int:
    """`vad_tail_ms` when not set: Silero's hangover is about a chunk longer at 8 kHz."""
    return 128 if sample_rate <= 8000 else 96


def _block_db(samples: Samples, block: int) -> Samples:
    """RMS level in dBFS of each whole `block`-sample block of `samples`."""
    n = samples.shape[0] // block
    blocks = samples[: n * block].reshape(n, block)
    # np.mean's own sum and division, without its Python wrapper (a third of this function's time)
    power = np.add.reduce(blocks * blocks, axis=1, dtype=np.float64) / block
    db: Samples = (10.0 * np.log10(power + 1e-12)).astype(np.float32)
    return db


class TurnDetector:
    """Feeds a VAD stream chunk by chunk and turns probabilities into turn events.

    `process` accepts audio of any length at the VAD's sample rate and returns the events the new
    audio caused, in order. Not thread-safe; one detector per session.
    """

    def __init__(
        self,
        vad: VADStream,
        *,
        sample_rate: int,
        chunk_samples: int,
        options: TurnTakingOptions | None = None,
    ) -> None:
        self.options = options or TurnTakingOptions()
        self._vad = vad
        self._rate = sample_rate
        self._chunk = chunk_samples
        self._block = chunk_samples // _BLOCKS_PER_CHUNK
        self._chunk_ms = 1000.0 * chunk_samples / sample_rate
        opts = self.options
        self._start_chunks = max(1, math.ceil(opts.speech_start_ms / self._chunk_ms))
        self._min_speech_chunks = max(1, math.ceil(opts.min_speech_ms / self._chunk_ms))
        self._max_chunks = max(1, math.ceil(opts.max_turn_ms / self._chunk_ms))
        self._silence_samples = round(opts.end_of_turn_silence_ms * sample_rate / 1000)
        self._trailing_samples = round(opts.trailing_ms * sample_rate / 1000)
        tail_ms = opts.vad_tail_ms if opts.vad_tail_ms is not None else _default_tail_ms(sample_rate)
        self._tail_samples = round(tail_ms * sample_rate / 1000)
        pre_roll_chunks = math.ceil(opts.pre_roll_ms / self._chunk_ms)

        self._pending = np.zeros(chunk_samples, dtype=np.float32)  # partial chunk, preallocated
        self._pending_len = 0
        self._position = 0  # media-clock position of the next chunk's first sample
        self._history: deque[Samples] = deque(maxlen=pre_roll_chunks + self._start_chunks)
        # (end position, dBFS) of recent 8 ms blocks, enough to cover the VAD tail
        tail_blocks = math.ceil(self._tail_samples / self._block) + 2 * _BLOCKS_PER_CHUNK
        self._blocks: deque[tuple[int, float]] = deque(maxlen=tail_blocks)
        self._noise_db = _NOISE_FLOOR_INIT_DB
        self._speech_db_sum = 0.0  # level of the current turn's speech blocks, for `speech_drop_db`
        self._speech_db_count = 0
        self._state = TurnState.SILENT
        self._run = 0  # consecutive speech chunks while SILENT
        self._turn: list[Samples] = []
        self._turn_start = 0
        self._speech_chunks = 0
        self._silent_chunks = 0  # consecutive chunks the VAD calls silence, while in a turn
        self._vad_speech_end = 0  # end of the last chunk the VAD called speech
        self._speech_end = 0  # acoustic end of speech, located once the VAD says silence
        self.last_probability = 0.0

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def vad_stream(self) -> VADStream:
        """The VAD stream whose probabilities `process` feeds to `step`."""
        return self._vad

    @property
    def chunk_samples(self) -> int:
        """Samples the VAD scores at a time."""
        return self._chunk

    @property
    def position_samples(self) -> int:
        """Media-clock position up to which audio has been analysed."""
        return self._position + self._pending_len

    def decides_on(self, num_samples: int) -> bool:
        """Whether `num_samples` more audio could move the state machine: they complete a chunk (the
        VAD scores it and `step` runs), or a pause is in progress (`check_partial` looks at partial
        chunks). When not, they only wait in the partial chunk, and may as well wait elsewhere."""
        return self._state is TurnState.PAUSED or self._pending_len + num_samples >= self._chunk

    def turn_so_far(self) -> Samples | None:
        """A copy of the audio of the turn in progress (pre-roll included), or None between turns."""
        if self._state is TurnState.SILENT or not self._turn:
            return None
        return np.concatenate(self._turn)

    @property
    def silence_samples(self) -> int:
        """In a pause (PAUSED), samples from the acoustic end of speech to `position_samples`; else 0."""
        return self.position_samples - self._speech_end if self._state is TurnState.PAUSED else 0

    @property
    def speech_ms(self) -> int:
        """Milliseconds of speech in the turn in progress so far (0 between turns)."""
        return 0 if self._state is TurnState.SILENT else round(self._speech_chunks * self._chunk_ms)

    @property
    def speech_end_samples(self) -> int:
        """In a pause, the media-clock position where it began (the acoustic end of speech)."""
        return self._speech_end

    def recent_audio(self, max_samples: int) -> Samples | None:
        """A copy of the last `max_samples` of the turn in progress, up to `position_samples` (the
        partial chunk included), or None between turns."""
        if self._state is TurnState.SILENT or not self._turn:
            return None
        chunks = self._turn[-(max_samples // self._chunk + 1) :]
        audio = np.concatenate([*chunks, self._pending[: self._pending_len]])
        return audio[-max_samples:]

    def end_turn(self) -> TurnEvent | None:
        """End the turn now, in a pause (a semantic end of turn): the `TurnEnded` (or `TurnDiscarded`)
        enough silence would have given, decided at `position_samples`. None unless PAUSED."""
        if self._state is not TurnState.PAUSED:
            return None
        return self._finish(cut=False, decided=self.position_samples)

    def pause_audio(self) -> AudioFrame | None:
        """In a pause, a copy of the audio the `TurnEnded` will hold if the turn ends in this pause
        (the same samples, `trailing_ms` included), for work begun before the turn is known to be
        over (an `Agent`'s preemptive generation). None unless PAUSED, and until the pause's whole
        chunks cover `trailing_ms`."""
        if self._state is not TurnState.PAUSED or not self._turn:
            return None
        keep = self._speech_end + self._trailing_samples - self._turn_start
        if len(self._turn) * self._chunk < keep:
            return None
        return AudioFrame(np.concatenate(self._turn)[:keep], self._rate, self._turn_start)

    def reset(self) -> None:
        """Drop any turn in progress and return to SILENT (the VAD keeps its recurrent state)."""
        self._state = TurnState.SILENT
        self._run = 0
        self._turn = []
        self._speech_chunks = 0
        self._silent_chunks = 0

    def process(self, samples: Samples) -> list[TurnEvent]:
        """The events `samples` (any length) cause, in order: `split`, `step`, `check_partial`."""
        events: list[TurnEvent] = []
        for chunk in self.split(samples):
            event = self.step(chunk, self._vad.probability(chunk))
            if event is not None:
                events.append(event)
        if samples.shape[0]:
            event = self.check_partial()
            if event is not None:
                events.append(event)
        return events

    def split(self, samples: Samples) -> list[Samples]:
        """Buffer `samples` and return the whole chunks they complete (copies, oldest first).

        Each chunk must then go to `step`, in order, before the next `split`; the remainder waits in
        the preallocated partial chunk."""
        chunks: list[Samples] = []
        offset = 0
        n = samples.shape[0]
        while offset < n:
            take = min(self._chunk - self._pending_len, n - offset)
            self._pending[self._pending_len : self._pending_len + take] = samples[offset : offset + take]
            self._pending_len += take
            offset += take
            if self._pending_len == self._chunk:
                chunks.append(self._pending.copy())
                self._pending_len = 0
        return chunks

    def _sound_threshold_db(self) -> float:
        threshold = self._noise_db + self.options.energy_margin_db
        if self._speech_db_count:
            typical = self._speech_db_sum / self._speech_db_count
            threshold = max(threshold, typical - self.options.speech_drop_db)
        return threshold

    def _track_speech_level(self, levels: list[float]) -> None:
        threshold = self._noise_db + self.options.energy_margin_db
        loud = [level for level in levels if level > threshold]
        self._speech_db_sum += sum(loud)
        self._speech_db_count += len(loud)

    @property
    def block_samples(self) -> int:
        """Samples per level block (a quarter of a chunk): what `step`'s `levels` are measured over."""
        return self._block

    def step(self, chunk: Samples, p: float, levels: Samples | list[float] | None = None) -> TurnEvent | None:
        """Advance the state machine by one whole chunk (from `split`) whose VAD probability is `p`.

        `levels`: the chunk's level in dBFS per `block_samples` block, when the caller measured many
        chunks at once (the batcher does, in one numpy call per round); measured here otherwise."""
        start = self._position
        self._position += self._chunk
        self.last_probability = p
        opts = self.options
        block = self._block
        # a chunk's four levels as Python floats: cheaper to walk than a numpy array this small
        level_list: list[float] = (
            levels
            if isinstance(levels, list)
            else (_block_db(chunk, block) if levels is None else levels).tolist()
        )
        self._blocks.extend([(start + k * block, level) for k, level in enumerate(level_list, start=1)])
        if p < opts.silence_threshold:
            self._track_noise(level_list)

        if self._state is TurnState.SILENT:
            self._history.append(chunk)
            self._run = self._run + 1 if p >= opts.speech_threshold else 0
            if self._run < self._start_chunks:
                return None
            # onset: the turn holds the pre-roll and the speech chunks that proved the onset
            self._turn = list(self._history)
            self._history.clear()
            self._turn_start = self._position - len(self._turn) * self._chunk
            self._speech_chunks = self._run
            self._silent_chunks = 0
            self._vad_speech_end = self._position
            self._run = 0
            self._speech_db_sum, self._speech_db_count = 0.0, 0
            self._track_speech_level(level_list)
            self._state = TurnState.SPEAKING
            onset = self._position - self._start_chunks * self._chunk
            return TurnStarted(onset_samples=onset, decided_samples=self._position)

        self._turn.append(chunk)
        speaking = self._state is TurnState.SPEAKING
        if p >= opts.speech_threshold or (speaking and p >= opts.silence_threshold):
            self._speech_chunks += 1
            self._silent_chunks = 0
            self._vad_speech_end = self._position
            if p >= opts.speech_threshold:
                self._track_speech_level(level_list)
            self._state = TurnState.SPEAKING
        else:
            if self._silent_chunks == 0:
                self._speech_end = self._locate_speech_end()
            self._silent_chunks += 1
            self._state = TurnState.PAUSED

        if self._state is TurnState.PAUSED and self._position - self._speech_end >= self._silence_samples:
            return self._finish(cut=False, decided=self._position)
        if len(self._turn) >= self._max_chunks:
            self._speech_end = self._position
            return self._finish(cut=True, decided=self._position)
        return None

    def check_partial(self) -> TurnEvent | None:
        """In a pause, end the turn mid-chunk once the silence is long enough and the new audio is quiet.

        Called after the chunks of each input are stepped; a no-op when the input ended on a chunk
        boundary."""
        if self._state is not TurnState.PAUSED or not self._pending_len:
            return None
        now = self._position + self._pending_len
        if now - self._speech_end < self._silence_samples:
            return None
        levels = _block_db(self._pending[: self._pending_len], self._block)
        if levels.size == 0 or float(levels.max()) >= self._sound_threshold_db():
            return None
        return self._finish(cut=False, decided=now)

    def _locate_speech_end(self) -> int:
        """The acoustic end of speech: the last loud block within the VAD's tail."""
        earliest = max(self._vad_speech_end - self._tail_samples, self._turn_start)
        threshold = self._sound_threshold_db()
        for end, level in reversed(self._blocks):
            if end <= earliest:
                break
            if end <= self._vad_speech_end and level >= threshold:
                return end
        return earliest

    def _track_noise(self, levels: list[float]) -> None:
        """Follow the noise floor: down at once, up slowly (speech must not drag it up)."""
        low, high = _NOISE_FLOOR_RANGE_DB
        for db in levels:
            self._noise_db = db if db < self._noise_db else self._noise_db + 0.05 * (db - self._noise_db)
        self._noise_db = min(max(self._noise_db, low), high)

    def _finish(self, *, cut: bool, decided: int) -> TurnEvent:
        speech_ms = round(self._speech_chunks * self._chunk_ms)
        enough = self._speech_chunks >= self._min_speech_chunks
        audio = np.concatenate(self._turn) if self._turn else np.zeros(0, dtype=np.float32)
        keep = max(0, min(audio.shape[0], self._speech_end + self._trailing_samples - self._turn_start))
        turn_start, speech_end = self._turn_start, self._speech_end
        self.reset()
        if not enough:
            return TurnDiscarded(speech_ms=speech_ms, decided_samples=decided)
        return TurnEnded(
            audio=AudioFrame(audio[:keep], self._rate, turn_start),
            speech_end_samples=speech_end,
            decided_samples=decided,
            speech_ms=speech_ms,
            cut=cut,
        )
