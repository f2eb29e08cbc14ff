"""`agentkit run --workers N`: N processes on one port, started, supervised and stopped as one server.

End to end, `agentkit run --workers 2` runs as a real process (in a session of its own, so that every
process it started can be found and none is left behind) with a tiny agent: scripted STT and LLM, a
tone for TTS, the SQLite store in a temporary folder. The supervisor's start-up and restart rules run
in-process on light targets (`tests/_worker_targets.py`). Last, two processes write to one SQLite
file at once, as several workers do, and lose nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import _worker_targets
import httpx
import pytest
from _store_writer import turn_metrics, turn_text
from conftest import speech

from agentkit._workers import Supervisor
from agentkit.cli import _parser, main
from agentkit.config import cpu_count, load_settings
from agentkit.exceptions import AgentkitError, ConfigError
from agentkit.store import SQLiteStore
from agentkit.testing import WebSocketCaller

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WRITER = REPO / "tests" / "_store_writer.py"

AGENT_FILE = """
from agentkit import Agent, TurnTakingOptions
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS


class Tiny(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # the silence rule alone: these tests play short silent tails
    stt = ScriptedSTT("What time is it?")
    llm = ScriptedLLM("Time to test.")
    tts = ToneTTS(ms_per_char=4)
"""

BAD_VOICE_FILE = """
from agentkit import Agent
from agentkit.providers import KokoroTTS
from agentkit.testing import ScriptedLLM, ScriptedSTT


class BadVoice(Agent):
    stt = ScriptedSTT("Hello.")
    llm = ScriptedLLM("Hi.")
    tts = KokoroTTS(voice="af_hart")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_processes(session_id: int) -> list[int]:
    """The live processes of a session (the server's, which `start_new_session` made)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # after `pid (comm)`: state ppid pgrp session ...
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


@contextmanager
def agentkit_run(tmp_path: Path, file: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`agentkit run FILE ARGS` in a session of its own; the session is killed when the test ends."""
    env = os.environ | {
        "AGENTKIT_OFFLINE": "1",
        "AGENTKIT_STORE": f"sqlite:///{tmp_path / 'conversations.db'}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("AGENTKIT_WORKERS", None)
    argv = [sys.executable, "-m", "agentkit.cli", "run", str(file), *args]
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if session_processes(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def healthz_pid(port: int) -> int:
    """The pid of the worker that answered `/healthz` on a new connection."""
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    response.raise_for_status()
    return int(response.json()["pid"])


def answering_pids(port: int, want: int, timeout_s: float = 15.0) -> set[int]:
    """Ask `/healthz` (one connection each) until `want` distinct workers have answered."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(pids) < want and time.monotonic() < deadline:
        pids.add(healthz_pid(port))
    return pids


def environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


async def one_turn_then_stop(port: int, server: subprocess.Popen[bytes]) -> int:
    """One turn over `/ws`; then, with the call still open, Ctrl+C the server: its exit status."""
    async with WebSocketCaller(f"ws://127.0.0.1:{port}/ws") as caller:
        await caller.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
        seen = 0
        while True:
            event = await caller.wait_for_event("transcript", timeout_s=15, since=seen)
            seen = caller.events.index(event) + 1
            if event.data["role"] == "assistant" and event.data.get("final", True):
                assert event.data["text"] == "Time to test."
                break
        server.send_signal(signal.SIGINT)
        return await asyncio.to_thread(server.wait, 30)


# -- end to end ------------------------------------------------------------------------------------


def test_two_workers_serve_one_port_replace_a_killed_one_and_stop_together(
    tmp_path: Path, models_dir: Path
) -> None:
    file = tmp_path / "tiny.py"
    file.write_text(AGENT_FILE)
    port = free_port()
    log = tmp_path / "server.log"
    with agentkit_run(tmp_path, file, "--workers", "2", "--port", str(port)) as server:
        wait_until(lambda: "(2 workers)" in log.read_text() or server.poll() is not None, "serving")
        assert server.poll() is None, log.read_text()
        output = log.read_text()
        assert output.count(f"serving {file} at http://127.0.0.1:{port} (2 workers)") == 1
        # both workers already accepted when that line came
        assert output.count("[worker 1] Started server process") == 1
        assert output.count("[worker 2] Started server process") == 1

        pids = answering_pids(port, 2)
        assert len(pids) == 2, f"only {pids} answered on port {port}"
        assert set(session_processes(server.pid)) >= pids | {server.pid}
        environment = environment_of(min(pids))
        assert environment["AGENTKIT_WORKERS"] == "2"
        metrics_dir = Path(environment["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir() and metrics_dir.stat().st_mode & 0o077 == 0

        killed = min(pids)
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: "is serving again" in log.read_text(), "a replacement worker", 30)
        assert re.search(
            rf"worker \d \(pid {killed}\) was killed by signal SIGKILL; starting a new", log.read_text()
        )
        after = answering_pids(port, 2)
        assert len(after) == 2 and killed not in after and max(pids) in after

        status = asyncio.run(one_turn_then_stop(port, server))
        assert status == 0, log.read_text()
        wait_until(lambda: not session_processes(server.pid), "every worker gone", 10)
    output = log.read_text()
    assert "Traceback" not in output, output
    assert output.count("Finished server process") == 2  # both workers ran their shutdown
    assert not metrics_dir.exists()

    async def conversations() -> list[tuple[str | None, bool]]:
        store = SQLiteStore(tmp_path / "conversations.db")
        try:
            return [(c.end_reason, c.ended_at is not None) for c in await store.list_conversations()]
        finally:
            await store.aclose()

    [(reason, ended)] = asyncio.run(conversations())  # the call that was open at Ctrl+C
    assert ended and reason != "crashed"


def test_a_workers_start_up_failure_is_one_line(tmp_path: Path, models_dir: Path) -> None:
    file = tmp_path / "bad_voice.py"
    file.write_text(BAD_VOICE_FILE)
    with agentkit_run(tmp_path, file, "--workers", "2", "--port", str(free_port())) as server:
        assert server.wait(60) == 1
        wait_until(lambda: not session_processes(server.pid), "every worker gone", 10)
    output = (tmp_path / "server.log").read_text()
    assert "Traceback" not in output
    assert output.count("agentkit: error:") == 1
    assert output.endswith("agentkit: error: Kokoro has no voice 'af_hart'; did you mean af_heart?\n")
    assert "workers)" not in output  # never said it was serving


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--reload", "--workers", "2"], "--reload serves one process; drop --workers 2"),
        (["run", "--workers", "0"], "--workers: expected a number of processes (1 or more) or auto, not '0'"),
        (["run", "--workers", "x"], "--workers: expected a number of processes (1 or more) or auto, not 'x'"),
    ],
)
def test_worker_counts_that_cannot_be(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: agentkit run")
    assert message in err


def test_auto_is_one_worker_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpu_count() == len(os.sched_getaffinity(0))
    assert _parser().parse_args(["run", "--workers", "auto"]).workers == cpu_count()
    assert _parser().parse_args(["run", "--workers", "3"]).workers == 3
    assert _parser().parse_args(["run"]).workers is None  # then AGENTKIT_WORKERS, else 1
    monkeypatch.setenv("AGENTKIT_WORKERS", "auto")
    assert load_settings().workers == cpu_count()
    monkeypatch.setenv("AGENTKIT_WORKERS", "0")
    with pytest.raises(ConfigError, match="AGENTKIT_WORKERS"):
        load_settings()
    monkeypatch.delenv("AGENTKIT_WORKERS")
    assert load_settings().workers == 1


# -- the supervisor's rules --------------------------------------------------------------------------


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound


def test_a_worker_that_keeps_dying_ends_the_server(
    sock: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    started: list[bool] = []
    supervisor = Supervisor(_worker_targets.crash_after_start, sock, 1, max_restarts=2, backoff_s=0.05)
    with (
        caplog.at_level(logging.INFO, "agentkit._workers"),
        pytest.raises(
            AgentkitError, match=r"worker 1 stopped 3 times within 60 s \(last: it exited with status 3\)"
        ),
    ):
        supervisor.run(lambda: started.append(True))
    assert started == [True]
    restarts = [r.getMessage() for r in caplog.records if "starting a new one" in r.getMessage()]
    assert len(restarts) == 2
    assert "exited with status 3; starting a new one in 0.1 s" in restarts[1]  # backing off
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert "AGENTKIT_WORKERS" not in os.environ


def test_a_worker_that_dies_while_starting_is_an_error(sock: socket.socket) -> None:
    supervisor = Supervisor(_worker_targets.exit_while_starting, sock, 2)
    with pytest.raises(AgentkitError, match=r"worker \d exited with status 4 while starting"):
        supervisor.run(lambda: pytest.fail("announced a server whose workers died"))


def test_a_bug_at_start_up_is_one_traceback_and_one_error(
    sock: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor(_worker_targets.raise_while_starting, sock, 2)
    with pytest.raises(
        AgentkitError, match=r"worker (\d) failed to start: RuntimeError: boom in worker \1 \("
    ):
        supervisor.run(lambda: pytest.fail("announced a server whose workers failed"))
    [logged] = [r.getMessage() for r in caplog.records if "Traceback" in r.getMessage()]
    assert "RuntimeError: boom in worker" in logged


def test_a_start_up_failure_is_raised_as_itself_and_stops_the_others(sock: socket.socket) -> None:
    supervisor = Supervisor(_worker_targets.fail_second, sock, 2, stop_timeout_s=10)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as failure:
        supervisor.run(lambda: pytest.fail("announced a server whose worker failed"))
    assert type(failure.value) is ConfigError
    assert failure.value.message == "ANTHROPIC_API_KEY is not set"
    assert time.monotonic() - t0 < 10  # worker 1 stopped on SIGTERM, it was not waited out


def test_workers_stop_when_their_parent_dies() -> None:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    }
    script = [sys.executable, _worker_targets.__file__]
    parent = subprocess.Popen(script, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == "serving\n"
        assert len(session_processes(parent.pid)) >= 3  # the parent and its two workers
        parent.kill()  # no chance to stop them: they notice their pipe close
        parent.wait(10)
        wait_until(lambda: not session_processes(parent.pid), "the orphaned workers gone", 10)
    finally:
        if session_processes(parent.pid):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.kill()
        parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


# -- SQLite under several workers -------------------------------------------------------------------


def test_two_processes_writing_one_sqlite_file_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "conversations.db"  # new: both create the schema at once, too
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    }
    ids = ("worker-a", "worker-b")
    writers = [
        subprocess.Popen(
            [sys.executable, str(WRITER), str(db), cid], stdout=subprocess.PIPE, text=True, env=env
        )
        for cid in ids
    ]
    printed: list[list[str]] = [[], []]
    try:
        for lines, writer in zip(printed, writers, strict=True):  # each has written 40 turns...
            assert writer.stdout is not None
            while "turn 39" not in lines:
                line = writer.stdout.readline()
                assert line, f"a writer stopped by itself (status {writer.wait()})"
                lines.append(line.strip())
        for writer in writers:  # ...while the other was writing too
            assert writer.poll() is None, "a writer stopped by itself"
            writer.send_signal(signal.SIGKILL)
    finally:
        for lines, writer in zip(printed, writers, strict=True):
            writer.kill()
            writer.wait(10)
            assert writer.stdout is not None
            lines.extend(writer.stdout.read().splitlines())  # what it said before it died
            writer.stdout.close()
    assert [w.returncode for w in writers] == [-signal.SIGKILL] * 2

    async def check() -> None:
        store = SQLiteStore(db)
        try:
            for cid, lines in zip(ids, printed, strict=True):
                turns = sum(line.startswith("turn ") for line in lines)
                written = sum(line.startswith(("user ", "assistant ")) for line in lines)
                messages = await store.messages(cid)
                assert written <= len(messages) <= written + 1
                for i, message in enumerate(messages[:written]):
                    turn, role = divmod(i, 2)
                    assert (message.role, message.text) == (
                        ("user", "assistant")[role],
                        turn_text(turn, message.role),
                    )
                metrics = await store.metrics(cid)
                assert metrics[:turns] == [turn_metrics(cid, t) for t in range(turns)]
        finally:
            await store.aclose()

    asyncio.run(check())
