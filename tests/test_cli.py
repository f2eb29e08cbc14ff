"""The `agentkit` command: argument parsing, loading agent files, `models`, and `run` end to end."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from agentkit._serve import YOUNG_COLLECTION_THRESHOLD
from agentkit.audio import read_wav
from agentkit.cli import _factory, _models_verify, _parser, _run, load_app, main
from agentkit.exceptions import ConfigError
from agentkit.providers._registry import resolve_tts

REPO = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO.parent / "shared" / "models"

try:
    import agentkit.server  # noqa: F401

    _SERVER_MISSING: str | None = None
except ImportError as exc:  # pragma: no cover - only while the server package is being written
    _SERVER_MISSING = f"agentkit.server cannot be imported yet ({exc})"


@pytest.fixture(autouse=True)
def isolated_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Undo what loading agent files does to sys.path and sys.modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "")).startswith(str(tmp_path)):
            del sys.modules[name]


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


# -- parsing --------------------------------------------------------------------------------------


def test_run_arguments() -> None:
    args = _parser().parse_args(["run", "agents/echo.py", "--port", "9000", "--reload"])
    assert (args.file, args.host, args.port, args.reload, args.models_dir) == (
        "agents/echo.py",
        None,
        9000,
        True,
        None,
    )
    assert args.command is _run
    args = _parser().parse_args(["run", "--host", "0.0.0.0", "--models-dir", "/m"])
    assert (args.file, args.host, args.port, args.reload, args.models_dir) == (
        None,
        "0.0.0.0",
        None,
        False,
        "/m",
    )


def test_models_arguments() -> None:
    args = _parser().parse_args(["models", "verify", "kokoro", "silero-vad", "--models-dir", "/m"])
    assert (args.command, args.names, args.models_dir) == (_models_verify, ["kokoro", "silero-vad"], "/m")
    assert _parser().parse_args(["models", "list"]).names == []


@pytest.mark.parametrize(
    "argv", [[], ["run", "--port", "eighty"], ["models"], ["models", "fetch"], ["serve"]]
)
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: agentkit" in capsys.readouterr().err


# -- loading agent files --------------------------------------------------------------------------


def test_a_file_with_app_is_served_as_is(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "web.py",
        """
        from fastapi import FastAPI
        app = FastAPI(title="mine")
        stream = "ignored when there is an app"
        """,
    )
    app = load_app(path)
    assert isinstance(app, FastAPI)
    assert app.title == "mine"


def test_a_file_with_stream_goes_through_create_app(tmp_path: Path) -> None:
    path = _write(tmp_path, "agent.py", "stream = object()\n")
    made: list[object] = []

    def create_app(stream: object) -> FastAPI:
        made.append(stream)
        return FastAPI(title="made")

    app = load_app(path, create_app=create_app)
    assert isinstance(app, FastAPI)
    assert app.title == "made"
    assert made == [sys.modules["agent"].stream]


def test_an_agent_file_can_import_its_neighbours(tmp_path: Path) -> None:
    _write(tmp_path, "helpers_for_agent.py", "TITLE = 'from a neighbour'\n")
    path = _write(
        tmp_path,
        "with_helper.py",
        """
        from fastapi import FastAPI
        from helpers_for_agent import TITLE
        app = FastAPI(title=TITLE)
        """,
    )
    assert getattr(load_app(path), "title", None) == "from a neighbour"


def test_a_file_with_neither_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "empty_agent.py", "x = 1\n")
    with pytest.raises(
        ConfigError,
        match=r"defines no `app` \(a FastAPI app\), `stream` \(an agentkit.Stream\) or Agent subclass",
    ):
        load_app(path)
    assert main(["run", str(path)]) == 1  # fails before serving anything
    err = capsys.readouterr().err
    assert err.startswith("agentkit: error: ")
    assert str(path) in err


def test_a_missing_file_and_a_wrong_stream(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such agent file"):
        load_app(tmp_path / "nope.py")
    path = _write(tmp_path, "wrong_stream.py", "stream = 42\n")
    with pytest.raises(ConfigError, match=r"must be an agentkit\.Stream, not a int"):
        load_app(path)


@pytest.mark.skipif(_SERVER_MISSING is not None, reason=_SERVER_MISSING or "")
def test_the_echo_example_and_the_default_agent_load() -> None:
    assert isinstance(load_app(REPO / "agents" / "echo.py"), FastAPI)
    assert isinstance(load_app(), FastAPI)


def test_the_reload_factory_reads_the_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "reloaded.py", "from fastapi import FastAPI\napp = FastAPI(title='reloaded')\n")
    monkeypatch.setenv("AGENTKIT_RUN_FILE", str(path))
    assert getattr(getattr(_factory(), "app", None), "title", None) == "reloaded"


# -- agentkit models ------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason=f"{SHARED_MODELS} is not here")
def test_models_verify_passes_on_the_shared_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", "unset by the test")  # restored after main() changes it
    assert main(["models", "verify", "--models-dir", str(SHARED_MODELS)]) == 0
    out = capsys.readouterr().out
    assert "silero-vad: ok" in out
    assert "kokoro: ok" in out


def test_models_verify_and_list_on_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    assert main(["models", "verify", "silero-vad"]) == 1
    assert f"{tmp_path / 'silero-vad' / 'silero_vad.onnx'}: missing" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"models dir: {tmp_path}" in out
    assert "voices-en-v1.0.bin" in out
    assert "missing" in out


def test_models_download_refuses_unknown_names_and_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("AGENTKIT_OFFLINE", "1")
    assert main(["models", "download", "whisper"]) == 1
    assert "unknown model(s) whisper" in capsys.readouterr().err
    assert main(["models", "download", "silero-vad"]) == 1
    assert "AGENTKIT_OFFLINE" in capsys.readouterr().err


# -- agentkit run, end to end ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.slow
@pytest.mark.skipif(_SERVER_MISSING is not None, reason=_SERVER_MISSING or "")
def test_agentkit_run_serves_the_echo_agent(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "AGENTKIT_OFFLINE": "1"}
    if SHARED_MODELS.is_dir():
        env["AGENTKIT_MODELS_DIR"] = str(SHARED_MODELS)
    log = tmp_path / "server.log"
    argv = [sys.executable, "-m", "agentkit.cli", "run", "agents/echo.py", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(server, log, port, timeout_s=30.0)
        server.send_signal(signal.SIGINT)  # Ctrl+C: graceful shutdown, exit status 0
        assert server.wait(timeout=15) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = log.read_text()
    assert f"serving agents/echo.py at http://127.0.0.1:{port}" in output
    assert "Finished server process" in output


FROZEN_APP = """
import gc
import weakref
from fastapi import FastAPI

