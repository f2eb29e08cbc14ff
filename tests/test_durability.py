"""A turn the client saw complete is in the store, even when the server is killed (SIGKILL) the
moment the client learns it; and a conversation a killed server left open is ended, as `crashed`,
by the next server on the same store.

Each round runs a real `agentkit run` process (an Agent with scripted STT/LLM and a tone TTS, the
default SQLite store in a temporary folder), plays one turn over `/ws`, and kills the process when
the assistant's final transcript arrives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import speech

from agentkit.store import SQLiteStore
from agentkit.testing import WebSocketCaller

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 3

AGENT_FILE = """
from agentkit import Agent, TurnTakingOptions
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS


class Durable(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    stt = ScriptedSTT("Please remember that my favourite colour is blue.")
    llm = ScriptedLLM("Noted: blue. I will remember it.")
    tts = ToneTTS(ms_per_char=4)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def agentkit_run(agent_file: Path, db: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {
        "AGENTKIT_STORE": f"sqlite:///{db}",
        "AGENTKIT_STORE_LEASE_S": "0.5",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    args = [sys.executable, "-m", "agentkit.cli", "run", str(agent_file), "--port", str(port)]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "agentkit run exited at startup"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "agentkit run did not come up"
            time.sleep(0.1)
        yield process
    finally:
        process.kill()
        process.wait()


async def one_turn_then_kill(port: int, process: subprocess.Popen[bytes]) -> None:
    async with WebSocketCaller(f"ws://127.0.0.1:{port}/ws") as caller:
        await caller.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
        seen = 0
        while True:
            event = await caller.wait_for_event("transcript", timeout_s=15, since=seen)
            seen = caller.events.index(event) + 1  # `since` counts every event
            if event.data["role"] == "assistant" and event.data.get("final", True):
                process.send_signal(signal.SIGKILL)  # the instant the client sees the turn complete
                break


def test_a_turn_the_client_saw_complete_survives_sigkill(tmp_path: Path, models_dir: object) -> None:
    agent_file = tmp_path / "durable.py"
    agent_file.write_text(AGENT_FILE)
    db = tmp_path / "conversations.db"
    for _ in range(ROUNDS):
        port = free_port()
        with agentkit_run(agent_file, db, port) as process:
            asyncio.run(one_turn_then_kill(port, process))
            process.wait(10)
            assert process.returncode == -signal.SIGKILL

    async def check() -> None:
        store = SQLiteStore(db)
        try:
            conversations = await store.list_conversations()
            assert len(conversations) == ROUNDS
            for conversation in conversations:
                texts = [(m.role, m.text) for m in await store.messages(conversation.id)]
                assert texts == [
                    ("user", "Please remember that my favourite colour is blue."),
                    ("assistant", "Noted: blue. I will remember it."),
                ]
                [metrics] = await store.metrics(conversation.id)
                assert metrics.turn_index == 0 and not metrics.interrupted
            # the next server on this store ended what each killed one left open (the last one's
            # conversation is still open: no server has run since)
            ended = [c for c in conversations if c.ended_at is not None]
            assert len(ended) >= ROUNDS - 1 and all(c.end_reason == "crashed" for c in ended)
        finally:
            await store.aclose()

    asyncio.run(check())

    # one more start: everything is ended now, as crashed
    port = free_port()
    with agentkit_run(agent_file, db, port):
        deadline = time.monotonic() + 10

        async def all_ended() -> bool:
            store = SQLiteStore(db)
            try:
                return all(c.end_reason == "crashed" for c in await store.list_conversations())
            finally:
                await store.aclose()

        while not asyncio.run(all_ended()):
            assert time.monotonic() < deadline, "the killed servers' conversations stayed open"
            time.sleep(0.2)
