"""Local fake servers for the cloud APIs, so the real SDKs can be tested on loopback.

Each fake listens on a free port of 127.0.0.1 and speaks its API's documented wire format; point a
provider's `base_url` at it. It records every request (`fake.requests`) and answers from a queue
of scripted `Reply`s, each of which can inject faults:

```python
from agentkit.providers.llm import AnthropicLLM, ChatMessage
from agentkit.testing.fakes import FakeAnthropic, Reply

async with FakeAnthropic(api_key="test-key") as fake:
    fake.push(
        Reply(text="Hi there!", chunk_delay_s=0.02),  # streamed word by word, 20 ms apart
        Reply(status=429),                            # Anthropic's rate_limit_error body
        Reply(stall_after=1, stall_s=5.0),            # goes silent after the first delta
        Reply(cut_after=2),                           # drops the connection after two deltas
    )
    llm = AnthropicLLM(api_key="test-key", base_url=fake.base_url, timeout_s=0.5)
    async for chunk in llm.stream([ChatMessage("user", "Hello")], instructions="Be brief."):
        ...
    assert fake.requests[0].json()["system"] == "Be brief."
```

An LLM reply can call tools, streamed as the API streams calls (the arguments' JSON in pieces cut
at arbitrary points); the next request then carries the calls and their results:

```python
fake.push(
    Reply(text="Let me check.", tool_calls=(FakeToolCall("order_status", {"order": 42}),)),
    Reply(text="", tool_calls=(FakeToolCall("a", {}), FakeToolCall("b", {"x": [1]}))),  # parallel
    Reply(text="", tool_calls=(FakeToolCall("a", '{"x": '),)),  # malformed JSON, sent as is
    Reply(text="", tool_calls=(FakeToolCall("a", {"x": 1}, fragment_chars=3),), cut_after=2),
    Reply(text="", tool_calls=(FakeToolCall("a", {"x": 1}, fragment_chars=3),), error_after=2),
)
assert fake.requests[0].json()["tools"][0]["name"] == "order_status"
```

`cut_after` and `error_after` (the API's own error event inside the stream, for `error_status`)
count the argument pieces as content chunks, so they can break a call in the middle.

A reply can also be a function of the `FakeRequest` (e.g. to echo the prompt); when the queue is
empty the fake answers with its `default`. `await fake.wait_idle()` waits until every exchange has
ended, after which `request.outcome` says whether the client hung up first (`"disconnected"`);
`fake.open_connections` counts the TCP connections still open (none once the client is closed).
Used as a plain `with` block, a fake serves from its own thread, for synchronous code.

A fake with other behaviour subclasses one and overrides `handle(exchange)`, answering through the
`Exchange` (`start`, `send`, `send_chunk`, `finish`...); `sse(event, data)` frames a server-sent event.
"""

from agentkit.testing.fakes._anthropic import FakeAnthropic, sse
from agentkit.testing.fakes._elevenlabs import FakeElevenLabs
from agentkit.testing.fakes._groq import FakeGroq
from agentkit.testing.fakes._script import (
    FakeRequest,
    FakeToolCall,
    Outcome,
    Reply,
    ReplySource,
    UploadedFile,
)
from agentkit.testing.fakes._server import Exchange, FakeServer
from agentkit.testing.fakes._twilio import FakeCall, FakeTwilio

__all__ = [
    "Exchange",
    "FakeAnthropic",
    "FakeCall",
    "FakeElevenLabs",
    "FakeGroq",
    "FakeRequest",
    "FakeServer",
    "FakeToolCall",
    "FakeTwilio",
    "Outcome",
    "Reply",
    "ReplySource",
    "UploadedFile",
    "sse",
]
