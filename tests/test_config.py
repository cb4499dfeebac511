"""config.toml loading: the reference's example configs, every schema rule, errors with lines."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import free_port, spawned_serve

from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.tts.local import LocalTTS
from echokit_fast.config import (
    Config,
    ConfigError,
    LoadedConfig,
    _Locator,
    default_config,
    expand_env,
    load_config,
    parse_config,
    split_host_port,
    summary,
)

DATA = Path(__file__).resolve().parent / "data"
CONFIGS = DATA / "configs"

PIPELINE = """\
addr = "0.0.0.0:8080"

[llm]
platform = "openai_chat"
url = "http://llm.local/v1/chat/completions"
history = 5

[tts]
platform = "stream_gsv"
url = "http://tts.local/v1/audio/stream_speech"
speaker = "cooper"

[asr]
platform = "openai"
url = "http://asr.local/v1/audio/transcriptions"
"""


def parse(text: str, env: dict[str, str] | None = None, **kw: Any) -> LoadedConfig:
    return parse_config(textwrap.dedent(text), filename="config.toml", env=env or {}, **kw)


def errors_of(text: str, env: dict[str, str] | None = None) -> list[Any]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value.issues


def line_of(text: str, needle: str, start: int = 1) -> int:
    """1-based number of the first line at or after `start` that contains `needle`."""
    for n, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if n >= start and needle in line:
            return n
    raise AssertionError(f"{needle!r} not in text")


def with_section(section: str, body: str, base: str = PIPELINE) -> str:
    """PIPELINE with the table `[section]` replaced by `body` (which includes its header)."""
    out, skip = [], False
    for line in base.splitlines():
        if line.startswith("["):
            skip = line.strip() == f"[{section}]"
            if skip:
                out.append(textwrap.dedent(body).strip())
                continue
        if not skip:
            out.append(line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# The reference's example configs
# ---------------------------------------------------------------------------------------------

# path -> (layout, expected values read off the file by hand)
VALID_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "config.toml": (
        "pipeline",
        {
            "addr": "0.0.0.0:8080",
            "tts.platform": "openai",
            "tts.voice": "ash",
            "asr.platform": "openai",
            "asr.model": "gpt-4o-mini-transcribe",
            "llm.platform": "openai_chat",
            "llm.model": "gpt-5-nano",
            "llm.history": 5,
        },
    ),
    "config.gemini.toml": (
        "gemini_tts",
        {
            "gemini.api_key": "xxxx",
            "gemini.sys_prompts.0.content": "你叫胡桃，是一个优秀的翻译官。\n",
            "tts.platform": "gsv",
            "tts.speaker": "speaker2",
        },
    ),
    "docker/server/config.toml": (
        "pipeline",
        {
            "tts.model": "canopylabs/orpheus-v1-english",
            "asr.prompt": "Hello\n你好\n(noise)\n(bgm)\n(silence)\n",
            "llm.url": "https://api.groq.com/openai/v1/chat/completions",
        },
    ),
    "examples/alibailian/config.toml": (
        "pipeline",
        {
            "asr.platform": "paraformer_v2",
            "asr.paraformer_token": "sk-API-KEY",
            "asr.url": "wss://dashscope.aliyuncs.com/api-ws/v1/inference",
            "tts.platform": "cosyvoice",
            "tts.voice": "longhua_v2",
            "tts.version": "V2",
            "llm.extra": {"enable_search": True},
            "llm.model": "qwen-plus",
        },
    ),
    "examples/gaia/config.toml": (
        "pipeline",
        {
            "addr": "0.0.0.0:9090",
            "hello_wav": "hello.wav",
            "tts.platform": "stream_gsv",
            "tts.speaker": "cooper",
            "asr.platform": "openai",
            "asr.lang": "auto",
            "asr.vad_url": "http://localhost:9093/v1/audio/vad",
            "asr.vad_realtime_url": None,
            "llm.url": "http://localhost:9091/v1/chat/completions",
            "llm.api_key": "gaia-1234",
            "llm.model": "default",
            "llm.history": 5,
            "llm.sys_prompts.0.role": "system",
        },
    ),
    "examples/gaia/english_teacher/config.toml": ("pipeline", {"llm.api_key": "gaia-1234"}),
    "examples/gaia/oppenheimer/config.toml": ("pipeline", {"llm.history": 5}),
    "examples/gaia/paris/config.toml": ("pipeline", {"tts.speaker": "cooper"}),
    "examples/gaia/singapore/config.toml": ("pipeline", {"asr.lang": "auto"}),
    "examples/gaia/steve_jobs/config.toml": ("pipeline", {"llm.model": ""}),
    "examples/gaia/translate/config.toml": (
        "pipeline",
        {"llm.history": 0, "llm.api_key": "gaia-1234"},
    ),
    "examples/gemini/chat/config.toml": (
        "gemini",
        {"gemini.api_key": "", "gemini.model": "models/gemini-2.0-flash-exp"},
    ),
    "examples/gemini/live/config.toml": ("gemini", {"gemini.api_key": "ABCD-1234-xyz"}),
    "examples/gemini/custom_tts/config.toml": (
        "gemini_tts",
        {
            "tts.platform": "elevenlabs",
            "tts.voice": "VOICE-ID-FROM-YOUR-ACCOUNT",
            "tts.effective_model_id": "eleven_flash_v2_5",
            "tts.token": "sk_abcd1234",
        },
    ),
    "examples/gemini/singapore/config.toml": ("gemini_tts", {"tts.platform": "stream_gsv"}),
    "examples/gemini/steve_jobs/config.toml": (
        "gemini_tts",
        {
            "tts.platform": "gsv",
            "tts.timeout_sec": 15,
            "tts.url": "http://localhost:9093/v1/audio/speech",
        },
    ),
    "examples/grok/chat/config.toml": (
        "pipeline",
        {"llm.url": "https://api.x.ai/v1/chat/completions"},
    ),
    "examples/grok/responses/config.toml": (
        "pipeline",
        {
            "llm.platform": "openai_responses",
            "llm.extra": {"tools": [{"type": "web_search"}]},
            "llm.instructions": "You are a helpful assistant.",
        },
    ),
    "examples/groq/chat/config.toml": ("pipeline", {"asr.model": "whisper-large-v3"}),
    "examples/groq/responses/config.toml": (
        "pipeline",
        {
            "llm.platform": "openai_responses",
            "llm.url": "https://api.groq.com/openai/v1/chat/responses",
            "llm.extra": {"tools": [{"type": "browser_search"}]},
        },
    ),
    "examples/mcp/config.toml": (
        "pipeline",
        {
            "llm.history": 10,
            "llm.mcp_server.0.server": "http://localhost:8000/mcp",
            "llm.mcp_server.0.type": "http_streamable",
            "llm.mcp_server.0.call_mcp_message": (
                "Please hold on a few seconds while I am searching for an answer!"
            ),
        },
    ),
    "examples/openai/chat/config.toml": (
        "pipeline",
        {"tts.url": "https://api.openai.com/v1/audio/speech"},
    ),
    "examples/openai/responses/config.toml": (
        "pipeline",
        {
            "llm.platform": "openai_responses",
            "llm.extra": {"tools": [{"type": "web_search_preview"}]},
        },
    ),
    "examples/tts/cosyvoice/config.toml": (
        "pipeline",
        {"tts.platform": "cosyvoice", "tts.token": "sk-API-KEY"},
    ),
    "examples/tts/gpt-sovits/config.toml": (
        "pipeline",
        {"tts.platform": "stream_gsv", "tts.speaker": "texan"},
    ),
    # the pre-0.3 format: [asr] and [llm] without platform
    "course/slides.toml": (
        "pipeline",
        {"asr.platform": "openai", "llm.platform": "openai_chat", "llm.api_key": "gaia-1234"},
    ),
    "examples/gaia/chat/config.toml": (
        "pipeline",
        {"asr.platform": "openai", "llm.platform": "openai_chat", "llm.history": 5},
    ),
    "examples/gaia/mcp/config.toml": (
        "pipeline",
        {"llm.platform": "openai_chat", "llm.mcp_server.0.server": "http://localhost:8000/mcp"},
    ),
    "examples/groq/config.toml": (
        "pipeline",
        {"asr.platform": "openai", "asr.model": "whisper-large-v3", "tts.platform": "groq"},
    ),
}

PRE_03 = {k for k in VALID_EXAMPLES if k.startswith("course/")} | {
    "examples/gaia/chat/config.toml",
    "examples/gaia/mcp/config.toml",
    "examples/groq/config.toml",
}

INVALID_EXAMPLES = {
    "examples/tts/11labs/config.toml",
    "examples/tts/gpt-sovits/config_llm_opt.toml",
    "examples/telnyx/config.toml",
}


def dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def check_against_raw(cfg: Config, raw: dict[str, Any]) -> int:
    """Every key the file sets in a used section has the file's value in the model."""
    checked = 0
    for section in ("llm", "tts", "asr", "gemini", "claude"):
        model = getattr(cfg, section)
        if model is None or section not in raw:
            continue
        for key, value in raw[section].items():
            if key == "platform":
                continue
            attr = {"llm_chat_url": "url", "llm_responses_url": "url"}.get(key, key)
            got = getattr(model, attr)
            if isinstance(value, list):
                assert len(got) == len(value), (section, key)
                for item_raw, item in zip(value, got, strict=True):
                    for k, v in item_raw.items():
                        assert getattr(item, k) == v, (section, key, k)
                        checked += 1
            elif isinstance(value, str) and value.startswith("Bearer "):
                assert got == value.removeprefix("Bearer "), (section, key)
            else:
                assert got == value, (section, key)
            checked += 1
    return checked


