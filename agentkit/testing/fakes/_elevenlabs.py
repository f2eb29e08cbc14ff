"""`FakeElevenLabs`: a loopback server speaking ElevenLabs' streaming text-to-speech API."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from agentkit.audio import AudioFrame, StreamingResampler, float_to_pcm16
from agentkit.testing.fakes._server import Exchange, FakeServer

__all__ = ["FakeElevenLabs"]

_PATH = re.compile(r"^/v1/text-to-speech/([^/]+)/stream$")
_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
_ERRORS = {
    400: "invalid_request",
    401: "invalid_api_key",
    404: "voice_not_found",
    422: "invalid_parameters",
    429: "too_many_concurrent_requests",
    500: "internal_server_error",
    503: "system_busy",
}


class FakeElevenLabs(FakeServer):
    """`POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`, key in `xi-api-key`.

    The answer is raw signed 16-bit little-endian mono PCM at the requested rate, chunked at 100 ms
    per content chunk: the reply's `audio` if set, else a 220 Hz tone lasting `seconds_per_char`
    per character of the request's text (so longer text gives longer audio). Only `pcm_*` output
    formats are supported. Errors carry ElevenLabs' body `{"detail": {"status": ..., "message": ...}}`.
    """

    auth_header = "xi-api-key"

    def __init__(self, *, seconds_per_char: float = 0.06, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds_per_char = seconds_per_char
        """Length of the default tone per character of text."""
        self.sent_audio: list[AudioFrame] = []
        """The whole audio of each answered request, in order (what a full read would get)."""

    def error_body(self, status: int) -> Any:
        code = _ERRORS.get(status, "internal_server_error" if status >= 500 else "invalid_request")
        return {"detail": {"status": code, "message": f"fake {code} (HTTP {status})"}}

    async def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None:
            await self.send_error(exchange, 404)
            return
        body = await self.read_json(exchange, "text")
        if body is None:
            return
        output_format = request.query.get("output_format", "mp3_44100_128")
        rate_text = output_format.removeprefix("pcm_")
        rate = int(rate_text) if output_format.startswith("pcm_") and rate_text.isdigit() else 0
        text = str(body["text"])
        if rate not in _RATES:
            await self.send_error(exchange, 422)
            return
        audio = self._audio(exchange, text, rate)
        self.sent_audio.append(audio)
        pcm = float_to_pcm16(audio.samples)
        step = rate // 10 * 2  # 100 ms of 16-bit samples
        await exchange.start(200, [("content-type", "audio/pcm")])
        for offset in range(0, len(pcm), step):
            await exchange.send_chunk(pcm[offset : offset + step])
        await exchange.end_content()
        await exchange.finish()

    def _audio(self, exchange: Exchange, text: str, rate: int) -> AudioFrame:
        given = exchange.reply.audio
        if given is not None:
            if given.sample_rate == rate:
                return given
            resampler = StreamingResampler(given.sample_rate, rate)
            return AudioFrame(resampler.process(given.samples, last=True), rate)
        n = round(max(len(text), 1) * self.seconds_per_char * rate)
        t = np.arange(n, dtype=np.float64) / rate
        return AudioFrame((0.3 * np.sin(2.0 * np.pi * 220.0 * t)).astype(np.float32), rate)
