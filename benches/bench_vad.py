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

import sys
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import running_server

from echokit_fast.backends.vad import silero as vad

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
WINDOWS = 80
WIN = 512


def _audio() -> np.ndarray:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (pcm.astype(np.float32) / np.float32(32768.0))[: WINDOWS * WIN].copy()


AUDIO = _audio()
MODEL = vad.SileroVad("v6")
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


# --- the service: POST /v1/audio/vad and WS /v1/audio/realtime_vad through a real server ----
#
# group ``vad-http-fixture``: one ``POST /v1/audio/vad`` of the whole fixture WAV (5.1 s) over
# loopback (keep-alive client) vs ``speech_timestamps_from_wav`` called directly on the same
# bytes: the ratio is the HTTP layer's overhead.
# group ``vad-ws-8-clients``: 8 WebSocket clients each streaming the fixture (4096-byte
# frames, as the reference's test page) through the batched realtime route, until every
# window is answered, vs 8 in-process ``VadStream``s (one model call per stream, no network)
# on the same audio.

WS_CLIENTS = 8
FIXTURE_WAV = (DATA / "vad_fixture_hello16k.wav").read_bytes()


@pytest.fixture(scope="module")
def service():
    from echokit_fast.server.app import create_app
    from echokit_fast.server.state import AppState

    ctx = AppState()
    ctx.vad = MODEL
    with running_server(create_app(state=ctx)) as addr:
        yield ctx, addr


def test_http_roundtrip_ours(benchmark, service):
    import httpx

    _ctx, addr = service
    benchmark.group = "vad-http-fixture"
    with httpx.Client(base_url=f"http://{addr}", timeout=60) as client:

        def once():
            r = client.post("/v1/audio/vad", files={"audio": ("a.wav", FIXTURE_WAV)})
            r.raise_for_status()
            return r.json()

        body = benchmark.pedantic(once, rounds=20, iterations=1, warmup_rounds=2)
    assert body == {"timestamps": [{"start": 8224, "end": 70624}]}


def test_http_direct_call(benchmark):
    benchmark.group = "vad-http-fixture"
    segs = benchmark.pedantic(
        lambda: vad.speech_timestamps_from_wav(FIXTURE_WAV, model=MODEL),
        rounds=20,
        iterations=1,
        warmup_rounds=2,
    )
    assert segs == [{"start": 8224, "end": 70624}]


def _pcm16() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        return w.readframes(w.getnframes()) + bytes(32000)  # + 1 s of silence


PCM16_TAIL = _pcm16()


def test_ws_clients_ours_batched(benchmark, service):
    import asyncio
    import json

    import websockets

    ctx, addr = service

    async def client(url: str) -> list[str]:
        async with websockets.connect(url) as ws:
            for i in range(0, len(PCM16_TAIL), 4096):
                await ws.send(PCM16_TAIL[i : i + 4096])
            return [json.loads(await ws.recv())["event"] for _ in range(2)]

    async def run():
        url = f"ws://{addr}/v1/audio/realtime_vad"
        return await asyncio.gather(*(client(url) for _ in range(WS_CLIENTS)))

    benchmark.group = f"vad-ws-{WS_CLIENTS}-clients"
    out = benchmark.pedantic(lambda: asyncio.run(run()), rounds=5, iterations=1, warmup_rounds=1)
    assert out == [["speech_start", "speech_end"]] * WS_CLIENTS
    realtime = ctx.realtime_vad
    assert realtime.max_streams_per_step >= 2  # the clients shared model calls


def test_ws_clients_peer_inprocess_vadstream(benchmark):
    usable = len(PCM16_TAIL) // 1024 * 1024

    def run():
        out = []
        for _ in range(WS_CLIENTS):
            s = vad.VadStream(MODEL)
            events = []
            for i in range(0, usable, 4096):
                events += s.push(PCM16_TAIL[i : min(i + 4096, usable)])
            out.append(events)
        return out

    benchmark.group = f"vad-ws-{WS_CLIENTS}-clients"
    out = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert all(len(e) == 2 and "start" in e[0] and "end" in e[1] for e in out)
