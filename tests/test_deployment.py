"""The deployment recipe (docs/deployment.md, deploy/) says what the server does: its probes, flags,
endpoints, settings and metric names are checked against the app, and a server behind a proxy
counts its per-address caps by the client the trusted proxy names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _server import Silent, live_server, offer_sdp
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import WebSocketRoute

from agentkit import Stream
from agentkit.cli import _parser
from agentkit.config import AgentkitSettings
from agentkit.server import create_app
from agentkit.testing import loopback_ice

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


def _k8s() -> dict[str, dict[str, Any]]:
    docs = [*yaml.safe_load_all((DEPLOY / "k8s" / "agentkit.yaml").read_text())]
    return {doc["kind"]: doc for doc in docs}


def _env_names(text: str) -> set[str]:
    return set(re.findall(r"\b((?:AGENTKIT|TWILIO)_[A-Z_]+)\b", text))


def test_every_setting_the_recipe_uses_exists() -> None:
    """A misspelt variable would be silently ignored; every one named in deploy/ and the doc is real."""
    fields = AgentkitSettings.model_fields
    known = {f"AGENTKIT_{name.upper()}" for name in fields}
    known |= {"TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_API_BASE_URL"}  # their own names
    texts = [p.read_text() for p in DEPLOY.rglob("*") if p.is_file()] + [DOCS.read_text()]
    used = set().union(*(_env_names(text) for text in texts))
    assert used, "the recipe names no settings at all?"
    assert used <= known, used - known


async def test_the_kubernetes_probes_and_command_match_the_server() -> None:
    deployment = _k8s()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    paths = {
        container[probe]["httpGet"]["path"] for probe in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert paths == {"/healthz", "/readyz"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    transport = httpx.ASGITransport(app=create_app(Stream(Silent())))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for path in paths:  # served, and healthy on an idle server
            assert (await http.get(path)).status_code == 200, path
    args = container["args"]
    assert args[:2] == ["agentkit", "run"]
    assert "--workers" in args
    _parser().parse_args(args[1:])  # the flags exist and parse (argparse exits on an unknown one)


def test_the_autoscaler_scales_on_series_the_server_exports() -> None:
    hpa = _k8s()["HorizontalPodAutoscaler"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    app = create_app(Stream(Silent()))
    text = app.state.metrics.exposition().decode()
    exported = {family.name for family in text_string_to_metric_families(text)}
    assert wanted <= exported, wanted - exported


def test_the_proxy_upgrades_every_websocket_endpoint() -> None:
    """nginx must upgrade exactly the app's WebSocket routes (the Twilio media stream included)."""
    conf = (DEPLOY / "nginx.conf").read_text()
    upgraded = re.search(r"location ~ \^/\(([^)]*)\)\$", conf)
    assert upgraded is not None
    app = create_app(Stream(Silent()))
    websockets = {route.path.lstrip("/") for route in app.routes if isinstance(route, WebSocketRoute)}
    assert set(upgraded.group(1).split("|")) == websockets


def test_the_compose_file_shares_one_redis_and_checks_readiness() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    servers = [name for name in compose["services"] if name.startswith("agentkit")]
    assert len(servers) >= 2
    for name in servers:
        service = compose["services"][name]
        assert service["environment"]["AGENTKIT_STORE"].startswith("redis://redis:")
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        # behind the proxy the per-address caps must count the browsers, not nginx, and nothing
        # but the proxy may reach the servers for that to be safe
        assert service["environment"]["AGENTKIT_FORWARDED_ALLOW_IPS"]
        assert "ports" not in service


@pytest.fixture
def _loopback() -> Iterator[None]:
    with loopback_ice():
        yield


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [False, True])
async def test_behind_a_trusted_proxy_the_caps_count_real_clients(
    trusted: bool, monkeypatch: pytest.MonkeyPatch, _loopback: None
) -> None:
    """Three callers behind one proxy (three `X-Forwarded-For` addresses, one socket peer), with at
    most 2 pending WebRTC offers per address: without `AGENTKIT_FORWARDED_ALLOW_IPS` they are one
    address to the server and the third is refused; with it, three addresses and all are answered."""
    if trusted:
        monkeypatch.setenv("AGENTKIT_FORWARDED_ALLOW_IPS", "127.0.0.1")
    else:
        monkeypatch.delenv("AGENTKIT_FORWARDED_ALLOW_IPS", raising=False)
    stream = Stream(Silent())
    sdps = [await offer_sdp() for _ in range(3)]
    async with live_server(stream, max_pending_offers_per_address=2) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            answers = [
                await http.post(
                    "/webrtc/offer",
                    json={"type": "offer", "sdp": sdp},
                    headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                )
                for i, sdp in enumerate(sdps)
            ]
        statuses = [a.status_code for a in answers]
    assert statuses == ([200, 200, 200] if trusted else [200, 200, 429])
