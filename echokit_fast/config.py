"""``config.toml``: echokit_server 0.3.2's schema, our embedded engines, precise errors.

Load with :func:`load_config` (a file) or :func:`parse_config` (text); with no file at all,
:func:`default_config` gives the *embedded default*. The result is a :class:`LoadedConfig`: the
validated :class:`Config` plus the warnings and notes collected on the way. A bad file raises
:class:`ConfigError`, whose message names the file, the line and the dotted key of every
problem, e.g.::

    config.toml:12: tts.platform: unknown platform 'elevenlabs2' (did you mean 'elevenlabs'?
    expected one of openai (Openai, OpenAI), groq (Groq), ...)

Schema (as echokit_server 0.3.2)
-------------------------------
Top level: ``addr`` (``HOST:PORT``, required in a file; ``serve --listen`` overrides it),
``hello_wav`` (optional), ``[record] callback_url`` (optional), ``[limits]`` (ours, optional:
``max_audio_s`` ..., see :class:`LimitsConfig`), ``[server]`` (ours, optional: allowed origins
and the API key, see :class:`ServerConfig`), ``[xiaozhi]`` (ours, optional: the xiaozhi-esp32
front end, see :class:`XiaozhiConfig`). The AI *layout* is chosen by the
sections present, in the reference's order: ``pipeline`` (``[llm]`` + ``[tts]`` + ``[asr]``),
``claude`` (``[claude]`` + ``[asr]`` + ``[tts]``), ``gemini_tts`` (``[gemini]`` + ``[tts]``),
``gemini`` (``[gemini]``). ``[llm]``, ``[tts]`` and ``[asr]`` are tagged by ``platform``; every
platform name and alias of the reference is accepted (``openai_chat``/``OpenAIChat``,
``stream_gsv``/``StreamGSV``, ``whisper``/``openai``, ...): each platform's module under
``echokit_fast/backends/`` defines its section model and registers its spellings with
:mod:`echokit_fast.backends.registry`, which this loader reads.

Our own platforms (the embedded engines)
----------------------------------------
``[asr] platform = "local"`` (in-process Whisper, :mod:`echokit_fast.backends.asr.local`) and
``[tts] platform = "local"`` (hibari or Piper, :mod:`echokit_fast.backends.tts.local`); their
keys are described there. ``[llm]`` stays OpenAI-compatible (``openai_chat`` pointing at any
local server).

Embedded default (no config file): local ASR + local TTS + ``openai_chat`` at ``--llm-url`` /
``OPENAI_BASE_URL`` (default ``http://localhost:9091/v1``; ``/chat/completions`` is appended),
key from ``OPENAI_API_KEY``, model from ``OPENAI_MODEL`` (empty = omitted), history 5, a short
system prompt for spoken answers, listening on ``0.0.0.0:8080``.

Where we differ from the reference (on purpose)
-----------------------------------------------
* Errors name file, line and key instead of "data did not match any variant of untagged enum
  AIConfig", and all problems are reported at once. Values are type-checked strictly, like the
  reference's serde (``history = "5"`` is an error, not 5).
* Unknown keys are ignored as in the reference, but each one is reported as a warning with its
  line (logged and collected in :attr:`LoadedConfig.warnings`); so are sections the chosen
  layout does not use.
* ``${VAR}`` and ``${VAR:-default}`` are expanded in every string value (the reference's
  examples assume it, e.g. ``api_key = "${TELNYX_API_KEY}"``). ``:-`` uses the default when the
  variable is unset *or empty*. An unset variable without a default is an error naming the
  variable, the key and the line. ``$${`` is a literal ``${``; any other ``$`` is left alone
  (``$HOME`` is *not* expanded: only the braced form is).
* ``api_key = "Bearer xyz"`` (the gaia example) is stored as ``xyz`` with a note,
  so requests carry exactly one ``Bearer`` (the reference sends ``Bearer Bearer xyz``). The same
  for ``token`` and ``paraformer_token``.
* A relative ``hello_wav`` is looked up in the current directory (like the reference), then in
  the config file's directory; if it is missing or unreadable there is a warning and no hello
  (the reference silently sends none). The resolved file is :attr:`Config.hello_path`.
* ``[tts.text_optimization] url`` pointing at an audio endpoint (``.../audio/transcriptions``,
  as the reference's ``config_llm_opt.toml`` does) is an error: it must be a
  chat-completions endpoint. ``prompts`` written as one table instead of an array of tables is
  an error that says so.
* The OpenAI TTS default model is ``gpt-4o-mini-tts`` (the reference's ``gpt-4o-tts`` is not an
  OpenAI model); ``[gsv] timeout_sec`` must be > 0; ``[asr.vad] threshold`` and
  ``neg_threshold`` must lie in [0, 1] (then capped/floored as in the reference), and
  ``neg_threshold`` must not be above ``threshold``.
* Every URL key is checked at load (:data:`~echokit_fast.backends.schema.HttpUrl`,
  :data:`~echokit_fast.backends.schema.WsUrl`): a scheme the client speaks and a host. An
  integer beyond TOML's 64 bits, and a document nested deeper than the TOML parser can follow,
  are errors (tomllib accepts the one and crashes on the other). The embedded engines' voice,
  compute type and languages are checked against their names without loading them.
* When ``[llm]``, ``[tts]`` and ``[asr]`` are all present the pipeline layout is used and its
  errors reported, even if a ``[gemini]`` section would also have matched (the reference would
  silently fall back to it).
* ``[[llm.mcp_server]]`` is used with ``platform = "openai_responses"`` too (the reference never
  loaded MCP tools for it).
"""

