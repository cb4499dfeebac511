"""Values that parse as TOML but that no server can use are config errors at load, naming file,
line and key, so that ``check-config`` and ``serve`` refuse them the same way: URLs, the VAD
hysteresis, integers beyond TOML's range, the embedded engines' voices, compute types and
languages, and documents nested too deeply for the TOML parser."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import AfterValidator, BaseModel
from test_config import PIPELINE, errors_of, line_of, parse, run_cli, with_section

from echokit_fast import config as config_module
from echokit_fast.backends import registry
from echokit_fast.backends.asr.local import COMPUTE_TYPES, WHISPER_LANGUAGES
from echokit_fast.backends.schema import url_check
from echokit_fast.backends.tts.local import known_voices


def only_error(text: str) -> config_module.ConfigIssue:
    (issue,) = errors_of(text)
    return issue


# ---------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------

BAD_HTTP_URLS = [
    ("", "empty string"),
    ("not a url", "relative URL without a base"),
    ("ftp://files.local/x", "scheme ftp"),
    ("ws://llm.local/v1", "scheme ws"),
    ("http://", "empty host"),
    ("http:///v1/chat/completions", "no host"),
    ("http:/llm.local/v1", "no host"),
    (" http://llm.local/v1", "spaces around it"),
    ("http://llm.local:99999/v1", "invalid port number"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_HTTP_URLS)
def test_a_bad_llm_url_names_key_line_and_reason(url: str, reason: str) -> None:
    text = PIPELINE.replace('url = "http://llm.local/v1/chat/completions"', f'url = "{url}"')
    issue = only_error(text)
    assert (issue.path, issue.line) == ("llm.url", line_of(text, f'url = "{url}"'))
    assert issue.message.startswith("expected a URL (http:// or https://), got ")
    assert reason in issue.message


@pytest.mark.parametrize(
    ("section", "body", "path"),
    [
        ("asr", '[asr]\nplatform = "openai"\nurl = "{u}"', "asr.url"),
        ("asr", '[asr]\nplatform = "openai"\nurl = "http://a"\nvad_url = "{u}"', "asr.vad_url"),
        ("tts", '[tts]\nplatform = "stream_gsv"\nurl = "{u}"\nspeaker = "s"', "tts.url"),
        ("tts", '[tts]\nplatform = "gsv"\nurl = "{u}"\nspeaker = "s"', "tts.url"),
        ("tts", '[tts]\nplatform = "openai"\napi_key = "k"\nurl = "{u}"', "tts.url"),
        ("tts", '[tts]\nplatform = "fish"\napi_key = "k"\nspeaker = "s"\nurl = "{u}"', "tts.url"),
        (
            "tts",
            '[tts]\nplatform = "stream_gsv"\nurl = "http://t"\nspeaker = "s"\n'
            '[tts.text_optimization]\nurl = "{u}"',
            "tts.text_optimization.url",
        ),
        (
            "llm",
            '[llm]\nplatform = "openai_chat"\nllm_chat_url = "{u}"\nhistory = 1',
            "llm.llm_chat_url",
        ),
        (
            "llm",
            '[llm]\nplatform = "openai_chat"\nurl = "http://l"\nhistory = 1\nprompts_url = "{u}"',
            "llm.prompts_url",
        ),
        ("llm", '[llm]\nplatform = "openai_responses"\nurl = "{u}"', "llm.url"),
        (
            "llm",
            '[llm]\nplatform = "openai_chat"\nurl = "http://l"\nhistory = 1\n'
            '[[llm.mcp_server]]\nserver = "{u}"',
            "llm.mcp_server[0].server",
        ),
    ],
)
def test_every_http_url_key_is_checked(section: str, body: str, path: str) -> None:
    for url in ("not a url", "ftp://x/y", "https://"):
        text = with_section(section, body.format(u=url))
        issue = only_error(text)
        assert issue.path == path, (url, issue)
        assert issue.line == line_of(text, f'"{url}"'), (url, issue)
        assert "expected a URL (http:// or https://)" in issue.message
    good = "https://svc.example:8443/v1/x?key=1"
    assert parse(with_section(section, body.format(u=good))).config is not None


def test_record_callback_url_is_checked() -> None:
    text = PIPELINE + '[record]\ncallback_url = "callback.local/done"\n'
    issue = only_error(text)
    assert (issue.path, issue.line) == ("record.callback_url", line_of(text, "callback_url"))


@pytest.mark.parametrize(
    ("section", "body", "path"),
    [
        (
            "asr",
            '[asr]\nplatform = "paraformer_v2"\nparaformer_token = "p"\nurl = "{u}"',
            "asr.url",
        ),
        ("tts", '[tts]\nplatform = "cosyvoice"\ntoken = "t"\nurl = "{u}"', "tts.url"),
        ("tts", '[tts]\nplatform = "elevenlabs"\ntoken = "t"\nvoice = "v"\nurl = "{u}"', "tts.url"),
        (
            "asr",
            '[asr]\nplatform = "openai"\nurl = "http://a"\nvad_realtime_url = "{u}"',
            "asr.vad_realtime_url",
        ),
    ],
)
def test_websocket_url_keys_want_ws_or_wss(section: str, body: str, path: str) -> None:
    for url, reason in (("ftp://dashscope.example/x", "scheme ftp"), ("wss://", "empty host")):
        text = with_section(section, body.format(u=url))
        issue = only_error(text)
        assert (issue.path, issue.line) == (path, line_of(text, url)), issue
        assert (
            "expected a WebSocket URL (ws://, wss://" in issue.message and reason in issue.message
        )
    cfg = parse(with_section(section, body.format(u="HTTPS://dashscope.example/x"))).config
    key = path.split(".")[-1]
    assert getattr(getattr(cfg, section), key) == "wss://dashscope.example/x"  # taken as wss


def test_a_url_is_kept_as_written() -> None:
    text = PIPELINE.replace("http://llm.local/v1/chat/completions", "HTTP://[::1]:9091/v1")
    assert parse(text).config.llm.url == "HTTP://[::1]:9091/v1"  # not normalised
    empty = PIPELINE.replace("history = 5", 'history = 5\nprompts_url = ""')
    assert parse(empty).config.llm.prompts_url is None  # "" is no remote prompts, as before


def _models() -> list[type[BaseModel]]:
    """Every section model a config file can reach, nested tables included."""
    roots = [p.config for kind in registry.KINDS for p in registry.platforms(kind)]
    roots += [config_module.Config]
    seen: list[type[BaseModel]] = []
    while roots:
        model = roots.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            for arg in [info.annotation, *typing.get_args(info.annotation)]:
                for inner in [arg, *typing.get_args(arg)]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        roots.append(inner)
    return seen


def test_every_url_key_of_every_model_uses_the_shared_url_check() -> None:
    """A future platform's `url` cannot slip through as a bare str."""
    check = url_check("http", "https").__qualname__
    found = []
    for model in _models():
        for name, info in model.model_fields.items():
            section = isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
            if (name.endswith("url") or name == "server") and not section:  # not [server]
                annotation = info.annotation
                metadata = list(info.metadata)
                for arg in typing.get_args(annotation):  # X | None
                    metadata += getattr(arg, "__metadata__", ())
                checks = [m for m in metadata if isinstance(m, AfterValidator)]
                assert any(c.func.__qualname__ == check for c in checks), (model, name)
                found.append(f"{model.__name__}.{name}")
    assert len(found) >= 16, found


