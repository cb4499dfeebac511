"""Silero VAD: exact segmenter/iterator vectors, real-model fixture, streaming, batching, errors.

Data (tests/data, generated once with the official silero-vad package):
``vad_test_vectors.json`` (outputs of the official silero-vad 6.2.3 ``get_speech_timestamps`` /
``VADIterator`` on synthetic probabilities) and ``vad_fixture_hello16k.{wav,json}`` (espeak-ng
speech; per-window probabilities of the upstream v5/v6 ONNX models and the official timestamps).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echokit_fast.backends.vad import silero as vad

DATA = Path(__file__).resolve().parent / "data"
VECTORS = json.loads((DATA / "vad_test_vectors.json").read_text())["vectors"]
FIXTURE = json.loads((DATA / "vad_fixture_hello16k.json").read_text())


def _fixture_pcm16() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


PCM16 = _fixture_pcm16()
AUDIO = np.frombuffer(PCM16, "<i2").astype(np.float32) / np.float32(32768.0)


@pytest.fixture(scope="module", params=["v5", "v6"])
def model(request) -> vad.SileroVad:
    return vad.SileroVad(request.param)


@pytest.fixture(scope="module")
def v6() -> vad.SileroVad:
    return vad.SileroVad("v6")


class ReplayModel:
    """Stands in for SileroVad: returns the given probabilities, one per window, in order."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float32)
        self.i = 0

    def runner(self, sampling_rate):
        def run(frames, state):
            t, n = frames.shape[:2]
            assert n == 1
            p = self.probs[self.i : self.i + t].reshape(t, 1).copy()
            self.i += t
            return p, state

        return run


def _pairs(segments):
    return [[s["start"], s["end"]] for s in segments]


# --- segmenter: the official vectors -------------------------------------------------------


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_segments_match_official_vectors(vec):
    got = vad.segments_from_probabilities(
        vec["probs"],
        vec["audio_length_samples"],
        sampling_rate=vec["sampling_rate"],
        **vec["params"],
    )
    assert _pairs(got) == vec["python_segments"]
    if "python_segments_legacy" in vec:
        legacy = vad.segments_from_probabilities(
            vec["probs"],
            vec["audio_length_samples"],
            sampling_rate=vec["sampling_rate"],
            use_max_poss_sil_at_max_speech=False,
            **vec["params"],
        )
        assert _pairs(legacy) == vec["python_segments_legacy"]
        assert legacy != got


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_stream_events_match_official_vaditerator(vec):
    kw = {
        k: vec["params"][k]
        for k in ("threshold", "min_silence_duration_ms", "speech_pad_ms")
        if k in vec["params"]
    }
    win = vec["window_size_samples"]
    stream = vad.VadStream(ReplayModel(vec["probs"]), sampling_rate=vec["sampling_rate"], **kw)
    events = []
    for i in range(len(vec["probs"])):
        for e in stream.push(np.zeros(win, np.float32)):
            events.append([i, e])
    assert events == vec["vaditerator_events"]
    assert stream.current_sample == win * len(vec["probs"])


@pytest.mark.parametrize("vec", VECTORS, ids=[v["name"] for v in VECTORS])
def test_stream_events_do_not_depend_on_chunking(vec):
    kw = {
        k: vec["params"][k]
        for k in ("threshold", "min_silence_duration_ms", "speech_pad_ms")
        if k in vec["params"]
    }
    n = vec["window_size_samples"] * len(vec["probs"])
    expected = [e for _, e in vec["vaditerator_events"]]
    rng = np.random.default_rng(len(vec["probs"]))
    stream = vad.VadStream(ReplayModel(vec["probs"]), sampling_rate=vec["sampling_rate"], **kw)
    events, pos = [], 0
    while pos < n:
        size = int(rng.integers(1, 700))
        events += stream.push(np.zeros(min(size, n - pos), np.float32))
        pos += size
    assert events == expected


