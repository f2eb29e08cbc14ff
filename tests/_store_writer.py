"""Writes complete turns to an SQLite conversation store until it is killed.

Used by tests/test_store.py's kill test: `python tests/_store_writer.py DB_PATH CONVERSATION_ID`.
Each turn is a user message, an assistant message and the turn's metrics, three separate writes;
`user N` and `assistant N` are printed (and flushed) after each message's write has returned, and
`turn N` after the metrics, the turn's last write. Stops by itself after
`MAX_TURNS` in case nobody kills it.
"""

from __future__ import annotations

import asyncio
import sys

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


async def write_turns(path: str, conversation_id: str) -> None:
    store = SQLiteStore(path)
    await store.start_conversation(AGENT, "twilio", caller=CALLER, conversation_id=conversation_id)
    print("started", flush=True)
    for turn in range(MAX_TURNS):
        t = float(turn)
        await store.add_message(conversation_id, "user", turn_text(turn, "user"), started_at=t)
        print(f"user {turn}", flush=True)
        await store.add_message(
            conversation_id,
            "assistant",
            turn_text(turn, "assistant"),
            started_at=t + 0.5,
            ended_at=t + 0.9,
            interrupted=turn % 2 == 1,
        )
        print(f"assistant {turn}", flush=True)
        await store.add_metrics(turn_metrics(conversation_id, turn))
        print(f"turn {turn}", flush=True)
    await store.aclose()


if __name__ == "__main__":
    asyncio.run(write_turns(sys.argv[1], sys.argv[2]))
