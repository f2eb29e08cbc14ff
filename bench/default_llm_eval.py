"""How often the default agent's LLM answers everyday questions right, typed and spoken, and how fast.

    python bench/default_llm_eval.py [--settings before after] [--mode text spoken]
                                     [--order interleaved|grouped] [--json OUT]

The 20 questions and their accepted answers are `tests/data/everyday_questions.json`. An answer is
right when it holds one of the question's `accept` words or phrases and none of its `reject` ones
(whole words, any case): a reply that hedges between the right and a wrong answer does not count.

Two settings of SmolLM2-135M (llama.cpp), each with its own instructions:

- `before`: the default agent as it was before issue 13: `LocalLLM()`'s own sampling (temperature
  0.2, top_p 0.9, repeat penalty 1.15, up to 120 tokens, no sentence limit; `--seed` fixes the
  sampling so that runs can be repeated) and the old four-line instructions, kept below;
- `after`: the default agent as shipped (`agentkit._default_agent.Local`): its `LocalLLM` (greedy,
  repeat penalty 1.1, 60 tokens, stop after two sentences) and `prompts/local.md` (one short English
  sentence, six example answers).

Two modes: `text` sends the question as typed; `spoken` has Kokoro (voice `am_michael`, not the
agent's) say it, Moonshine tiny transcribe it, and sends the transcript: what the agent hears.

Times, per answer: first token (from the request to the first text) and the whole answer, medians
over the questions. With `--order interleaved` (the default) the two settings take turns, so every
prompt is evaluated in full (llama.cpp cannot reuse the other setting's prefix): the cold case, as
for a first turn or a server with several callers. With `--order grouped`, each setting answers all
its questions in a row, and llama.cpp reuses the instructions' tokens from the previous answer: the
warm case, as in one caller's conversation. Reported, not asserted; needs the model files
(AGENTKIT_MODELS_DIR) and the `local` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentkit._default_agent import Local  # noqa: E402
from agentkit.audio import AudioFrame, StreamingResampler  # noqa: E402
from agentkit.providers import KokoroTTS, MoonshineSTT  # noqa: E402
from agentkit.providers.llm import LLM, ChatMessage, LocalLLM  # noqa: E402

QUESTIONS = REPO / "tests" / "data" / "everyday_questions.json"
CALLER_VOICE = "am_michael"

OLD_INSTRUCTIONS = """\
You are a friendly voice assistant running entirely on the caller's own computer, with a small
language model. Your replies are spoken aloud by a speech synthesiser, so:

