"""Writes complete turns to an SQLite conversation store until it is killed.

Used by tests/test_store.py's kill test: `python tests/_store_writer.py DB_PATH CONVERSATION_ID`.
Each turn is a user message, an assistant message and the turn's metrics, three separate writes;
`user N` and `assistant N` are printed (and flushed) after each message's write has returned, and
`turn N` after the metrics, the turn's last write. Stops by itself after
`MAX_TURNS` in case nobody kills it.

The test answers each printed line with a line on stdin, and a write does not start until the line
printed two writes before has been answered. So when the test kills the writer right after reading a
line, at most one more write has begun or finished: without that, a test process slow to read (a busy
CI machine) let the writer run dozens of writes ahead of what the test had seen.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable

from agentkit.store import SQLiteStore, TurnMetrics

AGENT = "kill-test"
CALLER = "+15550100"
MAX_TURNS = 5000


def turn_text(turn: int, role: str) -> str:
    """The text written for `role` in `turn`: long enough that a write takes a few pages."""
    return f"{role} {turn} " + "lorem ipsum " * 400


def turn_metrics(conversation_id: str, turn: int) -> TurnMetrics:
    """The metrics written for `turn`: every field depends on it, some timings skipped."""
    return TurnMetrics(
        conversation_id=conversation_id,
        turn_index=turn,
        end_of_turn_ms=100.0 + turn,
        stt_ms=None if turn % 3 == 0 else 50.5 + turn,
        llm_ttft_ms=300.25,
        tts_ttfa_ms=None,
        voice_to_voice_ms=800.0 + turn,
        input_tokens=turn * 10,
        output_tokens=None,
        user_chars=len(turn_text(turn, "user")),
        reply_chars=len(turn_text(turn, "assistant")),
        user_audio_s=1.5,
        reply_audio_s=2.25,
        interrupted=turn % 2 == 1,
        created_at=1_700_000_000.0 + turn,
    )


class _Reporter:
    """Prints what each write did; lets a write start only once the line printed two writes before
    it has been answered on stdin (see the module docstring)."""

    def __init__(self) -> None:
        self._printed = 0

    async def write(self, write: Awaitable[object], line: str) -> None:
        if self._printed >= 2:  # the line printed two writes ago, answered
            await asyncio.to_thread(sys.stdin.readline)
        await write
        print(line, flush=True)
        self._printed += 1


async def write_turns(path: str, conversation_id: str) -> None:
    store = SQLiteStore(path)
    await store.start_conversation(AGENT, "twilio", caller=CALLER, conversation_id=conversation_id)
    print("started", flush=True)
    report = _Reporter()
    for turn in range(MAX_TURNS):
        t = float(turn)
        await report.write(
            store.add_message(conversation_id, "user", turn_text(turn, "user"), started_at=t), f"user {turn}"
        )
        await report.write(
            store.add_message(
                conversation_id,
                "assistant",
                turn_text(turn, "assistant"),
                started_at=t + 0.5,
                ended_at=t + 0.9,
                interrupted=turn % 2 == 1,
            ),
            f"assistant {turn}",
        )
        await report.write(store.add_metrics(turn_metrics(conversation_id, turn)), f"turn {turn}")
    await store.aclose()


if __name__ == "__main__":
    asyncio.run(write_turns(sys.argv[1], sys.argv[2]))