def test_every_example_is_accounted_for() -> None:
    found = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.toml")}
    assert found == set(VALID_EXAMPLES) | INVALID_EXAMPLES
    assert (DATA / "gaia_config.toml").read_text() == (
        CONFIGS / "examples/gaia/config.toml"
    ).read_text()


@pytest.mark.parametrize("rel", sorted(VALID_EXAMPLES))
def test_reference_example_loads_unchanged(rel: str) -> None:
    layout, expected = VALID_EXAMPLES[rel]
    path = CONFIGS / rel
    loaded = load_config(path, env={})
    cfg = loaded.config
    assert loaded.source == path
    assert cfg.layout == layout
    for dotted, value in expected.items():
        assert dig(cfg, dotted) == value, dotted
    assert check_against_raw(cfg, tomllib.loads(path.read_text())) >= 2
    inferred = {n.path for n in loaded.notes if "platform was required" in n.message}
    assert inferred == ({"asr.platform", "llm.platform"} if rel in PRE_03 else set())
    # Nothing in the examples is an error; the only warnings are the absent hello.wav and the
    # reference's long-gone `background_gif` key.
    for w in loaded.warnings:
        assert w.path in ("hello_wav", "background_gif"), str(w)


def test_gaia_acceptance_case() -> None:
    loaded = load_config(DATA / "gaia_config.toml", env={})
    cfg = loaded.config
    assert cfg.listen == ("0.0.0.0", 9090)
    assert cfg.llm is not None and cfg.llm.api_key == "gaia-1234"  # "Bearer gaia-1234" in the file
    bearer = [n for n in loaded.notes if n.path == "llm.api_key"]
    assert len(bearer) == 1 and bearer[0].line == 23 and "Bearer" in bearer[0].message
    assert cfg.asr is not None and cfg.asr.vad.threshold == 0.5
    assert cfg.llm.sys_prompts[0].content.startswith("You are a helpful assistant.")
    assert "如果用户说中文" in cfg.llm.sys_prompts[0].content
    assert "gaia-1234" not in summary(loaded)


def test_elevenlabs_example_fails_naming_keys_and_lines() -> None:
    path = CONFIGS / "examples/tts/11labs/config.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    by_path = {i.path: i for i in info.value.issues}
    asr = by_path["asr.platform"]
    assert asr.line == 11 and asr.file == str(path)
    assert "unknown platform 'Elevenlabs'" in asr.message
    assert "openai (whisper, Whisper, OpenAI)" in asr.message
    assert "no version of echokit_server has it as an [asr] platform" in asr.message
    assert "it is a [tts] platform" in asr.message
    # the untagged [llm] is the old openai_chat format: inferred, not an error
    assert set(by_path) == {"asr.platform"}
    assert str(asr) == f"{path}:11: asr.platform: {asr.message}"
    assert "did not match any variant" not in str(info.value)


