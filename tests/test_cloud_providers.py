"""AnthropicLLM and GroqLLM through their real SDKs against the loopback fakes of their APIs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agentkit._aio import next_within
from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers.llm import LLM, AnthropicLLM, ChatMessage, GroqLLM, LLMChunk, LLMUsage
from agentkit.providers.llm._anthropic import CALL_STARTED
from agentkit.testing.fakes import Exchange, FakeAnthropic, FakeGroq, FakeServer, Reply, sse
from tests._cloud import KEY, isolate_cloud_env

HISTORY = [
    ChatMessage("assistant", "Hi, I'm Claude. What can I do for you?"),
    ChatMessage("user", "What's the weather like"),
    ChatMessage("user", "in Paris?"),
    ChatMessage("assistant", "It is sunny and"),
    ChatMessage("assistant", "   ", interrupted=True),
    ChatMessage("user", "Thanks!"),
]
FAST_S = 0.3  # the providers' timeout in these tests


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_cloud_env(monkeypatch, tmp_path)


Vendor = tuple[type[FakeServer], Callable[..., Any]]
VENDORS: dict[str, Vendor] = {"anthropic": (FakeAnthropic, AnthropicLLM), "groq": (FakeGroq, GroqLLM)}
_WARMED: set[str] = set()  # vendors whose SDK has made a request in this process


@pytest.fixture(params=sorted(VENDORS))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeServer, Any]]:
    """A fake server and an LLM provider pointed at it (closed afterwards)."""
    fake_cls, llm_cls = VENDORS[request.param]
    async with fake_cls(api_key=KEY) as fake:
        if request.param not in _WARMED:
            # an SDK's first request in a process builds its models and parsers lazily, which on a
            # busy machine can take longer than FAST_S: done once here, with time to spare
            warm = llm_cls(api_key=KEY, base_url=fake.base_url, timeout_s=10.0)
            await collect(warm)
            await warm.aclose()
            await fake.wait_idle()
            fake.requests.clear()
            _WARMED.add(request.param)
        llm = llm_cls(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        try:
            yield fake, llm
        finally:
            await llm.aclose()


async def collect(llm: LLM, messages: list[ChatMessage] | None = None) -> tuple[str, list[LLMChunk]]:
    chunks = [
        c async for c in llm.stream(HISTORY if messages is None else messages, instructions="Be brief.")
    ]
    return "".join(c.text for c in chunks), chunks


def sent_history(fake: FakeServer) -> Any:
    return fake.requests[-1].json()["messages"]


async def test_reply_streams_as_deltas_with_usage_last(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(Reply(text="Sunny, 24 degrees.", input_tokens=31))
    text, chunks = await collect(llm)
    assert text == "Sunny, 24 degrees."
    assert [c.text for c in chunks[:-1]] == ["Sunny, ", "24 ", "degrees."]
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1] == LLMChunk(text="", usage=LLMUsage(input_tokens=31, output_tokens=3))
    body = fake.requests[-1].json()
    assert body["stream"] is True
    assert body["model"] == llm.model
    assert fake.requests[-1].outcome == "completed"


async def test_anthropic_gets_system_prompt_and_alternating_history() -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        llm = AnthropicLLM("claude-haiku-4-5", api_key=KEY, base_url=fake.base_url, max_tokens=77)
        await collect(llm)
        await llm.aclose()
    body = fake.requests[0].json()
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 77
    assert "temperature" not in body
    assert body["messages"] == [
        {"role": "user", "content": CALL_STARTED},
        {"role": "assistant", "content": "Hi, I'm Claude. What can I do for you?"},
        {"role": "user", "content": "What's the weather like\nin Paris?"},
        {"role": "assistant", "content": "It is sunny and"},
        {"role": "user", "content": "Thanks!"},
    ]


async def test_anthropic_empty_history_asks_for_an_opening() -> None:
    async with FakeAnthropic(api_key=KEY) as fake:
        llm = AnthropicLLM(api_key=KEY, base_url=fake.base_url, temperature=0.2)
        text, _ = await collect(llm, [])
        await llm.aclose()
    assert text == "Hello! How can I help you today?"
    assert sent_history(fake) == [{"role": "user", "content": CALL_STARTED}]
    assert fake.requests[0].json()["temperature"] == 0.2


async def test_groq_gets_system_message_first_and_history_in_order() -> None:
    async with FakeGroq(api_key=KEY) as fake:
        llm = GroqLLM(api_key=KEY, base_url=fake.base_url, max_tokens=50, temperature=0.5)
        await collect(llm)
        await llm.aclose()
    body = fake.requests[0].json()
    assert body["max_completion_tokens"] == 50
    assert body["temperature"] == 0.5
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi, I'm Claude. What can I do for you?"},
        {"role": "user", "content": "What's the weather like"},
        {"role": "user", "content": "in Paris?"},
        {"role": "assistant", "content": "It is sunny and"},
        {"role": "user", "content": "Thanks!"},
    ]


@pytest.mark.parametrize("status", [429, 500, 503, 529])
async def test_rate_limits_and_server_errors_are_retryable(pair: tuple[FakeServer, Any], status: int) -> None:
    fake, llm = pair
    fake.push(Reply(status=status))
    with pytest.raises(ProviderError) as caught:
        await collect(llm)
    assert type(caught.value) is ProviderError
    assert caught.value.retryable
    assert caught.value.context == {"provider": llm.name.split("/")[0], "status": status}


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retryable(pair: tuple[FakeServer, Any], status: int) -> None:
    fake, llm = pair
    fake.push(Reply(status=status))
    with pytest.raises(ProviderError) as caught:
        await collect(llm)
    assert not caught.value.retryable
    assert caught.value.context["status"] == status
    assert KEY not in str(caught.value)


async def test_wrong_key_is_rejected_by_the_fake(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.api_key = "another-key"
    with pytest.raises(ProviderError, match="check the API key") as caught:
        await collect(llm)
    assert caught.value.context["status"] == 401
    assert not caught.value.retryable


async def test_stall_before_the_first_byte_times_out(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(Reply(stall_before_s=5.0))
    async with asyncio.timeout(5):  # a guard against hanging, not a measurement
        with pytest.raises(ProviderTimeoutError) as caught:
            await collect(llm)
    assert caught.value.retryable
    await fake.wait_idle()
    assert fake.requests[0].outcome == "disconnected"  # the client gave up and hung up


async def test_stall_in_the_middle_of_the_stream_times_out(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    fake.push(Reply(text="one two three four", stall_after=2, stall_s=5.0))
    received: list[str] = []
    async with asyncio.timeout(5):
        with pytest.raises(ProviderTimeoutError):
            async for chunk in llm.stream(HISTORY, instructions="x"):
                received.append(chunk.text)
    assert received == ["one ", "two "]


async def test_slow_pacing_under_the_timeout_is_not_a_stall(pair: tuple[FakeServer, Any]) -> None:
    fake, fast = pair
    llm = type(fast)(api_key=KEY, base_url=fake.base_url, timeout_s=0.6)  # the reply takes longer
    fake.push(Reply(text="a b c d e f g h", chunk_delay_s=0.1))
    text, _ = await collect(llm)
    await llm.aclose()
    assert text == "a b c d e f g h"


@pytest.mark.parametrize("cut_after", [0, 2])
async def test_cut_connection_is_a_retryable_provider_error(
    pair: tuple[FakeServer, Any], cut_after: int
) -> None:
    fake, llm = pair
    fake.push(Reply(text="one two three four", cut_after=cut_after))
    received: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in llm.stream(HISTORY, instructions="x"):
            received.append(chunk.text)
    assert not isinstance(caught.value, ProviderTimeoutError)
    assert caught.value.retryable
    assert received == ["one ", "two "][:cut_after]
    assert fake.requests[0].outcome == "cut"


async def test_next_within_is_anext_with_a_deadline() -> None:
    async def items() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(5)
        yield 2

    stream = items()
    assert await next_within(stream, FAST_S, "first item") == 1
    with pytest.raises(ProviderTimeoutError, match=r"second item did not arrive within 0\.3 s") as caught:
        await next_within(stream, FAST_S, "second item", provider="test")
    assert caught.value.context == {"provider": "test"} and caught.value.retryable
    with pytest.raises(StopAsyncIteration):  # the timeout cancelled the generator: it has ended
        await next_within(stream, FAST_S, "third item")


async def test_closing_the_stream_early_hangs_up_on_the_server(pair: tuple[FakeServer, Any]) -> None:
    fake, llm = pair
    words = " ".join(f"w{i}" for i in range(40))
    fake.push(Reply(text=words, chunk_delay_s=0.02))
    stream = llm.stream(HISTORY, instructions="x")
    first = [await anext(stream), await anext(stream)]
    await stream.aclose()
    assert [c.text for c in first] == ["w0 ", "w1 "]
    await fake.wait_idle()
    assert fake.requests[0].outcome == "disconnected"
    assert fake.requests[0].chunks_sent < 40
    # The provider still works afterwards, on a fresh connection.
    text, _ = await collect(llm)
    assert text == "Hello! How can I help you today?"


class EarlyEndAnthropic(FakeAnthropic):
    """Sends one delta, then `last_event` (if any), then ends a well-formed body."""

    last_event: bytes = b""

    async def handle(self, exchange: Exchange) -> None:
        await exchange.start(200, [("content-type", "text/event-stream")])
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half"}}
        await exchange.send(sse("content_block_delta", delta))
        await exchange.send(self.last_event)
        await exchange.finish()


@pytest.mark.parametrize(
    ("kind", "match", "retryable"),
    [
        (None, "before message_stop", True),
        ("overloaded_error", "overloaded_error", True),
        ("invalid_request_error", "invalid_request_error", False),
    ],
)
async def test_a_stream_that_ends_early_or_with_an_error_event_fails(
    kind: str | None, match: str, retryable: bool
) -> None:
    async with EarlyEndAnthropic(api_key=KEY) as fake:
        if kind is not None:
            fake.last_event = sse("error", {"type": "error", "error": {"type": kind, "message": "x"}})
        llm = AnthropicLLM(api_key=KEY, base_url=fake.base_url, timeout_s=FAST_S)
        received: list[str] = []
        with pytest.raises(ProviderError, match=match) as caught:
            async for chunk in llm.stream(HISTORY, instructions="x"):
                received.append(chunk.text)
        await llm.aclose()
    assert received == ["Half"]
    assert caught.value.retryable is retryable


@pytest.mark.parametrize(
    ("cls", "variable"), [(AnthropicLLM, "ANTHROPIC_API_KEY"), (GroqLLM, "GROQ_API_KEY")]
)
async def test_missing_key_fails_at_warm_up_naming_the_variable(
    cls: Callable[..., Any], variable: str
) -> None:
    llm = cls()  # constructing needs no key
    with pytest.raises(ConfigError) as caught:
        await llm.warm_up()
    message = str(caught.value)
    assert variable in message
    assert f"export {variable}=" in message
    assert caught.value.context == {"variable": variable}
    with pytest.raises(ConfigError, match=variable):
        await collect(llm)


async def test_key_and_base_url_come_from_the_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAnthropic(api_key="env-key") as fake:
        llm = AnthropicLLM()
        monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")  # set after construction: read at warm_up
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        await llm.warm_up()
        text, _ = await collect(llm)
        await llm.aclose()
    assert text == "Hello! How can I help you today?"


async def test_constructor_arguments_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "stale-key")
    monkeypatch.setenv("GROQ_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing answers
    async with FakeGroq(api_key=KEY) as fake:
        llm = GroqLLM(api_key=KEY, base_url=fake.base_url)
        text, _ = await collect(llm)
        await llm.aclose()
    assert text == "Hello! How can I help you today?"


async def test_nothing_listening_is_a_retryable_connection_error() -> None:
    llm = GroqLLM(api_key=KEY, base_url="http://127.0.0.1:9", timeout_s=FAST_S)
    with pytest.raises(ProviderError, match="connection failed") as caught:
        await collect(llm)
    await llm.aclose()
    assert caught.value.retryable
    assert caught.value.context == {"provider": "groq"}


def test_bad_arguments_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        AnthropicLLM(timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        GroqLLM(max_retries=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        GroqLLM(max_tokens=0)
    assert AnthropicLLM().name == "anthropic/claude-haiku-4-5"
    assert GroqLLM().name == "groq/llama-3.3-70b-versatile"


async def test_consecutive_replies_keep_one_connection(pair: tuple[FakeServer, Any]) -> None:
    # a response closed before its body's last bytes takes its connection with it: against the real
    # API every turn would then pay a new TCP and TLS handshake before its first token
    fake, llm = pair
    before = fake.connections_accepted
    for _ in range(3):
        text, _ = await collect(llm)
        assert text == "Hello! How can I help you today?"
    assert fake.connections_accepted - before == 1
    assert [r.outcome for r in fake.requests] == ["completed"] * 3
