"""The served web client's files, their CORS headers, and the WebSocket `Origin` check.

A real uvicorn server on loopback; a real `websockets` client sends the `Origin` header a browser
would send.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from _server import LiveServer, Silent, live_server
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from agentkit import Stream
from agentkit.server._web import web_files_dir
from agentkit.transports._origin import OriginPolicy, host_name, is_loopback_host, known_hosts

SHOP = "https://shop.example"


@pytest.fixture
async def server() -> AsyncIterator[LiveServer]:
    async with live_server(Stream(Silent()), allowed_origins=[SHOP, "http://127.0.0.1:9/"]) as live:
        yield live


async def _start(url: str, origin: str | None, **connect_options: Any) -> str:
    """Open a session (`start` → `started`) with this `Origin`; return the reply's type."""
    async with connect(url, origin=None if origin is None else Origin(origin), **connect_options) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        reply = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "stop"}))
        return str(reply["type"])


async def _refused_status(url: str, origin: str, **connect_options: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin=Origin(origin), **connect_options):
            pass
    return refused.value.response.status_code


def _via_loopback(port: int) -> dict[str, Any]:
    """Connect options that reach the loopback server whatever name the URL has: what a browser
    does once a DNS-rebinding attacker pointed their name at this machine."""
    return {"host": "127.0.0.1", "port": port, "proxy": None}


