"""The device server's pure pieces: query flags, turn detection, segmenter, audio framing,
hello loading, safe record paths, the per-turn trace."""

from __future__ import annotations

import json
import logging
import wave
from pathlib import Path

import numpy as np
import pytest
from device_fakes import tone

from echokit_fast.audio import OpusDecoder, float_to_pcm16, write_wav
from echokit_fast.backends.schema import VadConfig
from echokit_fast.backends.vad.silero import SileroVad, VadStream
from echokit_fast.conversation.trace import TurnTrace
from echokit_fast.devices.echokit.flags import Flags
from echokit_fast.devices.echokit.output import AudioOut, hello_frames, load_hello
from echokit_fast.devices.echokit.protocol import decode_event
from echokit_fast.devices.echokit.record import Recorder, resolve_file, safe_name
from echokit_fast.turn.detector import TurnEvent
from echokit_fast.turn.vad_rounds import Hysteresis, RoundTracker, VadParams

DATA = Path(__file__).resolve().parent / "data"

# --- flags -----------------------------------------------------------------------------------


def test_flags_strict_booleans():
    f = Flags.parse([("opus", "true"), ("vowel", "true"), ("stream_asr", "false"), ("x", "1")])
    assert (f.opus, f.vowel, f.stream_asr) == (True, True, False)
    assert (f.reconnect, f.record) == (False, False)
    assert Flags.parse([]) == Flags()
    for bad in ("1", "True", "yes", "", "true ", "0"):
        with pytest.raises(ValueError, match="expected true or false"):
            Flags.parse([("reconnect", bad)])
    with pytest.raises(ValueError, match="more than once"):
        Flags.parse([("opus", "true"), ("opus", "true")])
    # record is not a flag of /v2/stable_ws: ignored there like any unknown parameter
    assert Flags.parse([("record", "maybe")], allow_record=False) == Flags()


# --- turn detection ----------------------------------------------------------------------------


def test_vad_params_from_config_matches_reference_defaults():
    p = VadParams.from_config(VadConfig())
    assert (p.threshold, p.neg_threshold, p.release_windows) == (0.5, pytest.approx(0.35), 6)
    assert (p.min_speech_duration_ms, p.hangover_ms) == (400, 500)
    p = VadParams.from_config(VadConfig(threshold=0.99, max_silence_duration_ms=100))
    assert p.threshold == 0.95 and p.release_windows == 3  # capped; 100*16//512
    p = VadParams.from_config(VadConfig(threshold=0.1))
    assert p.neg_threshold == 0.05  # floor
    assert VadParams.from_config(None) == VadParams()


def test_hysteresis():
    h = Hysteresis(VadParams())
    assert [h.step(p) for p in [0.2, 0.6, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3]] == [
        False,
        True,
        True,  # between the thresholds: no change
        True,
        True,
        True,
        True,
        True,
    ]
    assert h.step(0.3) is False  # the 6th silent window releases
    assert h.step(0.45) is False
    assert h.step(0.51) is True
    assert h.step(0.1) is True  # the count restarted at the last speech window


def test_round_tracker_pause_then_end():
    t = RoundTracker(VadParams())
    results = [t.window(0.9) for _ in range(13)]  # 416 ms of speech
    assert set(results) == {TurnEvent.NONE}
    quiet = []
    results = []
    for _ in range(6):
        results.append(t.window(0.0))
        quiet.append(t.quiet)
    # the release window ends the round: 416 ms > 400 ms of speech -> a pause; the first quiet
    # window said speech may be ending (the early ASR's start)
    assert results == [TurnEvent.NONE] * 5 + [TurnEvent.PAUSE] and t.released
    assert quiet == [True] + [False] * 5
    results = [t.window(0.0) for _ in range(16)]
    assert results == [TurnEvent.NONE] * 15 + [TurnEvent.END]  # 512 ms > 500 ms of silence
    assert t.speech_seen


