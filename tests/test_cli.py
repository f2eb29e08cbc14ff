"""The `agentkit` command: argument parsing, loading agent files, `models`, and `run` end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from agentkit.cli import _factory, _models_verify, _parser, _run, load_app, main
from agentkit.exceptions import ConfigError

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
    assert getattr(_factory(), "title", None) == "reloaded"


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
        deadline = time.monotonic() + 30.0
        status = None
        while status != 200:
            assert server.poll() is None, f"server exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no 200 from /healthz in 30 s:\n{log.read_text()}"
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code
            except httpx.TransportError:
                time.sleep(0.1)
        server.send_signal(signal.SIGINT)  # Ctrl+C: graceful shutdown, exit status 0
        assert server.wait(timeout=15) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = log.read_text()
    assert f"serving agents/echo.py at http://127.0.0.1:{port}" in output
    assert "Application shutdown complete" in output
