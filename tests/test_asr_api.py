"""POST /v1/audio/transcriptions and GET /v1/models via the `openai` client, on a real server."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import json
import re
import subprocess
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from asr_helpers import SENTENCES, FakeModel, espeak_wav, wav_mono, wer
from harness import api_state

from echokit_fast import audio
from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.asr.local import engine as asr
from echokit_fast.backends.asr.local.engine import LocalWhisper
from echokit_fast.server.app import create_app

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

TEXT = SENTENCES[3]  # "Hello, how are you doing this morning?" (about 2 s)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "asr-models"


@pytest.fixture(scope="session")
def engine(model_cache: Path) -> LocalWhisper:
    return asr.LocalWhisper.from_config(LocalASR(), cache_dir=model_cache)


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak_wav(TEXT, tmp_path_factory.mktemp("api") / "turn.wav")


def start(serve, engine, **ctx_kwargs) -> tuple[openai.OpenAI, str]:
    ctx = api_state(**ctx_kwargs)
    if engine is not None:
        ctx.asr = engine
    addr = serve(create_app(state=ctx))
    client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)
    return client, f"http://{addr}"


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# --- real transcriptions, every response format ------------------------------------------


def test_json_through_the_openai_client(serve, engine, clip) -> None:
    client, _ = start(serve, engine)
    result = client.audio.transcriptions.create(model="whisper-1", file=("turn.wav", clip))
    assert wer(TEXT, result.text) <= 0.25
    models = client.models.list()
    assert [m.id for m in models.data] == ["whisper-base"]
    assert models.data[0].owned_by == "echokit-fast"


def test_text_srt_vtt_and_verbose(serve, engine, clip) -> None:
    client, _ = start(serve, engine)
    duration = len(wav_mono(clip)[0]) / 22050
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", clip), response_format="text", language="en"
    )
    assert isinstance(text, str) and wer(TEXT, text) <= 0.25

    verbose = client.audio.transcriptions.create(
        model="whisper-large-v3", file=("turn.wav", clip), response_format="verbose_json"
    )
    assert verbose.language == "english"
    assert verbose.duration == pytest.approx(duration, abs=0.01)
    assert wer(TEXT, verbose.text) <= 0.25
    assert verbose.segments and verbose.segments[0].start >= 0
    assert all(s.start < s.end <= duration + 0.5 for s in verbose.segments)
    assert " ".join(s.text for s in verbose.segments).split() == verbose.text.split()

    srt = client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", clip), response_format="srt", language="en"
    )
    blocks = [b for b in srt.strip().split("\n\n") if b]
    assert blocks
    first = blocks[0].splitlines()
    assert first[0] == "1"
    assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", first[1])
    assert wer(TEXT, " ".join(" ".join(b.splitlines()[2:]) for b in blocks)) <= 0.25

    vtt = client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", clip), response_format="vtt", language="en"
    )
    assert vtt.startswith("WEBVTT\n\n")
    cue = vtt.split("\n\n")[1].splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", cue[0])


def test_any_wav_layout_and_other_containers(serve, engine, clip, tmp_path: Path) -> None:
    client, _ = start(serve, engine)
    mono, rate = wav_mono(clip)
    at44 = audio.resample(mono, rate, 44100)
    stereo = np.stack([at44, at44 * 0.5], axis=1)  # 44.1 kHz stereo, float32 WAV
    wav = audio.write_wav(np.ascontiguousarray(stereo), 44100, bits=32)
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("stereo.wav", wav), language="en"
    )
    assert wer(TEXT, result.text) <= 0.25

    src = tmp_path / "turn.wav"
    src.write_bytes(clip)
    flac = tmp_path / "turn.flac"
    subprocess.run(["sox", str(src), str(flac)], check=True, capture_output=True, timeout=30)
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("turn.flac", flac.read_bytes()), language="en"
    )
    assert wer(TEXT, result.text) <= 0.25


def test_model_is_loaded_on_first_use(serve, model_cache: Path, clip, monkeypatch) -> None:
    monkeypatch.setenv("ECHOKIT_FAST_CACHE", str(model_cache.parent / "lazy-cache"))
    client, _ = start(serve, None)  # the embedded default config: [asr] platform = "local"
    assert client.models.list().data == []  # nothing loaded yet
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("turn.wav", clip), language="en"
    )
    assert wer(TEXT, result.text) <= 0.25
    assert [m.id for m in client.models.list().data] == ["whisper-base"]


# --- errors (a fake model where timing matters) ----------------------------------------------


def test_bad_uploads_and_parameters(serve, clip) -> None:
    fake = FakeModel()
    client, base = start(serve, LocalWhisper(fake, model_id="fake"))

    def create(**kwargs) -> dict:
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.transcriptions.create(model="whisper-1", **kwargs)
        assert err.value.status_code == 400
        body = error_of(err.value)
        assert body["type"] == "invalid_request_error"
        return body

    empty = create(file=("empty.wav", b""))
    assert empty["param"] == "file" and "empty" in empty["message"]
    junk = create(file=("notes.txt", b"these are not the sounds you are looking for" * 20))
    assert junk["param"] == "file" and junk["code"] == "invalid_audio"
    broken = create(file=("broken.wav", clip[:30]))  # a RIFF header cut short
    assert broken["code"] == "invalid_audio"
    fmt = create(file=("turn.wav", clip), response_format="xml")
    assert fmt["param"] == "response_format" and "verbose_json" in fmt["message"]
    lang = create(file=("turn.wav", clip), language="klingon")
    assert lang["param"] == "language" and "klingon" in lang["message"]
    temp = create(file=("turn.wav", clip), temperature=3)
    assert temp["param"] == "temperature"

    # What the client cannot send: no file at all, a text field for it, a non-form body.
    no_file = httpx.post(f"{base}/v1/audio/transcriptions", files={"model": (None, "whisper-1")})
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"
    text_file = httpx.post(f"{base}/v1/audio/transcriptions", data={"file": "hello"})
    assert text_file.status_code == 400 and "uploaded file" in text_file.json()["error"]["message"]
    not_form = httpx.post(f"{base}/v1/audio/transcriptions", json={"file": "x"})
    assert not_form.status_code == 400 and "multipart" in not_form.json()["error"]["message"]
    bad_temp = httpx.post(
        f"{base}/v1/audio/transcriptions",
        files={"file": ("a.wav", clip)},
        data={"temperature": "hot"},
    )
    assert bad_temp.status_code == 400 and bad_temp.json()["error"]["param"] == "temperature"
    assert fake.calls == []  # none of these reached the engine

    ok = client.audio.transcriptions.create(model="anything", file=("turn.wav", clip))
    assert ok.text == "hello" and len(fake.calls) == 1


def test_upload_over_the_limit_is_413(serve, clip) -> None:
    fake = FakeModel()
    client, base = start(serve, LocalWhisper(fake, model_id="fake"), max_body_bytes=64 * 1024)
    big = clip * 4
    assert len(big) > 64 * 1024
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", big))
    assert err.value.status_code == 413
    assert error_of(err.value)["code"] == "file_too_large"

    def chunks():  # no Content-Length: counted while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 8192

    streamed = httpx.post(
        f"{base}/v1/audio/transcriptions",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    assert fake.calls == []


def test_busy_engine_is_429_with_retry_after(serve, clip) -> None:
    fake = FakeModel(gated=True)
    client, base = start(serve, LocalWhisper(fake, model_id="fake", max_pending=0))
    first: list[httpx.Response] = []
    blocked = threading.Thread(
        target=lambda: first.append(
            httpx.post(
                f"{base}/v1/audio/transcriptions", files={"file": ("a.wav", clip)}, timeout=30
            )
        )
    )
    blocked.start()
    try:
        assert fake.entered.wait(30)  # the first request occupies the engine
        with pytest.raises(openai.APIStatusError) as err:
            client.audio.transcriptions.create(model="whisper-1", file=("turn.wav", clip))
        assert err.value.status_code == 429
        assert err.value.response.headers["retry-after"] == "1"
        body = error_of(err.value)
        assert body["code"] == "engine_busy" and body["type"] == "rate_limit_error"
        assert "busy" in body["message"]
    finally:
        fake.release.set()
        blocked.join(30)
    assert first[0].status_code == 200 and first[0].json() == {"text": "hello"}


def test_engine_failure_is_500(serve, clip) -> None:
    fake = FakeModel(error=RuntimeError("decoder exploded"))
    client, _ = start(serve, LocalWhisper(fake, model_id="fake"))
    with pytest.raises(openai.InternalServerError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("turn.wav", clip))
    assert err.value.status_code == 500
    body = error_of(err.value)
    assert body["code"] == "engine_error" and "decoder exploded" in body["message"]


def test_missing_model_is_500_naming_what_was_tried(serve, clip, tmp_path: Path) -> None:
    from echokit_fast.config import default_config

    config = default_config()
    config = config.model_copy(update={"asr": LocalASR(model=str(tmp_path / "no-model"))})
    client, _ = start(serve, None, config=config)
    with pytest.raises(openai.InternalServerError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("turn.wav", clip))
    message = error_of(err.value)["message"]
    assert "no Whisper model found" in message and "does not exist" in message


def test_verbose_json_fields_with_a_fake_model(serve, clip) -> None:
    fake = FakeModel(segments=2, detected=("de", 0.8, [("de", 0.8)]))
    _, base = start(serve, LocalWhisper(fake, model_id="fake"))
    raw = httpx.post(
        f"{base}/v1/audio/transcriptions",
        files={"file": ("a.wav", clip)},
        data={"response_format": "verbose_json", "prompt": "EchoKit", "temperature": "0.4"},
    )
    body = raw.json()
    assert body["language"] == "german" and body["task"] == "transcribe"
    assert body["text"] == "hello0 hello1"
    assert [(s["id"], s["start"], s["end"]) for s in body["segments"]] == [(0, 0, 1), (1, 1, 2)]
    call = fake.calls[0]
    assert call["initial_prompt"] == "EchoKit" and call["temperature"] == 0.4
    assert call["without_timestamps"] is False
    srt = httpx.post(
        f"{base}/v1/audio/transcriptions",
        files={"file": ("a.wav", clip)},
        data={"response_format": "srt"},
    )
    assert srt.headers["content-type"].startswith("application/x-subrip")
    expected = (
        "1\n00:00:00,000 --> 00:00:01,000\nhello0\n\n2\n00:00:01,000 --> 00:00:02,000\nhello1\n"
    )
    assert srt.text == expected
    assert json.loads(
        httpx.post(f"{base}/v1/audio/transcriptions", files={"file": ("a.wav", clip)}).text
    ) == {"text": "hello0 hello1"}


def test_rates_the_native_resampler_does_not_take_and_empty_wavs(serve) -> None:
    fake = FakeModel()
    _, base = start(serve, LocalWhisper(fake, model_id="fake"))
    url = f"{base}/v1/audio/transcriptions"
    tone = (0.3 * np.sin(np.arange(96000) * 0.02)).astype(np.float32)
    hi = httpx.post(url, files={"file": ("hi.wav", audio.write_wav(tone, 96000))})
    assert hi.status_code == 200 and hi.json() == {"text": "hello"}
    assert fake.calls[0]["samples"] == 16000  # 1 s at 96 kHz, decoded and resampled by PyAV
    empty = httpx.post(
        url, files={"file": ("e.wav", audio.write_wav(np.zeros(0, np.float32), 16000))}
    )
    assert empty.status_code == 200 and empty.json() == {"text": ""}
    assert len(fake.calls) == 1  # no audio, no model call
