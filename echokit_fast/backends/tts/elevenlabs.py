"""``[tts] platform = "elevenlabs"`` (alias ``Elevenlabs``): ElevenLabs' stream-input WebSocket.

The wire is the reference's: per segment a new connection to
``{url}/{voice}/stream-input?model_id={model_id}&output_format=pcm_16000`` (plus
``&language_code={language_code, lower-cased}`` when set) with the header ``xi-api-key``; the
messages ``{"text": TEXT, "flush": true}`` and ``{"text": ""}`` (end of input); back come JSON
messages whose ``audio`` is base64 s16le PCM at 16 kHz (resampled to the asked rate) until
``isFinal: true``; a non-empty ``error`` (with ``message``) is the service's error.

Unlike the reference: an error message, bad base64 or a connection that ends before
``isFinal`` is a failure the user hears about (the reference ends the segment silently), and
each message must come within ``read_timeout``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import quote, urlencode

from pydantic import field_validator

from echokit_fast.backends import registry, ws
from echokit_fast.backends.base import Pcm, Speaker
from echokit_fast.backends.schema import Section, WsUrl
from echokit_fast.backends.tts.speaker import NOTICE_REPORTED, NOTICES, PcmStream

__all__ = ["DEFAULT_URL", "ELEVENLABS_RATE", "ElevenLabsSpeaker", "ElevenLabsTTS"]

DEFAULT_URL = "wss://api.elevenlabs.io/v1/text-to-speech"
#: the rate asked of the service (``output_format=pcm_16000``, the reference's)
ELEVENLABS_RATE = 16000


class ElevenLabsTTS(Section):
    """``[tts] platform = "elevenlabs"`` (alias ``Elevenlabs``)."""

    platform: Literal["elevenlabs"] = "elevenlabs"
    token: str
    voice: str
    model_id: str = ""
    language_code: str = ""
    url: WsUrl = DEFAULT_URL

    @field_validator("url", mode="before")
    @classmethod
    def _empty_is_default(cls, url: object) -> object:
        return DEFAULT_URL if url == "" else url  # as in the reference

    @property
    def effective_model_id(self) -> str:
        return self.model_id or "eleven_flash_v2_5"

    @property
    def stream_url(self) -> str:
        """The stream-input URL of the voice, with the query the reference sends."""
        base = self.url if self.url.endswith("/") else self.url + "/"
        query = {"model_id": self.effective_model_id, "output_format": f"pcm_{ELEVENLABS_RATE}"}
        if self.language_code:
            query["language_code"] = self.language_code.lower()
        return f"{base}{quote(self.voice, safe='')}/stream-input?{urlencode(query)}"


class ElevenLabsSpeaker:
    """ElevenLabs stream-input, one connection per segment (see the module docstring)."""

    name = "elevenlabs"

    def __init__(
        self, cfg: ElevenLabsTTS, *, connect_timeout: float = 10.0, read_timeout: float = 60.0
    ) -> None:
        self.cfg = cfg
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.where = f"TTS elevenlabs {cfg.url}"

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[Pcm]:
        headers = {"xi-api-key": self.cfg.token}
        try:
            conn = await ws.connect(self.cfg.stream_url, headers, timeout=self.connect_timeout)
        except ws.FAILURES as exc:
            raise ws.error(NOTICES, self.where, exc) from exc
        stream = PcmStream(ELEVENLABS_RATE, sample_rate)
        try:
            await conn.send(ws.dumps({"text": text, "flush": True}))
            await conn.send(ws.dumps({"text": ""}))
            final = False
            while not final:
                msg = await ws.recv(conn, self.read_timeout)
                if isinstance(msg, bytes):
                    continue  # the protocol's messages are text (the reference skips binary)
                data = self._message(msg)
                if data.get("error"):
                    raise NOTICES.error(
                        f"{self.where}: {data['error']}: {data.get('message')}", NOTICE_REPORTED
                    )
                if data.get("audio"):
                    pcm = stream.feed(self._audio(data["audio"]))
                    if len(pcm):
                        yield pcm
                final = data.get("isFinal") is True
            tail = stream.end()
            if len(tail):
                yield tail
        except ws.FAILURES as exc:
            raise ws.error(NOTICES, self.where, exc) from exc
        finally:
            await conn.close()

    def _message(self, msg: str) -> dict:
        try:
            data = json.loads(msg)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise NOTICES.error(f"{self.where}: bad message {msg[:300]!r}", NOTICES.bad_answer)
        return data

    def _audio(self, b64: object) -> bytes:
        try:
            return base64.b64decode(b64, validate=True)  # type: ignore[arg-type]
        except (binascii.Error, TypeError, ValueError):
            raise NOTICES.error(
                f"{self.where}: audio is not base64: {str(b64)[:100]!r}", NOTICES.bad_answer
            ) from None


@registry.tts("elevenlabs", aliases=["Elevenlabs"], config=ElevenLabsTTS)
def build(cfg: ElevenLabsTTS, needs: registry.Needs) -> Speaker:
    return ElevenLabsSpeaker(cfg)
