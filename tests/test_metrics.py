"""`/metrics`: Prometheus text from `create_app`, guarded like the conversation API, fed by the
stream (open sessions, refusals) and by the Agent's typed events (turn latencies, tool calls)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _server import live_server, wait_for
from conftest import speech
from prometheus_client.parser import text_string_to_metric_families

from agentkit import Agent, Stream, TurnTakingOptions
from agentkit.agent import ProviderFailed, ToolCallFinished
from agentkit.server import create_app
from agentkit.server._metrics import ServerMetrics
from agentkit.testing import CallRefusedError, ScriptedLLM, ScriptedSTT, ToneTTS, WebSocketCaller


class Served(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Welcome."


def _served() -> Served:
    return Served(
        stt=ScriptedSTT("Book a table for two."),
        llm=ScriptedLLM("Done. It is booked."),
        tts=ToneTTS(ms_per_char=10),
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_need_the_token_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_API_TOKEN", "scrape-me")
    transport = httpx.ASGITransport(app=create_app(Stream(_served())))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        without = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        right = await http.get("/metrics", headers={"authorization": "Bearer scrape-me"})
    assert (without.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert right.headers["content-type"].startswith("text/plain")
    found = samples(right.text)
    assert found[("agentkit_sessions_refused_total", (("reason", "over_capacity"),))] == 0
    assert found[("agentkit_turn_voice_to_voice_seconds_count", ())] == 0


async def test_metrics_are_off_without_a_token_unless_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKIT_API_TOKEN", raising=False)
    for local, host, status in (("0", "127.0.0.1", 403), ("1", "example.com", 403), ("1", "127.0.0.1", 200)):
        monkeypatch.setenv("AGENTKIT_API_LOCAL", local)
        transport = httpx.ASGITransport(app=create_app(Stream(_served())))  # a 127.0.0.1 client
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
            assert (await http.get("/metrics")).status_code == status, (local, host)


def test_each_app_has_its_own_registry() -> None:
    first, second = create_app(Stream(_served())), create_app(Stream(_served()))
    assert first.state.metrics.registry is not second.state.metrics.registry


def test_tool_calls_are_counted_by_tool_and_outcome() -> None:
    metrics = ServerMetrics(Stream(_served()))
    for is_error, cancelled in ((False, False), (False, False), (True, False), (False, True)):
        metrics.observe(ToolCallFinished(0, "call", "book_table", "ok", is_error, cancelled, 12.0))
    found = samples(metrics.exposition().decode())
    counts = {labels: value for (name, labels), value in found.items() if name == "agentkit_tool_calls_total"}
    assert counts == {
        (("outcome", outcome), ("tool", "book_table")): count
        for outcome, count in (("finished", 2), ("failed", 1), ("cancelled", 1))
    }


@pytest.mark.slow
async def test_a_call_shows_up_in_the_metrics(models_dir: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKIT_API_TOKEN", raising=False)
    monkeypatch.setenv("AGENTKIT_API_LOCAL", "1")
    stream = Stream(_served(), concurrency_limit=1)
    async with live_server(stream) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        async with WebSocketCaller(server.ws_url()) as caller:
            await caller.wait_for_event("response_done", timeout_s=10)  # the greeting
            await caller.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
            await caller.wait_for_event("metrics", timeout_s=10)
            with pytest.raises(CallRefusedError):
                async with WebSocketCaller(server.ws_url()):  # over the limit of 1
                    pass
            during = samples((await http.get("/metrics")).text)
            channel = next(iter(stream.sessions.values())).channel  # "ws": the protocol
            await caller.stop()
        await wait_for(lambda: not stream.sessions, what="the session ending")
        after = samples((await http.get("/metrics")).text)
    active = ("agentkit_sessions_active", (("channel", channel),))
    assert (during[active], after[active]) == (1, 0)
    assert after[("agentkit_sessions_refused_total", (("reason", "over_capacity"),))] == 1
    assert after[("agentkit_turn_voice_to_voice_seconds_count", ())] == 1
    assert after[("agentkit_turn_voice_to_voice_seconds_sum", ())] > 0
    assert after[("agentkit_turn_stt_seconds_count", ())] == 1
    # the caller's audio went through batched turn detection, and the load monitor was sampled
    assert after[("agentkit_vad_batches_total", ())] >= 1
    assert after[("agentkit_vad_batch_sessions_total", ())] >= after[("agentkit_vad_batches_total", ())]
    assert after[("agentkit_vad_batch_sessions_max", ())] >= 1
    assert after[("agentkit_event_loop_lag_seconds", ())] >= 0
    assert after[("agentkit_overloaded", ())] == 0
    assert after[("agentkit_frames_dropped_total", (("what", "additional_outputs"),))] == 0


def test_provider_failures_are_counted_by_provider_stage_and_kind() -> None:
    metrics = ServerMetrics(Stream(_served()))
    for stage, provider, code, status in (
        ("llm/tts", "anthropic", "provider_error", 529),
        ("llm/tts", "anthropic", "provider_error", 529),
        ("stt", "groq", "provider_timeout", None),
        ("llm/tts", "unknown", "internal", None),
    ):
        metrics.observe(ProviderFailed(0, stage, provider, code, status, code == "provider_timeout"))
    found = samples(metrics.exposition().decode())
    counts = {
        labels: value for (name, labels), value in found.items() if name == "agentkit_provider_errors_total"
    }
    assert counts == {
        (("kind", "http_529"), ("provider", "anthropic"), ("stage", "llm/tts")): 2,
        (("kind", "timeout"), ("provider", "groq"), ("stage", "stt")): 1,
        (("kind", "internal"), ("provider", "unknown"), ("stage", "llm/tts")): 1,
    }


_WORKER = """
import asyncio, sys
from agentkit import Stream
from agentkit.agent import ProviderFailed
from agentkit.server._metrics import ServerMetrics
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS
from agentkit import Agent

stream = Stream(Agent(stt=ScriptedSTT("hi"), llm=ScriptedLLM("ok"), tts=ToneTTS()))
metrics = ServerMetrics(stream)
assert metrics.multiprocess
for _ in range(int(sys.argv[1])):
    stream.refused.note("busy", "the process is overloaded")
    metrics.observe(ProviderFailed(0, "stt", "groq", "provider_timeout", None, True))
if sys.argv[2] == "scrape":
    sys.stdout.write(metrics.exposition().decode())
else:
    metrics.refresh()
"""


def test_with_several_workers_a_scrape_on_one_sums_them_all(tmp_path: Path) -> None:
    """prometheus-client's multi-process mode (the directory `agentkit run --workers` sets up): each
    worker process writes its own figures there, a scrape on any of them adds them up."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(count: int, what: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, str(count), what],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    worker(2, "refresh")
    worker(3, "refresh")
    found = samples(worker(4, "scrape"))
    assert found[("agentkit_sessions_refused_total", (("reason", "busy"),))] == 9
    timeouts = (("kind", "timeout"), ("provider", "groq"), ("stage", "stt"))
    assert found[("agentkit_provider_errors_total", timeouts)] == 9