- answer in one or two short sentences of plain spoken English;
- no lists, markdown, emoji, code or URLs;
- if you do not know something, say so briefly rather than guessing."""
"""`prompts/local.md` before issue 13."""


@dataclass(frozen=True)
class Setting:
    name: str
    llm: LLM
    instructions: str


@dataclass
class Answer:
    setting: str
    mode: str
    id: str
    asked: str
    """What the LLM was sent: the question, or its transcript."""
    text: str
    right: bool
    first_token_ms: float | None
    answer_ms: float


def settings(seed: int) -> dict[str, Setting]:
    old = LocalLLM(temperature=0.2, top_p=0.9, repeat_penalty=1.15, max_tokens=120, seed=seed)
    return {
        "before": Setting("before", old, OLD_INSTRUCTIONS),
        "after": Setting("after", Local.llm, Local.instructions),  # type: ignore[arg-type]
    }


def load_questions(path: Path = QUESTIONS) -> list[dict[str, Any]]:
    questions: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["questions"]
    return questions


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase.lower())}(?!\w)", text.lower()) is not None


def is_right(answer: str, question: dict[str, Any]) -> bool:
    """The answer names an accepted answer and no rejected one."""
    return any(_has(answer, p) for p in question["accept"]) and not any(
        _has(answer, p) for p in question["reject"]
    )


async def ask(setting: Setting, text: str) -> tuple[str, float | None, float]:
    """The reply to `text`, its first-token time and its whole time, in ms."""
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    async for chunk in setting.llm.stream([ChatMessage("user", text)], instructions=setting.instructions):
        if chunk.text:
            if first is None:
                first = (time.perf_counter() - started) * 1000
            parts.append(chunk.text)
    return "".join(parts).strip(), first, (time.perf_counter() - started) * 1000


async def transcribe_spoken(questions: list[dict[str, Any]]) -> dict[str, str]:
    """Each question said by Kokoro and heard by Moonshine: question id -> transcript."""
    tts, stt = KokoroTTS(voice=CALLER_VOICE), MoonshineSTT("tiny")
    heard: dict[str, str] = {}
    for question in questions:
        frames = [frame async for frame in tts.synthesize(question["question"])]
        audio = np.concatenate([frame.samples for frame in frames])
        resampler = StreamingResampler(tts.sample_rate, stt.sample_rate)
        speech = AudioFrame(resampler.process(audio, last=True), stt.sample_rate)
        heard[question["id"]] = (await stt.transcribe(speech)).text
    return heard


async def run(args: argparse.Namespace) -> list[Answer]:
    questions = load_questions()[: args.questions]
    chosen = [settings(args.seed)[name] for name in args.settings]
    for setting in chosen:
        await setting.llm.warm_up()
    answers: list[Answer] = []
    for mode in args.mode:
        asked = (
            {q["id"]: q["question"] for q in questions}
            if mode == "text"
            else await transcribe_spoken(questions)
        )
        if args.order == "interleaved":
            plan = [(q, s) for q in questions for s in chosen]
        else:
            plan = [(q, s) for s in chosen for q in questions]
        for question, setting in plan:
            text, first_ms, answer_ms = await ask(setting, asked[question["id"]])
            answer = Answer(
                setting.name,
                mode,
                question["id"],
                asked[question["id"]],
                text,
                is_right(text, question),
                first_ms,
                answer_ms,
            )
            answers.append(answer)
            if args.verbose:
                mark = "ok" if answer.right else "--"
                print(f"{mark} {setting.name:6} {mode:6} {answer.asked!r}: {text!r}", flush=True)
    for setting in chosen:
        await setting.llm.aclose()
    return answers


def summary(answers: list[Answer]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for setting, mode in dict.fromkeys((a.setting, a.mode) for a in answers):
        group = [a for a in answers if (a.setting, a.mode) == (setting, mode)]
        firsts = [a.first_token_ms for a in group if a.first_token_ms is not None]
        rows.append(
            {
                "setting": setting,
                "mode": mode,
                "right": sum(a.right for a in group),
                "questions": len(group),
                "first_token_ms_median": round(statistics.median(firsts)) if firsts else None,
                "answer_ms_median": round(statistics.median(a.answer_ms for a in group)),
                "answer_words_median": statistics.median(len(a.text.split()) for a in group),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--settings", nargs="+", choices=("before", "after"), default=["before", "after"])
    parser.add_argument("--mode", nargs="+", choices=("text", "spoken"), default=["text", "spoken"])
    parser.add_argument("--order", choices=("interleaved", "grouped"), default="interleaved")
    parser.add_argument("--questions", type=int, default=20, help="use the first N questions")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed of the `before` setting")
    parser.add_argument("--json", type=Path, help="write every answer and the summary here")
    parser.add_argument("--verbose", "-v", action="store_true", help="print every answer")
    args = parser.parse_args()
    answers = asyncio.run(run(args))
    rows = summary(answers)
    print(f"{'setting':8} {'mode':7} {'right':>7} {'first token':>12} {'answer':>8} {'words':>6}")
    for row in rows:
        print(
            f"{row['setting']:8} {row['mode']:7} {row['right']:>3}/{row['questions']:<3} "
            f"{row['first_token_ms_median']:>9} ms {row['answer_ms_median']:>5} ms "
            f"{row['answer_words_median']:>6}"
        )
    print(f"(medians; order {args.order}, `before` seed {args.seed})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"order": args.order, "seed": args.seed, "summary": rows}
        report["answers"] = [asdict(a) for a in answers]
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
