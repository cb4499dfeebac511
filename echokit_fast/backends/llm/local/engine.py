"""The in-process LLM: one llama.cpp model (``llama-cpp-python``) that every device and the
``/v1/chat/completions`` API share.

* **One answer at a time, first come first served.** The model has one KV cache, so answers
  are written one after another by a single worker thread, in the order they were asked for
  (a device never waits behind more than the answers queued before it, and two answers never
  share the cache). At most ``max_queue`` answers wait beside the one being written; past
  that :class:`~echokit_fast.backends.base.BackendBusy` (a device hears that the model is
  busy, the API answers 429).
* **Streamed.** :meth:`LocalLLMEngine.stream` yields OpenAI ``chat.completion.chunk`` objects
  as llama.cpp writes them, so the first clause is spoken while the model still writes.
* **Stopped within one token.** Leaving the stream (a barge-in, a disconnect, a cancelled
  turn) tells the worker, which checks between tokens; a queued answer whose asker left is
  skipped. ``max_tokens`` is enforced here too (llama-cpp-python's tool-call handler ignores
  it for the message it writes). An answer offered tools is written whole and then sent as one
  chunk: that handler cannot stream an automatic tool choice.
* **Clear failures.** :func:`from_config` resolves the file (:mod:`.model`), loads it and
  refuses, with one sentence each: a model without a chat template and no ``chat_format``, an
  ``extra`` key llama.cpp does not take, a file llama.cpp cannot load (corrupt, an unknown
  architecture, not enough memory: the sentence says how much the model needs and how much
  is free).

llama-cpp-python calls llama.cpp through ctypes, which releases the GIL: the event loop and
the other engines run while a token is computed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echokit_fast.backends.base import BackendBusy, BackendError
from echokit_fast.backends.llm.local import TOOL_CHAT_FORMATS, LocalLLM
from echokit_fast.backends.llm.local.model import ModelFileError, model_id, resolve

__all__ = [
    "RESERVED",
    "Answer",
    "Generation",
    "LocalLLMEngine",
    "RequestRejected",
    "default_threads",
    "from_config",
]

log = logging.getLogger(__name__)

#: ``create_chat_completion`` keywords the server sets itself
RESERVED = ("messages", "stream", "model")
#: generations remembered for ``/console/status``-like views and the tests
RECORDS = 64
NOTICE_BUSY = "The language model is busy. Please try again shortly."
NOTICE_FAILED = "The language model could not answer."
NOTICE_TOO_LONG = "The conversation is too long for the language model."


class RequestRejected(BackendError):
    """llama.cpp refused the request itself (a prompt over the context, a bad argument): the
    API answers 400 with :attr:`detail`."""

    def __init__(self, detail: str, notice: str) -> None:
        super().__init__(detail, notice=notice, backend="llm")
        self.detail = detail


def default_threads(cores: int | None = None) -> int:
    """The threads llama.cpp computes with by default: one core fewer than this process may
    use (Whisper, the TTS and the VAD keep one on a small box), at least 1, at most 8 (decoding
    is bound by memory bandwidth; more threads rarely help)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) - 1, 8))


@dataclass
class Generation:
    """What one answer did: tokens written, how it ended (``stop``, ``length``, ``cancelled``,
    ``skipped``: its asker left while it was queued, ``error``), seconds waiting in the queue,
    to the first token and in all, and when the worker began and ended it
    (``time.perf_counter``)."""

    tokens: int = 0
    outcome: str = ""
    wait_s: float = 0.0
    first_token_s: float | None = None
    total_s: float = 0.0
    started: float = 0.0
    ended: float = 0.0


_END = object()


@dataclass(eq=False)
class _Job:
    kwargs: dict[str, Any]
    stream: bool
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    asked: float = field(default_factory=time.perf_counter)

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads any more
            self.cancelled.set()


class Answer:
    """One streamed answer (see :meth:`LocalLLMEngine.stream`): ``async for chunk in
    answer``; leaving it early, ``aclose()`` stops the model within a token."""

    def __init__(self, job: _Job) -> None:
        self._job = job

    def __aiter__(self) -> Answer:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            item = await self._job.out.get()
        except BaseException:  # cancelled while waiting: the answer is no longer wanted
            self._job.cancelled.set()
            raise
        if item is _END:
            self._job.cancelled.set()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._job.cancelled.set()
            raise _as_backend_error(item)
        return item

    async def aclose(self) -> None:
        self._job.cancelled.set()


