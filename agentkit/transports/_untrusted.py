"""Input from clients, checked before anything is built from it.

Every transport parses client JSON with `loads_untrusted` and checks the strings a client chooses
(session ids, the caller, tokens) with `check_id` / `check_text` before it opens a session or a peer
connection. Both raise `ProtocolError` with a message fit for the client (it never repeats the input).

- JSON: at most `max_bytes` (UTF-8), nested at most `MAX_JSON_DEPTH` arrays/objects deep, no
  `NaN`/`Infinity` literals, integers of at most 4300 digits (Python's own limit). The depth is
  checked before decoding (brackets outside strings are counted), so a `[[[[...` of any depth costs
  one linear scan and never reaches the recursive decoder.
- Ids (`session_id`, FastRTC's `websocket_id`, Twilio's `CallSid`/`streamSid`): 1 to 128 characters
  of `A-Z a-z 0-9 _ . : @ + -` (`ID_CHARACTERS`): safe in logs, URLs and file names.
- Text (`caller`): 1 to 128 characters, none of them a control, format, surrogate or line/paragraph
  separator character (Unicode categories Cc, Cf, Cs, Zl, Zp), so it cannot forge a log line, and
  always encodable as UTF-8 (a store can keep it).
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import numpy as np

from agentkit.exceptions import MessageTooLargeError, ProtocolError

__all__ = [
    "ID_CHARACTERS",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_CHARS",
    "check_id",
    "check_text",
    "is_id",
    "is_text",
    "loads_untrusted",
    "optional_id",
    "optional_text",
]

MAX_JSON_DEPTH = 32
"""Arrays and objects nested deeper than this are refused (every protocol message needs 4 at most)."""
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 128
ID_CHARACTERS = "A-Za-z0-9_.:@+-"
"""The characters of a client-chosen id (a regular-expression character class)."""

_ID = re.compile(f"[{ID_CHARACTERS}]{{1,{MAX_ID_CHARS}}}")
_BAD_TEXT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes included


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_untrusted(data: str | bytes, *, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode one JSON document from a client; `ProtocolError` (`MessageTooLargeError` for size) if
    it is not JSON or breaks the limits in the module docstring."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise MessageTooLargeError(f"message of {len(raw)} bytes is over the limit of {max_bytes}")
    if _too_deep(raw, max_depth):
        raise ProtocolError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data, parse_constant=_no_constant)  # bytes: UTF-8 (or -16/-32) detected
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ProtocolError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError:  # includes UnicodeDecodeError and integers over 4300 digits
        raise ProtocolError("message is not valid JSON") from None


def _too_deep(raw: bytes, max_depth: int) -> bool:
    """Whether brackets outside strings nest deeper than `max_depth` (unclosed ones count too)."""
    if raw.count(b"[") + raw.count(b"{") <= max_depth:  # the common case: no scan needed
        return False
    text = _STRING.sub("", raw.decode("utf-8", "replace"))
    codes = np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)
    opens = (codes == ord("[")) | (codes == ord("{"))
    steps = opens.astype(np.int32) - ((codes == ord("]")) | (codes == ord("}")))
    return bool(steps.size) and int(np.cumsum(steps).max()) > max_depth


def is_id(value: object) -> bool:
    """Whether `value` is a valid client-chosen id (see the module docstring)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, what: str) -> str:
    """`value` if it is a valid id, else `ProtocolError` naming `what`."""
    if not is_id(value):
        raise ProtocolError(f"{what} must be a string of 1 to {MAX_ID_CHARS} characters from {ID_CHARACTERS}")
    assert isinstance(value, str)
    return value


def optional_id(value: object, what: str) -> str | None:
    """None for None, else `check_id`."""
    return None if value is None else check_id(value, what)


def is_text(value: object, max_chars: int = MAX_TEXT_CHARS) -> bool:
    """Whether `value` is short printable text (see the module docstring)."""
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        return False
    return not any(unicodedata.category(c) in _BAD_TEXT_CATEGORIES for c in value)


def check_text(value: object, what: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    """`value` if it is short printable text, else `ProtocolError` naming `what`."""
    if not is_text(value, max_chars):
        raise ProtocolError(
            f"{what} must be a string of 1 to {max_chars} characters without control characters"
        )
    assert isinstance(value, str)
    return value


def optional_text(value: object, what: str, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """None for None, else `check_text`."""
    return None if value is None else check_text(value, what, max_chars)
