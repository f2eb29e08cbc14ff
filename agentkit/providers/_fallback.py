"""Provider fallback: several providers for one stage, tried in order, each behind a circuit breaker.

```python
class Support(Agent):
    stt = FallbackSTT(["groq/whisper-large-v3-turbo", "moonshine/tiny"])
    llm = FallbackLLM(["anthropic/claude-haiku-4-5", "groq/llama-3.3-70b-versatile"])
    tts = FallbackTTS(["elevenlabs/<voice id>", "kokoro/af_heart"])
```

Each wrapper is a provider of its stage (the same Protocol), so an agent takes it as any other.

- A retryable failure (`ProviderError` with `retryable`, or `ProviderTimeoutError`) *before any
  output*: the next provider answers the same request (the same turn and history; the same
  sentence). STT has no partial output: any retryable failure hands over.
- A failure once output has started (LLM text or a tool call, TTS audio) is raised as is: part of
  the reply is already out, and the agent apologises for the rest. So is a failure that is not
  retryable (a bad request or key): answering elsewhere would hide a mistake.
- Circuit breaker: a provider that failed retryably `failure_threshold` times in a row is skipped
  for `cooldown_s` (on the injected `clock`); then it is tried again: one success makes it healthy,
  one more failure skips it for another `cooldown_s`. When every provider is being skipped, all are
  tried in order anyway.
- `first_output_timeout_s` (None: leave it to each provider's own timeout) bounds the wait for a
  provider's first output, so one that hangs hands over in time. Keep it, times the providers, under
  the agent's `StageTimeouts`, which bound the whole stage.
- Which provider answered: `last_provider` is the latest call's, in any session sharing the wrapper.
  A turn's own is recorded in its metrics: the agent runs each reply under `recording_answers`.
- TTS providers may have different sample rates: every frame carries its own, and the session
  resamples each to the transport's rate. STT providers get the audio resampled to their rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from agentkit._aio import next_within
from agentkit._executor import run_turn_job
from agentkit.audio import AudioFrame, resample
from agentkit.clock import Clock, MonotonicClock
from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers._registry import resolve_llm, resolve_stt, resolve_tts
from agentkit.providers.llm import LLM, ChatMessage, LLMChunk, ToolSpec
from agentkit.providers.stt import STT, Transcript
from agentkit.providers.tts import TTS

__all__ = ["FallbackLLM", "FallbackSTT", "FallbackTTS", "Stage", "note_answer", "recording_answers"]

logger = logging.getLogger(__name__)

Stage = Literal["stt", "llm", "tts"]

_ANSWERS: ContextVar[dict[str, str] | None] = ContextVar("agentkit_provider_answers", default=None)


@contextlib.contextmanager
def recording_answers(record: dict[str, str]) -> Iterator[None]:
    """Within the block, and in the tasks started inside it (they share `record`), every provider
    that answers writes its name to `record[stage]`: for a fallback wrapper, the one that answered.
    The agent runs each reply in one, so a turn's metrics name its own providers whatever other
    sessions sharing them do meanwhile."""
    token = _ANSWERS.set(record)
    try:
        yield
    finally:
        _ANSWERS.reset(token)


def note_answer(stage: Stage, provider: STT | LLM | TTS) -> None:
    """`provider` is used for `stage` (the agent's default stages call this): noted by its name in
    the reply being recorded, if any. A fallback wrapper notes the provider that answers itself."""
    if not isinstance(provider, _Fallback):
        _note(stage, provider.name)


def _note(stage: Stage, name: str) -> None:
    record = _ANSWERS.get()
    if record is not None:
        record[stage] = name


def _retryable(exc: ProviderError) -> bool:
    return exc.retryable or isinstance(exc, ProviderTimeoutError)


class _Provider(Protocol):
    @property
    def name(self) -> str: ...

    async def warm_up(self) -> None: ...

    async def aclose(self) -> None: ...


P = TypeVar("P", bound=_Provider)
T = TypeVar("T")


@dataclass(slots=True)
class _Health:
    """One provider's circuit breaker."""

    failures: int = 0
    """Retryable failures in a row."""
    skipped_until: float = float("-inf")
    """Clock time until which it is skipped."""


class _Fallback(Generic[P]):
    """What the three wrappers share: the providers, their breakers, lifecycle and naming."""

    stage: Stage

    def __init__(
        self,
        providers: Sequence[P],
        *,
        failure_threshold: int,
        cooldown_s: float,
        first_output_timeout_s: float | None,
        clock: Clock | None,
    ) -> None:
        if not providers:
            raise ConfigError(f"a fallback {self.stage.upper()} needs at least one provider")
        if failure_threshold < 1 or cooldown_s < 0:
            raise ConfigError("failure_threshold must be 1 or more and cooldown_s 0 or more")
        if first_output_timeout_s is not None and first_output_timeout_s <= 0:
            raise ConfigError("first_output_timeout_s must be positive (or None)")
        self.providers: tuple[P, ...] = tuple(providers)
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.first_output_timeout_s = first_output_timeout_s
        self._clock: Clock = clock or MonotonicClock()
        self._health = [_Health() for _ in self.providers]
        self.last_provider: str | None = None
        """Name of the provider that answered the latest call (in any session); None before one did."""

    @property
    def name(self) -> str:
        return f"fallback({', '.join(p.name for p in self.providers)})"

    def skipped(self) -> list[str]:
        """Names of the providers the breaker skips now."""
        now = self._clock.now()
        return [p.name for p, h in zip(self.providers, self._health, strict=True) if h.skipped_until > now]

    async def warm_up(self) -> None:
        """Warm up every provider (a missing key of a fallback shows at start-up, not in an outage)."""
        for provider in self.providers:
            await provider.warm_up()

    async def aclose(self) -> None:
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception:
                logger.exception("%s: closing %s failed", self.name, provider.name)

    # -- the breaker -----------------------------------------------------------------------------
    def _candidates(self) -> list[int]:
        """Indexes of the providers to try, in order: those not skipped, else all of them."""
        now = self._clock.now()
        ready = [i for i, h in enumerate(self._health) if h.skipped_until <= now]
        return ready or list(range(len(self.providers)))

    def _answered(self, index: int) -> None:
        name = self.providers[index].name
        self.last_provider = name
        _note(self.stage, name)

    def _succeeded(self, index: int) -> None:
        self._health[index] = _Health()

    def _failed(self, index: int, exc: ProviderError) -> None:
        health = self._health[index]
        health.failures += 1
        if health.failures >= self.failure_threshold:
            health.skipped_until = self._clock.now() + self.cooldown_s
            logger.warning(
                "%s: %s failed %d times in a row (%s); skipping it for %.0f s",
                self.name,
                self.providers[index].name,
                health.failures,
                exc.code,
                self.cooldown_s,
            )

    def _hand_over(self, index: int, exc: ProviderError, rest: Sequence[int]) -> bool:
        """After provider `index` failed before any output: whether the next one answers instead."""
        if not _retryable(exc):
            return False
        self._failed(index, exc)
        if not rest:
            return False
        failed, next_name = self.providers[index].name, self.providers[rest[0]].name
        logger.warning("%s: %s failed (%s); %s answers instead", self.name, failed, exc.code, next_name)
        return True

    async def _failover(
        self,
        open_stream: Callable[[P], AsyncGenerator[T, None]],
        is_output: Callable[[T], bool],
        *,
        keep_silent: bool,
    ) -> AsyncGenerator[T, None]:
        """The items of the first provider able to stream them (LLM chunks, TTS frames).

        A provider that fails retryably before its first output (an item `is_output` accepts)
        hands the same request to the next one; after that, a failure is raised as is. Items
        before the first output are passed on when `keep_silent` (an LLM's usage-only chunks),
        dropped otherwise (a TTS's empty frames).
        """
        order = self._candidates()
        for position, index in enumerate(order):
            provider = self.providers[index]
            started = False  # output went out: no handing over from here on
            try:
                async with contextlib.aclosing(open_stream(provider)) as items:
                    while not started:
                        try:
                            item = await self._first(items, provider)
                        except StopAsyncIteration:
                            break
                        if is_output(item):
                            started = True
                            self._answered(index)
                        if started or keep_silent:
                            yield item
                    if started:
                        async for item in items:
                            yield item
            except ProviderError as exc:
                if started or not self._hand_over(index, exc, order[position + 1 :]):
                    if started and _retryable(exc):
                        self._failed(index, exc)
                    raise
                continue
            if not started:
                self._answered(index)  # an empty reply (or blank text to speak) is an answer too
            self._succeeded(index)
            return

    async def _first(self, items: AsyncGenerator[T, None], provider: P) -> T:
        """The first item of `items`, within `first_output_timeout_s` if set."""
        if self.first_output_timeout_s is None:
            return await anext(items)
        what = f"{provider.name} first output"
        return await next_within(items, self.first_output_timeout_s, what, provider=provider.name)


class FallbackLLM(_Fallback[LLM]):
    """An `LLM` that answers with the first of `providers` able to (see the module docstring).

    Providers may be objects or strings (`"anthropic/claude-haiku-4-5"`). It supports tools only
    when all of them do: the tools offered go to whichever answers.
    """

    stage: Stage = "llm"

    def __init__(
        self,
        providers: Sequence[LLM | str],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        first_output_timeout_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            [resolve_llm(p) for p in providers],
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            first_output_timeout_s=first_output_timeout_s,
            clock=clock,
        )

    @property
    def supports_tools(self) -> bool:
        return all(p.supports_tools for p in self.providers)

    async def stream(
        self, messages: Sequence[ChatMessage], *, instructions: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        def open_stream(provider: LLM) -> AsyncGenerator[LLMChunk, None]:
            return provider.stream(messages, instructions=instructions, tools=tools)

        async for chunk in self._failover(open_stream, _is_llm_output, keep_silent=True):
            yield chunk


class FallbackSTT(_Fallback[STT]):
    """An `STT` that transcribes with the first of `providers` able to (see the module docstring).

    `sample_rate` is the first provider's: the agent resamples to it, and the turn is resampled
    again for a provider with another rate.
    """

    stage: Stage = "stt"

    def __init__(
        self,
        providers: Sequence[STT | str],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        first_output_timeout_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            [resolve_stt(p) for p in providers],
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            first_output_timeout_s=first_output_timeout_s,
            clock=clock,
        )

    @property
    def sample_rate(self) -> int:
        return self.providers[0].sample_rate

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        order = self._candidates()
        for position, index in enumerate(order):
            provider = self.providers[index]
            try:
                heard = audio
                if heard.sample_rate != provider.sample_rate:
                    heard = await run_turn_job(resample, heard, provider.sample_rate)
                transcript = await self._within(provider.transcribe(heard), provider)
            except ProviderError as exc:
                if not self._hand_over(index, exc, order[position + 1 :]):
                    raise
                continue
            self._answered(index)
            self._succeeded(index)
            return transcript
        raise AssertionError("unreachable: the last provider's failure is raised")

    async def _within(self, call: Awaitable[T], provider: STT) -> T:
        timeout_s = self.first_output_timeout_s
        if timeout_s is None:
            return await call
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except TimeoutError:
            message = f"{provider.name} did not transcribe within {timeout_s:g} s"
            raise ProviderTimeoutError(message, provider=provider.name) from None


class FallbackTTS(_Fallback[TTS]):
    """A `TTS` that speaks each sentence with the first of `providers` able to (see the module
    docstring). `sample_rate` is the first provider's; each frame says its own."""

    stage: Stage = "tts"

    def __init__(
        self,
        providers: Sequence[TTS | str],
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        first_output_timeout_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            [resolve_tts(p) for p in providers],
            failure_threshold=failure_threshold,
            cooldown_s=cooldown_s,
            first_output_timeout_s=first_output_timeout_s,
            clock=clock,
        )

    @property
    def sample_rate(self) -> int:
        return self.providers[0].sample_rate

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        def open_stream(provider: TTS) -> AsyncGenerator[AudioFrame, None]:
            return provider.synthesize(text)

        async for frame in self._failover(open_stream, _is_audio, keep_silent=False):
            yield frame


def _is_llm_output(chunk: LLMChunk) -> bool:
    return bool(chunk.text) or chunk.tool_call is not None


def _is_audio(frame: AudioFrame) -> bool:
    return frame.num_samples > 0