app = FastAPI()

class Node:
    pass

@app.get("/frozen")
def frozen() -> dict:
    # a reference cycle that only the cyclic collector can free, then enough container allocations
    # (kept alive, then dropped) for the youngest generation's threshold to trigger a collection
    node = Node()
    node.self = node
    gone = weakref.ref(node)
    del node
    kept = [[] for _ in range(gc.get_threshold()[0] + 1000)]
    del kept
    return {"objects": gc.get_freeze_count(), "threshold": gc.get_threshold(), "cycle_freed": gone() is None}
"""


def test_agentkit_run_freezes_what_start_up_loaded(tmp_path: Path) -> None:
    """The cyclic collector no longer walks the start-up heap, collects the youngest generation
    less often, and still frees garbage in reference cycles (`agentkit._serve.serve`)."""
    path = _write(tmp_path, "frozen_app.py", FROZEN_APP)
    port = _free_port()
    log = tmp_path / "server.log"
    argv = [sys.executable, "-m", "agentkit.cli", "run", str(path), "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=REPO, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30.0
        frozen: dict[str, Any] | None = None
        while frozen is None:
            assert server.poll() is None, f"server exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no answer in 30 s:\n{log.read_text()}"
            try:
                frozen = httpx.get(f"http://127.0.0.1:{port}/frozen", timeout=2.0).json()
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        _interrupt(server)
    assert frozen["objects"] > 10_000, log.read_text()  # fastapi, pydantic, agentkit: far more than this
    assert frozen["threshold"][0] == YOUNG_COLLECTION_THRESHOLD
    assert frozen["cycle_freed"]


# -- errors a newcomer meets: one line that says the fix, exit status 1 ---------------------------


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The `agentkit: error:` line (after any log lines) of a command that must fail with status 1."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err[err.index("agentkit: error: ") :]
    return line


BROKEN_STARTUP = """
import contextlib
from fastapi import FastAPI
from agentkit.exceptions import ConfigError

