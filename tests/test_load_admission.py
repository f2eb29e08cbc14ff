"""Load-aware admission: the `LoadMonitor` on virtual time (lag, hysteresis, CPU, media threads),
then a real server whose monitor is driven overloaded: every transport turns new callers away with
its own "busy", the open call goes on, `/readyz` says 503 while `/healthz` stays 200, and once the
load eases callers are admitted again. One test blocks the real event loop with CPU work instead of
a virtual clock; one measures the media threads' real time."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from _server import Silent, live_server, offer_sdp, wait_for

from agentkit import Stream
from agentkit._executor import run_audio_job, run_model_job
from agentkit.exceptions import BusyError, CapacityError, ConfigError
from agentkit.server._probes import Probes
from agentkit.stream import LoadMonitor
from agentkit.stream._load import media_threads_time
from agentkit.testing import CallRefusedError, RecordingTransport, TwilioCaller, WebSocketCaller, loopback_ice
from agentkit.transports._twilio_webhook import CallTokens, token_secret

TOKEN = "test-auth-token-0123456789abcdef"
WEIGHT = 1 / 20  # of each probe in the moving averages (the default `smoothing_samples`)


class ManualClock:
    """Virtual time that moves only when the test says: `wake()` ends the pending sleep, late or not."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleeper: tuple[float, asyncio.Future[None]] | None = None

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.t:
            return
        future = asyncio.get_running_loop().create_future()
        self._sleeper = (deadline, future)
        try:
            await future
        finally:
            self._sleeper = None

    async def wake(self, late_s: float = 0.0) -> None:
        """Wait for the sleeper, then set the time to its deadline plus `late_s` and wake it."""
        await wait_for(lambda: self._sleeper is not None, what="the probe to sleep")
        assert self._sleeper is not None
        deadline, future = self._sleeper
        self.t = deadline + late_s
        future.set_result(None)


class CpuMeter:
    """The process's CPU seconds, as the test sets them."""

    def __init__(self) -> None:
        self.used_s = 0.0

    def __call__(self) -> float:
        return self.used_s


async def probe(clock: ManualClock, monitor: LoadMonitor, *, late_s: float = 0.0) -> None:
    """Let the probe's sleep end `late_s` late and wait until the monitor has taken it in."""
    before = monitor.samples
    await clock.wake(late_s)
    await wait_for(lambda: monitor.samples > before, what="the probe's sample")


# -- the monitor on virtual time -------------------------------------------------------------------


async def test_lag_is_how_late_each_probing_sleep_wakes_averaged_over_recent_probes() -> None:
    clock, cpu = ManualClock(), CpuMeter()
    monitor = LoadMonitor(clock=clock, cpu_time=cpu, media_time=CpuMeter())
    monitor.start()
    try:
        await probe(clock, monitor)  # on time: no lag
        assert (monitor.last_lag_ms, monitor.lag_ms, monitor.overloaded) == (0.0, 0.0, False)
        await probe(clock, monitor, late_s=1.0)  # a 100 ms sleep that took 1.1 s: one bad probe
        assert monitor.last_lag_ms == pytest.approx(1000)
        assert monitor.lag_ms == pytest.approx(1000 * WEIGHT) and not monitor.overloaded
        expected = 1000 * WEIGHT
        for n in range(2, 5):  # it persists: the loop is saturated
            await probe(clock, monitor, late_s=1.0)
            expected += WEIGHT * (1000 - expected)
            assert monitor.lag_ms == pytest.approx(expected)
            assert monitor.overloaded == (n == 4)  # 1000 x (1 - 0.95^4) = 185 ms: over 150
        assert (monitor.cause, monitor.episodes, monitor.samples) == ("loop_lag", 1, 5)
        assert clock.t == pytest.approx(0.5 + 4 * 1.0)  # five 100 ms sleeps, four of them 1 s late
        assert monitor.figures() == {
            "lag_ms": round(expected, 1),
            "cpu_cores": 0.0,
            "media_busy": 0.0,
            "sessions_smoothed": 0.0,
            "overloaded": True,
            "cause": "loop_lag",
        }
    finally:
        await monitor.aclose()
    assert not monitor.running