from __future__ import annotations

import bisect
import difflib
import logging
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from echokit_fast.backends import registry
from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.gemini import GeminiConfig
from echokit_fast.backends.llm.local import LocalLLM
from echokit_fast.backends.llm.openai_chat import ChatPrompts, OpenAIChatLLM
from echokit_fast.backends.schema import HttpUrl, Section, VadConfig, WsUrl
from echokit_fast.backends.tts.local import LocalTTS

__all__ = [
    "ClaudeConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "GeminiConfig",
    "LimitsConfig",
    "LoadedConfig",
    "RecordConfig",
    "ServerConfig",
    "XiaozhiConfig",
    "decode_config",
    "default_config",
    "expand_env",
    "key_line",
    "load_config",
    "normalize_origin",
    "parse_config",
    "split_host_port",
    "summary",
]

registry.load()  # every platform registers its section model

log = logging.getLogger(__name__)

DEFAULT_LLM_BASE_URL = "http://localhost:9091/v1"
DEFAULT_ADDR = "0.0.0.0:8080"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Your replies are spoken aloud, so answer in short, "
    "plain sentences: no lists, tables, markdown or emoji. Reply in the language the user "
    "speaks."
)
_DEFAULT_PROMPT = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class ClaudeConfig(Section):
    """``[claude]``: the EchoKit-CC bridge. ``url``: its WebSocket (``ws://``, ``wss://``;
    ``http(s)://`` is taken as ``ws(s)://``), to which each device's session id is appended."""

    url: WsUrl


class RecordConfig(Section):
    """``[record]``. ``dir`` (ours): the folder recordings go to (``record``, relative to the
    current directory like the reference's ``./record``)."""

    callback_url: HttpUrl | None = None
    dir: str = "record"


#: the largest ``data`` chunk of a 16-bit mono WAV: whole samples, its RIFF size (36 + data)
#: within 32 bits
MAX_WAV_DATA_BYTES = 0xFFFFFFFF - 37


class LimitsConfig(Section):
    """``[limits]`` (ours): the caps on what one request or device may cost (the README's
    limits table). ``max_audio_s``: seconds of audio an uploaded file may decode to (600);
    ``max_text_bytes``: UTF-8 bytes of a device's ``Text`` command or an ASR transcript (4096);
    ``max_history_bytes``: UTF-8 bytes of message text one device's LLM history keeps
    (65536); ``max_sessions``: device sessions held at once (1000); ``tts_streams``,
    ``tts_device_reserve``, ``tts_queue_s``: the embedded TTS engine's admission
    (``echokit_fast.backends.tts.local.admission``); ``http_send_timeout_s``: the HTTP TTS
    send deadline (``echokit_fast.api.tts``); ``device_send_timeout_s``: seconds a frame to a
    device may wait for the device to read (120); ``max_record_s``, ``max_record_bytes``: how
    long (3600 s) and how much audio (115 200 000 bytes, an hour) one recording may take;
    ``max_record_disk_bytes_per_device``: bytes of recordings one device id may keep (1 GiB);
    ``max_realtime_event_bytes``: bytes of one JSON event a ``/v1/realtime`` client sends
    (16 MiB, the largest WebSocket message the server reads); ``claude_timeout_s``: how long a
    turn of the claude layout waits for Claude Code (120); then the connection edge's
    timeouts and connection caps, and the backend caps and stage deadlines of a turn (the
    README's table)."""

    max_audio_s: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    max_text_bytes: int = Field(default=4096, ge=1)
    max_history_bytes: int = Field(default=65536, ge=1)
    max_sessions: int = Field(default=1000, ge=1)
    # The embedded TTS engine's streams (devices and the HTTP API together), those only devices
    # may use (default: half), how long a device segment waits for one, and how long an HTTP
    # TTS client may take to accept each chunk of its streamed audio before it is cut off.
    tts_streams: int = Field(default=8, ge=1)
    tts_device_reserve: int | None = Field(default=None, ge=0)
    tts_queue_s: float = Field(default=3.0, ge=0, allow_inf_nan=False)
    http_send_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _device_reserve(self) -> LimitsConfig:
        if self.tts_device_reserve is None:
            self.tts_device_reserve = self.tts_streams // 2
        elif self.tts_device_reserve > self.tts_streams:
            raise ValueError(
                f"tts_device_reserve ({self.tts_device_reserve}) must be at most "
                f"tts_streams ({self.tts_streams})"
            )
        return self

    # a device that stops reading, and record mode
    device_send_timeout_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    max_record_s: float = Field(default=3600.0, gt=0, allow_inf_nan=False)
    max_record_bytes: int = Field(default=115_200_000, ge=2, le=MAX_WAV_DATA_BYTES)
    max_record_disk_bytes_per_device: int = Field(default=2**30, ge=1)
    # /v1/realtime: one client event (a larger one is answered with an error event)
    max_realtime_event_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # the claude layout: how long a turn waits for the next message of Claude Code (EchoKit-CC)
    claude_timeout_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    # The connection edge (echokit_fast/server/edge.py): seconds a request head may take from
    # the connection's opening or its first byte, seconds an upload may stall, seconds an idle
    # keep-alive connection is kept, seconds a WebSocket may send no message (0: never
    # closed), the bytes a request head may hold, connections open at once and per client IP.
    header_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    body_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    keep_alive_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    ws_idle_s: float = Field(default=3600.0, ge=0, allow_inf_nan=False)
    max_head_bytes: int = Field(default=16384, ge=1024)
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=100, ge=1)
    # What a backend may send and how long each stage of a turn may take (README "Limits"):
    # bytes of a JSON answer (ASR, a non-streamed LLM answer) and of one TTS answer's audio;
    # seconds for the transcript, the LLM's first content, a gap without content, the whole
    # answer, one segment's synthesis and the whole turn; characters of one answer.
    max_json_bytes: int = Field(default=1 << 20, ge=1)
    max_tts_bytes: int = Field(default=64 << 20, ge=1)
    asr_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    llm_first_token_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    llm_stall_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    llm_answer_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    max_answer_chars: int = Field(default=16384, ge=1)
    tts_segment_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    turn_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)


