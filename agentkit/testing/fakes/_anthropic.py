"""`FakeAnthropic`: a loopback server speaking the Anthropic Messages API, streamed or not."""

from __future__ import annotations

import json
from typing import Any

from agentkit.testing.fakes._script import FakeRequest, FakeToolCall
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
    usage) and `message_stop`. Each of the reply's `tool_calls` is a `tool_use` block after the
    text block (or the first block, when the reply has no text): `content_block_start` with its id
    and name, `input_json_delta`s carrying its arguments' JSON in pieces, `content_block_stop`; the
    stop reason is then `tool_use`. Errors carry Anthropic's body,
    `{"type": "error", "error": {"type": "rate_limit_error", "message": ...}, "request_id": ...}`,
    and inside a stream (`Reply.error_after`) the same as an `event: error`.
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

    def stream_error_event(self, status: int) -> bytes:
        """Anthropic's `event: error` (e.g. `overloaded_error`), as sent inside a 200 stream."""
        body = self.error_body(status)
        return sse("error", {"type": "error", "error": body["error"]})

    async def _whole(self, exchange: Exchange, model: str) -> None:
        reply = exchange.reply
        input_tokens, output_tokens = self._usage(exchange, reply.content_chunks())
        content: list[dict[str, Any]] = []
        if reply.has_text():
            content.append({"type": "text", "text": "".join(reply.text_deltas())})
        for n, call in enumerate(reply.tool_calls):
            arguments = _json_object(call.arguments_json())  # a whole reply's input is always an object
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or f"toolu_fake_{n}",
                    "name": call.name,
                    "input": arguments,
                }
            )
        message = {
            "id": f"msg_fake_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        await exchange.send_json(200, message)

    async def _stream_tool_use(
        self, exchange: Exchange, index: int, call: FakeToolCall, call_id: str
    ) -> None:
        """One `tool_use` block: its start (id, name, empty input), an empty `input_json_delta` (as
        the API sends first), one delta per piece of the arguments, its stop."""
        tool_use = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
        start = {"type": "content_block_start", "index": index, "content_block": tool_use}
        await exchange.send(sse("content_block_start", start))
        empty = {"type": "input_json_delta", "partial_json": ""}
        await exchange.send(sse("content_block_delta", _block_delta(index, empty)))
        for piece in call.fragments():
            delta = {"type": "input_json_delta", "partial_json": piece}
            await exchange.send_chunk(sse("content_block_delta", _block_delta(index, delta)))
        await exchange.send(sse("content_block_stop", {"type": "content_block_stop", "index": index}))

    async def _stream(self, exchange: Exchange, model: str) -> None:
        reply = exchange.reply
        deltas = reply.text_deltas() if reply.has_text() else ()
        input_tokens, output_tokens = self._usage(exchange, reply.content_chunks())
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
        index = 0
        if deltas:
            text_block = {"type": "text", "text": ""}
            block = {"type": "content_block_start", "index": index, "content_block": text_block}
            await exchange.send(sse("content_block_start", block))
        await exchange.send(sse("ping", {"type": "ping"}))
        if deltas:
            for text in deltas:
                delta = {"type": "text_delta", "text": text}
                await exchange.send_chunk(sse("content_block_delta", _block_delta(index, delta)))
            await exchange.send(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
            index += 1
        for number_in_reply, call in enumerate(reply.tool_calls):
            await self._stream_tool_use(exchange, index, call, call.id or f"toolu_fake_{number_in_reply}")
            index += 1
        await exchange.end_content()
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if reply.tool_calls else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
        await exchange.send(sse("message_delta", end))
        await exchange.send(sse("message_stop", {"type": "message_stop"}))
        await exchange.finish()


def _block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def _json_object(text: str) -> Any:
    """`text` parsed when it is a JSON object, else `{}`."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
