"""Device sessions: one per device id, connections attach to it
(docs/protocol.md#sessions-and-interruption, #turn-flow, #interruption).

A :class:`Session` owns the device's :class:`~echokit_fast.backends.base.Conversation` (history),
the utterance being listened to and the turn in progress. It speaks to the device only through
the :class:`~echokit_fast.conversation.device.DeviceConnection` a device front end attached
(``echokit_fast/devices/<protocol>/``), and is driven by the front end through its
:class:`~echokit_fast.conversation.device.DeviceInput` methods. A new connection for the same
id *pre-empts* the old one: the turn in flight is cancelled (LLM stream, TTS synthesis,
delivery), the old connection is told to end (:meth:`DeviceConnection.disconnect`), and the
session carries on with the new one. The connection's own ``tools`` (a device's, such as the
xiaozhi firmware's MCP server) are offered to a
:class:`~echokit_fast.backends.base.ToolConversation` while it is the session's connection.

Tasks, per connection: the front end's (reading the device: microphone frames are read and run
through the turn detector while the answer plays, docs/compatibility.md#listening-and-turns), and
per turn one turn task with the LLM reader and at most ``tts_parallel`` synthesis tasks
(:mod:`.pipeline`), plus the speculative ASR of the current round and the speculative reply to
it (its own pipeline). All of them end when the connection detaches.

Input (docs/protocol.md#turn-flow):

* ``server_vad``: after :meth:`Session.start_listening` every piece of audio goes through the
  session's :class:`~echokit_fast.turn.detector.TurnDetector` (``Settings.stream_detector``
  when set, else ``turn_detector``); at each pause the transcriber
  is started on everything heard so far (``Transcriber.start``), and cancelled when the user
  keeps talking (then an interim transcript is sent if that transcript was already done). At
  the end of the turn ``end_of_speech`` is sent at once (the reference waits for the
  transcript first), then the final transcript when it is known; an empty transcript ends the
  turn with ``response_end`` only. :meth:`Session.submit` while listening ends the utterance
  like the detector would (the reference kills the session,
  docs/compatibility.md#listening-and-turns). A
  :class:`~echokit_fast.turn.detector.TranscribingDetector` (a streaming recognizer) replaces
  the rounds: its interim transcripts are sent as they come (read by a watcher task while no
  audio arrives), its end of the turn ends the utterance, and its transcript is the final one.
* the speculative reply (docs/architecture.md#speculative-reply; ``Settings.speculative_reply``,
  ``server_vad`` rounds, a :class:`~echokit_fast.backends.base.Rewindable` conversation): once
  a pause's transcript is ready while the utterance goes on, a
  :class:`~echokit_fast.conversation.speculative.Speculation` answers it with its delivery
  held; the turn that ends on that round adopts it after its final transcript, anything else
  (speech again, a new pause, new input, the connection leaving) drops it and rewinds the
  conversation.
* ``continuous_listening`` (with ``server_vad``): the device streams its microphone before
  anyone speaks. Each detector is made with ``wait_for_speech`` (silence before the first speech
  never ends the utterance), only the last ``PREROLL_S`` of the audio before the first speech is
  kept, and a turn that ends (not cancelled) starts the next utterance at once.
* not ``server_vad``: all audio is kept (and run through the detector only to learn whether
  there was speech); :meth:`Session.submit` transcribes the whole buffer, or answers
  ``response_end`` when no speech was heard.
* :meth:`Session.text_input` is the user's utterance, without ASR (echoed as the transcript).
* the live layouts (the conversation is a :class:`~echokit_fast.backends.base.LiveConversation`):
  listening is the same, but each utterance's audio is streamed to the model as it is heard
  (:class:`~echokit_fast.conversation.live.LiveInput`; no ASR rounds), and the turn is the
  model's answer (:func:`~echokit_fast.conversation.live.answer`).

Input caps (``Settings``, the README's limits table): a text input over ``max_text_bytes``
(UTF-8) is refused -- the turn is a failure notice (``TEXT_TOO_LONG``) and nothing reaches the
LLM (:meth:`Session.refuse_text`, also what a front end calls for a frame too large to hold a
text within the cap); a transcript (interim or final) over it is cut at a word boundary to the
cap (logged).
At most ``max_sessions`` sessions are held: a new device id beyond that evicts the session
detached longest ago, and when every session has a connection :meth:`SessionManager.session`
raises :class:`SessionsFull` (the front end refuses the connection).

New input during an answer (start listening, text, submit with speech) cancels the answer in
flight without a ``response_end`` for it: the client interrupted on purpose, and (EchoKit) an
``EndResponse`` would make the firmware drop the upload it has just begun.

Failures: any backend error ends the turn with ``notice(text)`` (for clients that know it),
then the notice as a segment of its own -- ``segment_start(notice)``, the notice spoken by the
Speaker unless the Speaker is what failed (bounded by ``NOTICE_TTS_TIMEOUT``),
``segment_end`` -- and ``response_end``. The session and every other session go on.

Deadlines (``Settings``, the README's limits table), each such a failure: the transcript must
be known ``asr_timeout_s`` after the end of the utterance, and the whole turn (transcript and
answer, its playback included) may take ``turn_s`` (then :data:`TURN_TOO_LONG`); the answer's
own bounds are the pipeline's (:mod:`.pipeline`).

Exactly one ``response_end`` ends each turn, and nothing is ever sent to a connection that is
gone (the reference sends an extra one, docs/compatibility.md#listening-and-turns).

A :class:`~echokit_fast.backends.base.Proactive` conversation (a service that acts on its own)
also gets turns of its own: while a connection is attached, whenever it has something for the
user and no turn runs, a turn presents it (``unprompted``; an utterance being heard is dropped,
with ``end_of_speech`` when the engine's VAD was listening). Those turns end with one
``response_end`` too.

After the last connection of a session detaches, the session keeps only its conversation
(history, for a later connection with ``keep_history``) for ``session_ttl`` seconds; then it is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from echokit_fast.audio import pcm16_to_float
from echokit_fast.backends import http
from echokit_fast.backends.base import (
    Backends,
    Conversation,
    LiveConversation,
    Proactive,
    Reply,
    Rewindable,
    ToolBox,
    ToolConversation,
    Transcription,
)
from echokit_fast.conversation import live as live_turn
from echokit_fast.conversation.device import SAMPLE_RATE, DeviceConnection, DeviceGone
from echokit_fast.conversation.pipeline import ReplyPipeline, TurnFailed, aclosing_iter, as_pcm
from echokit_fast.conversation.segmenter import SegmenterFactory
from echokit_fast.conversation.speculative import Speculation
from echokit_fast.conversation.splitter import SegmentGrouper, cut_text
from echokit_fast.conversation.trace import (
    CONNECTIONS,
    SESSIONS,
    RecentTurns,
    TurnTrace,
    printable,
)
from echokit_fast.turn.detector import (
    TranscribingDetector,
    TurnDetector,
    TurnDetectorFactory,
    TurnEvent,
)
from echokit_fast.turn.vad_rounds import VadTurnDetectors

__all__ = [
    "TEXT_TOO_LONG",
    "TURN_TOO_LONG",
    "Backends",
    "Session",
    "SessionManager",
    "SessionsFull",
    "Settings",
]

log = logging.getLogger("echokit_fast.device")

BYTES_PER_SECOND = 2 * SAMPLE_RATE
#: an utterance longer than this ends (stream mode) or stops growing (Submit mode)
MAX_UTTERANCE_S = 60
#: a continuously listening device: the seconds of audio kept before the user's first speech
PREROLL_S = 1.0
PREROLL_BYTES = int(PREROLL_S * BYTES_PER_SECOND)
#: how long to wait for a cancelled turn to finish before moving on
CANCEL_TIMEOUT = 5.0
#: at shutdown, how long a front end may take to say goodbye after its turn is cancelled
DRAIN_CLOSE_TIMEOUT = 3.0
#: time limit for speaking a failure notice
NOTICE_TTS_TIMEOUT = 10.0
#: the notice for a text input over ``Settings.max_text_bytes``
TEXT_TOO_LONG = "That message is too long."
#: the notice for a turn over ``Settings.turn_s``
TURN_TOO_LONG = "Sorry, that took too long, so I stopped."


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    #: makes the turn detector of each utterance
    turn_detector: TurnDetectorFactory = field(default_factory=VadTurnDetectors)
    #: when set, makes the detector of each server-VAD utterance instead (a streaming
    #: recognizer's, ``echokit_fast.turn.asr_stream``)
    stream_detector: TurnDetectorFactory | None = None
    #: segments synthesised at once per session
    tts_parallel: int = 3
    #: seconds a detached session keeps its history
    session_ttl: float = 3600.0
    #: UTF-8 bytes of a text input (refused over it) or a transcript (cut to it)
    max_text_bytes: int = 4096
    #: sessions held at once
    max_sessions: int = 1000
    #: seconds from the end of the utterance to its transcript
    asr_timeout_s: float | None = 30.0
    #: seconds to read the whole answer, and its characters (:class:`ReplyPipeline`)
    llm_answer_s: float | None = 120.0
    max_answer_chars: int | None = 16384
    #: seconds one segment's synthesis may keep the answer waiting
    tts_segment_s: float | None = 60.0
    #: seconds of one whole turn
    turn_s: float | None = 300.0
    #: answer a round's transcript while the user is silent after a pause, held until the turn
    #: ends on it (server VAD with a :class:`Rewindable` conversation; docs/architecture.md)
    speculative_reply: bool = False
    #: start a round's transcription at the first quiet window after speech, not at the pause
    early_asr: bool = False


class SessionsFull(Exception):
    """Every one of the ``max_sessions`` sessions has a connection: a new device id is refused."""


# --------------------------------------------------------------------------------------------
# Utterance: what is heard between the start of listening and the end of the turn
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
    def __init__(self, detector: TurnDetector, live: live_turn.LiveInput | None = None) -> None:
        self.pcm = bytearray()
        #: the live layouts: where the audio goes as it is heard (no ASR rounds then)
        self.live = live
        self.detector: TurnDetector | None = detector  # this utterance's own
        self.round_task: asyncio.Task[tuple[str, BaseException | None]] | None = None
        self.round_tr: Transcription | None = None
        self.round_len = 0
        #: the round began at the first quiet window of the current stretch (early ASR): the
        #: pause that ends the stretch keeps it; and the interim transcript held for that pause
        self.round_quiet = False
        self.pending_interim = ""
        #: the detector's ``speech_end`` when the round started (later: the user spoke on)
        self.round_speech_end: float | None = None
        #: the held answer to the round's transcript, and whether one was dropped before
        self.spec: Speculation | None = None
        self.spec_dropped = False
        self.full = False
        #: reads a transcribing detector's events (None for other detectors)
        self.watcher: asyncio.Task[None] | None = None

    def drop_speculation(self) -> None:
        """Drop the held answer to the round's transcript, if any."""
        if self.spec is not None:
            self.spec.cancel()
            self.spec = None
            self.spec_dropped = True

    def cancel_round(self) -> None:
        """Cancel the round's transcription if it is still running; forget it (and the
        answer speculated on it)."""
        self.drop_speculation()
        if self.round_task is not None and not self.round_task.done():
            self.round_task.cancel()
            if self.round_tr is not None:
                try:
                    self.round_tr.cancel()
                except Exception:  # a backend's cancel must not break the session
                    log.exception("Transcription.cancel failed")
        self.round_task = None
        self.round_tr = None

    @property
    def speech_seen(self) -> bool:
        return self.detector is not None and self.detector.speech_seen

    def release(self) -> None:
        self.cancel_round()
        if self.watcher is not None and self.watcher is not asyncio.current_task():
            self.watcher.cancel()
        self.watcher = None
        if isinstance(self.detector, TranscribingDetector):
            self.detector.close()
        if self.live is not None:
            self.live.cancel()
            self.live = None
        self.detector = None
        self.pcm = bytearray()


