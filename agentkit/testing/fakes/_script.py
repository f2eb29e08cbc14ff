"""What the fake cloud servers answer (`Reply`) and what they were asked (`FakeRequest`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agentkit.audio import AudioFrame

__all__ = ["FakeRequest", "Outcome", "Reply", "ReplySource", "UploadedFile", "parse_multipart"]

Outcome = Literal["pending", "completed", "disconnected", "cut"]
"""How an exchange ended: still running, answered in full, the client went away first, or the
fake dropped the connection on purpose (`Reply.cut_after`)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer, with optional faults. Text fields are used by the fakes that speak text.

    Content goes out in chunks: text deltas for the LLM fakes, 100 ms of audio for the TTS fake (a
    transcription is a single body). Faults apply in this order: `stall_before_s`, then `status`
    (an error answer with the provider's documented error body), then per chunk `cut_after`,
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

    def text_deltas(self) -> tuple[str, ...]:
        if self.deltas is not None:
            return self.deltas
        return tuple(re.findall(r"\s*\S+\s*", self.text)) or ("",)


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
