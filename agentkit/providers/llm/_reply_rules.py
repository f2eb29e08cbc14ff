"""Rules for a small local model's streamed reply: stop after its first sentences, drop an echoed label.

`SentenceLimit` is the stop rule. A small model states its answer in the first sentence or two and
then wanders ("The capital of France is Paris. It is also known as ..."), and on a CPU every extra
token costs time the caller waits through. `SentenceLimit(n)` is fed the reply as it streams and
says how much of each piece to pass on; once the n-th sentence has ended it passes nothing more,
and the generation stops.

```
feed("The capital")            -> ("The capital", False)
feed(" of France is Paris.")   -> (" of France is Paris.", False)   the "." may still be "Paris.com"
feed(" It is")                 -> ("", True)                       n = 1: the space ends the sentence
```

A sentence ends at end punctuation (`.`, `!`, `?`, `…`, or a run of them, then any closing quotes
or brackets) followed by white space, or at a line break; the kept text stops at the punctuation.
Nothing is held back: the punctuation is passed on at once, and the decision falls on the
character after it. A full stop after an initial ("J. Smith"), a common abbreviation ("Dr.",
"e.g.") or a list item's number ("1. Paris") does not end a sentence; these rules are a small
subset of the agent's sentence splitter (`agentkit/agent/_sentences.py`), which this layer may not
import.

`LabelTrimmer` drops an answer label that a model copied from few-shot examples written as
`Q: ... A: ...` ("A: There are 7 days in a week." is spoken as "A, there are..."). Only a reply
that starts with "a" is held back, and only until it no longer matches a label: a token or two.
"""

from __future__ import annotations

import re

__all__ = ["LabelTrimmer", "SentenceLimit"]

_END = ".!?…"
_CLOSERS = "\"'”’)]»"
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "vs", "etc", "e.g", "i.e", "approx"}
)
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_LABELS = ("a:", "answer:", "assistant:")


class SentenceLimit:
    """Cuts one streamed reply after `max_sentences` sentences (make a new one per reply)."""

    def __init__(self, max_sentences: int) -> None:
        if max_sentences < 1:
            raise ValueError("max_sentences must be at least 1")
        self.max_sentences = max_sentences
        self.sentences = 0
        """Sentences completed so far."""
        self._text = ""
        self._passed = 0  # characters of `_text` passed on
        self._start = 0  # where the current sentence began
        self.done = False
        """The limit was reached: `feed` passes nothing more."""

    def feed(self, delta: str) -> tuple[str, bool]:
        """The part of `delta` to pass on, and whether the reply is complete (stop generating)."""
        if self.done:
            return "", True
        scan = len(self._text)
        self._text += delta
        for index in range(scan, len(self._text)):
            if self._text[index].isspace() and self._ends_sentence(index):
                self.sentences += 1
                self._start = index
                if self.sentences >= self.max_sentences:
                    self.done = True
                    kept = self._text[self._passed : index].rstrip()
                    self._passed = len(self._text)
                    return kept, True
        kept, self._passed = self._text[self._passed :], len(self._text)
        return kept, False

    def _ends_sentence(self, space: int) -> bool:
        """Whether the white space at `space` follows the end of a (non-empty) sentence."""
        text = self._text
        if not text[self._start : space].strip():
            return False  # nothing since the last end: blank lines, spaces after a full stop
        if text[space] == "\n":
            return True
        end = space
        while end > self._start and text[end - 1] in _CLOSERS:
            end -= 1
        if end == self._start or text[end - 1] not in _END:
            return False
        ellipsis = end >= 2 and text[end - 2] == "."
        return text[end - 1] != "." or ellipsis or not self._dot_inside(end - 1)

    def _dot_inside(self, dot: int) -> bool:
        """Whether the full stop at `dot` belongs to a word rather than ending the sentence."""
        match = _WORD_BEFORE.search(self._text, self._start, dot)
        if match is None:
            return False
        word = match.group(1)
        initial = len(word) == 1 and word.isalpha() and word.isupper()  # "J. Smith"
        numbered = word.isdigit() and not self._text[self._start : match.start()].strip()  # "1. Paris"
        return initial or numbered or word.lower().rstrip(".") in _ABBREVIATIONS


class LabelTrimmer:
    """Drops `A:`, `Answer:` or `Assistant:` (any case) at the start of one streamed reply."""

    def __init__(self) -> None:
        self._held = ""
        self._decided = False

    def feed(self, delta: str) -> str:
        """The part of `delta` to pass on now."""
        if self._decided:
            return delta
        self._held += delta
        head = self._held.lstrip()
        key = "".join(head.split()).lower()  # "A :" is a label too
        for label in _LABELS:
            if key.startswith(label):
                self._decided = True
                rest = head[head.index(":") + 1 :].lstrip()
                self._held = ""
                return rest
        if any(label.startswith(key) for label in _LABELS):
            return ""  # could still become a label: hold it
        self._decided = True
        held, self._held = self._held, ""
        return held

    def end(self) -> str:
        """What is still held back when the reply ends."""
        held, self._held = self._held, ""
        self._decided = True
        return held
