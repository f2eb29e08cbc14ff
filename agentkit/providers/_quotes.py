"""Stray quotes off model output: Moonshine's `"'Hi there!` and a small LLM's `"Sure, I can help."`.

`clean_quotes` takes a whole text (a transcript); `QuoteTrimmer` does the same to streamed text (an
LLM reply, token by token). Both drop a pair of quotes around everything and a quote that opens or
closes nothing, and keep quotes inside a sentence (`He said "hi".`) and apostrophes (`don't`).
"""

from __future__ import annotations

__all__ = ["QuoteTrimmer", "clean_quotes"]

_PAIRS = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_OPENERS = frozenset(_PAIRS)
_CLOSERS = frozenset(_PAIRS.values())


def _quote_count(text: str, mark: str) -> int:
    """How often `mark` is used as a quote in `text`: an apostrophe between two letters does not count."""
    return sum(
        1
        for i, c in enumerate(text)
        if c == mark and not (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum())
    )


def clean_quotes(text: str) -> str:
    """`text` without surrounding quote pairs and stray leading (or trailing double) quotes."""
    text = text.strip()
    while text:
        first, last = text[0], text[-1]
        if first in _OPENERS and len(text) > 1 and last == _PAIRS[first]:
            inner = text[1:-1]
            if _quote_count(inner, first) % 2 == 0 and _quote_count(inner, last) % 2 == 0:
                text = inner.strip()  # a pair around everything
                continue
        if first in _OPENERS and _quote_count(text[1:], _PAIRS[first]) % 2 == 0:
            text = text[1:].lstrip()  # opens a quote that never closes
            continue
        closer_of = {v: k for k, v in _PAIRS.items()}
        if last in _CLOSERS - {"'"} and _quote_count(text[:-1], closer_of[last]) % 2 == 0:
            text = text[:-1].rstrip()  # closes a quote that never opened (a `'` may be a possessive)
            continue
        break
    return text


class QuoteTrimmer:
    """`clean_quotes` for a stream: `feed` each piece, then `end`; join what they return.

    Quotes at the very start are dropped; quotes and spaces at the end of what has been fed are held
    back until more text comes, and dropped at the end if they close the quote that was dropped.
    """

    def __init__(self) -> None:
        self._started = False
        self._opener: str | None = None
        self._held = ""
        self._inside = 0  # uses of the dropped opener's closing quote after it

    def feed(self, text: str) -> str:
        if not self._started:
            stripped = text.lstrip()
            while stripped and stripped[0] in _OPENERS:
                self._opener = self._opener or stripped[0]
                stripped = stripped[1:].lstrip()
            if not stripped:
                return ""
            self._started, text = True, stripped
        text = self._held + text
        body = text.rstrip("".join(_CLOSERS) + " \t\n")
        self._held = text[len(body) :]
        if self._opener is not None:
            self._inside += _quote_count(body, _PAIRS[self._opener])
        return body

    def end(self) -> str:
        """What was held back, unless it closes the quote dropped at the start."""
        held, self._held = self._held, ""
        if self._opener is not None and self._inside % 2 == 0:
            closer = _PAIRS[self._opener]
            stripped = held.rstrip()
            if stripped.endswith(closer):
                return stripped[:-1].rstrip()
        return held
