"""The HTTP plumbing every remote backend shares: the client, the notices, the retry policy.

* :func:`client` -- an ``httpx.AsyncClient`` with :data:`LIMITS` (sized for hundreds of
  devices, over :data:`POOLS` connection pools: :class:`ShardedTransport`) and the given
  timeouts. Create it inside the running event loop; ``aclose()`` it.
* :class:`Notices` -- what a failed request tells the user, in the words of one backend
  ("The speech recognizer ..."), for an HTTP status or a transport exception; :meth:`Notices.
  error` wraps a notice into the :class:`~echokit_fast.backends.base.BackendError` the
  conversation speaks.
* :func:`retryable` -- whether a status is worth another attempt (5xx, 408, 429), for the
  clients that retry (the OpenAI-compatible ASR); :func:`backoff` -- how long to wait before
  the next attempt (the server's ``Retry-After``, else jittered exponential backoff), what
  every retrying client sleeps (the ASR, the TTS speakers' 429s).
* :func:`read_body` -- a streamed response's body, at most ``cap`` bytes (``[limits]
  max_json_bytes`` / ``max_tts_bytes``): a body is never read whole before it is measured;
  :func:`error_text` -- the start of an error body, for the log.
* :data:`ASR`, :data:`LLM`, :data:`TTS` -- the notices of each stage, used by its backends and by
  the turn's own deadlines (``conversation/``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from echokit_fast.backends.base import BackendError

__all__ = [
    "ASR",
    "LIMITS",
    "LLM",
    "POOLS",
    "RETRY_STATUS",
    "TTS",
    "USER_AGENT",
    "Notices",
    "ShardedTransport",
    "TooManyRequests",
    "backoff",
    "client",
    "error_text",
    "read_body",
    "retry_after",
    "retryable",
]

#: Connections of each backend client, in all. httpx's default (100 connections, 20 kept alive)
#: is a browser-like client's: with a few hundred devices a TTS stream is held open while its
#: device plays the audio back, the pool runs dry, and every other device's ASR request queues for
#: a slot (seen as seconds of latency in benches/bench_load.py). The openai SDK's own limits.
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
#: how many connection pools a client spreads its requests over (:class:`ShardedTransport`)
POOLS = 8

#: The User-Agent echokit_server sends (some providers' gateways expect a known client).
USER_AGENT = "curl/7.81.0"

#: Client errors that are worth retrying (besides every 5xx).
RETRY_STATUS = frozenset({408, 429})


class ShardedTransport(httpx.AsyncBaseTransport):
    """httpx's transport over ``pools`` connection pools, each request on the least busy one.

    Written by hand because httpcore's pool (1.0) does not scale to hundreds of connections:
    every request and every release walks all the connections it holds, asking each idle one
    whether its socket is readable (a ``select`` call) and counting the idle ones again inside
    that walk. With a TTS stream held open per playing device that is milliseconds of the event
    loop per request at 500 devices, quadratic in the pool's size; spread over :data:`POOLS`
    pools each walk is that many times shorter. The least busy pool (requests in flight, the
    first on a tie) takes each request: a light load stays on the first pool and reuses its
    connections, a heavy one is spread evenly. ``limits`` are the client's in all, divided
    among the pools."""

    def __init__(self, pools: int = POOLS, limits: httpx.Limits = LIMITS) -> None:
        if pools < 1:
            raise ValueError(f"pools must be >= 1, got {pools}")

        def share(n: int | None) -> int | None:
            return None if n is None else max(1, -(-n // pools))

        each = httpx.Limits(
            max_connections=share(limits.max_connections),
            max_keepalive_connections=share(limits.max_keepalive_connections),
            keepalive_expiry=limits.keepalive_expiry,
        )
        self.pools = [httpx.AsyncHTTPTransport(limits=each) for _ in range(pools)]
        #: requests in flight on each pool: sent, and their response not yet closed
        self.busy = [0] * pools

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        i = min(range(len(self.pools)), key=self.busy.__getitem__)
        self.busy[i] += 1
        try:
            response = await self.pools[i].handle_async_request(request)
        except BaseException:
            self.busy[i] -= 1
            raise
        response.stream = _Released(response.stream, self.busy, i)
        return response

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()


class _Released(httpx.AsyncByteStream):
    """A response's stream that counts its request out of ``busy[i]`` when it is closed."""

    def __init__(self, stream: Any, busy: list[int], i: int) -> None:
        self._stream, self._busy, self._i = stream, busy, i
        self._open = True

    async def __aiter__(self) -> Any:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if self._open:
                self._open = False
                self._busy[self._i] -= 1


def client(
    timeout: float | httpx.Timeout | None, *, follow_redirects: bool = False
) -> httpx.AsyncClient:
    """A backend's HTTP client with :data:`LIMITS` over :data:`POOLS` pools and ``timeout``."""
    return httpx.AsyncClient(
        timeout=timeout, transport=ShardedTransport(), follow_redirects=follow_redirects
    )


