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
    asked for `stream_options.include_usage`), then `data: [DONE]`. The reply's `tool_calls`
    follow its text as `delta.tool_calls` pieces: for each call one piece with its `index`, `id`,
    `type` and `function.name` (and empty `arguments`), then its arguments' JSON in pieces under the
    same `index`; the last chunk's `finish_reason` is then `tool_calls`. A transcription answers
    `{"text": ...}` (`response_format` `json`) or the bare text (`text`). Errors carry the
    OpenAI-style body `{"error": {"message": ..., "type": ..., "code": ...}}`, and inside a stream
    (`Reply.error_after`) the same as a `data:` event.
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

    def stream_error_event(self, status: int) -> bytes:
        """The OpenAI-style error inside a stream: a `data: {"error": {...}}` event."""
        return sse(None, self.error_body(status))

    async def _whole_chat(self, exchange: Exchange, model: str) -> None:
        reply = exchange.reply
        number = len(self.requests)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(reply.text_deltas()) if reply.has_text() else None,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_fake_{index}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for index, call in enumerate(reply.tool_calls)
            ]
        completion = {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": _CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": self._usage(exchange, reply.content_chunks()),
            "x_groq": {"id": f"req_fake_{number}"},
        }
        await exchange.send_json(200, completion)

    async def _stream_chat(self, exchange: Exchange, model: str, *, include_usage: bool) -> None:
        reply = exchange.reply
        deltas = reply.text_deltas() if reply.has_text() else ()
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
        first = {"role": "assistant", "content": "" if deltas else None}
        await exchange.send(chunk(first, x_groq={"id": f"req_fake_{number}"}))
        for text in deltas:
            await exchange.send_chunk(chunk({"content": text}))
        for index, call in enumerate(reply.tool_calls):
            # The first piece names the call; its arguments follow in pieces, all under its index.
            head = {"id": call.id or f"call_fake_{index}", "type": "function"}
            opening = {"index": index, **head, "function": {"name": call.name, "arguments": ""}}
            await exchange.send(chunk({"tool_calls": [opening]}))
            for piece in call.fragments():
                fragment = {"index": index, "function": {"arguments": piece}}
                await exchange.send_chunk(chunk({"tool_calls": [fragment]}))
        await exchange.end_content()
        usage = self._usage(exchange, reply.content_chunks())
        extra: dict[str, Any] = {"x_groq": {"id": f"req_fake_{number}", "usage": usage}}
        if include_usage:
            extra["usage"] = usage
        await exchange.send(chunk({}, "tool_calls" if reply.tool_calls else "stop", **extra))
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
