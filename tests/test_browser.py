"""The web client in a real browser: Debian's chromium, headless, driven by Playwright, with a fake
microphone that speaks a recording, against an Agent (scripted STT and LLM, tone TTS, real VAD)
served by `create_app`.

The talk page: the caller's turn is heard, both sides of the conversation appear, the reply's audio
really plays through Web Audio, and the latency readout shows the turn's figures, over the WebSocket
and over WebRTC; with the WebRTC offer refused, "auto" falls back to the WebSocket. WebRTC stays on
loopback: chromium may use loopback candidates (and shows real addresses, not mDNS names), and the
in-process aiortc offers 127.0.0.1 only (`loopback_ice`); no STUN server anywhere. The widget: embedded
by a page of another origin (a second loopback server), it talks when that origin is on the allow-list
and says it is not allowed, opening no session, when it is not.

Never `playwright install`: the test needs `/usr/bin/chromium` (apt package `chromium`).
Set AGENTKIT_WEB_SCREENSHOT=path to save a screenshot of the talk page after the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _server import LiveServer, live_server, wait_for
from conftest import speech
from playwright.async_api import Browser, Page, Route, async_playwright

from agentkit import Agent, Stream, TurnTakingOptions, tool
from agentkit.audio import AudioFrame, write_wav
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, loopback_ice

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
]

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000  # generous for a busy 2-core machine; every wait is for a page state
USER_SAYS = "Book a table for two."
AGENT_SAYS = "Done. Your table is booked."
REPLY_S = len(AGENT_SAYS) * 0.010  # ToneTTS(ms_per_char=10)
WEBSOCKET_ONLY = "/?transport=websocket"  # the talk page, without trying WebRTC first


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """The in-process server's aiortc gathers 127.0.0.1 only (chromium is told to accept loopback)."""
    with loopback_ice():
        yield


class Served(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Welcome."


def _agent() -> Served:
    return Served(stt=ScriptedSTT(USER_SAYS), llm=ScriptedLLM(AGENT_SAYS), tts=ToneTTS(ms_per_char=10))


def _mic_file(directory: Path, *utterances: tuple[float, str]) -> Path:
    """The fake microphone's recording (48 kHz): each utterance after its silence in seconds, then
    12 s of silence (chromium plays the file once: `%noloop`)."""
    parts = []
    for silence_s, name in utterances:
        parts += [np.zeros(round(48000 * silence_s), np.float32), speech(name, 48000).samples]
    path = directory / "mic.wav"
    write_wav(path, AudioFrame(np.concatenate([*parts, np.zeros(48000 * 12, np.float32)]), 48000))
    return path


@contextlib.asynccontextmanager
async def chromium(mic: Path, *, grant_microphone: bool = True) -> AsyncIterator[Browser]:
    """Headless chromium with a fake microphone and a fresh temporary profile (Playwright makes one
    per launch and deletes it); always closed, whatever the test did. Without `grant_microphone`
    the permission prompt is not faked away, and Playwright dismisses it: access is denied."""
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}%noloop",
    ]
    if grant_microphone:
        args.append("--use-fake-ui-for-media-stream")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """Chromium whose microphone says one sentence after 1.5 s."""
    async with chromium(_mic_file(tmp_path, (1.5, "utt2"))) as launched:
        yield launched


@dataclass
class Site:
    """A second web site on another loopback port: answers every request with `html`."""

    port: int = 0
    html: str = ""


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[Site]:
    site = Site()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            body = site.html.encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    site.port = int(server.sockets[0].getsockname()[1])
    try:
        yield site
    finally:
        server.close()
        await server.wait_closed()


async def _conversations(server: LiveServer) -> int:
    """Sessions the agent opened, by its store (the conversation API is off without a token)."""
    agent = server.stream.handler
    assert isinstance(agent, Agent) and agent.store is not None
    return len(await agent.store.list_conversations())


