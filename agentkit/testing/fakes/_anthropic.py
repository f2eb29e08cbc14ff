"""`FakeAnthropic`: a loopback server speaking the Anthropic Messages API, streamed or not."""

from __future__ import annotations

import json
from typing import Any

from agentkit.testing.fakes._script import FakeRequest
from agentkit.testing.fakes._server import Exchange, FakeServer

__all__ = ["FakeAnthropic", "sse"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def sse(event: str | None, data: Any) -> bytes:
    """One server-sent event: an optional `event:` line, a `data:` line of JSON (or text)."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class FakeAnthropic(FakeServer):
    """`POST /v1/messages` as Anthropic documents it, with the key checked.

    A streamed reply sends `message_start`, `content_block_start`, `ping`, one `content_block_delta`
    (`text_delta`) per delta of the reply, `content_block_stop`, `message_delta` (stop reason and
    usage) and `message_stop`. Errors carry Anthropic's body,
    `{"type": "error", "error": {"type": "rate_limit_error", "message": ...}, "request_id": ...}`.
    """

    auth_header = "x-api-key"

    def authorized(self, request: FakeRequest) -> bool:
        """The key in `x-api-key` (the documented header) or `Authorization: Bearer` (SDK 2.x)."""
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer "):
            return self.api_key is None or bearer == f"Bearer {self.api_key}"
        return super().authorized(request)

    def error_body(self, status: int) -> Any:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": f"fake {kind} (HTTP {status})"},
            "request_id": f"req_fake_{len(self.requests)}",
        }

    async def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        if (request.method, request.path) != ("POST", "/v1/messages"):
            await self.send_error(exchange, 404)
            return
        body = await self.read_json(exchange, "model", "messages")
        if body is None:
            return
        if body.get("stream"):
            await self._stream(exchange, str(body["model"]))
        else:
            await self._whole(exchange, str(body["model"]))

    def _usage(self, exchange: Exchange, deltas: int) -> tuple[int, int]:
        reply = exchange.reply
        return reply.input_tokens, reply.output_tokens if reply.output_tokens is not None else deltas

    async def _whole(self, exchange: Exchange, model: str) -> None:
        reply = exchange.reply
        input_tokens, output_tokens = self._usage(exchange, len(reply.text_deltas()))
        message = {
            "id": f"msg_fake_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(reply.text_deltas())}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        await exchange.send_json(200, message)

    async def _stream(self, exchange: Exchange, model: str) -> None:
        deltas = exchange.reply.text_deltas()
        input_tokens, output_tokens = self._usage(exchange, len(deltas))
        number = len(self.requests)
        headers = [("content-type", "text/event-stream"), ("request-id", f"req_fake_{number}")]
        await exchange.start(200, headers)
        message: dict[str, Any] = {
            "id": f"msg_fake_{number}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
            },
        }
        await exchange.send(sse("message_start", {"type": "message_start", "message": message}))
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        await exchange.send(sse("content_block_start", block))
        await exchange.send(sse("ping", {"type": "ping"}))
        for text in deltas:
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
            await exchange.send_chunk(sse("content_block_delta", delta))
        exchange.end_content()
        await exchange.send(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
        await exchange.send(sse("message_delta", end))
        await exchange.send(sse("message_stop", {"type": "message_stop"}))
        await exchange.finish()
