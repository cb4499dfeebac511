"""One EchoKit chat WebSocket: the engine's :class:`DeviceConnection` over the EchoKit wire.

:class:`Connection` turns what the conversation engine says into rmp-serde frames
(:mod:`.output`): end of speech ``EndVad``, transcripts ``ASR{text}`` (interim and final alike),
a segment ``StartAudio{text}`` .. audio frames .. ``EndAudio``, ``EndResponse``, a notice
``DisplayText{text}`` (the firmware cannot decode it, docs/protocol.md#what-the-firmware-does; the
engine also shows it as a segment), the end of a live model's conversation ``Action{"ByeBye"}``,
text shown without speech ``DisplayText{text}``, a notification ``Action{action}``, a question
``Choices{message, items}`` answered by the device's ``Select{index}`` (the firmware neither
decodes ``Choices`` nor sends ``Select``). :func:`serve` runs the connection: the hello (a fresh
connection only), then the device's frames into the engine: binary frames are microphone PCM16
(an odd trailing byte is carried to the next frame, docs/protocol.md#microphone-audio), text
frames are JSON commands (docs/protocol.md#client-commands): ``StartChat``, ``Submit``,
``Text{input}``, ``Select{index}`` (the answer to the question asked; ignored when none is);
``StartRecord`` and anything that is not a command are ignored. The flags map onto the
engine's: ``reconnect`` keeps the history, ``stream_asr`` lets the server end the utterance.

Pre-empted by a newer connection for the same device, the socket gets one ``EndResponse`` and
is closed; nothing is ever written to a socket that is gone. A new device id while every one of
``[limits] max_sessions`` sessions has a connection is refused: a Close ``1013`` (try again
later) whose reason says so. A text frame longer than any command whose ``input`` fits
``[limits] max_text_bytes`` could be (:func:`text_frame_limit`) is not parsed: it is refused as
an over-long ``Text`` is (the spoken notice). The same cap bounds the text of every event sent
(``ASR``, ``StartAudio``, ``DisplayText``, ``Action``, ``Choices``: cut at a word boundary).

A device that stops reading: the server's WebSocket ``send`` waits while the socket's write
buffer is full (:mod:`echokit_fast.server.websocket`), and the TTS waits behind the bounded
queues of the reply pipeline, so nothing piles up in the process. A frame that still waits
after ``[limits] device_send_timeout_s`` ends the connection: one WARNING naming the device,
the socket dropped at once (a Close cannot be written to it), the turn ended as by any
disconnect; the session keeps its history for a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from echokit_fast.conversation.device import DeviceGone
from echokit_fast.conversation.session import Session, SessionManager
from echokit_fast.conversation.trace import printable
from echokit_fast.devices import socket
from echokit_fast.devices.echokit.flags import Flags
from echokit_fast.devices.echokit.mic import EvenBytes
from echokit_fast.devices.echokit.output import (
    BYE_BYE,
    END_AUDIO,
    END_RESPONSE,
    END_VAD,
    AudioOut,
    action,
    asr,
    choices,
    display_text,
    hello_frames,
    start_audio,
)
from echokit_fast.devices.echokit.protocol import parse_client_command

__all__ = ["Connection", "serve"]

log = logging.getLogger("echokit_fast.device")

#: encode Opus in a worker thread for chunks of at least this many samples (2 frames)
THREAD_ENCODE_MIN = 3840
#: time limit for the EndResponse written to a pre-empted socket
PREEMPT_SEND_TIMEOUT = 2.0
#: the Close reason for a connection refused at ``max_sessions``
#: room for a command's JSON around its ``input`` string
COMMAND_ENVELOPE = 1024


def text_frame_limit(max_text_bytes: int) -> int:
    """The longest text frame (characters) a ``Text`` command with an ``input`` of at most
    ``max_text_bytes`` UTF-8 bytes can be: each byte written as a ``\\u00XX`` escape (6)."""
    return 6 * max_text_bytes + COMMAND_ENVELOPE


class Connection:
    """One device WebSocket: flags, sending, the odd-byte carry of the microphone stream;
    a :class:`~echokit_fast.conversation.device.DeviceConnection`."""

    #: the device protocol, as the status page names it
    front_end = "echokit"

    def __init__(
        self, ws: Any, flags: Flags, device_id: str, *, max_text_bytes: int, send_timeout: float
    ) -> None:
        self.ws = ws
        self.flags = flags
        self.device_id = device_id
        self.log_id = printable(device_id)
        self.max_text_bytes = max_text_bytes  # of the text of each event sent
        self.send_timeout = send_timeout
        self.keep_history = flags.reconnect
        self.server_vad = flags.stream_asr
        self.continuous_listening = False  # StartChat starts each utterance
        self.barge_in = False  # the firmware barges in with StartChat
        self.tools = None  # the firmware has none of its own
        self.done = asyncio.Event()  # the handler should end: socket gone or pre-empted
        self.alive = True
        self.preempted = False  # disconnect() was called: EndResponse, then close
        self._ended = asyncio.Event()  # serve() is done with this connection
        self._pcm = EvenBytes()
        self._out = self._new_out()
        self._choice: asyncio.Future[int] | None = None  # the question waiting for Select

    def _new_out(self) -> AudioOut:
        return AudioOut(opus=self.flags.opus, vowel=self.flags.vowel)

    async def send(self, frame: bytes) -> None:
        if not self.alive:
            raise DeviceGone()
        try:
            await socket.send(self.ws, frame, timeout=self.send_timeout, log_id=self.log_id)
        except DeviceGone:
            self._gone()
            raise

    def _gone(self) -> None:
        self.alive = False
        self.done.set()

    async def _send_all(self, frames: list[bytes]) -> int:
        for frame in frames:
            await self.send(frame)
        return len(frames)

    async def answer_cut(self) -> None:
        pass  # never called: no barge_in

    def disconnect(self) -> None:
        self.preempted = True
        self.done.set()

    async def closed(self) -> None:
        await self._ended.wait()

    def selected(self, index: int) -> None:
        """The device's ``Select{index}``: the answer to the question asked, if any."""
        choice, self._choice = self._choice, None
        if choice is not None and not choice.done():
            choice.set_result(index)

    def align(self, data: bytes) -> bytes:
        """PCM16 bytes with an odd trailing byte carried into the next frame
        (docs/protocol.md#microphone-audio)."""
        return self._pcm.align(data)

    # -- DeviceOutput ------------------------------------------------------------------

    async def end_of_speech(self) -> None:
        await self.send(END_VAD)

    async def transcript(self, text: str, *, final: bool) -> None:
        await self.send(asr(text, self.max_text_bytes))

    async def segment_start(self, text: str) -> None:
        await self.send(start_audio(text, self.max_text_bytes))
        # a fresh encoder per segment (an encode still running in a worker thread for a
        # cancelled turn keeps the old one)
        self._out = self._new_out()

    async def audio(self, pcm: npt.NDArray[np.float32]) -> int:
        out = self._out
        if out.opus and len(pcm) >= THREAD_ENCODE_MIN:
            frames = await asyncio.to_thread(out.push, pcm)
        else:
            frames = out.push(pcm)
        return await self._send_all(frames)

    async def segment_end(self) -> int:
        n = await self._send_all(self._out.end_segment())
        await self.send(END_AUDIO)
        return n

    async def display(self, text: str) -> None:
        await self.send(display_text(text, self.max_text_bytes))

    async def notify(self, text: str) -> None:
        await self.send(action(text, self.max_text_bytes))

    async def choose(self, message: str, items: list[str]) -> int:
        choice = self._choice = asyncio.get_running_loop().create_future()
        try:
            await self.send(choices(message, items, self.max_text_bytes))
            return await choice
        finally:
            if self._choice is choice:
                self._choice = None

    async def response_end(self) -> None:
        await self.send(END_RESPONSE)

    async def notice(self, text: str) -> None:
        await self.display(text)

    async def goodbye(self) -> None:
        await self.send(BYE_BYE)


