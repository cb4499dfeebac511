"""Device sessions: one per device id, connections attach to it (spec §1.4, §5.1-5.5, §5.11).

A :class:`Session` owns the device's :class:`~echokit_fast.backends.base.Conversation` (history),
the utterance being listened to and the turn in progress. A WebSocket :class:`Connection`
attaches to it; a new connection for the same id *pre-empts* the old one: the turn in flight
is cancelled (LLM stream, TTS synthesis, delivery), the old socket gets one ``EndResponse``
and is closed, and the session carries on with the new socket.

Tasks, per connection: the ASGI handler (uvicorn's), one reader task (it never waits for a
turn: microphone frames are read and run through the VAD while the answer plays, §10.21),
and per turn one turn task with the LLM reader and at most ``tts_parallel`` synthesis tasks
(:mod:`.pipeline`), plus the speculative ASR of the current round. All of them end when the
connection detaches.

Input (§5.2):

* ``stream_asr=true``: after ``StartChat`` every frame goes through the embedded VAD and the
  round logic of :mod:`.listen`; at each pause the transcriber is started on everything heard
  so far (``Transcriber.start``), and cancelled when the user keeps talking (then an interim
  ``ASR`` is sent if that transcript was already done). At the end of the turn ``EndVad`` is
  sent at once (the reference waits for the transcript first), then the final ``ASR{text}``
  when the transcript is known; an empty transcript ends the turn with ``EndResponse`` only.
  ``Submit`` while listening ends the utterance like the VAD would (the reference kills the
  session, §10.6).
* ``stream_asr=false``: every frame is kept (and run through the VAD only to learn whether
  there was speech); ``Submit`` transcribes the whole buffer, or answers ``EndResponse`` when
  the VAD heard no speech.
* ``Text{input}`` is the user's utterance, without ASR (echoed as ``ASR{input}``).
  ``Select`` and ``StartRecord`` are ignored, as is any text frame that is not a command.

New input during an answer (``StartChat``, ``Text``, ``Submit`` with speech) cancels the answer
in flight without an ``EndResponse`` for it: the client interrupted on purpose, and an
``EndResponse`` would make the firmware drop the upload it has just begun.

Failures: any backend error ends the turn with ``DisplayText{notice}`` (for clients that know
it; the firmware cannot decode it, §3.4), then the notice as a segment of its own --
``StartAudio{notice}`` (the firmware and the web page show it), the notice spoken by the
Speaker unless the Speaker is what failed (bounded by ``NOTICE_TTS_TIMEOUT``), ``EndAudio`` --
and ``EndResponse``. The session and every other session go on.

Exactly one ``EndResponse`` ends each turn, and nothing is ever written to a socket that is
gone (the reference sends an extra one, §10.20).

After the last connection of a session detaches, the session keeps only its conversation
(history, for a later ``reconnect=true``) for ``session_ttl`` seconds; then it is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from echokit_fast.audio import pcm16_to_float
from echokit_fast.backends.base import Backends, Conversation, Transcription
from echokit_fast.conversation.pipeline import ReplyPipeline, TurnFailed, aclosing_iter, as_pcm
from echokit_fast.conversation.segmenter import SegmenterFactory
from echokit_fast.conversation.trace import CONNECTIONS, SESSIONS, TurnTrace
from echokit_fast.devices.echokit import output
from echokit_fast.devices.echokit.output import END_AUDIO, END_RESPONSE, END_VAD, AudioOut
from echokit_fast.devices.echokit.protocol import parse_client_command
from echokit_fast.turn.vad_rounds import RoundEnd, RoundTracker, VadParams

__all__ = [
    "Backends",
    "Connection",
    "ConnectionGone",
    "Flags",
    "Session",
    "SessionManager",
    "Settings",
]

log = logging.getLogger("echokit_fast.device")

SAMPLE_RATE = 16000
BYTES_PER_SECOND = 2 * SAMPLE_RATE
#: an utterance longer than this ends (stream mode) or stops growing (Submit mode)
MAX_UTTERANCE_S = 60
#: how long to wait for a cancelled turn to finish before moving on
CANCEL_TIMEOUT = 5.0
#: time limit for speaking a failure notice
NOTICE_TTS_TIMEOUT = 10.0
#: time limit for the EndResponse written to a pre-empted socket
PREEMPT_SEND_TIMEOUT = 2.0


# --------------------------------------------------------------------------------------------
# Query flags, backends, settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flags:
    """The chat endpoint's query flags (§1.3): booleans, strictly ``true`` or ``false``."""

    reconnect: bool = False
    opus: bool = False
    vowel: bool = False
    stream_asr: bool = False
    record: bool = False

    NAMES = ("reconnect", "opus", "vowel", "stream_asr", "record")

    @classmethod
    def parse(cls, items: list[tuple[str, str]], *, allow_record: bool = True) -> Flags:
        """From the query's ``(key, value)`` pairs. Unknown keys are ignored; a flag given
        twice, or with a value other than ``true``/``false``, is a ValueError (-> HTTP 400)."""
        names = cls.NAMES if allow_record else cls.NAMES[:-1]
        values: dict[str, bool] = {}
        for key, value in items:
            if key not in names:
                continue
            if key in values:
                raise ValueError(f"query parameter {key!r} is given more than once")
            if value not in ("true", "false"):
                raise ValueError(
                    f"query parameter {key}={value!r}: expected true or false "
                    "(Failed to deserialize query string)"
                )
            values[key] = value == "true"
        return cls(**values)


