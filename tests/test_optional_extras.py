"""WebRTC (`agentkit[webrtc]`) and Twilio (`agentkit[twilio]`) are optional extras: without one, the
app still serves every other transport, and the missing one's paths answer 501 naming the extra.

Each case runs in a fresh interpreter where the extra's modules cannot be imported
(`sys.modules[name] = None`), since this one already has them loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_APP = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from agentkit import ReplyOnPause, Stream

def echo(audio):
    yield audio

app = FastAPI()
stream = Stream(ReplyOnPause(echo))
stream.mount(app)
out = {{}}
with TestClient(app) as client:
    for method, path in [("POST", "/webrtc/offer"), ("GET", "/webrtc/config"),
                         ("OPTIONS", "/webrtc/offer"), ("POST", "/telephone/incoming")]:
        answer = client.request(method, path)
        out[method + " " + path] = [answer.status_code, answer.json() if answer.status_code == 501 else None]
    try:
        with client.websocket_connect("/telephone/media"):
            out["WS /telephone/media"] = "accepted"
    except WebSocketDenialResponse as denied:
        out["WS /telephone/media"] = [denied.status_code, denied.json()]
    with client.websocket_connect("/ws") as ws:
        ws.send_json({{"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}})
        out["WS /ws"] = ws.receive_json()["type"]
print(json.dumps(out))
"""


def _run(blocked: list[str]) -> dict[str, object]:
    code = textwrap.dedent(_APP.format(blocked=blocked))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _missing(extra: str) -> list[object]:
    what = {"webrtc": "WebRTC", "twilio": "Twilio"}[extra]
    return [501, {"error": "missing_extra", "message": f"{what} needs: pip install 'agentkit[{extra}]'"}]


@pytest.mark.slow
def test_without_aiortc_webrtc_answers_501_and_the_rest_still_works() -> None:
    out = _run(["aiortc", "av"])
    assert out["POST /webrtc/offer"] == out["GET /webrtc/config"] == out["OPTIONS /webrtc/offer"]
    assert out["POST /webrtc/offer"] == _missing("webrtc")
    assert out["POST /telephone/incoming"] == [403, None]  # Twilio is there: unsigned webhooks are refused
    assert out["WS /ws"] == "started"


@pytest.mark.slow
def test_without_twilio_its_webhook_and_media_stream_answer_501_and_the_rest_still_works() -> None:
    out = _run(["twilio"])
    assert out["POST /telephone/incoming"] == out["WS /telephone/media"] == _missing("twilio")
    assert out["POST /webrtc/offer"] == [400, None]  # WebRTC is there: an empty offer is bad JSON
    assert out["WS /ws"] == "started"


@pytest.mark.slow
def test_without_either_extra_the_websocket_transport_still_works() -> None:
    out = _run(["aiortc", "av", "twilio"])
    assert out["POST /webrtc/offer"] == _missing("webrtc")
    assert out["POST /telephone/incoming"] == _missing("twilio")
    assert out["WS /ws"] == "started"


@pytest.mark.slow
def test_agentkit_call_without_twilio_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['twilio'] = None\n"
        "from agentkit.cli import main\n"
        "sys.exit(main(['call', '+14155550100', '--from', '+14155550101', '--public-url', 'https://x.example']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert "pip install 'agentkit[twilio]'" in done.stderr
