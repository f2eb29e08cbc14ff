"""`FakeGroq`: a loopback server speaking Groq's OpenAI-compatible chat and transcription APIs."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np

from agentkit.audio import AudioFrame
from agentkit.testing.fakes._anthropic import sse
from agentkit.testing.fakes._server import Exchange, FakeServer

__all__ = ["FakeGroq"]

_CREATED = 1_700_000_000  # a fixed `created` timestamp: the fake's answers are reproducible
_ERRORS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permissions_error", "forbidden"),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("tokens", "rate_limit_exceeded"),
    498: ("invalid_request_error", "flex_tier_capacity_exceeded"),
    500: ("internal_server_error", "internal_server_error"),
    503: ("service_unavailable", "service_unavailable"),
}


class FakeGroq(FakeServer):
    """Groq's `POST /openai/v1/chat/completions` and `POST /openai/v1/audio/transcriptions`.

    The key is checked in `Authorization: Bearer <key>`. A streamed chat reply is a series of
    `data: {chat.completion.chunk}` events, the first with the assistant role, one per delta, a last
    one with `finish_reason` and the usage in `x_groq.usage` (and in `usage` too when the request
    asked for `stream_options.include_usage`), then `data: [DONE]`. A transcription answers
    `{"text": ...}` (`response_format` `json`) or the bare text (`text`). Errors carry the
    OpenAI-style body `{"error": {"message": ..., "type": ..., "code": ...}}`.
    """

    auth_prefix = "Bearer "

    def error_body(self, status: int) -> Any:
        kind, code = _ERRORS.get(
            status, ("internal_server_error" if status >= 500 else "invalid_request_error", "")
        )
        return {
            "error": {"message": f"fake {code or kind} (HTTP {status})", "type": kind, "code": code or None}
        }

    def received_audio(self) -> list[AudioFrame]:
        """The audio of every transcription request, decoded from its WAV upload."""
        frames = []
        for request in self.requests:
            upload = request.files.get("file")
            if request.path.endswith("/audio/transcriptions") and upload is not None:
                frames.append(_decode_wav(upload.data))
        return frames

    async def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        route = (request.method, request.path)
        if route == ("POST", "/openai/v1/chat/completions"):
            body = await self.read_json(exchange, "model", "messages")
            if body is None:
                return
            model = str(body["model"])
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                await self._stream_chat(exchange, model, include_usage=include_usage)
            else:
                await self._whole_chat(exchange, model)
        elif route == ("POST", "/openai/v1/audio/transcriptions"):
            await self._transcribe(exchange)
        else:
            await self.send_error(exchange, 404)

    def _usage(self, exchange: Exchange, deltas: int) -> dict[str, Any]:
        reply = exchange.reply
        output = reply.output_tokens if reply.output_tokens is not None else deltas
        return {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": output,
            "total_tokens": reply.input_tokens + output,
            "queue_time": 0.001,
            "prompt_time": 0.002,
            "completion_time": 0.01,
            "total_time": 0.012,
        }

    async def _whole_chat(self, exchange: Exchange, model: str) -> None:
        deltas = exchange.reply.text_deltas()
        number = len(self.requests)
        completion = {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(deltas)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(exchange, len(deltas)),
            "x_groq": {"id": f"req_fake_{number}"},
        }
        await exchange.send_json(200, completion)

    async def _stream_chat(self, exchange: Exchange, model: str, *, include_usage: bool) -> None:
        deltas = exchange.reply.text_deltas()
        number = len(self.requests)

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            payload = {
                "id": f"chatcmpl-fake-{number}",
                "object": "chat.completion.chunk",
                "created": _CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [choice],
                **extra,
            }
            return sse(None, payload)

        await exchange.start(200, [("content-type", "text/event-stream")])
        await exchange.send(chunk({"role": "assistant", "content": ""}, x_groq={"id": f"req_fake_{number}"}))
        for text in deltas:
            await exchange.send_chunk(chunk({"content": text}))
        exchange.end_content()
        usage = self._usage(exchange, len(deltas))
        extra: dict[str, Any] = {"x_groq": {"id": f"req_fake_{number}", "usage": usage}}
        if include_usage:
            extra["usage"] = usage
        await exchange.send(chunk({}, "stop", **extra))
        await exchange.send(sse(None, "[DONE]"))
        await exchange.finish()

    async def _transcribe(self, exchange: Exchange) -> None:
        request = exchange.request
        upload = request.files.get("file")
        if upload is None or "model" not in request.form:
            await self.send_error(exchange, 400)
            return
        try:
            duration_s = _decode_wav(upload.data).duration_s
        except (wave.Error, EOFError, ValueError):
            await self.send_error(exchange, 400)
            return
        text = exchange.reply.text
        number = len(self.requests)
        response_format = request.form.get("response_format", "json")
        if response_format == "text":
            await exchange.send_body(200, text.encode(), [("content-type", "text/plain; charset=utf-8")])
            return
        result: dict[str, Any] = {"text": text, "x_groq": {"id": f"req_fake_{number}"}}
        if response_format == "verbose_json":
            language = request.form.get("language", "en")
            result.update(task="transcribe", language=language, duration=duration_s, segments=[])
        await exchange.send_json(200, result)


def _decode_wav(data: bytes) -> AudioFrame:
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("the fake reads 16-bit PCM WAV only")
        rate, channels = wav.getframerate(), wav.getnchannels()
        pcm = wav.readframes(wav.getnframes())
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return AudioFrame(samples, rate)