def test_a_bad_embedded_default_llm_url_stops_serve_without_a_traceback() -> None:
    out = run_cli("serve", "--llm-url", "localhost:9091/v1", "--listen", "127.0.0.1:1")
    assert out.returncode == 2, out.stderr
    assert "echokit-fast serve: --llm-url: expected a URL (http:// or https://)" in out.stderr
    assert "Traceback" not in out.stderr
    env = {"OPENAI_BASE_URL": "ftp://llm.local/v1"}
    out = run_cli("serve", "--listen", "127.0.0.1:1", env=env)
    assert out.returncode == 2 and "$OPENAI_BASE_URL: expected a URL" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------
# VAD, integers
# ---------------------------------------------------------------------------------------------


def test_neg_threshold_above_threshold_is_an_error_at_its_line() -> None:
    body = '[asr]\nplatform = "local"\n[asr.vad]\nthreshold = 0.3\nneg_threshold = 0.6'
    text = with_section("asr", body)
    issue = only_error(text)
    assert (issue.path, issue.line) == ("asr.vad.neg_threshold", line_of(text, "neg_threshold"))
    assert "above threshold 0.3" in issue.message


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("history = 5", "history = 100000000000000000000", "llm.history"),
        ("history = 5", "history = 5\nextra = { n = -9223372036854775809 }", "llm.extra.n"),
        ("history = 5", "history = 5\nextra = { n = [1, 18446744073709551616] }", "llm.extra.n[1]"),
    ],
)
def test_an_integer_beyond_64_bits_is_an_error(old: str, new: str, path: str) -> None:
    text = PIPELINE.replace(old, new)
    issue = only_error(text)
    assert issue.path == path and issue.line == line_of(text, new.splitlines()[-1])
    assert "outside TOML's integer range" in issue.message
    assert parse(PIPELINE.replace(old, "history = 9223372036854775807")).config.llm.history