async def test_talk_page_turn(browser: Browser, models_dir: Path) -> None:
    async with live_server(Stream(_agent(), concurrency_limit=1)) as server:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{server.http_url}{WEBSOCKET_ONLY}")
        await page.get_by_role("button", name="Start talking").click()

        transcript = page.locator("#transcript")
        await transcript.locator("[data-role=user]").filter(has_text=USER_SAYS).wait_for(timeout=WAIT_MS)
        played_before_reply = await page.evaluate("window.agentkitClient.stats.samplesPlayed")
        reply = transcript.locator("[data-role=assistant]").filter(has_text=AGENT_SAYS)
        await reply.wait_for(timeout=WAIT_MS)
        await page.wait_for_function(
            "([before]) => window.agentkitClient.stats.samplesPlayed > before"
            " && window.agentkitClient.state === 'listening'",
            arg=[played_before_reply],
            timeout=WAIT_MS,
        )
        stats = await page.evaluate("({...window.agentkitClient.stats})")
        output_rate = await page.evaluate("window.agentkitClient._playCtx.sampleRate")
        latency = await page.locator("#latency-voice_to_voice_ms").text_content()
        lines = await transcript.locator("li").evaluate_all(
            "items => items.map(li => [li.dataset.role, li.querySelector('.text').textContent])"
        )
        state = await page.locator("#state").text_content()

        # a second caller while the only place is taken
        second = await browser.new_page()
        await second.goto(f"{server.http_url}{WEBSOCKET_ONLY}")
        await second.get_by_role("button", name="Start talking").click()
        await second.locator("#error[data-code=over_capacity]").wait_for(timeout=WAIT_MS)
        busy = await second.locator("#error").text_content()
        await second.close()

        await page.get_by_role("button", name="Stop").click()
        await page.get_by_role("button", name="Start talking").wait_for(timeout=WAIT_MS)
        assert await page.locator("#state").text_content() == "Not connected"

    # the server is gone
    await page.get_by_role("button", name="Start talking").click()
    await page.locator("#error[data-code=no_connection]").wait_for(timeout=WAIT_MS)
    gone = await page.locator("#error").text_content()
    await page.get_by_role("button", name="Start talking").wait_for(timeout=WAIT_MS)
    await page.close()

    assert lines == [["assistant", "Welcome."], ["user", USER_SAYS], ["assistant", AGENT_SAYS]]
    # the greeting's and the reply's tones (10 ms a character) went through Web Audio, all of them
    tone_s = len("Welcome." + AGENT_SAYS) * 0.010
    assert stats["samplesPlayed"] == stats["samplesReceived"] >= 0.95 * tone_s * output_rate
    assert stats["rms"] > 0.05 and stats["peakRms"] >= stats["rms"]
    assert latency is not None and latency.endswith(" ms") and int(latency.split()[0]) > 0
    assert state == "Listening"
    assert busy is not None and "busy" in busy
    assert gone is not None and "Cannot reach the agent" in gone
    assert errors == []


WATCH_CLIENT = """() => {
  window.fallbacks = [];
  // runs after the page's own click handler, which made the client: no event is missed
  document.getElementById("talk").addEventListener("click", () => {
    const client = window.agentkitClient;
    client.on("fallback", (e) => window.fallbacks.push(e.reason));
    client.on("transcript", (e) => {
      if (e.role === "user") window.playedAtUserTurn = client.stats.samplesPlayed;
    });
  });
}"""


