"""What the fake cloud servers answer (`Reply`) and what they were asked (`FakeRequest`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.audio import AudioFrame

__all__ = [
    "FakeRequest",
    "FakeToolCall",
    "Outcome",
    "Reply",
    "ReplySource",
    "UploadedFile",
    "parse_multipart",
]

Outcome = Literal["pending", "completed", "disconnected", "cut"]
"""How an exchange ended: still running, answered in full, the client went away first, or the
fake dropped the connection on purpose (`Reply.cut_after`)."""


@dataclass(frozen=True, slots=True)
class FakeToolCall:
    """A tool call an LLM fake makes in its reply, after the reply's text (`Reply.tool_calls`).

    Streamed as the API streams calls: its id and name first, then its arguments' JSON in pieces
    of `fragment_chars` characters, cut wherever they fall (inside a string, a number, an escape).
    Each piece is a content chunk, so `Reply.cut_after`, `error_after` and `stall_after` can strike
    in the middle of a call.
    """

    name: str
    """The tool's name."""
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    """The arguments: an object (sent as its JSON), or JSON text sent as is (e.g. malformed)."""
    id: str | None = None
    """The call's id; default `toolu_fake_<n>` (Anthropic) or `call_fake_<n>` (Groq), n counting
    the calls of the reply from 0."""
    fragment_chars: int | None = 8
    """Length of each piece of the arguments' JSON; None sends it in one piece (as Groq usually does)."""

    def arguments_json(self) -> str:
        """The arguments as the fake sends them."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))

    def fragments(self) -> tuple[str, ...]:
        """The pieces of `arguments_json()`, in order (none when it is empty)."""
        text = self.arguments_json()
        step = self.fragment_chars or len(text) or 1
        return tuple(text[i : i + step] for i in range(0, len(text), step))


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer, with optional faults. Text fields are used by the fakes that speak text.

    Content goes out in chunks: for the LLM fakes, text deltas, then the pieces of each tool call's
    arguments (`tool_calls`); 100 ms of audio for the TTS fake (a transcription is a single body).
    Faults apply in this order: `stall_before_s`, then `status` (an error answer with the
    provider's documented error body), then per chunk `error_after`, `cut_after`,
    `stall_after`/`stall_s` and `chunk_delay_s`.
    """

    text: str = "Hello! How can I help you today?"
    """LLM: the reply; STT: the transcript; TTS: unused (the request's text sets the tone's length)."""
    deltas: tuple[str, ...] | None = None
    """LLM: exact text deltas to stream; default `text` split after each run of spaces."""
    audio: AudioFrame | None = None
    """TTS: the audio to stream (resampled to the requested rate); default a tone 60 ms per character."""
    input_tokens: int = 25
    """LLM: prompt tokens to report."""
    output_tokens: int | None = None
    """LLM: generated tokens to report; default the number of deltas."""
    status: int = 200
    """Answer with this HTTP error status instead (429, 500, 401, 529, ...)."""
    stall_before_s: float = 0.0
    """Send nothing at all for this long first (no status line, no headers)."""
    chunk_delay_s: float = 0.0
    """Pause before each content chunk after the first (token pacing)."""
    stall_after: int | None = None
    """After this many content chunks, go silent for `stall_s` (in the middle of the body)."""
    stall_s: float = 0.0
    """Length of the mid-stream stall."""
    cut_after: int | None = None
    """Drop the connection after this many content chunks (0: right after the headers)."""
    tool_calls: tuple[FakeToolCall, ...] = ()
    """LLM: tool calls to make after the text (set `text=""` for calls alone); the reply then
    ends with Anthropic's `stop_reason: "tool_use"` or OpenAI-style `finish_reason: "tool_calls"`."""
    error_after: int | None = None
    """LLM: after this many content chunks, send the API's error event inside the stream (for
    `error_status`) and end the body there: Anthropic's `event: error`, Groq's `data: {"error": ...}`."""
    error_status: int = 529
    """The HTTP status whose error type the `error_after` event carries (529: `overloaded_error`)."""

    def text_deltas(self) -> tuple[str, ...]:
        if self.deltas is not None:
            return self.deltas
        return tuple(re.findall(r"\s*\S+\s*", self.text)) or ("",)

    def has_text(self) -> bool:
        """LLM: whether the reply has a text part (a reply of tool calls alone has none)."""
        return bool("".join(self.text_deltas())) or not self.tool_calls

    def content_chunks(self) -> int:
        """LLM: how many content chunks the reply streams (text deltas and argument pieces)."""
        deltas = len(self.text_deltas()) if self.has_text() else 0
        return deltas + sum(len(call.fragments()) for call in self.tool_calls)


ReplySource = Reply | Callable[["FakeRequest"], Reply]
"""A fixed reply, or a function of the request that makes one."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file part of a `multipart/form-data` request."""

    filename: str | None
    """The part's `filename`, if it had one."""
    content_type: str | None
    """The part's own `Content-Type`, if it had one."""
    data: bytes
    """The file's bytes, exactly as received."""


@dataclass(slots=True)
class FakeRequest:
    """A request a fake received, and how the exchange went (updated while it runs)."""

    method: str
    """`GET`, `POST`, ..."""
    path: str
    """Path without the query string, e.g. `/v1/messages`."""
    query: dict[str, str]
    """Query parameters (last value wins)."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    body: bytes
    """The raw request body."""
    form: dict[str, str] = field(default_factory=dict)
    """Text fields of a multipart or URL-encoded form body."""
    files: dict[str, UploadedFile] = field(default_factory=dict)
    """File fields of a multipart body, by field name."""
    status: int = 0
    """HTTP status the fake answered with (0 until it sends one)."""
    chunks_sent: int = 0
    """Content chunks sent so far (text deltas, audio chunks)."""
    outcome: Outcome = "pending"
    """How the exchange ended."""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a `multipart/form-data` body into text fields and files (bytes kept exact)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ValueError("multipart content type without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    form: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name_match = re.search(r'(?<![a-z])name="([^"]*)"', disposition)
        if name_match is None:
            continue
        file_match = re.search(r'filename="([^"]*)"', disposition)
        if file_match is not None or "content-type" in headers:
            filename = file_match.group(1) if file_match else None
            files[name_match.group(1)] = UploadedFile(filename, headers.get("content-type"), data)
        else:
            form[name_match.group(1)] = data.decode("utf-8")
    return form, files
