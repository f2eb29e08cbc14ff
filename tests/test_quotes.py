"""Stray quotes come off transcripts and LLM replies; quotes inside a sentence stay."""

from __future__ import annotations

import pytest

from agentkit.providers._quotes import QuoteTrimmer, clean_quotes


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\"'Hi there!", "Hi there!"),  # Moonshine
        ('"Sure, I can help."', "Sure, I can help."),  # SmolLM2
        ("\u201cQuoted.\u201d", "Quoted."),
        ("'Hello there, don't worry.'", "Hello there, don't worry."),
        ('Hello."', "Hello."),
        ('He said "hi".', 'He said "hi".'),
        ('"Hi," she said.', '"Hi," she said.'),
        ("I don't know.", "I don't know."),
        ("the dogs' bowls", "the dogs' bowls"),
        ('It\'s "fine"', 'It\'s "fine"'),
    ],
)
def test_clean_quotes(raw: str, clean: str) -> None:
    assert clean_quotes(raw) == clean


@pytest.mark.parametrize(
    ("pieces", "clean"),
    [
        (['"', "Sure", ",", " I", " can", " help", '."'], "Sure, I can help."),
        (["Say", ' "', "hi", '"', " back", "."], 'Say "hi" back.'),
        (['"Say', ' "', "hi", '"', " back", '."'], 'Say "hi" back.'),
        (["I", " don", "'", "t", " know", "."], "I don't know."),
    ],
)
def test_quote_trimmer_on_a_stream(pieces: list[str], clean: str) -> None:
    trimmer = QuoteTrimmer()
    assert "".join(trimmer.feed(p) for p in pieces) + trimmer.end() == clean
