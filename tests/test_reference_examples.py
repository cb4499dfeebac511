"""Every example config of the reference repository (tests/data/configs) holds a voice turn.

Each file's service addresses are pointed at stand-ins speaking the services' wire formats (the
URL keys it has rewritten, a ``url`` added where it relies on a vendor default; every other key
kept), the real server is started on it in-process and a device holds one voice turn: the
speech of ``vad_fixture_hello16k.wav`` reaches the ASR (or Gemini), the transcript reaches the
LLM with the config's model and prompts (and MCP tools), the answer reaches the TTS with the
config's voice, and the device gets every sample of the speech and ``EndResponse``.

``examples/tts/11labs`` is left out (its ``[asr]`` platform exists in no echokit_server);
``examples/tts/gpt-sovits/config_llm_opt.toml`` is refused by design (compatibility.md:
Configuration) and the test asserts the refusal.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import tomllib
import wave
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from device_fakes import Device, name
from gemini_standin import RATE, Answer, GeminiServer, running_gemini
from standins import ASRServer, ChatServer, MCPStandin, ResponsesServer, TTSServer, tool_call
from ws_standins import CosyVoiceServer, ElevenLabsServer, ParaformerServer, running_ws_server

from echokit_fast.audio import OpusDecoder, pcm16_to_float, resample
from echokit_fast.config import Config, ConfigError, parse_config
from echokit_fast.server.app import create_app
from echokit_fast.server.state import AppState

DATA = Path(__file__).resolve().parent / "data"
CONFIGS = DATA / "configs"
SR = 16000
FRAME = 16384
FIRMWARE = {"opus": True, "vowel": True, "stream_asr": True}

EXAMPLES = sorted(
    str(p.relative_to(CONFIGS))
    for p in CONFIGS.rglob("*.toml")
    if p.parent.name != "11labs"  # an [asr] platform no echokit_server has (test_config.py)
)
#: the examples refused by design: (key, words of the message)
REFUSED = {
    "examples/tts/gpt-sovits/config_llm_opt.toml": ("tts.text_optimization.url", "audio endpoint")
}
ENV = {"examples/telnyx/config.toml": {"TELNYX_API_KEY": "KEY-123"}}

QUESTION = "What's the weather like in Paris?"
ANSWER = ["It is sunny in Paris. ", "Take your sunglasses and enjoy the walk!"]
SEGMENTS = ["It is sunny in Paris.", "Take your sunglasses and enjoy the walk!"]


def speech() -> bytes:
    """The utterance as the firmware uploads it: from 256 ms before the speech, then 2 s of
    silence."""
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())
    return pcm[2 * 4096 :] + bytes(2 * SR * 2)


def padded(samples: int) -> int:
    """What the device decodes of ``samples``: all of them, zero-padded to 120 ms packets."""
    return -(-samples // 1920) * 1920


def bearer(headers: dict[str, str], key: str) -> None:
    """One ``Authorization: Bearer <key>`` with a key, none without."""
    if key:
        assert headers["authorization"] == f"Bearer {key}"
    else:
        assert "authorization" not in headers


# --------------------------------------------------------------------------------------------
# pointing a config file at the stand-ins
# --------------------------------------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\[?\s*([\w.-]+)\s*\]\]?\s*(#.*)?$")


def _tables(raw: dict[str, Any], dotted: str) -> list[dict[str, Any]]:
    """The table(s) at ``dotted`` (an array of tables gives each of its entries)."""
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node if isinstance(node, list) else [node]


def url_key(raw: dict[str, Any], table: str) -> str:
    """The key of ``table`` that holds its service's address."""
    if table == "llm.mcp_server":
        return "server"
    return "llm_chat_url" if "llm_chat_url" in _tables(raw, table)[0] else "url"


def pointed_at(text: str, urls: dict[str, str]) -> str:
    """``text`` with the address of each table of ``urls`` (a dotted name -> URL) replaced:
    its line rewritten, or a ``url`` line added under the table's header when the file relies on
    the default (at most one address line per table, as in every example). Every other line is
    kept; the result must parse to the file's values with only those addresses changed."""
    raw = tomllib.loads(text)
    keys = {table: url_key(raw, table) for table in urls}
    expected = copy.deepcopy(raw)
    for table, url in urls.items():
        for t in _tables(expected, table):
            t[keys[table]] = url
    out, table, in_string = [], "", False
    for line in text.splitlines(keepends=True):
        header = None if in_string else _HEADER.match(line)
        if header:
            table = header[1]
            out.append(line)
            if table in urls and keys[table] not in _tables(raw, table)[0]:
                out.append(f"{keys[table]} = {json.dumps(urls[table])}\n")
            continue
        key = None if in_string else line.split("=", 1)[0].strip()
        if table in urls and key == keys[table]:
            line = f"{key} = {json.dumps(urls[table])}\n"
        out.append(line)
        # a line inside a multi-line string is no header nor key
        in_string ^= (line.count('"""') + line.count("'''")) % 2 == 1
    result = "".join(out)
    assert tomllib.loads(result) == expected
    return result