@dataclass(frozen=True)
class Settings:
    vad: VadParams = field(default_factory=VadParams)
    #: segments synthesised at once per session
    tts_parallel: int = 3
    #: seconds a detached session keeps its history
    session_ttl: float = 3600.0
    #: the hello file's bytes (b"" = no hello)
    hello: bytes = b""


class ConnectionGone(Exception):
    """The socket is closed (or was pre-empted); nothing more can be sent to it."""


# --------------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------------


class Connection:
    """One device WebSocket: flags, sending, the odd-byte carry of the microphone stream."""

    def __init__(self, ws: Any, flags: Flags, device_id: str) -> None:
        self.ws = ws
        self.flags = flags
        self.device_id = device_id
        self.done = asyncio.Event()  # the handler should end: socket gone or pre-empted
        self.alive = True
        self.preempted = False
        self._pcm = output.EvenBytes()

    async def send(self, frame: bytes) -> None:
        if not self.alive:
            raise ConnectionGone()
        try:
            await self.ws.send_bytes(frame)
        except Exception as exc:  # ClientDisconnected, RuntimeError after close, OSError ...
            self.alive = False
            self.done.set()
            raise ConnectionGone() from exc

    def preempt(self) -> None:
        self.preempted = True
        self.done.set()

    def align(self, data: bytes) -> bytes:
        """PCM16 bytes with an odd trailing byte carried into the next frame (§2.1)."""
        return self._pcm.align(data)


# --------------------------------------------------------------------------------------------
# Utterance: what is heard between StartChat and the end of the turn
# --------------------------------------------------------------------------------------------


async def _asr_result(tr: Transcription) -> tuple[str, BaseException | None]:
    try:
        return await tr.result(), None
    except asyncio.CancelledError:
        tr.cancel()
        raise
    except Exception as exc:
        return "", exc


async def _asr_call(coro: Any) -> tuple[str, BaseException | None]:
    try:
        return await coro, None
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return "", exc


class Utterance:
    def __init__(self, vad: Any, params: VadParams) -> None:
        self.pcm = bytearray()
        self.vad = vad  # a VadStream of its own: a push still running in a worker thread
        self.tracker = RoundTracker(params)  # after a cancel can never touch a newer one
        self.round_task: asyncio.Task[tuple[str, BaseException | None]] | None = None
        self.round_tr: Transcription | None = None
        self.round_len = 0
        self.speech_end: float | None = None
        self.full = False

    def cancel_round(self) -> None:
        """Cancel the round's transcription if it is still running; forget it."""
        if self.round_task is not None and not self.round_task.done():
            self.round_task.cancel()
            if self.round_tr is not None:
                try:
                    self.round_tr.cancel()
                except Exception:  # a backend's cancel must not break the session
                    log.exception("Transcription.cancel failed")
        self.round_task = None
        self.round_tr = None

    def release(self) -> None:
        self.cancel_round()
        self.vad = None
        self.pcm = bytearray()


# --------------------------------------------------------------------------------------------
# Session
# --------------------------------------------------------------------------------------------


