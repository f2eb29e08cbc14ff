"""`ReplyOnStopWords`: like `ReplyOnPause`, but only speech addressed to it with a stop word gets a reply.

```python
stream = Stream(ReplyOnStopWords(reply, stop_words=["computer"]))
```

Each turn is transcribed (Moonshine by default). A turn without a stop word is let go. A turn with
one sends a `stop_word` event; if the caller went on speaking after the word ("computer, what time
is it?") the turn is answered at once, and if they only said the word ("computer ...") the next
turn is, when it comes within `armed_for_ms`. `fn` gets the turn's audio as with `ReplyOnPause`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Self

from agentkit._executor import run_turn_job
from agentkit.audio import AudioFrame, resample
from agentkit.providers import resolve_stt
from agentkit.providers.stt import STT
from agentkit.stream._events import StopWordDetected
from agentkit.stream._reply_on_pause import ReplyFn, ReplyOnPause
from agentkit.stream._turn import TurnEnded

__all__ = ["ReplyOnStopWords"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class ReplyOnStopWords(ReplyOnPause):
    """Turn-taking on a VAD, replying only after a stop word (FastRTC's `ReplyOnStopWords`).

    `stop_words` may be single words or phrases ("hey computer"); matching ignores case and
    punctuation. `stt` transcribes each turn (an `STT` or a provider string; default Moonshine
    tiny). The other arguments are `ReplyOnPause`'s.
    """

    def __init__(
        self,
        fn: ReplyFn,
        *,
        stop_words: Sequence[str],
        stt: STT | str = "moonshine/tiny",
        armed_for_ms: int = 8000,
        **options: object,
    ) -> None:
        phrases = [tuple(_words(w)) for w in stop_words]
        if not phrases or any(not p for p in phrases):
            raise ValueError("stop_words needs at least one word, and no empty ones")
        if armed_for_ms <= 0:
            raise ValueError("armed_for_ms must be positive")
        super().__init__(fn, **options)  # type: ignore[arg-type]
        self.stop_words = list(stop_words)
        self._phrases = phrases
        self.stt: STT = resolve_stt(stt)
        self.armed_for_ms = armed_for_ms
        self._options = options
        self._armed_until: int | None = None  # input sample position until which a turn is addressed to us

    def copy(self) -> Self:
        return type(self)(
            self.fn,
            stop_words=self.stop_words,
            stt=self.stt,
            armed_for_ms=self.armed_for_ms,
            **self._options,
        )

    async def start_up(self) -> None:
        await self.stt.warm_up()
        await super().start_up()

    async def on_turn_ended(self, event: TurnEnded) -> None:
        armed, self._armed_until = self._armed_until, None
        if armed is not None and event.decided_samples <= armed:
            await super().on_turn_ended(event)  # the request that follows a lone stop word
            return
        try:
            text = await self._transcribe(event.audio)
        except Exception as exc:
            logger.warning("stop words: the turn could not be transcribed (%s)", type(exc).__name__)
            return
        words = _words(text)
        found = self._find(words)
        if found is None:
            logger.debug("stop words: a turn without a stop word was let go")
            return
        word, after = found
        await self.context.send_event(StopWordDetected(word=word))
        if after < len(words):
            await super().on_turn_ended(event)
        else:  # only the word: the next turn is the request
            rate = self.turn_vad.sample_rate
            self._armed_until = event.decided_samples + self.armed_for_ms * rate // 1000

    def _find(self, words: list[str]) -> tuple[str, int] | None:
        """The first stop word in `words` and the index of the word after it."""
        for start in range(len(words)):
            for phrase in self._phrases:
                if tuple(words[start : start + len(phrase)]) == phrase:
                    return " ".join(phrase), start + len(phrase)
        return None

    async def _transcribe(self, audio: AudioFrame) -> str:
        if audio.sample_rate != self.stt.sample_rate:
            audio = await run_turn_job(resample, audio, self.stt.sample_rate)
        return (await self.stt.transcribe(audio)).text