def test_round_tracker_short_speech_and_silence():
    t = RoundTracker(VadParams())
    assert [t.window(0.0) for _ in range(16)][-1] is TurnEvent.END  # no speech at all
    t.reset()
    assert not t.speech_seen
    [t.window(0.9) for _ in range(3)]  # 96 ms, +5 windows until the release: 256 ms < 400
    results = []
    for _ in range(21):
        results.append(t.window(0.0))
        assert not t.quiet  # too little speech for a round: never "may be ending"
    # after the release window, 16 more of silence (512 ms > 500 ms) end the turn
    assert results == [TurnEvent.NONE] * 20 + [TurnEvent.END]
    assert t.speech_seen


def test_round_tracker_on_real_speech():
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        pcm = w.readframes(w.getnframes())[2 * 4096 :] + bytes(32000)
    vad = VadStream(SileroVad(), threshold=0.5)
    vad.push(pcm)
    t = RoundTracker(VadParams())
    ends = []
    for i, p in enumerate(vad.last_probabilities):
        r = t.window(float(p))
        if r is not TurnEvent.NONE:
            ends.append((i, r))
        if r is TurnEvent.END:  # the session stops listening here
            break
    assert [r for _, r in ends] == [TurnEvent.PAUSE, TurnEvent.END]
    pause, end = ends[0][0], ends[1][0]
    assert end - pause == 16
    assert (70624 - 4096) / 512 < pause < (70624 - 4096) / 512 + 10  # just after the speech


# --- audio out -------------------------------------------------------------------------------


def test_audio_out_raw_splits_at_32000_bytes():
    out = AudioOut(opus=False, vowel=True)  # vowel means nothing without opus
    pcm = tone(40000)
    frames = out.push(pcm)
    data = [decode_event(f)["AudioChunk"]["data"] for f in frames]
    assert [len(d) for d in data] == [32000, 32000, 16000]
    assert b"".join(data) == float_to_pcm16(pcm)
    assert out.end_segment() == []


def test_audio_out_opus_carries_remainders_and_flushes():
    out = AudioOut(opus=True, vowel=False)
    sizes = [700, 1000, 3000, 10, 2500]  # no chunk is a multiple of 1920
    frames = [f for n in sizes for f in out.push(tone(n))]
    frames += out.end_segment()
    total = sum(sizes)
    assert len(frames) == -(-total // 1920)
    dec = OpusDecoder(16000)
    events = [decode_event(f) for f in frames]
    assert all(list(e) == ["AudioChunk"] for e in events)
    assert sum(len(dec.decode(e["AudioChunk"]["data"])) for e in events) == len(frames) * 1920
    # the flush carried nothing over
    assert out.end_segment() == []


def test_audio_out_vowels():
    out = AudioOut(opus=True, vowel=True)
    frames = out.push(tone(1920 * 2)) + out.end_segment()
    events = [decode_event(f) for f in frames]
    assert all(list(e) == ["AudioChunkWithVowel"] for e in events)
    assert all(0 <= e["AudioChunkWithVowel"]["vowel"] <= 5 for e in events)


# --- hello -----------------------------------------------------------------------------------


def test_hello_frames_and_loading(tmp_path, caplog):
    good = write_wav(tone(3000), 16000)
    p = tmp_path / "hello.wav"
    p.write_bytes(good)
    with caplog.at_level(logging.WARNING, logger="echokit_fast.device"):
        assert load_hello(p) == good
    assert not caplog.records
    frames = [decode_event(f) for f in hello_frames(good)]
    assert frames[0] == "HelloStart" and frames[-1] == "HelloEnd"
    assert b"".join(f["HelloChunk"]["data"] for f in frames[1:-1]) == good
    assert hello_frames(b"") == [hello_frames(b"x")[0], hello_frames(b"x")[-1]]

    stereo = write_wav(np.stack([tone(3000), tone(3000)], axis=1), 24000)
    q = tmp_path / "stereo.wav"
    q.write_bytes(stereo)
    with caplog.at_level(logging.WARNING, logger="echokit_fast.device"):
        assert load_hello(q) == stereo  # still sent verbatim, like the reference
    msg = caplog.records[-1].getMessage()
    assert "24000 Hz" in msg and "2 channels" in msg

    caplog.clear()
    r = tmp_path / "float.wav"
    r.write_bytes(write_wav(tone(3000), 16000, bits=32))
    with caplog.at_level(logging.WARNING, logger="echokit_fast.device"):
        load_hello(r)
    assert "16-bit PCM" in caplog.records[-1].getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="echokit_fast.device"):
        assert load_hello(tmp_path / "missing.wav") is None
        (tmp_path / "empty.wav").write_bytes(b"")
        assert load_hello(tmp_path / "empty.wav") is None
        (tmp_path / "text.wav").write_bytes(b"not a wav at all")
        assert load_hello(tmp_path / "text.wav") == b"not a wav at all"
    assert len(caplog.records) == 3
    assert load_hello(None) is None


