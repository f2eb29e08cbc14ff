"""The cloud fakes on their own, key resolution, error mapping, and agentkit without the SDKs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import anthropic
import groq
import httpx
import pytest
from pydantic import SecretStr

from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers._errors import provider_errors, to_provider_error
from agentkit.providers._keys import CloudCredentials, load_cloud_settings, resolve
from agentkit.providers.llm import AnthropicLLM
from agentkit.providers.stt._groq import wav_bytes
from agentkit.testing import tone
from agentkit.testing.fakes import FakeAnthropic, FakeElevenLabs, FakeGroq, FakeRequest, FakeToolCall, Reply
from tests._cloud import KEY, isolate_cloud_env

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_cloud_env(monkeypatch, tmp_path)


# -- keys ---------------------------------------------------------------------------------------------


def test_keys_are_read_from_the_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_cloud_settings().groq_api_key is None
    monkeypatch.setenv("GROQ_API_KEY", "gsk_secret")
    monkeypatch.setenv("GROQ_BASE_URL", "http://127.0.0.1:1234")
    settings = load_cloud_settings()
    assert settings.groq_api_key is not None
    assert settings.groq_api_key.get_secret_value() == "gsk_secret"
    assert "gsk_secret" not in repr(settings)
    creds = resolve("groq", api_key=None, base_url=None, owner="GroqLLM")
    assert creds == CloudCredentials("gsk_secret", "http://127.0.0.1:1234")
    assert "gsk_secret" not in repr(creds)


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", "from-env")
    monkeypatch.setenv("ELEVENLABS_BASE_URL", "http://127.0.0.1:1")
    creds = resolve("elevenlabs", api_key=SecretStr("arg"), base_url="http://127.0.0.1:2", owner="X")
    assert creds == CloudCredentials("arg", "http://127.0.0.1:2")


def test_empty_key_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "")
    with pytest.raises(ConfigError) as caught:
        resolve("anthropic", api_key="", base_url=None, owner="AnthropicLLM")
    assert str(caught.value).startswith("AnthropicLLM needs an API key: ANTHROPIC_API_KEY is not set.")
    assert "AnthropicLLM(api_key=...)" in str(caught.value)


async def test_a_missing_sdk_says_which_extra_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)  # makes `import anthropic` fail
    llm = AnthropicLLM(api_key=KEY)
    with pytest.raises(ConfigError, match=r"pip install 'agentkit\[anthropic\]'"):
        await llm.warm_up()


def test_agentkit_imports_without_any_cloud_sdk() -> None:
    code = textwrap.dedent(
        """
        import sys
        for name in ("anthropic", "groq", "elevenlabs"):
            sys.modules[name] = None
        import agentkit, agentkit.testing
        from agentkit.providers.llm import AnthropicLLM, GroqLLM
        from agentkit.providers.stt import GroqSTT
        from agentkit.providers.tts import ElevenLabsTTS
        print(GroqSTT().name, ElevenLabsTTS().name, AnthropicLLM().name, GroqLLM().name)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "groq/whisper-large-v3-turbo" in done.stdout


# -- error mapping ------------------------------------------------------------------------------------


def test_foreign_exceptions_pass_through_unchanged() -> None:
    assert to_provider_error(ValueError("bug"), "groq") is None
    assert to_provider_error(ProviderError("already ours"), "groq") is None
    with pytest.raises(KeyError), provider_errors("groq"):
        raise KeyError("bug in our code")


def test_http_library_errors_map_by_kind() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/x")
    timeout = to_provider_error(httpx.ReadTimeout("slow", request=request), "groq")
    assert isinstance(timeout, ProviderTimeoutError)
    dropped = to_provider_error(httpx.RemoteProtocolError("peer closed", request=request), "groq")
    assert type(dropped) is ProviderError
    assert dropped.retryable
    assert dropped.context == {"provider": "groq"}
    assert isinstance(to_provider_error(TimeoutError(), "groq"), ProviderTimeoutError)


def test_an_error_event_inside_a_stream_maps_by_its_type() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/x")
    overloaded = groq.APIError("overloaded", request, body={"error": {"type": "overloaded_error"}})
    mapped = to_provider_error(overloaded, "groq")
    assert mapped is not None
    assert mapped.retryable
    invalid = groq.APIError("bad", request, body={"error": {"type": "invalid_request_error"}})
    mapped = to_provider_error(invalid, "groq")
    assert mapped is not None
    assert not mapped.retryable


# -- the fakes themselves -----------------------------------------------------------------------------