def _reference_segments(
    probs,
    n,
    sr,
    threshold=0.5,
    neg=None,
    min_speech_ms=250,
    max_speech_s=math.inf,
    min_silence_ms=100,
    pad_ms=30,
    new_mode=True,
):
    """Test oracle: the official algorithm, re-implemented from its source."""
    win = 512 if sr == 16000 else 256
    min_speech = sr * min_speech_ms / 1000
    pad = sr * pad_ms / 1000
    max_speech = sr * max_speech_s - win - 2 * pad
    min_sil = sr * min_silence_ms / 1000
    min_sil_max = sr * 98 / 1000
    neg = max(threshold - 0.15, 0.01) if neg is None else neg
    out, cur_start, temp_end, prev_end, next_start, ends = [], None, 0, 0, 0, []
    for i, p in enumerate(probs):
        cur = i * win
        if p >= threshold and temp_end:
            if cur - temp_end > min_sil_max:
                ends.append((temp_end, cur - temp_end))
            temp_end = 0
            if next_start < prev_end:
                next_start = cur
        if p >= threshold and cur_start is None:
            cur_start = cur
            continue
        if cur_start is not None and cur - cur_start > max_speech:
            if new_mode and ends:
                e, d = max(ends, key=lambda x: x[1])
                out.append([cur_start, e])
                cur_start = e + d if e + d < e + cur else None
            elif prev_end:
                out.append([cur_start, prev_end])
                cur_start = None if next_start < prev_end else next_start
            else:
                out.append([cur_start, cur])
                cur_start = None
                prev_end = next_start = temp_end = 0
                ends = []
                continue
            prev_end = next_start = temp_end = 0
            ends = []
        if p < neg and cur_start is not None:
            temp_end = temp_end or cur
            if not new_mode and cur - temp_end > min_sil_max:
                prev_end = temp_end
            if cur - temp_end < min_sil:
                continue
            if temp_end - cur_start > min_speech:
                out.append([cur_start, temp_end])
            cur_start, prev_end, next_start, temp_end, ends = None, 0, 0, 0, []
    if cur_start is not None and n - cur_start > min_speech:
        out.append([cur_start, n])
    for i, s in enumerate(out):
        if i == 0:
            s[0] = int(max(0, s[0] - pad))
        if i != len(out) - 1:
            gap = out[i + 1][0] - s[1]
            if gap < 2 * pad:
                s[1] += int(gap // 2)
                out[i + 1][0] = int(max(0, out[i + 1][0] - gap // 2))
            else:
                s[1] = int(min(n, s[1] + pad))
                out[i + 1][0] = int(max(0, out[i + 1][0] - pad))
        else:
            s[1] = int(min(n, s[1] + pad))
    return out


def test_reference_oracle_reproduces_the_official_vectors():
    for vec in VECTORS:
        p = vec["params"]
        got = _reference_segments(
            vec["probs"],
            vec["audio_length_samples"],
            vec["sampling_rate"],
            threshold=p.get("threshold", 0.5),
            neg=p.get("neg_threshold"),
            min_speech_ms=p.get("min_speech_duration_ms", 250),
            max_speech_s=p.get("max_speech_duration_s", math.inf),
            min_silence_ms=p.get("min_silence_duration_ms", 100),
            pad_ms=p.get("speech_pad_ms", 30),
        )
        assert got == vec["python_segments"], vec["name"]


@settings(max_examples=300, deadline=None)
@given(
    probs=st.lists(
        st.sampled_from([0.0, 0.05, 0.3, 0.349, 0.35, 0.4, 0.499, 0.5, 0.7, 1.0]), max_size=120
    ),
    extra=st.integers(0, 511),
    sr=st.sampled_from([8000, 16000]),
    min_speech_ms=st.sampled_from([0, 30, 100, 250]),
    max_speech_s=st.sampled_from([0.3, 0.7, 1.5, math.inf]),
    min_silence_ms=st.sampled_from([0, 50, 100, 300]),
    pad_ms=st.sampled_from([0, 10, 30, 100]),
    new_mode=st.booleans(),
)
def test_segments_match_reference_on_random_probabilities(
    probs, extra, sr, min_speech_ms, max_speech_s, min_silence_ms, pad_ms, new_mode
):
    win = 512 if sr == 16000 else 256
    n = max(0, len(probs) * win - (extra % win))
    got = vad.segments_from_probabilities(
        probs,
        n,
        sampling_rate=sr,
        min_speech_duration_ms=min_speech_ms,
        max_speech_duration_s=max_speech_s,
        min_silence_duration_ms=min_silence_ms,
        speech_pad_ms=pad_ms,
        use_max_poss_sil_at_max_speech=new_mode,
    )
    want = _reference_segments(
        probs, n, sr, 0.5, None, min_speech_ms, max_speech_s, min_silence_ms, pad_ms, new_mode
    )
    assert _pairs(got) == want


# --- the model ----------------------------------------------------------------------------


def test_shipped_files_have_the_recorded_sha256():
    for name, digest in vad.MODEL_SHA256.items():
        assert hashlib.sha256((vad.ASSETS / name).read_bytes()).hexdigest() == digest
    assert "MIT License" in (vad.ASSETS / "silero_vad.LICENSE").read_text()


def test_corrupt_model_file_is_a_clear_error(tmp_path, monkeypatch):
    for name in vad.MODEL_SHA256:
        shutil.copy(vad.ASSETS / name, tmp_path / name)
    target = tmp_path / "silero_vad_v6_batched_16k.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    monkeypatch.setattr(vad, "ASSETS", tmp_path)
    with pytest.raises(vad.ModelFileError, match="sha256"):
        vad.SileroVad("v6")
    vad.SileroVad("v5")  # untouched files still load
    (tmp_path / "silero_vad_v5_batched_16k.onnx").unlink()
    with pytest.raises(vad.ModelFileError, match="cannot be read"):
        vad.SileroVad("v5")


def _upstream_probs(version: str, audio: np.ndarray, sr: int) -> np.ndarray:
    """What the official ONNX wrapper computes: upstream graph, context concat, one call per
    window (gen_vad_fixture.py's loop)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(
        str(vad.model_path(f"silero_vad_{version}.onnx")), opts, providers=["CPUExecutionProvider"]
    )
    win, ctx = (512, 64) if sr == 16000 else (256, 32)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, ctx), np.float32)
    out = []
    for i in range(0, len(audio), win):
        chunk = audio[i : i + win]
        chunk = np.pad(chunk, (0, win - len(chunk)))
        x = np.concatenate([context, chunk[None]], axis=1).astype(np.float32)
        p, state = sess.run(None, {"input": x, "state": state, "sr": np.array(sr, np.int64)})
        context = x[:, -ctx:]
        out.append(p[0, 0])
    return np.array(out, np.float32)


def _test_signal(sr: int) -> np.ndarray:
    """Fixture speech (decimated for 8 kHz) followed by deterministic noise bursts."""
    speech = AUDIO if sr == 16000 else AUDIO[::2].copy()
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(sr) * 0.3).astype(np.float32)
    noise[: sr // 2] *= 0.01
    return np.concatenate([speech, noise])


@pytest.mark.parametrize("sr", [16000, 8000])
def test_derived_graph_matches_upstream_graph(model, sr):
    audio = _test_signal(sr)
    want = _upstream_probs(model.version, audio, sr)
    got = vad.speech_probabilities(audio, sr, model=model)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    # window by window (T = 1 per call) gives the same numbers
    stream = vad.VadStream(model, sampling_rate=sr, max_windows_per_call=1)
    win = stream.window_size
    padded = np.pad(audio, (0, len(want) * win - len(audio)))
    probs = []
    for i in range(0, len(padded), win):
        stream.push(padded[i : i + win])
        probs.append(stream.last_probabilities)
    np.testing.assert_allclose(np.concatenate(probs), want, atol=2e-5, rtol=0)


def test_fixture_probabilities_and_timestamps(model):
    ref = FIXTURE["models"][model.version]
    probs = vad.speech_probabilities(AUDIO, model=model)
    # the fixture is rounded to 6 decimals; its v5 numbers come from silero_vad_half.onnx
    np.testing.assert_allclose(probs, ref["probs"], atol=2e-5, rtol=0)
    got = vad.get_speech_timestamps(AUDIO, model=model)
    assert _pairs(got) == ref["timestamps"]
    # the same from PCM16 bytes and from a 2-channel array with equal channels
    assert vad.get_speech_timestamps(PCM16, model=model) == got
    stereo = np.stack([AUDIO, AUDIO], axis=1)
    assert vad.get_speech_timestamps(stereo, model=model) == got


def test_default_model_is_v6():
    got = vad.get_speech_timestamps(AUDIO)
    assert _pairs(got) == FIXTURE["models"]["v6"]["timestamps"]


def test_segments_are_where_the_speech_is(v6):
    sr = 16000
    speech = AUDIO[7000:72000]  # the spoken part of the fixture
    silence = np.zeros(sr * 2, np.float32)
    clip = np.concatenate([silence, speech, silence, silence, speech, silence])
    segs = vad.get_speech_timestamps(clip, model=v6)
    assert len(segs) == 2
    second = 2 * sr + len(speech) + 4 * sr
    for seg, begin in zip(segs, (2 * sr, second), strict=True):
        assert begin - 2000 <= seg["start"] <= begin + 3000
        assert begin + len(speech) - 3000 <= seg["end"] <= begin + len(speech) + 2000
    assert vad.get_speech_timestamps(np.zeros(sr * 3, np.float32), model=v6) == []
    assert vad.get_speech_timestamps(np.zeros(0, np.float32), model=v6) == []


def test_8k_timestamps_locate_the_speech(model):
    audio8 = AUDIO[::2].copy()
    segs = vad.get_speech_timestamps(audio8, 8000, model=model)
    assert len(segs) >= 1
    # the 16 kHz answer, halved, within a couple of windows
    ref = FIXTURE["models"][model.version]["timestamps"][0]
    assert abs(segs[0]["start"] - ref[0] // 2) <= 2 * 256
    assert abs(segs[-1]["end"] - ref[1] // 2) <= 4 * 256


# --- streaming -----------------------------------------------------------------------------


def _stream_all(model, audio, sizes=None, *, as_bytes=False, **kw):
    stream = vad.VadStream(model, **kw)
    events, probs, pos, i = [], [], 0, 0
    while pos < len(audio):
        size = len(audio) if sizes is None else sizes[i % len(sizes)]
        chunk = audio[pos : pos + size]
        events += stream.push(chunk.tobytes() if as_bytes else chunk)
        probs.append(stream.last_probabilities)
        pos += size
        i += 1
    return events, np.concatenate(probs), stream


def test_stream_on_fixture_matches_offline_probabilities(model):
    events, probs, stream = _stream_all(model, AUDIO)
    whole = len(AUDIO) // 512
    assert len(probs) == whole and stream.pending_samples == len(AUDIO) - whole * 512
    np.testing.assert_allclose(probs, FIXTURE["models"][model.version]["probs"][:whole], atol=2e-5)
    assert events[0] == {"start": FIXTURE["models"][model.version]["timestamps"][0][0]}
    assert all(len(e) == 1 for e in events)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_random_chunkings_give_identical_events(v6, seed):
    rng = np.random.default_rng(seed)
    sizes = [int(s) for s in rng.integers(1, 5001, size=200)]
    if seed == 0:
        sizes = [1, 2, 3, 511, 513, 1, *sizes]
    ref_events, ref_probs, _ = _stream_all(v6, AUDIO, [512])
    events, probs, _ = _stream_all(v6, AUDIO, sizes)
    assert events == ref_events
    assert len(events) >= 2
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5, rtol=0)
    # PCM16 bytes in odd-sized (but even byte) chunks give the same
    events_b, probs_b, _ = _stream_all(v6, np.frombuffer(PCM16, "<i2"), sizes, as_bytes=True)
    assert events_b == ref_events
    np.testing.assert_allclose(probs_b, ref_probs, atol=1e-5, rtol=0)


def test_stream_reset_starts_over(v6):
    stream = vad.VadStream(v6)
    first = stream.push(AUDIO)
    assert stream.current_sample > 0 and stream.triggered in (True, False)
    stream.push(AUDIO[:700])
    stream.reset()
    assert (stream.current_sample, stream.pending_samples, stream.triggered) == (0, 0, False)
    assert stream.push(AUDIO) == first


def test_stream_8k_and_parameters(v6):
    audio8 = AUDIO[::2].copy()
    events, probs, _ = _stream_all(v6, audio8, [333], sampling_rate=8000)
    assert len(probs) == len(audio8) // 256
    assert events and "start" in events[0] and events[0]["start"] < 8224 // 2 + 512
    # a threshold above every probability: no events at all
    none, _, _ = _stream_all(v6, AUDIO, [4096], threshold=1.01)
    assert none == []
    # long min silence merges the short dips the default ends on
    short, _, _ = _stream_all(v6, AUDIO, [4096], min_silence_duration_ms=10)
    long, _, _ = _stream_all(v6, AUDIO, [4096], min_silence_duration_ms=2000)
    assert len(long) <= len(short)


# --- batching ------------------------------------------------------------------------------


def _stream_signals(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        shift = int(rng.integers(0, 20000))
        gain = np.float32(0.3 + 0.7 * rng.random())
        noise = (rng.standard_normal(len(AUDIO)) * 0.002).astype(np.float32)
        out.append((np.roll(AUDIO, shift) * gain + noise * (i % 2)).astype(np.float32))
    return out


@pytest.mark.parametrize("n_streams", [1, 5, 16])
def test_batch_equals_separate_streams(v6, n_streams):
    signals = _stream_signals(n_streams)
    rng = np.random.default_rng(n_streams)
    plans = [[int(s) for s in rng.integers(1, 3000, size=100)] for _ in range(n_streams)]
    # separate single streams
    want = [_stream_all(v6, sig, plan) for sig, plan in zip(signals, plans, strict=True)]
    # one batcher: every stream pushes its next chunk, then one step for all
    batcher = vad.VadBatcher(v6, max_windows_per_step=4)
    streams = [batcher.open() for _ in range(n_streams)]
    pos = [0] * n_streams
    events = {s.id: [] for s in streams}
    probs = {s.id: [] for s in streams}
    biggest_batch = 0
    for rnd in range(10_000):
        if all(p >= len(sig) for p, sig in zip(pos, signals, strict=True)):
            break
        for k, s in enumerate(streams):
            size = plans[k][rnd % len(plans[k])]
            chunk = signals[k][pos[k] : pos[k] + size]
            pos[k] += size
            if len(chunk):
                s.push(chunk if k % 2 else chunk.astype("<f4").view(np.float32))
        res = batcher.step()
        biggest_batch = max(biggest_batch, len(res))
        for sid, r in res.items():
            events[sid] += r.events
            probs[sid].append(r.probabilities)
    assert biggest_batch == n_streams  # windows of different streams did share calls
    for s, (w_events, w_probs, _) in zip(streams, want, strict=True):
        assert events[s.id] == w_events
        np.testing.assert_allclose(np.concatenate(probs[s.id]), w_probs, atol=1e-5, rtol=0)


def test_batcher_stream_lifecycle_and_async(v6):
    batcher = vad.VadBatcher(v6)
    a, b = batcher.open(), batcher.open(threshold=1.01)
    assert len(batcher) == 2
    a.push(PCM16)
    b.push(AUDIO)
    assert a.ready_windows == len(AUDIO) // 512
    res = asyncio.run(batcher.astep())
    assert res[a.id].events and res[b.id].events == []
    assert len(res[a.id].probabilities) == len(AUDIO) // 512
    assert batcher.step() == {}
    a.reset()
    assert a.triggered is False
    b.close()
    assert len(batcher) == 1
    with pytest.raises(ValueError, match="no open VAD stream"):
        b.push(AUDIO)
    a.push(AUDIO[:512])
    again = batcher.step()
    assert list(again) == [a.id] and len(again[a.id].probabilities) == 1


# --- bad input -----------------------------------------------------------------------------


def test_bad_inputs_raise_value_error(v6):
    with pytest.raises(ValueError, match="16000 or 8000"):
        vad.VadStream(v6, sampling_rate=44100)
    with pytest.raises(ValueError, match=r"8000\.\.48000"):
        vad.get_speech_timestamps(AUDIO, 7999, model=v6)
    with pytest.raises(ValueError, match=r"8000\.\.48000"):
        vad.get_speech_timestamps(AUDIO, 96000, model=v6)
    with pytest.raises(ValueError, match="16000 or 8000"):
        vad.segments_from_probabilities([0.5], 512, sampling_rate=48000)
    with pytest.raises(ValueError, match="16000 or 8000"):
        vad.VadBatcher(v6, sampling_rate=32000)
    stream = vad.VadStream(v6)
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        stream.push(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="dtype float64"):
        stream.push(AUDIO.astype(np.float64))
    with pytest.raises(ValueError, match="dtype int16"):
        stream.push(np.zeros(10, np.int16))
    with pytest.raises(ValueError, match="1-D"):
        stream.push(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match="list"):
        stream.push([0.0] * 512)
    with pytest.raises(ValueError, match="not finite"):
        stream.push(np.array([0.0, np.nan], np.float32))
    assert stream.pending_samples == 0  # nothing half-appended
    with pytest.raises(ValueError, match="even number of bytes"):
        vad.get_speech_timestamps(b"\x00" * 5, model=v6)
    with pytest.raises(ValueError, match="channels"):
        vad.get_speech_timestamps(np.zeros((100, 0), np.float32), model=v6)
    with pytest.raises(ValueError, match="shape"):
        vad.get_speech_timestamps(np.zeros((2, 2, 2), np.float32), model=v6)
    with pytest.raises(ValueError, match="speech_pad_ms"):
        vad.segments_from_probabilities([0.5], 512, speech_pad_ms=-1)
    with pytest.raises(ValueError, match="max_speech_duration_s"):
        vad.segments_from_probabilities([0.5], 512, max_speech_duration_s=0)
    with pytest.raises(ValueError, match="NaN"):
        vad.segments_from_probabilities([0.5, float("nan")], 1024)
    with pytest.raises(ValueError, match="1-D"):
        vad.segments_from_probabilities([[0.5]], 512)
    with pytest.raises(ValueError, match="threshold"):
        vad.VadStream(v6, threshold=float("nan"))
    with pytest.raises(ValueError, match="version"):
        vad.SileroVad("v7")
    with pytest.raises(ValueError, match="intra_op_threads"):
        vad.SileroVad("v6", intra_op_threads=0)


# --- other rates and channel counts (resampled / mixed before the model) -------------------

FIXTURE_V6 = FIXTURE["models"]["v6"]["timestamps"]  # official get_speech_timestamps, 16 kHz


@pytest.mark.parametrize(
    ("rate", "channels"), [(44100, 2), (48000, 2), (24000, 2), (8000, 2), (22050, 3)]
)
def test_other_rates_and_channels_find_the_same_speech(v6, rate, channels):
    import soxr  # an independent resampler makes the input

    x = soxr.resample(AUDIO, 16000, rate).astype(np.float32)
    gains = np.array([1.0, 0.5, 0.25][:channels], np.float32)
    multi = np.ascontiguousarray(x[:, None] * gains[None, :])
    got = vad.get_speech_timestamps(multi, rate, model=v6)
    # sample indices of the input; the same places as at 16 kHz, within one window
    tol = 512 * rate / 16000
    assert len(got) == len(FIXTURE_V6)
    for seg, (start, end) in zip(got, FIXTURE_V6, strict=True):
        assert abs(seg["start"] - start * rate / 16000) <= tol
        assert abs(seg["end"] - end * rate / 16000) <= tol
        assert 0 <= seg["start"] < seg["end"] <= len(x)


def test_8k_runs_natively_and_other_rates_map_back(v6):
    import soxr

    x8 = soxr.resample(AUDIO, 16000, 8000).astype(np.float32)
    native = vad.get_speech_timestamps(x8, 8000, model=v6)
    # the 8 kHz model on 8 kHz audio: its own probabilities, 256-sample windows
    probs = vad.speech_probabilities(x8, 8000, model=v6)
    assert len(probs) == -(-len(x8) // 256)
    assert native == vad.segments_from_probabilities(probs, len(x8), sampling_rate=8000)
    # 32 kHz: resampled to 16 kHz, segments scaled by 2 back to the input's indices
    x32 = soxr.resample(AUDIO, 16000, 32000).astype(np.float32)
    from echokit_fast.audio import resample

    at16 = vad.get_speech_timestamps(resample(x32, 32000, 16000), 16000, model=v6)
    got = vad.get_speech_timestamps(x32, 32000, model=v6)
    assert got == [{"start": s["start"] * 2, "end": s["end"] * 2} for s in at16]
    assert len(vad.speech_probabilities(x32, 32000, model=v6)) == -(-len(x32) // 2 // 512)


def test_multichannel_is_the_channel_average(v6):
    stereo = np.ascontiguousarray(np.stack([AUDIO, np.zeros_like(AUDIO)], axis=1))
    half = AUDIO * np.float32(0.5)
    np.testing.assert_array_equal(
        vad.speech_probabilities(stereo, model=v6), vad.speech_probabilities(half, model=v6)
    )
