"""Silero VAD cost per 512-sample window: ours vs the official-wrapper loop vs faster-whisper.

Same run, same audio (the first 80 windows = 2.56 s of the shared fixture clip, v6 weights
everywhere), per group:

* ``ours``: streaming, 512 samples pushed per stream per tick. 1 stream: ``VadStream.push``;
  N streams: ``VadBatcher`` (every stream pushes, then one ``step()``: one model call for all).
* ``ours_offline`` (1-stream group only): ``get_speech_timestamps`` on the whole clip.
* ``peer_a_ort_loop``: what the official ``OnnxWrapper`` does, in plain Python: upstream
  ``silero_vad.onnx``, context concat + one ``session.run`` per window per stream (batch 1),
  1 intra-op / 1 inter-op thread.
* ``peer_b_faster_whisper``: ``faster_whisper.vad.get_speech_timestamps`` per stream (its own
  v6 model, which runs a whole clip in one call: offline, not streaming).

Within a group every entry processes the same number of stream-windows, so the ratio of the
mean times is the ratio of per-window (per-stream) costs. Timed run:

    .venv/bin/python -m pytest benches/bench_vad.py --benchmark-enable --benchmark-only
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from echokit_fast import vad

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
WINDOWS = 80
WIN = 512


def _audio() -> np.ndarray:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (pcm.astype(np.float32) / np.float32(32768.0))[: WINDOWS * WIN].copy()


AUDIO = _audio()
MODEL = vad.SileroVad.shared("v6")
ROUNDS = {1: 30, 8: 8, 64: 3}


class OfficialLoop:
    """Peer (a): the official ONNX wrapper's per-window work, without torch."""

    def __init__(self) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(vad.model_path("silero_vad_v6.onnx")), opts, providers=["CPUExecutionProvider"]
        )
        self.sr = np.array(16000, dtype=np.int64)

    def run_streams(self, n_streams: int) -> np.ndarray:
        states = [np.zeros((2, 1, 128), np.float32) for _ in range(n_streams)]
        contexts = [np.zeros((1, 64), np.float32) for _ in range(n_streams)]
        probs = np.empty((WINDOWS, n_streams), np.float32)
        for w in range(WINDOWS):
            chunk = AUDIO[w * WIN : (w + 1) * WIN][None, :]
            for s in range(n_streams):
                x = np.concatenate([contexts[s], chunk], axis=1)
                out, states[s] = self.session.run(
                    None, {"input": x, "state": states[s], "sr": self.sr}
                )
                contexts[s] = x[:, -64:]
                probs[w, s] = out[0, 0]
        return probs


def ours_streams(n_streams: int) -> tuple[np.ndarray, list[list[dict]]]:
    if n_streams == 1:
        stream = vad.VadStream(MODEL)
        probs, events = [], []
        for w in range(WINDOWS):
            events += stream.push(AUDIO[w * WIN : (w + 1) * WIN])
            probs.append(stream.last_probabilities)
        return np.concatenate(probs)[:, None], [events]
    batcher = vad.VadBatcher(MODEL)
    streams = [batcher.open() for _ in range(n_streams)]
    probs = np.empty((WINDOWS, n_streams), np.float32)
    events: list[list[dict]] = [[] for _ in range(n_streams)]
    for w in range(WINDOWS):
        chunk = AUDIO[w * WIN : (w + 1) * WIN]
        for s in streams:
            s.push(chunk)
        res = batcher.step()
        for k, s in enumerate(streams):
            probs[w, k] = res[s.id].probabilities[0]
            events[k] += res[s.id].events
    return probs, events


def faster_whisper_streams(n_streams: int) -> list[list[dict]]:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    # the official defaults (faster-whisper's own are 2000 ms silence / 400 ms pad)
    opts = VadOptions(min_speech_duration_ms=250, min_silence_duration_ms=100, speech_pad_ms=30)
    return [get_speech_timestamps(AUDIO, opts) for _ in range(n_streams)]


@pytest.fixture(scope="module")
def official() -> OfficialLoop:
    return OfficialLoop()


@pytest.fixture(scope="module")
def reference_probs(official) -> np.ndarray:
    return official.run_streams(1)[:, 0]


def _run(benchmark, fn, n_streams: int):
    benchmark.extra_info["streams"] = n_streams
    benchmark.extra_info["stream_windows"] = n_streams * WINDOWS
    return benchmark.pedantic(fn, rounds=ROUNDS[n_streams], iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("n_streams", [1, 8, 64])
def test_ours(benchmark, n_streams, reference_probs):
    benchmark.group = f"vad-{n_streams}-stream"
    probs, events = _run(benchmark, lambda: ours_streams(n_streams), n_streams)
    np.testing.assert_allclose(probs, np.repeat(reference_probs[:, None], n_streams, 1), atol=2e-5)
    assert all(e and e[0] == {"start": 8224} for e in events)


@pytest.mark.parametrize("n_streams", [1, 8, 64])
def test_peer_a_ort_loop(benchmark, n_streams, official, reference_probs):
    benchmark.group = f"vad-{n_streams}-stream"
    probs = _run(benchmark, lambda: official.run_streams(n_streams), n_streams)
    assert probs.shape == (WINDOWS, n_streams)
    np.testing.assert_allclose(probs[:, -1], reference_probs, atol=1e-6)


@pytest.mark.parametrize("n_streams", [1, 8, 64])
def test_peer_b_faster_whisper(benchmark, n_streams):
    benchmark.group = f"vad-{n_streams}-stream"
    faster_whisper_streams(1)  # load its model outside the timing
    out = _run(benchmark, lambda: faster_whisper_streams(n_streams), n_streams)
    assert len(out) == n_streams and out[0] and abs(out[0][0]["start"] - 8224) <= 512


def test_ours_offline(benchmark, reference_probs):
    benchmark.group = "vad-1-stream"
    segs = _run(benchmark, lambda: vad.get_speech_timestamps(AUDIO, model=MODEL), 1)
    assert segs and segs[0]["start"] == 8224
    np.testing.assert_allclose(
        vad.speech_probabilities(AUDIO, model=MODEL), reference_probs, atol=2e-5
    )
