"""Hostile input and soak: the long versions of tests/test_fuzz.py and tests/test_leaks.py.

    python bench/soak.py [--messages 15000] [--sessions 1000] [--seed 20241124] [--json FILE]

One server runs in this process (uvicorn on a free 127.0.0.1 port, `create_app`): an Agent on
scripted providers (a greeting, ScriptedSTT, ScriptedLLM, ToneTTS) with a SQLite store in a temporary
folder, WebRTC ICE on loopback only. Everything it receives comes from tests/_hostile.py.

1. Hostile input: `--messages` messages and requests, split across the native WebSocket, FastRTC's
   WebSocket, Twilio's media stream and webhook, the WebRTC offer and data channel and the
   conversation API. Printed per endpoint: how many, HTTP statuses, close codes the server chose,
   the commonest `error` codes, and failures (5xx, 1011, probes left unanswered). Then, for the whole
   run: log records at ERROR or with a traceback, forged log lines, phone numbers in the log.
2. Soak: `--sessions` short calls (native and FastRTC WebSocket, Twilio, WebRTC; about a third dropped
   without a goodbye), 6 at a time. The process's resident memory, OS threads and open file
   descriptors are read after a 10% warm-up and after each further quarter (client and server share
   the process, so the figures hold both).

The exit status is 1 if anything failed. Models: `AGENTKIT_MODELS_DIR` (default ../shared/models).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("AGENTKIT_MODELS_DIR", str(REPO.parent / "shared" / "models"))
TWILIO_TOKEN = "soak-auth-token-0123456789abcdef"
API_TOKEN = "soak-api-token-0123456789abcdef"
os.environ.update({"TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "AGENTKIT_API_TOKEN": API_TOKEN})
# every call comes from 127.0.0.1, several at a time: the per-address caps would refuse some
os.environ.update({"AGENTKIT_MAX_SESSIONS_PER_ADDRESS": "0", "AGENTKIT_MAX_PENDING_OFFERS_PER_ADDRESS": "0"})
os.environ.pop("AGENTKIT_PUBLIC_URL", None)

SHARES = {
    "ws": 0.30,
    "fastrtc": 0.17,
    "twilio": 0.22,
    "webhook": 0.05,
    "offer": 0.05,
    "channel": 0.12,
    "api": 0.09,
}
"""How `--messages` is split across the endpoints."""


class LogWatch(logging.Handler):
    """Counts what must never be logged: errors, tracebacks, forged lines, phone numbers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records = 0
        self.errors: list[str] = []
        self.forged = 0
        self.phone = 0

    def emit(self, record: logging.LogRecord) -> None:
        from _hostile import FORGED, PHONE

        if record.name.split(".")[0] in ("websockets", "httpx", "httpcore"):
            return  # the attackers' side
        self.records += 1
        message = record.getMessage()
        if record.levelno >= logging.ERROR or record.exc_info:
            self.errors.append(f"{record.name}: {message[:200]}")
        self.forged += FORGED in message  # a client's id written out as a line of its own
        self.phone += PHONE in message or PHONE[1:] in message


async def hostile_phase(server: Any, messages: int, seed: int) -> dict[str, Any]:
    from _hostile import (
        Hostile,
        Tally,
        disconnect_mid_body,
        fuzz_api,
        fuzz_data_channel,
        fuzz_fastrtc,
        fuzz_native,
        fuzz_offers,
        fuzz_twilio,
        fuzz_webhook,
    )
    from _server import offer_sdp

    hostile = Hostile(seed)
    counts = {name: max(1, round(share * messages)) for name, share in SHARES.items()}
    tallies = {name: Tally() for name in SHARES}
    sdps = [await offer_sdp() for _ in range(3)]
    sessions = lambda: len(server.stream.sessions)  # noqa: E731
    started = time.perf_counter()
    await fuzz_native(server.ws_url(), hostile, counts["ws"], tallies["ws"])
    await fuzz_fastrtc(server.ws_url("/websocket/offer"), hostile, counts["fastrtc"], tallies["fastrtc"])
    await fuzz_twilio(
        server.http_url, TWILIO_TOKEN, hostile, counts["twilio"], tallies["twilio"], sessions=sessions
    )
    await fuzz_webhook(server.http_url, TWILIO_TOKEN, hostile, counts["webhook"], tallies["webhook"])
    await fuzz_offers(server.http_url, sdps, hostile, counts["offer"], tallies["offer"])
    channel_left = counts["channel"]
    while channel_left > 0:  # a few calls, a few hundred messages each
        batch = min(500, channel_left)
        await fuzz_data_channel(server.http_url, hostile, batch, tallies["channel"])
        channel_left -= batch
    await fuzz_api(server.http_url, API_TOKEN, hostile, counts["api"], tallies["api"])
    await disconnect_mid_body(server.http_url, "/webrtc/offer")
    elapsed = time.perf_counter() - started
    await _wait_idle(server)
    per_endpoint = {
        name: {
            "sent": t.sent,
            "connections": t.connections,
            "survived": t.survived,
            "statuses": dict(sorted(t.statuses.items())),
            "close_codes": dict(sorted(t.close_codes.items())),
            "errors": dict(t.error_codes.most_common(6)),
            "failures": t.failures(),
        }
        for name, t in tallies.items()
    }
    total = sum(t.sent for t in tallies.values())
    return {
        "sent": total,
        "seconds": round(elapsed, 1),
        "per_s": round(total / elapsed),
        "endpoints": per_endpoint,
    }


