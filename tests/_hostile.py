"""Hostile input for every endpoint, seeded, and the drivers that send it: shared by tests/test_fuzz.py
(a few thousand messages) and bench/soak.py (the long runs).

`Hostile(seed)` makes what an attacker sends: JSON nested thousands deep, lone surrogates, numbers
of thousands of digits, wrong types, missing fields, control characters (newlines that would forge
log lines), binary frames, truncated base64, wrong sample rates, mutated SDP offers. The `fuzz_*`
drivers send it to a live server on 127.0.0.1 and count what came back in a `Tally`; they never
assert, so that the test (or the benchmark) decides what is a failure: a 5xx, a 1011 close.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentkit.testing import TwilioCaller, WebRTCCaller, WebSocketCaller, sign_twilio_request
from agentkit.testing._twilio_caller import parse_twiml

FORGED = "\n2099-01-01 00:00:00 CRITICAL agentkit: FORGED"
"""A log line an attacker would like to add: ids carrying it must never reach a log as a line."""
PHONE = "+15550109876"

SURROGATE = "\ud800"
CONTROL = ["\n", "\r", "\x00", "\x1b[31m", "\u2028", "\u202e", "\t", "\x7f"]


@dataclass
class Tally:
    """What one driver saw."""

    sent: int = 0
    """Hostile messages or requests sent."""
    statuses: Counter[int] = field(default_factory=Counter)
    """HTTP status codes of the answers."""
    close_codes: Counter[int] = field(default_factory=Counter)
    """Close codes the server chose (connections the client closed itself are not counted)."""
    error_codes: Counter[str] = field(default_factory=Counter)
    """`error` events (their `code`) the server answered with."""
    connections: int = 0
    survived: int = 0
    """Connections that still answered a probe after their hostile batch."""
    problems: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """5xx answers, 1011 closes and probes that went unanswered."""
        bad = [f"HTTP {s} x{n}" for s, n in self.statuses.items() if s >= 500]
        bad += [f"close {c} x{n}" for c, n in self.close_codes.items() if c in (1006, 1011)]
        return bad + self.problems


class Hostile:
    """Seeded generators of hostile input (see the module docstring)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- building blocks -------------------------------------------------------------------------
    def deep(self) -> str:
        depth = self.rng.choice([33, 100, 999, 2000, 5000, 20000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}"), ('{"type":', "}")])
        depth = min(depth, 60_000 // (len(opener) + len(closer)))  # under the 64 KiB message limit
        body = opener * depth + "1" + closer * depth
        return body if self.chance(0.7) else opener * depth  # unclosed too

    def weird_text(self) -> str:
        """A string value an attacker picks for an id, a caller, a token, a type."""
        rng = self.rng
        options: list[Callable[[], str]] = [
            lambda: SURROGATE + "abc",
            lambda: "caller" + FORGED,
            lambda: "x" + rng.choice(CONTROL) + "y",
            lambda: "x" * rng.choice([129, 1000, 20000]),
            lambda: "",
            lambda: "\udfff\ud800" * 3,
            lambda: "../../etc/passwd",
            lambda: "%s%n%x{0}${jndi:ldap://127.0.0.1/a}",
            lambda: "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40))),
        ]
        return rng.choice(options)()

    def weird_value(self) -> Any:
        if self.chance(0.33):
            return self.weird_text()
        values: list[Any] = [None, True, -1, 0, 1.5, 2**64, 10**300, float("inf"), [], {}]
        values += [[[[[[[["deep"]]]]]]], {"nested": {"x": [1, {"y": None}]}}]
        return self.rng.choice(values)

    def raw_text(self, valid: str) -> str:
        """A text frame that is not (good) JSON, often derived from `valid`."""
        rng = self.rng
        i = rng.randrange(len(valid))
        options: list[Callable[[], str]] = [
            self.deep,
            lambda: valid[:i],  # truncated
            lambda: valid[:i] + chr(rng.randrange(0x20, 0x7F)) + valid[i + 1 :],  # one byte changed
            lambda: "1" * rng.choice([4301, 10000, 60000]),  # over Python's integer digit limit
            lambda: rng.choice(["NaN", "[Infinity]", '{"a": -Infinity}', "1e999", "-1e999"]),
            lambda: rng.choice(["", " ", "null", "[]", '"start"', "true", "{", "}", "\x00"]),
            lambda: rng.choice(['"\\ud800"', '{"type": "\\udfff"}']),
            lambda: valid + valid,  # two documents
            lambda: valid.replace('"', "'"),
            lambda: json.dumps([json.loads(valid)] * rng.randrange(1, 50)),
            lambda: "\ufeff" + valid,  # a byte order mark
        ]
        return rng.choice(options)()

    def mutate(self, message: dict[str, Any]) -> str | dict[str, Any]:
        """`message` with a field dropped, retyped or added (a dict), or spoiled as text."""
        rng = self.rng
        message = json.loads(json.dumps(message))
        if self.chance(0.25):
            return self.raw_text(json.dumps(message))
        keys = list(message)
        action = rng.randrange(4)
        if action == 0 and keys:
            del message[rng.choice(keys)]
        elif action == 1 and keys:
            message[rng.choice(keys)] = self.weird_value()
        elif action == 2:
            message[self.weird_text()[:50]] = self.weird_value()
        else:
            for key in keys:
                if isinstance(message[key], dict) and message[key]:
                    inner = message[key]
                    inner[rng.choice(list(inner))] = self.weird_value()
                    break
            else:
                if keys:
                    message[rng.choice(keys)] = self.weird_value()
        return message

    def base64_payload(self) -> Any:
        rng = self.rng
        options: list[Callable[[], Any]] = [
            lambda: "//8",  # truncated
            lambda: "%%%==",
            lambda: base64.b64encode(rng.randbytes(rng.randrange(1, 1600))).decode(),  # noise
            lambda: base64.b64encode(rng.randbytes(161)).decode()[:-3],
            self.weird_value,
            lambda: "",
            lambda: "A" * 4001,  # bad padding
            lambda: base64.b64encode(bytes(160)).decode(),  # 20 ms of mu-law at 8 kHz: a good one
        ]
        return rng.choice(options)()

    @staticmethod
    def text(message: str | dict[str, Any]) -> str:
        return message if isinstance(message, str) else json.dumps(message)

    # -- per protocol ------------------------------------------------------------------------------
    def native_batch(self, n: int) -> list[str | bytes]:
        """agentkit's `/ws`: starts (good and bad), audio, input, ping, junk; `stop` rarely."""
        rng = self.rng
        good_start = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "args": []}
        out: list[str | bytes] = []
        if self.chance(0.6):
            out.append(json.dumps(good_start))
        for _ in range(n):
            choice = rng.randrange(10)
            if choice == 0:
                start = dict(good_start)
                start[rng.choice(["session_id", "caller", "sample_rate", "output_sample_rate"])] = (
                    rng.choice([0, -1, 7999, 48001, 10**12, "16000", 16000.5, True, None])
                    if self.chance(0.3)
                    else self.weird_text()
                )
                out.append(json.dumps(start))
            elif choice == 1:
                out.append(self.text(self.mutate(good_start)))
            elif choice == 2:  # audio: odd lengths, empty, noise
                out.append(rng.randbytes(rng.choice([0, 1, 3, 321, 640, 641, 3200])))
            elif choice == 3:
                out.append(json.dumps({"type": "input", "args": self.weird_value()}))
            elif choice == 4:
                out.append(json.dumps({"type": "ping", "id": self.weird_value()}))
            elif choice == 5:
                out.append(self.deep())
            elif choice == 6:
                out.append(self.raw_text(json.dumps(good_start)))
            elif choice == 7:
                out.append(json.dumps({"type": self.weird_value()}))
            elif choice == 8 and self.chance(0.05):
                out.append(json.dumps({"type": "stop"}))
            else:
                out.append(self.text(self.mutate({"type": "input", "args": ["a", 1]})))
        return out

    def fastrtc_batch(self, n: int) -> list[str | bytes]:
        """FastRTC's `/websocket/offer`: starts with hostile `websocket_id`s, media, junk."""
        rng = self.rng
        out: list[str | bytes] = []
        start = {"event": "start", "websocket_id": uuid.uuid4().hex}
        out.append(json.dumps(start if self.chance(0.5) else {**start, "websocket_id": self.weird_text()}))
        for _ in range(n):
            choice = rng.randrange(7)
            if choice == 0:
                out.append(json.dumps({"event": "media", "media": {"payload": self.base64_payload()}}))
            elif choice == 1:
                out.append(self.text(self.mutate({"event": "media", "media": {"payload": "//8="}})))
            elif choice == 2:
                out.append(json.dumps({"event": "start", "websocket_id": self.weird_text()}))
            elif choice == 3:
                out.append(rng.randbytes(rng.randrange(0, 700)))  # binary: not this protocol
            elif choice == 4:
                out.append(self.deep())
            elif choice == 5 and self.chance(0.05):
                out.append(json.dumps({"event": "stop"}))
            else:
                out.append(self.raw_text(json.dumps({"event": "media", "media": {"payload": "//8="}})))
        return out

    def twilio_start(self, token: str, call_sid: str, stream_sid: str) -> tuple[str, bool]:
        """A `start` for the token the webhook gave, half the time spoiled (then False)."""
        message: dict[str, Any] = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": token},
            },
        }
        if self.chance(0.5):
            return json.dumps(message), True
        rng = self.rng
        choice = rng.randrange(6)
        start = message["start"]
        if choice == 0:
            start["customParameters"]["token"] = rng.choice([SURROGATE, token + SURROGATE, 7, None, FORGED])
        elif choice == 1:
            message["streamSid"] = start["streamSid"] = self.weird_text()
        elif choice == 2:
            start["callSid"] = self.weird_text()
        elif choice == 3:
            start["mediaFormat"] = {
                "encoding": "audio/x-mulaw",
                "sampleRate": rng.choice([16000, "x", 10**400]),
            }
        elif choice == 4:
            message["start"] = self.weird_value()
        else:
            return self.text(self.mutate(message)), False
        return json.dumps(message), False

    def twilio_batch(self, n: int, stream_sid: str) -> list[str | bytes]:
        """Twilio's media stream after `start`: media, marks, dtmf, junk; rarely binary or `stop`."""
        rng = self.rng
        out: list[str | bytes] = []
        for _ in range(n):
            choice = rng.randrange(9)
            media = {
                "event": "media",
                "streamSid": stream_sid,
                "media": {"track": "inbound", "payload": "//8="},
            }
            if choice == 0:
                media["media"]["payload"] = self.base64_payload()
                out.append(json.dumps(media))
            elif choice == 1:
                out.append(self.text(self.mutate(media)))
            elif choice == 2:
                out.append(
                    json.dumps(
                        {"event": "mark", "streamSid": stream_sid, "mark": {"name": self.weird_value()}}
                    )
                )
            elif choice == 3:
                digit = rng.choice(["1", "#", "xyz", "", 5, None, SURROGATE, "\n"])
                out.append(json.dumps({"event": "dtmf", "streamSid": stream_sid, "dtmf": {"digit": digit}}))
            elif choice == 4:
                out.append(self.deep())
            elif choice == 5:
                out.append(json.dumps({"event": self.weird_value(), "streamSid": stream_sid}))
            elif choice == 6 and self.chance(0.03):
                out.append(rng.randbytes(20))  # binary: Twilio never sends it (1003)
            elif choice == 7 and self.chance(0.03):
                out.append(json.dumps({"event": "stop", "streamSid": stream_sid}))
            else:
                out.append(self.raw_text(json.dumps(media)))
        return out

    def channel_message(self) -> str | bytes:
        """One WebRTC data channel message (never `stop`: the call must survive)."""
        rng = self.rng

        def mutated() -> str:
            message = self.mutate({"type": "input", "args": [1]})
            if isinstance(message, dict) and message.get("type") == "stop":
                message["type"] = "input"
            return self.text(message)

        def spoiled() -> str:
            text = self.raw_text('{"type": "ping", "id": 1}')
            return text if "stop" not in text else "{"

        options: list[Callable[[], str | bytes]] = [
            self.deep,
            lambda: json.dumps({"type": "input", "args": self.weird_value()}),
            lambda: json.dumps({"type": "ping", "id": self.weird_value()}),
            lambda: rng.randbytes(rng.randrange(1, 300)),
            lambda: json.dumps({"type": self.weird_value()}),
            mutated,
            spoiled,
        ]
        return rng.choice(options)()

    def offer_body(self, sdp: str) -> tuple[str | bytes, dict[str, str]]:
        """A POST body for `/webrtc/offer` (and its content type): a mutated offer, or junk."""
        rng = self.rng
        headers = {"content-type": "application/json"}
        choice = rng.randrange(10)
        if choice < 5:
            return json.dumps({"type": "offer", "sdp": self.mutate_sdp(sdp)}), headers
        if choice == 5:
            key = rng.choice(["session_id", "caller", "type", "sdp"])
            return json.dumps({"type": "offer", "sdp": sdp, key: self.weird_value()}), headers
        if choice == 6:
            return self.deep(), headers
        if choice == 7:
            return self.raw_text(json.dumps({"type": "offer", "sdp": "v=0"})), headers
        if choice == 8:
            return rng.randbytes(rng.randrange(1, 2000)), {"content-type": "application/octet-stream"}
        return "x" * rng.choice([140_000, 300_000]), headers  # over the body limit

    def mutate_sdp(self, sdp: str) -> str:
        """A real offer with one of the edits that broke aiortc (or our checks) before."""
        rng = self.rng
        lines = sdp.strip().split("\r\n")
        choice = rng.randrange(12)
        if choice == 0:
            del lines[rng.randrange(1, len(lines))]
        elif choice == 1:
            prefix = rng.choice(
                [
                    "a=setup",
                    "a=mid",
                    "a=ice-ufrag",
                    "a=ice-pwd",
                    "a=fingerprint",
                    "a=rtcp-mux",
                    "a=sctp-port",
                    "a=group",
                    "a=rtpmap",
                ]
            )
            lines = [line for line in lines if not line.startswith(prefix)]
        elif choice == 2:
            role = rng.choice(["active", "passive", "holdconn", "junk"])
            lines = [line.replace("a=setup:actpass", f"a=setup:{role}") for line in lines]
        elif choice == 3:
            i = rng.randrange(1, len(lines))
            lines.insert(i, lines[i])
        elif choice == 4:
            i, j = rng.randrange(1, len(lines)), rng.randrange(1, len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif choice == 5:
            i = rng.randrange(1, len(lines))
            line = lines[i]
            k = rng.randrange(len(line))
            lines[i] = line[:k] + chr(rng.randrange(0x20, 0x7F)) + line[k + 1 :]
        elif choice == 6:
            return sdp[: rng.randrange(3, len(sdp))]
        elif choice == 7:
            lines = [line.replace(" 9 ", f" {rng.choice(['99999999999', '-1', 'x'])} ", 1) for line in lines]
        elif choice == 8:
            junk = rng.choice(
                ["a=candidate:garbage", "m=audio x", "c=IN IP7 x", "a=fmtp:", "a=ssrc:1", "a=extmap:x"]
            )
            lines.insert(rng.randrange(1, len(lines) + 1), junk)
        elif choice == 9:
            lines = [line.replace("a=mid:1", "a=mid:0") for line in lines]
        elif choice == 10:
            lines = [("a=group:BUNDLE 0 7" if line.startswith("a=group:BUNDLE") else line) for line in lines]
        else:
            return "\n".join(lines) + "\n"
        return "\r\n".join(lines) + "\r\n"

    def webhook_form(self) -> tuple[dict[str, str], bool]:
        """A voice webhook form and whether to sign it."""
        rng = self.rng
        form = {
            "AccountSid": "AC" + "0" * 32,
            "CallSid": "CA" + uuid.uuid4().hex,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": PHONE,
            "To": "+15550100002",
        }
        key = rng.choice(["CallSid", "From", "To", "Direction", "Extra"])
        value = self.weird_text()
        form[key] = value.encode("utf-8", "replace").decode("utf-8")  # a form body is bytes
        return form, self.chance(0.8)

    def api_path(self) -> str:
        """A GET path under `/api/conversations` with hostile parameters."""
        rng = self.rng
        escaped = rng.choice(
            ["%ED%A0%80", "%0A", "%00", "%0D%0AX-Forged:%201", "%FF%FE", "..%2F..%2F", "%25", "x" * 3000]
        )
        choice = rng.randrange(4)
        if choice == 0:
            return f"/api/conversations/{escaped}"
        if choice == 1:
            name = rng.choice(["caller", "agent"])
            return f"/api/conversations?{name}={escaped}"
        if choice == 2:
            value = rng.choice(["-1", "0", "501", "1e999", "abc", "99999999999999999999999", "nan", ""])
            return f"/api/conversations?limit={value}"
        value = rng.choice(["nan", "inf", "-inf", "1e309", "abc", "", "1" * 5000])
        return f"/api/conversations?before={value}"


# -- drivers -------------------------------------------------------------------------------------


async def _read(
    ws: ClientConnection, tally: Tally, answered: Callable[[Any], bool], probe: asyncio.Event
) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            if not isinstance(message, str):
                continue
            try:
                data = json.loads(message)
            except ValueError:
                tally.problems.append("the server sent a text message that is not JSON")
                continue
            if isinstance(data, dict) and data.get("type") == "error":
                tally.error_codes[str(data.get("code"))] += 1
            if answered(data):
                probe.set()


async def ws_batch(
    url: str,
    messages: list[str | bytes],
    tally: Tally,
    *,
    probe: str | None,
    answered: Callable[[Any], bool] = lambda data: False,
    abrupt: bool = False,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Send `messages` on a fresh connection, then `probe` (a message the server must still answer,
    unless it closed the connection); close (or drop, `abrupt`) and count the server's close code.
    `alive`: a server-side check that must hold if the server kept the connection open."""
    tally.connections += 1
    probed = asyncio.Event()
    async with connect(url, max_size=None, open_timeout=10, close_timeout=5) as ws:
        reader = asyncio.create_task(_read(ws, tally, answered, probed), name="fuzz-read")
        try:
            for message in messages:
                await ws.send(message)
                tally.sent += 1
            if probe is not None:
                await ws.send(probe)
                answer = asyncio.create_task(probed.wait(), name="fuzz-probe")
                await asyncio.wait({answer, reader}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
                answer.cancel()
                if probed.is_set():
                    tally.survived += 1
                elif ws.protocol.close_rcvd is None:  # neither answered nor closed by the server
                    tally.problems.append(f"no answer to the probe after {len(messages)} messages")
            else:  # no answer to wait for: give the server time to get through the batch
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 0.5)
                if ws.protocol.close_rcvd is None and alive is not None:
                    if not alive():
                        tally.problems.append("the connection is open but its session is gone")
                    tally.survived += 1
        except ConnectionClosed:
            pass
        finally:
            if abrupt and ws.protocol.close_rcvd is None:
                ws.transport.abort()
            else:
                with contextlib.suppress(ConnectionClosed):
                    await ws.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 5)
            reader.cancel()
    state = ws.protocol
    if state.close_rcvd is not None and state.close_rcvd_then_sent:  # the server chose to close
        tally.close_codes[state.close_rcvd.code] += 1
    elif not abrupt and ws.close_code == 1006:
        tally.close_codes[1006] += 1  # the connection died without a close frame


def is_pong(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == "pong" and data.get("id") == "probe"


def is_unknown_probe(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == "error" and "probe" in str(data.get("message"))


async def fuzz_native(url: str, hostile: Hostile, count: int, tally: Tally, *, batch: int = 40) -> None:
    while tally.sent < count:
        messages = hostile.native_batch(min(batch, count - tally.sent))
        probe = json.dumps({"type": "ping", "id": "probe"})
        await ws_batch(url, messages, tally, probe=probe, answered=is_pong, abrupt=hostile.chance(0.3))


async def fuzz_fastrtc(url: str, hostile: Hostile, count: int, tally: Tally, *, batch: int = 40) -> None:
    while tally.sent < count:
        messages = hostile.fastrtc_batch(min(batch, count - tally.sent))
        probe = json.dumps({"event": "probe"})  # answered with an unknown_message error naming it
        await ws_batch(
            url, messages, tally, probe=probe, answered=is_unknown_probe, abrupt=hostile.chance(0.3)
        )


async def post_webhook(
    http: httpx.AsyncClient, http_url: str, form: dict[str, str], auth_token: str | None
) -> httpx.Response:
    """POST the voice webhook, signed as Twilio signs it when `auth_token` is given."""
    headers = {}
    if auth_token is not None:
        url = f"{http_url}/telephone/incoming"
        headers["X-Twilio-Signature"] = sign_twilio_request(auth_token, url, form)
    return await http.post("/telephone/incoming", data=form, headers=headers)


async def fuzz_twilio(
    http_url: str,
    auth_token: str,
    hostile: Hostile,
    count: int,
    tally: Tally,
    *,
    batch: int = 40,
    sessions: Callable[[], int] | None = None,
) -> None:
    """Each connection: a signed webhook for a token, the stream, a (maybe spoiled) `start`, a batch."""
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
        while tally.sent < count:
            call_sid, stream_sid = "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex
            form = {"AccountSid": "AC" + "0" * 32, "CallSid": call_sid, "From": PHONE, "To": "+15550100002"}
            response = await post_webhook(http, http_url, form, auth_token)
            tally.statuses[response.status_code] += 1
            token = parse_twiml(response.status_code, response.text).parameters["token"]
            url = http_url.replace("http://", "ws://") + "/telephone/media"
            messages: list[str | bytes] = [
                json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            ]
            start, valid = hostile.twilio_start(token, call_sid, stream_sid)
            messages.append(start)
            messages += hostile.twilio_batch(min(batch, count - tally.sent), stream_sid)
            alive = (lambda: sessions() > 0) if sessions is not None and valid else None
            await ws_batch(url, messages, tally, probe=None, alive=alive, abrupt=hostile.chance(0.3))


async def fuzz_webhook(http_url: str, auth_token: str, hostile: Hostile, count: int, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
        for i in range(count):
            tally.sent += 1
            if i % 10 == 9:  # a body that is not a form at all, or far too large
                body = hostile.rng.choice(
                    [hostile.rng.randbytes(500), b"x" * 70_000, hostile.deep().encode()]
                )
                response = await http.post("/telephone/incoming", content=body)
            else:
                form, signed = hostile.webhook_form()
                response = await post_webhook(http, http_url, form, auth_token if signed else None)
            tally.statuses[response.status_code] += 1
    for _ in range(max(1, count // 20)):  # a client that goes away halfway through its body
        tally.sent += 1
        await disconnect_mid_body(http_url, "/telephone/incoming")


async def disconnect_mid_body(http_url: str, path: str) -> None:
    host, port = http_url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Content-Length: 1000\r\n\r\nFrom=%2B1555"
    )
    writer.write(head.encode())
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def fuzz_offers(http_url: str, sdps: list[str], hostile: Hostile, count: int, tally: Tally) -> None:
    """Hostile offers; an answered one is cancelled at once (`DELETE`), as a client giving up would."""
    async with httpx.AsyncClient(base_url=http_url, timeout=15) as http:
        for _ in range(count):
            body, headers = hostile.offer_body(hostile.rng.choice(sdps))
            tally.sent += 1
            response = await http.post("/webrtc/offer", content=body, headers=headers)
            tally.statuses[response.status_code] += 1
            if response.status_code == 200:
                await http.delete(f"/webrtc/sessions/{response.json()['session_id']}")
            elif response.status_code < 500:
                error = response.json().get("error")
                tally.error_codes[str(error)] += 1


async def fuzz_api(http_url: str, token: str, hostile: Hostile, count: int, tally: Tally) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=http_url, timeout=10, headers=headers) as http:
        for _ in range(count):
            tally.sent += 1
            response = await http.get(hostile.api_path())
            tally.statuses[response.status_code] += 1


# -- sessions, clean and abrupt ------------------------------------------------------------------

SESSION_KINDS = ("ws", "ws", "fastrtc", "twilio", "webrtc")


async def one_session(http_url: str, kind: str, *, abrupt: bool, twilio_token: str) -> None:
    """One short call on `kind` that ends with a goodbye (`stop`) or a dropped connection."""
    ws_url = http_url.replace("http://", "ws://")
    if kind == "ws":
        async with WebSocketCaller(f"{ws_url}/ws") as caller:
            await caller.send_silence(0.2, realtime=False)
            if abrupt:
                assert caller._ws is not None
                caller._ws.transport.abort()
            else:
                await caller.stop()
    elif kind == "fastrtc":
        async with connect(f"{ws_url}/websocket/offer", open_timeout=10) as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": uuid.uuid4().hex}))
            silence = base64.b64encode(bytes([0xFF]) * 960).decode()  # 20 ms of mu-law at 48 kHz
            for _ in range(10):
                await ws.send(json.dumps({"event": "media", "media": {"payload": silence}}))
            if abrupt:
                ws.transport.abort()
            else:
                await ws.send(json.dumps({"event": "stop"}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 5)
    elif kind == "twilio":
        async with TwilioCaller(http_url, auth_token=twilio_token, from_number=PHONE) as call:
            await call.start()
            for _ in range(10):
                await call.send_raw(call.media_message(bytes(320)))
            if abrupt:
                assert call._ws is not None
                call._ws.transport.abort()
            else:
                await call.stop()
    else:
        async with WebRTCCaller(http_url) as caller:
            await asyncio.sleep(0.1)
            if not abrupt:
                caller.send_json({"type": "stop"})
                await caller.wait_for_event("stopped", timeout_s=5)


async def mixed_sessions(
    http_url: str, count: int, rng: random.Random, *, twilio_token: str, concurrency: int = 6
) -> Counter[str]:
    """`count` calls of every kind, `concurrency` at a time, about a third of them dropped; returns
    how many of each kind failed on the client side (refused or broken), by `kind:exception`."""
    failed: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def run(kind: str, abrupt: bool) -> None:
        async with gate:
            try:
                await one_session(http_url, kind, abrupt=abrupt, twilio_token=twilio_token)
            except Exception as exc:  # counted, not raised: the caller of this decides
                failed[f"{kind}:{type(exc).__name__}"] += 1

    plan = [(rng.choice(SESSION_KINDS), rng.random() < 0.35) for _ in range(count)]
    async with asyncio.TaskGroup() as group:
        for kind, abrupt in plan:
            group.create_task(run(kind, abrupt))
    return failed


@dataclass(frozen=True)
class Usage:
    """This process's resident memory, OS threads and open file descriptors."""

    rss_mb: float
    threads: int
    fds: int

    @classmethod
    def now(cls) -> Usage:
        gc.collect()
        lines = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
        status = dict(line.split(":", 1) for line in lines)
        rss_kb = int(status["VmRSS"].split()[0])
        return cls(rss_kb / 1024, int(status["Threads"]), len(os.listdir("/proc/self/fd")))


async def fuzz_data_channel(http_url: str, hostile: Hostile, count: int, tally: Tally) -> None:
    """One connected WebRTC call; hostile messages on its data channel; it must still answer a ping."""
    async with WebRTCCaller(http_url) as caller:
        tally.connections += 1
        for _ in range(count):
            caller.channel.send(hostile.channel_message())
            tally.sent += 1
            if tally.sent % 50 == 0:
                await asyncio.sleep(0.05)  # let the SCTP association drain
        caller.send_json({"type": "ping", "id": "probe"})
        try:
            await caller.wait_for_event("pong", timeout_s=10)
            tally.survived += 1
        except (TimeoutError, ConnectionError) as exc:
            tally.problems.append(f"the call did not answer its probe: {exc}")
        tally.error_codes.update(str(e.data.get("code")) for e in caller.events_of("error"))
        if caller.pc.connectionState != "connected":
            tally.problems.append(f"the call is {caller.pc.connectionState} after its hostile messages")
