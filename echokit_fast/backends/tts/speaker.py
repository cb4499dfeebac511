"""What the remote speakers share: the notices; for the HTTP ones one client each, failures as
notices, WAV replies decoded, mixed to mono, resampled to the asked rate with
:mod:`echokit_fast.audio` and yielded in 0.5 s chunks; for the streamed ones
(:class:`PcmStream`) s16le PCM pieces of any size to float32 at the asked rate.

Timeouts where the reference has none (stream_gsv, openai, groq, fish): connecting 10 s, and
``read_timeout`` (60 s) without any data; the whole segment is bounded by the turn's
``[limits] tts_segment_s`` (``conversation/pipeline.py``). A reply's audio may be at most
``max_bytes`` (``[limits] max_tts_bytes``): a WAV body is measured while it is read, never read
whole first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np

from echokit_fast import audio
from echokit_fast.backends import http
from echokit_fast.backends.base import BackendError, Pcm

__all__ = ["NOTICES", "NOTICE_REPORTED", "HTTPSpeaker", "PcmStream", "tts_error", "wav_to_rate"]

log = logging.getLogger(__name__)

NOTICES = http.TTS
#: attempts of a request the server refuses with HTTP 429 (each after its backoff)
BUSY_ATTEMPTS = 3
#: the service itself reports that it failed (an error message of its protocol)
NOTICE_REPORTED = "The speech synthesizer reported an error."


def tts_error(
    what: str, exc: BaseException | None = None, status: int | None = None
) -> BackendError:
    """The BackendError for an HTTP ``status`` or a transport exception ``exc``."""
    notice = NOTICES.status(status) if status is not None else NOTICES.exception(exc or Exception())
    return NOTICES.error(what, notice)


def _chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def wav_to_rate(body: bytes, sample_rate: int, source: str) -> np.ndarray:
    """A WAV body as mono float32 at ``sample_rate``; a bad WAV is a BackendError."""
    try:
        samples, rate = audio.read_wav(body)
    except ValueError as exc:
        raise BackendError(
            f"TTS {source}: bad WAV ({len(body)} bytes): {exc}",
            notice="The speech synthesizer sent audio that cannot be played.",
            backend="tts",
        ) from exc
    mono = samples[:, 0] if samples.shape[1] == 1 else audio.to_mono(samples, samples.shape[1])
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != sample_rate:
        mono = audio.resample(mono, rate, sample_rate)
    return mono


class PcmStream:
    """s16le mono PCM at ``from_rate`` arriving in pieces of any size (an odd byte is carried to
    the next piece) -> float32 at ``to_rate``, resampled as one stream."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._carry = b""
        self._resampler = audio.Resampler(from_rate, to_rate) if from_rate != to_rate else None

    def feed(self, data: bytes) -> np.ndarray:
        """The samples ``data`` completes (possibly none)."""
        data = self._carry + data
        even = len(data) - len(data) % 2
        self._carry = data[even:]
        pcm = audio.pcm16_to_float(data[:even])
        return self._resampler.process(pcm) if self._resampler is not None else pcm

    def end(self) -> np.ndarray:
        """The samples still held back (a last odd byte is dropped)."""
        if self._carry:
            log.warning("TTS audio ended on an odd byte; it is dropped")
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.flush()


class HTTPSpeaker:
    """Common plumbing: one httpx client, status checks, WAV replies in 0.5 s chunks."""

    name = "tts"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_bytes: int = 64 << 20,
    ):
        self.url = url
        self.max_bytes = max_bytes
        self.http = http.client(httpx.Timeout(read_timeout, connect=connect_timeout))

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def where(self) -> str:
        return f"TTS {self.name} {self.url}"

    async def _status(self, resp: httpx.Response) -> None:
        """A BackendError for a status other than 200 (the start of its body logged);
        :class:`~echokit_fast.backends.http.TooManyRequests` for a 429."""
        if resp.status_code != 200:
            detail = await http.error_text(resp)
            if resp.status_code == 429:
                raise http.TooManyRequests(
                    f"{self.where}: HTTP 429: {detail}", http.retry_after(resp.headers)
                )
            raise tts_error(
                f"{self.where}: HTTP {resp.status_code}: {detail}", status=resp.status_code
            )

    async def _wait_busy(self, exc: http.TooManyRequests, busy: int) -> None:
        """Wait before retrying the `busy`-th request refused with 429 (the backoff of
        :func:`~echokit_fast.backends.http.backoff`); the BackendError when there is no
        attempt left or its Retry-After is too long."""
        wait = http.backoff(busy, exc.wait) if busy < BUSY_ATTEMPTS else None
        if wait is None:
            raise tts_error(exc.detail, status=429) from None
        log.info("%s: busy (HTTP 429); retrying in %.2f s", self.where, wait)
        await asyncio.sleep(wait)

    async def _post_wav(
        self, *, attempts: int = 1, timeout: float | None = None, **request: Any
    ) -> bytes:
        """POST ``request``; the 200 answer's body (at most ``max_bytes``). ``timeout``: the
        seconds one attempt may take, its body included; a timed-out attempt is retried, up
        to ``attempts`` in all. An HTTP 429 is retried after :func:`~echokit_fast.backends.
        http.backoff` (its Retry-After), up to :data:`BUSY_ATTEMPTS` in all."""
        options = {} if timeout is None else {"timeout": timeout}
        attempt = busy = 1
        while True:
            try:
                return await asyncio.wait_for(self._fetch(request | options), timeout)
            except http.TooManyRequests as exc:
                await self._wait_busy(exc, busy)
                busy += 1
            except (TimeoutError, httpx.TimeoutException) as exc:
                if attempt >= attempts:
                    raise NOTICES.error(
                        f"{self.where}: {attempts} attempt(s) of {timeout} s timed out",
                        NOTICES.timeout,
                    ) from exc
                log.info("%s: attempt %d timed out; retrying", self.where, attempt)
                attempt += 1
            except httpx.HTTPError as exc:
                raise tts_error(f"{self.where}: {exc!r}", exc) from exc

    async def _fetch(self, request: dict[str, Any]) -> bytes:
        async with self.http.stream("POST", self.url, **request) as resp:
            await self._status(resp)
            return await http.read_body(resp, self.max_bytes, NOTICES, self.where)

    async def _speak_wav(self, body: bytes, sample_rate: int) -> AsyncIterator[Pcm]:
        pcm = wav_to_rate(body, sample_rate, f"{self.name} {self.url}")
        for chunk in _chunks(pcm, max(1, sample_rate // 2)):
            yield chunk