async def test_files_are_served_with_types_and_revalidation(server: LiveServer) -> None:
    expected = {
        "/": ("text/html", "Talk to the agent"),
        "/agentkit.js": ("text/javascript", "export function connect"),
        "/widget.js": ("text/javascript", 'customElements.define("agentkit-widget"'),
        "/talk.css": ("text/css", ".talk-button"),
    }
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        for path, (content_type, marker) in expected.items():
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].split(";")[0] == content_type
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert marker in response.text
            assert response.content == web_files_dir().joinpath(path.strip("/") or "index.html").read_bytes()
            again = await http.get(path, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
            stale = await http.get(path, headers={"If-None-Match": '"not-this-one"'})
            assert stale.status_code == 200
        head = await http.head("/agentkit.js")
        assert head.status_code == 200 and head.content == b""
        assert (await http.get("/nope.js")).status_code == 404
        assert (await http.post("/agentkit.js")).status_code == 405


async def test_cors_only_for_allowed_origins(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        for path in ("/agentkit.js", "/talk.css"):
            allowed = await http.get(path, headers={"Origin": SHOP})
            assert allowed.headers["access-control-allow-origin"] == SHOP
            assert allowed.headers["vary"] == "Origin"
            other = await http.get(path, headers={"Origin": "https://evil.example"})
            assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
            assert other.headers["vary"] == "Origin"
        # the embed stub loads anywhere, so a refused site can still say why it cannot talk
        stub = await http.get("/widget.js", headers={"Origin": "https://evil.example"})
        assert stub.headers["access-control-allow-origin"] == "*"
        page = await http.get("/", headers={"Origin": SHOP})
        assert "access-control-allow-origin" not in page.headers


async def test_websocket_origin_check(server: LiveServer) -> None:
    url = server.ws_url()
    assert await _start(url, None) == "started"  # not a browser
    assert await _start(url, server.http_url) == "started"  # the talk page's own origin
    assert await _start(url, SHOP) == "started"
    assert await _start(url, "HTTPS://Shop.Example") == "started"  # origins compare case-blind
    assert await _start(url, "http://127.0.0.1:9") == "started"  # listed with a trailing slash
    for origin in ("https://evil.example", "http://127.0.0.1:1", "null", f"https://127.0.0.1:{server.port}x"):
        assert await _refused_status(url, origin) == 403, origin
    assert await _refused_status(server.ws_url("/websocket/offer"), "https://evil.example") == 403


async def test_allow_list_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_ALLOWED_ORIGINS", f" {SHOP} , http://other.example:8080")
    async with live_server(Stream(Silent())) as server:
        assert await _start(server.ws_url(), "http://other.example:8080") == "started"
        assert await _refused_status(server.ws_url(), "https://evil.example") == 403
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.get("/agentkit.js", headers={"Origin": SHOP})
            assert response.headers["access-control-allow-origin"] == SHOP
    monkeypatch.setenv("AGENTKIT_ALLOWED_ORIGINS", "*")
    async with live_server(Stream(Silent())) as server:
        assert await _start(server.ws_url(), "https://anyone.example") == "started"


async def test_empty_allow_list_keeps_same_origin_and_the_prefix() -> None:
    async with live_server(Stream(Silent()), allowed_origins=[], path="/agent/") as server:
        url = server.ws_url("/agent/ws")
        assert await _start(url, server.http_url) == "started"
        assert await _refused_status(url, SHOP) == 403
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/agent/")).status_code == 200
            assert (await http.get("/agent/widget.js")).status_code == 200
            assert (await http.get("/agentkit.js")).status_code == 404
            no_cors = await http.get("/agent/agentkit.js", headers={"Origin": SHOP})
            assert "access-control-allow-origin" not in no_cors.headers


def test_origin_policy() -> None:
    policy = OriginPolicy(
        ["https://A.example/", " ", "http://b.example:8080"], server_hosts=["Server.Example"]
    )
    assert policy.allowed_origins == {"https://a.example", "http://b.example:8080"}
    assert policy.allows(None, None)  # no Origin: not a browser
    assert policy.allows("https://a.example", "server.example")
    assert policy.allows("https://server.example", "server.example")  # same origin
    assert policy.allows("http://server.example:8000", "Server.Example:8000")
    assert not policy.allows("http://server.example:8001", "server.example:8000")
    assert not policy.allows("http://b.example", "server.example")  # the port is part of the origin
    assert not policy.allows("null", "null")
    assert not policy.allows("https://x.example", None)
    assert not policy.is_listed(None) and not policy.is_listed("https://server.example")
    assert OriginPolicy(["*"]).allows("https://anything.example", "server.example")
    assert OriginPolicy.of(None) is None
    # same-origin counts only on a name the server is known by: not on a DNS-rebinding attacker's
    assert not policy.allows("http://evil.example:8000", "evil.example:8000")
    assert not OriginPolicy().allows("https://server.example", "server.example")
    for own in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert OriginPolicy().allows(f"http://{own}", own), own
    assert not OriginPolicy().allows("http://127.0.0.1.evil.example", "127.0.0.1.evil.example")


def test_host_names() -> None:
    assert host_name("Agent.Example:8000") == "agent.example" and host_name("[::1]:80") == "::1"
    for bad in (None, "", "evil@127.0.0.1", "127.0.0.1/x", "a b", "127.0.0.1:99999x"):
        assert host_name(bad) is None, bad
    for loopback in ("127.0.0.1:8000", "127.8.9.1", "LOCALHOST", "localhost:1", "[::1]", "[::1]:8000"):
        assert is_loopback_host(loopback), loopback
    for other in ("localhost.evil.example", "127.0.0.1.evil.example", "evil@127.0.0.1", "10.0.0.1", None):
        assert not is_loopback_host(other), other


def test_known_hosts_come_from_the_public_url_and_the_allowed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_PUBLIC_URL", "https://Agent.Example:8443/base")
    monkeypatch.setenv("AGENTKIT_ALLOWED_HOSTS", " agent.internal , 10.0.0.5:8000")
    assert known_hosts() == {"agent.example", "agent.internal", "10.0.0.5"}
    assert known_hosts("https://other.example") == {"other.example", "agent.internal", "10.0.0.5"}
    policy = OriginPolicy.of([])
    assert policy is not None and policy.allows("https://agent.example", "agent.example")


async def test_a_dns_rebinding_page_cannot_open_a_session(server: LiveServer) -> None:
    """A page of `http://evil.example:PORT` whose name now points at this server sends an Origin
    equal to its Host: every browser-facing endpoint refuses it, and no session opens."""
    evil = f"evil.example:{server.port}"
    connect_options = _via_loopback(server.port)
    for path in ("/ws", "/websocket/offer"):
        status = await _refused_status(f"ws://{evil}{path}", f"http://{evil}", **connect_options)
        assert status == 403, path
    headers = {"host": evil, "origin": f"http://{evil}"}
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        offer = await http.post("/webrtc/offer", json={"type": "offer"}, headers=headers)
        assert (offer.status_code, offer.json()["error"]) == (403, "origin_not_allowed")
        cancel = await http.delete("/webrtc/sessions/anything", headers=headers)
        assert (cancel.status_code, cancel.json()["error"]) == (403, "origin_not_allowed")
    assert not server.stream.sessions
    # the talk page on the server's own names still connects
    for own in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
        assert await _start(f"ws://{own}/ws", f"http://{own}", **_via_loopback(server.port)) == "started"


async def test_a_host_the_server_is_known_by_counts_as_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_ALLOWED_HOSTS", "agent.internal")
    async with live_server(Stream(Silent()), allowed_origins=[]) as server:
        own = f"agent.internal:{server.port}"
        assert await _start(f"ws://{own}/ws", f"http://{own}", **_via_loopback(server.port)) == "started"
        evil = f"evil.example:{server.port}"
        assert await _refused_status(f"ws://{evil}/ws", f"http://{evil}", **_via_loopback(server.port)) == 403


async def test_the_twilio_media_stream_refuses_web_pages(server: LiveServer) -> None:
    """Twilio's media WebSocket sends no Origin: any request with one is a page, whatever its origin."""
    for origin in (server.http_url, SHOP, "https://evil.example"):
        assert await _refused_status(server.ws_url("/telephone/media"), origin) == 403, origin


async def test_webrtc_endpoints_answer_cors_for_listed_origins(server: LiveServer) -> None:
    """The embedded widget posts its WebRTC offer cross-origin: listed origins pass the preflight."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ask = {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
        preflight = await http.options("/webrtc/offer", headers=ask)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == SHOP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "content-type" in preflight.headers["access-control-allow-headers"]
        refused = await http.options("/webrtc/offer", headers={**ask, "Origin": "https://evil.example"})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        config = await http.get("/webrtc/config", headers={"Origin": SHOP})
        assert config.headers["access-control-allow-origin"] == SHOP
        bad = await http.post("/webrtc/offer", content=b"{", headers={"Origin": SHOP})
        assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == SHOP
        evil = await http.post("/webrtc/offer", content=b"{}", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