async def _talk_one_turn(page: Page, url: str, *, screenshot: str | None = None) -> dict[str, Any]:
    """Start talking on the talk page at `url`, wait for the whole turn (the reply heard, back to
    listening), screenshot it if asked, stop; what the page showed and measured."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    await page.evaluate(WATCH_CLIENT)
    await page.get_by_role("button", name="Start talking").click()
    transcript = page.locator("#transcript")
    await transcript.locator("[data-role=user]").filter(has_text=USER_SAYS).wait_for(timeout=WAIT_MS)
    played_before_reply = await page.evaluate("window.playedAtUserTurn")
    await transcript.locator("[data-role=assistant]").filter(has_text=AGENT_SAYS).wait_for(timeout=WAIT_MS)
    # back to listening, and most of the reply's tone (10 ms a character) heard: over WebRTC the
    # server's `listening` can come while the last ~100 ms are still in the browser's jitter buffer
    await page.wait_for_function(
        """([before, seconds]) => { const client = window.agentkitClient;
        return client.state === 'listening'
          && client.stats.samplesPlayed - before >= seconds * client._playCtx.sampleRate; }""",
        arg=[played_before_reply, 0.6 * REPLY_S],
        timeout=WAIT_MS,
    )
    seen: dict[str, Any] = {
        "stats": await page.evaluate("({...window.agentkitClient.stats})"),
        "played_before_reply": played_before_reply,
        "output_rate": await page.evaluate("window.agentkitClient._playCtx.sampleRate"),
        "transport": await page.evaluate("window.agentkitClient.transport"),
        "shown": await page.locator("#transport").text_content(),
        "fallbacks": await page.evaluate("window.fallbacks"),
        "latency": await page.locator("#latency-voice_to_voice_ms").text_content(),
        "lines": await transcript.locator("li").evaluate_all(
            "items => items.map(li => [li.dataset.role, li.querySelector('.text').textContent])"
        ),
    }
    if screenshot:
        await page.set_viewport_size({"width": 720, "height": 460})
        await page.screenshot(path=screenshot)
    await page.get_by_role("button", name="Stop").click()
    await page.get_by_role("button", name="Start talking").wait_for(timeout=WAIT_MS)
    seen["errors"] = errors
    return seen


async def test_talk_page_turn_over_webrtc(browser: Browser, models_dir: Path) -> None:
    async with live_server(Stream(_agent(), concurrency_limit=1)) as server:
        page = await browser.new_page()
        seen = await _talk_one_turn(
            page, f"{server.http_url}/", screenshot=os.environ.get("AGENTKIT_WEB_SCREENSHOT")
        )
        await page.close()
        # the stop (or the peer's close) reached the server
        await wait_for(lambda: not server.stream.sessions, WAIT_MS / 1000, "the session closed")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            config = (await http.get("/webrtc/config")).json()

    assert seen["transport"] == "webrtc" and seen["shown"] == "via webrtc" and seen["fallbacks"] == []
    assert seen["lines"] == [["assistant", "Welcome."], ["user", USER_SAYS], ["assistant", AGENT_SAYS]]
    # the reply's tone was heard through the analyser for about its length (Opus and the meter's
    # 46 ms window blur the edges; the silence the track sends between replies does not count)
    heard_s = (seen["stats"]["samplesPlayed"] - seen["played_before_reply"]) / seen["output_rate"]
    assert 0.6 * REPLY_S <= heard_s <= 2.0 * REPLY_S + 0.2
    assert seen["stats"]["rms"] > 0.05 and seen["stats"]["peakRms"] >= seen["stats"]["rms"]
    assert seen["stats"]["samplesReceived"] > 0  # decoded by the receiver, silence included
    latency = seen["latency"]
    assert latency is not None and latency.endswith(" ms") and int(latency.split()[0]) > 0
    assert config == {"iceServers": []}  # no STUN: host candidates only
    assert seen["errors"] == []


class Shop(Served):
    @tool
    async def order_status(self, order: int) -> str:
        """Where an order is.

        Args:
            order: The order number.
        """
        return f"order {order} has shipped"


async def test_talk_page_typed_turn_with_a_tool(tmp_path: Path, models_dir: Path) -> None:
    """A message typed on the talk page (Enter sends it; over the WebRTC data channel) is a turn:
    shown as the caller's line, answered aloud after a tool whose use shows as a "used ..." line."""
    asked, answer = "Where is my order 42?", "Let me check. It has shipped."
    checks = ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check.")
    llm = ScriptedLLM(checks, "It has shipped.")
    agent = Shop(stt=ScriptedSTT(USER_SAYS), llm=llm, tts=ToneTTS(ms_per_char=10), tool_filler=None)
    errors: list[str] = []
    async with chromium(_mic_file(tmp_path)) as launched, live_server(Stream(agent)) as server:
        page = await launched.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{server.http_url}/?transport=webrtc")
        await page.get_by_role("button", name="Start talking").click()
        transcript = page.locator("#transcript")
        greeting = transcript.locator("[data-role=assistant]").filter(has_text="Welcome.")
        await greeting.wait_for(timeout=WAIT_MS)  # typed during the greeting, it would cut it short
        box = page.get_by_role("textbox", name="Type a message to the agent")
        await box.fill(asked)
        await box.press("Enter")
        for role, text in (("user", asked), ("tool", "used order_status"), ("assistant", answer)):
            await transcript.locator(f"[data-role={role}]").filter(has_text=text).wait_for(timeout=WAIT_MS)
        lines = await transcript.locator("li").evaluate_all(
            "items => items.map(li => [li.dataset.role, li.querySelector('.text').textContent])"
        )
        left_in_box = await box.input_value()
        transport = await page.evaluate("window.agentkitClient.transport")
        await page.close()

    tool_line = ["tool", "used order_status"]
    assert lines == [["assistant", "Welcome."], ["user", asked], tool_line, ["assistant", answer]]
    assert left_in_box == "" and transport == "webrtc"
    assert errors == []


