"""agentkit echo server: the agentkit half of the side-by-side echo benchmark (bench/run_bench.py).

It is the counterpart of FastRTC's `shared/baselines/fastrtc/server_echo.py`:
`Stream(ReplyOnPause(echo), modality="audio", mode="send-receive")` served by uvicorn on 127.0.0.1,
with FastRTC's WebSocket protocol at `/websocket/offer` (mu-law in at `--input-sr`, out at
`--output-sr`) and `GET /healthz` (`pid`, `input_sample_rate`, `output_sample_rate`), so the same
`ws_latency_client.py` and `idle_cpu_probe.py` drive both servers.

The echo handler yields the caller's turn back unchanged, in one chunk, so what the benchmark
measures is pure framework overhead: turn-taking (VAD + end-of-turn silence), queueing, resampling,
codec and transport. Nothing model-related runs in the reply function.

Extra route added here: `GET /bench/config` returns the configured turn-taking options, which
run_bench.py uses for its "configured silence + 40 ms" target.

Models are read from `AGENTKIT_MODELS_DIR` (the benchmark sets it to `<repo>/../shared/models`).

Usage:
  AGENTKIT_MODELS_DIR=../shared/models python bench/agentkit_echo_server.py --port 8766 \
      [--input-sr 48000] [--output-sr 24000] [--concurrency 10] [--no-interrupt] \
      [--silence-ms 500] [--reply-delay-ms 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# benchmark the working tree this script belongs to, whatever is installed
sys.path.insert(0, str(REPO_ROOT))

LOOPBACK = ("127.0.0.1", "localhost", "::1")
log = logging.getLogger("agentkit_echo")


def build_app(args: argparse.Namespace) -> Any:
    """Build the FastAPI app: echo `ReplyOnPause` in a `Stream`, FastRTC-compatible WS endpoint."""
    from agentkit import ReplyOnPause, Stream, TurnTakingOptions
    from agentkit.server import create_app

    options = TurnTakingOptions()
    if args.silence_ms is not None:
        options = dataclasses.replace(options, end_of_turn_silence_ms=args.silence_ms)
    delay_s = args.reply_delay_ms / 1000.0

    def echo(audio: Any) -> Iterator[Any]:
        """Reply with the caller's turn, unchanged (an `AudioFrame`)."""
        if delay_s:
            time.sleep(delay_s)  # simulate STT/LLM/TTS work, as server_echo.py does
        log.debug(
            "reply_fn_called t=%.6f samples=%d sr=%d",
            time.time(),
            len(audio.samples),
            audio.sample_rate,
        )
        yield audio

    handler = ReplyOnPause(echo, options=options, can_interrupt=not args.no_interrupt)
    stream = Stream(
        handler,
        modality="audio",
        mode="send-receive",
        concurrency_limit=args.concurrency,
    )
    app = create_app(
        stream,
        fastrtc_input_sample_rate=args.input_sr,
        fastrtc_output_sample_rate=args.output_sr,
    )

    config = {
        "framework": "agentkit",
        "end_of_turn_silence_ms": options.end_of_turn_silence_ms,
        "turn_taking_options": dataclasses.asdict(options),
        "can_interrupt": not args.no_interrupt,
        "reply_delay_ms": args.reply_delay_ms,
        "concurrency": args.concurrency,
        "input_sample_rate": args.input_sr,
        "output_sample_rate": args.output_sr,
        "models_dir": os.environ.get("AGENTKIT_MODELS_DIR"),
    }

    @app.get("/bench/config")
    def bench_config() -> dict[str, Any]:
        return config

    if not any(getattr(route, "path", None) == "/healthz" for route in app.routes):
        # create_app is meant to provide it; keep the benchmark usable if it does not (yet)
        @app.get("/healthz")
        def healthz() -> dict[str, Any]:
            return {
                "ok": True,
                "pid": os.getpid(),
                "input_sample_rate": args.input_sr,
                "output_sample_rate": args.output_sr,
                "healthz_from": "bench/agentkit_echo_server.py",
            }

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="loopback only")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument(
        "--input-sr",
        type=int,
        default=48000,
        help="FastRTC WS protocol: caller audio rate",
    )
    p.add_argument(
        "--output-sr",
        type=int,
        default=24000,
        help="FastRTC WS protocol: reply audio rate",
    )
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--no-interrupt", action="store_true", help="can_interrupt=False")
    p.add_argument(
        "--silence-ms",
        type=int,
        default=None,
        help="end-of-turn silence in ms (default: agentkit's TurnTakingOptions default)",
    )
    p.add_argument(
        "--reply-delay-ms",
        type=float,
        default=0.0,
        help="sleep in the reply fn before yielding",
    )
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.host not in LOOPBACK:
        p.error("this benchmark server only binds to loopback")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t0 = time.perf_counter()
    app = build_app(args)
    log.info("app built in %.2fs", time.perf_counter() - t0)

    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
