"""The OpenAI-compatible API beyond plain transcription, through the real `openai` client (sync
and async) on a real server: translations, word timestamps, streamed transcription, the model
listing, OpenAI error bodies on every refusal, API keys on every /v1 route, and the device
checks (allow-list, shared token) before the WebSocket upgrade."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import httpx
import openai
import pytest
import websockets
from asr_helpers import SENTENCES, FakeInfo, FakeModel, espeak_wav, wav_mono, wer, words
from harness import API_ONLY, api_state
from starlette.routing import Route, WebSocketRoute
from websockets.exceptions import InvalidStatus

from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.asr.local.engine import LocalWhisper
from echokit_fast.config import parse_config
from echokit_fast.server import security
from echokit_fast.server.app import create_app

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

TEXT = SENTENCES[3]  # "Hello, how are you doing this morning?" (about 2 s)
GERMAN = "Guten Morgen. Das Wetter ist heute sehr schön, und ich gehe mit meinem Hund in den Park."
KEY, OTHER_KEY = "k-one", "k-two"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> LocalWhisper:
    return LocalWhisper.from_config(
        LocalASR(), cache_dir=tmp_path_factory.getbasetemp() / "asr-models"
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak_wav(TEXT, tmp_path_factory.mktemp("depth") / "en.wav")


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak_wav(GERMAN, tmp_path_factory.mktemp("depth") / "de.wav", voice="de", speed=150)


def start(serve, asr=None, config: str = API_ONLY) -> str:
    state = api_state(parse_config(config, log_issues=False).config)
    state.asr = asr
    return "http://" + serve(create_app(state=state))


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- translations, word timestamps ---------------------------------------------------------


def test_a_german_clip_is_translated_into_english(serve, engine, german) -> None:
    url = start(serve, engine)
    result = client(url).audio.translations.create(model="whisper-1", file=("de.wav", german))
    said = set(words(result.text))
    assert len(said & {"good", "morning", "weather", "today", "park"}) >= 3, result.text
    assert not said & {"guten", "morgen", "wetter", "heute"}, result.text
    verbose = client(url).audio.translations.create(
        model="whisper-1", file=("de.wav", german), response_format="verbose_json"
    )
    assert verbose.task == "translate" and verbose.language == "german"
    # the same clip transcribed stays German
    same = client(url).audio.transcriptions.create(model="whisper-1", file=("de.wav", german))
    assert {"guten", "morgen"} <= set(words(same.text)), same.text


def test_word_timestamps_are_ordered_and_cover_the_speech(serve, engine, clip) -> None:
    url = start(serve, engine)
    duration = len(wav_mono(clip)[0]) / 22050
    result = client(url).audio.transcriptions.create(
        model="whisper-1",
        file=("turn.wav", clip),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert wer(TEXT, result.text) <= 0.25
    ws = result.words
    assert wer(TEXT, " ".join(w.word for w in ws)) <= 0.25
    assert all(w.start <= w.end for w in ws)
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(ws))
    assert ws[0].start < 0.5 and ws[-1].end > duration - 0.8  # the speech, start to end
    assert ws[-1].end <= duration + 0.1
    assert result.segments  # asked for too
    only_words = client(url).audio.transcriptions.create(
        model="whisper-1",
        file=("turn.wav", clip),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert only_words.words and only_words.segments is None


# --- streamed transcription ----------------------------------------------------------------


def test_the_openai_stream_yields_deltas_then_the_whole_text(serve, engine, clip) -> None:
    url = start(serve, engine)
    stream = client(url).audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", clip), stream=True
    )
    events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert deltas and "".join(deltas).strip() == events[-1].text
    assert wer(TEXT, events[-1].text) <= 0.25


@dataclass
class _Seg:
    text: str
    start: float
    end: float


class SteppedModel(FakeModel):
    """A stand-in Whisper that decodes its first segment, then waits for `release` before
    the second: a stream must have sent the first before the end exists."""

    def transcribe(self, pcm, **kwargs):
        def generate():
            yield _Seg(" first part.", 0.0, 1.0)
            self.entered.set()
            assert self.release.wait(30), "the test never released the model"
            yield _Seg(" second part.", 1.0, 2.0)

        return generate(), FakeInfo("en", 1.0)


def test_deltas_arrive_while_whisper_is_still_decoding_async_client(serve, clip) -> None:
    model = SteppedModel()
    url = start(serve, LocalWhisper(model, model_id="fake"))

    async def run() -> list:
        aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        stream = await aclient.audio.transcriptions.create(
            model="whisper-1", file=("turn.wav", clip), stream=True
        )
        events = []
        async for event in stream:
            if not events:  # the first delta, while the second segment does not exist
                assert event.type == "transcript.text.delta" and event.delta == " first part."
                assert not model.release.is_set()
                model.release.set()
            events.append(event)
        return events

    try:
        events = asyncio.run(run())
    finally:
        model.release.set()
    assert [e.type for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert events[-1].text == "first part. second part."


# --- models --------------------------------------------------------------------------------


def test_models_list_every_loaded_engine_and_retrieve_each(serve, engine) -> None:
    from echokit_fast.backends.tts.local import engine as tts

    voice = tts.HibariSpeaker()
    try:
        state = api_state()
        state.asr, state.tts = engine, voice
        url = "http://" + serve(create_app(state=state))
        c = client(url)
        ids = [m.id for m in c.models.list().data]
        assert ids[:2] == ["whisper-base", "hibari"]
        assert {f"hibari/{v}" for v in voice.voices()} == set(ids[2:])
        for model_id in ("whisper-base", "hibari", "hibari/heart"):
            got = c.models.retrieve(model_id)
            assert got.id == model_id and got.object == "model"
        with pytest.raises(openai.NotFoundError) as info:
            c.models.retrieve("gpt-9")
        assert info.value.body["code"] == "model_not_found"
    finally:
        voice.close()


# --- errors --------------------------------------------------------------------------------


def test_unknown_paths_and_methods_are_openai_errors(serve) -> None:
    url = start(serve)
    missing = httpx.post(f"{url}/v1/audio/nothing", json={})
    assert missing.status_code == 404 and error_of(missing)["code"] == "unknown_url"
    wrong = httpx.get(f"{url}/v1/audio/transcriptions")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    with pytest.raises(openai.NotFoundError) as info:
        client(url).post("/nothing/here", cast_to=dict, body={})
    assert info.value.body["type"] == "invalid_request_error"
    # outside /v1 Starlette's plain text stays
    plain = httpx.get(f"{url}/nothing")
    assert plain.status_code == 404 and plain.headers["content-type"].startswith("text/plain")


class BrokenWhisper(LocalWhisper):
    def submit(self, *args, **kwargs):
        raise RuntimeError("a bug")


def test_an_unexpected_failure_is_an_openai_500(serve, clip) -> None:
    url = start(serve, BrokenWhisper(FakeModel(), model_id="fake"))
    r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", clip)})
    assert r.status_code == 500
    err = error_of(r)
    assert err["type"] == "server_error" and "a bug" not in err["message"]


def test_a_non_audio_upload_says_what_it_seems_to_be(serve) -> None:
    url = start(serve, LocalWhisper(FakeModel(), model_id="fake"))
    cases = {
        b"these are not the sounds you are looking for\n" * 20: "looks like text",
        b"%PDF-1.7\n" + bytes(range(256)) * 4: "looks like a PDF document",
        bytes([0x00, 0x13, 0x37, 0x99] * 300): "starts with 00 13 37 99",
    }
    for data, needle in cases.items():
        with pytest.raises(openai.BadRequestError) as info:
            client(url).audio.transcriptions.create(model="whisper-1", file=("x.bin", data))
        message = info.value.body["message"]
        assert message.startswith("could not decode the audio: ") and needle in message
        assert "Errno" not in message and "<none>" not in message


def test_stream_and_granularities_are_checked(serve, clip) -> None:
    url = start(serve, LocalWhisper(FakeModel(), model_id="fake"))
    c = client(url)
    for kwargs, param in (
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities"),  # json
        (
            {"response_format": "verbose_json", "timestamp_granularities": ["letter"]},
            "timestamp_granularities",
        ),
        ({"stream": True, "response_format": "srt"}, "response_format"),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            c.audio.transcriptions.create(model="whisper-1", file=("a.wav", clip), **kwargs)
        assert info.value.body["param"] == param


# --- API keys ------------------------------------------------------------------------------


def _api_routes(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every /v1 API route of `app` (WebSockets as "WS")."""
    out = []
    for route in app.routes:
        path = route.path.replace("{id:path}", "x").replace("{id}", "x")
        if not security.is_api_path(path):
            continue
        if isinstance(route, WebSocketRoute):
            out.append(("WS", path))
        elif isinstance(route, Route):
            out.extend((m, path) for m in sorted(route.methods - {"HEAD"}))
    return out