async def soak_phase(server: Any, sessions: int, seed: int) -> dict[str, Any]:
    from _hostile import Usage, mixed_sessions

    rng = random.Random(seed)
    warm_up = max(1, sessions // 10)
    failed = await mixed_sessions(server.http_url, warm_up, rng, twilio_token=TWILIO_TOKEN)
    await _wait_idle(server)
    snapshots = [{"calls": warm_up, **vars(Usage.now())}]
    done = warm_up
    started = time.perf_counter()
    for quarter in range(1, 5):
        target = warm_up + (sessions - warm_up) * quarter // 4
        failed += await mixed_sessions(server.http_url, target - done, rng, twilio_token=TWILIO_TOKEN)
        done = target
        await _wait_idle(server)
        snapshots.append({"calls": done, **vars(Usage.now())})
    elapsed = time.perf_counter() - started
    for snapshot in snapshots:
        snapshot["rss_mb"] = round(snapshot["rss_mb"], 1)
    first, last = snapshots[0], snapshots[-1]
    growth = {key: round(last[key] - first[key], 1) for key in ("rss_mb", "threads", "fds")}
    return {
        "calls": done,
        "seconds": round(elapsed, 1),
        "client_failures": dict(failed),
        "usage": snapshots,
        "growth_after_warm_up": growth,
    }


async def _wait_idle(server: Any, timeout_s: float = 30.0) -> None:
    peers = server.server.config.app.state.webrtc_peers
    deadline = time.monotonic() + timeout_s
    while server.stream.sessions or peers.connections:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(server.stream.sessions)} sessions still open after {timeout_s} s")
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from _server import live_server

    from agentkit import Agent, Stream, TurnTakingOptions
    from agentkit.store import open_store
    from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, loopback_ice

    class Served(Agent):
        turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
        greeting = "Hello."

    watch = LogWatch()
    logging.getLogger().addHandler(watch)
    logging.getLogger().setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as folder, loopback_ice():
        store = open_store(f"sqlite:///{folder}/conversations.db")
        agent = Served(
            stt=ScriptedSTT("What time is it?"), llm=ScriptedLLM("It is noon."), tts=ToneTTS(), store=store
        )
        try:
            async with live_server(Stream(agent)) as server:
                hostile = await hostile_phase(server, args.messages, args.seed)
                soak = await soak_phase(server, args.sessions, args.seed)
        finally:
            await store.aclose()
    return {
        "hostile": hostile,
        "soak": soak,
        "log": {
            "records": watch.records,
            "errors": len(watch.errors),
            "error_kinds": dict(Counter(re.sub(r"[0-9a-f]{8,}", "…", e)[:90] for e in watch.errors)),
            "forged": watch.forged,
            "phone": watch.phone,
        },
    }


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=15_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=20241124)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    failures = [f for e in result["hostile"]["endpoints"].values() for f in e["failures"]]
    bad = failures or result["log"]["errors"] or result["log"]["forged"] or result["log"]["phone"]
    return 1 if bad or result["soak"]["client_failures"] else 0


if __name__ == "__main__":
    sys.exit(cli())
