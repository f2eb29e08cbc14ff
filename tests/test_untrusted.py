"""Checks on client input (`agentkit.transports._untrusted`), the stream-token shape, and the access-log
filter that keeps query-string values (phone numbers) out of the server's log."""

from __future__ import annotations

import logging
import logging.config
import time

import pytest

from agentkit.exceptions import MessageTooLargeError, ProtocolError
from agentkit.server._access_log import RedactQueryValues, redact_query, uvicorn_log_config
from agentkit.transports._twilio_webhook import CallTokens, token_secret
from agentkit.transports._untrusted import (
    MAX_JSON_DEPTH,
    check_id,
    check_text,
    is_id,
    is_text,
    loads_untrusted,
    optional_id,
)

LIMIT = 64 * 1024


def test_json_within_the_limits_decodes() -> None:
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_untrusted(nested, max_bytes=LIMIT) is not None
    # brackets inside strings (escaped quotes too) are text, not nesting
    text = '{"a": "' + "[{" * 1000 + '\\"]]"}'
    assert loads_untrusted(text, max_bytes=LIMIT)["a"].startswith("[{[{")
    assert loads_untrusted(b'{"type": "ping", "id": 7}', max_bytes=LIMIT) == {"type": "ping", "id": 7}


@pytest.mark.parametrize(
    "text",
    [
        "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        "[" * 2000 + "]" * 2000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        "[" * 60_000,  # never closed
        '"' + "[" * 100 + '"' + "[" * 40,  # nesting after a string
    ],
)
def test_deep_json_is_refused_before_decoding(text: str) -> None:
    with pytest.raises(ProtocolError, match="nested deeper"):
        loads_untrusted(text, max_bytes=LIMIT)


@pytest.mark.parametrize(
    "data", ["", "{", "NaN", "[Infinity]", "-Infinity", "1" * 5000, b"\xff\xfe{}", '{"a": 1} {"b": 2}']
)
def test_what_is_not_json_is_a_protocol_error(data: str | bytes) -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        loads_untrusted(data, max_bytes=LIMIT)


def test_size_is_checked_first_and_the_depth_scan_is_cheap() -> None:
    with pytest.raises(MessageTooLargeError):
        loads_untrusted("[" * (LIMIT + 1), max_bytes=LIMIT)
    hostile = "[" * 30_000 + "]" * 30_000
    started = time.perf_counter()
    for _ in range(20):
        with pytest.raises(ProtocolError):
            loads_untrusted(hostile, max_bytes=LIMIT)
    assert (time.perf_counter() - started) / 20 < 0.02  # well under a 20 ms audio frame


def test_ids() -> None:
    for good in ("caller-42", "9b2c0f", "a.b:c@d+e_f", "x" * 128, "CA" + "0" * 32):
        assert is_id(good) and check_id(good, "id") == good
    for bad in ("", "x" * 129, "a b", "a\nb", "\ud800", "caller\r\n2099 FORGED", "é", 42, None, ["a"]):
        assert not is_id(bad)
        with pytest.raises(ProtocolError, match="session_id must be"):
            check_id(bad, "session_id")
    assert optional_id(None, "id") is None


def test_text() -> None:
    for good in ("+15550100001", "Jane Doe", "client:alice", "sip:bob@example.com", "Zoë 🎉", "x" * 128):
        assert is_text(good) and check_text(good, "caller") == good
    for bad in ("", "x" * 129, "a\nb", "a\rb", "\x00", "\x1b[31m", "\ud800", "a\u2028b", "\u202eevil", 7):
        assert not is_text(bad)
        with pytest.raises(ProtocolError, match="caller must be"):
            check_text(bad, "caller")


def test_stream_tokens_of_the_wrong_shape_are_refused_unread() -> None:
    for tokens in (CallTokens(), CallTokens(secret=token_secret("auth"))):
        token = tokens.issue(caller="+15550100001", called=None, call_sid="CA1")
        for bad in ("\ud800", token + "\ud800", token + "\n", "x" * 20_000, 7, None):
            assert tokens.redeem(bad) is None
        assert tokens.redeem(token) is not None


def test_signed_tokens_with_a_long_purpose_still_redeem() -> None:
    tokens = CallTokens(secret=token_secret("auth"))
    token = tokens.issue(caller="+15550100001", called=None, call_sid="CA1", purpose="é🎉" * 250)
    grant = tokens.redeem(token)
    assert grant is not None and grant.purpose == "é🎉" * 250


def test_query_values_are_redacted_in_access_log_lines() -> None:
    assert (
        redact_query("/api/conversations?caller=%2B15551234567&limit=5")
        == "/api/conversations?caller=…&limit=…"
    )
    assert redact_query("/telephone/incoming?purpose=call%20back") == "/telephone/incoming?purpose=…"
    assert redact_query("/api/conversations/abc") == "/api/conversations/abc"
    assert redact_query("/x?%2B1555=1") == "/x?…"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/api/conversations?caller=%2B15551234567", "1.1", 200),
        None,
    )
    assert RedactQueryValues().filter(record)
    assert "1555" not in record.getMessage() and "caller=…" in record.getMessage()
    config = uvicorn_log_config()
    assert all("redact_query" in handler["filters"] for handler in config["handlers"].values())
    factory = logging.config.BaseConfigurator({}).resolve(config["filters"]["redact_query"]["()"])
    assert factory is RedactQueryValues  # uvicorn's dictConfig can build it
