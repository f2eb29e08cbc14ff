"""A restaurant's phone receptionist that books tables, and hands complaints to a colleague.

    ANTHROPIC_API_KEY=... agentkit run agents/concierge.py

Bookings live in a small SQLite file (`AGENTKIT_CONCIERGE_DB`, default `concierge.db` in the
per-user data folder). The receptionist checks availability, books (a write: it finishes even if the
caller talks over the agent) and cancels; a caller with a complaint is handed to the complaints
agent, who has its own instructions, voice and tools, and the same conversation; either one ends the
call politely once the caller is done.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from agentkit import Agent, ToolError, end_call_tool, tool
from agentkit.providers import AnthropicLLM, KokoroTTS, MoonshineSTT

TABLES = 6
"""Tables per sitting."""
Sitting = Literal["18:00", "19:30", "21:00"]


def _db_path() -> Path:
    configured = os.environ.get("AGENTKIT_CONCIERGE_DB")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "agentkit" / "concierge.db"


class BookingBook:
    """The restaurant's bookings, one SQLite file (each call opens its own short transaction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                """CREATE TABLE IF NOT EXISTS bookings (
                    id INTEGER PRIMARY KEY, day TEXT NOT NULL, sitting TEXT NOT NULL,
                    name TEXT NOT NULL, people INTEGER NOT NULL, phone TEXT)"""
            )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection, committed (or rolled back) and closed on the way out."""
        db = sqlite3.connect(self.path, timeout=5)
        try:
            with db:
                yield db
        finally:
            db.close()

    def free_tables(self, day: str, sitting: str) -> int:
        with self._connect() as db:
            (taken,) = db.execute(
                "SELECT count(*) FROM bookings WHERE day = ? AND sitting = ?", (day, sitting)
            ).fetchone()
        return max(0, TABLES - int(taken))

    def book(self, day: str, sitting: str, name: str, people: int, phone: str | None) -> int:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            (taken,) = db.execute(
                "SELECT count(*) FROM bookings WHERE day = ? AND sitting = ?", (day, sitting)
            ).fetchone()
            if taken >= TABLES:
                raise ToolError(f"no table is free on {day} at {sitting}")
            cursor = db.execute(
                "INSERT INTO bookings (day, sitting, name, people, phone) VALUES (?, ?, ?, ?, ?)",
                (day, sitting, name, people, phone),
            )
            return int(cursor.lastrowid or 0)

    def cancel(self, booking: int, name: str) -> bool:
        with self._connect() as db:
            cursor = db.execute(
                "DELETE FROM bookings WHERE id = ? AND name = ? COLLATE NOCASE", (booking, name)
            )
            return cursor.rowcount > 0


def _day(date: str) -> str:
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise ToolError("give the date as YYYY-MM-DD") from None
    if day < dt.date.today():
        raise ToolError("that date is in the past")
    return day.isoformat()


class Complaints(Agent):
    """Takes complaints seriously, writes them down, and offers a gesture."""

    name = "complaints"
    instructions = (
        "You handle complaints for the restaurant Chez Agentkit on the phone. Apologise sincerely, "
        "ask what happened, and record the complaint with `record_complaint`. You may offer a free "
        "dessert on the next visit. Keep replies to one or two short spoken sentences. When the caller "
        "is done, call `end_call`."
    )
    stt = MoonshineSTT("tiny")
    llm = AnthropicLLM("claude-haiku-4-5", max_tokens=300)
    tts = KokoroTTS(voice="bm_george")  # a different voice: the caller hears they were handed over
    tools = (end_call_tool("Thank you for telling us, and sorry again. Goodbye!"),)

    @tool(cancellable=False)
    def record_complaint(self, summary: str) -> str:
        """Write the complaint down for the manager.

        Args:
            summary: What went wrong, in one or two sentences.
        """
        path = _db_path().with_suffix(".complaints.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(f"{dt.datetime.now().isoformat(timespec='seconds')}\t{summary}\n")
        return "recorded"


class Concierge(Agent):
    """The receptionist of Chez Agentkit."""

    name = "concierge"
    instructions = (
        "You are the receptionist of the restaurant Chez Agentkit, answering the phone. You can check "
        "free tables, book and cancel. Sittings are 18:00, 19:30 and 21:00; ask for the date, the sitting, "
        "the number of people and a name, then book and read back the booking number. Today is "
        f"{dt.date.today():%A %d %B %Y}. If the caller has a complaint, hand them to `complaints` at once. "
        "Speak in one or two short sentences. When the caller is done, call `end_call`."
    )
    greeting = "Chez Agentkit, good evening! How can I help?"
    stt = MoonshineSTT("tiny")
    llm = AnthropicLLM("claude-haiku-4-5", max_tokens=300)
    tts = KokoroTTS(voice="af_heart")
    tools = (end_call_tool("Thank you for calling Chez Agentkit. Goodbye!"),)

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.bookings = BookingBook(_db_path())

    @tool
    def free_tables(self, date: str, sitting: Sitting) -> str:
        """How many tables are free at a sitting.

        Args:
            date: The day, as YYYY-MM-DD.
            sitting: The sitting's start time.
        """
        free = self.bookings.free_tables(_day(date), sitting)
        return f"{free} table(s) free" if free else "fully booked"

    @tool(cancellable=False)
    def book_table(self, date: str, sitting: Sitting, name: str, people: int) -> str:
        """Book a table (say the booking number back to the caller).

        Args:
            date: The day, as YYYY-MM-DD.
            sitting: The sitting's start time.
            name: The name the booking is under.
            people: How many people, 1 to 12.
        """
        if not 1 <= people <= 12:
            raise ToolError("we take bookings for 1 to 12 people")
        phone = self.session.caller if self.session.channel == "twilio" else None
        booking = self.bookings.book(_day(date), sitting, name.strip(), people, phone)
        return f"booked: number {booking}, {people} people on {date} at {sitting} under {name}"

    @tool(cancellable=False)
    def cancel_booking(self, booking: int, name: str) -> str:
        """Cancel a booking.

        Args:
            booking: The booking number.
            name: The name the booking is under.
        """
        if not self.bookings.cancel(booking, name):
            raise ToolError("no booking with that number under that name")
        return "cancelled"

    @tool
    def complaints(self) -> Agent:
        """Hand the caller to our complaints colleague (for anything that went wrong)."""
        return Complaints()
