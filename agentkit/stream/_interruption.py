"""False interruptions: sound over a reply pauses it at once, and only real speech stops it.

A caller who says "mm-hmm" or coughs while the agent talks is not taking the floor. So an onset over
a reply (a `TurnStarted` while `replying`) is only *suspected*: the output pauses at once (the caller
is not talked over) and, within `interrupt_decision_ms` of caller audio, the interruption is either
*confirmed* (today's barge-in: flush, history = what was heard) or found *false* (the reply resumes
exactly where it paused):

```
           onset over a reply: pause the output
   IDLE ──────────────────────────────────────────► SUSPECTED ──── speech >= interrupt_min_speech_ms,
    ▲                                                 │  │          and words that are not backchannels
    │                                                 │  │          where they can be transcribed
    │  the turn ends: it is dropped (not a turn)      │  └─────────► CONFIRMED: barge-in, the turn goes on
    │                                                 │                         (back to IDLE)
    │     the sound ended, or interrupt_decision_ms   │
    │     passed, without them: FALSE, resume         ▼
    └──────────────────────────────────────────── DISMISSED ── interrupt_min_speech_ms more speech ──►
                                                                 SUSPECTED again (pause)
```

A FALSE decision says why (`FalseInterruptionReason`): `too_short` (less speech than
`interrupt_min_speech_ms`), `backchannel` (only words of `backchannels`), `no_words` (fewer than
`interrupt_min_words` other words, or none at all). Without words, speech alone decides, as soon as
there is enough of it. Words count where the handler can transcribe the sound in time
(`TurnTakingHandler.transcribe_interruption`; an `Agent` with local STT): the decision then waits
for the sound's end or the deadline, whichever comes first, and transcribes the sound once. (An
earlier look at the first few hundred milliseconds was tried and dropped: a speech model guesses
wildly at a word cut in half, and "yeah" came back as "Yah, huh, huh".) For the same reason, while
the caller is still talking at the deadline, the transcript's last word, and trailing words that
begin a backchannel phrase ("yeah, I" of "yeah, I see"), do not count.

Every threshold counts caller audio (media samples), not wall-clock time, so the same audio always
gets the same decision. `InterruptionGate` is the synchronous state machine; the handler does the
pausing, transcribing and flushing (`_turn_handler.py`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agentkit.stream._events import FalseInterruptionReason

if TYPE_CHECKING:
    from agentkit.stream._turn import TurnStarted, TurnTakingOptions

__all__ = [
    "BACKCHANNELS",
    "GateAction",
    "InterruptionDecision",
    "InterruptionGate",
    "InterruptionState",
    "Verdict",
    "judge_words",
]

BACKCHANNELS: tuple[str, ...] = (
    "mm-hmm", "mhm", "mm", "hmm", "uh-huh", "yeah", "yep", "yes", "right", "okay", "ok", "sure",
    "i see", "got it", "alright", "all right",
)  # fmt: skip
"""What `TurnTakingOptions.backchannels` holds unless set: acknowledgements, not turns."""

Verdict = Literal["confirmed", "backchannel", "too_short", "no_words"]
"""A decision on a suspected interruption: `confirmed`, or why it is false."""
GateAction = Literal["confirm", "decide", "suspect"]
"""What `InterruptionGate.step` asks the handler to do after a frame."""

_WORD = re.compile(r"[a-z0-9']+")
_MAX_PHRASE_WORDS = 4


def _words(text: str) -> list[str]:
    """Lower-case words; hyphens join ("mm-hmm" is one word, as is "mm hmm" when matched)."""
    return _WORD.findall(text.lower().replace("-", ""))


def judge_words(
    text: str, backchannels: tuple[str, ...], min_words: int, *, partial: bool = False
) -> Verdict:
    """Whether a transcript holds at least `min_words` words that are not backchannels.

    A phrase matches consecutive words whatever their spacing ("I see", "uh huh" = "uh-huh").
    `partial`: the caller is still talking, so the last word (perhaps cut in half) and trailing words
    that begin a phrase ("yeah, I" of "yeah, I see") do not count yet.
    """
    words = _words(text)
    if not words:
        return "no_words"
    split = [_words(phrase) for phrase in backchannels]
    phrases = {"".join(p) for p in split}
    if partial:
        last = words.pop()
        starts = {tuple(p[:k]) for p in split for k in range(1, len(p))}
        for k in range(min(_MAX_PHRASE_WORDS, len(words)), 0, -1):
            if tuple(words[-k:]) in starts:
                del words[-k:]
                break
        if not words:
            return "backchannel" if last in phrases or (last,) in starts else "no_words"
    content = 0
    i = 0
    while i < len(words):
        for n in range(min(_MAX_PHRASE_WORDS, len(words) - i), 0, -1):
            if "".join(words[i : i + n]) in phrases:
                i += n
                break
        else:
            content += 1
            i += 1
    if content >= min_words:
        return "confirmed"
    return "backchannel" if content == 0 else "no_words"


class InterruptionState(enum.Enum):
    IDLE = "idle"
    SUSPECTED = "suspected"
    DISMISSED = "dismissed"


@dataclass(frozen=True, slots=True)
class InterruptionDecision:
    """One step of a suspected interruption, for `TurnTakingHandler.on_interruption`."""

    outcome: Literal["suspected", "confirmed", "false"]
    onset: TurnStarted
    """The onset over the reply that was suspected."""
    decided_samples: int
    """Media-clock position at which this step was decided."""
    speech_ms: int
    """Milliseconds of the caller's speech by then."""
    heard_ms: int
    """Milliseconds of the reply the caller had heard when it paused (suspected, false) or was
    flushed (confirmed)."""
    reason: FalseInterruptionReason | None = None
    """Why it was false (only for `false`)."""
    text: str | None = None
    """What the caller said, when it was transcribed for the decision."""