def test_one_stall_is_absorbed_and_lag_that_persists_is_not() -> None:
    monitor = LoadMonitor(max_loop_lag_ms=150)
    monitor.observe(lag_s=3.0, elapsed_s=3.1, cpu_s=0.0)  # one 3 s pause: 150 ms, not over it
    assert monitor.lag_ms == pytest.approx(150) and not monitor.overloaded
    for _ in range(60):  # then idle: it fades
        monitor.observe(lag_s=0.0, elapsed_s=0.1, cpu_s=0.0)
    assert monitor.lag_ms < 10 and not monitor.overloaded
    samples = 0
    while not monitor.overloaded:  # a saturated loop: every 100 ms sleep wakes 300 ms late
        monitor.observe(lag_s=0.3, elapsed_s=0.4, cpu_s=0.0)
        samples += 1
        assert samples < 100
    assert monitor.lag_ms > 150 and samples == 14  # 300 x (1 - 0.95^n) passes 150 at n = 14


def test_hysteresis_recovers_only_at_half_the_threshold_and_does_not_flap() -> None:
    monitor = LoadMonitor(max_loop_lag_ms=150)
    for _ in range(5):
        monitor.observe(lag_s=2.0, elapsed_s=2.1, cpu_s=0.0)
    assert monitor.overloaded and monitor.episodes == 1
    for _ in range(200):  # lag between the two thresholds: still overloaded
        monitor.observe(lag_s=0.1, elapsed_s=0.2, cpu_s=0.0)
        assert monitor.overloaded
    assert monitor.lag_ms == pytest.approx(100, abs=1)
    history = []
    while monitor.overloaded:
        monitor.observe(lag_s=0.0, elapsed_s=0.1, cpu_s=0.0)
        history.append(monitor.lag_ms)
    assert history[-1] < 75 <= history[-2]  # recovered at the first sample under 150 x 0.5
    assert monitor.cause is None
    for _ in range(200):  # back between the thresholds: admitted all along, no new episode
        monitor.observe(lag_s=0.1, elapsed_s=0.2, cpu_s=0.0)
        assert not monitor.overloaded
    assert monitor.episodes == 1


async def test_cpu_is_process_time_over_wall_time_in_cores() -> None:
    clock, cpu = ManualClock(), CpuMeter()
    monitor = LoadMonitor(
        max_loop_lag_ms=None, max_cpu_cores=0.4, clock=clock, cpu_time=cpu, media_time=CpuMeter()
    )
    monitor.start()
    try:
        await probe(clock, monitor)  # idle
        cores = []
        for _ in range(40):  # 50 ms of CPU in every 100 ms: half a core
            cpu.used_s += 0.05
            await probe(clock, monitor)
            cores.append(monitor.cpu_cores)
        assert cores == sorted(cores) and cores[-1] == pytest.approx(0.5 * (1 - (1 - WEIGHT) ** 40))
        assert (monitor.overloaded, monitor.cause) == (True, "cpu")
        while monitor.cpu_cores >= 0.4 * 0.8:  # idle: it falls to 80 % of the threshold, then recovers
            assert monitor.overloaded
            await probe(clock, monitor)
        assert not monitor.overloaded
        await probe(clock, monitor, late_s=5.0)  # a huge lag, but lag is not a criterion here
        assert monitor.lag_ms == pytest.approx(5000 * WEIGHT) and not monitor.overloaded
    finally:
        await monitor.aclose()