def test_llm_opt_example_fails_on_the_transcription_url() -> None:
    path = CONFIGS / "examples/tts/gpt-sovits/config_llm_opt.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (issue,) = info.value.issues
    assert issue.path == "tts.text_optimization.url" and issue.line == 11
    assert "audio endpoint" in issue.message and "chat-completions" in issue.message


def test_llm_opt_commented_prompts_as_a_table_fail_clearly() -> None:
    text = (CONFIGS / "examples/tts/gpt-sovits/config_llm_opt.toml").read_text()
    text = text.replace('v1/audio/transcriptions"\napi_key', 'v1/chat/completions"\napi_key', 1)
    text = text.replace("# [tts.text_optimization.prompts]", "[tts.text_optimization.prompts]")
    text = text.replace('# role = "system"', 'role = "system"')
    text = text.replace('# content = """\n# You are', 'content = """\nYou are')
    text = text.replace('synthesis.\n# """', 'synthesis.\n"""')
    (issue,) = errors_of(text)
    assert issue.path == "tts.text_optimization.prompts"
    assert issue.line == line_of(text, "[tts.text_optimization.prompts]")
    assert "expected an array of tables ([[tts.text_optimization.prompts]])" in issue.message


def test_telnyx_example_needs_its_variable() -> None:
    path = CONFIGS / "examples/telnyx/config.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    issues = info.value.issues
    assert [(i.path, i.line) for i in issues] == [
        ("asr.api_key", 26),
        ("tts.api_key", 34),
        ("llm.api_key", 40),
    ]
    assert all("TELNYX_API_KEY is not set" in i.message for i in issues)
    cfg = load_config(path, env={"TELNYX_API_KEY": "KEY-123"}).config
    assert cfg.asr.api_key == cfg.tts.api_key == cfg.llm.api_key == "KEY-123"
    assert cfg.llm.model == "gpt-4o-mini" and cfg.tts.voice == "alloy"


# ---------------------------------------------------------------------------------------------
# Platforms, aliases, defaults
# ---------------------------------------------------------------------------------------------

# (section, spelling, canonical) straight from docs/compatibility.md#configuration plus our "local".
ALIASES = [
    ("llm", "openai_chat", "openai_chat"),
    ("llm", "OpenAIChat", "openai_chat"),
    ("llm", "openai_responses", "openai_responses"),
    ("llm", "OpenAIResponses", "openai_responses"),
    ("tts", "openai", "openai"),
    ("tts", "Openai", "openai"),
    ("tts", "OpenAI", "openai"),
    ("tts", "groq", "groq"),
    ("tts", "Groq", "groq"),
    ("tts", "gsv", "gsv"),
    ("tts", "GSV", "gsv"),
    ("tts", "Stable", "gsv"),
    ("tts", "stream_gsv", "stream_gsv"),
    ("tts", "StreamGSV", "stream_gsv"),
    ("tts", "fish", "fish"),
    ("tts", "Fish", "fish"),
    ("tts", "cosyvoice", "cosyvoice"),
    ("tts", "CosyVoice", "cosyvoice"),
    ("tts", "elevenlabs", "elevenlabs"),
    ("tts", "Elevenlabs", "elevenlabs"),
    ("tts", "local", "local"),
    ("asr", "openai", "openai"),
    ("asr", "whisper", "openai"),
    ("asr", "Whisper", "openai"),
    ("asr", "OpenAI", "openai"),
    ("asr", "paraformer_v2", "paraformer_v2"),
    ("asr", "ParaformerV2", "paraformer_v2"),
    ("asr", "local", "local"),
]

# Enough keys for any platform of the section; the unused ones only produce warnings.
EVERYTHING = {
    "llm": "history = 1",
    "tts": 'speaker = "s"\napi_key = "k"\nvoice = "v"\ntoken = "t"',
    "asr": 'paraformer_token = "p"',
}
WEBSOCKET_PLATFORMS = {"cosyvoice", "elevenlabs", "paraformer_v2"}


@pytest.mark.parametrize(("section", "spelling", "canonical"), ALIASES)
def test_platform_aliases(section: str, spelling: str, canonical: str) -> None:
    url = "ws://x" if canonical in WEBSOCKET_PLATFORMS else "http://x"
    keys = "" if canonical == "local" else f'url = "{url}"\n{EVERYTHING[section]}'
    body = f'[{section}]\nplatform = "{spelling}"\n{keys}'
    cfg = parse(with_section(section, body)).config
    assert getattr(cfg, section).platform == canonical


def test_llm_chat_url_alias_and_conflict() -> None:
    body = '[llm]\nplatform = "OpenAIChat"\nllm_chat_url = "http://a"\nhistory = 2'
    loaded = parse(with_section("llm", body))
    assert loaded.config.llm.url == "http://a"
    assert loaded.warnings == []  # the alias is a known key, not an unknown one
    both = (
        '[llm]\nplatform = "openai_chat"\nurl = "http://a"\nllm_chat_url = "http://b"\nhistory = 2'
    )
    (issue,) = errors_of(with_section("llm", both))
    assert issue.path == "llm" and "url and llm_chat_url are the same setting" in issue.message


@pytest.mark.parametrize(
    ("section", "body", "platform", "key"),
    [
        ("asr", 'url = "http://a/v1/audio/transcriptions"', "openai", "url"),
        ("asr", 'paraformer_token = "sk-1"', "paraformer_v2", "paraformer_token"),
        ("llm", 'llm_chat_url = "http://a"\nhistory = 2', "openai_chat", "llm_chat_url"),
        ("llm", 'url = "http://a"\nhistory = 2', "openai_chat", "url"),
    ],
)
def test_untagged_sections_of_older_versions(
    section: str, body: str, platform: str, key: str
) -> None:
    loaded = parse(with_section(section, f"[{section}]\n{body}"))
    assert getattr(loaded.config, section).platform == platform
    (note,) = [n for n in loaded.notes if n.path == f"{section}.platform"]
    assert note.message.startswith(f"not set, using {platform} ")
    assert f"told by {section}.{key}" in note.message
    assert loaded.warnings == []