class ServerConfig(Section):
    """``[server]`` (ours): who may use the server. ``allowed_origins``: the web origins
    (``scheme://host[:port]``, or ``"*"`` for any) whose pages may open its WebSockets and send
    it state-changing requests, besides requests without an ``Origin`` (devices, curl) and
    same-origin ones; ``api_key`` (one key) and ``api_keys`` (more): when any is set, every
    ``/v1`` API route and ``/downloads/*`` need ``Authorization: Bearer <a key>``
    (``--api-key`` / ``$ECHOKIT_API_KEY`` replace them); ``devices``: when set, the only device
    ids (case-insensitive) the device WebSockets accept, the others refused with 403 before the
    upgrade; ``device_token``: when set, a device must also give it (``?token=`` or
    ``Authorization``), else 401 before the upgrade. See echokit_fast/server/security.py."""

    allowed_origins: list[str] = Field(default_factory=list)
    api_key: str | None = None
    api_keys: list[str] = Field(default_factory=list)
    devices: list[str] | None = None
    device_token: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """Every API key (none: the API is open)."""
        return tuple(k for k in (self.api_key, *self.api_keys) if k)

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: list[str]) -> list[str]:
        keys = [v.strip() for v in value]
        if not all(keys):
            raise ValueError("an API key cannot be empty")
        return keys

    @field_validator("device_token")
    @classmethod
    def _device_token(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the device token cannot be empty (omit the key for none)")
        return None if value is None else value.strip()

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        ids = [v.strip().lower() for v in value]
        if not ids or not all(ids):
            raise ValueError("expected a non-empty list of device ids (omit the key to allow any)")
        return ids

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for v in value:
            origin = v if v == "*" else normalize_origin(v)
            if origin is None:
                raise ValueError(f"expected an origin such as 'http://host:port' or '*', got {v!r}")
            out.append(origin)
        return out


def normalize_origin(value: str) -> str | None:
    """An origin (``scheme://host[:port]``, http or https) as browsers serialise it: lower
    case, without its scheme's default port. None when `value` is not one."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    default = 80 if parts.scheme == "http" else 443
    netloc = parts.netloc.rsplit(":", 1)[0] if port == default else parts.netloc
    return f"{parts.scheme}://{netloc}"


#: the rates an Opus stream (and the xiaozhi firmware's decoder) can run at
OpusRate = Literal[8000, 12000, 16000, 24000, 48000]


class XiaozhiConfig(Section):
    """``[xiaozhi]`` (ours): the xiaozhi-esp32 front end (``echokit_fast/devices/xiaozhi/``,
    docs/xiaozhi.md). ``enabled``: serve ``/xiaozhi/v1/`` and ``/xiaozhi/ota/`` (true);
    ``websocket_url``: the URL the OTA reply hands the boards (default: this server's
    ``/xiaozhi/v1/`` at the host the OTA request was sent to); ``tokens``, ``auth_key``,
    ``token_expire_s``, ``allowed_devices``: who may connect (any of them set turns the check
    on; see ``echokit_fast/devices/xiaozhi/auth.py``); ``downlink_sample_rate``: the rate of
    the speech sent to the boards (24000); ``timezone_offset_min``: the offset from UTC the
    OTA reply gives the boards' clocks (default: the server's own); ``firmware_version`` and
    ``firmware_url``: a firmware image to offer (none by default; both or neither);
    ``idle_close_s``: a connection with no turn for this long is closed, as the firmware
    expects a server to end a conversation (120; 0: never); ``mcp_call_timeout_s``: how long
    a call of one of the device's own tools may take (30)."""

    enabled: bool = True
    websocket_url: WsUrl | None = None
    # who may connect: static tokens, the HMAC tokens signed with auth_key (the OTA reply
    # issues them) and how long they hold, the devices (Device-Id) let in without a token
    tokens: list[str] = Field(default_factory=list)
    auth_key: str | None = Field(default=None, min_length=1)
    token_expire_s: int = Field(default=30 * 24 * 3600, ge=1)
    allowed_devices: list[str] = Field(default_factory=list)
    downlink_sample_rate: OpusRate = 24000
    timezone_offset_min: int | None = Field(default=None, ge=-720, le=840)
    firmware_version: str | None = None
    firmware_url: HttpUrl | None = None
    idle_close_s: float = Field(default=120.0, ge=0, allow_inf_nan=False)
    mcp_call_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        if any(not t.strip() for t in value):
            raise ValueError("a token must not be empty")
        return value

    @model_validator(mode="after")
    def _firmware(self) -> XiaozhiConfig:
        if (self.firmware_version is None) != (self.firmware_url is None):
            raise ValueError("firmware_version and firmware_url go together: give both or neither")
        return self