def test_pointed_at_rewrites_adds_and_keeps_the_rest() -> None:
    text = (
        '[asr]\nurl = "https://a/x" # a comment\n[llm]\nllm_chat_url = "https://b"\n'
        '[[llm.mcp_server]]\nserver = "http://m"\n[tts]\nplatform = "groq"\nvoice = "v"\n'
        'content = """\nurl = "inside a string"\n"""\n'
    )
    urls = {"asr": "http://1", "llm": "http://2", "llm.mcp_server": "http://3", "tts": "ws://4"}
    got = tomllib.loads(pointed_at(text, urls))
    assert got["asr"] == {"url": "http://1"}
    assert got["llm"]["llm_chat_url"] == "http://2"
    assert got["llm"]["mcp_server"] == [{"server": "http://3"}]
    assert got["tts"] == {
        "url": "ws://4",
        "platform": "groq",
        "voice": "v",
        "content": 'url = "inside a string"\n',
    }


# --------------------------------------------------------------------------------------------
# the stand-ins, one kind per platform
# --------------------------------------------------------------------------------------------


class Start:
    """Starts stand-ins for one test: HTTP ones with the ``serve`` fixture, WebSocket ones in
    ``stack``."""

    def __init__(self, serve: Callable[..., str], stack: ExitStack) -> None:
        self.http = serve
        self.stack = stack

    def ws(self, standin: Any) -> str:
        return self.stack.enter_context(running_ws_server(standin))


class OpenAIEar:
    """``[asr] platform = "openai"``: the multipart request as the reference sends it."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = ASRServer(QUESTION)
        self.url = f"http://{start.http(self.srv.app)}/v1/audio/transcriptions"

    def check(self, cfg: Any) -> None:
        (req,) = self.srv.requests
        wav = req.part("file")
        assert isinstance(wav, bytes) and wav[:4] == b"RIFF" and len(wav) > 44 + 2 * SR
        fields = {"language": cfg.lang, "model": cfg.model, "prompt": cfg.prompt}
        assert req.parts[1:] == [(k, None, v) for k, v in fields.items() if v]
        bearer(req.headers, cfg.api_key)


class ParaformerEar:
    """``[asr] platform = "paraformer_v2"``: the microphone streamed to the recognizer."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = ParaformerServer(cfg.paraformer_token)
        self.srv.say(QUESTION, end_silence_ms=500)
        self.url = f"ws://{start.ws(self.srv)}/api-ws/v1/inference"

    def check(self, cfg: Any) -> None:
        (task,) = self.srv.tasks
        assert len(task.audio) > 2 * SR and speech().startswith(bytes(task.audio))
        assert task.results[-1]["text"] == QUESTION and task.results[-1]["sentence_end"]
        assert self.srv.handshakes[0].headers["authorization"] == f"Bearer {cfg.paraformer_token}"


class ChatBrain:
    """``[llm] platform = "openai_chat"``; with MCP servers the answer follows a tool call."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = ChatServer()
        self.url = f"http://{start.http(self.srv.app)}/v1/chat/completions"
        if cfg.mcp_server:
            self.srv.reply(tool_call("c1", "weather", '{"city": "Paris"}'))
        self.srv.reply(ANSWER)

    def check(self, cfg: Any) -> None:
        first, last = self.srv.requests[0], self.srv.requests[-1]
        assert len(self.srv.requests) == (2 if cfg.mcp_server else 1)
        body = first.json
        system = [{"role": p.role, "content": p.content} for p in cfg.sys_prompts]
        assert body["messages"] == [*system, {"role": "user", "content": QUESTION}]
        assert body.get("model") == (cfg.model or None)
        for key, value in (cfg.extra or {}).items():
            assert body[key] == value, key
        bearer(first.headers, cfg.api_key)
        if cfg.mcp_server:  # the MCP stand-in's tools offered, its answer sent back
            assert {t["function"]["name"] for t in body["tools"]} == {"weather", "boom"}
            assert last.json["messages"][-1] == {
                "role": "tool",
                "content": '{\n  "city": "Paris",\n  "temp": 21\n}',
                "tool_call_id": "c1",
            }


class ResponsesBrain:
    """``[llm] platform = "openai_responses"``."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = ResponsesServer()
        self.url = f"http://{start.http(self.srv.app)}/v1/responses"
        self.srv.reply(ANSWER)

    def check(self, cfg: Any) -> None:
        (req,) = self.srv.requests
        first = cfg.sys_prompts[0] if cfg.sys_prompts else None
        instructions = first.content if first and first.role == "system" else cfg.instructions
        assert req.json["model"] == cfg.model and req.json["input"] == QUESTION
        assert req.json["instructions"] == instructions
        for key, value in (cfg.extra or {}).items():
            assert req.json[key] == value, key
        bearer(req.headers, cfg.api_key)