def test_untagged_section_without_a_telling_key_is_an_error() -> None:
    (issue,) = errors_of(with_section("llm", '[llm]\nmodel = "x"\nhistory = 2'))
    assert issue.path == "llm.platform" and issue.message.startswith("missing required key")


def test_openai_chat_defaults_and_required_keys() -> None:
    llm = parse(PIPELINE).config.llm
    assert (llm.api_key, llm.model, llm.prompts_url, llm.extra) == (None, "", None, None)
    assert llm.sys_prompts == [] and llm.dynamic_prompts == [] and llm.mcp_server == []
    text = with_section("llm", '[llm]\nplatform = "openai_chat"\nmodel = "m"')
    issues = {i.path: i for i in errors_of(text)}
    assert set(issues) == {"llm.url", "llm.history"}
    assert issues["llm.history"].message == "missing required key"
    assert issues["llm.history"].line == line_of(text, "[llm]")


def test_openai_responses_defaults() -> None:
    llm = parse(with_section("llm", '[llm]\nplatform = "openai_responses"')).config.llm
    assert llm.url == "https://api.openai.com/v1/responses"
    assert llm.model == "gpt-4.1"
    assert llm.instructions == "You are a helpful assistant."
    assert llm.api_key == "" and llm.extra is None


def test_responses_mcp_servers_are_loaded_without_a_warning() -> None:
    # The reference ignored them for openai_responses (docs/compatibility.md#llm); this server uses
    # them.
    body = '[llm]\nplatform = "openai_responses"\n[[llm.mcp_server]]\nserver = "http://m"'
    loaded = parse(with_section("llm", body))
    assert [m.server for m in loaded.config.llm.mcp_server] == ["http://m"]
    assert not [w for w in loaded.warnings if w.path.startswith("llm.mcp_server")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'platform = "openai"\napi_key = "k"',
            {
                "model": "gpt-4o-mini-tts",
                "voice": "alloy",
                "url": "https://api.openai.com/v1/audio/speech",
            },
        ),
        (
            'platform = "groq"\napi_key = "k"\nvoice = "Fritz-PlayAI"',
            {"model": "playai-tts", "url": "https://api.groq.com/openai/v1/audio/speech"},
        ),
        (
            'platform = "Stable"\nurl = "http://g"\nspeaker = "s"',
            {"timeout_sec": 15, "api_key": "", "text_optimization": None},
        ),
        (
            'platform = "fish"\napi_key = "k"\nspeaker = "s"',
            {"url": "https://api.fish.audio/v1/tts"},
        ),
        (
            'platform = "cosyvoice"\ntoken = "t"',
            {
                "speaker": None,
                "version": "V2",
                "voice": "longwan_v2",
                "url": "wss://dashscope.aliyuncs.com/api-ws/v1/inference",
            },
        ),
        ('platform = "cosyvoice"\ntoken = "t"\nversion = "V1"', {"voice": "longwan"}),
        (
            'platform = "elevenlabs"\ntoken = "t"\nvoice = "v"',
            {
                "model_id": "",
                "effective_model_id": "eleven_flash_v2_5",
                "language_code": "",
                "url": "wss://api.elevenlabs.io/v1/text-to-speech",
            },
        ),
        ('platform = "local"', {"engine": "hibari", "voice": None, "speed": 1.0}),
        (
            'platform = "local"\nengine = "piper"\nspeaker = "joe"\nspeed = 1',
            {"engine": "piper", "voice": "joe", "speed": 1.0},
        ),
    ],
)
def test_tts_defaults(body: str, expected: dict[str, Any]) -> None:
    tts = parse(with_section("tts", f"[tts]\n{body}")).config.tts
    for key, value in expected.items():
        assert getattr(tts, key) == value, key


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ('platform = "openai"', {"tts.api_key"}),
        ('platform = "groq"\napi_key = "k"', {"tts.voice"}),
        ('platform = "gsv"', {"tts.url", "tts.speaker"}),
        ('platform = "stream_gsv"\nurl = "http://u"', {"tts.speaker"}),
        ('platform = "fish"\napi_key = "k"', {"tts.speaker"}),
        ('platform = "cosyvoice"', {"tts.token"}),
        ('platform = "elevenlabs"\ntoken = "t"', {"tts.voice"}),
    ],
)
def test_tts_required_keys(body: str, missing: set[str]) -> None:
    text = with_section("tts", f"[tts]\n{body}")
    issues = errors_of(text)
    assert {i.path for i in issues} == missing
    assert all(i.message == "missing required key" for i in issues)
    assert all(i.line == line_of(text, "[tts]") for i in issues)


def test_asr_defaults() -> None:
    asr = parse(PIPELINE).config.asr
    assert (asr.api_key, asr.lang, asr.model, asr.prompt) == ("", "", "", "")
    assert asr.vad_url is None and asr.vad_realtime_url is None
    body = '[asr]\nplatform = "ParaformerV2"\nparaformer_token = "p"'
    para = parse(with_section("asr", body)).config.asr
    assert para.url == "wss://dashscope.aliyuncs.com/api-ws/v1/inference"


def test_gemini_and_claude_layouts() -> None:
    gem = parse('addr = "h:1"\n[gemini]\napi_key = "g"').config
    assert gem.layout == "gemini" and gem.gemini.model == "models/gemini-2.0-flash-exp"
    assert gem.tts is None and gem.llm is None
    loaded = parse(with_section("llm", '[claude]\nurl = "ws://cc"'))
    assert loaded.config.layout == "claude" and loaded.config.claude.url == "ws://cc"
    assert loaded.config.tts.platform == "stream_gsv" and loaded.config.asr.platform == "openai"


def test_sections_unused_by_the_layout_are_warned_not_validated() -> None:
    text = 'addr = "h:1"\n[gemini]\napi_key = "g"\n[asr]\nplatform = "nonsense"\n'
    loaded = parse(text)
    assert loaded.config.layout == "gemini"
    (w,) = loaded.warnings
    assert (w.path, w.line) == ("asr", 4) and "not used by the gemini layout" in w.message
    loaded = parse(PIPELINE + '[gemini]\napi_key = "g"\n')
    assert loaded.config.layout == "pipeline" and loaded.config.gemini is None
    assert [w.path for w in loaded.warnings] == ["gemini"]