# --- record paths ----------------------------------------------------------------------------


def test_safe_names_and_resolve(tmp_path):
    for ok in ("a0b1c2d3e4f5", "record_20250101_120000+0800.wav", "uuid-1234_x.y"):
        assert safe_name(ok)
    for bad in ("", ".", "..", ".hidden", "a/b", "a\\b", "a..b", "a b", "é", "x" * 129, "a\x00"):
        assert not safe_name(bad), bad
    root = tmp_path / "rec"
    (root / "dev").mkdir(parents=True)
    assert resolve_file(root, "dev", "f.wav") == (root / "dev" / "f.wav").resolve()
    assert resolve_file(root, "..", "f.wav") is None
    (root / "out").symlink_to(tmp_path)
    assert resolve_file(root, "out") is None


def test_recorder_header_and_odd_bytes(tmp_path):
    rec = Recorder(tmp_path, "dev")
    head = rec.path.read_bytes()
    assert head[4:8] == b"\xff\xff\xff\x7f" and head[40:44] == b"\xff\xff\xff\xff"
    assert rec.write(b"\x01\x02\x03", 100)
    assert rec.write(b"\x04", 100)
    assert rec.write(b"\x05", 100)
    assert not rec.write(b"\x06\x07\x08\x09", 3)  # room for one sample: the rest is dropped
    rec.close()
    data = rec.path.read_bytes()
    assert data[44:] == b"\x01\x02\x03\x04\x05\x06"
    assert int.from_bytes(data[4:8], "little") == 42 and int.from_bytes(data[40:44], "little") == 6
    second = Recorder(tmp_path, "dev")  # same second: a new name, never overwritten
    second.close()
    assert second.path != rec.path and rec.path.read_bytes() == data
    with pytest.raises(ValueError):
        Recorder(tmp_path, "../x")


# --- trace -----------------------------------------------------------------------------------


def test_turn_trace_line(caplog):
    t = TurnTrace("dev", 3, origin=10.0)
    t.set("speech_end", 10.0)
    t.mark("end_vad", 10.1)
    t.mark("end_vad", 10.2)  # mark keeps the first time
    t.mark("first_frame", 10.5)
    t.set("last_frame", 10.6)
    t.set("last_frame", 10.9)  # set keeps the last
    t.detail["segments"] = 2
    with caplog.at_level(logging.INFO, logger="echokit_fast.trace"):
        record = t.finish()
    line = json.loads(caplog.records[-1].getMessage())
    assert line == record
    ms = {"speech_end": 0.0, "end_vad": 100.0, "first_frame": 500.0, "last_frame": 900.0}
    assert line["ms"] == ms
    assert line["device"] == "dev" and line["turn"] == 3 and line["segments"] == 2


def test_round_tracker_quiet_again_after_a_dip_and_at_once_without_hysteresis():
    t = RoundTracker(VadParams())
    [t.window(0.9) for _ in range(13)]
    t.window(0.0)
    assert t.quiet  # a dip inside the sentence...
    t.window(0.9)  # ...and speech again: the next quiet stretch is "may be ending" again
    t.window(0.1)
    assert t.quiet
    t.window(0.1)
    assert not t.quiet  # the same quiet stretch
    t.window(0.4)  # between the thresholds: not speech, but maybe a soft sound...
    assert not t.quiet
    t.window(0.1)
    assert t.quiet  # ...so the next quiet window starts again from there
    # a release after one window (max_silence_duration_ms = 32): quiet and pause together
    t = RoundTracker(VadParams(max_silence_duration_ms=32))
    [t.window(0.9) for _ in range(13)]
    assert t.window(0.0) is TurnEvent.PAUSE and t.quiet and t.released