class Session:
    def __init__(self, manager: SessionManager, device_id: str) -> None:
        self.manager = manager
        self.id = device_id
        self.conversation: Conversation | None = None
        self.conn: Connection | None = None
        self.utt: Utterance | None = None
        self.turn: asyncio.Task[None] | None = None
        self.turns = 0
        self.detached_at: float | None = None
        self._evict: asyncio.TimerHandle | None = None

    # -- attach / detach ---------------------------------------------------------------

    async def attach(self, conn: Connection) -> bool:
        """Make ``conn`` the session's socket, pre-empting the previous one. False if an even
        newer connection took over meanwhile."""
        self.manager._cancel_evict(self)
        old, self.conn = self.conn, conn
        self.detached_at = None
        if old is None:
            CONNECTIONS.inc()
        await self.cancel_turn()
        self._drop_utterance()
        if old is not None:
            log.info("device %s: new connection pre-empts the previous one", self.id)
            old.preempt()
        if self.conversation is None:
            self.conversation = self.manager.backends.conversation_factory(self.id)
        elif not conn.flags.reconnect:
            result = self.conversation.reset()
            if inspect.isawaitable(result):
                await result
        return self.conn is conn

    async def detach(self, conn: Connection) -> None:
        if self.conn is not conn:
            return
        self.conn = None
        CONNECTIONS.dec()
        await self.cancel_turn()
        self._drop_utterance()
        self.detached_at = time.monotonic()
        self.manager._schedule_evict(self)

    async def cancel_turn(self) -> None:
        task, self.turn = self.turn, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=CANCEL_TIMEOUT)
            if not task.done():
                log.error("device %s: a cancelled turn did not stop within %ss", self.id, 5)

    def _drop_utterance(self) -> None:
        if self.utt is not None:
            self.utt.release()
            self.utt = None

    def _new_utterance(self) -> Utterance:
        return Utterance(self.manager.new_vad_stream(), self.manager.settings.vad)

    @property
    def responding(self) -> bool:
        return self.turn is not None and not self.turn.done()

    # -- input ---------------------------------------------------------------------------

    async def on_text(self, conn: Connection, text: str) -> None:
        if conn is not self.conn:
            return
        try:
            cmd = parse_client_command(text)
        except ValueError:
            log.debug("device %s: ignoring text frame %.80r", self.id, text)
            return
        event = cmd.get("event")
        if event == "StartChat":
            await self._on_start_chat(conn)
        elif event == "Submit":
            await self._on_submit(conn)
        elif event == "Text":
            await self._on_text_input(conn, str(cmd.get("input", "")))
        # Select, StartRecord: ignored in chat mode (§6.2)

    async def _on_start_chat(self, conn: Connection) -> None:
        if self.responding:
            log.info("device %s: StartChat during an answer: cancelling it", self.id)
            await self.cancel_turn()
            if conn is not self.conn:
                return
        # (stream mode; a duplicate StartChat while listening is ignored)
        if conn.flags.stream_asr and self.utt is None:
            self.utt = self._new_utterance()

    async def _on_submit(self, conn: Connection) -> None:
        if conn.flags.stream_asr:
            utt = self.utt
            if utt is not None:  # §10.6: end of utterance, not the end of the session
                self._end_voice_turn(conn, utt, whole=True)
            elif not self.responding:
                self._start_turn(conn, text="")  # §5.2(a) step 1: empty input
            return
        if self.responding:
            await self.cancel_turn()
            if conn is not self.conn:
                return
        utt, self.utt = self.utt, None
        if utt is None or not utt.tracker.speech_seen or not utt.pcm:
            if utt is not None:
                utt.release()
            self._start_turn(conn, text="")
            return
        audio = pcm16_to_float(bytes(utt.pcm))
        utt.release()
        trace = self._trace()
        task = asyncio.create_task(
            _asr_call(self.manager.backends.transcriber.transcribe(audio, sample_rate=SAMPLE_RATE)),
            name="echokit-device-asr",
        )
        self._start_turn(conn, asr_task=task, trace=trace)

    async def _on_text_input(self, conn: Connection, text: str) -> None:
        if self.responding:
            await self.cancel_turn()
            if conn is not self.conn:
                return
        utt, self.utt = self.utt, None
        end_vad = False
        if utt is not None:
            end_vad = conn.flags.stream_asr  # listening: the device stops streaming
            utt.release()
        self._start_turn(conn, text=text, end_vad=end_vad)

    async def on_audio(self, conn: Connection, data: bytes) -> None:
        if conn is not self.conn:
            return
        data = conn.align(data)
        if not data:
            return
        stream = conn.flags.stream_asr
        utt = self.utt
        if stream:
            if utt is None or self.responding:
                return  # audio outside StartChat .. EndVad is not part of any utterance
        else:
            if utt is None:
                utt = self.utt = self._new_utterance()
            if utt.full:
                return
        if len(utt.pcm) + len(data) > MAX_UTTERANCE_S * BYTES_PER_SECOND:
            log.warning("device %s: utterance longer than %d s", self.id, MAX_UTTERANCE_S)
            if stream:
                self._end_voice_turn(conn, utt, whole=True)
            else:
                utt.full = True
            return
        utt.pcm += data
        arrived = time.monotonic()
        probs = await asyncio.to_thread(_vad_probabilities, utt.vad, data)
        if self.utt is not utt or conn is not self.conn:
            return  # the utterance ended (or the session moved on) meanwhile
        tracker = utt.tracker
        if not stream:
            for p in probs:
                tracker.window(p)
            return
        for p in probs:
            result = tracker.window(p)
            if tracker.released:
                utt.speech_end = arrived
            if result is RoundEnd.PAUSE:
                await self._round_pause(conn, utt)
                if self.utt is not utt:
                    return
            elif result is RoundEnd.END:
                self._end_voice_turn(conn, utt, whole=False)
                return

    async def _round_pause(self, conn: Connection, utt: Utterance) -> None:
        """The user paused after enough speech: interim ASR if the round's transcript is done,
        then a new round transcribing everything heard so far."""
        task = utt.round_task
        interim = ""
        if task is not None and task.done() and not task.cancelled():
            text, exc = task.result()
            if exc is None:
                interim = text.strip()
        utt.cancel_round()
        self._start_round(utt)
        if interim:
            await conn.send(output.asr(interim))

    def _start_round(self, utt: Utterance) -> None:
        if not utt.pcm:
            return
        audio = pcm16_to_float(bytes(utt.pcm))
        utt.round_len = len(utt.pcm)
        try:
            tr = self.manager.backends.transcriber.start(audio, sample_rate=SAMPLE_RATE)
        except Exception as exc:
            utt.round_tr = None
            utt.round_task = asyncio.create_task(_asr_call(_raise(exc)), name="echokit-device-asr")
            return
        utt.round_tr = tr
        utt.round_task = asyncio.create_task(_asr_result(tr), name="echokit-device-asr")

    def _end_voice_turn(self, conn: Connection, utt: Utterance, *, whole: bool) -> None:
        """End of the utterance (VAD, Submit or length limit): EndVad, then the transcript of
        the current round -- or, with ``whole``, one covering the whole buffer."""
        self.utt = None
        trace = self._trace()
        if utt.speech_end is not None:
            trace.set("speech_end", utt.speech_end)
        if whole and (utt.round_task is None or utt.round_len != len(utt.pcm)):
            utt.cancel_round()
            if utt.tracker.speech_seen:
                self._start_round(utt)
        task, utt.round_task, utt.round_tr = utt.round_task, None, None
        utt.release()
        self._start_turn(conn, asr_task=task, end_vad=True, trace=trace)

    # -- the turn ------------------------------------------------------------------------

    def _trace(self) -> TurnTrace:
        self.turns += 1
        return TurnTrace(self.id, self.turns)

    def _start_turn(
        self,
        conn: Connection,
        *,
        text: str | None = None,
        asr_task: asyncio.Task[tuple[str, BaseException | None]] | None = None,
        end_vad: bool = False,
        trace: TurnTrace | None = None,
    ) -> None:
        trace = trace or self._trace()
        coro = self._run_turn(conn, trace, text=text, asr_task=asr_task, end_vad=end_vad)
        task = asyncio.create_task(coro, name=f"echokit-device-turn-{self.id}")
        self.turn = task

        def done(t: asyncio.Task[None]) -> None:
            if self.turn is t:
                self.turn = None

        task.add_done_callback(done)

    async def _run_turn(
        self,
        conn: Connection,
        trace: TurnTrace,
        *,
        text: str | None,
        asr_task: asyncio.Task[tuple[str, BaseException | None]] | None,
        end_vad: bool,
    ) -> None:
        backends = self.manager.backends
        try:
            if end_vad:
                await conn.send(END_VAD)
                trace.mark("end_vad")
            if text is None:
                text = ""
                if asr_task is not None:
                    text, exc = await asr_task
                    if exc is not None:
                        raise TurnFailed.of(exc, "asr")
                trace.mark("asr_done")
            text = text.strip()
            if not text:
                trace.outcome = "empty"
                await conn.send(END_RESPONSE)
                return
            await conn.send(output.asr(text))
            assert self.conversation is not None
            pipeline = ReplyPipeline(
                conversation=self.conversation,
                speaker=backends.speaker,
                segmenter_factory=self.manager.segmenter_factory(),
                send=conn.send,
                out=AudioOut(opus=conn.flags.opus, vowel=conn.flags.vowel),
                trace=trace,
                max_parallel=self.manager.settings.tts_parallel,
            )
            trace.detail["segments"] = await pipeline.run(text)
            await conn.send(END_RESPONSE)
        except TurnFailed as failure:
            trace.outcome = "error"
            trace.detail["failed"] = failure.stage
            try:
                await self._notify(conn, failure)
                await conn.send(END_RESPONSE)
            except ConnectionGone:
                trace.outcome = "disconnected"
        except ConnectionGone:
            trace.outcome = "disconnected"
        except asyncio.CancelledError:
            trace.outcome = "cancelled"
            raise
        except Exception:
            log.exception("device %s: turn failed", self.id)
            trace.outcome = "error"
            with contextlib.suppress(ConnectionGone):
                await conn.send(END_RESPONSE)
        finally:
            if asr_task is not None and not asr_task.done():
                asr_task.cancel()
            trace.finish()

    async def _notify(self, conn: Connection, failure: TurnFailed) -> None:
        """The failure notice: DisplayText, then as a segment (shown; spoken if it can be)."""
        notice = failure.notice
        await conn.send(output.display_text(notice))
        await conn.send(output.start_audio(notice))
        if failure.stage != "tts":
            out = AudioOut(opus=conn.flags.opus, vowel=conn.flags.vowel)
            out.start_segment()
            try:
                await asyncio.wait_for(self._speak(conn, out, notice), NOTICE_TTS_TIMEOUT)
            except ConnectionGone:
                raise
            except (Exception, asyncio.TimeoutError) as exc:
                log.warning("device %s: could not speak the notice: %r", self.id, exc)
            for frame in out.end_segment():
                await conn.send(frame)
        await conn.send(END_AUDIO)

    async def _speak(self, conn: Connection, out: AudioOut, text: str) -> None:
        speaker = self.manager.backends.speaker
        async with aclosing_iter(speaker.speak(text, sample_rate=SAMPLE_RATE)) as chunks:
            async for chunk in chunks:
                for frame in out.push(as_pcm(chunk)):
                    await conn.send(frame)


