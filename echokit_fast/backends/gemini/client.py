"""The Gemini Live client: one WebSocket per device, a
:class:`~echokit_fast.backends.base.LiveConversation`.

:class:`GeminiLive` (one per application; ``conversation(device_id)`` is the conversation
factory) opens the sockets and closes them at shutdown. A device's socket is opened at its
first turn and kept across the device's reconnections (Gemini keeps the context), as the
reference does; ``reset()`` (a connection without ``reconnect``) and ``close()`` (the session is
dropped) close it. Opening is ``url?key=API_KEY`` with the header ``x-goog-api-key``, then the
setup message (:func:`.wire.setup`) and its ``setupComplete``, all within
``connect_timeout_s``.

A turn: ``activityStart``, the audio, ``activityEnd`` (automatic activity detection is off, so
the turn ends where the server's VAD says, or at the device's ``Submit``), or a typed text as
``text`` between the two activity marks. The answer is read until its ``turnComplete``, each
message within ``reply_timeout_s``: the user's transcript (:class:`~echokit_fast.backends.base.
HeardPiece`), then with audio answers Gemini's speech (24 kHz PCM resampled to 16 kHz) and its
transcript, with text answers the text parts (:class:`~echokit_fast.backends.base.Said`).
Transcripts are converted to Simplified Chinese (``tw2sp``) as the reference does.

A reader task per socket queues every event with the number of the answer it belongs to (the
count of ``turnComplete`` seen before it, plus one), so what is left of an answer that was not
read to its end (the device interrupted it) is skipped by the next one.

Failures are BackendErrors with a notice for the user: not reachable, a refused key (HTTP
401/403, or a Close whose reason names the key), a refused setup, no answer in time, the
socket closed mid-answer. A failed socket is dropped and the next turn opens a new one (the
reference keeps using a broken socket after a reconnection). ``goAway`` ends the answer with
:class:`~echokit_fast.backends.base.Goodbye`, and the next turn opens a new socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from echokit_fast import audio
from echokit_fast.backends import http
from echokit_fast.backends.base import BackendError, Goodbye, HeardPiece, LiveEvent, Said
from echokit_fast.backends.chinese import to_simplified
from echokit_fast.backends.gemini import GeminiConfig, wire

__all__ = ["CUT", "KEY_REFUSED", "NOTICES", "SETUP_FAILED", "GeminiConversation", "GeminiLive"]

log = logging.getLogger(__name__)

CUT = "Gemini's answer was cut off."
NOTICES = http.Notices("Gemini", "gemini")
SETUP_FAILED = "Gemini could not start the conversation."
KEY_REFUSED = "Gemini refused the API key."
#: the largest message accepted (a long stretch of speech in one base64 part)
MAX_MESSAGE = 16 * 2**20
#: the rate of the audio the device gets
SAMPLE_RATE = 16000


def _closed(exc: ConnectionClosed | None, ws: ClientConnection, notice: str) -> BackendError:
    """The error for a socket the server closed (``exc``, or None: the close seen on ``ws``):
    ``notice``, unless the reason names the API key."""
    if exc is not None:
        code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")
    else:
        code, reason = ws.close_code, ws.close_reason or ""
    detail = f"Gemini Live closed the connection (code {code}: {reason!r})"
    return NOTICES.error(detail, KEY_REFUSED if "key" in reason.lower() else notice)


class _Socket:
    """One open connection and the task that reads it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        #: (answer number, event), or (n, the error that ended the socket) last
        self.events: asyncio.Queue[tuple[int, wire.Event | BackendError]] = asyncio.Queue()
        #: answers asked for (activityEnd sent), and ``turnComplete``s received
        self.asked = 0
        self.completed = 0
        #: an activity is open (activityStart sent, no activityEnd yet)
        self.active = False
        #: the socket is not used for another turn (closed, failed, or going away)
        self.ending = False
        self.reader = asyncio.create_task(self._read(), name="echokit-gemini-read")

    async def _read(self) -> None:
        error: BackendError
        try:
            async for message in self.ws:
                try:
                    events = wire.parse(message)
                except ValueError as exc:
                    log.warning("Gemini Live: message skipped (%s): %.200r", exc, message)
                    continue
                for event in events:
                    self.events.put_nowait((self.completed + 1, event))
                    if isinstance(event, wire.TurnComplete):
                        self.completed += 1
                    elif isinstance(event, wire.GoAway):
                        log.info("Gemini Live: goAway (time left %s)", event.time_left or "?")
                        self.ending = True
            error = _closed(None, self.ws, CUT)
        except ConnectionClosed as exc:
            error = _closed(exc, self.ws, CUT)
        self.ending = True
        self.events.put_nowait((self.completed + 1, error))


