"""Record mode's caps over real loopback sockets, set small in the config: a recording ends
at ``max_record_bytes`` or ``max_record_s`` with a valid WAV, the callback and a Close whose
reason names the cap; a device id's recordings never take more than
``max_record_disk_bytes_per_device`` (two at once included), and a device over it is refused
before the upgrade with one warning. ``max_record_bytes`` cannot exceed what a WAV header holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from pathlib import Path

import pytest
import websockets
from test_config import PIPELINE
from test_device import CallbackServer, build, run

from echokit_fast.audio import wav_header, wav_info
from echokit_fast.config import MAX_WAV_DATA_BYTES, ConfigError, default_config, parse_config

FRAME = bytes(range(256)) * 36  # 9216 bytes


@pytest.fixture
def callback():
    cb = CallbackServer()
    yield cb
    cb.close()


def app_with(tmp_path: Path, callback: CallbackServer, **limits):
    config = default_config()
    config = config.model_copy(
        update={
            "record": config.record.model_copy(update={"callback_url": callback.url}),
            "limits": config.limits.model_copy(update=limits),
        }
    )
    app, _f = build(tmp_path, config=config)
    return app


async def record(addr: str, device_id: str, frames: int) -> tuple[int | None, str | None]:
    """Send up to ``frames`` frames (fewer when the server closes first), then wait for the
    server's Close; its code and reason."""
    ws = await websockets.connect(f"ws://{addr}/v1/record/{device_id}")
    with contextlib.suppress(websockets.ConnectionClosed):
        for _ in range(frames):
            await ws.send(FRAME)
        await asyncio.wait_for(ws.recv(), 20)
    await ws.wait_closed()
    return ws.close_code, ws.close_reason


def recording(tmp_path: Path, body: dict) -> bytes:
    name = body["download_uri"].rsplit("/", 1)[1]
    return (tmp_path / "record" / body["id"] / name).read_bytes()


def check_wav(data: bytes) -> int:
    """The data size of a recording whose header matches its length."""
    info = wav_info(data)
    assert (info.sample_rate, info.channels, info.bits) == (16000, 1, 16)
    riff, size = struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]
    assert size == len(data) - 44 and riff == 36 + size
    return size


def test_a_recording_ends_at_max_record_bytes(serve, tmp_path, callback):
    addr = serve(app_with(tmp_path, callback, max_record_bytes=20001))  # odd: whole samples

    code, reason = run(record(addr, "big", frames=5))
    _, body = callback.get()
    data = recording(tmp_path, body)
    assert (code, reason) == (1000, "recording limit reached (max_record_bytes)")
    assert check_wav(data) == 20000
    assert data[44:] == (FRAME * 3)[:20000]


def test_a_recording_ends_at_max_record_s(serve, tmp_path, callback):
    addr = serve(app_with(tmp_path, callback, max_record_s=0.5))

    code, reason = run(record(addr, "long", frames=1))
    _, body = callback.get()
    assert (code, reason) == (1000, "recording limit reached (max_record_s)")
    assert recording(tmp_path, body)[44:] == FRAME


def test_the_disk_quota_of_a_device_id(serve, tmp_path, callback, caplog):
    quota = 30000
    addr = serve(app_with(tmp_path, callback, max_record_disk_bytes_per_device=quota))
    caplog.set_level(logging.INFO, logger="echokit_fast.device")
    folder = tmp_path / "record" / "dev"

    async def main():
        ws = await websockets.connect(f"ws://{addr}/v1/record/dev")
        await ws.send(FRAME)
        await ws.close()  # 9260 bytes on disk
        await asyncio.to_thread(callback.get)
        # two at once share what is left
        ends = await asyncio.gather(record(addr, "dev", 3), record(addr, "dev", 3))
        bodies = [(await asyncio.to_thread(callback.get))[1] for _ in ends]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://{addr}/v1/record/dev")
        ws = await websockets.connect(f"ws://{addr}/v1/record/other")  # a quota of its own
        await ws.send(FRAME)
        await ws.close()
        other = await asyncio.to_thread(callback.get)
        return ends, bodies, refused.value.response, other

    ends, bodies, refused, other = run(main())
    assert ends == [(1000, "recording limit reached (max_record_disk_bytes_per_device)")] * 2
    for body in bodies:
        check_wav(recording(tmp_path, body))
    assert sum(p.stat().st_size for p in folder.iterdir()) == quota
    assert refused.status_code == 507
    assert len(list(folder.iterdir())) == 3  # the refused one made no file
    assert recording(tmp_path, other[1])[44:] == FRAME
    refusals = [r for r in caplog.records if "recording refused" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.WARNING and refusals[0].exc_info is None
    assert "max_record_disk_bytes_per_device" in refusals[0].getMessage()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("device_send_timeout_s", "0", "must be > 0"),
        ("device_send_timeout_s", "inf", "finite"),
        ("max_record_s", "-1", "must be > 0"),
        ("max_record_bytes", "1", "must be >= 2"),
        ("max_record_bytes", str(MAX_WAV_DATA_BYTES + 1), f"must be <= {MAX_WAV_DATA_BYTES}"),
        ("max_record_disk_bytes_per_device", "0", "must be >= 1"),
    ],
)
def test_the_new_limits_are_validated_at_load(key, value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(PIPELINE + f"[limits]\n{key} = {value}\n", filename="config.toml", env={})
    assert f"limits.{key}" in str(err.value) and message in str(err.value)


def test_the_largest_max_record_bytes_still_makes_a_valid_wav_header():
    text = PIPELINE + f"[limits]\nmax_record_bytes = {MAX_WAV_DATA_BYTES}\n"
    limits = parse_config(text, filename="config.toml", env={}).config.limits
    header = wav_header(16000, data_size=limits.max_record_bytes)
    assert struct.unpack("<I", header[4:8])[0] == 36 + MAX_WAV_DATA_BYTES <= 0xFFFFFFFF
    defaults = parse_config(PIPELINE, filename="config.toml", env={}).config.limits
    assert (defaults.device_send_timeout_s, defaults.max_record_s) == (120.0, 3600.0)
    assert defaults.max_record_bytes == 115_200_000
    assert defaults.max_record_disk_bytes_per_device == 2**30
