"""Model resolution, verification and downloads (against a local HTTP server, never the internet)."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentkit.config import load_settings
from agentkit.exceptions import ConfigError, ModelNotFoundError
from agentkit.models import MODELS, model_path, models_dir, verify

REPO = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO.parent / "shared" / "models"
needs_shared = pytest.mark.skipif(
    not SHARED_MODELS.is_dir(), reason=f"the project's model folder {SHARED_MODELS} is not here"
)

_ENV = ("AGENTKIT_MODELS_DIR", "AGENTKIT_OFFLINE", "AGENTKIT_MODELS_BASE_URL", "AGENTKIT_PYPI_URL")


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment whose model cache is empty; returns the fake home."""
    for name in (*_ENV, "XDG_CACHE_HOME", "AGENTKIT_PORT", "AGENTKIT_HOST"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Served:
    """A folder served over HTTP on 127.0.0.1, with the paths requested so far."""

    def __init__(self, root: Path, url: str, requests: list[str]) -> None:
        self.root, self.url, self.requests = root, url, requests

    def put(self, relative: str, data: bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="test-http-server", daemon=True
    )
    thread.start()
    try:
        yield Served(root, f"http://127.0.0.1:{server.server_address[1]}", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _shared(relative: str) -> bytes:
    return (SHARED_MODELS / relative).read_bytes()


def _cache(home: Path) -> Path:
    return home / ".cache" / "agentkit" / "models"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.part"))


# -- where models are looked for -------------------------------------------------------------------


def test_models_dir_defaults_to_the_user_cache(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert models_dir() == _cache(env)
    monkeypatch.setenv("XDG_CACHE_HOME", str(env / "xdg"))
    assert models_dir() == env / "xdg" / "agentkit" / "models"
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(env / "mine"))
    assert models_dir() == env / "mine"


def test_every_model_is_pinned() -> None:
    for spec in MODELS.values():
        for model_file in spec.files:
            for variant in model_file.variants:
                assert len(variant.sha256) == 64
                assert variant.size_bytes > 0
            assert any(v.source is not None for v in model_file.variants), model_file.name


@needs_shared
def test_resolves_every_file_from_the_shared_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(SHARED_MODELS))
    for spec in MODELS.values():
        assert model_path(spec.name) == SHARED_MODELS / spec.name
        for model_file in spec.files:
            path = model_path(spec.name, model_file.name)
            assert path == SHARED_MODELS / spec.name / model_file.name
            assert path.is_file()


@needs_shared
def test_verify_passes_on_the_shared_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(SHARED_MODELS))
    for name in MODELS:
        assert verify(name) == [], name


def test_the_full_voices_file_stands_in_for_the_english_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    full = tmp_path / "kokoro" / "voices-v1.0.bin"
    full.parent.mkdir()
    full.write_bytes(b"all voices")
    assert model_path("kokoro", "voices-en-v1.0.bin") == full
    assert model_path("kokoro", "voices-v1.0.bin") == full
    english = full.with_name("voices-en-v1.0.bin")
    english.write_bytes(b"english voices")
    assert model_path("kokoro", "voices-en-v1.0.bin") == english


def test_a_missing_file_names_the_file_the_folder_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as caught:
        model_path("silero-vad", "silero_vad.onnx")
    message = str(caught.value)
    assert str(tmp_path / "silero-vad" / "silero_vad.onnx") in message
    assert "AGENTKIT_MODELS_DIR" in message
    assert "models/silero-vad/silero_vad.onnx" in message
    assert "agentkit models download silero-vad" in message
    assert caught.value.context["directory"] == str(tmp_path)
    assert not (tmp_path / "silero-vad").exists()  # nothing was created in an explicit folder


def test_offline_never_downloads(env: Path, monkeypatch: pytest.MonkeyPatch, served: Served) -> None:
    monkeypatch.setenv("AGENTKIT_OFFLINE", "1")
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", served.url)
    served.put("silero-vad/silero_vad.onnx", b"x")
    for download in (None, True):
        with pytest.raises(ModelNotFoundError, match="AGENTKIT_OFFLINE") as caught:
            model_path("silero-vad", "silero_vad.onnx", download=download)
        assert "AGENTKIT_MODELS_DIR" in str(caught.value)
    assert served.requests == []


