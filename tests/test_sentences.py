"""Sentence segmentation of streamed LLM text: same result token by token as all at once, no split
inside abbreviations, initials, numbers or domains, long sentences cut at clauses."""

from __future__ import annotations

import pytest

from agentkit.agent import SentenceSplitter, split_sentences


def streamed(text: str, step: int, **options: int) -> list[str]:
    splitter = SentenceSplitter(**options)
    out: list[str] = []
    for start in range(0, len(text), step):
        out += splitter.push(text[start : start + step])
    return out + splitter.flush()


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there! How are you? Fine.", ["Hello there!", "How are you?", "Fine."]),
        ("Dr. Smith will see you at 3.5 o'clock.", ["Dr. Smith will see you at 3.5 o'clock."]),
        ("It costs $3.50, i.e. cheap. Buy it.", ["It costs $3.50, i.e. cheap.", "Buy it."]),
        ("Mr. and Mrs. Jones live in the U.S. now.", ["Mr. and Mrs. Jones live in the U.S. now."]),
        ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
        ("Visit example.com today. Thanks.", ["Visit example.com today.", "Thanks."]),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        ("Wait... What?! Really?", ["Wait...", "What?!", "Really?"]),
        ("First line\nSecond line", ["First line", "Second line"]),
        ("Version 2.0 is out", ["Version 2.0 is out"]),
        ("", []),
    ],
)
def test_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences
    for step in (1, 2, 3, 7):  # token boundaries anywhere give the same sentences
        assert streamed(text, step) == sentences


def test_a_sentence_is_given_out_as_soon_as_the_next_one_starts() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("The answer is 42.") == []  # could still be "42.5"
    assert splitter.push(" It") == ["The answer is 42."]
    assert splitter.push(" is.") == []
    assert splitter.flush() == ["It is."]


def test_long_sentences_are_cut_at_clauses() -> None:
    text = ", ".join(f"item number {n}" for n in range(1, 30)) + "."
    parts = split_sentences(text, max_chars=80)
    assert len(parts) > 4 and all(len(p) <= 80 for p in parts)
    assert " ".join(parts) == text
    assert all(p.endswith(",") for p in parts[:-1])
    assert streamed(text, 5, max_chars=80) == parts


def test_a_run_without_clause_marks_waits_for_its_end() -> None:
    text = "a" * 300
    assert SentenceSplitter(max_chars=80).push(text) == []


def test_the_first_piece_may_end_at_a_clause_for_earlier_audio() -> None:
    text = "Paris, the capital of France, is lovely in spring, they say. Visit it, if you can."
    pieces = split_sentences(text, first_clause_chars=24)
    assert pieces == [
        "Paris, the capital of France,",  # the first comma past 24 characters
        "is lovely in spring, they say.",
        "Visit it, if you can.",
    ]
    for step in (1, 4):
        assert streamed(text, step, first_clause_chars=24) == pieces
    assert split_sentences("Short, then done.", first_clause_chars=24) == ["Short, then done."]


def test_the_first_piece_may_end_after_a_number_of_words() -> None:
    text = "The sky looks blue to us because air scatters blue light. Sunsets are red, often."
    pieces = split_sentences(text, first_piece_words=4)
    assert pieces == [
        "The sky looks blue",  # at most four words: a short first piece for an early first audio
        "to us because air scatters blue light.",  # then whole sentences, for their prosody
        "Sunsets are red, often.",
    ]
    for step in (1, 3, 7):
        assert streamed(text, step, first_piece_words=4) == pieces
    # a sentence or a first clause that ends sooner ends the first piece
    assert split_sentences("Yes. It is.", first_piece_words=4) == ["Yes.", "It is."]
    assert split_sentences(
        "Paris, the capital of France, is lovely.", first_clause_chars=4, first_piece_words=4
    ) == [
        "Paris,",
        "the capital of France, is lovely.",
    ]
    # not after a word that leans on the next one, nor after an abbreviation
    assert split_sentences("The moon is a lunar body.", first_piece_words=4) == [
        "The moon is",
        "a lunar body.",
    ]
    assert split_sentences("It is in the box.", first_piece_words=4) == ["It is", "in the box."]
    assert split_sentences("Of the two of them.", first_piece_words=2) == [
        "Of",
        "the two of them.",
    ]  # one stays
    assert split_sentences("I saw Dr. Smith at noon today.", first_piece_words=3) == [
        "I saw Dr. Smith",
        "at noon today.",
    ]


def test_a_word_is_not_cut_before_its_end_is_seen() -> None:
    splitter = SentenceSplitter(first_piece_words=2)
    assert splitter.push("Good morn") == []
    assert splitter.push("ing") == []  # "morning" may go on
    assert splitter.push(" to") == ["Good morning"]
    assert splitter.push(" you all, friend") == []
    assert splitter.flush() == ["to you all, friend"]
    with pytest.raises(ValueError, match="first_piece_words"):
        SentenceSplitter(first_piece_words=0)
