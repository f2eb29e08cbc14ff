"""The default agent's LLM: its instructions, the stop rule, the answer-label rule, and a few answers.

The answers checked are those of the easiest everyday questions (`tests/data/everyday_questions.json`)
under the default agent's own greedy decoding, which gives the same reply on every run; the full
evaluation, typed and spoken, is `bench/default_llm_eval.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agentkit._default_agent import Local
from agentkit.exceptions import ConfigError
from agentkit.providers.llm import ChatMessage, LocalLLM
from agentkit.providers.llm._reply_rules import LabelTrimmer, SentenceLimit

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = REPO / "tests" / "data" / "everyday_questions.json"
EASY = ("capital-france", "capital-japan", "opposite-hot", "red-planet", "boiling-water")
"""Questions the default agent answers right on every run (checked over repeated runs)."""


def _questions() -> dict[str, dict[str, Any]]:
    data = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    return {q["id"]: q for q in data["questions"]}


def _says(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def _feed(limit: SentenceLimit, pieces: list[str]) -> tuple[str, bool]:
    out, done = "", False
    for piece in pieces:
        kept, done = limit.feed(piece)
        out += kept
        if done:
            break
    return out, done


# -- the instructions ------------------------------------------------------------------------------


def test_the_default_instructions_ask_for_short_english_answers_and_show_examples() -> None:
    text = Local.instructions
    assert "in English" in text
    assert "one short sentence" in text
    examples = re.findall(r"^Q: (.+)\nA: (.+)$", text, flags=re.MULTILINE)
    assert 3 <= len(examples) <= 8  # few-shot turns, few enough to keep the prefill short
    asked = {q["question"].lower() for q in _questions().values()}
    assert not any(question.lower() in asked for question, _ in examples)  # no eval answer given away
    assert text.isascii()  # no stray non-English text, emoji or typographic marks for the TTS
    assert not re.search(r"<\||\*\*|#|https?://", text)  # no template tokens, markdown or URLs
    assert (REPO / "prompts" / "local.md").read_text(encoding="utf-8").strip() == text


def test_the_default_agent_decodes_greedily_and_stops_after_two_sentences() -> None:
    llm = Local.llm
    assert isinstance(llm, LocalLLM)
    assert llm.name == "local/smollm2-135m"
    assert (llm._temperature, llm._max_sentences) == (0.0, 2)


# -- the stop rule ----------------------------------------------------------------------------------


def test_the_sentence_limit_cuts_at_the_end_of_the_last_allowed_sentence() -> None:
    assert _feed(SentenceLimit(1), ["The capital", " of France is Paris.", " It is", " big."]) == (
        "The capital of France is Paris.",
        True,
    )
    two = ["Dr. Smith met J. R. R. Tolkien.", " Pi is 3.14 or so!", " Then", " more."]
    assert _feed(SentenceLimit(2), two) == ("Dr. Smith met J. R. R. Tolkien. Pi is 3.14 or so!", True)
    assert _feed(SentenceLimit(2), ["Hi!\n\n", "1. Paris\n", "2. Lyon"]) == ("Hi!\n\n1. Paris", True)
    assert _feed(SentenceLimit(2), ['"Yes." ', "No? ", "Maybe."]) == ('"Yes." No?', True)
    assert _feed(SentenceLimit(3), ["One. Two."]) == ("One. Two.", False)  # not cut: may go on
    with pytest.raises(ValueError):
        SentenceLimit(0)


def test_a_copied_answer_label_is_dropped_and_nothing_else() -> None:
    def trimmed(pieces: list[str]) -> str:
        trimmer = LabelTrimmer()
        return "".join(trimmer.feed(p) for p in pieces) + trimmer.end()

    assert trimmed(["A:", " There are 7 days."]).strip() == "There are 7 days."
    assert trimmed(["Answer", ": Paris."]) == "Paris."
    assert trimmed(["A", " baby cat"]) == "A baby cat"
    assert trimmed(["As", " a rule"]) == "As a rule"
    assert trimmed(["An hour."]) == "An hour."
    assert trimmed(["A"]) == "A"


def test_max_sentences_is_validated() -> None:
    with pytest.raises(ConfigError):
        LocalLLM(max_sentences=0)


async def test_the_local_llm_stops_generating_at_the_sentence_limit() -> None:
    llm = LocalLLM(temperature=0.0, max_tokens=60, max_sentences=1)
    prompt = [ChatMessage("user", "Tell me a long story about a dragon who lives in a castle.")]
    chunks = [c async for c in llm.stream(prompt, instructions="Tell long stories.")]
    text = "".join(c.text for c in chunks).strip()
    assert re.fullmatch(r"[^.!?]+[.!?]+[\"')\]]*", text), text  # one sentence, ended
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.output_tokens < 60  # stopped there, not at max_tokens
    unlimited = LocalLLM(temperature=0.0, max_tokens=60)
    again = [c async for c in unlimited.stream(prompt, instructions="Tell long stories.")]
    assert "".join(c.text for c in again).strip().startswith(text)  # the same reply, not cut
    assert again[-1].usage is not None and again[-1].usage.output_tokens > usage.output_tokens
    await llm.aclose()
    await unlimited.aclose()


# -- what it answers --------------------------------------------------------------------------------


async def test_the_default_agent_answers_the_easiest_questions_right() -> None:
    questions = _questions()
    llm = Local.llm
    assert isinstance(llm, LocalLLM)
    for key in EASY:
        question = questions[key]
        chunks = [
            c
            async for c in llm.stream(
                [ChatMessage("user", question["question"])], instructions=Local.instructions
            )
        ]
        answer = "".join(c.text for c in chunks)
        assert any(_says(answer, a) for a in question["accept"]), (key, answer)
        assert not any(_says(answer, r) for r in question["reject"]), (key, answer)
        assert answer.isascii() and len(answer.split()) <= 30, (key, answer)  # short and English
    await llm.aclose()
