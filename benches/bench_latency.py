"""End of speech -> first reply audio on the embedded stack, as a person with a box feels it.

``echokit-fast serve`` (the real CLI, a child process) on the embedded default's pieces: Silero
VAD with Smart Turn at each pause, Whisper base int8 detecting the language, hibari speaking
the first clause, and an OpenAI-compatible LLM stand-in that answers at once (the LLM is not
what is measured). One ``echokit-vdev`` device streams each question like the firmware does
(512 ms frames, real time) and times from the **audible** end of the speech (the frame holding
its last sample above -40 dBFS) to the first reply audio. Where the wait goes is taken from the
device's own log: audible end -> ``EndVad`` (end of turn), ``EndVad`` -> final ``ASR``, ``ASR``
-> first audio.

Both servers run as the embedded default does, early ASR (``[asr.vad] early_asr``) and
speculative answers (``speculative_reply``), unless told otherwise (below): how often the
answer started at the pause was the one given (``hit``), was dropped (``miss``) or never
started (``none``, the turn ended at the pause itself) is read from the server's turn records
(``GET /console/api/status``).

The same questions run against two servers, alternating per question: the encoder window sized
to the clip (``[asr] encoder_window = "auto"``, the default) and the full 30 s window
(``"full"``); the word error rate of each on the same turns is reported beside the latency.

    .venv/bin/python -m pytest benches/bench_latency.py -s --benchmark-enable --latency-all

With ``--latency-llm-delay S`` the LLM stand-in waits S seconds before its first token, as a
real LLM does, and the two servers are speculative replies on and off (both sized windows): what
an answer started at the pause saves, and how often it was the one given.

The suite runs the first two questions once (``scripts/test.sh``); ``--latency-all`` runs all
20 (10 sentences, espeak-ng ``en-us`` and hibari).
"""

from __future__ import annotations

import json
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from asr_helpers import SENTENCES, espeak_wav, wav_mono, word_errors  # noqa: E402
from harness import free_port, running_server, serve_process  # noqa: E402
from standins import ChatServer  # noqa: E402
from vdev import vdev  # noqa: E402

from echokit_fast import audio  # noqa: E402

ANSWER = "Sure. Here is a short answer for you."
VOICES = ("en-us", "hibari")
#: silence before the speech: the VAD and Smart Turn see the device's quiet first
LEAD_S = 0.3


@pytest.fixture(scope="module")
def questions(request, speaker, tmp_path_factory) -> list[tuple[str, Path]]:
    """(sentence, 16 kHz WAV) per question: SENTENCES in both voices, interleaved."""
    folder = tmp_path_factory.mktemp("latency")
    out = []
    for i, text in enumerate(SENTENCES):
        for voice in VOICES:
            if voice == "hibari":
                x = np.asarray(speaker.synthesize(text, sample_rate=16000), np.float32)
            else:
                pcm, rate = wav_mono(espeak_wav(text, folder / "say.wav", voice=voice))
                x = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm
                x = audio.resample(x, rate, 16000)
            x = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), x])
            path = folder / f"q{i}-{voice}.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
            out.append((text, path))
    return out if request.config.getoption("--latency-all") else out[:2]


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory):
    """Two servers over one LLM stand-in: encoder window auto and full (instant LLM), or,
    with ``--latency-llm-delay``, speculative replies on and off (a slow first token)."""
    delay = request.config.getoption("--latency-llm-delay")
    if delay > 0:
        kinds = {"speculative": ("auto", True), "not speculative": ("auto", False)}
    else:
        kinds = {"auto": ("auto", True), "full": ("full", True)}
    chat = ChatServer()
    chat.default.deltas = [ANSWER]
    chat.default.first_delay = delay
    with running_server(chat.app) as chat_addr:
        procs = {}
        stack = []
        try:
            for name, (window, speculative) in kinds.items():
                addr = f"127.0.0.1:{free_port()}"
                cfg = tmp_path_factory.mktemp("latency") / "config.toml"
                cfg.write_text(
                    f"""
addr = "{addr}"

[asr]
platform = "local"
encoder_window = "{window}"

[asr.vad]
turn_detector = "smart_turn"
speculative_reply = {str(speculative).lower()}
early_asr = true

[tts]
platform = "local"

[llm]
platform = "openai_chat"
url = "http://{chat_addr}/v1/chat/completions"
history = 5
"""
                )
                ctx = serve_process(str(cfg))
                procs[name] = (addr, ctx.__enter__())
                stack.append(ctx)
            yield procs
        finally:
            for ctx in reversed(stack):
                ctx.__exit__(None, None, None)


def _turn(addr: str, wav: Path, out: Path) -> dict:
    result = vdev(addr, wav, out=out, args=("--timeout", "60", "--no-hello"))
    assert result.returncode == 0, result.describe()
    (turn,) = result.turns()
    final = result.of("asr")
    assert turn["first_audio_latency"] is not None and final, result.describe()
    end_vad = result.of("end_vad")
    return {
        "latency": turn["first_audio_latency"],
        "turn_end": (end_vad[0]["t"] - turn["t_audible_end"]) if end_vad else None,
        "asr": final[-1]["t"] - (end_vad[0]["t"] if end_vad else turn["t_audible_end"]),
        "first_audio": turn["t_first_audio"] - final[-1]["t"],
        "text": turn["asr"][-1] if turn["asr"] else "",
    }


def _summary(turns: list[dict], said: list[str]) -> dict:
    def ms(key: str, q: float) -> float | None:
        values = [t[key] for t in turns if t[key] is not None]
        return round(float(np.percentile(values, q)) * 1e3, 1) if values else None

    errors = total = 0
    for t, text in zip(turns, said, strict=True):
        e, n = word_errors(text, t["text"])
        errors, total = errors + e, total + n
    return {
        "turns": len(turns),
        "p50_ms": ms("latency", 50),
        "p95_ms": ms("latency", 95),
        "turn_end_p50_ms": ms("turn_end", 50),
        "asr_p50_ms": ms("asr", 50),
        "first_audio_after_asr_p50_ms": ms("first_audio", 50),
        "wer": round(errors / max(total, 1), 3),
    }


def test_end_of_speech_to_first_audio(benchmark, servers, questions, tmp_path) -> None:
    benchmark.group = "latency: audible end of speech -> first audio, embedded stack"
    turns: dict[str, list[dict]] = {name: [] for name in servers}

    def measure() -> None:
        for i, (_, wav) in enumerate(questions):
            for n, (name, (addr, _)) in enumerate(servers.items()):
                turns[name].append(_turn(addr, wav, tmp_path / f"{n}-{i}"))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    said = [text for text, _ in questions]
    info = {name: _summary(t, said) for name, t in turns.items()}
    for name, (addr, _) in servers.items():
        records = httpx.get(f"http://{addr}/console/api/status").json()["turns"]
        outcomes = [r.get("speculative", "none") for r in records]
        info[name]["speculative"] = {k: outcomes.count(k) for k in ("hit", "miss", "none")}
    benchmark.extra_info.update(info)
    print(f"\nlatency: {json.dumps(info)}")
    for name, summary in info.items():
        assert summary["turns"] == len(questions), (name, summary)