def _ws_status(url: str, headers: dict[str, str]) -> int:
    async def run() -> int:
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=30):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(run())


def test_the_api_key_is_enforced_on_every_v1_route(serve, tmp_path: Path) -> None:
    config = (
        API_ONLY
        + f'[record]\ndir = "{tmp_path / "rec"}"\n'
        + f'[server]\napi_key = "{KEY}"\napi_keys = ["{OTHER_KEY}"]\n'
    )
    state = api_state(parse_config(config, log_issues=False).config)
    state.asr = LocalWhisper(FakeModel(), model_id="fake")
    app = create_app(state=state)
    addr = serve(app)
    routes = _api_routes(app)
    assert ("POST", "/v1/audio/speech") in routes and ("WS", "/v1/realtime") in routes
    assert len(routes) >= 10
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            if method == "WS":
                assert _ws_status(f"ws://{addr}{path}", headers) == 401, (path, headers)
                continue
            r = httpx.request(method, f"http://{addr}{path}", headers=headers)
            assert r.status_code == 401, (method, path, headers)
            err = error_of(r)
            assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
    # with either key, the routes run (they refuse the empty request themselves, not as 401)
    for key in (KEY, OTHER_KEY):
        for method, path in routes:
            if method == "WS":
                status = _ws_status(f"ws://{addr}{path}", {"Authorization": f"Bearer {key}"})
            else:
                status = httpx.request(
                    method, f"http://{addr}{path}", headers={"Authorization": f"Bearer {key}"}
                ).status_code
            assert status != 401, (method, path)
    # the openai client sends its api_key as the bearer token
    with pytest.raises(openai.AuthenticationError):
        client(f"http://{addr}", "nope").models.list()
    assert client(f"http://{addr}", KEY).models.list().data[0].id == "fake"
    # device routes and the probes take no API key
    assert httpx.get(f"http://{addr}/health").status_code == 200
    assert _ws_status(f"ws://{addr}/v1/record/dev", {}) == 101


