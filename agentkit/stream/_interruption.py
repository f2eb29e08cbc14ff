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
    │     the sound ended, or interrupt_decision_ms   │  (still talking at the deadline, a short
    │     passed, without them: FALSE, resume         ▼   sound that said nothing yet: its end)
    └──────────────────────────────────────────── DISMISSED ── interrupt_min_speech_ms more speech ──►
                                                                 SUSPECTED again (pause)
```

A FALSE decision says why (`FalseInterruptionReason`): `too_short` (less speech than
`interrupt_min_speech_ms`), `backchannel` (only words of `backchannels`, or a short sound's stray
word, below), `no_words` (fewer than `interrupt_min_words` other words, or none at all). Without
words, speech alone decides, as soon as there is enough of it. Words count where the handler can
transcribe the sound in time (`TurnTakingHandler.transcribe_interruption`; an `Agent` with local
STT): the decision then waits for the sound's end or the deadline, whichever comes first, and
transcribes the sound once. (An earlier look at the first few hundred milliseconds was tried and
dropped: a speech model guesses wildly at a word cut in half, and "yeah" came back as "Yah, huh,
huh".) For the same reason, while the caller is still talking at the deadline, the transcript's last
word, and trailing words that begin a backchannel phrase ("yeah, I" of "yeah, I see"), do not count;
and if what is left settles nothing while the sound is still short (`backchannel_max_speech_ms`),
the reply stays paused until the sound ends and its whole transcript decides.

What a small speech model writes for a backchannel is often not the word (Moonshine tiny, on
Kokoro's and espeak-ng's voices: "Amen, hm." and "And them," for "mm-hmm", "Ride, and." for
"right", "Come." or "Them." for "hmm"), so `judge_words` reads transcripts leniently:

- normalised: no punctuation, runs of a letter as one ("yeahh"), a word or phrase said again at
  once as one (a decoding loop), contractions by their first part ("what's");
- any hum is a backchannel, however spelled ("hm", "mhm", "mm-hm", "uh-huh", "um-hum");
- a word that sounds like a one-word item of either list (`sound_key`, a rough Metaphone) counts
  as it;
- in a short sound (at most `backchannel_max_speech_ms` of speech), `backchannel_max_words` stray
  words (neither backchannels nor `interruption_words`) still make a backchannel, but any of
  `interruption_words` ("stop", "wait", "sorry"...) confirms it, however short.

The last rule is the one that decides most hums, and its cost is a real one-word interruption that
the model mishears as another word ("Waiter," for "Wait."): that reply plays on. Two stray words
are not allowed, because "Slow down." and "Not now." are two words.

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
    "INTERRUPTION_WORDS",
    "GateAction",
    "InterruptionDecision",
    "InterruptionGate",
    "InterruptionState",
    "Verdict",
    "judge_words",
    "sound_key",
]

BACKCHANNELS: tuple[str, ...] = (
    "mm-hmm", "mhm", "mm", "hmm", "uh-huh", "yeah", "yep", "yes", "right", "okay", "ok", "sure",
    "i see", "got it", "alright", "all right",
)  # fmt: skip
"""What `TurnTakingOptions.backchannels` holds unless set: acknowledgements, not turns."""
INTERRUPTION_WORDS: tuple[str, ...] = (
    "stop", "wait", "no", "nope", "hold", "hang", "sorry", "pardon", "excuse", "hey", "hello", "what",
    "please",
)  # fmt: skip
"""What `TurnTakingOptions.interruption_words` holds unless set: words that take the floor on their
own ("Stop.", "Wait!", "Sorry?", "Hold on"), or make a short answer a request ("Yes, please"),
however short the sound. "but" is not one: it opens an objection rather than making one, the words
after it are judged when they come, and Moonshine hears some "uh-huh"s as "but"."""

Verdict = Literal["confirmed", "backchannel", "too_short", "no_words"]
"""A decision on a suspected interruption: `confirmed`, or why it is false."""
GateAction = Literal["confirm", "decide", "suspect"]
"""What `InterruptionGate.step` asks the handler to do after a frame."""

_WORD = re.compile(r"[a-z0-9']+")
_REPEATED_LETTER = re.compile(r"([a-z])\1+")
_HUM = re.compile(r"[hmnu]*[hm][hmnu]*")
_HUM_VOWEL = re.compile(r"[hm][hmnu]*[aeio][hmnu]*")
_MAX_PHRASE_WORDS = 4
_MAX_LOOP_WORDS = 3
_VOICELESS = str.maketrans("bdgvzcqj", "ptkfskkx")


def _words(text: str) -> list[str]:
    """Lower-case words, normalised for matching: hyphens join ("mm-hmm" is one word, as is "mm hmm"
    when matched), a contraction keeps its first part ("what's": "what"), runs of a letter are one
    ("yeahh", "mmhmm": "yeah", "mhm")."""
    words = []
    for token in _WORD.findall(text.lower().replace("-", "")):
        word = token.split("'")[0] or token.strip("'")
        if word:
            words.append(_REPEATED_LETTER.sub(r"\1", word))
    return words


def _unloop(words: list[str]) -> list[str]:
    """`words` with a word or phrase said again at once counted once: a speech model's decoding loop
    ("I see, I see, I see"), or a caller's "no, no, no"."""
    words = list(words)
    for n in range(1, _MAX_LOOP_WORDS + 1):
        i = 0
        while i + 2 * n <= len(words):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                del words[i + n : i + 2 * n]
            else:
                i += 1
    return words


def _hum(word: str) -> bool:
    """A hum, whatever its spelling (runs of a letter already one): only the letters h, m, n and u,
    with an h or an m ("hm", "mhm", "uh-huh", "um-hum", "hmhm"); or, beginning with h or m, at most
    one other vowel and two h's or m's ("mmham", "hmam", "hem"). A backchannel however a speech
    model writes it; "amen", "man", "me" or "no" are not hums."""
    if _HUM.fullmatch(word):
        return True
    return _HUM_VOWEL.fullmatch(word) is not None and sum(c in "hm" for c in word) >= 2


def sound_key(word: str) -> str:
    """A rough phonetic key of one word, in the spirit of Metaphone: silent letters dropped ("right",
    "write": "rt"), a voiced consonant the same as its voiceless pair ("ride": "rt", "god": "kt"),
    vowels dropped but for a leading one ("okay", "ok": "ak"), "h", "w" and "y" kept only before a
    vowel ("hmm": "m", "yeah": "y"). Words a speech model confuses for each other often share it."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return ""
    w = re.sub(r"^(?:kn|gn|pn)", "n", w)
    w = re.sub(r"^wr", "r", w)
    w = re.sub(r"^wh", "w", w)
    w = re.sub(r"^x", "s", w).replace("x", "ks")
    w = re.sub(r"mb$", "m", w)
    w = re.sub(r"(?<=.)gh(?![aeiou])", "", w)  # right, night, though
    for digraph, sound in (("tch", "x"), ("ch", "x"), ("sh", "x"), ("ph", "f"), ("th", "0"), ("ck", "k")):
        w = w.replace(digraph, sound)
    w = re.sub(r"ti(?=[ao])", "x", w)
    w = re.sub(r"c(?=[iey])", "s", w)
    w = re.sub(r"[hwy](?![aeiou])", "", w)
    if not w:
        return ""
    key = ["a" if w[0] in "aeiou" else w[0]]
    key += [c for c in w[1:] if c not in "aeiou"]
    out = ""
    for c in "".join(key).translate(_VOICELESS):
        if not out or out[-1] != c:
            out += c
    return out


def judge_words(
    text: str,
    backchannels: tuple[str, ...],
    min_words: int,
    *,
    partial: bool = False,
    interruption_words: tuple[str, ...] = (),
    fragment_words: int = 0,
) -> Verdict:
    """Whether a transcript interrupts: it holds one of `interruption_words`, or at least
    `min_words` (and more than `fragment_words`) other words that are not backchannels.

    Words are compared normalised (`_words`, `_unloop`): a phrase matches consecutive words whatever
    their spacing ("I see", "uh huh" = "uh-huh"), any hum is a backchannel (`_hum`), and a word that
    sounds like a one-word item of either list (the same `sound_key`, of two sounds at least, and not
    like one of the other list) counts as it ("Ride" for "right", "Weight" for "wait").
    `fragment_words`: the sound was short, so this many other words still make a backchannel (a
    speech model writes a hum as stray words: "Amen, hm." for "mm-hmm"); 0: none do.
    `partial`: the caller is still talking, so the last word (perhaps cut in half) and trailing words
    that begin a phrase ("yeah, I" of "yeah, I see") do not count yet.
    """
    words = _words(text)
    if not words:
        return "no_words"
    bc = _Phrases(backchannels)
    stop = _Phrases(interruption_words)
    last = words.pop() if partial else ""
    words = _unloop(words)
    if partial:
        for k in range(min(_MAX_PHRASE_WORDS, len(words)), 0, -1):
            if tuple(words[-k:]) in bc.starts:
                del words[-k:]
                break
        if not words:
            return "backchannel" if last in bc.spelled or _hum(last) or (last,) in bc.starts else "no_words"
    content = 0
    i = 0
    while i < len(words):
        n, kind = _match(words, i, bc, stop)
        if kind == "stop":
            return "confirmed"
        content += kind == "word"
        i += n
    if content >= min_words and content > fragment_words:
        return "confirmed"
    return "backchannel" if content == 0 or content <= fragment_words else "no_words"


_Item = Literal["stop", "backchannel", "word"]


class _Phrases:
    """A list of phrases, normalised as transcripts are, for `judge_words`: each matches consecutive
    words whatever their spacing ("uh huh" = "uh-huh"), and a one-word one also a word that sounds
    like it (`sound_key`; a phrase by sound would match too much: "get out" sounds like "got it")."""

    def __init__(self, phrases: tuple[str, ...]) -> None:
        split = [_words(phrase) for phrase in phrases]
        self.spelled = {"".join(p) for p in split if p}
        self.keys = {key for p in split if len(p) == 1 and len(key := sound_key(p[0])) >= 2}
        self.starts = {tuple(p[:k]) for p in split for k in range(1, len(p))}


def _match(words: list[str], i: int, bc: _Phrases, stop: _Phrases) -> tuple[int, _Item]:
    """How many words from `i` make one item, and what it is: "stop" (an interruption word),
    "backchannel" or "word"; the longest spelled match first, then one word that sounds like one of
    either list (by a key of two sounds at least, and not like one of the other list)."""
    for n in range(min(_MAX_PHRASE_WORDS, len(words) - i), 0, -1):
        phrase = "".join(words[i : i + n])
        if phrase in stop.spelled:
            return n, "stop"
        if phrase in bc.spelled or (n == 1 and _hum(phrase)):
            return n, "backchannel"
    key = sound_key(words[i])
    if key in stop.keys and key not in bc.keys:
        return 1, "stop"
    if key in bc.keys and key not in stop.keys:
        return 1, "backchannel"
    return 1, "word"


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
        self._until_end = False  # past the deadline, waiting for a short sound's end
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
        self._until_end = False

    def step(self, *, position_samples: int, speech_ms: int, speaking: bool) -> GateAction | None:
        """After each frame (turn events handled): what to do now, if anything; `speaking`: the
        caller's sound is going on (the detector is SPEAKING, not in a pause)."""
        min_speech = self.options.interrupt_min_speech_ms
        if self._state is InterruptionState.DISMISSED:
            return "suspect" if speech_ms >= self._dismissed_speech_ms + min_speech else None
        if self._state is not InterruptionState.SUSPECTED:
            return None
        if speech_ms >= min_speech and not self.words:
            return "confirm"
        if self._until_end:
            return "decide" if not speaking or speech_ms > self.options.backchannel_max_speech_ms else None
        return "decide" if position_samples >= self._deadline else None

    def judge(self, speech_ms: int, text: str | None) -> Verdict:
        """The decision on a sound that has ended (or paused): `speech_ms` of speech and its
        transcript (None: none in time, so speech alone decides)."""
        if text is None or not self.words or speech_ms < self.options.interrupt_min_speech_ms:
            return self._by_speech(speech_ms)
        return self._judge_words(text, speech_ms, partial=False)

    def judge_so_far(self, speech_ms: int, text: str | None) -> Verdict | None:
        """The same while the caller is still talking (see `judge_words`, `partial`); None: a short
        sound whose words settle nothing yet, so the reply stays paused and `step` asks for a
        decision again when the sound ends, or once it holds more than `backchannel_max_speech_ms`
        of speech (then every word heard so far counts, the last one too)."""
        if text is None or not self.words or speech_ms < self.options.interrupt_min_speech_ms:
            return self._by_speech(speech_ms)
        if self._until_end and speech_ms > self.options.backchannel_max_speech_ms:
            return self._judge_words(text, speech_ms, partial=False)  # it went on: all words count
        verdict = self._judge_words(text, speech_ms, partial=True)
        if verdict != "confirmed" and speech_ms <= self.options.backchannel_max_speech_ms:
            self._until_end = True
            return None
        return verdict

    def _by_speech(self, speech_ms: int) -> Verdict:
        """The decision on speech alone (no words to weigh, or too little speech to have any)."""
        return "too_short" if speech_ms < self.options.interrupt_min_speech_ms else "confirmed"

    def _judge_words(self, text: str, speech_ms: int, *, partial: bool) -> Verdict:
        opts = self.options
        short = speech_ms <= opts.backchannel_max_speech_ms
        return judge_words(
            text,
            opts.backchannels,
            opts.interrupt_min_words,
            partial=partial,
            interruption_words=opts.interruption_words,
            fragment_words=opts.backchannel_max_words if short else 0,
        )

    def confirmed(self) -> None:
        """The barge-in goes ahead; the turn goes on as any turn."""
        self._state = InterruptionState.IDLE
        self._onset = None
        self._until_end = False

    def dismissed(self, speech_ms: int) -> None:
        """False, the reply resumed; the caller may still be talking (more speech suspects again)."""
        self._state = InterruptionState.DISMISSED
        self._dismissed_speech_ms = speech_ms
        self._until_end = False

    def reset(self) -> None:
        """The turn is over."""
        self._state = InterruptionState.IDLE
        self._onset = None
        self._until_end = False