class LocalLLMEngine:
    """One loaded model; see the module docstring. ``llama`` is a ``llama_cpp.Llama``."""

    def __init__(self, llama: Any, cfg: LocalLLM, path: Path) -> None:
        self.llama = llama
        self.cfg = cfg
        self.path = path
        #: the id ``/v1/models`` lists (the file name without ``.gguf``)
        self.model_id = model_id(cfg.model)
        self.max_queue = cfg.max_queue
        #: what every answer uses unless the request says otherwise
        self.sampling: dict[str, Any] = {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens,
        }
        if cfg.seed is not None:
            self.sampling["seed"] = cfg.seed
        self.tools_supported = cfg.chat_format in TOOL_CHAT_FORMATS
        #: the last generations, newest last
        self.records: deque[Generation] = deque(maxlen=RECORDS)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="echokit-llm")
        self._lock = threading.Condition()
        self._pending = 0  # answers queued or being written
        self._current: _Job | None = None
        self._closed = False

    # -- state -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Answers queued or being written."""
        return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """Block until no answer is queued or being written (True), or ``timeout`` s passed."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    # -- answers -----------------------------------------------------------------------------

    def stream(self, request: dict[str, Any]) -> Answer:
        """The chunks of the answer to ``request`` (``create_chat_completion`` keywords:
        ``messages`` and the sampling, ``self.sampling`` filling the rest), as an async
        iterator; ``aclose()`` it (``contextlib.aclosing``) to stop the answer. Raises
        BackendBusy at once when the queue is full; iterating raises RequestRejected /
        BackendError when llama.cpp fails."""
        return Answer(self._submit(request, stream=True))

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The whole ``chat.completion`` answer to ``request`` (with ``usage``)."""
        job = self._submit(request, stream=False)
        try:
            result: Any = None
            while True:
                item = await job.out.get()
                if item is _END:
                    return result
                if isinstance(item, BaseException):
                    raise _as_backend_error(item)
                result = item
        finally:
            job.cancelled.set()

    def _submit(self, request: dict[str, Any], *, stream: bool) -> _Job:
        kwargs = {**self.sampling, **request}
        max_tokens = kwargs.get("max_tokens") or self.cfg.max_tokens
        job = _Job(kwargs, stream, max_tokens, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise BackendError("local LLM: shut down", notice=NOTICE_FAILED, backend="llm")
            if self._pending > self.max_queue:
                raise BackendBusy(
                    f"local LLM: {self._pending - 1} answers already wait (max_queue = "
                    f"{self.max_queue})",
                    notice=NOTICE_BUSY,
                    backend="llm",
                )
            self._pending += 1
        self._pool.submit(self._run, job)
        return job

    def _run(self, job: _Job) -> None:
        started = time.perf_counter()
        record = Generation(wait_s=started - job.asked, started=started)
        try:
            if job.cancelled.is_set():
                record.outcome = "skipped"
                return
            self._current = job
            if job.stream and job.kwargs.get("tools"):
                self._write_whole(job, record)
            elif job.stream:
                self._write(job, record, started)
            else:
                answer = self.llama.create_chat_completion(**job.kwargs, stream=False)
                record.tokens = answer.get("usage", {}).get("completion_tokens", 0)
                record.outcome = answer["choices"][0].get("finish_reason") or "stop"
                job.put(_with_id(answer, self.model_id))
        except Exception as exc:
            record.outcome = "error"
            log.debug("local LLM: the answer failed", exc_info=True)
            job.put(exc)
        finally:
            self._current = None
            record.ended = time.perf_counter()
            record.total_s = record.ended - started
            self.records.append(record)
            job.put(_END)
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()

    def _write(self, job: _Job, record: Generation, started: float) -> None:
        chunks: Iterator[dict[str, Any]] = self.llama.create_chat_completion(
            **job.kwargs, stream=True
        )
        try:
            for chunk in chunks:
                if job.cancelled.is_set():
                    record.outcome = "cancelled"
                    return
                choice = chunk["choices"][0] if chunk.get("choices") else {}
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("tool_calls"):
                    if record.first_token_s is None:
                        record.first_token_s = time.perf_counter() - started
                    record.tokens += 1
                job.put(_with_id(chunk, self.model_id))
                if choice.get("finish_reason"):
                    record.outcome = choice["finish_reason"]
                    return
                if record.tokens >= job.max_tokens:
                    record.outcome = "length"
                    job.put(_finish(chunk, self.model_id, "length"))
                    return
            record.outcome = record.outcome or "stop"
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the generator's own clean-up (llama.cpp's sampler, the grammar)

    def _write_whole(self, job: _Job, record: Generation) -> None:
        """An answer that may call tools, as the chunks of a stream: llama-cpp-python's
        function-calling handler cannot stream an automatic tool choice, so the answer is
        written whole, then sent as one delta (its text and its tool calls) and the end."""
        answer = self.llama.create_chat_completion(**job.kwargs, stream=False)
        choice = answer["choices"][0]
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        calls = message.get("tool_calls") or []
        if calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        record.tokens = answer.get("usage", {}).get("completion_tokens", 0)
        record.outcome = choice.get("finish_reason") or "stop"
        head = {k: answer.get(k) for k in ("id", "created")}
        job.put(
            {
                **head,
                "object": "chat.completion.chunk",
                "model": self.model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
        )
        job.put(_finish(answer, self.model_id, record.outcome))

    # -- shutdown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the answer being written (within a token), drop the queue, free the model."""
        with self._lock:
            self._closed = True
            current = self._current
        if current is not None:
            current.cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(self.llama, "close", None)
        if close is not None:
            close()


def _with_id(obj: dict[str, Any], model: str) -> dict[str, Any]:
    obj["model"] = model
    return obj


def _finish(last: dict[str, Any], model: str, reason: str) -> dict[str, Any]:
    """The closing chunk of an answer cut at ``max_tokens``."""
    return {
        "id": last.get("id"),
        "object": "chat.completion.chunk",
        "created": last.get("created"),
        "model": model,
        "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}],
    }


def _as_backend_error(exc: BaseException) -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ValueError) and "context window" in text:
        return RequestRejected(f"local LLM: {text}", NOTICE_TOO_LONG)
    if isinstance(exc, (ValueError, TypeError)):
        return RequestRejected(f"local LLM: {text}", NOTICE_FAILED)
    return BackendError(f"local LLM: {text}", notice=NOTICE_FAILED, backend="llm")


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def from_config(cfg: LocalLLM) -> LocalLLMEngine:
    """Load ``cfg.model`` (blocking: seconds for a real model). Raises RuntimeError with one
    sentence naming the problem."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise RuntimeError(
            f'[llm] platform = "local" needs llama-cpp-python ({exc}): install '
            "echokit-fast[llm] (it builds llama.cpp, a few minutes)"
        ) from exc
    reserved = {*RESERVED, "tools", "tool_choice"}
    known = set(inspect.signature(llama_cpp.Llama.create_chat_completion).parameters) - {"self"}
    unknown = sorted(k for k in (cfg.extra or {}) if k not in known and k not in reserved)
    if unknown:
        raise RuntimeError(
            f"[llm] extra: llama.cpp's chat completion takes no {', '.join(unknown)} (it "
            f"takes {', '.join(sorted(known - reserved))})"
        )
    if cfg.chat_format is not None:
        try:
            llama_cpp.llama_chat_format.get_chat_completion_handler(cfg.chat_format)
        except Exception as exc:  # LlamaChatCompletionHandlerNotFoundException (a KeyError)
            raise RuntimeError(
                f"[llm] chat_format: {exc}".replace("Invalid chat handler", "unknown format")
            ) from exc
    path = resolve(cfg.model)
    size = path.stat().st_size
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=cfg.context,
            n_threads=cfg.threads or default_threads(),
            n_gpu_layers=cfg.gpu_layers,
            chat_format=cfg.chat_format,
            seed=cfg.seed if cfg.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        free = _available_memory()
        memory = f"; the model is {_gib(size)}" + (
            f", {_gib(free)} of memory is available" if free is not None else ""
        )
        raise ModelFileError(
            f"llama.cpp cannot load {path} ({exc}): a truncated or corrupt GGUF file, an "
            f"architecture this llama.cpp does not know, or not enough memory{memory}"
        ) from exc
    if cfg.chat_format is None and "tokenizer.chat_template" not in llama.metadata:
        llama.close()
        raise ModelFileError(
            f"{path} has no chat template (tokenizer.chat_template in its metadata): set "
            '[llm] chat_format to the model\'s format ("chatml", "llama-3", "gemma", ...)'
        )
    return LocalLLMEngine(llama, cfg, path)