@contextlib.asynccontextmanager
async def lifespan(app):
    raise ConfigError("ANTHROPIC_API_KEY is not set")
    yield

app = FastAPI(lifespan=lifespan)
"""


def test_run_reports_a_failed_startup_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(
        tmp_path,
        "broken_startup.py",
        BROKEN_STARTUP,
    )
    err = _error(["run", str(path), "--port", str(_free_port())], capsys)
    assert err == "agentkit: error: ANTHROPIC_API_KEY is not set\n"


def test_run_names_a_taken_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "plain_app.py", "from fastapi import FastAPI\napp = FastAPI()\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _error(["run", str(path), "--port", str(port)], capsys)
        assert f"port {port} is already in use" in err
        assert f"--port {port + 1}" in err
        assert "--port" in _error(["run", str(path), "--port", str(port), "--reload"], capsys)


def test_a_folder_as_the_agent_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(["run", str(tmp_path)], capsys)
    assert f"{tmp_path} is a folder; pass the agent's Python file" in err


def test_a_file_without_an_agent_suggests_the_agent_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error(["run", str(_write(tmp_path, "nothing_here.py", "x = 1\n"))], capsys)
    assert "class Assistant(Agent):" in err
    assert "Stream(" not in err


def test_talk_with_a_missing_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(["talk", "-i", str(tmp_path / "hello.wav")], capsys)
    assert err == f"agentkit: error: no such WAV file: {tmp_path / 'hello.wav'}\n"


def test_talk_with_a_text_file_named_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("these are my notes, not a recording\n")
    err = _error(["talk", "-i", str(fake)], capsys)
    assert f"{fake} is not a WAV file (" in err


def test_talk_with_a_compressed_wav(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "float.wav"  # WAVE_FORMAT_IEEE_FLOAT (3): `wave` reads only PCM
    data = np.zeros(160, np.float32).tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 64000, 4, 32)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    err = _error(["talk", "-i", str(path)], capsys)
    assert str(path) in err
    assert f"sox {path} -b 16 out.wav" in err


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_wavs_of_every_width_are_read(tmp_path: Path, width: int) -> None:
    values = np.array([0.0, 0.5, -0.5, -1.0])
    scale = 2 ** (8 * width - 1)
    ints = [round(v * (scale - 1)) + (128 if width == 1 else 0) for v in values]
    raw = b"".join(i.to_bytes(width, "little", signed=width > 1) for i in ints)
    path = tmp_path / f"{width * 8}bit.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(16000)
        out.writeframes(raw)
    frame = read_wav(path)
    assert frame.sample_rate == 16000
    np.testing.assert_allclose(frame.samples, values, atol=1.5 / 128)


def test_a_misspelt_provider_prefix_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'kokoro/af_heart'\?"):
        resolve_tts("kokor/af_heart")


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason=f"{SHARED_MODELS} is not here")
async def test_a_misspelt_voice_gets_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.providers.tts._kokoro import KokoroTTS

    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(SHARED_MODELS))
    with pytest.raises(ConfigError, match=r"Kokoro has no voice 'af_hart'; did you mean af_heart\?"):
        await KokoroTTS(voice="af_hart").warm_up()


# -- agentkit run leaves the current folder alone -------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason=f"{SHARED_MODELS} is not here")
def test_agentkit_run_writes_nothing_in_the_current_folder(tmp_path: Path) -> None:
    here, home = tmp_path / "checkout", tmp_path / "home"
    here.mkdir()
    home.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTKIT_STORE", "XDG_DATA_HOME")}
    env.update(
        AGENTKIT_OFFLINE="1",
        AGENTKIT_MODELS_DIR=str(SHARED_MODELS),
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        PYTHONPATH=str(REPO),
        PYTHONDONTWRITEBYTECODE="1",
    )
    log = tmp_path / "server.log"
    argv = [sys.executable, "-m", "agentkit.cli", "run", "--port", str(port)]  # the default agent
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=here, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(server, log, port, timeout_s=60.0)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert list(here.iterdir()) == []
    db = home / "data" / "agentkit" / "conversations.db"
    assert db.is_file()
    output = log.read_text()
    assert f"conversations are kept in {db}" in output
    assert "TWILIO_AUTH_TOKEN" not in output  # said only when a Twilio request comes


def _interrupt(server: subprocess.Popen[bytes]) -> None:
    """Ctrl+C, and a kill if that has not ended the server in 15 s."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _wait_healthy(server: subprocess.Popen[bytes], log: Path, port: int, *, timeout_s: float) -> None:
    """Until the server at `port` answers /healthz with 200 (failing if it exits or takes too long)."""
    deadline = time.monotonic() + timeout_s
    status = None
    while status != 200:
        assert server.poll() is None, f"server exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no 200 from /healthz in {timeout_s:g} s:\n{log.read_text()}"
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code
        except httpx.TransportError:
            time.sleep(0.1)