class GeminiLive:
    """The application's Gemini Live client: per device a :class:`GeminiConversation`."""

    def __init__(self, cfg: GeminiConfig, *, text_answers: bool) -> None:
        self.cfg = cfg
        self.text_answers = text_answers
        first = cfg.sys_prompts[0].content if cfg.sys_prompts else None
        self.setup = wire.setup(cfg.model, first, text_answers=text_answers)
        self._open: set[_Socket] = set()
        self._closing: set[asyncio.Task[None]] = set()

    def conversation(self, device_id: str) -> GeminiConversation:
        return GeminiConversation(self, device_id)

    async def open(self) -> _Socket:
        """A new socket, set up (raises BackendError)."""
        cfg = self.cfg
        what = f"Gemini Live {cfg.url}"
        try:
            ws = await asyncio.wait_for(self._handshake(), cfg.connect_timeout_s)
        except BackendError:
            raise
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = (exc.response.body or b"")[:300].decode("utf-8", "replace")
            raise NOTICES.error(f"{what}: HTTP {status} {body}", NOTICES.status(status)) from exc
        except TimeoutError as exc:
            raise NOTICES.error(
                f"{what}: not set up within {cfg.connect_timeout_s} s", NOTICES.timeout
            ) from exc
        except (OSError, WebSocketException) as exc:
            raise NOTICES.error(f"{what}: {exc!r}", NOTICES.unreachable) from exc
        sock = _Socket(ws)
        self._open.add(sock)
        return sock

    async def _handshake(self) -> ClientConnection:
        cfg = self.cfg
        ws = await connect(
            f"{cfg.url}?key={quote(cfg.api_key, safe='')}",
            additional_headers={"x-goog-api-key": cfg.api_key},
            user_agent_header=None,
            compression=None,
            max_size=MAX_MESSAGE,
            open_timeout=None,
        )
        try:
            await ws.send(self.setup)
            try:
                reply = await ws.recv()
            except ConnectionClosed as exc:
                raise _closed(exc, ws, SETUP_FAILED) from exc
            try:
                events = wire.parse(reply)
            except ValueError:
                events = []
            if not any(isinstance(e, wire.SetupComplete) for e in events):
                raise NOTICES.error(f"Gemini Live setup answered {reply!r:.300}", SETUP_FAILED)
        except BaseException:
            self._close_later(ws)
            raise
        return ws

    def forget(self, sock: _Socket) -> None:
        """Stop reading ``sock`` and close it in the background."""
        sock.ending = True
        sock.reader.cancel()
        if sock in self._open:
            self._open.discard(sock)
            self._close_later(sock.ws)

    def _close_later(self, ws: ClientConnection) -> None:
        task = asyncio.ensure_future(ws.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every socket (shutdown)."""
        for sock in list(self._open):
            self.forget(sock)
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=5)


class GeminiConversation:
    """One device's Gemini Live conversation (see the module docstring)."""

    def __init__(self, owner: GeminiLive, device_id: str) -> None:
        self.owner = owner
        self.device_id = device_id
        self.text_answers = owner.text_answers
        self._sock: _Socket | None = None
        self._lock = asyncio.Lock()

    async def _active(self) -> _Socket:
        """The socket, opened when there is none usable, with an activity open."""
        async with self._lock:
            sock = self._sock
            if sock is None or (sock.ending and not sock.active):
                if sock is not None:
                    self._forget()
                self._sock = sock = await self.owner.open()
                log.info("device %s: Gemini Live connected", self.device_id)
            if not sock.active:
                await self._send(sock, wire.activity_start())
                sock.active = True
            return sock

    async def _send(self, sock: _Socket, message: str) -> None:
        try:
            await sock.ws.send(message)
        except (ConnectionClosed, OSError) as exc:
            self._forget()
            closed = exc if isinstance(exc, ConnectionClosed) else None
            raise _closed(closed, sock.ws, NOTICES.unreachable) from exc

    async def start(self) -> None:
        await self._active()

    async def hear(self, pcm16: bytes) -> None:
        sock = await self._active()
        await self._send(sock, wire.audio(pcm16))

    async def finish(self) -> None:
        sock = await self._active()
        await self._send(sock, wire.activity_end())
        sock.active = False
        sock.asked += 1

    async def write(self, text: str) -> None:
        sock = await self._active()
        await self._send(sock, wire.text(text))
        await self._send(sock, wire.activity_end())
        sock.active = False
        sock.asked += 1

    async def answer(self) -> AsyncIterator[LiveEvent]:
        sock = self._sock
        if sock is None or not sock.asked:
            raise RuntimeError("answer() before a turn was sent")
        number, limit = sock.asked, self.owner.cfg.reply_timeout_s
        resampler: audio.Resampler | None = None
        while True:
            try:
                tag, event = await asyncio.wait_for(sock.events.get(), limit)
            except TimeoutError:
                self._forget()  # its answers can no longer be told apart: the next turn reconnects
                raise NOTICES.error(
                    f"Gemini Live: no answer message within {limit} s", NOTICES.timeout
                ) from None
            if isinstance(event, BackendError):
                self._forget()
                raise event
            if isinstance(event, wire.GoAway):
                yield Goodbye()
                return
            if tag < number:
                continue  # the rest of an answer that was not read to its end
            if isinstance(event, wire.TurnComplete):
                if resampler is not None and len(tail := resampler.flush()):
                    yield tail
                return
            if isinstance(event, wire.InputText):
                yield HeardPiece(to_simplified(event.text))
            elif self.text_answers:
                if isinstance(event, wire.ModelText):
                    yield Said(event.text)
            elif isinstance(event, wire.OutputText):
                yield Said(to_simplified(event.text))
            elif isinstance(event, wire.ModelAudio) and event.pcm16:
                if resampler is None or resampler.from_rate != event.rate:
                    if resampler is not None and len(tail := resampler.flush()):
                        yield tail
                    resampler = audio.Resampler(event.rate, SAMPLE_RATE)
                pcm = resampler.process(audio.pcm16_to_float(event.pcm16))
                if len(pcm):
                    yield pcm

    def _forget(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self.owner.forget(sock)

    def reset(self) -> None:
        self._forget()

    def close(self) -> None:
        self._forget()