async def test_the_media_threads_demand_refuses_as_load_grows_before_any_lag() -> None:
    """120 ms of media-thread time (run or waiting to run) per 100 ms probe, no lag at all:
    overloaded at the 18th probe (1.2 x (1 - 0.9^18) = 1.02 > 1.0, each probe weighing 1/10),
    cause `media_threads`; it recovers below 1.0 x 0.9."""
    clock, media = ManualClock(), CpuMeter()
    monitor = LoadMonitor(clock=clock, cpu_time=CpuMeter(), media_time=media)
    monitor.start()
    try:
        await probe(clock, monitor)  # idle
        busy = []
        while not monitor.overloaded:
            media.used_s += 0.12
            await probe(clock, monitor)
            busy.append(monitor.media_busy)
            assert len(busy) <= 18
        assert len(busy) == 18 and busy == sorted(busy) and busy[-1] == pytest.approx(1.2 * (1 - 0.9**18))
        assert (monitor.cause, monitor.lag_ms) == ("media_threads", 0.0)
        assert monitor.figures()["media_busy"] == round(busy[-1], 2)
        for _ in range(60):  # 0.95: between the thresholds, still refused
            media.used_s += 0.095
            await probe(clock, monitor)
            assert monitor.overloaded
        while monitor.overloaded:  # calls ended: 0.8, under 0.9
            media.used_s += 0.08
            await probe(clock, monitor)
        assert monitor.media_busy < 0.9 and monitor.episodes == 1
    finally:
        await monitor.aclose()


def test_a_burst_of_callers_is_judged_by_the_demand_projected_onto_the_sessions_open_now() -> None:
    """The smoothed demand trails the sessions it reflects: 80 sessions steady at 0.6 of a core, then
    more callers within the smoothing window. Each new caller is judged by 0.0075 per session, up to
    1.5 times the figure; below half the threshold nothing is projected."""
    monitor = LoadMonitor(smoothing_samples=1, media_smoothing_samples=1)
    monitor.observe(lag_s=0.0, elapsed_s=0.1, cpu_s=0.0, media_s=0.06, sessions=80)
    assert (monitor.media_busy, monitor.sessions_smoothed) == (pytest.approx(0.6), 80)
    assert not monitor.overloaded
    assert monitor.projected_media_busy(60) == pytest.approx(0.6)  # never scaled down
    assert monitor.projected_media_busy(100) == pytest.approx(0.75)
    assert monitor.projected_media_busy(400) == pytest.approx(0.9)  # at most 1.5 x
    assert not any(monitor.refuses(n) for n in range(0, 1000))  # 0.9: under 1.0
    monitor.observe(lag_s=0.0, elapsed_s=0.1, cpu_s=0.0, media_s=0.08, sessions=80)
    assert next(n for n in range(80, 200) if monitor.refuses(n)) == 100  # 101 x 0.01 > 1.0
    quiet = LoadMonitor(smoothing_samples=1, media_smoothing_samples=1)
    quiet.observe(lag_s=0.0, elapsed_s=0.1, cpu_s=0.0, media_s=0.04, sessions=4)  # 0.4 for 4 calls
    assert quiet.projected_media_busy(40) == pytest.approx(0.4)  # under half the threshold: as is
    stream = Stream(Silent())
    stream.load = monitor  # counts this host's sessions from now on
    assert monitor.count_sessions is not None and monitor.count_sessions() == 0
    assert stream.admission() is None
    fresh = LoadMonitor()  # nothing reflected yet: no projection
    assert not fresh.refuses(500) and fresh.projected_media_busy(500) == 0.0


async def test_media_threads_time_is_the_loops_and_the_audio_threads_not_the_models() -> None:
    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    await run_audio_job(burn, 0.001)  # the audio thread has started
    for where, counts in (("loop", True), ("audio", True), ("model", False)):
        before = media_threads_time()
        if where == "loop":
            burn(0.2)
        else:
            await (run_audio_job if where == "audio" else run_model_job)(burn, 0.2)
        used = media_threads_time() - before
        assert (used >= 0.19) == counts, (where, used)
        if not counts:
            assert used < 0.1, (where, used)