def test_an_integer_too_long_to_convert_is_invalid_toml_not_a_crash() -> None:
    text = PIPELINE.replace("history = 5", "history = " + "9" * 5000)
    issue = only_error(text)
    assert issue.file == "config.toml" and "invalid TOML" in issue.message
    assert "4300 digits" in issue.message


# ---------------------------------------------------------------------------------------------
# The embedded engines: voices, compute types, languages
# ---------------------------------------------------------------------------------------------


def local_tts(extra: str) -> str:
    return with_section("tts", f'[tts]\nplatform = "local"\n{extra}')


def local_asr(extra: str) -> str:
    return with_section("asr", f'[asr]\nplatform = "local"\n{extra}')


def test_an_unknown_local_voice_is_an_error_listing_the_voices() -> None:
    text = local_tts('voice = "nobody"')
    issue = only_error(text)
    assert (issue.path, issue.line) == ("tts.voice", line_of(text, "nobody"))
    assert "unknown voice 'nobody' for the hibari engine; available: heart" in issue.message
    text = local_tts('speaker = "Heart"')  # the alias, and names are case-sensitive
    issue = only_error(text)
    assert (issue.path, issue.line) == ("tts.speaker", line_of(text, "Heart"))
    issue = only_error(local_tts('engine = "piper"\nvoice = "heart"'))
    assert issue.path == "tts.voice" and "available: joe" in issue.message
    assert parse(local_tts('engine = "piper"\nvoice = "joe"')).config.tts.voice == "joe"
    assert parse(local_tts('voice = "kore"')).config.tts.voice == "kore"  # not downloaded yet


def test_the_voice_list_is_hibaris_own_registry() -> None:
    voices = pytest.importorskip("hibari.voices")
    assert known_voices("hibari") == tuple(voices.VOICES)


def test_an_unknown_compute_type_is_an_error() -> None:
    text = local_asr('compute_type = "int4"')
    issue = only_error(text)
    assert (issue.path, issue.line) == ("asr.compute_type", line_of(text, "int4"))
    assert "'int8_float16'" in issue.message and "'int4'" in issue.message