def _output_until(server: subprocess.Popen[bytes], log: Path, wanted: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while wanted not in (text := log.read_text()):
        assert time.monotonic() < deadline, f"no {wanted!r} in {timeout_s:g} s:\n{text}"
        time.sleep(0.2)
    return text


def test_run_with_reload_reports_a_failed_startup_in_one_line(tmp_path: Path) -> None:
    """Under `--reload` uvicorn runs the app's lifespan in its worker process: the failure is still one
    `agentkit: error:` line (no traceback), and the reloader keeps watching for a fix."""
    path = _write(
        tmp_path,
        "broken_startup.py",
        BROKEN_STARTUP,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "AGENTKIT_OFFLINE": "1"}
    argv = [sys.executable, "-m", "agentkit.cli", "run", str(path), "--port", str(_free_port()), "--reload"]
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        text = _output_until(server, log, "agentkit: error:")
        time.sleep(0.5)  # anything uvicorn would add after it
        text = log.read_text()
    finally:
        _interrupt(server)
    assert "agentkit: error: ANTHROPIC_API_KEY is not set" in text
    assert "Traceback" not in text and text.count("agentkit: error:") == 1


def test_run_without_a_file_points_at_claude_when_there_is_a_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from agentkit.cli import _suggest_claude

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with caplog.at_level(logging.INFO, logger="agentkit.cli"):
        _suggest_claude()
        assert not caplog.records
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
        _suggest_claude()
    assert [r.getMessage() for r in caplog.records] == [
        "ANTHROPIC_API_KEY is set: `agentkit run agents/claude.py` serves the Claude agent"
    ]


CHATTY_CLIENT_APP = """
import logging
import httpx
from fastapi import FastAPI, Request

app = FastAPI()

@app.get("/ping")
def ping() -> dict:
    return {"ok": True}

@app.get("/call")
def call(request: Request) -> dict:
    # what a cloud provider's SDK does on every request: httpx logs it at INFO
    status = httpx.get(str(request.base_url) + "ping").status_code
    logging.getLogger("httpx").warning("a provider warning stays")
    return {"status": status}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_agentkit_run_leaves_out_a_line_per_provider_request(tmp_path: Path, workers: int) -> None:
    path = _write(tmp_path, "chatty_app.py", CHATTY_CLIENT_APP)
    port = _free_port()
    log = tmp_path / "server.log"
    argv = [
        sys.executable,
        "-m",
        "agentkit.cli",
        "run",
        str(path),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(argv, cwd=REPO, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30.0
        answers = 0
        while answers < 4:  # with two workers, both have most likely served one
            assert server.poll() is None, f"server exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no answer in 30 s:\n{log.read_text()}"
            try:
                answers += httpx.get(f"http://127.0.0.1:{port}/call", timeout=5.0).json()["status"] == 200
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        _interrupt(server)
    output = log.read_text()
    assert output.count("a provider warning stays") == 4, output
    assert "HTTP Request" not in output, output