def test_unknown_models_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="silero-vad"):
        model_path("whisper", "model.onnx")
    with pytest.raises(ModelNotFoundError, match=r"silero_vad\.onnx"):
        model_path("silero-vad", "other.onnx")
    custom = tmp_path / "whisper" / "model.onnx"
    custom.parent.mkdir()
    custom.write_bytes(b"mine")
    assert model_path("whisper", "model.onnx") == custom  # a file put there by hand is used as is
    with pytest.raises(ConfigError, match="unknown model"):
        verify("whisper")


@pytest.mark.parametrize(("name", "value"), [("AGENTKIT_PORT", "eighty"), ("AGENTKIT_MODEL_THREADS", "0")])
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


# -- verification ---------------------------------------------------------------------------------


@needs_shared
def test_verify_reports_corrupted_truncated_and_missing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    folder = tmp_path / "moonshine-tiny-en"
    folder.mkdir()
    encoder = bytearray(_shared("moonshine-tiny-en/encoder_model.ort"))
    encoder[len(encoder) // 2] ^= 0xFF  # same size, one byte flipped
    (folder / "encoder_model.ort").write_bytes(encoder)
    (folder / "tokenizer.json").write_bytes(_shared("moonshine-tiny-en/tokenizer.json")[:-10])

    problems = verify("moonshine-tiny-en")

    assert len(problems) == 3
    by_file = {p.split(":")[0]: p for p in problems}
    assert "sha256" in by_file[str(folder / "encoder_model.ort")]
    assert "expected 94e90a46" in by_file[str(folder / "encoder_model.ort")]
    assert by_file[str(folder / "decoder_model_merged.ort")].endswith("missing")
    assert "bytes, expected 1985533" in by_file[str(folder / "tokenizer.json")]


# -- downloads ------------------------------------------------------------------------------------


@needs_shared
def test_downloads_into_the_cache_from_a_mirror(
    env: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", served.url + "/")
    served.put("silero-vad/silero_vad.onnx", _shared("silero-vad/silero_vad.onnx"))

    path = model_path("silero-vad", "silero_vad.onnx")

    assert path == _cache(env) / "silero-vad" / "silero_vad.onnx"
    assert path.read_bytes() == _shared("silero-vad/silero_vad.onnx")
    assert path.stat().st_mode & 0o777 == 0o644
    assert served.requests == ["/silero-vad/silero_vad.onnx"]
    assert _leftovers(_cache(env)) == []
    assert model_path("silero-vad", "silero_vad.onnx") == path  # present now: no second request
    assert len(served.requests) == 1
    assert verify("silero-vad") == []


def test_a_download_with_the_wrong_checksum_is_not_installed(
    env: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", served.url)
    served.put("silero-vad/silero_vad.onnx", b"not the model")

    with pytest.raises(ModelNotFoundError, match="sha256") as caught:
        model_path("silero-vad", "silero_vad.onnx")

    assert caught.value.retryable
    folder = _cache(env) / "silero-vad"
    assert not (folder / "silero_vad.onnx").exists()
    assert _leftovers(folder) == []


def test_a_mirror_without_the_file(env: Path, monkeypatch: pytest.MonkeyPatch, served: Served) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", served.url)
    with pytest.raises(ModelNotFoundError, match="mirror"):
        model_path("kokoro", "voices-en-v1.0.bin")
    # both names of the voices file were tried, the English-only one first
    assert served.requests == ["/kokoro/voices-en-v1.0.bin", "/kokoro/voices-v1.0.bin"]


def test_an_unreachable_server_is_a_retryable_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ModelNotFoundError, match="failed") as caught:
        model_path("silero-vad", "silero_vad.onnx")
    assert caught.value.retryable


@needs_shared
def test_an_explicit_folder_is_filled_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    mine = tmp_path / "mine"
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(mine))
    monkeypatch.setenv("AGENTKIT_MODELS_BASE_URL", served.url)
    served.put("smart-turn/smart-turn-v3.2-cpu.onnx", _shared("smart-turn/smart-turn-v3.2-cpu.onnx"))

    with pytest.raises(ModelNotFoundError, match="AGENTKIT_MODELS_DIR is set"):
        model_path("smart-turn", "smart-turn-v3.2-cpu.onnx")
    assert served.requests == []

    assert model_path("smart-turn", download=True) == mine / "smart-turn"
    assert verify("smart-turn") == []


def _publish_wheel(served: Served, project: str, version: str, members: dict[str, bytes]) -> str:
    """Put a wheel holding `members` and its PyPI JSON entry on the server; return the wheel path."""
    filename = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
    wheel = served.root / "files" / filename
    wheel.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{project.replace('-', '_')}-{version}.dist-info/METADATA", "Name: x\n")
        for name, data in members.items():
            zf.writestr(name, data)
    release = {
        "urls": [
            {"packagetype": "sdist", "filename": "x.tar.gz", "url": served.url + "/nowhere", "size": 1},
            {
                "packagetype": "bdist_wheel",
                "filename": filename,
                "url": f"{served.url}/files/{filename}",
                "size": wheel.stat().st_size,
                "digests": {"sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()},
            },
        ]
    }
    served.put(f"pypi/{project}/{version}/json", json.dumps(release).encode())
    return f"/files/{filename}"


@needs_shared
def test_downloads_a_member_of_a_wheel_once_for_all_its_files(
    env: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("AGENTKIT_PYPI_URL", served.url + "/pypi")
    assets = "moonshine_voice/assets/tiny-en"
    wheel = _publish_wheel(
        served,
        "moonshine-voice",
        "0.0.73",
        {
            f"{assets}/encoder_model.ort": _shared("moonshine-tiny-en/encoder_model.ort"),
            f"{assets}/decoder_model_merged.ort": _shared("moonshine-tiny-en/decoder_model_merged.ort"),
        },
    )

    encoder = model_path("moonshine-tiny-en", "encoder_model.ort")
    decoder = model_path("moonshine-tiny-en", "decoder_model_merged.ort")

    assert served.requests == ["/pypi/moonshine-voice/0.0.73/json", wheel]  # one wheel, both files
    assert encoder.read_bytes() == _shared("moonshine-tiny-en/encoder_model.ort")
    assert decoder.read_bytes() == _shared("moonshine-tiny-en/decoder_model_merged.ort")
    assert _leftovers(_cache(env)) == []


@needs_shared
def test_a_wheel_whose_digest_differs_from_pypi_is_rejected(
    env: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("AGENTKIT_PYPI_URL", served.url + "/pypi")
    member = "silero_vad/data/silero_vad.onnx"
    _publish_wheel(served, "silero-vad", "6.2.3", {member: _shared("silero-vad/silero_vad.onnx")})
    index = served.root / "pypi" / "silero-vad" / "6.2.3" / "json"
    release = json.loads(index.read_text())
    release["urls"][1]["digests"]["sha256"] = "0" * 64
    index.write_text(json.dumps(release))

    with pytest.raises(ModelNotFoundError, match="PyPI lists"):
        model_path("silero-vad", "silero_vad.onnx")
    folder = _cache(env) / "silero-vad"
    assert not (folder / "silero_vad.onnx").exists()
    assert _leftovers(folder) == []


def test_a_wheel_member_with_the_wrong_checksum_is_not_installed(
    env: Path, monkeypatch: pytest.MonkeyPatch, served: Served
) -> None:
    monkeypatch.setenv("AGENTKIT_PYPI_URL", served.url + "/pypi")
    _publish_wheel(served, "silero-vad", "6.2.3", {"silero_vad/data/silero_vad.onnx": b"tampered"})

    with pytest.raises(ModelNotFoundError, match="sha256"):
        model_path("silero-vad", "silero_vad.onnx")
    folder = _cache(env) / "silero-vad"
    assert list(folder.iterdir()) == []


def test_a_copy_of_the_shared_folder_layout_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with only some models is fine for the models it has."""
    (tmp_path / "silero-vad").mkdir()
    (tmp_path / "silero-vad" / "silero_vad.onnx").write_bytes(b"x")
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))
    assert model_path("silero-vad", "silero_vad.onnx").read_bytes() == b"x"
    shutil.rmtree(tmp_path / "silero-vad")
    with pytest.raises(ModelNotFoundError):
        model_path("silero-vad")