#: the TTSServer endpoint of each HTTP TTS platform
HTTP_TTS_PATHS = {
    "openai": "/v1/audio/speech",
    "groq": "/v1/audio/speech",
    "gsv": "/gsv",
    "stream_gsv": "/v1/audio/stream_speech",
}


class HTTPVoice:
    """``[tts]`` over HTTP: ``openai``/``groq`` (WAV), ``gsv`` (WAV), ``stream_gsv`` (PCM); the
    stand-in answers at 16 kHz, so the device's audio is the TTS's, sample for sample."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = TTSServer(rate=SR)
        self.url = f"http://{start.http(self.srv.app)}{HTTP_TTS_PATHS[cfg.platform]}"

    def check(self, cfg: Any, segments: list[str]) -> None:
        assert sorted(r.json["input"] for r in self.srv.requests) == sorted(segments)
        for req in self.srv.requests:
            if cfg.platform in ("openai", "groq"):
                assert (req.json["voice"], req.json["model"]) == (cfg.voice, cfg.model)
                bearer(req.headers, cfg.api_key)
            else:
                assert req.json["speaker"] == cfg.speaker

    def samples(self, text: str) -> int:
        return round(self.srv.duration(text) * SR)


class CosyVoice:
    """``[tts] platform = "cosyvoice"``."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = CosyVoiceServer()
        self.url = f"ws://{start.ws(self.srv)}/api-ws/v1/inference"

    def check(self, cfg: Any, segments: list[str]) -> None:
        tasks = [json.loads(t)["payload"] for t in self.srv.tasks]
        assert sorted(t["input"]["text"] for t in tasks) == sorted(segments)
        assert {(t["model"], t["parameters"]["voice"]) for t in tasks} == {(cfg.model, cfg.voice)}
        assert {h.headers["authorization"] for h in self.srv.handshakes} == {f"Bearer {cfg.token}"}

    def samples(self, text: str) -> int:
        return round(self.srv.duration(text) * SR)


class ElevenLabs:
    """``[tts] platform = "elevenlabs"``."""

    def __init__(self, cfg: Any, start: Start) -> None:
        self.srv = ElevenLabsServer()
        self.url = f"ws://{start.ws(self.srv)}/v1/text-to-speech"

    def check(self, cfg: Any, segments: list[str]) -> None:
        texts = ["".join(json.loads(m)["text"] for m in conn) for conn in self.srv.messages]
        assert sorted(texts) == sorted(segments)
        for hs in self.srv.handshakes:
            assert hs.path.split("?")[0] == f"/v1/text-to-speech/{cfg.voice}/stream-input"
            assert hs.query["model_id"] == cfg.effective_model_id
            assert hs.headers["xi-api-key"] == cfg.token

    def samples(self, text: str) -> int:
        return round(self.srv.duration(text) * SR)


class Gemini:
    """``[gemini]``: the ear and the brain, and the voice too when there is no ``[tts]``."""

    def __init__(self, cfg: Any, start: Start, *, speaks: bool) -> None:
        self.srv = GeminiServer()
        self.answer = Answer(heard=QUESTION, said=ANSWER)
        self.srv.script.append(self.answer)
        self.url = start.stack.enter_context(running_gemini(self.srv))
        self.speaks = speaks

    def check(self, cfg: Any) -> None:
        (conn,) = self.srv.connections
        assert conn.path.endswith(f"?key={cfg.api_key}")
        setup = json.loads(conn.setup)["setup"]
        assert setup["model"] == cfg.model
        prompt = setup["systemInstruction"]["parts"][0]["text"]
        assert prompt == cfg.sys_prompts[0].content
        modality = "AUDIO" if self.speaks else "TEXT"
        assert setup["generationConfig"] == {"responseModalities": [modality]}
        heard = conn.audio()
        assert len(heard) > 2 * SR and speech().startswith(heard)

    def samples(self, text: str) -> int:
        return len(resample(pcm16_to_float(self.answer.pcm()), RATE, SR))


EARS = {"openai": OpenAIEar, "paraformer_v2": ParaformerEar}
BRAINS = {"openai_chat": ChatBrain, "openai_responses": ResponsesBrain}
VOICES = {
    **dict.fromkeys(HTTP_TTS_PATHS, HTTPVoice),
    "cosyvoice": CosyVoice,
    "elevenlabs": ElevenLabs,
}