def test_missing_sections_are_named() -> None:
    text = PIPELINE.split("[asr]")[0]
    (issue,) = errors_of(text)
    assert issue.path == "asr" and "missing section [asr]" in issue.message
    (issue,) = errors_of('addr = "h:1"\n')
    assert issue.path == "" and "no AI section" in issue.message
    assert str(issue).startswith("config.toml: no AI section")


def test_message_defaults_and_roles() -> None:
    text = (
        PIPELINE + '[[llm.sys_prompts]]\ncontent = "hi"\n[[llm.dynamic_prompts]]\nrole = "user"\n'
    )
    llm = parse(text).config.llm
    assert (llm.sys_prompts[0].role, llm.sys_prompts[0].content) == ("assistant", "hi")
    assert (llm.dynamic_prompts[0].role, llm.dynamic_prompts[0].content) == ("user", "")


def test_mcp_server_defaults_and_type() -> None:
    loaded = parse(PIPELINE + '[[llm.mcp_server]]\nserver = "http://m/sse"\n')
    mcp = loaded.config.llm.mcp_server[0]
    assert (mcp.type, mcp.call_mcp_message, mcp.api_key) == ("http_streamable", "", "")
    text = (
        PIPELINE
        + '[[llm.mcp_server]]\nserver = "http://a"\n[[llm.mcp_server]]\nserver = "http://b"\n'
        + 'type = "ws"\n'
    )
    (issue,) = errors_of(text)
    assert issue.path == "llm.mcp_server[1].type"
    assert issue.line == line_of(text, 'type = "ws"')
    assert "'http_streamable' or 'sse'" in issue.message and "'ws'" in issue.message


# ---------------------------------------------------------------------------------------------
# VAD caps and floors
# ---------------------------------------------------------------------------------------------


def vad_of(body: str) -> Any:
    return parse(PIPELINE + f"[asr.vad]\n{body}\n")


def test_vad_defaults() -> None:
    vad = parse(PIPELINE).config.asr.vad
    assert vad.threshold == 0.5
    assert vad.neg_threshold == pytest.approx(0.35)
    assert (vad.min_speech_duration_ms, vad.max_silence_duration_ms, vad.hangover_ms) == (
        400,
        200,
        500,
    )


def test_vad_threshold_capped_and_neg_follows_the_cap() -> None:
    loaded = vad_of("threshold = 0.99")
    vad = loaded.config.asr.vad
    assert vad.threshold == 0.95 and vad.neg_threshold == pytest.approx(0.80)
    (note,) = [n for n in loaded.notes if n.path == "asr.vad.threshold"]
    assert "capped at 0.95" in note.message


def test_vad_neg_threshold_floor() -> None:
    assert vad_of("threshold = 0.1").config.asr.vad.neg_threshold == 0.05
    loaded = vad_of("neg_threshold = 0.01")
    assert loaded.config.asr.vad.neg_threshold == 0.05
    assert any(n.path == "asr.vad.neg_threshold" for n in loaded.notes)
    assert vad_of("threshold = 0.6\nneg_threshold = 0.3").config.asr.vad.neg_threshold == 0.3


def test_vad_out_of_range_and_wrong_types() -> None:
    text = PIPELINE + "[asr.vad]\nthreshold = 1.5\nhangover_ms = 2.5\n"
    issues = {i.path: i for i in errors_of(text)}
    assert issues["asr.vad.threshold"].message == "must be <= 1.0, got 1.5"
    assert issues["asr.vad.threshold"].line == line_of(text, "threshold = 1.5")
    assert issues["asr.vad.hangover_ms"].message == "expected an integer, got a float 2.5"
    assert vad_of("threshold = 1").config.asr.vad.threshold == 0.95  # an integer is a number


def test_vad_neg_above_threshold_is_an_error() -> None:
    text = PIPELINE + "[asr.vad]\nthreshold = 0.4\nneg_threshold = 0.6\n"
    (issue,) = errors_of(text)
    assert issue.path == "asr.vad.neg_threshold"
    assert issue.line == line_of(text, "neg_threshold = 0.6")
    assert "0.6 is above threshold 0.4" in issue.message
    assert vad_of("threshold = 0.4\nneg_threshold = 0.4").config.asr.vad.neg_threshold == 0.4


# ---------------------------------------------------------------------------------------------
# Errors and warnings with lines
# ---------------------------------------------------------------------------------------------


def test_unknown_platform_message_format() -> None:
    text = with_section("tts", '[tts]\nplatform = "elevenlabs2"\ntoken = "t"')
    (issue,) = errors_of(text)
    line = line_of(text, "elevenlabs2")
    assert str(issue).startswith(
        f"config.toml:{line}: tts.platform: unknown platform 'elevenlabs2' "
        "(did you mean 'elevenlabs'? expected one of openai (Openai, OpenAI), groq (Groq), "
    )
    assert "gsv (GSV, Stable)" in issue.message and issue.message.endswith("local)")


def test_platform_case_mistake_gets_a_suggestion() -> None:
    (issue,) = errors_of(with_section("asr", '[asr]\nplatform = "WHISPER"\nurl = "u"'))
    assert "did you mean 'whisper'?" in issue.message


def test_wrong_types_name_key_and_line() -> None:
    text = PIPELINE.replace("history = 5", 'history = "5"').replace(
        'speaker = "cooper"', "speaker = 7"
    )
    issues = {i.path: i for i in errors_of(text)}
    assert issues["llm.history"].message == "expected an integer, got a string '5'"
    assert issues["llm.history"].line == line_of(text, 'history = "5"')
    assert issues["tts.speaker"].message == "expected a string, got an integer 7"
    assert issues["tts.speaker"].line == line_of(text, "speaker = 7")
    (issue,) = errors_of(PIPELINE.replace("history = 5", "history = true"))
    assert issue.message == "expected an integer, got a boolean True"
    (issue,) = errors_of(PIPELINE.replace("history = 5", "history = -1"))
    assert issue.message == "must be >= 0, got -1"
    (issue,) = errors_of(PIPELINE.replace('platform = "stream_gsv"', "platform = 3"))
    assert (issue.path, issue.message) == ("tts.platform", "expected a string, got an integer 3")


