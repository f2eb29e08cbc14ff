"""Sentence segmentation of streamed LLM text, so speech can start before the reply is complete.

`SentenceSplitter.push(delta)` returns the sentences completed by that delta; `flush()` returns the
rest at the end of the reply. A boundary is end punctuation (`.`, `!`, `?`, `…`, or a run of them,
with closing quotes or brackets) followed by white space, or a line break. The splitter waits for
the character after a full stop before deciding, so "3.5" and "example.com" stay whole, and it keeps
abbreviations ("Dr.", "e.g.", "U.S.") and initials ("J. R. R. Tolkien") inside their sentence.

A sentence that runs long without a full stop is cut at a clause boundary (`,`, `;`, `:`, a dash)
once it passes `max_chars`, so a long first sentence does not hold back the first audio.
"""

from __future__ import annotations

import re

__all__ = ["SentenceSplitter", "split_sentences"]

# Lower-case forms, without the final full stop. Titles and common short forms that are followed by
# more of the same sentence far more often than they end one.
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "no", "nos",
        "fig", "figs", "vol", "vols", "approx", "dept", "est", "inc", "ltd", "co", "corp", "gen",
        "gov", "sen", "rep", "rev", "capt", "col", "lt", "sgt", "cf", "al", "min", "max", "jan",
        "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "e.g", "i.e",
        "a.m", "p.m", "u.s", "u.k", "u.n", "ph.d", "b.a", "m.a", "b.sc", "m.sc",
    }
)  # fmt: skip

_END = ".!?…"
_CLOSERS = "\"'”’)]»"
_CLAUSE = re.compile(r"[,;:](?=\s)|\s[–—-]\s")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the full stop at `text[dot]` ends an abbreviation or an initial, not a sentence."""
    match = _WORD_BEFORE.search(text, 0, dot)
    if match is None:
        return False
    word = match.group(1)
    if len(word) == 1 and word.isalpha() and word.isupper():
        return True  # an initial: "J. Smith"
    return word.lower().rstrip(".") in ABBREVIATIONS


class SentenceSplitter:
    """Incremental sentence splitter for one reply (make a new one per reply)."""

    def __init__(
        self, *, max_chars: int = 160, min_chars: int = 2, first_clause_chars: int | None = None
    ) -> None:
        self.max_chars = max_chars
        """A sentence longer than this is cut at its last clause boundary."""
        self.first_clause_chars = first_clause_chars
        """If set, the first piece of the reply ends at the first clause boundary past this many
        characters: a shorter first piece means earlier first audio from a TTS that speaks whole
        pieces."""
        self._emitted = False
        self.min_chars = min_chars
        """Fragments shorter than this (a lone "-", say) are joined to the next sentence."""
        self._buffer = ""
        self._scanned = 0  # buffer positions before this hold no undecided boundary

    def push(self, delta: str) -> list[str]:
        """Add streamed text; return the sentences it completed, in order."""
        self._buffer += delta
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if not self._emitted and self.first_clause_chars is not None:
                clause = self._first_clause_cut(self.first_clause_chars)
                if clause is not None and (cut is None or clause < cut):
                    cut = clause
            if cut is None:
                break
            self._take(cut, out)
        while len(self._buffer) > self.max_chars and (cut := self._clause_cut()) is not None:
            self._take(cut, out)
        return out

    def _take(self, cut: int, out: list[str]) -> None:
        self._emit(self._buffer[:cut], out)
        self._buffer = self._buffer[cut:]
        self._scanned = 0

    def flush(self) -> list[str]:
        """End of the reply: whatever is left, as a last sentence (or nothing)."""
        out: list[str] = []
        rest, self._buffer, self._scanned = self._buffer, "", 0
        text = rest.strip()
        if text:
            out.append(text)
        return out

    def _emit(self, sentence: str, out: list[str]) -> None:
        text = sentence.strip()
        if not text:
            return
        if len(text) < self.min_chars and any(c.isalnum() for c in self._buffer[len(sentence) :]):
            return  # too short to say on its own; it stays with the next sentence
        out.append(text)
        self._emitted = True

    def _next_cut(self) -> int | None:
        """Index just past the first decided sentence boundary in the buffer, if any."""
        text = self._buffer
        i = self._scanned
        while i < len(text):
            char = text[i]
            if char == "\n":
                if text[:i].strip():
                    return i + 1
            elif char in _END:
                end = i + 1
                while end < len(text) and (text[end] in _END or text[end] in _CLOSERS):
                    end += 1
                if end == len(text):
                    self._scanned = i  # undecided until the next character arrives
                    return None
                if text[end].isspace() and not (char == "." and end == i + 1 and _is_abbreviation(text, i)):
                    return end
                i = end
                continue
            i += 1
        self._scanned = len(text)
        return None

    def _first_clause_cut(self, min_chars: int) -> int | None:
        """Index just past the first clause boundary at or beyond `min_chars`, if there is one."""
        for match in _CLAUSE.finditer(self._buffer):
            if match.end() >= min_chars:
                return match.end()
        return None

    def _clause_cut(self) -> int | None:
        """Index just past the last clause boundary within `max_chars`, if there is one."""
        window = self._buffer[: self.max_chars]
        cuts = [m.end() for m in _CLAUSE.finditer(window)]
        return cuts[-1] if cuts and cuts[-1] >= self.min_chars else None


def split_sentences(text: str, *, max_chars: int = 160, first_clause_chars: int | None = None) -> list[str]:
    """Split a whole text the way a streamed one would be."""
    splitter = SentenceSplitter(max_chars=max_chars, first_clause_chars=first_clause_chars)
    return splitter.push(text) + splitter.flush()
