"""Remote backends: OpenAI-compatible ASR, the HTTP TTS services, and :func:`build_backends`.

* :class:`RemoteTranscriber` — ``POST /v1/audio/transcriptions`` exactly as echokit_server
  calls it (spec §5.4): multipart fields ``file`` (``audio.wav``, the canonical 44-byte 16 kHz
  WAV), then ``language``, ``model``, ``prompt`` (each only if non-empty); with an ``api_key``
  ``Authorization: Bearer <key>`` and ``User-Agent: curl/7.81.0``, without one neither; up to
  3 attempts of 10 s each. Unlike the reference (which ignores the HTTP status, §10.17) a
  non-2xx answer is an error: 5xx (and 408/429), timeouts, transport errors and unparsable
  bodies are retried; other 4xx are not. When every attempt failed, ``BackendError``.
  A 2xx JSON body without ``text`` is an empty transcript. Post-processing: per line, what
  follows the first ``"] "`` (Whisper timestamps); empty text or text starting with ``(``
  (``(music)``) is no speech; then Traditional -> Simplified Chinese with OpenCC ``tw2sp``
  (the reference uses hanconv ``tw2sp``; a no-op for other text); the result is stripped.
* Speakers (:class:`~echokit_fast.backends.base.Speaker`), spec §5.9.2-5.9.5:
  :class:`StreamGSVSpeaker` (streamed s16le PCM at 16 kHz; the response's rate label is
  ignored), :class:`GSVSpeaker` (a WAV; 3 attempts x ``timeout_sec``, retried on timeout only),
  :class:`OpenAISpeaker` (``openai`` and ``groq``: a WAV, ``response_format: "wav"``),
  :class:`FishSpeaker` (fish.audio, MessagePack body). Audio is decoded, mixed to mono,
  resampled to the asked rate with :mod:`echokit_fast.audio` and yielded in 0.5 s chunks as it
  becomes available. Every failure is a ``BackendError`` with a notice for the user.
  ``[tts.text_optimization]`` (§5.9.8) is not implemented yet: it is ignored with a warning.
* :func:`build_backends` — ``(transcriber, speaker, conversation_factory)`` for a config.

Timeouts where the reference has none (stream_gsv, openai, groq, fish): connecting 10 s, and
``read_timeout`` (60 s) without any data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import httpx
import numpy as np

from echokit_fast import audio
from echokit_fast.backends.base import BackendError, Conversation, Pcm, Speaker, Transcriber
from echokit_fast.config import (
    GSVTTS,
    Config,
    FishTTS,
    GroqTTS,
    OpenAIASR,
    OpenAIChatLLM,
    OpenAIResponsesLLM,
    OpenAITTS,
    StreamGSVTTS,
)

__all__ = [
    "Backends",
    "FishSpeaker",
    "GSVSpeaker",
    "OpenAISpeaker",
    "RemoteTranscriber",
    "RemoteTranscription",
    "StreamGSVSpeaker",
    "build_backends",
    "clean_transcript",
]


#: Connection pool of each backend client. httpx's default (100 connections, 20 kept alive) is
#: a browser-like client's: with a few hundred devices a TTS stream is held open while its device
#: plays the audio back, the pool runs dry, and every other device's ASR request queues for a
#: slot (seen as seconds of latency in benches/bench_load.py). The openai SDK's own limits.
BACKEND_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
log = logging.getLogger(__name__)

USER_AGENT = "curl/7.81.0"
ASR_RATE = 16000
GSV_RATE = 16000
_RETRY_STATUS = frozenset({408, 429})


# --------------------------------------------------------------------------------------------
# ASR
# --------------------------------------------------------------------------------------------

_converter: Any = None
_converter_failed = False


def _to_simplified(text: str) -> str:
    """Traditional (Taiwan) -> Simplified Chinese with OpenCC ``tw2sp``; unchanged if OpenCC
    is missing (logged once)."""
    global _converter, _converter_failed
    if _converter is None and not _converter_failed:
        try:
            import opencc

            _converter = opencc.OpenCC("tw2sp")
        except Exception as exc:  # ImportError, or a build without the tw2sp profile
            _converter_failed = True
            log.warning("OpenCC unavailable (%s): transcripts are not converted to Simplified", exc)
    if _converter is None or not any("\u3400" <= c <= "\u9fff" for c in text):
        return text
    return _converter.convert(text)


def clean_transcript(text: str) -> str:
    """The reference's post-processing (§5.4): timestamps, ``(`` filter, tw2sp, stripped."""
    lines = [line.split("] ", 1)[1] if "] " in line else line for line in text.splitlines()]
    text = "\n".join(lines)
    stripped = text.strip()
    if not stripped or stripped.startswith("("):
        return ""
    return _to_simplified(stripped)


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
    ) -> None:
        self.cfg = cfg
        self.attempts = attempts
        self.attempt_timeout = attempt_timeout
        self.retry_delay = retry_delay
        self.headers: dict[str, str] = {}
        if cfg.api_key:
            self.headers = {"Authorization": f"Bearer {cfg.api_key}", "User-Agent": USER_AGENT}
        self.http = httpx.AsyncClient(timeout=attempt_timeout, limits=BACKEND_LIMITS)

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
        url = self.cfg.url
        problems: list[str] = []
        last: BackendError | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                resp = await self.http.post(
                    url, files=self._parts(wav), headers=self.headers, timeout=self.attempt_timeout
                )
            except httpx.TimeoutException as exc:
                problems.append(f"attempt {attempt}: timeout ({type(exc).__name__})")
                last = BackendError(
                    "", notice="The speech recognizer did not answer in time.", backend="asr"
                )
            except httpx.HTTPError as exc:
                problems.append(f"attempt {attempt}: {exc!r}")
                last = BackendError(
                    "", notice="The speech recognizer is not reachable.", backend="asr"
                )
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    try:
                        data = resp.json()
                    except ValueError:
                        problems.append(f"attempt {attempt}: not JSON: {resp.text[:200]!r}")
                        last = BackendError(
                            "", notice="The speech recognizer sent a bad answer.", backend="asr"
                        )
                    else:
                        text = data.get("text") if isinstance(data, dict) else None
                        return clean_transcript(text if isinstance(text, str) else "")
                else:
                    problems.append(f"attempt {attempt}: HTTP {status}: {resp.text[:300]}")
                    if status < 500 and status not in _RETRY_STATUS:
                        if status in (401, 403):
                            notice = f"The speech recognizer refused the API key (HTTP {status})."
                        else:
                            notice = f"The speech recognizer rejected the request (HTTP {status})."
                        raise BackendError(
                            f"ASR {url}: " + "; ".join(problems), notice=notice, backend="asr"
                        )
                    last = BackendError(
                        "", notice=f"The speech recognizer failed (HTTP {status}).", backend="asr"
                    )
            if attempt < self.attempts and self.retry_delay:
                await asyncio.sleep(self.retry_delay)
        assert last is not None
        raise BackendError(
            f"ASR {url}: all {self.attempts} attempts failed: " + "; ".join(problems),
            notice=last.notice,
            backend="asr",
        )

    def start(self, audio_in: Pcm, *, sample_rate: int = 16000) -> RemoteTranscription:
        """Begin transcribing now (an asyncio task); ``result()`` later, or ``cancel()``."""
        return RemoteTranscription(self.transcribe(audio_in, sample_rate=sample_rate))