def _vad_probabilities(vad: Any, data: bytes) -> list[float]:
    """Push PCM16 bytes through a VadStream; the speech probability of each window it ran."""
    vad.push(data)
    return vad.last_probabilities.tolist()


async def _raise(exc: BaseException) -> str:
    raise exc


# --------------------------------------------------------------------------------------------
# Manager
# --------------------------------------------------------------------------------------------


class SessionManager:
    """The sessions of all devices, by id, and the shared pieces they use.

    ``backends``: a :class:`Backends` (or a ``(transcriber, speaker, conversation_factory)``
    tuple) or a zero-argument callable building one (called once, in a worker thread, at the
    first connection). ``vad_model``: a zero-argument callable returning the shared
    ``SileroVad`` (loaded at the first connection). ``segmenter``: a zero-argument callable
    returning the segmenter factory (looked up per answer, so it can be swapped).
    """

    def __init__(
        self,
        *,
        backends: Any,
        settings: Settings | Callable[[], Settings] = Settings(),
        segmenter: Callable[[], SegmenterFactory] | None = None,
        vad_model: Callable[[], Any] | None = None,
    ) -> None:
        self._backends_src = backends
        self._backends: Backends | None = None
        self._settings_src = settings
        self._settings: Settings | None = None
        self._segmenter = segmenter
        self._vad_model_src = vad_model
        self._vad_model: Any = None
        self._ready_lock: asyncio.Lock | None = None
        self.sessions: dict[str, Session] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    # -- shared pieces -----------------------------------------------------------------

    @property
    def backends(self) -> Backends:
        if self._backends is None:
            raise RuntimeError("the device backends are not ready (call ensure_ready first)")
        return self._backends

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            src = self._settings_src
            self._settings = src if isinstance(src, Settings) else src()
        return self._settings

    def segmenter_factory(self) -> SegmenterFactory:
        if self._segmenter is None:
            from echokit_fast.conversation.splitter import SegmentGrouper

            return SegmentGrouper
        return self._segmenter()

    def new_vad_stream(self) -> Any:
        from echokit_fast.backends.vad.silero import VadStream

        p = self.settings.vad
        return VadStream(self._vad_model, threshold=p.threshold, neg_threshold=p.neg_threshold)

    async def ensure_ready(self) -> None:
        """Build the backends and load the VAD model (once; in a worker thread)."""
        if self._backends is not None and self._vad_model is not None:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._backends is None:
                src = self._backends_src
                if callable(src) and not isinstance(src, tuple | Backends):
                    src = await asyncio.to_thread(src)
                self._backends = Backends.of(src)
            if self._vad_model is None:
                if self._vad_model_src is None:
                    from echokit_fast.backends.vad.silero import SileroVad

                    self._vad_model = await asyncio.to_thread(SileroVad.shared)
                else:
                    self._vad_model = await asyncio.to_thread(self._vad_model_src)
            _ = self.settings

    # -- registry ------------------------------------------------------------------------

    def session(self, device_id: str) -> Session:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        s = self.sessions.get(device_id)
        if s is None:
            s = self.sessions[device_id] = Session(self, device_id)
            SESSIONS.inc()
            self._notify_changed()
        return s

    def _schedule_evict(self, s: Session) -> None:
        self._cancel_evict(s)
        loop = asyncio.get_running_loop()
        s._evict = loop.call_later(max(self.settings.session_ttl, 0.0), self._evict, s)
        self._notify_changed()

    def _cancel_evict(self, s: Session) -> None:
        if s._evict is not None:
            s._evict.cancel()
            s._evict = None

    def _evict(self, s: Session) -> None:
        s._evict = None
        if s.conn is None and self.sessions.get(s.id) is s:
            del self.sessions[s.id]
            SESSIONS.dec()
            s.conversation = None
            log.info(
                "device %s: session dropped after %.0f s idle", s.id, self.settings.session_ttl
            )
            self._notify_changed()

    def _notify_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_until(self, predicate: Callable[[SessionManager], bool], timeout: float) -> bool:
        """Wait (on the server's loop) until ``predicate(self)`` holds after a registry
        change, at most ``timeout`` seconds. For tests and diagnostics."""
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                return predicate(self)
        return True

    # -- one connection --------------------------------------------------------------------

    async def serve(self, ws: Any, device_id: str, flags: Flags) -> None:
        """Run an accepted device WebSocket until it closes or is pre-empted."""
        try:
            await self.ensure_ready()
        except Exception:
            log.exception("device %s: the backends could not be built", device_id)
            await _close(ws, 1011)
            return
        session = self.session(device_id)
        conn = Connection(ws, flags, device_id)
        reader: asyncio.Task[None] | None = None
        try:
            if not await session.attach(conn):
                return
            hello = self.settings.hello
            if hello and not flags.reconnect:
                for frame in output.hello_frames(hello):
                    if conn.done.is_set():
                        break
                    await conn.send(frame)
            if not conn.done.is_set():
                reader = asyncio.create_task(
                    self._read(session, conn), name=f"echokit-device-read-{device_id}"
                )
                await conn.done.wait()
        except ConnectionGone:
            pass
        except Exception:  # e.g. the conversation factory failed: this connection only
            log.exception("device %s: connection failed", device_id)
        finally:
            if reader is not None:
                reader.cancel()
                await asyncio.wait([reader])
            await session.detach(conn)
            if conn.preempted and conn.alive:
                with contextlib.suppress(ConnectionGone, asyncio.TimeoutError):
                    await asyncio.wait_for(conn.send(END_RESPONSE), PREEMPT_SEND_TIMEOUT)
            if conn.alive:
                conn.alive = False
                await _close(ws, 1000)

    async def _read(self, session: Session, conn: Connection) -> None:
        ws = conn.ws
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    conn.alive = False
                    break
                data = msg.get("bytes")
                try:
                    if data is not None:
                        await session.on_audio(conn, data)
                    elif msg.get("text") is not None:
                        await session.on_text(conn, msg["text"])
                except ConnectionGone:
                    break
                except Exception:
                    log.exception("device %s: error handling a message", session.id)
        finally:
            conn.done.set()


async def _close(ws: Any, code: int) -> None:
    with contextlib.suppress(Exception):  # already closed or gone
        await ws.close(code)