def test_bad_thresholds_are_refused() -> None:
    bad = (
        {"max_loop_lag_ms": 0},
        {"max_cpu_cores": -1.0},
        {"max_media_busy": 0},
        {"smoothing_samples": 0},
        {"media_smoothing_samples": 0},
    )
    for options in bad:
        with pytest.raises(ConfigError):
            LoadMonitor(**options)  # type: ignore[arg-type]


async def test_cpu_bound_work_on_the_real_loop_overloads_it_until_it_ends() -> None:
    """The real clock and CPU: a task that burns 250 ms of CPU at a time, yielding in between, until
    the monitor says overloaded (a probe due during a burn wakes 150 ms late or more: over the 100 ms
    threshold here; at most 10 s). Then the loop idles and it recovers."""
    monitor = LoadMonitor(max_loop_lag_ms=100, max_media_busy=None, smoothing_samples=4)
    monitor.start()
    burnt_s = 0.0
    try:
        await wait_for(lambda: monitor.samples >= 2, what="the first samples")
        assert not monitor.overloaded
        while not monitor.overloaded and burnt_s < 10.0:
            end = time.perf_counter() + 0.25
            while time.perf_counter() < end:  # blocks the loop, burning CPU
                pass
            burnt_s += 0.25
            await asyncio.sleep(0)
        assert monitor.overloaded and monitor.cause == "loop_lag" and monitor.last_lag_ms > 0
        assert 0 < monitor.cpu_cores <= (os.cpu_count() or 1) + 0.5
        await wait_for(lambda: not monitor.overloaded, timeout_s=20.0, what="recovery")
        assert monitor.lag_ms < 50
    finally:
        await monitor.aclose()


async def test_the_host_refuses_while_overloaded_and_while_closing() -> None:
    stream = Stream(Silent(), concurrency_limit=1)
    monitor = stream.load = LoadMonitor(smoothing_samples=1)
    assert stream.admission() is None
    monitor.observe(lag_s=0.2, elapsed_s=0.3, cpu_s=0.0)
    assert stream.admission() == "busy"
    with pytest.raises(BusyError) as busy:
        stream.check_admission()
    assert (busy.value.code, busy.value.retryable) == ("busy", True)
    assert isinstance(busy.value, CapacityError) and stream.refused["busy"] == 1
    stream.check_admission(resuming=True)  # a call in progress reconnecting is not turned away for load
    assert stream.refused["busy"] == 1
    seen = []

    async def during_shutdown() -> None:
        seen.append(stream.admission())
        with pytest.raises(BusyError) as closing:
            stream.check_admission()
        seen.append(closing.value.code)

    stream.on_close(during_shutdown)
    await stream.aclose()
    assert seen == ["shutting_down", "shutting_down"]
    assert stream.admission() == "busy" and stream.refused["busy"] == 1  # shutting down is not counted
    probes = Probes(stream, monitor, input_sample_rate=48000, output_sample_rate=24000)
    probes.shutting_down = True
    answer = probes.readiness()
    assert answer.status_code == 503 and b'"reason":"shutting_down"' in answer.body


# -- a real server under load ----------------------------------------------------------------------