def _device_status(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async def run() -> tuple[int, bytes]:
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=30):
                return 101, b""
        except InvalidStatus as exc:
            return exc.response.status_code, bytes(exc.response.body)

    return asyncio.run(run())


def test_devices_outside_the_allow_list_or_without_the_token_are_refused(
    serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = (
        API_ONLY
        + f'[record]\ndir = "{tmp_path / "rec"}"\n'
        + '[server]\ndevices = ["kitchen"]\ndevice_token = "t0k"\n'
    )
    addr = start(serve, config=config).removeprefix("http://")
    assert _device_status(f"ws://{addr}/ws/kitchen?token=t0k")[0] == 101
    assert _device_status(f"ws://{addr}/v2/stable_ws/kitchen", {"Authorization": "t0k"})[0] == 101
    bearer = {"Authorization": "Bearer t0k"}
    assert _device_status(f"ws://{addr}/v1/record/kitchen", bearer)[0] == 101
    with caplog.at_level(logging.WARNING, logger="echokit_fast.devices.echokit.routes"):
        for _ in range(3):  # a device retrying: one log line
            status, body = _device_status(f"ws://{addr}/ws/garage?token=t0k")
            assert status == 403 and b"[server] devices" in body
        for url in (f"ws://{addr}/ws/kitchen", f"ws://{addr}/ws/kitchen?token=bad"):
            status, body = _device_status(url)
            assert status == 401 and b"device_token" in body
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len([m for m in refusals if "garage" in m]) == 1
    assert len([m for m in refusals if "kitchen" in m]) == 1


def test_the_exposure_warning(tmp_path: Path) -> None:
    def warning(server: str, host: str) -> str | None:
        cfg = parse_config(API_ONLY + "[server]\n" + server, log_issues=False).config
        return security.exposure_warning(cfg.server, host)

    assert "anyone on the network" in (warning("", "0.0.0.0") or "")
    assert "anyone on the network" in (warning("", "192.168.1.4") or "")
    for host in ("127.0.0.1", "::1", "localhost"):
        assert warning("", host) is None
    assert warning(f'api_key = "{KEY}"\n', "0.0.0.0") is None
    assert warning('devices = ["kitchen"]\n', "0.0.0.0") is None


def test_the_api_keys_of_serve_come_from_repeated_flags_or_the_environment() -> None:
    from echokit_fast.cli import build_parser, serve_settings

    args = build_parser().parse_args(["serve", "--api-key", KEY, "--api-key", OTHER_KEY])
    assert serve_settings(args, {"ECHOKIT_API_KEY": "env"}).api_key == [KEY, OTHER_KEY]
    args = build_parser().parse_args(["serve"])
    assert serve_settings(args, {"ECHOKIT_API_KEY": " env "}).api_key == ["env"]
    assert serve_settings(args, {}).api_key is None


def test_api_keys_and_the_device_token_are_validated_at_load() -> None:
    from echokit_fast.config import ConfigError

    for server, needle in (
        ('api_keys = ["ok", " "]\n', "an API key cannot be empty"),
        ('device_token = " "\n', "the device token cannot be empty"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(API_ONLY + "[server]\n" + server, log_issues=False)
        assert needle in str(err.value)
    cfg = parse_config(
        API_ONLY + '[server]\napi_key = "a"\napi_keys = ["b", "c"]\n', log_issues=False
    ).config
    assert cfg.server.keys == ("a", "b", "c")
