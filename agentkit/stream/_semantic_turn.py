"""Semantic end of turn: in a pause, ask an end-of-turn model whether the caller has finished.

```
                    a check says p >= semantic_unsure_threshold
 pause ─► LISTENING ───────────────────────────────────────────► UNSURE
             │  │     (below it, a clear no: LISTENING goes on)     │
             │  │                                                  │ p >= threshold at a check,
             │  │ p >= threshold at a check                        │ or silence reaches
             │  └──────────────────────────► TurnEnded now ◄───────┘ semantic_unsure_silence_ms
             │                                    ▲
             └── silence reaches semantic_max_silence_ms (the detector ends the turn itself)

 checks: at semantic_check_after_ms of silence, then every semantic_recheck_ms more
 threshold: semantic_threshold at a pause's first check, semantic_recheck_threshold at the others
 speech resumes, in either state: a new pause, a new schedule, LISTENING again
```

Why two thresholds: the model's score rises with the silence alone. On the evaluation set
(bench/turn_taking_eval.py, 72 clips), many sentences paused mid-way score under 0.5 at 200 ms and
over 0.9 by 500-800 ms, while finished ones mostly score 0.95-0.99 at once. With the first check at
200 ms and 0.93, 9 of 36 paused sentences and lists are split (as many as a fixed 1000 ms silence
splits); rechecks at that same 0.93 raise this to 20-22, at 0.97 to 17, at 0.98 to 14-16, and only
at 0.99 do they add none. So a recheck must be all but certain (`semantic_recheck_threshold` 0.99):
a later yes is mostly the silence talking.

Why the UNSURE band: 6 of the 24 finished sentences never reach those thresholds and used to wait
for the full 1500 ms. 5 of them score 0.9-0.97 at some check, so they now end at 1250 ms (p95 on
finished sentences 1510 -> 1268 ms), while a pause heard only as a clear no still waits for 1500 ms.
Sooner costs splits: the set's long mid-sentence pauses score as high as those finished sentences
(0.93-0.98), so with the band at 1000 ms 12-13 paused sentences are split (9 with a fixed 1000 ms
silence); at 1250 ms any band from 0.85 to 0.92 keeps 9, and from 0.8 down the band adds a split.

The `TurnDetector` stays synchronous and model-free: it is built with `semantic_max_silence_ms`
in place of `end_of_turn_silence_ms`, and exposes the pause (`silence_samples`), the end of the
turn's audio (`recent_audio`) and `end_turn()`. This class decides when to ask; the handler awaits
`check` between two input frames, so no audio is analysed while the model runs and the turn ends
at exactly the position where the check was made (`decided_samples`), however long the model took.
"""

from __future__ import annotations

import dataclasses
import logging

from agentkit._executor import run_audio_job
from agentkit.providers.turn import EndOfTurnModel
from agentkit.stream._turn import TurnDetector, TurnEvent, TurnTakingOptions

__all__ = ["SemanticEndOfTurn"]

logger = logging.getLogger(__name__)


class SemanticEndOfTurn:
    """One session's schedule of end-of-turn checks over a shared model. Use it from the event loop."""

    def __init__(self, model: EndOfTurnModel, options: TurnTakingOptions, *, sample_rate: int) -> None:
        self.model = model
        self.options = options
        self._rate = sample_rate
        self._first = round(options.semantic_check_after_ms * sample_rate / 1000)
        self._every = round(options.semantic_recheck_ms * sample_rate / 1000)
        self._pause = -1  # speech_end_samples of the pause the schedule belongs to
        self._next = self._first  # silence (samples) at which the next check is due; -1: none
        self._asked = 0  # checks made in the pause in progress
        self._unsure_at = round(options.semantic_unsure_silence_ms * sample_rate / 1000)
        self._unsure = False  # a check of the pause in progress said unsure (UNSURE), not a clear no
        self._failed = False
        self.checks = 0
        """Checks made in this session."""
        self.last_probability: float | None = None
        """The model's answer at the latest check."""

    @staticmethod
    def detector_options(options: TurnTakingOptions) -> TurnTakingOptions:
        """The detector's options: silence alone ends a turn only at `semantic_max_silence_ms`."""
        return dataclasses.replace(options, end_of_turn_silence_ms=options.semantic_max_silence_ms)

    def due(self, detector: TurnDetector) -> bool:
        """The pause in progress has reached its next check, or has been UNSURE long enough."""
        silence = detector.silence_samples
        if silence <= 0:
            return False
        if detector.speech_end_samples != self._pause:  # a new pause: start its schedule, LISTENING
            self._pause, self._next, self._asked = detector.speech_end_samples, self._first, 0
            self._unsure = False
        if self._unsure and silence >= self._unsure_at:
            return True
        return self._next >= 0 and silence >= self._next

    async def check(self, detector: TurnDetector) -> TurnEvent | None:
        """Ask the model about the turn so far; end the turn if it says the caller has finished, or
        if it was unsure in this pause and the pause has reached `semantic_unsure_silence_ms`."""
        silence = detector.silence_samples
        if self._unsure and silence >= self._unsure_at:  # UNSURE long enough: no need to ask again
            logger.debug("end of turn: unsure after %d ms of silence", silence * 1000 // self._rate)
            return await run_audio_job(detector.end_turn)
        self._next = silence + self._every if self._every else -1
        audio = await run_audio_job(detector.recent_audio, self.model.max_audio_samples)
        if audio is None:
            return None
        self.checks += 1
        options = self.options
        threshold = options.semantic_threshold if self._asked == 0 else options.semantic_recheck_threshold
        self._asked += 1
        try:
            probability = await self.model.probability(audio)
        except Exception as exc:  # the silence rule still ends the turn
            level = logging.DEBUG if self._failed else logging.WARNING
            logger.log(level, "end-of-turn check failed (%s); waiting for silence", type(exc).__name__)
            self._failed = True
            return None
        self.last_probability = probability
        logger.debug(
            "end-of-turn check after %d ms of silence: p=%.2f", silence * 1000 // self._rate, probability
        )
        self._unsure = self._unsure or probability >= options.semantic_unsure_threshold  # not a clear no
        if probability >= threshold or (self._unsure and silence >= self._unsure_at):
            return await run_audio_job(detector.end_turn)
        return None