async def serve(
    manager: SessionManager,
    ws: Any,
    device_id: str,
    flags: Flags,
    *,
    hello: bytes = b"",
    send_timeout: float,
) -> None:
    """Run an accepted device WebSocket until it closes or is pre-empted; ``hello`` (the
    hello file's bytes, b"" for none) is sent first on a fresh (not ``reconnect``) one;
    ``send_timeout``: ``[limits] device_send_timeout_s``."""
    log_id = printable(device_id)
    session = await socket.open_session(manager, ws, device_id, log_id=log_id, timeout=send_timeout)
    if session is None:
        return
    conn = Connection(
        ws,
        flags,
        device_id,
        max_text_bytes=manager.settings.max_text_bytes,
        send_timeout=send_timeout,
    )
    reader: asyncio.Task[None] | None = None
    try:
        if not await session.attach(conn):
            return
        if hello and not flags.reconnect:
            for frame in hello_frames(hello):
                if conn.done.is_set():
                    break
                await conn.send(frame)
        if not conn.done.is_set():
            reader = asyncio.create_task(
                _read(session, conn), name=f"echokit-device-read-{device_id}"
            )
            await conn.done.wait()
    except DeviceGone:
        pass
    except Exception:  # e.g. the conversation factory failed: this connection only
        log.exception("device %s: connection failed", log_id)
    finally:

        async def detached() -> None:  # a device taken over hears its answer end first
            if conn.preempted and conn.alive:
                with contextlib.suppress(DeviceGone, asyncio.TimeoutError):
                    await asyncio.wait_for(conn.response_end(), PREEMPT_SEND_TIMEOUT)

        await socket.end(conn, ws, session, [reader], timeout=send_timeout, detached=detached)


async def _read(session: Session, conn: Connection) -> None:
    async def audio(data: bytes) -> None:
        await session.audio(conn, conn.align(data))

    await socket.read_frames(conn, audio, lambda text: _command(session, conn, text))


async def _command(session: Session, conn: Connection, text: str) -> None:
    """One JSON text command (docs/protocol.md#client-commands) into the engine."""
    if len(text) > text_frame_limit(session.manager.settings.max_text_bytes):
        await session.refuse_text(conn, len(text.encode("utf-8")))
        return
    try:
        cmd = parse_client_command(text)
    except ValueError:
        log.debug("device %s: ignoring text frame %.80r", conn.log_id, text)
        return
    event = cmd.get("event")
    if event == "StartChat":
        await session.start_listening(conn)
    elif event == "Submit":
        await session.submit(conn)
    elif event == "Text":
        await session.text_input(conn, str(cmd.get("input", "")))
    elif event == "Select":
        conn.selected(int(cmd["index"]))
    # StartRecord: ignored in chat mode (docs/protocol.md#client-commands)