def test_array_of_tables_errors_carry_the_index() -> None:
    text = PIPELINE + (
        '[[llm.sys_prompts]]\nrole = "system"\ncontent = "a"\n\n'
        '[[llm.sys_prompts]]\nrole = "robot"\ncontent = "b"\n'
    )
    (issue,) = errors_of(text)
    assert issue.path == "llm.sys_prompts[1].role"
    assert issue.line == line_of(text, 'role = "robot"')
    assert "'system', 'user', 'assistant' or 'tool'" in issue.message


def test_inline_array_of_tables_errors_carry_the_index() -> None:
    text = PIPELINE.replace(
        "history = 5",
        'history = 5\nsys_prompts = [\n  { role = "system", content = "a" },\n'
        '  { role = "user", content = 3 },\n]',
    )
    (issue,) = errors_of(text)
    assert issue.path == "llm.sys_prompts[1].content"
    assert issue.line == line_of(text, "content = 3")


def test_all_errors_are_reported_together_in_line_order() -> None:
    text = PIPELINE.replace("history = 5", "history = -2").replace(
        'speaker = "cooper"', "speaker = []"
    )
    text = text.replace('addr = "0.0.0.0:8080"', 'addr = "nowhere"')
    issues = errors_of(text)
    assert [i.path for i in issues] == ["addr", "llm.history", "tts.speaker"]
    assert [i.line for i in issues] == sorted(i.line for i in issues)
    assert "expected HOST:PORT" in issues[0].message


def test_addr_is_required_and_checked() -> None:
    (issue,) = errors_of(PIPELINE.replace('addr = "0.0.0.0:8080"\n', ""))
    assert issue.path == "addr" and issue.message.startswith("missing required key")
    (issue,) = errors_of(PIPELINE.replace('"0.0.0.0:8080"', "8080"))
    assert issue.line == 1 and "expected a string HOST:PORT" in issue.message
    assert parse(PIPELINE.replace("0.0.0.0:8080", "[::1]:9000")).config.listen == ("::1", 9000)


def test_toml_syntax_error_keeps_tomllib_position() -> None:
    text = PIPELINE.replace("history = 5", "history = = 5")
    (issue,) = errors_of(text)
    line = line_of(text, "history = = 5")
    assert str(issue).startswith(f"config.toml:{line}: invalid TOML: ")
    assert f"line {line}, column" in issue.message


def test_unknown_keys_warn_with_lines_and_never_fail(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        'addr = "0.0.0.0:8080"\nbackground_gif = "b.gif"\n'
        + PIPELINE.split("\n", 1)[1].replace("history = 5", "history = 5\ntemperature = 0.2")
        + '[[llm.sys_prompts]]\nrole = "system"\ncolour = "red"\n'
        + '[record]\ncallback_url = "http://cb"\nretries = 3\n'
    )
    with caplog.at_level(logging.WARNING, logger="echokit_fast.config"):
        loaded = parse(text)
    got = {(w.path, w.line) for w in loaded.warnings}
    assert got == {
        ("background_gif", 2),
        ("llm.temperature", line_of(text, "temperature")),
        ("llm.sys_prompts[0].colour", line_of(text, "colour")),
        ("record.retries", line_of(text, "retries")),
    }
    assert "for platform openai_chat" in next(
        w.message for w in loaded.warnings if w.path == "llm.temperature"
    )
    assert loaded.config.record.callback_url == "http://cb"
    logged = [r.getMessage() for r in caplog.records]
    assert any("background_gif: unknown key (ignored)" in m for m in logged)
    assert len(logged) == len(loaded.warnings)


def test_keys_of_another_platform_are_unknown_for_this_one() -> None:
    loaded = parse(PIPELINE.replace('speaker = "cooper"', 'speaker = "cooper"\nvoice = "x"'))
    (w,) = loaded.warnings
    assert w.path == "tts.voice" and "platform stream_gsv" in w.message


# ---------------------------------------------------------------------------------------------
# ${VAR} expansion
# ---------------------------------------------------------------------------------------------


def test_expand_env_forms() -> None:
    env = {"A": "alpha", "EMPTY": ""}
    assert expand_env("x${A}y", env) == ("xalphay", [])
    assert expand_env("${MISSING:-fallback}", env) == ("fallback", [])
    assert expand_env("${EMPTY:-fallback}", env) == ("fallback", [])
    assert expand_env("${EMPTY}", env) == ("", [])
    assert expand_env("$${A} costs $5 and $A", env) == ("${A} costs $5 and $A", [])
    assert expand_env("${NOPE}/${NADA}", env) == ("/", ["NOPE", "NADA"])


def test_env_expansion_in_every_string_value() -> None:
    text = PIPELINE.replace("http://llm.local", "${LLM_BASE:-http://fallback}")
    text += '[[llm.sys_prompts]]\nrole = "system"\ncontent = "You are ${NAME}."\n'
    text += '[llm.extra]\nuser = "${USER_ID}"\n'
    env = {"NAME": "Echo", "USER_ID": "u-1"}
    llm = parse(text, env).config.llm
    assert llm.url == "http://fallback/v1/chat/completions"
    assert llm.sys_prompts[0].content == "You are Echo."
    assert llm.extra == {"user": "u-1"}
    env["LLM_BASE"] = "https://api.example"
    assert parse(text, env).config.llm.url == "https://api.example/v1/chat/completions"


def test_unset_variable_is_an_error_naming_variable_key_and_line() -> None:
    text = (
        PIPELINE + '[[llm.sys_prompts]]\ncontent = "ok"\n[[llm.sys_prompts]]\ncontent = "${WHO}"\n'
    )
    (issue,) = errors_of(text)
    assert issue.path == "llm.sys_prompts[1].content"
    assert issue.line == line_of(text, "${WHO}")
    assert "environment variable WHO is not set: set it where the server starts" in issue.message
    assert "WHO=... echokit-fast serve" in issue.message and "${WHO:-default}" in issue.message


def test_env_expanded_value_is_then_type_checked() -> None:
    text = PIPELINE.replace('addr = "0.0.0.0:8080"', 'addr = "0.0.0.0:${PORT}"')
    assert parse(text, {"PORT": "9000"}).config.listen == ("0.0.0.0", 9000)
    (issue,) = errors_of(text, {"PORT": "http"})
    assert issue.path == "addr" and "'0.0.0.0:http'" in issue.message


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHOKIT_TEST_SPEAKER", "from-env")
    text = textwrap.dedent(PIPELINE).replace('"cooper"', '"${ECHOKIT_TEST_SPEAKER}"')
    assert parse_config(text).config.tts.speaker == "from-env"


