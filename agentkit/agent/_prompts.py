"""`prompt("name")`: an agent's instructions, kept as Markdown in a `prompts/` folder."""

from __future__ import annotations

import inspect
from pathlib import Path

from agentkit.exceptions import ConfigError

__all__ = ["prompt"]


def prompt(name: str, *, directory: str | Path | None = None) -> str:
    """The text of `prompts/<name>.md`, stripped.

    Without `directory`, looks in `prompts/` beside the calling file, then in `prompts/` one level up
    (so `agents/claude.py` finds the repository's `prompts/claude.md`), then in `./prompts`.
    A missing file raises `ConfigError` naming every place tried.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"prompt name must be a plain file name without '.md', got {name!r}")
    if directory is not None:
        folders = [Path(directory)]
    else:
        caller = inspect.currentframe()
        filename = caller.f_back.f_code.co_filename if caller and caller.f_back else "."
        here = Path(filename).resolve().parent
        folders = [here / "prompts", here.parent / "prompts", Path.cwd() / "prompts"]
    tried: list[str] = []
    for folder in folders:
        path = folder / f"{name}.md"
        if path.is_file():
            text = path.read_text(encoding="utf-8").strip()
            if not text:
                raise ConfigError(f"prompt file {path} is empty")
            return text
        tried.append(str(path))
    raise ConfigError(f"no prompt {name!r}: tried " + ", ".join(dict.fromkeys(tried)))