async def test_talk_page_falls_back_to_websocket(browser: Browser, models_dir: Path) -> None:
    """The server refuses this page's WebRTC offer: "auto" says so and talks over the WebSocket."""
    refused: list[str] = []

    async def refuse(route: Route) -> None:
        refused.append(route.request.method)
        await route.fulfill(status=503, json={"error": "unavailable", "message": "no WebRTC today"})

    async with live_server(Stream(_agent(), concurrency_limit=1)) as server:
        page = await browser.new_page()
        await page.route("**/webrtc/offer", refuse)
        seen = await _talk_one_turn(page, f"{server.http_url}/")
        forced = await _forced_webrtc_error(page, f"{server.http_url}/?transport=webrtc")
        await page.close()

    assert refused == ["POST", "POST"]
    assert seen["transport"] == "websocket" and seen["shown"] == "via websocket (WebRTC was not available)"
    assert len(seen["fallbacks"]) == 1 and "unavailable" in seen["fallbacks"][0]
    assert seen["lines"] == [["assistant", "Welcome."], ["user", USER_SAYS], ["assistant", AGENT_SAYS]]
    assert seen["stats"]["samplesPlayed"] == seen["stats"]["samplesReceived"] > 0
    assert seen["errors"] == []
    # with WebRTC asked for by name there is no fallback: the page reports the failure
    assert forced["code"] == "no_connection" and forced["transport"] is None