# --------------------------------------------------------------------------------------------
# TTS
# --------------------------------------------------------------------------------------------


def _tts_error(what: str, exc: BaseException | None = None, status: int | None = None) -> Any:
    if status is not None:
        if status in (401, 403):
            notice = f"The speech synthesizer refused the API key (HTTP {status})."
        elif status >= 500:
            notice = f"The speech synthesizer failed (HTTP {status})."
        else:
            notice = f"The speech synthesizer rejected the request (HTTP {status})."
    elif isinstance(exc, httpx.TimeoutException):
        notice = "The speech synthesizer did not answer in time."
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        notice = "The speech synthesizer's audio was cut off."
    else:
        notice = "The speech synthesizer is not reachable."
    return BackendError(what, notice=notice, backend="tts")


def _chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _wav_to_rate(body: bytes, sample_rate: int, source: str) -> np.ndarray:
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


class _HTTPSpeaker:
    """Common plumbing: one httpx client, status checks, WAV replies in 0.5 s chunks."""

    name = "tts"

    def __init__(self, url: str, *, connect_timeout: float = 10.0, read_timeout: float = 60.0):
        self.url = url
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout), limits=BACKEND_LIMITS
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def _warn_text_optimization(self, cfg: Any) -> None:
        if getattr(cfg, "text_optimization", None) is not None:
            log.warning("[tts.text_optimization] is not supported yet; segments are sent as is")

    async def _post_wav(self, text: str, **request: Any) -> bytes:
        try:
            resp = await self.http.post(self.url, **request)
        except httpx.HTTPError as exc:
            raise _tts_error(f"TTS {self.name} {self.url}: {exc!r}", exc) from exc
        if resp.status_code != 200:
            raise _tts_error(
                f"TTS {self.name} {self.url}: HTTP {resp.status_code}: {resp.text[:300]}",
                status=resp.status_code,
            )
        return resp.content

    async def _speak_wav(self, body: bytes, sample_rate: int) -> AsyncIterator[Pcm]:
        pcm = _wav_to_rate(body, sample_rate, f"{self.name} {self.url}")
        for chunk in _chunks(pcm, max(1, sample_rate // 2)):
            yield chunk


class OpenAISpeaker(_HTTPSpeaker):
    """``openai`` / ``groq``: ``POST url`` JSON ``{model, voice, input, response_format: wav}``."""

    def __init__(self, cfg: OpenAITTS | GroqTTS, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = cfg.platform
        self.headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = {
            "model": self.cfg.model,
            "voice": self.cfg.voice,
            "input": text,
            "response_format": "wav",
        }
        body = await self._post_wav(text, json=payload, headers=self.headers)
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


class FishSpeaker(_HTTPSpeaker):
    """fish.audio: MessagePack body with field names, WAV reply (§5.9.5)."""

    def __init__(self, cfg: FishTTS, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = "fish"

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        import msgpack

        payload = msgpack.packb(
            {
                "text": text,
                "chunk_length": 200,
                "format": "wav",
                "mp3_bitrate": 128,
                "reference_id": self.cfg.speaker,
                "normalize": True,
                "latency": "normal",
            }
        )
        headers = {
            "content-type": "application/msgpack",
            "model": "s1",
            "authorization": f"Bearer {self.cfg.api_key}",
        }
        body = await self._post_wav(text, content=payload, headers=headers)
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


class GSVSpeaker(_HTTPSpeaker):
    """GPT-SoVITS batch: JSON ``{speaker, input, sample_rate: 16000}`` -> WAV; up to
    ``attempts`` tries of ``timeout_sec`` each, retried on timeout only."""

    def __init__(self, cfg: GSVTTS, *, attempts: int = 3, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = "gsv"
        self.attempts = attempts
        self._warn_text_optimization(cfg)

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = {"speaker": self.cfg.speaker, "input": text, "sample_rate": GSV_RATE}
        body = b""
        for attempt in range(1, self.attempts + 1):
            try:
                resp = await self.http.post(self.url, json=payload, timeout=self.cfg.timeout_sec)
            except httpx.TimeoutException as exc:
                if attempt < self.attempts:
                    log.info("TTS gsv %s: attempt %d timed out; retrying", self.url, attempt)
                    continue
                raise _tts_error(
                    f"TTS gsv {self.url}: {self.attempts} attempts of {self.cfg.timeout_sec} s "
                    "timed out",
                    exc,
                ) from exc
            except httpx.HTTPError as exc:
                raise _tts_error(f"TTS gsv {self.url}: {exc!r}", exc) from exc
            if resp.status_code != 200:
                raise _tts_error(
                    f"TTS gsv {self.url}: HTTP {resp.status_code}: {resp.text[:300]}",
                    status=resp.status_code,
                )
            body = resp.content
            break
        async for chunk in self._speak_wav(body, sample_rate):
            yield chunk


class StreamGSVSpeaker(_HTTPSpeaker):
    """GPT-SoVITS streaming: JSON ``{speaker, input, sample_rate: 16000}`` -> s16le PCM at
    16 kHz as it is synthesised (the server's ``rate=`` label is ignored), re-chunked to
    0.5 s; the last piece is whatever remains."""

    CHUNK_BYTES = 16000

    def __init__(self, cfg: StreamGSVTTS, **kw: Any) -> None:
        super().__init__(cfg.url, **kw)
        self.cfg = cfg
        self.name = "stream_gsv"
        self._warn_text_optimization(cfg)

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        payload = {"speaker": self.cfg.speaker, "input": text, "sample_rate": GSV_RATE}
        resampler = audio.Resampler(GSV_RATE, sample_rate) if sample_rate != GSV_RATE else None
        where = f"TTS stream_gsv {self.url}"
        try:
            async with self.http.stream("POST", self.url, json=payload) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread())[:300].decode("utf-8", "replace")
                    raise _tts_error(
                        f"{where}: HTTP {resp.status_code}: {detail}", status=resp.status_code
                    )
                buf = bytearray()
                async for data in resp.aiter_bytes():
                    buf += data
                    while len(buf) >= self.CHUNK_BYTES:
                        piece = audio.pcm16_to_float(bytes(buf[: self.CHUNK_BYTES]))
                        del buf[: self.CHUNK_BYTES]
                        out = resampler.process(piece) if resampler else piece
                        if len(out):
                            yield out
                if len(buf) % 2:
                    log.warning("%s: odd byte count; the last byte is dropped", where)
                    del buf[-1:]
                tail = audio.pcm16_to_float(bytes(buf)) if buf else np.zeros(0, np.float32)
                if resampler is not None:
                    tail = np.concatenate([resampler.process(tail), resampler.flush()])
                if len(tail):
                    yield tail
        except httpx.HTTPError as exc:
            raise _tts_error(f"{where}: {exc!r}", exc) from exc


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


class Backends(NamedTuple):
    """What :func:`build_backends` returns; unpacks as ``(transcriber, speaker, factory)``."""

    transcriber: Transcriber
    speaker: Speaker
    conversation: Callable[[], Conversation]

    async def aclose(self) -> None:
        """Close the HTTP clients of the remote backends."""
        for obj in (self.transcriber, self.speaker, getattr(self.conversation, "__self__", None)):
            close = getattr(obj, "aclose", None)
            if close is not None:
                await close()


def _local(module: str, name: str, cfg: Any, what: str) -> Any:
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"the embedded {what} engine is not available ({module}.{name}: {exc}); "
            f"install echokit-fast with its local {what} extra or choose a remote platform"
        ) from exc
    return cls(cfg)


def build_transcriber(
    cfg: Any, *, local: Callable[[Any], Transcriber] | None = None
) -> Transcriber:
    if isinstance(cfg, OpenAIASR):
        return RemoteTranscriber(cfg)
    if cfg.platform == "local":
        if local is not None:
            return local(cfg)
        return _local("echokit_fast.backends.asr.local", "shared_engine", cfg, "ASR")
    raise NotImplementedError(f"[asr] platform {cfg.platform!r} is not supported yet")


def build_speaker(cfg: Any, *, local: Callable[[Any], Speaker] | None = None) -> Speaker:
    if isinstance(cfg, StreamGSVTTS):
        return StreamGSVSpeaker(cfg)
    if isinstance(cfg, GSVTTS):
        return GSVSpeaker(cfg)
    if isinstance(cfg, (OpenAITTS, GroqTTS)):
        return OpenAISpeaker(cfg)
    if isinstance(cfg, FishTTS):
        return FishSpeaker(cfg)
    if cfg.platform == "local":
        if local is not None:
            return local(cfg)
        return _local("echokit_fast.backends.tts.local", "from_config", cfg, "TTS")
    raise NotImplementedError(f"[tts] platform {cfg.platform!r} is not supported yet")


def build_conversations(cfg: Any, **kw: Any) -> Callable[[], Conversation]:
    """A factory of conversations (``ChatBackend.conversation`` / ``ResponsesBackend.
    conversation``) for ``[llm]``."""
    if isinstance(cfg, OpenAIChatLLM):
        from echokit_fast.backends.llm.openai import ChatBackend

        return ChatBackend(cfg, **kw).conversation
    if isinstance(cfg, OpenAIResponsesLLM):
        from echokit_fast.backends.llm.openai import ResponsesBackend

        return ResponsesBackend(cfg, **kw).conversation
    raise NotImplementedError(f"[llm] platform {cfg.platform!r} is not supported yet")


SUPPORTED = {
    "asr": ("openai", "local"),
    "tts": ("stream_gsv", "gsv", "openai", "groq", "fish", "local"),
    "llm": ("openai_chat", "openai_responses"),
}


def unsupported(config: Config) -> list[str]:
    """What in ``config`` this server cannot run yet (empty when everything is supported):
    one sentence per problem, naming the section and the platform."""
    if config.layout != "pipeline":
        return [
            f"the {config.layout} layout is not supported yet (only [asr] + [llm] + [tts] "
            "pipelines are)"
        ]
    problems = []
    for section, names in SUPPORTED.items():
        platform = getattr(getattr(config, section), "platform", None)
        if platform not in names:
            problems.append(
                f"[{section}] platform {platform!r} is not supported yet "
                f"(supported: {', '.join(names)})"
            )
    return problems


def build_backends(
    config: Config,
    *,
    local_asr: Callable[[Any], Transcriber] | None = None,
    local_tts: Callable[[Any], Speaker] | None = None,
) -> Backends:
    """``(transcriber, speaker, conversation_factory)`` for a pipeline config.

    Call inside the server's event loop (the HTTP clients belong to it); ``aclose()`` the
    result at shutdown. MCP tools are listed on the first reply (``ChatBackend`` loads them
    lazily). Local platforms import their engines lazily; a missing engine is a RuntimeError
    naming it (``local_asr``/``local_tts`` supply shared engines instead, e.g. the app's).
    Platforms not implemented here raise NotImplementedError.
    """
    if config.asr is None or config.tts is None or config.llm is None:
        raise ValueError(f"build_backends needs [asr], [tts] and [llm] (layout {config.layout})")
    return Backends(
        build_transcriber(config.asr, local=local_asr),
        build_speaker(config.tts, local=local_tts),
        build_conversations(config.llm),
    )