class InterruptionGate:
    """The state machine of the module docstring, for one session; plain synchronous code.

    `words`: the handler can transcribe a suspected interruption (and `interrupt_min_words` > 0).
    """

    def __init__(self, options: TurnTakingOptions, *, sample_rate: int, words: bool) -> None:
        self.options = options
        self.words = words and options.interrupt_min_words > 0
        self._decision_samples = options.interrupt_decision_ms * sample_rate // 1000
        self._state = InterruptionState.IDLE
        self._onset: TurnStarted | None = None
        self._deadline = 0
        self._dismissed_speech_ms = 0

    @property
    def state(self) -> InterruptionState:
        return self._state

    @property
    def onset(self) -> TurnStarted:
        """The onset being judged (SUSPECTED or DISMISSED)."""
        if self._onset is None:
            raise RuntimeError("no interruption is being judged")
        return self._onset

    @property
    def immediate(self) -> bool:
        """Every onset over a reply interrupts at once: no speech or words to wait for."""
        return self.options.interrupt_min_speech_ms <= self.options.speech_start_ms and not self.words

    def suspect(self, onset: TurnStarted, *, at_samples: int) -> None:
        """An onset over a reply (or more speech after a dismissal): the output has been paused."""
        self._state = InterruptionState.SUSPECTED
        self._onset = onset
        self._deadline = at_samples + self._decision_samples

    def step(self, *, position_samples: int, speech_ms: int) -> GateAction | None:
        """After each frame (turn events handled): what to do now, if anything."""
        min_speech = self.options.interrupt_min_speech_ms
        if self._state is InterruptionState.DISMISSED:
            return "suspect" if speech_ms >= self._dismissed_speech_ms + min_speech else None
        if self._state is not InterruptionState.SUSPECTED:
            return None
        if speech_ms >= min_speech and not self.words:
            return "confirm"
        return "decide" if position_samples >= self._deadline else None

    def judge(self, speech_ms: int, text: str | None, *, partial: bool = False) -> Verdict:
        """The decision on `speech_ms` of speech and its transcript (None: none in time, so speech
        alone decides); `partial`: the caller is still talking (see `judge_words`)."""
        if speech_ms < self.options.interrupt_min_speech_ms:
            return "too_short"
        if text is None or not self.words:
            return "confirmed"
        opts = self.options
        return judge_words(text, opts.backchannels, opts.interrupt_min_words, partial=partial)

    def confirmed(self) -> None:
        """The barge-in goes ahead; the turn goes on as any turn."""
        self._state = InterruptionState.IDLE
        self._onset = None

    def dismissed(self, speech_ms: int) -> None:
        """False, the reply resumed; the caller may still be talking (more speech suspects again)."""
        self._state = InterruptionState.DISMISSED
        self._dismissed_speech_ms = speech_ms

    def reset(self) -> None:
        """The turn is over."""
        self._state = InterruptionState.IDLE
        self._onset = None