Layout = Literal["pipeline", "claude", "gemini_tts", "gemini"]


class Config(BaseModel):
    """A validated configuration. ``layout`` says which AI sections are in use."""

    model_config = ConfigDict(strict=True, extra="forbid")

    addr: str
    hello_wav: str | None = None
    record: RecordConfig = Field(default_factory=RecordConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    xiaozhi: XiaozhiConfig = Field(default_factory=XiaozhiConfig)
    layout: Layout
    #: the ``[llm]``, ``[tts]`` and ``[asr]`` sections: each a registered platform's model
    llm: Section | None = None
    tts: Section | None = None
    asr: Section | None = None
    gemini: GeminiConfig | None = None
    claude: ClaudeConfig | None = None
    #: ``hello_wav`` resolved to a readable file, or None (no hello).
    hello_path: Path | None = None

    @property
    def listen(self) -> tuple[str, int]:
        """``addr`` as ``(host, port)``."""
        return split_host_port(self.addr)


_PLAIN: dict[str, type[Section]] = {"gemini": GeminiConfig, "claude": ClaudeConfig}
_TOP_KEYS = {
    *("addr", "hello_wav", "record", "limits", "server", "xiaozhi"),
    *("llm", "tts", "asr", "gemini", "claude"),
}
_SECRET_KEYS = ("api_key", "token", "paraformer_token")


# --------------------------------------------------------------------------------------------
# Issues, errors, result
# --------------------------------------------------------------------------------------------


def format_path(path: Path_) -> str:
    """``("llm", "sys_prompts", 1, "role")`` -> ``llm.sys_prompts[1].role``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


@dataclass(frozen=True)
class ConfigIssue:
    """One problem (or warning, or note) at a key of a config file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The configuration cannot be used; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass
class LoadedConfig:
    """What :func:`load_config` returns."""

    config: Config
    source: Path | None = None
    #: unknown keys, unused sections, missing hello file ... (also logged at WARNING)
    warnings: list[ConfigIssue] = field(default_factory=list)
    #: normalisations applied (Bearer prefix removed, VAD threshold capped ...; logged at INFO)
    notes: list[ConfigIssue] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Key -> line locator
# --------------------------------------------------------------------------------------------


class _Locator:
    """Maps dotted key paths of a TOML document to the line where each key is written.

    Hand-written because nothing maintained exposes key positions: ``tomllib``/``tomli`` return
    plain dicts, and ``tomlkit`` keeps formatting but no positions (its issue #55, "Get the line
    and column numbers of parsed elements", is still open). The document has already
    been parsed by tomllib, so this scanner only needs to follow valid TOML: table headers,
    ``[[arrays of tables]]`` (with their index), dotted keys, strings of the four kinds, arrays
    (element index) and inline tables. Anything it does not follow only costs precision: the
    lookup falls back to the nearest enclosing key that was found.
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.lines: dict[Path_, int] = {}
        self._aot: dict[Path_, int] = {}
        self._starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        try:
            self._document()
        except Exception:  # best effort: keep what was found so far
            log.debug("config locator stopped early at offset %d", self.i, exc_info=True)

    def line_of(self, path: Path_) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    # -- scanning ---------------------------------------------------------------------------

    def _line(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def _record(self, path: Path_, pos: int) -> None:
        self.lines.setdefault(path, self._line(pos))

    def _skip(self, newlines: bool = True) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                while self.i < len(s) and s[self.i] != "\n":
                    self.i += 1
            else:
                break

    def _document(self) -> None:
        s = self.s
        current: Path_ = ()
        while True:
            self._skip()
            if self.i >= len(s):
                return
            start = self.i
            if s.startswith("[[", self.i):
                self.i += 2
                keys = self._key()
                self._skip(False)
                self.i += 2  # ]]
                base = (*self._resolve(keys[:-1]), keys[-1])
                index = self._aot.get(base, -1) + 1
                self._aot[base] = index
                self._record(base, start)
                current = (*base, index)
                self._record(current, start)
            elif s[self.i] == "[":
                self.i += 1
                keys = self._key()
                self._skip(False)
                self.i += 1  # ]
                current = self._resolve(keys)
                self._record(current, start)
            else:
                self._keyval(current)

    def _resolve(self, keys: list[str]) -> Path_:
        out: list[str | int] = []
        for k in keys:
            out.append(k)
            index = self._aot.get(tuple(out))
            if index is not None:
                out.append(index)
        return tuple(out)

    def _keyval(self, table: Path_) -> None:
        start = self.i
        keys = self._key()
        for n in range(1, len(keys) + 1):
            self._record((*table, *keys[:n]), start)
        self._skip(False)
        self.i += 1  # =
        self._skip(False)
        self._value((*table, *keys))

    def _key(self) -> list[str]:
        s = self.s
        parts: list[str] = []
        while True:
            self._skip(False)
            c = s[self.i]
            if c in "\"'":
                begin = self.i
                self._string()
                parts.append(tomllib.loads("k = " + s[begin : self.i])["k"])
            else:
                m = re.compile(r"[A-Za-z0-9_-]+").match(s, self.i)
                if not m:
                    raise ValueError(f"unexpected {c!r} in a key")
                parts.append(m.group())
                self.i = m.end()
            self._skip(False)
            if self.i < len(s) and s[self.i] == ".":
                self.i += 1
                continue
            return parts

    def _string(self) -> None:
        s = self.s
        delim = next(d for d in ('"""', "'''", '"', "'") if s.startswith(d, self.i))
        escapes = delim[0] == '"'  # basic strings have backslash escapes, literal ones do not
        self.i += len(delim)
        while not s.startswith(delim, self.i):
            if escapes and s[self.i] == "\\":
                self.i += 1
            self.i += 1
        self.i += len(delim)
        if len(delim) == 3:  # up to two quotes may end the content: """a"""" is 'a"'
            extra = 0
            while extra < 2 and self.i < len(s) and s[self.i] == delim[0]:
                self.i += 1
                extra += 1

    def _value(self, path: Path_) -> None:
        s = self.s
        c = s[self.i]
        if c in "\"'":
            self._string()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self._skip()
                if s[self.i] == "]":
                    self.i += 1
                    return
                self._record((*path, index), self.i)
                self._value((*path, index))
                self._skip()
                if s[self.i] == ",":
                    self.i += 1
                index += 1
        elif c == "{":
            self.i += 1
            while True:
                self._skip()
                if s[self.i] == "}":
                    self.i += 1
                    return
                start = self.i
                keys = self._key()
                for n in range(1, len(keys) + 1):
                    self._record((*path, *keys[:n]), start)
                self._skip()
                self.i += 1  # =
                self._skip()
                self._value((*path, *keys))
                self._skip()
                if s[self.i] == ",":
                    self.i += 1
        else:  # number, bool, date-time: up to the next delimiter
            m = re.compile(r"[^,\]}\n#]*").match(s, self.i)
            assert m is not None
            self.i = m.end()


# --------------------------------------------------------------------------------------------
# Environment expansion
# --------------------------------------------------------------------------------------------

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${VAR}`` / ``${VAR:-default}`` (``$${`` = literal ``${``) in one string.

    Returns the expanded string and the names of unset variables that had no default.
    """
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        got = env.get(name)
        if default is not None:
            return got if got else default
        if got is None:
            missing.append(name)
            return ""
        return got

    return _ENV_RE.sub(sub, value), missing


def _expand_tree(data: Any, path: Path_, env: Mapping[str, str], out: list[tuple]) -> Any:
    if isinstance(data, str):
        if "$" not in data:
            return data
        value, missing = expand_env(data, env)
        for name in missing:
            out.append((path, name))
        return value
    if isinstance(data, dict):
        return {k: _expand_tree(v, (*path, k), env, out) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_tree(v, (*path, i), env, out) for i, v in enumerate(data)]
    return data


_INT64_MAX = 2**63 - 1


def _outside_int64(data: Any, path: Path_) -> Iterator[tuple[Path_, int]]:
    """The integers TOML does not allow (it has 64-bit ones; tomllib accepts any size)."""
    if isinstance(data, int) and not isinstance(data, bool):
        if not -_INT64_MAX - 1 <= data <= _INT64_MAX:
            yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _outside_int64(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _outside_int64(v, (*path, i))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def split_host_port(value: str) -> tuple[str, int]:
    """``"0.0.0.0:8080"`` -> ``("0.0.0.0", 8080)``; ``[::1]:80`` -> ``("::1", 80)``.
    Port 0 asks the system for an ephemeral port (the one bound is logged at start-up)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 0.0.0.0:8080), got {value!r}")
    return host.strip("[]"), int(port)


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _toml_type(value)
    return f"{_toml_type(value)} {_short(value)}"


def _describe(err: Mapping[str, Any], path: Path_) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "missing required key"
    if kind == "string_type":
        return f"expected a string, got {_got(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {_got(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_got(value)}"
    if kind == "bool_type":
        return f"expected true or false, got {_got(value)}"
    if kind == "list_type":
        if isinstance(value, dict):
            return (
                f"expected an array of tables ([[{format_path(path)}]]), "
                f"got a single table ([{format_path(path)}])"
            )
        return f"expected an array, got {_got(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a table, got {_got(value)}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}, got {_got(value)}"
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"must be {bounds[kind]} {limit}, got {_short(value)}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{err['msg']}, got {_got(value)}"


class _Loader:
    def __init__(self, filename: str, text: str, env: Mapping[str, str]) -> None:
        self.filename = filename
        self.env = env
        self.locator = _Locator(text)
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        self.notes: list[ConfigIssue] = []

    def issue(self, path: Path_, message: str) -> ConfigIssue:
        return ConfigIssue(self.filename, self.locator.line_of(path), format_path(path), message)

    def error(self, path: Path_, message: str) -> None:
        self.errors.append(self.issue(path, message))

    def warn(self, path: Path_, message: str) -> None:
        self.warnings.append(self.issue(path, message))

    def note(self, path: Path_, message: str) -> None:
        self.notes.append(self.issue(path, message))

    def validate(self, model: type[Section], data: Any, path: Path_) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                where = (*path, *err["loc"])
                self.error(where, _describe(err, where))
            return None

    def section(self, data: dict, name: str) -> Any:
        raw = data[name]
        if not isinstance(raw, dict):
            self.error((name,), f"expected a table ([{name}]), got {_got(raw)}")
            return None
        if name in _PLAIN:
            return self.validate(_PLAIN[name], raw, (name,))
        platforms = registry.platforms(name)
        expected = ", ".join(
            p.name + (f" ({', '.join(p.spellings[1:])})" if len(p.spellings) > 1 else "")
            for p in platforms
        )
        tag = raw.get("platform")
        if tag is None:
            legacy = next((p for p in platforms if any(k in raw for k in p.untagged)), None)
            if legacy is None:
                self.error((name, "platform"), f"missing required key (expected one of {expected})")
                return None
            key = next(k for k in legacy.untagged if k in raw)
            self.note(
                (name, "platform"),
                f"not set, using {legacy.name} (echokit_server's format before platform was "
                f"required, told by {name}.{key})",
            )
            tag = legacy.name
        if not isinstance(tag, str):
            self.error((name, "platform"), f"expected a string, got {_got(tag)}")
            return None
        for platform in platforms:
            if tag in platform.spellings:
                body = {k: v for k, v in raw.items() if k != "platform"}
                return self.validate(platform.config, {**body, "platform": platform.name}, (name,))
        spellings = [n for p in platforms for n in p.spellings]
        close = [n for n in spellings if n.lower() == tag.lower()] or difflib.get_close_matches(
            tag, spellings, n=1, cutoff=0.75
        )
        hint = f"did you mean {close[0]!r}? " if close else ""
        elsewhere = [
            k
            for k in registry.KINDS
            if k != name
            and any(tag.lower() == n.lower() for p in registry.platforms(k) for n in p.spellings)
        ]
        if elsewhere and not close:
            hint = (
                f"no version of echokit_server has it as an [{name}] platform; it is a "
                f"[{elsewhere[0]}] platform; "
            )
        self.error(
            (name, "platform"), f"unknown platform {tag!r} ({hint}expected one of {expected})"
        )
        return None

    def layout(self, data: dict) -> Layout | None:
        has = {k for k in ("llm", "tts", "asr", "gemini", "claude") if k in data}
        if {"llm", "tts", "asr"} <= has:
            return "pipeline"
        if {"claude", "asr", "tts"} <= has:
            return "claude"
        if "gemini" in has:
            return "gemini_tts" if "tts" in has else "gemini"
        for head, needs, label in (
            ("llm", ("llm", "tts", "asr"), "the pipeline layout needs [llm], [tts] and [asr]"),
            ("claude", ("claude", "asr", "tts"), "the claude layout needs [claude], [asr], [tts]"),
        ):
            if head in has:
                for missing in (n for n in needs if n not in has):
                    self.error((missing,), f"missing section [{missing}] ({label})")
                return None
        self.error(
            (),
            "no AI section: expected [llm] + [tts] + [asr] (pipeline), [claude] + [asr] + [tts], "
            "or [gemini] (optionally with [tts])",
        )
        return None

    def walk(self, obj: Any, path: Path_) -> Iterator[tuple[BaseModel, Path_]]:
        if isinstance(obj, BaseModel):
            yield obj, path
            for name, info in type(obj).model_fields.items():
                key = info.alias or name
                yield from self.walk(getattr(obj, name), (*path, key))
        elif isinstance(obj, list):
            for i, item in enumerate(obj):
                yield from self.walk(item, (*path, i))

    def finish_section(self, obj: BaseModel, name: str, raw: dict) -> None:
        for model, path in self.walk(obj, (name,)):
            for key in model.model_extra or {}:
                platform = getattr(model, "platform", None) if model is obj else None
                where = f" for platform {platform}" if platform else ""
                self.warn((*path, key), f"unknown key{where} (ignored)")
            for key in _SECRET_KEYS:
                value = getattr(model, key, None) if key in type(model).model_fields else None
                if isinstance(value, str):
                    bare = re.sub(r"^\s*[Bb][Ee][Aa][Rr][Ee][Rr]\s+", "", value)
                    if bare != value:
                        setattr(model, key, bare.strip())
                        self.note(
                            (*path, key),
                            "'Bearer ' prefix removed; the key is sent as "
                            "'Authorization: Bearer <key>' exactly once",
                        )
            if isinstance(model, VadConfig):
                given = _dig(raw, path) or {}
                threshold = given.get("threshold")
                if isinstance(threshold, (int, float)) and threshold > 0.95:
                    self.note((*path, "threshold"), f"{threshold} capped at 0.95")
                neg = given.get("neg_threshold")
                if isinstance(neg, (int, float)) and neg < 0.05:
                    self.note((*path, "neg_threshold"), f"{neg} raised to the floor 0.05")
        if isinstance(obj, Section):
            for key, message in obj.load_notes():
                self.note((name, key), message)


def _dig(data: Any, path: Path_) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _resolve_hello(value: str, base_dir: Path | None) -> tuple[Path | None, str | None]:
    candidate = Path(value).expanduser()
    places = [candidate] if candidate.is_absolute() else [Path.cwd() / candidate]
    if not candidate.is_absolute() and base_dir is not None:
        places.append(base_dir / candidate)
    for place in places:
        if place.is_file():
            if os.access(place, os.R_OK):
                return place, None
            return None, f"{place} is not readable; no hello will be sent"
    looked = " or ".join(str(p) for p in places)
    return None, f"{value!r} not found (looked for {looked}); no hello will be sent"


def parse_config(
    text: str,
    *,
    filename: str = "config.toml",
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    log_issues: bool = True,
) -> LoadedConfig:
    """Validate the TOML ``text`` of a config file (named ``filename`` in messages).

    ``env`` (default ``os.environ``) supplies ``${VAR}`` values; ``base_dir`` is the fallback
    directory for a relative ``hello_wav`` (after the current directory). Warnings are logged
    at WARNING and notes at INFO unless ``log_issues`` is false (they are always returned).
    """
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError([ConfigIssue(filename, line, "", f"invalid TOML: {exc}")]) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        problem = "arrays or inline tables nested too deeply"
        raise ConfigError([ConfigIssue(filename, None, "", f"invalid TOML: {problem}")]) from None
    except ValueError as exc:  # an integer of more digits than int() converts (4300)
        problem = str(exc).split(";")[0]
        raise ConfigError([ConfigIssue(filename, None, "", f"invalid TOML: {problem}")]) from None

    ld = _Loader(filename, text, env)
    unset: list[tuple[Path_, str]] = []
    data = _expand_tree(raw, (), env, unset)
    for path, name in unset:
        ld.error(
            path,
            f"environment variable {name} is not set: set it where the server starts "
            f"({name}=... echokit-fast serve, or Environment={name}=... in a systemd unit), "
            f"or write ${{{name}:-default}} for a fallback (echokit_server would send the "
            f"text ${{{name}}} as is)",
        )
    for path, value in _outside_int64(data, ()):
        ld.error(
            path, f"{_short(value)} is outside TOML's integer range (64-bit, at most {_INT64_MAX})"
        )

    for key in data:
        if key not in _TOP_KEYS:
            ld.warn((key,), "unknown key (ignored)")

    top: dict[str, Any] = {}
    addr = data.get("addr")
    if addr is None:
        ld.error(("addr",), "missing required key (listen address HOST:PORT, e.g. 0.0.0.0:8080)")
    elif not isinstance(addr, str):
        ld.error(("addr",), f"expected a string HOST:PORT, got {_got(addr)}")
    else:
        try:
            split_host_port(addr)
            top["addr"] = addr
        except ValueError as exc:
            ld.error(("addr",), str(exc))
    hello = data.get("hello_wav")
    if hello is not None and not isinstance(hello, str):
        ld.error(("hello_wav",), f"expected a string (a WAV file path), got {_got(hello)}")
    elif hello is not None:
        top["hello_wav"] = hello
    for name, model in (
        ("record", RecordConfig),
        ("limits", LimitsConfig),
        ("server", ServerConfig),
        ("xiaozhi", XiaozhiConfig),
    ):
        if name in data:
            obj = ld.validate(model, data[name], (name,))
            if obj is not None:
                ld.finish_section(obj, name, data)
                top[name] = obj

    layout = ld.layout(data)
    if layout is not None:
        used = {
            "pipeline": ("llm", "tts", "asr"),
            "claude": ("claude", "asr", "tts"),
            "gemini_tts": ("gemini", "tts"),
            "gemini": ("gemini",),
        }[layout]
        for name in ("llm", "tts", "asr", "gemini", "claude"):
            if name in data and name not in used:
                ld.warn((name,), f"section not used by the {layout} layout (ignored)")
        for name in used:
            obj = ld.section(data, name)
            if obj is not None:
                ld.finish_section(obj, name, data)
                top[name] = obj

    if ld.errors:
        raise ConfigError(sorted(ld.errors, key=lambda i: i.line or 0))

    if "hello_wav" in top:
        path, problem = _resolve_hello(top["hello_wav"], Path(base_dir) if base_dir else None)
        top["hello_path"] = path
        if problem:
            ld.warn(("hello_wav",), problem)

    config = Config(layout=layout, **top)
    if log_issues:
        for w in ld.warnings:
            log.warning("%s", w)
        for n in ld.notes:
            log.info("%s", n)
    return LoadedConfig(config=config, warnings=ld.warnings, notes=ld.notes)


def decode_config(data: bytes, *, filename: str = "config.toml") -> str:
    """The text of a config file's bytes (UTF-8), else a :class:`ConfigError` naming the line
    and byte of the first one that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte {exc.start}): {exc.reason}"
        raise ConfigError([ConfigIssue(filename, line, "", message)]) from None


def key_line(text: str, path: tuple[str | int, ...]) -> int | None:
    """The line of the TOML ``text`` where the dotted key ``path`` (or the nearest enclosing
    one) is written; None when it is not there."""
    return _Locator(text).line_of(path)


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    log_issues: bool = True,
) -> LoadedConfig:
    """Read and validate the config file at ``path`` (see :func:`parse_config`)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue(str(p), None, "", f"cannot read the config file: {exc.strerror}")]
        ) from None
    # newlines as text mode reads them (\r\n and a lone \r become \n)
    text = decode_config(data, filename=str(p)).replace("\r\n", "\n").replace("\r", "\n")
    loaded = parse_config(
        text, filename=str(path), env=env, base_dir=p.resolve().parent, log_issues=log_issues
    )
    loaded.source = p
    return loaded