async def test_talk_page_falls_back_when_webrtc_cannot_connect(
    tmp_path: Path, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The offer is answered, but no ICE candidate reaches either side (UDP blocked, say): after its
    connect timeout the page gives up, frees the WebRTC session it held on the server, and talks
    over the WebSocket, on a server with room for one session only."""
    offers: list[int] = []

    async def no_candidates(route: Route) -> None:
        offer = json.loads(route.request.post_data or "{}")
        offer["sdp"] = _without_candidates(offer["sdp"])
        response = await route.fetch(post_data=json.dumps(offer))
        answer = await response.json()
        offers.append(response.status)
        answer["sdp"] = _without_candidates(answer["sdp"])
        await route.fulfill(response=response, json=answer)

    caplog.set_level(logging.INFO, logger="agentkit")
    mic = _mic_file(tmp_path, (8.0, "utt2"))  # the caller speaks once the 5 s WebRTC wait is over
    # the server's own connect timeout (5 s by default, like the page's) set longer, so that only the
    # page's cancel can free the one slot in time for the WebSocket fallback
    slow_timeout = live_server(Stream(_agent(), concurrency_limit=1), webrtc_connect_timeout_s=30.0)
    async with chromium(mic) as browser, slow_timeout as server:
        page = await browser.new_page()
        await page.route("**/webrtc/offer", no_candidates)
        seen = await _talk_one_turn(page, f"{server.http_url}/")
        await page.close()

    assert offers == [200]
    assert seen["transport"] == "websocket" and len(seen["fallbacks"]) == 1
    assert "did not reach connected" in seen["fallbacks"][0]
    assert seen["lines"] == [["assistant", "Welcome."], ["user", USER_SAYS], ["assistant", AGENT_SAYS]]
    assert seen["errors"] == []
    ended = [r.getMessage() for r in caplog.records if "client_cancel" in r.getMessage()]
    assert ended, "the WebRTC session was not cancelled by the page"


def _without_candidates(sdp: str) -> str:
    lines = sdp.split("\r\n")
    return "\r\n".join(x for x in lines if not x.startswith(("a=candidate", "a=end-of-candidates")))


async def _forced_webrtc_error(page: Page, url: str) -> dict[str, Any]:
    await page.goto(url)
    await page.get_by_role("button", name="Start talking").click()
    error = page.locator("#error[data-code=no_connection]")
    await error.wait_for(timeout=WAIT_MS)
    await page.get_by_role("button", name="Start talking").wait_for(timeout=WAIT_MS)
    code = await error.get_attribute("data-code")
    return {"code": code, "transport": await page.evaluate("window.agentkitClient.transport")}


async def test_talk_page_mic_denied(tmp_path: Path) -> None:
    mic = _mic_file(tmp_path, (1.5, "utt2"))
    async with chromium(mic, grant_microphone=False) as launched, live_server(Stream(_agent())) as server:
        page = await launched.new_page()
        await page.goto(f"{server.http_url}/")
        await page.get_by_role("button", name="Start talking").click()
        error = page.locator("#error[data-code=mic_denied]")
        await error.wait_for(timeout=WAIT_MS)
        message = await error.text_content()
        await page.get_by_role("button", name="Start talking").wait_for(timeout=WAIT_MS)
        state = await page.locator("#state").get_attribute("data-state")
        await page.close()
        sessions = await _conversations(server)

    assert message is not None and "Microphone access was denied" in message
    assert state == "idle" and sessions == 0


WIDGET_PAGE = """<!doctype html><html lang="en"><head><title>A shop</title></head>
<body><h1>A shop</h1><script type="module" src="{server}/widget.js" data-auto></script></body></html>"""


OPEN_WEBSOCKET = """url => new Promise(resolve => {
  const ws = new WebSocket(url);
  ws.onopen = () => { resolve("open"); ws.close(); };
  ws.onclose = (e) => resolve(`closed ${e.code}`);
})"""


async def test_widget_on_another_origin(browser: Browser, models_dir: Path) -> None:
    async with page_server() as site:
        # the same site under two origins: 127.0.0.1 is on the allow-list, localhost is not
        allowed, refused = f"http://127.0.0.1:{site.port}", f"http://localhost:{site.port}"
        async with live_server(Stream(_agent()), allowed_origins=[allowed]) as server:
            site.html = WIDGET_PAGE.format(server=server.http_url)
            seen = await _widget_visits(browser, server, allowed, refused)
            assert await _conversations(server) == seen["opened"] == 1  # the refused visit opened none

    assert seen["allowed_ws"] == "open"
    assert seen["code"] == "not_allowed" and "not allowed" in str(seen["message"])
    assert seen["client"] is None
    assert seen["refused_ws"] == "closed 1006"  # the handshake was answered with 403
    assert seen["errors"] == []


async def _widget_visits(browser: Browser, server: LiveServer, allowed: str, refused: str) -> dict[str, Any]:
    page = await browser.new_page()
    seen: dict[str, Any] = {"errors": []}
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))
    widget = page.locator("agentkit-widget")

    # an allowed site: the widget connects, and the greeting is heard and shown
    await page.goto(f"{allowed}/")
    await widget.locator(".fab").click()
    greeting = widget.locator("li[data-role=assistant]").filter(has_text="Welcome.")
    await greeting.wait_for(timeout=WAIT_MS)
    await page.wait_for_function(
        "() => document.querySelector('agentkit-widget').client?.stats.samplesPlayed > 0", timeout=WAIT_MS
    )
    assert await widget.locator(".error").is_hidden()
    await widget.locator(".fab").click()  # stop
    await page.wait_for_function(
        "() => document.querySelector('agentkit-widget').client === null", timeout=WAIT_MS
    )
    seen["opened"] = await _conversations(server)
    seen["allowed_ws"] = await page.evaluate(OPEN_WEBSOCKET, server.ws_url())

    # a site not on the list: the widget says so, and no session is opened
    await page.goto(f"{refused}/")
    await widget.locator(".fab").click()
    error = widget.locator(".error")
    await error.wait_for(state="visible", timeout=WAIT_MS)
    seen["code"] = await error.get_attribute("data-code")
    seen["message"] = await error.text_content()
    seen["client"] = await page.evaluate("document.querySelector('agentkit-widget').client")
    # a page that got the client some other way is still refused by the WebSocket endpoint
    seen["refused_ws"] = await page.evaluate(OPEN_WEBSOCKET, server.ws_url())
    await page.close()
    return seen


LONG_REPLY = "Sure. " + "Here is a long answer that keeps going for a while. " * 4


@contextlib.asynccontextmanager
async def talking_over_a_long_reply(tmp_path: Path, page_path: str) -> AsyncIterator[Page]:
    """The talk page at `page_path`, started: the caller asks, and speaks again (utt1, 3 s) about
    1.5 s into the ~8 s reply. The page is closed after the block."""
    agent = Served(stt=ScriptedSTT(USER_SAYS), llm=ScriptedLLM(LONG_REPLY), tts=ToneTTS(ms_per_char=40))
    mic = _mic_file(tmp_path, (1.5, "utt2"), (2.0, "utt1"))
    async with chromium(mic) as launched, live_server(Stream(agent)) as server:
        page = await launched.new_page()
        await page.goto(f"{server.http_url}{page_path}")
        await page.get_by_role("button", name="Start talking").click()
        await page.wait_for_function("() => window.agentkitClient !== undefined", timeout=WAIT_MS)
        try:
            yield page
        finally:
            await page.close()


async def test_barge_in_clears_playback(tmp_path: Path, models_dir: Path) -> None:
    """The caller speaks again during a long reply: the page drops what it had scheduled, at once."""
    async with talking_over_a_long_reply(tmp_path, WEBSOCKET_ONLY) as page:
        await page.evaluate(
            """() => { window.cleared = [];
            window.agentkitClient.on("interrupted", () => window.cleared.push({
              scheduled: window.agentkitClient._sources.size, state: window.agentkitClient.state,
              received: window.agentkitClient.stats.samplesReceived })); }"""
        )
        cut = page.locator("#transcript [data-role=assistant][title=interrupted]")
        await cut.wait_for(timeout=WAIT_MS)
        cleared = await page.evaluate("window.cleared")
        heard = await cut.locator(".text").text_content()
        stats = await page.evaluate("({...window.agentkitClient.stats})")

    assert len(cleared) == 1 and cleared[0]["scheduled"] == 0 and cleared[0]["state"] == "listening"
    assert heard is not None and heard.endswith(" …") and len(heard) - 2 < len(LONG_REPLY.strip())
    assert 0 < stats["samplesPlayed"] <= cleared[0]["received"]


async def test_barge_in_over_webrtc_silences_the_reply(tmp_path: Path, models_dir: Path) -> None:
    """Over WebRTC the page schedules nothing itself: the server stops the reply and empties what it
    had queued for the track, and what the page plays (read from its analyser every 20 ms) falls
    silent within 300 ms of the `interrupted` event (the jitter buffer holds ~100 ms), while the
    caller is still talking (until a turn of theirs ends in one of utt1's pauses and gets a reply).
    (The track's own queue is shallow, the session paces it in real time;
    tests/test_webrtc.py checks that it is emptied.)"""
    async with talking_over_a_long_reply(tmp_path, "/?transport=webrtc") as page:
        await page.evaluate(
            """() => { const client = window.agentkitClient;
            window.levels = []; window.cutAt = null;
            const buffer = new Float32Array(client._analyser.fftSize);
            setInterval(() => {
              client._analyser.getFloatTimeDomainData(buffer);
              let sum = 0; for (const x of buffer) sum += x * x;
              window.levels.push([performance.now(), Math.sqrt(sum / buffer.length)]);
            }, 20);
            client.on("interrupted", () => { window.cutAt = performance.now(); });
            window.nextReplyAt = null;  // utt1 has pauses: a turn may end in one and get a reply
            client.on("message", (e) => {
              const type = e.message.type;
              if (type === "response_starting" && window.cutAt !== null && window.nextReplyAt === null)
                window.nextReplyAt = performance.now(); }); }"""
        )
        await page.locator("#transcript [data-role=assistant][title=interrupted]").wait_for(timeout=WAIT_MS)
        await page.wait_for_function("() => performance.now() > window.cutAt + 1000", timeout=WAIT_MS)
        transport = await page.evaluate("window.agentkitClient.transport")
        levels, cut_at, next_reply_at = await page.evaluate(
            "[window.levels, window.cutAt, window.nextReplyAt]"
        )

    assert transport == "webrtc"
    # the output paused at the onset and was flushed at the `interrupted` that confirmed the barge-in
    playing = [rms for t, rms in levels if cut_at - 1200 < t < cut_at - 300]
    until = cut_at + 1000 if next_reply_at is None else min(cut_at + 1000, next_reply_at)
    after = [rms for t, rms in levels if cut_at + 300 < t < until]
    assert playing and max(playing) > 0.05  # the reply's tone was playing up to the barge-in
    assert after and max(after) < 0.005, max(after)  # and 300 ms later nothing of it is left
