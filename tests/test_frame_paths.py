"""The per-frame fast paths take exactly the decisions of the general code they stand in for."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import numpy as np
import pytest

from agentkit.audio import mulaw_encode
from agentkit.audio._mulaw import _encode_by_formula
from agentkit.clock import MonotonicClock
from agentkit.transports._twilio_media import _media_payload
from agentkit.transports._ws_common import WebSocketConnection
from agentkit.transports.twilio import CallTokens, TwilioConnection

SID = "MZ" + "0123456789abcdef" * 2


class _Socket:
    """Enough of Starlette's WebSocket to send on: it keeps the text it is sent."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.texts.append(message["text"])


class _Host:
    max_message_bytes = 64 * 1024


class _Session:
    clock = MonotonicClock()


class _Recorder(TwilioConnection):
    """A started Twilio connection that notes what it would feed the session, or complain about."""

    def __init__(self) -> None:
        super().__init__(_Socket(), _Host(), CallTokens())  # type: ignore[arg-type]
        self.session = _Session()  # type: ignore[assignment]  # started: `feed` is overridden
        self.outcomes: list[tuple[str, object]] = []

    async def feed(self, payload: bytes, codec: str) -> None:
        self.outcomes.append(("feed", payload))

    async def complain(self, code: str, message: str) -> None:
        self.outcomes.append(("complain", code))

    async def report(self, error: object, message: str | None = None, *, fatal: bool = False) -> None:
        self.outcomes.append(("report", error))


def _media(payload: str = "", **changes: Any) -> dict[str, Any]:
    media = {"track": "inbound", "chunk": "7", "timestamp": "140", "payload": payload}
    message = {"event": "media", "sequenceNumber": "9", "media": media, "streamSid": SID}
    message.update(changes)
    return message


def _texts() -> list[str]:
    rng = random.Random(12)
    audio = base64.b64encode(bytes(rng.randrange(256) for _ in range(160))).decode()
    assert "/" in audio and "+" in audio
    valid = _media(audio)
    texts = [
        json.dumps(valid),
        json.dumps(valid, separators=(",", ":")),
        json.dumps(valid, indent=2),
        " " + json.dumps(valid) + "\r\n",
        json.dumps(valid).replace("/", "\\/"),  # an escape: valid JSON, the generic path's
        json.dumps(valid).replace(": ", ":\u00a0"),  # not JSON whitespace
        json.dumps(_media("")),
        json.dumps(_media(audio[:-1])),  # bad padding
        json.dumps(_media(audio[:-4] + "a===")),
        json.dumps(_media(audio[:10] + "!" + audio[11:])),
        json.dumps(_media(audio[:10] + "\u00e9" + audio[11:]), ensure_ascii=False),  # not ASCII
        json.dumps(_media(audio[:10] + "\n" + audio[10:])),  # an escaped newline: JSON, not base64
        json.dumps(valid).replace(audio[:10], audio[:10] + "\n"),  # a raw one: not JSON
        json.dumps(_media(audio[:10] + '"' + audio[10:])),  # an escaped quote inside the payload
        json.dumps(_media(audio, media={"track": "outbound", "payload": audio})),
        json.dumps(_media(audio, media={"payload": audio})),
        json.dumps(_media(audio, media={"track": "inbound", "chunk": 7, "timestamp": "1", "payload": audio})),
        json.dumps(_media(audio, media=[audio])),
        json.dumps({"media": valid["media"], **{k: v for k, v in valid.items() if k != "media"}}),
        json.dumps({**valid, "extra": 1}),
        json.dumps(valid)[:-1],
        json.dumps(valid) + json.dumps(valid),
    ]
    for _ in range(1500):  # random damage to a valid message
        chars = list(rng.choice(texts[:3]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars))
            action = rng.random()
            if action < 0.4:
                chars[at] = rng.choice('{}[]",:= \t\\/+aZ09\u00a0\x00')
            elif action < 0.7:
                del chars[at]
            else:
                chars.insert(at, rng.choice('{}",: \n=\\A'))
        texts.append("".join(chars))
    return texts


async def test_twilio_media_fast_path_decides_as_the_generic_parse() -> None:
    texts = _texts()
    for text in texts:
        fast, generic = _Recorder(), _Recorder()
        await fast._on_text(text)
        await WebSocketConnection._on_text(generic, text)  # parse, then on_message: the general way
        assert fast.outcomes == generic.outcomes, text
    taken = [text for text in texts if _media_payload(text) is not None]
    assert 5 < len(taken) < len(texts) / 2  # the fast path was taken, and refused too


async def test_twilio_outbound_media_is_the_json_it_always_was() -> None:
    connection = _Recorder()
    connection.session = None
    connection._require_token = False

    async def open_session(**_: Any) -> None:
        connection.session = _Session()  # type: ignore[assignment]

    connection.open_session = open_session  # type: ignore[assignment,method-assign]
    await connection.on_message({"event": "start", "start": {"streamSid": SID, "callSid": "CA" + "1" * 32}})
    assert connection.session is not None
    payload = bytes(range(200, 40, -1))
    await connection.send_audio(payload)
    socket = connection.websocket
    assert isinstance(socket, _Socket)
    message = {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(payload).decode()}}
    assert socket.texts[0] == json.dumps(message)  # byte for byte


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_mulaw_table_is_the_g711_arithmetic(dtype: type[np.integer[Any]]) -> None:
    every = np.arange(-32768, 32768).astype(dtype)
    assert mulaw_encode(every) == _encode_by_formula(every).tobytes()