async def test_an_overloaded_server_turns_new_callers_away_on_every_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("AGENTKIT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("AGENTKIT_TWILIO_VALIDATE", raising=False)
    clock = ManualClock()
    monitor = LoadMonitor(clock=clock, cpu_time=CpuMeter())
    stream = Stream(Silent())
    with loopback_ice():
        async with (
            live_server(stream, load_monitor=monitor) as server,
            httpx.AsyncClient(base_url=server.http_url) as http,
            WebSocketCaller(server.ws_url()) as ongoing,
        ):
            assert stream.load is monitor and monitor.running  # the app's lifespan started it
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
            early = TwilioCaller(server.http_url, auth_token=TOKEN)
            assert (await early.post_webhook()).stream_url is not None  # admitted: a token

            while not monitor.overloaded:  # the loop saturates: every probe wakes a second late
                await probe(clock, monitor, late_s=1.0)
            assert monitor.samples == 4  # 1000 ms x (1 - 0.95^4) = 185 ms: over 150

            with pytest.raises(CallRefusedError) as refused:
                async with WebSocketCaller(server.ws_url()):
                    pass
            assert (refused.value.error_code, refused.value.close_code) == ("busy", 1013)
            assert refused.value.retryable

            offer = await http.post("/webrtc/offer", json={"type": "offer", "sdp": await offer_sdp()})
            assert (offer.status_code, offer.json()["error"]) == (503, "busy")
            assert offer.headers["retry-after"] == "5"

            phone = await TwilioCaller(server.http_url, auth_token=TOKEN).post_webhook()
            assert phone.status_code == 200 and phone.stream_url is None
            assert "<Say>" in phone.text and "try again" in phone.text and "<Hangup />" in phone.text

            async with early:  # its webhook admitted it before the stall: the caller is on the line
                await wait_for(lambda: len(stream.sessions) == 2, what="the early call's session")
            await wait_for(lambda: len(stream.sessions) == 1, what="the early call's hang-up")

            not_ready = await http.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.headers["retry-after"] == "5"
            body = not_ready.json()
            assert (body["ready"], body["reason"]) == (False, "busy")
            assert body["load"]["overloaded"] is True and body["load"]["lag_ms"] > 150
            health = await http.get("/healthz")
            assert health.status_code == 200 and health.json()["refused"]["busy"] == 3

            assert await ongoing.ping() >= 0  # the open call was never cut off
            assert list(stream.sessions) == [ongoing.session_id]

            while monitor.overloaded:  # the load eases: the probe wakes on time again
                await probe(clock, monitor)
            assert (await http.get("/readyz")).status_code == 200
            async with WebSocketCaller(server.ws_url()) as admitted:
                assert admitted.session_id in stream.sessions
            again = await TwilioCaller(server.http_url, auth_token=TOKEN).post_webhook()
            assert again.stream_url is not None
            assert (await http.get("/healthz")).json()["refused"]["busy"] == 3
    assert not monitor.running  # and its shutdown stopped it


async def test_readiness_says_over_capacity_at_the_limit_which_stays_a_hard_cap() -> None:
    stream = Stream(Silent(), concurrency_limit=1)
    async with (
        live_server(stream) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
        WebSocketCaller(server.ws_url()),
    ):
        assert stream.load is not None and not stream.load.overloaded  # the app's own, from settings
        not_ready = await http.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["reason"] == "over_capacity"
        with pytest.raises(CallRefusedError) as refused:
            async with WebSocketCaller(server.ws_url()):
                pass
        assert (refused.value.error_code, refused.value.close_code) == ("over_capacity", 1013)
        assert (await http.get("/healthz")).status_code == 200


def test_a_reconnecting_calls_token_says_so_and_the_hard_limit_still_holds() -> None:
    """A Twilio stream that reconnects after its server died (`<Connect action>`) carries the fact
    in its signed token; the host admits it while overloaded, but never past `concurrency_limit`."""
    tokens = CallTokens(secret=token_secret(TOKEN))
    first = tokens.redeem(tokens.issue(caller=None, called=None, call_sid="CA1"))
    again = tokens.redeem(tokens.issue(caller=None, called=None, call_sid="CA1", resuming=True))
    assert first is not None and again is not None
    assert (first.resuming, again.resuming) == (False, True)
    stream = Stream(Silent(), concurrency_limit=1)
    stream.load = LoadMonitor(smoothing_samples=1)
    stream.load.observe(lag_s=0.2, elapsed_s=0.3, cpu_s=0.0)
    transport = RecordingTransport()
    stream.open_session(transport, input_sample_rate=8000, resuming=again.resuming)  # busy, yet admitted
    with pytest.raises(CapacityError) as full:
        stream.open_session(RecordingTransport(), input_sample_rate=8000, resuming=True)
    assert full.value.code == "over_capacity"
