"""The platform registry: every platform and spelling of the reference, what serve refuses, and a
throwaway platform that goes from a config file to a built backend without touching any other
module."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Literal

import numpy as np
import pytest

from echokit_fast.backends import registry
from echokit_fast.backends.base import Backends, SpeakNow
from echokit_fast.backends.schema import Section
from echokit_fast.config import ConfigError, parse_config

# echokit_server 0.3.2's serde variant names and aliases (canonical first), plus our "local", in
# the order the loader lists them.
REFERENCE = {
    "asr": {
        "openai": ("openai", "whisper", "Whisper", "OpenAI"),
        "paraformer_v2": ("paraformer_v2", "ParaformerV2"),
        "local": ("local",),
    },
    "tts": {
        "openai": ("openai", "Openai", "OpenAI"),
        "groq": ("groq", "Groq"),
        "gsv": ("gsv", "GSV", "Stable"),
        "stream_gsv": ("stream_gsv", "StreamGSV"),
        "fish": ("fish", "Fish"),
        "cosyvoice": ("cosyvoice", "CosyVoice"),
        "elevenlabs": ("elevenlabs", "Elevenlabs"),
        "local": ("local",),
    },
    "llm": {
        "openai_chat": ("openai_chat", "OpenAIChat"),
        "openai_responses": ("openai_responses", "OpenAIResponses"),
        "local": ("local",),
    },
}

SECTIONS = {
    "asr": '[asr]\nplatform = "openai"\nurl = "http://asr.local/v1/audio/transcriptions"\n',
    "tts": '[tts]\nplatform = "stream_gsv"\nurl = "http://tts.local/speech"\nspeaker = "c"\n',
    "llm": '[llm]\nplatform = "openai_chat"\nurl = "http://llm.local/v1/chat"\nhistory = 1\n',
}


def config_text(**sections: str) -> str:
    """A pipeline config: the stand-in sections above unless replaced."""
    return 'addr = "127.0.0.1:0"\n' + "".join(sections.get(k, v) for k, v in SECTIONS.items())


@pytest.mark.parametrize("kind", registry.KINDS)
def test_every_platform_and_spelling_of_the_reference_is_registered(kind):
    got = {p.name: p.spellings for p in registry.platforms(kind)}
    assert got == REFERENCE[kind]
    assert list(got) == list(REFERENCE[kind])  # the order of "expected one of ..."


@pytest.mark.parametrize(
    "kind, name, spelling",
    [(k, n, s) for k, names in REFERENCE.items() for n, spells in names.items() for s in spells],
)
def test_each_spelling_selects_its_platform(kind, name, spelling):
    # Only the platform key is given: the errors are the platform's own missing keys, never an
    # unknown platform; a platform without required keys loads.
    text = config_text(**{kind: f'[{kind}]\nplatform = "{spelling}"\n'})
    try:
        section = getattr(parse_config(text, env={}, log_issues=False).config, kind)
    except ConfigError as exc:
        assert "unknown platform" not in str(exc)
        assert all(i.path.startswith(f"{kind}.") for i in exc.issues), str(exc)
    else:
        assert section.platform == name
        assert type(section) is registry.get(kind, name).config


def test_every_platform_of_the_reference_has_a_build():
    for kind, names in REFERENCE.items():
        for name in names:
            assert registry.get(kind, name).runnable, (kind, name)


class SchemaOnlyASR(Section):
    platform: Literal["schema_only"] = "schema_only"
    key: str


def test_a_platform_without_a_build_is_refused_in_the_words_serve_uses():
    registry.asr("schema_only", config=SchemaOnlyASR)  # registered, not applied to a build
    try:
        text = config_text(asr='[asr]\nplatform = "schema_only"\nkey = "x"\n')
        config = parse_config(text, env={}, log_issues=False).config
        runnable = ", ".join(p.name for p in registry.platforms("asr") if p.runnable)
        assert registry.unsupported(config) == [
            f"[asr] platform 'schema_only' is not supported yet (supported: {runnable})"
        ]
        with pytest.raises(NotImplementedError, match="platform 'schema_only' is not supported"):
            registry.build_backends(config)
    finally:
        registry.unregister("asr", "schema_only")


def test_a_spelling_cannot_be_registered_twice():
    class Clash(Section):
        platform: Literal["clash"] = "clash"

    with pytest.raises(ValueError, match="StreamGSV already registered"):
        registry.tts("clash", aliases=["StreamGSV"], config=Clash)
    assert registry.get("tts", "clash") is None


def test_the_model_must_declare_its_platform_name():
    class Nameless(Section):
        url: str = ""

    with pytest.raises(ValueError, match="must declare platform"):
        registry.asr("nameless", config=Nameless)


# --- a throwaway platform of each kind ------------------------------------------------------


class FakeASR(Section):
    platform: Literal["fake_asr"] = "fake_asr"
    text: str


class FakeTTS(Section):
    platform: Literal["fake_tts"] = "fake_tts"
    level: float = 0.5


class FakeLLM(Section):
    platform: Literal["fake_llm"] = "fake_llm"
    answer: str


class EchoTranscriber:
    def __init__(self, cfg: FakeASR) -> None:
        self.cfg = cfg

    async def transcribe(self, audio, *, sample_rate=16000) -> str:
        return self.cfg.text

    def start(self, audio, *, sample_rate=16000):
        raise NotImplementedError


class LevelSpeaker:
    def __init__(self, cfg: FakeTTS) -> None:
        self.cfg = cfg

    async def speak(self, text: str, *, sample_rate: int = 16000) -> AsyncIterator[np.ndarray]:
        yield np.full(len(text), self.cfg.level, np.float32)


class CannedConversation:
    def __init__(self, answer: str, device_id: str) -> None:
        self.answer, self.device_id = answer, device_id

    async def reply(self, user_text: str) -> AsyncIterator[str | SpeakNow]:
        yield f"{self.answer} {user_text}"

    def reset(self) -> None:
        pass


@pytest.fixture
def fakes() -> Iterator[None]:
    @registry.asr("fake_asr", aliases=["FakeASR"], config=FakeASR)
    def build_asr(cfg: FakeASR, needs: registry.Needs) -> EchoTranscriber:
        return EchoTranscriber(cfg)

    @registry.tts("fake_tts", aliases=["FakeTTS"], config=FakeTTS)
    def build_tts(cfg: FakeTTS, needs: registry.Needs) -> LevelSpeaker:
        return LevelSpeaker(cfg)

    @registry.llm("fake_llm", config=FakeLLM)
    def build_llm(cfg: FakeLLM, needs: registry.Needs):
        return lambda device_id: CannedConversation(cfg.answer, device_id)

    try:
        yield
    finally:
        for kind, name in (("asr", "fake_asr"), ("tts", "fake_tts"), ("llm", "fake_llm")):
            if registry.get(kind, name) is not None:
                registry.unregister(kind, name)


FAKE_CONFIG = config_text(
    asr='[asr]\nplatform = "FakeASR"\ntext = "hello"\n',
    tts='[tts]\nplatform = "FakeTTS"\nlevel = 0.25\n',
    llm='[llm]\nplatform = "fake_llm"\nanswer = "you said"\n',
)


def test_a_registered_platform_loads_and_builds(fakes):
    config = parse_config(FAKE_CONFIG, env={}, log_issues=False).config
    assert isinstance(config.asr, FakeASR) and config.asr.text == "hello"
    assert isinstance(config.tts, FakeTTS) and config.tts.level == 0.25
    assert isinstance(config.llm, FakeLLM) and config.llm.platform == "fake_llm"
    assert registry.unsupported(config) == []

    backends = registry.build_backends(config)
    assert isinstance(backends, Backends)
    transcriber, speaker, factory = backends

    async def turn() -> tuple[str, list[str | SpeakNow], np.ndarray]:
        text = await transcriber.transcribe(np.zeros(160, np.float32))
        conversation = factory("dev1")
        reply = [d async for d in conversation.reply(text)]
        audio = [c async for c in speaker.speak("abc")]
        await backends.aclose()  # nothing to close: must not fail
        return text, reply, np.concatenate(audio)

    text, reply, audio = asyncio.run(turn())
    assert text == "hello" and reply == ["you said hello"]
    assert audio.tolist() == [0.25, 0.25, 0.25]


def test_a_registered_platform_is_checked_by_its_model(fakes):
    text = FAKE_CONFIG.replace('text = "hello"\n', "text = 5\n")
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={}, log_issues=False)
    assert [(i.line, i.path, i.message) for i in err.value.issues] == [
        (4, "asr.text", "expected a string, got an integer 5")
    ]


def test_an_unregistered_platform_is_unknown_again(fakes):
    registry.unregister("tts", "fake_tts")
    with pytest.raises(ConfigError, match="unknown platform 'FakeTTS'"):
        parse_config(FAKE_CONFIG, env={}, log_issues=False)


def test_local_platforms_use_the_engines_they_are_given():
    text = config_text(
        asr='[asr]\nplatform = "local"\nmodel = "tiny"\n',
        tts='[tts]\nplatform = "local"\nvoice = "heart"\n',
    )
    config = parse_config(text, env={}, log_issues=False).config
    seen = []

    def local_asr(cfg):
        seen.append(("asr", cfg.model))
        return "the shared whisper"

    def local_tts(cfg):
        seen.append(("tts", cfg.voice))
        return "the shared tts"

    async def build() -> Backends:
        backends = registry.build_backends(config, local_asr=local_asr, local_tts=local_tts)
        await backends.aclose()
        return backends

    backends = asyncio.run(build())
    assert backends.transcriber == "the shared whisper" and backends.speaker == "the shared tts"
    assert seen == [("asr", "tiny"), ("tts", "heart")]


def test_loading_a_config_imports_no_engine():
    local = config_text(asr='[asr]\nplatform = "local"\n', tts='[tts]\nplatform = "local"\n')
    code = textwrap.dedent(
        f"""
        import sys
        from echokit_fast.config import parse_config
        text = {local!r}
        config = parse_config(text, env={{}}, log_issues=False).config
        assert config.asr.platform == config.tts.platform == "local"
        heavy = ("faster_whisper", "ctranslate2", "onnxruntime", "hibari", "piper", "openai")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.endswith(".engine"))
        print(loaded)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
