"""The HTTP plumbing every remote backend shares: the client, the notices, the retry policy.

* :func:`client` -- an ``httpx.AsyncClient`` over aiohttp (:class:`AiohttpTransport`) with
  :data:`LIMITS` (sized for hundreds of devices) and the given timeouts. Create it inside
  the running event loop; ``aclose()`` it.
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

import functools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx

from echokit_fast.backends.base import BackendError

__all__ = [
    "ASR",
    "LIMITS",
    "LLM",
    "RETRY_STATUS",
    "TTS",
    "USER_AGENT",
    "AiohttpTransport",
    "Notices",
    "TooManyRequests",
    "backoff",
    "client",
    "error_text",
    "read_body",
    "retry_after",
    "retryable",
    "sdk_client",
]

#: Connections of each backend client, in all. httpx's default (100 connections, 20 kept alive)
#: is a browser-like client's: with a few hundred devices a TTS stream is held open while its
#: device plays the audio back, the pool runs dry, and every other device's ASR request queues for
#: a slot (seen as seconds of latency in benches/bench_load.py). aiohttp keeps every idle
#: connection until ``keepalive_expiry`` (5 s): there is no separate keep-alive cap.
LIMITS = httpx.Limits(max_connections=1000)

#: The User-Agent echokit_server sends (some providers' gateways expect a known client).
USER_AGENT = "curl/7.81.0"

#: Client errors that are worth retrying (besides every 5xx).
RETRY_STATUS = frozenset({408, 429})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport over an aiohttp ``ClientSession``: the clients keep httpx's API (its
    requests, responses, timeouts and exceptions), aiohttp carries the bytes.

    Why not httpx's own transport: httpcore's pool (1.0) walks every connection it holds on
    each request and release (a ``select`` per idle one), quadratic with a TTS stream held
    open per playing device, and its request path runs over anyio's checkpoints; aiohttp's
    connector keeps idle connections per host in a queue and parses responses in C
    (benches/bench_http.py: 0.22x the client CPU of httpx's own transport per ASR upload +
    TTS stream, 0.46x per openai SDK completion, 300 at once).
    Why not ``httpx_aiohttp`` (the adapter the openai SDK vendors): it maps
    ``aiohttp.ClientConnectionError`` (connection refused, a server that hangs up) to
    ``httpx.ConnectTimeout``, and the notices say "did not answer in time" for both; here
    each aiohttp failure becomes the httpx exception httpcore would raise (:func:`_mapped`).

    The session is made on the first request (inside the running loop) with
    ``limits.max_connections`` in all and idle ones closed after ``keepalive_expiry``.
    Request bodies are read whole first (every backend sends a bounded body: a WAV, JSON).
    ``hx`` is the httpx package whose requests, responses and exceptions it speaks:
    :func:`sdk_client` gives the openai SDK the same transport in ``httpx2``, its httpx."""

    hx: Any = httpx
    stream_class: Any = None  # set below: _AiohttpStream

    def __init__(self, limits: httpx.Limits = LIMITS) -> None:
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self.limits.keepalive_expiry or 0,
            )
            # httpx decodes the body (content-encoding) and follows redirects itself
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        headers = [
            (k, v) for k, v in request.headers.multi_items() if k.lower() != "transfer-encoding"
        ]
        timeout = request.extensions.get("timeout", {})
        with _mapped(self.hx, request):
            resp = await self._client().request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("Content-Type",),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if resp.reason:
            extensions["reason_phrase"] = resp.reason.encode("latin-1", "replace")
        return self.hx.Response(
            resp.status,
            headers=resp.raw_headers,
            stream=self.stream_class(resp, request, self.hx),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpStream(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads it; closing it gives the connection back
    (or drops it, when the body was not read to its end)."""

    def __init__(self, resp: aiohttp.ClientResponse, request: Any, hx: Any) -> None:
        self._resp, self._request, self._hx = resp, request, hx

    async def __aiter__(self) -> Any:
        with _mapped(self._hx, self._request):
            async for chunk in self._resp.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._resp.release()


AiohttpTransport.stream_class = _AiohttpStream


@contextmanager
def _mapped(hx: Any, request: Any) -> Iterator[None]:
    """aiohttp's exceptions as the ``hx`` (httpx or httpx2) ones httpcore raises for the same
    failure: a timeout connecting or reading, a refused or unresolvable host, a server that
    hangs up or breaks the HTTP framing (``RemoteProtocolError``, "cut off" for a stream), a
    reset."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise hx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise hx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise hx.ConnectError(str(exc), request=request) from exc
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientResponseError,
    ) as exc:
        raise hx.RemoteProtocolError(str(exc) or repr(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise hx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:  # ClientOSError: a reset, a broken pipe
        raise hx.ReadError(str(exc) or repr(exc), request=request) from exc


def client(
    timeout: float | httpx.Timeout | None, *, follow_redirects: bool = False
) -> httpx.AsyncClient:
    """A backend's HTTP client over aiohttp (:class:`AiohttpTransport`) with :data:`LIMITS`
    and ``timeout``."""
    return httpx.AsyncClient(
        timeout=timeout, transport=AiohttpTransport(), follow_redirects=follow_redirects
    )


@functools.cache
def _httpx2_transport() -> type[AiohttpTransport]:
    """:class:`AiohttpTransport` speaking ``httpx2`` (imported here: only the openai SDK's
    client needs it, and the SDK is imported on first use too)."""
    import httpx2

    class Stream(_AiohttpStream, httpx2.AsyncByteStream):
        pass

    class Transport(AiohttpTransport, httpx2.AsyncBaseTransport):
        hx = httpx2
        stream_class = Stream

    return Transport


def sdk_client(timeout: Any) -> Any:
    """The openai SDK's HTTP client (an ``httpx2.AsyncClient``) over aiohttp, as
    :func:`client`; redirects followed, as the SDK's own client does."""
    import httpx2

    return httpx2.AsyncClient(
        timeout=timeout, transport=_httpx2_transport()(), follow_redirects=True
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
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