def test_fake_serves_synchronous_code_from_its_own_thread() -> None:
    with FakeAnthropic(api_key=KEY) as fake:
        fake.push(Reply(text="Whole answer.", input_tokens=9, output_tokens=4))
        client = anthropic.Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0)
        message = client.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        client.close()
    assert [block.text for block in message.content if block.type == "text"] == ["Whole answer."]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 4)
    assert fake.requests[0].outcome == "completed"
    with pytest.raises(RuntimeError):
        _ = fake.base_url  # stopped


async def test_unknown_paths_get_the_vendor_404() -> None:
    async with FakeElevenLabs(api_key=KEY) as fake, httpx.AsyncClient() as client:
        response = await client.post(f"{fake.base_url}/v1/voices", headers={"xi-api-key": KEY})
        unauthorized = await client.post(f"{fake.base_url}/v1/text-to-speech/v/stream", json={"text": "x"})
    assert response.status_code == 404
    assert response.json()["detail"]["status"] == "voice_not_found"
    assert unauthorized.status_code == 401
    assert unauthorized.json()["detail"]["status"] == "invalid_api_key"


async def test_replies_can_be_made_from_the_request() -> None:
    def echo(request: FakeRequest) -> Reply:
        return Reply(text="you said: " + request.json()["messages"][-1]["content"])

    async with FakeGroq(api_key=KEY, default=echo) as fake:
        client = groq.AsyncGroq(api_key=KEY, base_url=fake.base_url, max_retries=0)
        completion = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "ping"}], stream=False
        )
        await client.close()
    assert completion.choices[0].message.content == "you said: ping"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


async def test_groq_fake_reports_usage_both_ways_when_asked() -> None:
    async with FakeGroq(api_key=KEY) as fake, httpx.AsyncClient() as client:
        body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
        response = await client.post(
            f"{fake.base_url}/openai/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
        )
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert '"usage"' in events[-2]
    assert '"x_groq": {"id": "req_fake_1", "usage"' in events[-2]


async def test_groq_transcription_can_answer_plain_text() -> None:
    async with FakeGroq(api_key=KEY) as fake:
        fake.push(Reply(text="plain words"))
        client = groq.AsyncGroq(api_key=KEY, base_url=fake.base_url, max_retries=0)
        text = await client.audio.transcriptions.create(
            file=("a.wav", wav_bytes(tone(200, 0.1)), "audio/wav"), model="m", response_format="text"
        )
        await client.close()
    assert "plain words" in str(text)
    assert fake.requests[0].form["response_format"] == "text"


async def test_whole_replies_carry_tool_calls_in_each_apis_shape() -> None:
    calls = (FakeToolCall("order_status", {"order": 42}, id="c1"), FakeToolCall("ping", "{bad", id="c2"))
    async with FakeAnthropic(api_key=KEY) as fake:
        fake.push(Reply(text="Checking.", tool_calls=calls))
        client = anthropic.AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0)
        message = await client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        await client.close()
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    uses = [block for block in message.content if block.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("c1", "order_status", {"order": 42}),
        ("c2", "ping", {}),
    ]
    async with FakeGroq(api_key=KEY) as fake:
        fake.push(Reply(text="", tool_calls=calls))
        groq_client = groq.AsyncGroq(api_key=KEY, base_url=fake.base_url, max_retries=0)
        completion = await groq_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=False
        )
        await groq_client.close()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls or []] == [
        ("c1", "order_status", '{"order": 42}'),
        ("c2", "ping", "{bad"),
    ]


async def test_groq_fake_streams_tool_calls_as_indexed_pieces() -> None:
    call = FakeToolCall("order_status", {"order": 42}, id="c1", fragment_chars=5)
    async with FakeGroq(api_key=KEY) as fake, httpx.AsyncClient() as client:
        fake.push(Reply(text="", tool_calls=(call,)))
        body = {"model": "m", "messages": [], "stream": True}
        response = await client.post(
            f"{fake.base_url}/openai/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
        )
    frames = [frame for frame in response.text.split("\n\n") if frame]
    assert frames[-1] == "data: [DONE]"
    events = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]
    deltas = [event["choices"][0]["delta"] for event in events]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert deltas[1] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "c1",
                "type": "function",
                "function": {"name": "order_status", "arguments": ""},
            }
        ]
    }
    pieces = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:-1]]
    assert pieces == ['{"ord', 'er": ', "42}"]
    assert all(d["tool_calls"][0]["index"] == 0 and "id" not in d["tool_calls"][0] for d in deltas[2:-1])
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