# ---------------------------------------------------------------------------------------------
# Bearer normalisation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("Bearer gaia-1234", "gaia-1234"),
        ("bearer   xyz ", "xyz"),
        ("sk-abc", "sk-abc"),
        ("BearerToken", "BearerToken"),
    ],
)
def test_bearer_prefix_is_removed_once(written: str, stored: str) -> None:
    text = PIPELINE.replace("history = 5", f'history = 5\napi_key = "{written}"')
    text = text.replace(
        '[asr]\nplatform = "openai"', f'[asr]\nplatform = "openai"\napi_key = "{written}"'
    )
    loaded = parse(text)
    assert loaded.config.llm.api_key == stored and loaded.config.asr.api_key == stored
    notes = sorted((n.path, n.line) for n in loaded.notes)
    if stored == written:
        assert notes == []
    else:
        assert notes == sorted(
            [
                ("asr.api_key", line_of(text, "api_key", line_of(text, "[asr]"))),
                ("llm.api_key", line_of(text, "api_key")),
            ]
        )


def test_bearer_in_tokens_of_other_platforms() -> None:
    body = '[tts]\nplatform = "cosyvoice"\ntoken = "Bearer sk-1"'
    assert parse(with_section("tts", body)).config.tts.token == "sk-1"


# ---------------------------------------------------------------------------------------------
# Our local platforms and the embedded default
# ---------------------------------------------------------------------------------------------


def test_local_asr_options() -> None:
    body = """\
    [asr]
    platform = "local"
    model = "/models/whisper-base"
    languages = ["en", "zh"]
    device = "cpu"
    compute_type = "int8_float32"
    cpu_threads = 2
    beam_size = 5

    [asr.vad]
    threshold = 0.6
    """
    asr = parse(with_section("asr", body)).config.asr
    assert isinstance(asr, LocalASR)
    assert (asr.model, asr.language, asr.languages) == ("/models/whisper-base", None, ["en", "zh"])
    assert (asr.device, asr.compute_type, asr.cpu_threads, asr.beam_size) == (
        "cpu",
        "int8_float32",
        2,
        5,
    )
    assert asr.vad.threshold == 0.6 and asr.vad.neg_threshold == pytest.approx(0.45)


def test_local_asr_language_forms() -> None:
    def asr(extra: str) -> Any:
        return parse(with_section("asr", f'[asr]\nplatform = "local"\n{extra}')).config.asr

    assert asr('language = "en"').language == "en"
    assert asr('lang = "zh"').language == "zh"  # the reference's key name works too
    assert asr('lang = "auto"').language is None
    defaults = asr("")
    assert (defaults.model, defaults.device, defaults.compute_type) == ("base", "auto", "int8")
    assert (defaults.cpu_threads, defaults.beam_size, defaults.language) == (0, 1, None)


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ('language = "en"\nlanguages = ["en"]', "asr", "not both"),
        ('device = "tpu"', "asr.device", "'auto', 'cpu' or 'cuda'"),
        ("beam_size = 0", "asr.beam_size", "must be >= 1"),
        ('languages = "en"', "asr.languages", "expected an array"),
    ],
)
def test_local_asr_errors(extra: str, path: str, fragment: str) -> None:
    text = with_section("asr", f'[asr]\nplatform = "local"\n{extra}')
    (issue,) = errors_of(text)
    assert issue.path == path and fragment in issue.message
    assert issue.line is not None


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ('engine = "espeak"', "tts.engine", "'hibari' or 'piper'"),
        ("speed = 0", "tts.speed", "must be >= 0.25"),
        ('voice = "a"\nspeaker = "b"', "tts", "voice and speaker are the same setting"),
    ],
)
def test_local_tts_errors(extra: str, path: str, fragment: str) -> None:
    (issue,) = errors_of(with_section("tts", f'[tts]\nplatform = "local"\n{extra}'))
    assert issue.path == path and fragment in issue.message


def test_embedded_default_without_environment() -> None:
    cfg = default_config(env={})
    assert cfg.layout == "pipeline" and cfg.listen == ("0.0.0.0", 8080)
    assert isinstance(cfg.asr, LocalASR) and isinstance(cfg.tts, LocalTTS)
    assert cfg.asr.model == "base" and cfg.tts.engine == "hibari"
    assert cfg.llm.platform == "openai_chat"
    assert cfg.llm.url == "http://localhost:9091/v1/chat/completions"
    assert cfg.llm.api_key is None and cfg.llm.model == "" and cfg.llm.history == 5
    (prompt,) = cfg.llm.sys_prompts
    assert prompt.role == "system" and "spoken" in prompt.content
    assert cfg.hello_path is None


def test_embedded_default_from_environment_and_arguments() -> None:
    env = {
        "OPENAI_BASE_URL": "https://api.example.com/v1/",
        "OPENAI_API_KEY": "Bearer sk-9",
        "OPENAI_MODEL": "gpt-x",
    }
    cfg = default_config(env=env)
    assert cfg.llm.url == "https://api.example.com/v1/chat/completions"
    assert (cfg.llm.api_key, cfg.llm.model) == ("sk-9", "gpt-x")
    cfg = default_config(llm_url="http://10.0.0.2:8000/v1/chat/completions", env=env)
    assert cfg.llm.url == "http://10.0.0.2:8000/v1/chat/completions"  # not appended twice


# ---------------------------------------------------------------------------------------------
# hello_wav
# ---------------------------------------------------------------------------------------------


def write_config(folder: Path, hello: str) -> Path:
    path = folder / "config.toml"
    path.write_text(
        PIPELINE.replace('addr = "0.0.0.0:8080"', f'addr = "h:1"\nhello_wav = "{hello}"')
    )
    return path


def test_hello_relative_to_cwd_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, cfg_dir = tmp_path / "cwd", tmp_path / "cfg"
    cwd.mkdir()
    cfg_dir.mkdir()
    (cwd / "hello.wav").write_bytes(b"RIFF-cwd")
    (cfg_dir / "hello.wav").write_bytes(b"RIFF-cfg")
    monkeypatch.chdir(cwd)
    loaded = load_config(write_config(cfg_dir, "hello.wav"), env={})
    assert loaded.config.hello_path == cwd / "hello.wav" and loaded.warnings == []