def default_config(
    *,
    llm_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    addr: str = DEFAULT_ADDR,
    env: Mapping[str, str] | None = None,
    turn_detector: Literal["silence", "smart_turn"] = "silence",
    llm_model: str | None = None,
) -> Config:
    """The embedded default used when no config file is given.

    ``turn_detector``: ``[asr.vad] turn_detector`` of the local ASR (``echokit-fast serve``
    without a config file asks for ``"smart_turn"``); ``speculative_reply`` and ``early_asr``
    are on.

    Local ASR + local TTS + ``openai_chat`` at ``llm_url`` / ``OPENAI_BASE_URL`` (default
    ``http://localhost:9091/v1``) with ``/chat/completions`` appended (unless already there),
    key ``api_key`` / ``OPENAI_API_KEY`` (a ``Bearer `` prefix is dropped), model ``model`` /
    ``OPENAI_MODEL`` (empty = omitted), history 5 and a short system prompt for spoken replies.
    A bad URL is a :class:`ConfigError` naming where it came from (``--llm-url`` or
    ``$OPENAI_BASE_URL``).

    ``llm_model`` (``serve --llm-model``): the LLM is in-process instead (``[llm] platform =
    "local"`` with that ``model``, the same history and prompt); no URL is read.
    """
    split_host_port(addr)
    asr = LocalASR(
        vad=VadConfig(turn_detector=turn_detector, speculative_reply=True, early_asr=True)
    )
    if llm_model is not None:
        local = LocalLLM.model_validate(
            {"model": llm_model, "history": 5, "sys_prompts": [_DEFAULT_PROMPT]}
        )
        return Config(addr=addr, layout="pipeline", llm=local, tts=LocalTTS(), asr=asr)
    env = os.environ if env is None else env
    base = (llm_url or env.get("OPENAI_BASE_URL") or DEFAULT_LLM_BASE_URL).rstrip("/")
    url = base if base.endswith("/chat/completions") else base + "/chat/completions"
    key = api_key if api_key is not None else env.get("OPENAI_API_KEY")
    if key:
        key = re.sub(r"^\s*[Bb][Ee][Aa][Rr][Ee][Rr]\s+", "", key).strip()
    try:
        llm = OpenAIChatLLM.model_validate(
            {
                "url": url,
                "api_key": key or None,
                "model": model if model is not None else env.get("OPENAI_MODEL", ""),
                "history": 5,
                "sys_prompts": [_DEFAULT_PROMPT],
            }
        )
    except ValidationError as exc:
        where = "--llm-url" if llm_url else "$OPENAI_BASE_URL"
        raise ConfigError(
            [ConfigIssue(where, None, "", _describe(e, ("llm", *e["loc"]))) for e in exc.errors()]
        ) from None
    return Config(addr=addr, layout="pipeline", llm=llm, tts=LocalTTS(), asr=asr)


