"""``[asr] platform = "openai"`` (aliases ``whisper``, ``Whisper``, ``OpenAI``): any
OpenAI-compatible ``/v1/audio/transcriptions``.

:class:`RemoteTranscriber` posts exactly as echokit_server does: multipart fields ``file``
(``audio.wav``, the canonical 44-byte-header 16 kHz WAV), then ``language``, ``model``,
``prompt`` (each only if non-empty); with an ``api_key`` ``Authorization: Bearer <key>`` and
``User-Agent: curl/7.81.0``, without one neither; up to 3 attempts of 10 s each, the answer's
body included (a server trickling its answer is cut at 10 s). Unlike the reference (which
ignores the HTTP status) a non-2xx answer is an error: 5xx (and 408/429), timeouts, transport
errors and bad answers (not JSON, not an object, a ``text`` that is not a string) are retried;
other 4xx are not, nor a body over ``max_json_bytes`` (``[limits]``; it is never read whole
first). When every attempt failed, ``BackendError``. A 2xx JSON object without ``text`` is an
empty transcript.
Post-processing (:func:`clean_transcript`): per line, what follows the first ``"] "`` (Whisper
timestamps); empty text or text starting with ``(`` (``(music)``) is no speech; then
Traditional -> Simplified Chinese with OpenCC ``tw2sp`` (the reference uses hanconv ``tw2sp``;
a no-op for other text); the result is stripped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import numpy as np
from pydantic import Field

from echokit_fast import audio
from echokit_fast.backends import http, registry
from echokit_fast.backends.base import Pcm, Transcriber
from echokit_fast.backends.chinese import to_simplified
from echokit_fast.backends.schema import HttpUrl, Section, VadConfig, WsUrl

__all__ = [
    "OpenAIASR",
    "RemoteTranscriber",
    "RemoteTranscription",
    "clean_transcript",
]

log = logging.getLogger(__name__)

ASR_RATE = 16000
NOTICES = http.ASR


class OpenAIASR(Section):
    """``[asr] platform = "openai"`` (aliases ``whisper``, ``Whisper``, ``OpenAI``)."""

    platform: Literal["openai"] = "openai"
    url: HttpUrl
    api_key: str = ""
    lang: str = ""
    model: str = ""
    prompt: str = ""
    vad: VadConfig = Field(default_factory=VadConfig)
    vad_url: HttpUrl | None = None
    vad_realtime_url: WsUrl | None = None

    def load_notes(self) -> Iterator[tuple[str, str]]:
        for key in ("vad_url", "vad_realtime_url"):
            if getattr(self, key):
                yield (
                    key,
                    (
                        "a remote silero_vad_server (echokit_server's device path before 2026-01): "
                        "not needed, the embedded Silero VAD detects speech; the setting is ignored"
                    ),
                )


def clean_transcript(text: str) -> str:
    """The reference's post-processing: timestamps, ``(`` filter, tw2sp, stripped."""
    lines = [line.split("] ", 1)[1] if "] " in line else line for line in text.splitlines()]
    text = "\n".join(lines)
    stripped = text.strip()
    if not stripped or stripped.startswith("("):
        return ""
    return to_simplified(stripped)


class RemoteTranscription:
    """A transcription running in the background (an asyncio task)."""

    def __init__(self, coro: Any) -> None:
        self._task = asyncio.ensure_future(coro)

    def cancel(self) -> None:
        self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    async def result(self) -> str:
        return await self._task