def test_hello_falls_back_to_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "sounds").mkdir(parents=True)
    (cfg_dir / "sounds" / "hi.wav").write_bytes(b"RIFF")
    monkeypatch.chdir(tmp_path)
    loaded = load_config(write_config(cfg_dir, "sounds/hi.wav"), env={})
    assert loaded.config.hello_path == cfg_dir / "sounds" / "hi.wav"


def test_missing_hello_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_config(write_config(tmp_path, "nope.wav"), env={})
    assert loaded.config.hello_path is None and loaded.config.hello_wav == "nope.wav"
    (w,) = loaded.warnings
    assert (w.path, w.line) == ("hello_wav", 2) and "no hello will be sent" in w.message


def test_unreadable_hello_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.wav").mkdir()  # exists, but not a file
    loaded = load_config(write_config(tmp_path, str(tmp_path / "folder.wav")), env={})
    assert loaded.config.hello_path is None and loaded.warnings[0].path == "hello_wav"


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('addr = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


# ---------------------------------------------------------------------------------------------
# The key locator
# ---------------------------------------------------------------------------------------------


def test_locator_follows_toml_structure() -> None:
    text = textwrap.dedent('''\
        title = "x"   # comment [not.a.table]
        a.b."c.d" = 1
        multi = """
        [fake]
        x = 1
        """
        lit = \'\'\'[also] "fake"\'\'\'
        arr = [
          1,   # one
          { k = "v", n.m = 2 },
        ]

        [server]
        'quoted key' = true

        [[fruit]]
        name = "apple"
        [fruit.physical]
        color = "red"
        [[fruit.variety]]
        name = "red delicious"
        [[fruit]]
        name = "banana"
        [[fruit.variety]]
        name = "plantain"
        ''')
    loc = _Locator(text)
    expect = {
        ("title",): 1,
        ("a", "b", "c.d"): 2,
        ("multi",): 3,
        ("lit",): 7,
        ("arr", 0): 9,
        ("arr", 1): 10,
        ("arr", 1, "k"): 10,
        ("arr", 1, "n", "m"): 10,
        ("server", "quoted key"): 14,
        ("fruit", 0): 16,
        ("fruit", 0, "physical", "color"): 19,
        ("fruit", 0, "variety", 0, "name"): 21,
        ("fruit", 1): 22,
        ("fruit", 1, "name"): 23,
        ("fruit", 1, "variety", 0, "name"): 25,
    }
    for path, line in expect.items():
        assert loc.line_of(path) == line, path
    assert ("fake",) not in loc.lines and ("x",) not in loc.lines
    assert loc.line_of(("fruit", 1, "variety", 0, "missing")) == 24  # nearest known parent
    assert loc.line_of(("nowhere",)) is None


# ---------------------------------------------------------------------------------------------
# Odds and ends
# ---------------------------------------------------------------------------------------------


def test_split_host_port() -> None:
    assert split_host_port("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert split_host_port("127.0.0.1:0") == ("127.0.0.1", 0)  # an ephemeral port
    for bad in ("8080", ":80", "h:-1", "h:70000", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            split_host_port(bad)


def test_summary_has_no_secrets_and_names_the_platforms() -> None:
    text = PIPELINE.replace("history = 5", 'history = 5\napi_key = "sk-SECRET"\nmodel = "m1"')
    out = summary(parse(text))
    assert "sk-SECRET" not in out
    assert "layout: pipeline" in out and "addr:   0.0.0.0:8080" in out
    assert "openai_chat  http://llm.local/v1/chat/completions  model=m1  history=5" in out
    assert "stream_gsv  http://tts.local/v1/audio/stream_speech  speaker=cooper" in out


# ---------------------------------------------------------------------------------------------
# The command line (real processes)
# ---------------------------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


def test_check_config_valid() -> None:
    out = run_cli("check-config", str(DATA / "gaia_config.toml"))
    assert out.returncode == 0, out.stderr
    assert "layout: pipeline" in out.stdout and "addr:   0.0.0.0:9090" in out.stdout
    assert "stream_gsv" in out.stdout and "openai_chat" in out.stdout
    assert "gaia-1234" not in out.stdout + out.stderr
    assert "note: " in out.stderr and "llm.api_key" in out.stderr


def test_check_config_invalid() -> None:
    path = CONFIGS / "examples/tts/11labs/config.toml"
    out = run_cli("check-config", str(path))
    assert out.returncode == 1
    assert f"error: {path}:11: asr.platform: unknown platform 'Elevenlabs'" in out.stderr
    assert "it is a [tts] platform" in out.stderr
    assert "llm.platform" not in out.stderr  # inferred from llm_chat_url (the old format)
    assert out.stdout == ""


def test_check_config_env_expansion_through_the_process() -> None:
    path = str(CONFIGS / "examples/telnyx/config.toml")
    assert run_cli("check-config", path, env={"TELNYX_API_KEY": ""}).returncode == 0
    out = run_cli("check-config", path)
    assert out.returncode == 1 and "TELNYX_API_KEY is not set" in out.stderr


def test_serve_rejects_a_bad_config_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text(PIPELINE.replace("history = 5", 'history = "many"'))
    for args, env in (
        (("serve", "--config", str(bad)), None),
        (("serve", str(bad)), None),
        (("serve",), {"CONFIG_PATH": str(bad)}),
    ):
        out = run_cli(*args, env=env)
        assert out.returncode == 2, args
        assert f"{bad}:6: llm.history: expected an integer, got a string 'many'" in out.stderr
    out = run_cli("serve", "--config", str(tmp_path / "absent.toml"))
    assert out.returncode == 2 and "cannot read the config file" in out.stderr
    out = run_cli("serve", str(bad), "--config", str(tmp_path / "other.toml"))
    assert out.returncode == 2 and "two config files" in out.stderr


def test_serve_listens_on_the_config_addr(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(PIPELINE.replace("0.0.0.0:8080", f"127.0.0.1:{port}"))
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    with spawned_serve(str(cfg), env=env) as seen:
        assert f"127.0.0.1:{port}".encode() in seen
        assert b"layout: pipeline" in seen
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=10)
        assert r.status_code == 200