def retryable(status: int) -> bool:
    """A 5xx, 408 or 429: another attempt may succeed."""
    return status >= 500 or status in RETRY_STATUS


#: the first backoff step without Retry-After; each retry doubles it (full jitter: a random
#: wait up to the step, so clients refused together do not come back together)
BACKOFF_BASE_S = 0.25
#: the longest wait before a retry: a server asking for more (Retry-After) is not retried,
#: the user waiting on the turn would rather hear that it is busy
MAX_RETRY_WAIT_S = 5.0


def retry_after(headers: httpx.Headers) -> float | None:
    """The seconds ``Retry-After`` asks for (a number or an HTTP date); None without one."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def backoff(
    attempt: int, server_wait: float | None, *, base: float = BACKOFF_BASE_S
) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): the server's
    `server_wait` (its ``Retry-After``) plus up to 10 % jitter, else a random wait up to
    ``base * 2 ** (attempt - 1)``, at most :data:`MAX_RETRY_WAIT_S`. None (do not retry)
    when the server asks for longer than that."""
    if server_wait is not None:
        if server_wait > MAX_RETRY_WAIT_S:
            return None
        return server_wait * (1 + random.uniform(0, 0.1))
    return random.uniform(0, min(MAX_RETRY_WAIT_S, base * 2 ** (attempt - 1)))


class TooManyRequests(Exception):
    """An HTTP 429 answer: ``detail`` for the log, ``wait`` its Retry-After (None: none)."""

    def __init__(self, detail: str, wait: float | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.wait = wait


@dataclass(frozen=True)
class Notices:
    """The user-facing sentences of one backend. ``subject`` starts each sentence ("The
    speech synthesizer"); ``cut`` is said when a response broke off (None: such a failure is
    "not reachable"); ``busy`` gives HTTP 429 its own sentence."""

    subject: str
    backend: str
    cut: str | None = None
    busy: bool = False

    @property
    def timeout(self) -> str:
        return f"{self.subject} did not answer in time."

    @property
    def unreachable(self) -> str:
        return f"{self.subject} is not reachable."

    @property
    def bad_answer(self) -> str:
        return f"{self.subject} sent a bad answer."

    @property
    def too_large(self) -> str:
        return f"{self.subject} sent an answer that is too large."

    def failed(self, status: int) -> str:
        return f"{self.subject} failed (HTTP {status})."

    def status(self, status: int) -> str:
        """The notice for a non-2xx answer: refused key, busy, failed (5xx) or rejected."""
        if status in (401, 403):
            return f"{self.subject} refused the API key (HTTP {status})."
        if self.busy and status == 429:
            return f"{self.subject} is busy (HTTP 429). Please try again shortly."
        if status >= 500:
            return self.failed(status)
        return f"{self.subject} rejected the request (HTTP {status})."

    def exception(self, exc: BaseException) -> str:
        """The notice for a transport failure: timeout, cut off, or not reachable."""
        if isinstance(exc, httpx.TimeoutException):
            return self.timeout
        if self.cut is not None and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self.cut
        return self.unreachable

    def error(self, detail: str, notice: str) -> BackendError:
        """``BackendError(detail)`` carrying ``notice`` for the user."""
        return BackendError(detail, notice=notice, backend=self.backend)


ASR = Notices("The speech recognizer", "asr")
LLM = Notices(
    "The language model", "llm", cut="The language model's answer was cut off.", busy=True
)
TTS = Notices("The speech synthesizer", "tts", cut="The speech synthesizer's audio was cut off.")


async def read_body(resp: Any, cap: int, notices: Notices, where: str) -> bytes:
    """The (decoded) body of the streamed response ``resp`` (an httpx one, or the openai SDK's),
    read while it stays within ``cap`` bytes; past it ``notices.too_large`` (the connection is
    dropped when the caller leaves the stream)."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise notices.error(f"{where}: a body of {declared} bytes (cap {cap})", notices.too_large)
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > cap:
            raise notices.error(f"{where}: a body over {cap} bytes", notices.too_large)
    return bytes(body)


#: bytes of a prompt a config fetches (``prompts_url``, a ``{{url}}`` include)
PROMPT_MAX_BYTES = 1 << 20


async def get_capped(client: httpx.AsyncClient, url: str, cap: int) -> tuple[int, bytes]:
    """GET ``url``: its status and body, read while within ``cap`` bytes (ValueError past it,
    the rest never read)."""
    async with client.stream("GET", url) as resp:
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise ValueError(f"a body over {cap} bytes")
        return resp.status_code, bytes(body)


async def error_text(resp: Any, limit: int = 300) -> str:
    """The first ``limit`` bytes of a streamed error body, decoded (the rest is not read)."""
    head = bytearray()
    async for chunk in resp.aiter_bytes():
        head += chunk
        if len(head) >= limit:
            break
    return head[:limit].decode("utf-8", "replace")