def _endpoint(obj: Any) -> str:
    parts = [obj.platform]
    for key in ("url", "engine", "model", "speaker", "voice"):
        value = getattr(obj, key, None)
        if value:
            parts.append(value if key == "url" else f"{key}={value}")
    if isinstance(obj, ChatPrompts):
        parts.append(f"history={obj.history}")
    return "  ".join(parts)


def summary(loaded: LoadedConfig | Config) -> str:
    """A short human-readable description (no secrets): layout, addr, one line per section."""
    cfg = loaded.config if isinstance(loaded, LoadedConfig) else loaded
    layouts = {
        "pipeline": "pipeline (asr -> llm -> tts)",
        "claude": "claude (asr -> EchoKit-CC -> tts)",
        "gemini_tts": "gemini + tts (Gemini Live text, our TTS)",
        "gemini": "gemini (Gemini Live audio)",
    }
    lines = [f"layout: {layouts[cfg.layout]}", f"addr:   {cfg.addr}"]
    for name in ("asr", "llm", "tts"):
        obj = getattr(cfg, name)
        if obj is not None:
            lines.append(f"{name + ':':<7} {_endpoint(obj)}")
    if cfg.gemini is not None:
        lines.append(f"gemini: model={cfg.gemini.model}")
    if cfg.claude is not None:
        lines.append(f"claude: {cfg.claude.url}")
    if cfg.hello_wav is not None:
        lines.append(f"hello:  {cfg.hello_path or '(none: ' + cfg.hello_wav + ' not found)'}")
    if cfg.record.callback_url:
        lines.append(f"record: callback {cfg.record.callback_url}")
    return "\n".join(lines)