class _Retry(Exception):
    """An attempt that failed in a way worth another one: ``problem`` for the log, ``notice``
    for the user should it be the last."""

    def __init__(
        self, problem: str, notice: str, *, busy: bool = False, wait: float | None = None
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.notice = notice
        self.busy = busy  # an HTTP 429
        self.wait = wait  # its Retry-After


class RemoteTranscriber:
    """OpenAI-compatible ``/v1/audio/transcriptions`` client (a
    :class:`~echokit_fast.backends.base.Transcriber`)."""

    def __init__(
        self,
        cfg: OpenAIASR,
        *,
        attempts: int = 3,
        attempt_timeout: float = 10.0,
        retry_delay: float = 0.0,
        max_json_bytes: int = 1 << 20,
    ) -> None:
        self.cfg = cfg
        self.attempts = attempts
        self.attempt_timeout = attempt_timeout
        self.retry_delay = retry_delay
        self.max_json_bytes = max_json_bytes
        self.headers: dict[str, str] = {}
        if cfg.api_key:
            self.headers = {
                "Authorization": f"Bearer {cfg.api_key}",
                "User-Agent": http.USER_AGENT,
            }
        self.http = http.client(attempt_timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _parts(self, wav: bytes) -> list[tuple[str, tuple[str | None, bytes | str]]]:
        parts: list[tuple[str, tuple[str | None, bytes | str]]] = [("file", ("audio.wav", wav))]
        for name, value in (
            ("language", self.cfg.lang),
            ("model", self.cfg.model),
            ("prompt", self.cfg.prompt),
        ):
            if value:
                parts.append((name, (None, value)))
        return parts

    async def transcribe(self, audio_in: Pcm, *, sample_rate: int = 16000) -> str:
        """The text of ``audio_in`` ("" for no speech). Raises BackendError."""
        x = np.asarray(audio_in, dtype=np.float32).reshape(-1)
        if sample_rate != ASR_RATE:
            x = audio.resample(x, sample_rate, ASR_RATE)
        wav = audio.write_wav(x, ASR_RATE)
        problems: list[str] = []
        notice = ""
        for attempt in range(1, self.attempts + 1):
            busy, server_wait = False, None
            try:
                text = await asyncio.wait_for(self._attempt(wav), self.attempt_timeout)
            except (TimeoutError, httpx.TimeoutException) as exc:
                problems.append(f"attempt {attempt}: timeout ({type(exc).__name__})")
                notice = NOTICES.timeout
            except httpx.HTTPError as exc:
                problems.append(f"attempt {attempt}: {exc!r}")
                notice = NOTICES.unreachable
            except _Retry as exc:
                problems.append(f"attempt {attempt}: {exc.problem}")
                notice = exc.notice
                busy, server_wait = exc.busy, exc.wait
            else:
                return clean_transcript(text)
            if attempt == self.attempts:
                break
            # a refusal for load (429) always backs off; other failures by retry_delay steps
            base = max(self.retry_delay, http.BACKOFF_BASE_S) if busy else self.retry_delay
            wait = http.backoff(attempt, server_wait, base=base)
            if wait is None:
                problems.append(f"Retry-After {server_wait:g} s is too long to wait")
                break
            await asyncio.sleep(wait)
        raise NOTICES.error(
            f"ASR {self.cfg.url}: {attempt} attempt(s) failed: " + "; ".join(problems),
            notice,
        )

    async def _attempt(self, wav: bytes) -> str:
        """One request: the raw ``text`` of a 2xx answer. Raises :class:`_Retry`, httpx errors,
        or BackendError for what another attempt would not mend."""
        url = self.cfg.url
        async with self.http.stream(
            "POST", url, files=self._parts(wav), headers=self.headers
        ) as resp:
            status = resp.status_code
            if not 200 <= status < 300:
                problem = f"HTTP {status}: {await http.error_text(resp)}"
                if not http.retryable(status):
                    raise NOTICES.error(f"ASR {url}: {problem}", NOTICES.status(status))
                if status == 429:
                    wait = http.retry_after(resp.headers)
                    raise _Retry(problem, NOTICES.status(status), busy=True, wait=wait)
                raise _Retry(problem, NOTICES.failed(status))
            body = await http.read_body(resp, self.max_json_bytes, NOTICES, f"ASR {url}")
        try:
            data = json.loads(body)
        except ValueError:
            raise _Retry(f"not JSON: {body[:200]!r}", NOTICES.bad_answer) from None
        text = data.get("text", "") if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise _Retry(f"no text string in {body[:200]!r}", NOTICES.bad_answer)
        return text

    def start(self, audio_in: Pcm, *, sample_rate: int = 16000) -> RemoteTranscription:
        """Begin transcribing now (an asyncio task); ``result()`` later, or ``cancel()``."""
        return RemoteTranscription(self.transcribe(audio_in, sample_rate=sample_rate))


@registry.asr(
    "openai", aliases=["whisper", "Whisper", "OpenAI"], config=OpenAIASR, untagged=["url"]
)
def build(cfg: OpenAIASR, needs: registry.Needs) -> Transcriber:
    return RemoteTranscriber(cfg, max_json_bytes=needs.max_json_bytes)
