"""Sentence segmentation of streamed LLM text, so speech can start before the reply is complete.

`SentenceSplitter.push(delta)` returns the sentences completed by that delta; `flush()` returns the
rest at the end of the reply. A boundary is end punctuation (`.`, `!`, `?`, `…`, or a run of them,
with closing quotes or brackets) followed by white space, or a line break. The splitter waits for
the character after a full stop before deciding, so "3.5" and "example.com" stay whole, and it keeps
abbreviations ("Dr.", "e.g.", "U.S.") and initials ("J. R. R. Tolkien") inside their sentence.

A sentence that runs long without a full stop is cut at a clause boundary (`,`, `;`, `:`, a dash)
once it passes `max_chars`, so a long first sentence does not hold back the first audio.

The first piece of a reply may be shorter than a sentence (`first_clause_chars`,
`first_piece_words`): a TTS that speaks whole pieces starts sooner on a short one, and the rest of
the reply keeps whole sentences for their prosody.
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

# Words that lean on the next one: a first piece cut after words ends before them, not after.
LEANING_WORDS = frozenset(
    {
        "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "and",
        "or", "but", "nor", "so", "as", "than", "that", "if", "my", "your", "his", "her", "its",
        "our", "their", "this", "these", "those", "very", "about",
    }
)  # fmt: skip

_END = ".!?…"
_CLOSERS = "\"'”’)]»"
_CLAUSE = re.compile(r"[,;:](?=\s)|\s[–—-]\s")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_WORD = re.compile(r"\S+")


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
        self,
        *,
        max_chars: int = 160,
        min_chars: int = 2,
        first_clause_chars: int | None = None,
        first_piece_words: int | None = None,
    ) -> None:
        if first_piece_words is not None and first_piece_words < 1:
            raise ValueError("first_piece_words must be at least 1 (or None)")
        self.max_chars = max_chars
        """A sentence longer than this is cut at its last clause boundary."""
        self.first_clause_chars = first_clause_chars
        """If set, the first piece of the reply ends at the first clause boundary past this many
        characters: a shorter first piece means earlier first audio from a TTS that speaks whole
        pieces."""
        self.first_piece_words = first_piece_words
        """If set, the first piece of the reply ends after this many words at most (at the first
        word boundary past them that does not follow an abbreviation), when no sentence end or
        first clause came sooner."""
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
            if not self._emitted:
                for early in self._first_piece_cuts():
                    if early is not None and (cut is None or early < cut):
                        cut = early
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

    def _first_piece_cuts(self) -> tuple[int | None, int | None]:
        """Where the first piece may end before its sentence does: first clause, then N words."""
        clause = None if self.first_clause_chars is None else self._first_clause_cut(self.first_clause_chars)
        words = None if self.first_piece_words is None else self._words_cut(self.first_piece_words)
        return clause, words

    def _words_cut(self, count: int) -> int | None:
        """Where a first piece of `count` words ends: after the `count`-th word (or the first later
        one that is not an abbreviation), but before the words leaning on the next one that end it
        ("a", "of", "and": "The moon is | a lunar body", not "The moon is a | lunar body"), if one
        word or more stays. None until that word is followed by white space."""
        starts: list[int] = []
        for match in _WORD.finditer(self._buffer):
            end = match.end()
            if end == len(self._buffer):
                return None  # the word may go on in the next delta
            starts.append(match.start())
            if len(starts) < count or (
                self._buffer[end - 1] == "." and _is_abbreviation(self._buffer, end - 1)
            ):
                continue
            cut = end
            while len(starts) > 1 and self._buffer[starts[-1] : cut].strip().lower() in LEANING_WORDS:
                cut = starts.pop()
            return cut
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


def split_sentences(
    text: str,
    *,
    max_chars: int = 160,
    first_clause_chars: int | None = None,
    first_piece_words: int | None = None,
) -> list[str]:
    """Split a whole text the way a streamed one would be."""
    splitter = SentenceSplitter(
        max_chars=max_chars, first_clause_chars=first_clause_chars, first_piece_words=first_piece_words
    )
    return splitter.push(text) + splitter.flush()
