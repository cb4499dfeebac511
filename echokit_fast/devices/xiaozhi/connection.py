"""One xiaozhi WebSocket: the engine's :class:`DeviceConnection` over the xiaozhi wire
(docs/xiaozhi.md).

:class:`Connection` turns what the conversation engine says into the firmware's messages
(:mod:`.protocol`): the final transcript is ``stt`` and, at once, ``tts start`` (the board
stops its microphone and flushes its audio queue); a segment is ``tts sentence_start{text}``
(the first one of the turn preceded by ``llm{emotion}``, :mod:`.emotion`) then its audio as
60 ms Opus packets at the announced rate, paced on the board's playback clock
(:mod:`.speech`); the end of the turn is ``tts stop`` once the board has played the last
packet (nothing when nothing was said: an empty transcript). A notice is an ``alert`` (the
engine also speaks it as a segment), and so is a notification; text to show is a
``sentence_start`` without audio; a question to choose from is shown and answered with its
last item (the firmware cannot pick); interim transcripts and the end of speech send nothing
(the firmware has no message for them). The end of a live model's conversation closes the
socket after the turn, the firmware's way of ending one.

:func:`serve` runs the connection: the device's ``hello`` and ours (within the firmware's
10 s, before the backends are waited for), then the device's frames into the engine:
binary frames are Opus packets (decoded at 16 kHz), text frames JSON messages: ``listen
start`` (the mode: ``auto`` and ``realtime`` let the server's turn detector end the
utterance and keep listening, :attr:`DeviceConnection.continuous_listening`; ``manual``
waits for ``listen stop``), ``listen stop`` (submit), ``listen detect`` (the wake word:
logged), ``abort`` (the turn is cancelled, ``tts stop`` sent at once), ``mcp`` (the device's
MCP server answering, :mod:`.mcp`). Audio before the first ``listen start`` (the wake word
the firmware sends first) is not part of any utterance.

The connection ends when the device drops it, when a newer one for the same ``Device-Id``
pre-empts it, at ``[xiaozhi] idle_close_s`` without a turn (a Close 1000: the board goes
idle and listens for its wake word), or when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from echokit_fast.audio import OpusDecoder, float_to_pcm16
from echokit_fast.config import LimitsConfig, XiaozhiConfig
from echokit_fast.conversation.device import SAMPLE_RATE, DeviceGone
from echokit_fast.conversation.session import Session, SessionManager
from echokit_fast.conversation.splitter import cut_text
from echokit_fast.conversation.trace import printable
from echokit_fast.devices import socket
from echokit_fast.devices.xiaozhi import protocol
from echokit_fast.devices.xiaozhi.emotion import emotion_of, without_emoji
from echokit_fast.devices.xiaozhi.mcp import DeviceTools
from echokit_fast.devices.xiaozhi.speech import Pacer, Speech

__all__ = ["MODES", "Connection", "serve"]

log = logging.getLogger("echokit_fast.device")

#: the listening modes of ``listen start``
MODES = ("auto", "manual", "realtime")
#: how long the device's hello may take (the firmware waits as long for ours)
HELLO_TIMEOUT = 10.0
#: a text message longer than this (characters) is ignored
MAX_MESSAGE_CHARS = 256 * 1024
#: encode in a worker thread for chunks of at least this many samples (240 ms)
THREAD_ENCODE_MIN = 3840
#: how a notice is shown
NOTICE_STATUS, NOTICE_EMOTION = "Error", "sad"
#: how a notification is shown
NOTIFY_STATUS, NOTIFY_EMOTION = "Notice", "neutral"
#: the Close reason for a connection refused at ``max_sessions``


class Connection:
    """One xiaozhi WebSocket; a :class:`~echokit_fast.conversation.device.DeviceConnection`."""

    #: the device protocol, as the status page names it
    front_end = "xiaozhi"

    def __init__(
        self,
        ws: Any,
        *,
        device_id: str,
        version: int,
        sample_rate: int,
        max_text_bytes: int,
        send_timeout: float,
    ) -> None:
        self.ws = ws
        self.device_id = device_id
        self.log_id = printable(device_id)
        self.version = version  # the binary protocol
        self.session_id = str(uuid.uuid4())
        self.sample_rate = sample_rate  # of the downlink
        self.max_text_bytes = max_text_bytes
        self.send_timeout = send_timeout
        self.keep_history = False  # each connection is a conversation of its own
        self.mode: str | None = None  # of the last listen start
        # until the first listen start: no utterance, the audio is dropped
        self.server_vad = True
        self.continuous_listening = False
        self.barge_in = False
        self.speaking = False  # tts start sent, tts stop not yet
        #: the board's own MCP server (when its hello says it has one)
        self.tools: DeviceTools | None = None
        self.done = asyncio.Event()  # the handler should end: socket gone or pre-empted
        self.alive = True
        self.preempted = False
        self.last_activity = asyncio.get_running_loop().time()
        self._ended = asyncio.Event()
        self._decoder = OpusDecoder(SAMPLE_RATE)
        self._pacer = Pacer()
        self._speech: Speech | None = None
        self._face = False  # the turn's llm emotion was sent
        self._bye = False  # close after this turn

    # -- the wire ----------------------------------------------------------------------

    async def send(self, frame: str | bytes) -> None:
        if not self.alive:
            raise DeviceGone()
        try:
            await socket.send(self.ws, frame, timeout=self.send_timeout, log_id=self.log_id)
        except DeviceGone:
            self.alive = False
            self.done.set()
            raise

    def mic(self, frame: bytes) -> bytes:
        """The PCM16 of one microphone frame (b"" for a frame that is not a good packet)."""
        packet = protocol.unpack_audio(frame, self.version)
        if packet is None:
            return b""
        try:
            return float_to_pcm16(self._decoder.decode(packet))
        except ValueError:
            return b""

    def listen(self, mode: str) -> None:
        """A ``listen start`` in ``mode``."""
        self.mode = mode
        self.server_vad = self.continuous_listening = mode != "manual"
        self.barge_in = mode == "realtime"  # the board's echo cancellation keeps it on

    def touch(self) -> None:
        """Something happened: the idle deadline starts again."""
        self.last_activity = asyncio.get_running_loop().time()

    def _text(self, text: str) -> str:
        return cut_text(without_emoji(text), self.max_text_bytes)

    async def _start_speaking(self) -> None:
        if self.speaking:
            return
        self.speaking = True
        self._speech = Speech(self.sample_rate)  # a fresh encoder: the board resets its decoder
        self._face = False
        self._pacer.restart()
        await self.send(protocol.tts("start", self.session_id))

    async def stop_speaking(self) -> None:
        """``tts stop`` if the board is speaking (the turn ended or was cut short)."""
        if not self.speaking:
            return
        self.speaking = False
        self._speech = None
        await self.send(protocol.tts("stop", self.session_id))

    async def _send_audio(self, packets: list[bytes]) -> int:
        for packet in packets:
            await self._pacer.slot()
            await self.send(protocol.pack_audio(packet, self.version))
        return len(packets)

    async def answer_cut(self) -> None:
        await self.stop_speaking()

    def disconnect(self) -> None:
        self.preempted = True
        self.done.set()

    async def closed(self) -> None:
        await self._ended.wait()

    # -- DeviceOutput ------------------------------------------------------------------

    async def end_of_speech(self) -> None:
        pass  # the firmware has no message for it: the stt tells

    async def transcript(self, text: str, *, final: bool) -> None:
        if not final:
            return  # a chat line per message: only the final one is shown
        self.touch()
        await self.send(protocol.stt(self._text(text), self.session_id))
        await self._start_speaking()

    async def segment_start(self, text: str) -> None:
        await self._start_speaking()
        if not self._face:
            self._face = True
            emoji, emotion = emotion_of(text)
            await self.send(protocol.llm(emotion, emoji, self.session_id))
        shown = self._text(text)
        if shown:
            await self.send(protocol.tts("sentence_start", self.session_id, shown))

    async def audio(self, pcm: npt.NDArray[np.float32]) -> int:
        await self._start_speaking()
        speech = self._speech
        assert speech is not None
        if len(pcm) >= THREAD_ENCODE_MIN:
            packets = await asyncio.to_thread(speech.push, pcm)
        else:
            packets = speech.push(pcm)
        return await self._send_audio(packets)

    async def segment_end(self) -> int:
        speech = self._speech
        return await self._send_audio(speech.end_segment()) if speech is not None else 0

    async def display(self, text: str) -> None:
        shown = self._text(text)
        if shown:  # an assistant chat line, no audio
            await self.send(protocol.tts("sentence_start", self.session_id, shown))

    async def notify(self, text: str) -> None:
        await self.send(protocol.alert(NOTIFY_STATUS, self._text(text), NOTIFY_EMOTION))

    async def choose(self, message: str, items: list[str]) -> int:
        """The firmware cannot pick: the question is shown, and answered with its last item
        (the claude layout's Cancel)."""
        await self.display(" / ".join([message, *items]))
        return len(items) - 1

    async def response_end(self) -> None:
        if self.speaking:
            await self._pacer.drained()
            await self.stop_speaking()
            self.touch()
        if self._bye:
            self.done.set()

    async def notice(self, text: str) -> None:
        await self.send(protocol.alert(NOTICE_STATUS, self._text(text), NOTICE_EMOTION))

    async def goodbye(self) -> None:
        self._bye = True


async def serve(
    manager: SessionManager,
    ws: Any,
    *,
    device_id: str,
    version: int,
    cfg: XiaozhiConfig,
    limits: LimitsConfig,
    ready: Callable[[], Awaitable[None]],
) -> None:
    """Run an accepted xiaozhi WebSocket (its headers checked) until it ends; ``ready``
    waits for the server's engines (after the hello exchange)."""
    log_id = printable(device_id)
    send_timeout = limits.device_send_timeout_s
    try:
        hello = await asyncio.wait_for(_device_hello(ws), HELLO_TIMEOUT)
    except TimeoutError:
        log.warning("device %s: no hello within %g s: closed", log_id, HELLO_TIMEOUT)
        await socket.close(ws, 1008, "expected a hello", timeout=send_timeout)
        return
    if hello is None:
        return
    params = hello.get("audio_params")
    if isinstance(params, dict) and params.get("format", "opus") != "opus":
        log.warning("device %s: audio format %r refused", log_id, params.get("format"))
        await socket.close(ws, 1003, "audio_params.format must be opus", timeout=send_timeout)
        return
    conn = Connection(
        ws,
        device_id=device_id,
        version=version,
        sample_rate=cfg.downlink_sample_rate,
        max_text_bytes=limits.max_text_bytes,
        send_timeout=send_timeout,
    )
    features = hello.get("features")
    if isinstance(features, dict) and features.get("mcp") is True:

        async def send_mcp(payload: dict[str, Any]) -> None:
            await conn.send(protocol.mcp(payload, conn.session_id))

        conn.tools = DeviceTools(send_mcp, timeout=cfg.mcp_call_timeout_s, log_id=log_id)
    reader: asyncio.Task[None] | None = None
    listing: asyncio.Task[None] | None = None
    session: Session | None = None
    try:
        await conn.send(
            protocol.hello(
                version=version, session_id=conn.session_id, sample_rate=conn.sample_rate
            )
        )
        await ready()
        session = await socket.open_session(
            manager, ws, device_id, log_id=log_id, timeout=send_timeout
        )
        if session is None:
            conn.alive = False
            return
        if not await session.attach(conn):
            return
        reader = asyncio.create_task(_read(session, conn), name=f"xiaozhi-read-{device_id}")
        if conn.tools is not None:
            listing = asyncio.create_task(conn.tools.start(), name=f"xiaozhi-mcp-{device_id}")
        await _until_done(session, conn, cfg.idle_close_s)
    except DeviceGone:
        pass
    except Exception:  # e.g. the conversation factory failed: this connection only
        log.exception("device %s: connection failed", log_id)
    finally:
        await socket.end(conn, ws, session, [reader, listing], timeout=send_timeout)


async def _device_hello(ws: Any) -> dict[str, Any] | None:
    """The device's hello (what comes before it is dropped); None if the socket closed."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        text = msg.get("text")
        if text is not None and len(text) <= MAX_MESSAGE_CHARS:
            hello = protocol.parse(text)
            if hello is not None and hello["type"] == "hello":
                return hello


async def _until_done(session: Session, conn: Connection, idle_s: float) -> None:
    """Until the connection ends, or nothing happened for ``idle_s`` (0: never) outside a
    turn."""
    loop = asyncio.get_running_loop()
    while not conn.done.is_set():
        timeout = None
        if idle_s:
            timeout = conn.last_activity + idle_s - loop.time()
            if timeout <= 0:
                if not session.responding:
                    log.info(
                        "device %s: no turn for %g s (idle_close_s): closed", conn.log_id, idle_s
                    )
                    return
                conn.touch()
                continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(conn.done.wait(), timeout)


async def _read(session: Session, conn: Connection) -> None:
    async def audio(data: bytes) -> None:
        pcm = conn.mic(data)
        if pcm:
            await session.audio(conn, pcm)

    await socket.read_frames(conn, audio, lambda text: _message(session, conn, text))


async def _message(session: Session, conn: Connection, text: str) -> None:
    """One JSON text message (docs/xiaozhi.md#messages) into the engine."""
    msg = protocol.parse(text) if len(text) <= MAX_MESSAGE_CHARS else None
    if msg is None:
        log.debug("device %s: ignoring text frame %.80r", conn.log_id, text)
        return
    kind, state = msg["type"], msg.get("state")
    conn.touch()
    if kind == "listen" and state == "start":
        mode = msg.get("mode")
        conn.listen(mode if mode in MODES else "auto")
        await session.start_listening(conn)
    elif kind == "listen" and state == "stop":
        await session.submit(conn)
    elif kind == "listen" and state == "detect":
        log.info("device %s: wake word %.80r", conn.log_id, msg.get("text"))
    elif kind == "mcp":
        if conn.tools is not None:
            conn.tools.receive(msg.get("payload"))
    elif kind == "abort":
        if session.conn is conn:
            await session.cancel_turn()
            await conn.stop_speaking()
            if conn.continuous_listening:  # realtime: the board streams on, no listen start
                await session.start_listening(conn)
    else:
        log.debug("device %s: ignoring a %.40r message", conn.log_id, kind)
    if conn.speaking and not session.responding:  # the turn was cancelled
        await conn.stop_speaking()