# --------------------------------------------------------------------------------------------
# Session
# --------------------------------------------------------------------------------------------


class Session:
    def __init__(self, manager: SessionManager, device_id: str) -> None:
        self.manager = manager
        self.id = device_id
        self.log_id = printable(device_id)  # as log lines write it
        self.conversation: Conversation | LiveConversation | None = None
        self.conn: DeviceConnection | None = None
        self.utt: Utterance | None = None
        self.turn: asyncio.Task[str] | None = None
        self._unprompted: asyncio.Task[None] | None = None  # a Proactive conversation's
        #: the speculative replies not yet finished (held, adopted, or dropped and rewinding)
        self._specs: set[Speculation] = set()
        self.turns = 0
        self.detached_at: float | None = None
        #: when a connection last attached or detached (wall clock, Unix seconds)
        self.since = time.time()
        self._evict: asyncio.TimerHandle | None = None
        #: the manager's generation the conversation was made in (:meth:`_renew_if_stale`)
        self._generation = manager.generation

    # -- attach / detach ---------------------------------------------------------------

    async def attach(self, conn: DeviceConnection) -> bool:
        """Make ``conn`` the session's connection, pre-empting the previous one. False if an
        even newer connection took over meanwhile."""
        self.manager._cancel_evict(self)
        old, self.conn = self.conn, conn
        self.detached_at = None
        self.since = time.time()
        if old is None:
            CONNECTIONS.inc()
        await self.cancel_turn()
        self._drop_utterance()
        await self._drop_speculations()
        if old is not None:
            log.info("device %s: new connection pre-empts the previous one", self.log_id)
            old.disconnect()
        if self.conversation is None or self._generation != self.manager.generation:
            self._new_conversation()
        elif not conn.keep_history:
            result = self.conversation.reset()
            if inspect.isawaitable(result):
                await result
        self._use_tools(conn.tools)
        if self.conn is not conn:
            return False
        self._stop_unprompted()
        if isinstance(self.conversation, Proactive):
            self.conversation.attached()
            self._unprompted = asyncio.create_task(
                self._run_unprompted(conn, self.conversation), name=f"echokit-unprompted-{self.id}"
            )
        return True

    async def detach(self, conn: DeviceConnection) -> None:
        if self.conn is not conn:
            return
        self.conn = None
        CONNECTIONS.dec()
        self._stop_unprompted()
        await self.cancel_turn()
        self._drop_utterance()
        await self._drop_speculations()
        self._use_tools(None)
        self.detached_at = time.monotonic()
        self.since = time.time()
        self.manager._schedule_evict(self)

    def _new_conversation(self) -> None:
        """A conversation from the manager's factory in place of the one held (closed)."""
        old, self.conversation = self.conversation, None
        close = getattr(old, "close", None)  # one holding a connection of its own
        if callable(close):
            close()
        self.conversation = self.manager.backends.conversation_factory(self.id)
        self._generation = self.manager.generation

    def _renew_if_stale(self, conn: DeviceConnection) -> None:
        """After :meth:`SessionManager.reconfigure` gave new conversations: the next turn or
        utterance of a connected device gets one (its history starts afresh); a turn still
        running keeps the old one until it ends."""
        if self.conversation is None or self._generation == self.manager.generation:
            return
        if self.responding:
            return
        if self.utt is not None:
            self.utt.drop_speculation()  # (it answers from the conversation replaced)
        self._new_conversation()
        self._use_tools(conn.tools)
        self._stop_unprompted()
        if isinstance(self.conversation, Proactive):
            self.conversation.attached()
            self._unprompted = asyncio.create_task(
                self._run_unprompted(conn, self.conversation), name=f"echokit-unprompted-{self.id}"
            )

    def _use_tools(self, tools: ToolBox | None) -> None:
        if isinstance(self.conversation, ToolConversation):
            self.conversation.use_tools(tools)

    async def cancel_turn(self) -> None:
        task, self.turn = self.turn, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=CANCEL_TIMEOUT)
            if not task.done():
                log.error(
                    "device %s: a cancelled turn did not stop within %ss",
                    self.log_id,
                    CANCEL_TIMEOUT,
                )

    def _stop_unprompted(self) -> None:
        task, self._unprompted = self._unprompted, None
        if task is not None:
            task.cancel()

    async def _run_unprompted(self, conn: DeviceConnection, conversation: Proactive) -> None:
        """The turns of ``conversation``'s own while ``conn`` is attached: one whenever it has
        something for the user and no turn runs (a turn of the user's presents it itself)."""
        while conn is self.conn:
            turn = self.turn
            if turn is not None and not turn.done():
                await asyncio.wait([turn])
                if turn.cancelled() or turn.result() != "disconnected":
                    continue
                return
            await conversation.wait_unprompted()
            if conn is not self.conn or self.responding:
                continue
            end_vad = self.utt is not None and conn.server_vad  # the device stops streaming
            self._drop_utterance()
            self._start_turn(conn, items=conversation.unprompted(), end_vad=end_vad)

    def _drop_utterance(self) -> None:
        if self.utt is not None:
            self.utt.release()
            self.utt = None

    def _new_utterance(self, conn: DeviceConnection) -> Utterance:
        settings = self.manager.settings
        self._renew_if_stale(conn)
        conv = self.conversation
        if isinstance(conv, LiveConversation):  # the audio goes to the model as it is heard
            detector = settings.turn_detector(wait_for_speech=conn.continuous_listening)
            return Utterance(detector, live_turn.LiveInput(conv))
        factory = settings.turn_detector
        if conn.server_vad and settings.stream_detector is not None:
            factory = settings.stream_detector
        utt = Utterance(factory(wait_for_speech=conn.continuous_listening))
        if isinstance(utt.detector, TranscribingDetector):
            watch = self._watch(conn, utt, utt.detector)
            utt.watcher = asyncio.create_task(watch, name=f"echokit-device-asr-{self.id}")
        return utt

    def _listens_on(self, conn: DeviceConnection) -> bool:
        """After a turn: whether ``conn`` listens for the next utterance by itself."""
        return (
            conn is self.conn and conn.server_vad and conn.continuous_listening and self.utt is None
        )

    @property
    def responding(self) -> bool:
        return self.turn is not None and not self.turn.done()

    # -- input (DeviceInput) ---------------------------------------------------------

    async def start_listening(self, conn: DeviceConnection) -> None:
        if conn is not self.conn:
            return
        if self.responding:
            log.info("device %s: StartChat during an answer: cancelling it", self.log_id)
            await self.cancel_turn()
            if conn is not self.conn:
                return
        # (server VAD; a duplicate start while listening is ignored, but not its answer held)
        if conn.server_vad and self.utt is None:
            self.utt = self._new_utterance(conn)
        elif self.utt is not None:
            self.utt.drop_speculation()

    async def submit(self, conn: DeviceConnection) -> None:
        if conn is not self.conn:
            return
        if conn.server_vad:
            utt = self.utt
            # docs/compatibility.md#listening-and-turns: end of utterance, not the end of the
            # session
            if utt is not None:
                self._end_voice_turn(conn, utt, whole=True)
            elif not self.responding:
                self._start_turn(conn, text="")  # docs/protocol.md#stream-mode step 1: empty input
            return
        if self.responding:
            await self.cancel_turn()
            if conn is not self.conn:
                return
        utt, self.utt = self.utt, None
        if utt is not None and utt.live is not None:  # the model decides whether it heard speech
            self._end_live_utterance(conn, utt)
            return
        if utt is None or not utt.speech_seen or not utt.pcm:
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

    async def text_input(self, conn: DeviceConnection, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > self.manager.settings.max_text_bytes:
            await self.refuse_text(conn, size)
            return
        await self._text_turn(conn, text=text)

    async def refuse_text(self, conn: DeviceConnection, size: int) -> None:
        """A text input of ``size`` bytes over ``max_text_bytes``: a turn that is only the
        ``TEXT_TOO_LONG`` notice; the LLM is not asked."""
        cap = self.manager.settings.max_text_bytes
        log.warning(
            "device %s: text input of %d bytes refused (max_text_bytes %d)",
            self.log_id,
            size,
            cap,
        )
        failure = TurnFailed(TEXT_TOO_LONG, "input", f"text input of {size} bytes over {cap}")
        await self._text_turn(conn, failure=failure)

    async def _text_turn(
        self, conn: DeviceConnection, *, text: str = "", failure: TurnFailed | None = None
    ) -> None:
        if conn is not self.conn:
            return
        if self.responding:
            await self.cancel_turn()
            if conn is not self.conn:
                return
        utt, self.utt = self.utt, None
        end_vad = False
        if utt is not None:
            end_vad = conn.server_vad  # listening: the device stops streaming
            utt.release()
        self._start_turn(conn, text=text, end_vad=end_vad, failure=failure)

    async def audio(self, conn: DeviceConnection, pcm16: bytes) -> None:
        if conn is not self.conn or not pcm16:
            return
        data = pcm16
        stream = conn.server_vad
        utt = self.utt
        if stream:
            if utt is None or (self.responding and not conn.barge_in):
                return  # audio outside listening .. end of speech is not part of any utterance
        else:
            if utt is None:
                utt = self.utt = self._new_utterance(conn)
            if utt.full:
                return
        if len(utt.pcm) + len(data) > MAX_UTTERANCE_S * BYTES_PER_SECOND:
            log.warning("device %s: utterance longer than %d s", self.log_id, MAX_UTTERANCE_S)
            if stream:
                self._end_voice_turn(conn, utt, whole=True)
            else:
                utt.full = True
            return
        utt.pcm += data
        if utt.live is not None:
            utt.live.push(data)
        detector = utt.detector
        assert detector is not None
        events = await detector.feed(data)
        if utt.spec is not None and (
            detector.speaking or detector.speech_end != utt.round_speech_end
        ):
            utt.drop_speculation()  # the user speaks on after the pause
        if conn.continuous_listening and not detector.speech_seen:
            del utt.pcm[:-PREROLL_BYTES]  # nobody spoke yet: keep only the pre-roll
        elif stream and self.responding and self.utt is utt:
            await self._barge_in(conn)
        if stream:  # (else the detector only says whether there was speech)
            for event in events:
                if not await self._turn_event(conn, utt, event):
                    return

    async def _barge_in(self, conn: DeviceConnection) -> None:
        """The user speaks over the answer (:attr:`DeviceConnection.barge_in`): it is cut, and
        the utterance listened for during it goes on."""
        log.info("device %s: the user spoke over the answer: cutting it", self.log_id)
        await self.cancel_turn()
        if conn is self.conn:
            await conn.answer_cut()

    async def _turn_event(self, conn: DeviceConnection, utt: Utterance, event: TurnEvent) -> bool:
        """Act on an event of ``utt``'s detector; False once the utterance is over (or the
        session moved on)."""
        if self.utt is not utt or conn is not self.conn:
            return False
        if event is TurnEvent.QUIET:
            self._round_quiet(utt)
        elif event is TurnEvent.PAUSE:
            await self._round_pause(conn, utt)
        elif event is TurnEvent.INTERIM and isinstance(utt.detector, TranscribingDetector):
            await conn.transcript(utt.detector.interim, final=False)
        elif event is TurnEvent.END:
            self._end_voice_turn(conn, utt, whole=False)
        return self.utt is utt

    async def _watch(
        self, conn: DeviceConnection, utt: Utterance, detector: TranscribingDetector
    ) -> None:
        """The events a transcribing detector reports between pieces of audio."""
        try:
            async for event in detector.events():
                if not await self._turn_event(conn, utt, event):
                    return
        except DeviceGone:
            pass

    def _finished_round_text(self, utt: Utterance) -> str:
        """The transcript of the round, if it is done and has one ("" otherwise)."""
        task = utt.round_task
        if task is not None and task.done() and not task.cancelled():
            text, exc = task.result()
            if exc is None:
                return self._capped_transcript(text).strip()
        return ""

    def _round_quiet(self, utt: Utterance) -> None:
        """Speech may be ending (the first quiet window after enough speech): with
        ``early_asr`` the round's transcription of everything heard so far starts now, not
        at the pause ~200 ms of quiet later -- with the device's 512 ms frames often a whole
        frame later. The pause that ends this quiet stretch keeps it: only quiet came since."""
        if utt.live is not None or not self.manager.settings.early_asr:
            return
        if not utt.round_quiet:  # the previous round's text is the pause's interim ASR
            utt.pending_interim = self._finished_round_text(utt) or utt.pending_interim
        utt.cancel_round()
        self._start_round(utt)
        utt.round_quiet = True

    async def _round_pause(self, conn: DeviceConnection, utt: Utterance) -> None:
        """The user paused after enough speech: interim ASR if the round's transcript is done,
        then a new round transcribing everything heard so far (not in the live layouts) --
        unless the round began at this stretch's first quiet window (:meth:`_round_quiet`)."""
        if utt.live is not None:
            return
        if utt.round_quiet and utt.round_task is not None:
            interim, utt.pending_interim = utt.pending_interim, ""
        else:
            interim = self._finished_round_text(utt)
            utt.cancel_round()
            self._start_round(utt)
        utt.round_quiet = False
        if utt.round_task is not None and self._speculates(conn):
            utt.round_speech_end = utt.detector.speech_end if utt.detector is not None else None
            utt.round_task.add_done_callback(lambda t: self._speculate(conn, utt, t))
        if interim:
            await conn.transcript(interim, final=False)

    def _speculates(self, conn: DeviceConnection) -> bool:
        """Whether a round's transcript is answered before the end of the turn (held)."""
        return (
            self.manager.settings.speculative_reply
            and conn.server_vad
            and isinstance(self.conversation, Rewindable)
            and not isinstance(self.conversation, LiveConversation)
        )

    def _speculate(
        self,
        conn: DeviceConnection,
        utt: Utterance,
        task: asyncio.Task[tuple[str, BaseException | None]],
    ) -> None:
        """The round's transcript is known and the turn goes on: answer it, held
        (docs/architecture.md#speculative-reply)."""
        if task is not utt.round_task or self.utt is not utt or conn is not self.conn:
            return  # the user spoke on, or the turn ended first
        if self.responding or task.cancelled() or utt.detector is None:
            return
        if utt.detector.speaking or utt.detector.speech_end != utt.round_speech_end:
            return
        text, exc = task.result()
        text = cut_text(text, self.manager.settings.max_text_bytes).strip()
        conversation = self.conversation
        if exc is not None or not text or not isinstance(conversation, Rewindable):
            return
        earlier = [spec.task for spec in self._specs]
        spec = Speculation(
            text,
            task,
            conversation,
            lambda trace, hold: self._pipeline(conn, trace, hold=hold),
            device=self.id,
            earlier=earlier,
        )
        utt.spec = spec
        self._specs.add(spec)
        spec.task.add_done_callback(lambda _: self._specs.discard(spec))

    async def _drop_speculations(self) -> None:
        """Drop every speculative reply not adopted, and wait until each has rewound the
        conversation (before anything else uses it)."""
        dropped = [spec for spec in self._specs if not spec.adopted.is_set()]
        for spec in dropped:
            spec.cancel()
        if dropped:
            await asyncio.wait([spec.task for spec in dropped], timeout=CANCEL_TIMEOUT)

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

    def _end_voice_turn(self, conn: DeviceConnection, utt: Utterance, *, whole: bool) -> None:
        """End of the utterance (turn detector, submit or length limit): end of speech, then
        the transcript of the current round -- or, with ``whole``, one covering the whole
        buffer."""
        self.utt = None
        trace = self._trace()
        detector = utt.detector
        speech_end = detector.speech_end if detector is not None else None
        if speech_end is not None:
            trace.set("speech_end", speech_end)
        if utt.live is not None:
            self._end_live_utterance(conn, utt, end_vad=True, trace=trace)
            return
        spec: Speculation | None = None
        if isinstance(detector, TranscribingDetector):
            utt.detector = None  # the turn's now: it ends the audio and waits for the transcript
            task = asyncio.create_task(_asr_call(detector.transcript()), name="echokit-device-asr")
            task.add_done_callback(lambda _: detector.close())  # even if it never ran
        else:
            if whole and (utt.round_task is None or utt.round_len != len(utt.pcm)):
                utt.cancel_round()
                if utt.speech_seen:
                    self._start_round(utt)
            task, utt.round_task, utt.round_tr = utt.round_task, None, None
            spec, utt.spec = utt.spec, None  # (answering this round: the turn's to adopt)
            if self._speculates(conn):
                trace.detail["speculative"] = "miss" if utt.spec_dropped else "none"
        utt.release()
        self._start_turn(conn, asr_task=task, end_vad=True, trace=trace, speculation=spec)
        if conn.barge_in and conn.continuous_listening:
            self.utt = self._new_utterance(conn)  # listening through the answer

    def _end_live_utterance(
        self,
        conn: DeviceConnection,
        utt: Utterance,
        *,
        end_vad: bool = False,
        trace: TurnTrace | None = None,
    ) -> None:
        """The end of an utterance in the live layouts: the model answers what it heard."""
        live, utt.live = utt.live, None
        assert live is not None
        utt.release()
        live.finish()
        self._start_turn(conn, live=live, end_vad=end_vad, trace=trace)

    # -- the turn ------------------------------------------------------------------------

    def _trace(self) -> TurnTrace:
        self.turns += 1
        return TurnTrace(self.id, self.turns)

    def _start_turn(
        self,
        conn: DeviceConnection,
        *,
        text: str | None = None,
        asr_task: asyncio.Task[tuple[str, BaseException | None]] | None = None,
        end_vad: bool = False,
        trace: TurnTrace | None = None,
        failure: TurnFailed | None = None,
        live: live_turn.LiveInput | None = None,
        items: AsyncIterator[Reply] | None = None,
        speculation: Speculation | None = None,
    ) -> None:
        trace = trace or self._trace()
        if live is None and items is None:  # (a live utterance feeds the conversation it has)
            self._renew_if_stale(conn)
        coro = self._run_turn(
            conn,
            trace,
            text=text,
            asr_task=asr_task,
            end_vad=end_vad,
            failure=failure,
            live=live,
            items=items,
            speculation=speculation,
        )
        task = asyncio.create_task(coro, name=f"echokit-device-turn-{self.id}")
        self.turn = task

        def done(t: asyncio.Task[str]) -> None:
            if self.turn is t:
                self.turn = None
                if not t.cancelled() and self._listens_on(conn):
                    self.utt = self._new_utterance(conn)

        task.add_done_callback(done)

    async def _run_turn(
        self,
        conn: DeviceConnection,
        trace: TurnTrace,
        *,
        text: str | None,
        asr_task: asyncio.Task[tuple[str, BaseException | None]] | None,
        end_vad: bool,
        failure: TurnFailed | None = None,
        live: live_turn.LiveInput | None = None,
        items: AsyncIterator[Reply] | None = None,
        speculation: Speculation | None = None,
    ) -> str:
        """The turn; returns its outcome (``trace.outcome``). ``live``: a live layout's
        utterance; ``items``: a turn of the conversation's own, without user input;
        ``speculation``: the held answer to the round ``asr_task`` transcribes. The whole
        turn may take ``turn_s`` (then :data:`TURN_TOO_LONG`)."""
        turn_s = self.manager.settings.turn_s
        try:
            try:
                # in this task (not wait_for's own: a DeviceGone raised while it is cancelled
                # would be an exception never retrieved)
                async with asyncio.timeout(turn_s):
                    await self._turn(
                        conn, trace, text, asr_task, end_vad, failure, live, items, speculation
                    )
            except TimeoutError:
                raise TurnFailed(TURN_TOO_LONG, "turn", f"the turn took over {turn_s} s") from None
        except TurnFailed as failure:
            trace.outcome = "error"
            trace.detail["failed"] = failure.stage
            try:
                await self._notify(conn, failure)
                await conn.response_end()
            except DeviceGone:
                trace.outcome = "disconnected"
        except DeviceGone:
            trace.outcome = "disconnected"
        except asyncio.CancelledError:
            trace.outcome = "cancelled"
            raise
        except Exception:
            log.exception("device %s: turn failed", self.log_id)
            trace.outcome = "error"
            with contextlib.suppress(DeviceGone):
                await conn.response_end()
        finally:
            if asr_task is not None and not asr_task.done():
                asr_task.cancel()
            if speculation is not None:
                speculation.cancel()  # (done already if the turn reached it)
            self.manager.recent.add(trace.finish())
        return trace.outcome

    async def _turn(
        self,
        conn: DeviceConnection,
        trace: TurnTrace,
        text: str | None,
        asr_task: asyncio.Task[tuple[str, BaseException | None]] | None,
        end_vad: bool,
        failure: TurnFailed | None,
        live: live_turn.LiveInput | None,
        items: AsyncIterator[Reply] | None,
        speculation: Speculation | None,
    ) -> None:
        """The turn up to its ``response_end`` (failures raised, for :meth:`_run_turn`)."""
        settings = self.manager.settings
        if end_vad:
            await conn.end_of_speech()
            trace.mark("end_vad")
        if failure is not None:
            raise failure
        if live is not None:
            trace.detail["segments"] = await self._live_answer(conn, trace, heard=live)
            await conn.response_end()
            return
        if text is None and items is None:
            text = ""
            if asr_task is not None:
                done, _ = await asyncio.wait([asr_task], timeout=settings.asr_timeout_s)
                if not done:
                    raise TurnFailed(
                        http.ASR.timeout,
                        "asr",
                        f"no transcript within {settings.asr_timeout_s} s",
                    )
                text, exc = asr_task.result()
                if exc is not None:
                    raise TurnFailed.of(exc, "asr")
                text = self._capped_transcript(text)
            trace.mark("asr_done")
        text = (text or "").strip()
        if items is None and not text:
            trace.outcome = "empty"
            await conn.response_end()
            return
        assert self.conversation is not None
        if items is None:
            await conn.transcript(text, final=True)
        if speculation is not None:
            same = speculation.round_task is asr_task and speculation.text == text
            if same and speculation.conversation is self.conversation:
                trace.detail["speculative"] = "hit"
                trace.detail["segments"] = await speculation.adopt(trace)
                await conn.response_end()
                return
            trace.detail["speculative"] = "miss"
        await self._drop_speculations()  # (rewound before the conversation answers again)
        if isinstance(self.conversation, LiveConversation):
            trace.detail["segments"] = await self._live_answer(conn, trace, text=text)
        else:
            pipeline = self._pipeline(conn, trace)
            if items is None:
                items = self.conversation.reply(text)
            trace.detail["segments"] = await pipeline.run_items(items)
        await conn.response_end()

    def _pipeline(
        self, conn: DeviceConnection, trace: TurnTrace, *, hold: asyncio.Event | None = None
    ) -> ReplyPipeline:
        """The pipeline of an answer of the session's conversation to ``conn``."""
        settings = self.manager.settings
        conversation = self.conversation
        assert conversation is not None and not isinstance(conversation, LiveConversation)
        return ReplyPipeline(
            conversation=conversation,
            speaker=self.manager.backends.speaker,
            segmenter_factory=self.manager.segmenter_factory(),
            out=conn,
            trace=trace,
            max_parallel=settings.tts_parallel,
            answer_s=settings.llm_answer_s,
            max_answer_chars=settings.max_answer_chars,
            segment_s=settings.tts_segment_s,
            hold=hold,
        )

    async def _live_answer(
        self,
        conn: DeviceConnection,
        trace: TurnTrace,
        *,
        heard: live_turn.LiveInput | None = None,
        text: str = "",
    ) -> int:
        assert isinstance(self.conversation, LiveConversation)
        return await live_turn.answer(
            self.conversation,
            conn,
            trace,
            heard=heard,
            text=text,
            speaker=self.manager.backends.speaker,
            segmenter_factory=self.manager.segmenter_factory(),
            max_parallel=self.manager.settings.tts_parallel,
        )

    def _capped_transcript(self, text: str) -> str:
        cap = self.manager.settings.max_text_bytes
        cut = cut_text(text, cap)
        if cut != text:
            log.warning(
                "device %s: transcript of %d bytes cut to %d (max_text_bytes %d)",
                self.log_id,
                len(text.encode("utf-8")),
                len(cut.encode("utf-8")),
                cap,
            )
        return cut

    async def _notify(self, conn: DeviceConnection, failure: TurnFailed) -> None:
        """The failure notice, then as a segment (shown; spoken if it can be)."""
        notice = failure.notice
        await conn.notice(notice)
        await conn.segment_start(notice)
        if failure.spoken and self.manager.backends.speaker is not None:
            try:
                await asyncio.wait_for(self._speak(conn, notice), NOTICE_TTS_TIMEOUT)
            except DeviceGone:
                raise
            except (TimeoutError, Exception) as exc:
                log.warning("device %s: could not speak the notice: %r", self.log_id, exc)
        await conn.segment_end()

    async def _speak(self, conn: DeviceConnection, text: str) -> None:
        speaker = self.manager.backends.speaker
        async with aclosing_iter(speaker.speak(text, sample_rate=SAMPLE_RATE)) as chunks:
            async for chunk in chunks:
                await conn.audio(as_pcm(chunk))


async def _raise(exc: BaseException) -> str:
    raise exc


# --------------------------------------------------------------------------------------------
# Manager
# --------------------------------------------------------------------------------------------


class SessionManager:
    """The sessions of all devices, by id, and the shared pieces they use.

    ``backends``: a :class:`Backends` (or a ``(transcriber, speaker, conversation_factory)``
    tuple) or a zero-argument callable building one (called once, in a worker thread, at the
    first connection). ``settings``: a :class:`Settings` or a zero-argument callable returning
    one (its turn-detector factory is prepared at the first connection, in a worker thread).
    ``segmenter``: a zero-argument callable returning the segmenter factory (looked up per
    answer, so it can be swapped). ``recent``: where each finished turn's trace record goes
    (default: a :class:`RecentTurns` of its own).
    """

    def __init__(
        self,
        *,
        backends: Any,
        settings: Settings | Callable[[], Settings] = Settings(),
        segmenter: Callable[[], SegmenterFactory] | None = None,
        recent: RecentTurns | None = None,
    ) -> None:
        self._backends_src = backends
        self._backends: Backends | None = None
        self._settings_src = settings
        self._settings: Settings | None = None
        self._segmenter = segmenter
        self._detectors_ready = False
        self._ready_lock: asyncio.Lock | None = None
        self.sessions: dict[str, Session] = {}
        self.recent = recent if recent is not None else RecentTurns()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        #: counts the :meth:`reconfigure` calls that gave new conversations
        self.generation = 0

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
            return SegmentGrouper
        return self._segmenter()

    async def ensure_ready(self) -> None:
        """Build the backends and prepare the turn detectors (once; in a worker thread)."""
        if self._backends is not None and self._detectors_ready:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._backends is None:
                src = self._backends_src
                if callable(src) and not isinstance(src, tuple | Backends):
                    src = await asyncio.to_thread(src)
                self._backends = Backends.of(src)
            if not self._detectors_ready:
                await asyncio.to_thread(self.settings.turn_detector.prepare)
                if self.settings.stream_detector is not None:
                    await asyncio.to_thread(self.settings.stream_detector.prepare)
                self._detectors_ready = True

    def reconfigure(self, backends: Backends, settings: Settings, *, conversations: bool) -> None:
        """Use ``backends`` and ``settings`` (its detectors prepared) from now on: the
        config was reloaded. The connections stay; a turn running goes on with what it
        holds. ``conversations``: the conversation factory changed, so each session takes a
        new conversation: a connected one at once unless a turn runs or a live utterance
        streams into its conversation (then at its next utterance or turn), a detached one
        when a device connects again."""
        self._backends = backends
        self._settings = settings
        if not conversations:
            return
        self.generation += 1
        for s in list(self.sessions.values()):
            if s.conn is not None and (s.utt is None or s.utt.live is None):
                s._renew_if_stale(s.conn)

    # -- registry ------------------------------------------------------------------------

    def session(self, device_id: str) -> Session:
        """The session of ``device_id``, made if new (raises :class:`SessionsFull` when
        ``max_sessions`` are held and all have a connection)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        s = self.sessions.get(device_id)
        if s is None:
            if len(self.sessions) >= self.settings.max_sessions:
                self._make_room()
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
            self._drop(s)
            log.info(
                "device %s: session dropped after %.0f s idle", s.log_id, self.settings.session_ttl
            )

    def _make_room(self) -> None:
        """Drop the session detached longest ago (SessionsFull if none is detached)."""
        detached = [s for s in self.sessions.values() if s.detached_at is not None]
        if not detached:
            raise SessionsFull(f"{len(self.sessions)} sessions with a connection (max_sessions)")
        oldest = min(detached, key=lambda s: s.detached_at or 0.0)
        self._cancel_evict(oldest)
        self._drop(oldest)
        log.info("device %s: session dropped for a new one (max_sessions)", oldest.log_id)

    def _drop(self, s: Session) -> None:
        del self.sessions[s.id]
        SESSIONS.dec()
        conversation, s.conversation = s.conversation, None
        close = getattr(conversation, "close", None)  # one holding a connection of its own
        if callable(close):
            close()
        self._notify_changed()

    def _notify_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def drain(self, timeout: float) -> None:
        """Shutdown: let the running turns finish (at most ``timeout`` seconds), then disconnect
        every device as a pre-emption does (on EchoKit: ``EndResponse``, then a Close frame)
        and wait, bounded, until their front ends are done with them."""
        turns = [s.turn for s in self.sessions.values() if s.turn is not None and s.responding]
        if turns:
            await asyncio.wait(turns, timeout=timeout)
        conns = [s.conn for s in self.sessions.values() if s.conn is not None]
        for conn in conns:
            conn.disconnect()
        if conns:
            waits = [asyncio.ensure_future(conn.closed()) for conn in conns]
            _, late = await asyncio.wait(waits, timeout=CANCEL_TIMEOUT + DRAIN_CLOSE_TIMEOUT)
            for task in late:
                task.cancel()

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
            except TimeoutError:
                return predicate(self)
        return True