def test_the_compute_types_are_ctranslate2s() -> None:
    """Each name we accept is one CTranslate2 accepts (it then fails on the missing model, not
    on the name), and it refuses what we refuse."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    for name in COMPUTE_TYPES:
        with pytest.raises(RuntimeError, match=r"model\.bin"):
            ctranslate2.models.Whisper("/nonexistent", compute_type=name)
    with pytest.raises(ValueError, match="Invalid compute type"):
        ctranslate2.models.Whisper("/nonexistent", compute_type="int4")
    assert ctranslate2.get_supported_compute_types("cpu") <= set(COMPUTE_TYPES)


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ('language = "xx"', "asr.language", "unsupported language code 'xx'"),
        ('lang = "english"', "asr.lang", "unsupported language code 'english'"),
        ('languages = ["en", "klingon"]', "asr.languages", "'klingon'"),
        ('model = "base.en"\nlanguage = "zh"', "asr.language", "English-only model"),
    ],
)
def test_an_unsupported_language_is_an_error(extra: str, path: str, fragment: str) -> None:
    text = local_asr(extra)
    issue = only_error(text)
    assert issue.path == path and fragment in issue.message
    assert issue.line == line_of(text, extra.splitlines()[-1])


def test_language_codes_are_normalised_as_the_engine_does() -> None:
    assert parse(local_asr('language = " EN "')).config.asr.language == "en"
    assert parse(local_asr('languages = ["ZH", "yue"]')).config.asr.languages == ["zh", "yue"]
    assert parse(local_asr('model = "/models/x.en"\nlanguage = "zh"')).config.asr.language == "zh"


def test_the_language_codes_are_faster_whispers() -> None:
    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert set(tokenizer._LANGUAGE_CODES) == WHISPER_LANGUAGES


# ---------------------------------------------------------------------------------------------
# check-config and serve, as processes
# ---------------------------------------------------------------------------------------------

BAD_VALUES = """\
addr = "127.0.0.1:1"

[llm]
platform = "openai_chat"
url = "not a url"
history = 100000000000000000000

[tts]
platform = "local"
voice = "nobody"

[asr]
platform = "local"
compute_type = "int4"
language = "xx"
[asr.vad]
threshold = 0.3
neg_threshold = 0.6
"""


def test_check_config_and_serve_report_the_same_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(BAD_VALUES)
    check = run_cli("check-config", str(path))
    assert check.returncode == 1 and "Traceback" not in check.stderr
    expected = [
        f"{path}:{line_of(BAD_VALUES, needle)}: {key}: "
        for needle, key in [
            ("not a url", "llm.url"),
            ("history", "llm.history"),
            ("nobody", "tts.voice"),
            ("int4", "asr.compute_type"),
            ("xx", "asr.language"),
            ("neg_threshold", "asr.vad.neg_threshold"),
        ]
    ]
    errors = [line for line in check.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(expected), check.stderr
    got = [e.removeprefix("error: ")[: len(x)] for e, x in zip(errors, expected, strict=True)]
    assert got == expected
    serve = run_cli("serve", str(path))
    assert serve.returncode == 2 and "Traceback" not in serve.stderr
    for error in errors:
        assert error.removeprefix("error: ") in serve.stderr


@pytest.mark.parametrize(
    "value",
    ["[" * 100_000 + "]" * 100_000, "{ a = " * 2_000 + "1" + " }" * 2_000],
    ids=["arrays", "inline-tables"],
)
def test_toml_nested_too_deeply_is_a_config_error_not_a_traceback(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(PIPELINE.replace("history = 5", f"history = 5\nextra = {{ a = {value} }}"))
    check = run_cli("check-config", str(path))
    assert check.returncode == 1, check.stderr[-2000:]
    assert "Traceback" not in check.stderr and "RecursionError" not in check.stderr
    assert f"error: {path}: invalid TOML: arrays or inline tables nested too deeply" in check.stderr
    serve = run_cli("serve", str(path), "--listen", "127.0.0.1:1")
    assert serve.returncode == 2 and "Traceback" not in serve.stderr
    assert f"{path}: invalid TOML: arrays or inline tables nested too deeply" in serve.stderr