class Turn:
    """The stand-ins the config ``cfg`` names, started, with the URLs to point it at."""

    def __init__(self, cfg: Config, start: Start) -> None:
        self.urls: dict[str, str] = {}
        self.gemini = None
        if cfg.gemini is not None:
            self.gemini = Gemini(cfg.gemini, start, speaks=cfg.tts is None)
            self.urls["gemini"] = self.gemini.url
        else:
            self.ear = EARS[cfg.asr.platform](cfg.asr, start)
            self.brain = BRAINS[cfg.llm.platform](cfg.llm, start)
            self.urls |= {"asr": self.ear.url, "llm": self.brain.url}
        self.mcp = None
        if cfg.llm is not None and cfg.llm.mcp_server:
            self.mcp = MCPStandin(cfg.llm.mcp_server[0].type)
            self.urls["llm.mcp_server"] = f"http://{start.http(self.mcp.app)}{self.mcp.path}"
        self.voice: Any = self.gemini
        if cfg.tts is not None:
            self.voice = VOICES[cfg.tts.platform](cfg.tts, start)
            self.urls["tts"] = self.voice.url

    def segments(self, cfg: Config) -> list[str]:
        """What the device should hear, segment by segment."""
        if cfg.tts is None:  # Gemini speaks: one segment titled with its first words
            return [ANSWER[0].strip()]
        if self.mcp is not None and cfg.llm.mcp_server[0].call_mcp_message:
            return [cfg.llm.mcp_server[0].call_mcp_message, *SEGMENTS]
        return SEGMENTS

    def check(self, cfg: Config, segments: list[str]) -> None:
        if self.gemini is not None:
            self.gemini.check(cfg.gemini)
        else:
            self.ear.check(cfg.asr)
            self.brain.check(cfg.llm)
        if self.mcp is not None:
            assert self.mcp.calls == [("weather", {"city": "Paris"})]
        if cfg.tts is not None:
            self.voice.check(cfg.tts, segments)


# --------------------------------------------------------------------------------------------
# the turn
# --------------------------------------------------------------------------------------------


async def voice_turn(addr: str) -> list[Any]:
    dev = await Device.open(addr, "a0b1c2d3e4f5", **FIRMWARE)
    await dev.command("StartChat")
    await dev.audio(speech(), FRAME)
    events = await dev.until("EndResponse", timeout=30)
    await dev.close()
    return events


def decoded_segments(events: list[Any]) -> list[tuple[str, int]]:
    """(title, samples decoded) of each segment the device got."""
    out: list[tuple[str, int]] = []
    dec = OpusDecoder(SR)
    for ev in events:
        if name(ev) == "StartAudio":
            dec.reset()
            out.append((ev["StartAudio"]["text"], 0))
        elif name(ev) == "AudioChunkWithVowel":
            title, n = out[-1]
            out[-1] = (title, n + len(dec.decode(ev["AudioChunkWithVowel"]["data"])))
    return out


@pytest.mark.parametrize("rel", [e for e in EXAMPLES if e not in REFUSED])
def test_reference_example_holds_a_voice_turn(rel: str, serve, tmp_path: Path) -> None:
    text = (CONFIGS / rel).read_text()
    env = ENV.get(rel, {})
    named = parse_config(text, filename=rel, env=env, log_issues=False).config
    with ExitStack() as stack:
        turn = Turn(named, Start(serve, stack))
        cfg = parse_config(
            pointed_at(text, turn.urls), filename=rel, env=env, base_dir=tmp_path, log_issues=False
        ).config
        state = AppState(cfg)
        state.record_dir = tmp_path / "record"
        addr = serve(create_app(state=state))
        events = asyncio.run(asyncio.wait_for(voice_turn(addr), 60))

    names = [name(e) for e in events]
    end_vad, first_audio = names.index("EndVad"), names.index("StartAudio")
    assert end_vad < first_audio
    assert [e for e in events[end_vad:first_audio] if name(e) == "ASR"] == [
        {"ASR": {"text": QUESTION}}
    ]
    expected = turn.segments(cfg)
    segments = decoded_segments(events)
    assert segments == [(s, padded(turn.voice.samples(s))) for s in expected]
    assert "DisplayText" not in names  # no notice: nothing failed
    assert names[-2:] == ["EndAudio", "EndResponse"]
    turn.check(cfg, expected)


@pytest.mark.parametrize("rel", sorted(REFUSED))
def test_reference_example_refused_by_design(rel: str) -> None:
    path, words = REFUSED[rel]
    with pytest.raises(ConfigError) as info:
        parse_config((CONFIGS / rel).read_text(), filename=rel, env={}, log_issues=False)
    (issue,) = info.value.issues
    assert issue.path == path and words in issue.message


def test_every_example_but_11labs_is_covered() -> None:
    every = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.toml")}
    assert every - set(EXAMPLES) == {"examples/tts/11labs/config.toml"}
    assert {"config.toml", "config.gemini.toml", "docker/server/config.toml"} <= set(EXAMPLES)
