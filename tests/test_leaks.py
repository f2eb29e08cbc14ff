"""A few hundred short calls on every transport (native and FastRTC WebSocket, Twilio, WebRTC), about
a third of them dropped without a goodbye, against one live echo server: after a warm-up, resident
memory, threads and open file descriptors stay where they were (small slack), and no session or
peer connection is left. bench/soak.py runs the 1,000-call version and prints the figures.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import pytest
from _hostile import Usage, mixed_sessions
from _server import echo_stream, live_server, wait_for

from agentkit.testing import loopback_ice

pytestmark = pytest.mark.slow

TWILIO_TOKEN = "leak-auth-token-0123456789abcdef"
WARM_UP = 60
CALLS = 240


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    # every call comes from 127.0.0.1, several at a time: the per-address caps would refuse some
    monkeypatch.setenv("AGENTKIT_MAX_SESSIONS_PER_ADDRESS", "0")
    monkeypatch.setenv("AGENTKIT_MAX_PENDING_OFFERS_PER_ADDRESS", "0")
    # the callers run on the server's own event loop, so its load figures count them too
    monkeypatch.setenv("AGENTKIT_MAX_MEDIA_BUSY", "0")
    monkeypatch.delenv("AGENTKIT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("AGENTKIT_TWILIO_VALIDATE", raising=False)
    with loopback_ice():
        yield


async def test_hundreds_of_calls_leak_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(7)
    async with live_server(echo_stream()) as server:
        peers = server.server.config.app.state.webrtc_peers

        def idle() -> bool:
            return not server.stream.sessions and not peers.connections

        failed = await mixed_sessions(server.http_url, WARM_UP, rng, twilio_token=TWILIO_TOKEN)
        await wait_for(idle, timeout_s=15, what="the warm-up calls to end")
        before = Usage.now()
        failed += await mixed_sessions(server.http_url, CALLS, rng, twilio_token=TWILIO_TOKEN)
        await wait_for(idle, timeout_s=15, what="every call to end")
        await wait_for(lambda: Usage.now().fds <= before.fds + 4, timeout_s=10, what="the fds to come back")
        after = Usage.now()
    print(f"before {before}, after {after}, client-side failures {dict(failed)}")
    assert not failed, failed
    assert after.fds <= before.fds + 4
    assert after.threads <= before.threads + 2
    assert after.rss_mb <= before.rss_mb + 40
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [f"{r.name}: {r.getMessage()[:200]}" for r in errors[:5]]
