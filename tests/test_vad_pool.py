"""The device turn detectors' shared VAD (echokit_fast/backends/vad/pool.py).

* Many streams fed at once, in pieces of any size, get the probabilities one VadStream per
  stream gives (1e-5), and their windows share model calls (fewer steps than pieces; a step
  served several streams).
* A stream dropped without close() is freed; close() is idempotent and a closed stream's
  garbage never frees the slot a newer stream reuses.
* A failing model raises in every caller waiting on the step; the streams work afterwards. A
  caller cancelled while it waits does not cancel the step of the others.
"""

from __future__ import annotations

import asyncio
import gc
import wave
from pathlib import Path

import numpy as np
import pytest

from echokit_fast.backends.vad import silero
from echokit_fast.backends.vad.pool import VadPool

DATA = Path(__file__).resolve().parent / "data"


def _speech() -> bytes:
    with wave.open(str(DATA / "vad_fixture_hello16k.wav")) as w:
        return w.readframes(w.getnframes())


SPEECH = _speech()


@pytest.fixture(scope="module")
def v6() -> silero.SileroVad:
    return silero.SileroVad("v6")


def signals(n: int) -> list[bytes]:
    """`n` different PCM16 signals: the fixture speech shifted, scaled and with noise."""
    base = np.frombuffer(SPEECH, "<i2").astype(np.float32)
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        x = np.roll(base, 977 * i) * (0.4 + 0.1 * i) + rng.normal(0, 60 * (i % 3), len(base))
        out.append(np.clip(x, -32768, 32767).astype("<i2").tobytes())
    return out


def pieces(data: bytes, seed: int) -> list[bytes]:
    """`data` cut in pieces of 1..6000 bytes (even: whole samples)."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(data):
        n = 2 * int(rng.integers(1, 3000))
        out.append(data[i : i + n])
        i += n
    return out


def test_streams_fed_together_get_the_probabilities_of_separate_streams(v6) -> None:
    sigs = signals(6)
    want = []
    for sig in sigs:
        stream = silero.VadStream(v6)
        stream.push(sig)
        want.append(stream.last_probabilities)

    pool = VadPool(v6)
    cut = [pieces(sig, seed) for seed, sig in enumerate(sigs)]

    async def feed(k: int) -> list[float]:
        stream = pool.open()
        got: list[float] = []
        for piece in cut[k]:
            got += await stream.probabilities(piece)
        stream.close()
        return got

    async def main() -> list[list[float]]:
        return await asyncio.gather(*(feed(k) for k in range(len(sigs))))

    got = asyncio.run(main())
    for k in range(len(sigs)):
        assert len(got[k]) == len(sigs[k]) // 1024  # one per whole window
        np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=0)
    assert pool.max_streams_per_step > 1  # windows of different streams shared a call
    assert pool.steps < sum(len(c) for c in cut)
    assert len(pool) == 0


def test_a_piece_shorter_than_a_window_waits_for_the_next(v6) -> None:
    pool = VadPool(v6)

    async def main() -> tuple[list[float], list[float], int]:
        stream = pool.open()
        first = await stream.probabilities(SPEECH[:1000])  # < 1024 bytes: no window yet
        steps = pool.steps
        second = await stream.probabilities(SPEECH[1000:2048])
        return first, second, steps

    first, second, steps = asyncio.run(main())
    assert first == [] and steps == 0  # nothing was run for it
    assert len(second) == 2


def test_dropped_and_closed_streams_free_their_slots_once(v6) -> None:
    pool = VadPool(v6)

    async def main() -> None:
        dropped = pool.open()
        await dropped.probabilities(SPEECH[:4096])
        assert len(pool) == 1
        del dropped
        gc.collect()
        kept = pool.open()
        assert len(pool) == 2  # freed before the next step, not from the collector
        assert len(await kept.probabilities(SPEECH[:2048])) == 2
        assert len(pool) == 1
        kept.close()
        kept.close()  # idempotent
        assert len(pool) == 0
        # the slot is reused; the closed stream's garbage must not free it
        newer = pool.open()
        assert newer.id == kept.id
        del kept
        gc.collect()
        assert len(await newer.probabilities(SPEECH[:4096])) == 4
        assert len(pool) == 1

    asyncio.run(main())


class FlakyModel:
    """The v6 model, failing every call while `failing` is set."""

    def __init__(self, model: silero.SileroVad) -> None:
        self.model = model
        self.failing = False

    def runner(self, sampling_rate: int):
        run = self.model.runner(sampling_rate)

        def maybe(frames, state):
            if self.failing:
                raise RuntimeError("the VAD model failed")
            return run(frames, state)

        return maybe


def test_a_failing_model_raises_in_every_waiting_caller_and_the_streams_recover(v6) -> None:
    model = FlakyModel(v6)
    pool = VadPool(model)  # type: ignore[arg-type]

    async def main() -> None:
        a, b = pool.open(), pool.open()
        model.failing = True
        results = await asyncio.gather(
            a.probabilities(SPEECH[:4096]), b.probabilities(SPEECH[:4096]), return_exceptions=True
        )
        assert [str(r) for r in results] == ["the VAD model failed"] * 2
        model.failing = False
        assert len(await a.probabilities(SPEECH[:2048])) == 2  # what failed is not replayed
        assert len(await b.probabilities(SPEECH[:3072])) == 3

    asyncio.run(main())


def test_a_cancelled_caller_does_not_cancel_the_others(v6) -> None:
    pool = VadPool(v6)

    async def main() -> None:
        a, b = pool.open(), pool.open()
        ta = asyncio.create_task(a.probabilities(SPEECH[:8192]))
        tb = asyncio.create_task(b.probabilities(SPEECH[:8192]))
        await asyncio.sleep(0)  # both pushed and wait on the same step
        ta.cancel()
        assert len(await tb) == 8
        with pytest.raises(asyncio.CancelledError):
            await ta
        # the cancelled call's windows come back with the next call
        assert len(await a.probabilities(SPEECH[8192:9216])) == 9

    asyncio.run(main())
