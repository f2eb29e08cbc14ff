"""Semantic end of turn: in a pause, ask an end-of-turn model whether the caller has finished.

```
           silence < semantic_check_after_ms         model says no (p < semantic_threshold)
 PAUSED ──────────────────────────────────► check ──────────────────────────────────► wait
   ▲                                          │      semantic_recheck_ms more silence    │
   │ speech resumes: a new pause, a new       │ p >= semantic_threshold                  │
   │ schedule                                 ▼                                          │
   └──────────────────────────────── TurnEnded now (decided where the check was made) ◄──┘
                 silence reaches semantic_max_silence_ms: the detector ends the turn itself
```

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
        """The pause in progress has reached its next check."""
        silence = detector.silence_samples
        if silence <= 0:
            return False
        if detector.speech_end_samples != self._pause:  # a new pause: start its schedule
            self._pause, self._next = detector.speech_end_samples, self._first
        return self._next >= 0 and silence >= self._next

    async def check(self, detector: TurnDetector) -> TurnEvent | None:
        """Ask the model about the turn so far; end the turn if it says the caller has finished."""
        silence = detector.silence_samples
        self._next = silence + self._every if self._every else -1
        audio = await run_audio_job(detector.recent_audio, self.model.max_audio_samples)
        if audio is None:
            return None
        self.checks += 1
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
        if probability < self.options.semantic_threshold:
            return None
        return await run_audio_job(detector.end_turn)
