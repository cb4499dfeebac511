"""Silero voice activity detection: batched model inference, exact segmenter, streaming events.

The model ships inside the package (``echokit_fast/assets/``, MIT, licence file beside it):

* ``silero_vad_v6.onnx`` -- the v6 model, byte-identical to ``silero_vad.onnx`` of the
  ``silero-vad`` 6.2.3 wheel (the default);
* ``silero_vad_v5.onnx`` -- the v5 model, byte-identical to ``silero_vad.onnx`` of the 5.1.2
  wheel (numerically the model of silero_vad_server).

Inference runs on ``silero_vad_{v5,v6}_batched_{16k,8k}.onnx``, derived from those files by
``scripts/derive_silero_vad.py``: the same weights as one straight graph per rate (no ``If``
nodes; convolutions as GEMMs over every row of a batch; the LSTM steps ``T`` windows in one
call). The tests check it against the upstream graph. Every file's sha256 is checked when it
is loaded.

Pieces (all numbers are sample indices at the stream's rate):

* :class:`SileroVad` -- the model: one onnxruntime session per rate, loaded once, safe to
  share between threads and streams.
* :class:`VadStream` -- one stream. ``push(pcm)`` takes any number of samples and returns the
  events of the official ``VADIterator`` (``{"start": n}`` / ``{"end": n}``) for the windows
  it completed; the remainder waits for the next push.
* :class:`VadBatcher` -- many streams (devices), one model call per :meth:`VadBatcher.step`
  for every stream that has a full window buffered (the model's batch dimension).
* :func:`get_speech_timestamps` -- whole clip to segments, as the official function (any
  rate in 8000..48000: 8 and 16 kHz native, others resampled to 16 kHz; any channel count).
* :func:`speech_timestamps_from_wav` -- a WAV file to 16 kHz segments, as silero_vad_server's
  ``POST /v1/audio/vad`` (used by that route in :mod:`echokit_fast.api.vad` and the CLI).
* :func:`segments_from_probabilities` -- the official segmenter on given probabilities.

The per-stream state (LSTM state, 64/32-sample context, buffered samples, iterator) lives in
the native core (``_native.VadCore``, Rust); Python only runs ``session.run``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from echokit_fast import _native
from echokit_fast import audio as _audio

__all__ = [
    "ASSETS",
    "MODEL_SHA256",
    "BatchedStream",
    "ModelFileError",
    "SileroVad",
    "StepResult",
    "VadBatcher",
    "VadStream",
    "WavInputError",
    "get_speech_timestamps",
    "segments_from_probabilities",
    "speech_probabilities",
    "speech_timestamps_from_wav",
]

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # echokit_fast/assets
#: sha256 of every shipped model file; checked on load.
MODEL_SHA256: dict[str, str] = {
    # upstream files, unmodified (silero-vad 6.2.3 / 5.1.2 wheels, silero_vad/data/silero_vad.onnx)
    "silero_vad_v6.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    "silero_vad_v5.onnx": "2623a2953f6ff3d2c1e61740c6cdb7168133479b267dfef114a4a3cc5bdd788f",
    # derived by scripts/derive_silero_vad.py from the files above
    "silero_vad_v6_batched_16k.onnx": (
        "9e9621c50cefc3020d4620381ce621d0d3294b83d2b8b119cfccd80d842d6e04"
    ),
    "silero_vad_v6_batched_8k.onnx": (
        "a0aba7e00732a801d81a8f24998b6e04a8e90e2ab6db179553af386e3de72da2"
    ),
    "silero_vad_v5_batched_16k.onnx": (
        "ac5881d7c9f28a9a6f7a7e545a7566d7402c3180e76757e09d17acaf0a743a61"
    ),
    "silero_vad_v5_batched_8k.onnx": (
        "7fb7bcbc6c7012680bfb3deef063188bba4998124fbc0488cceb70a60457ff66"
    ),
}
VERSIONS = ("v5", "v6")
#: The model's own rates (streams run at one of these).
SAMPLING_RATES = (16000, 8000)
#: Whole-clip functions accept any rate in this range (resampled to 16 kHz).
INPUT_MIN_RATE, INPUT_MAX_RATE = 8000, 48000
#: Windows per model call when a whole clip is known (offline): bounds memory, amortises calls.
OFFLINE_WINDOWS_PER_CALL = 256


class ModelFileError(RuntimeError):
    """A shipped model file is missing or does not have the recorded sha256."""


def _check_rate(sampling_rate: int) -> int:
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int | np.integer):
        raise ValueError(f"sampling_rate must be an int, got {sampling_rate!r}")
    if int(sampling_rate) not in SAMPLING_RATES:
        raise ValueError(
            f"sampling_rate must be 16000 or 8000 (the Silero VAD rates; resample other rates "
            f"with echokit_fast.audio.Resampler first), got {sampling_rate}"
        )
    return int(sampling_rate)


def _check_input_rate(sampling_rate: int) -> int:
    """A whole-clip input rate: any int in 8000..48000 (others are resampled to 16 kHz)."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int | np.integer):
        raise ValueError(f"sampling_rate must be an int, got {sampling_rate!r}")
    if not INPUT_MIN_RATE <= int(sampling_rate) <= INPUT_MAX_RATE:
        raise ValueError(
            f"sampling_rate must be in {INPUT_MIN_RATE}..{INPUT_MAX_RATE} Hz, got {sampling_rate}"
        )
    return int(sampling_rate)


def _model_input(x: np.ndarray, sampling_rate: int) -> tuple[np.ndarray, int]:
    """``(audio, rate)`` for the model: 8000 and 16000 as they are, other rates resampled to
    16 kHz with :func:`echokit_fast.audio.resample`."""
    sr = _check_input_rate(sampling_rate)
    if sr in SAMPLING_RATES:
        return x, sr
    return _audio.resample(x, sr, 16000), 16000


def window_size(sampling_rate: int) -> int:
    """Samples per model window: 512 at 16 kHz, 256 at 8 kHz (32 ms)."""
    return 512 if _check_rate(sampling_rate) == 16000 else 256


def model_path(name: str) -> Path:
    """Path of a shipped model file after checking its sha256 (:class:`ModelFileError` if not)."""
    _read_verified(name)
    return ASSETS / name


def _read_verified(name: str) -> bytes:
    expected = MODEL_SHA256.get(name)
    if expected is None:
        raise ModelFileError(f"{name!r} is not a shipped VAD model file")
    return read_asset(name, expected, "VAD")


def read_asset(name: str, expected: str, what: str) -> bytes:
    """The bytes of the shipped model file ``name`` (``echokit_fast/assets``), checked against
    its sha256 ``expected``; :class:`ModelFileError` (naming ``what`` model) if unreadable or
    changed."""
    path = ASSETS / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{what} model file {path} cannot be read: {e}") from e
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise ModelFileError(
            f"{what} model file {path} is corrupt or was replaced: sha256 {got}, "
            f"expected {expected}"
        )
    return data


class SileroVad:
    """The Silero VAD model (``version`` ``"v6"``, the default, or ``"v5"``).

    One onnxruntime session per sampling rate, created on first use with
    ``intra_op_threads`` intra-op threads, 1 inter-op thread, sequential execution.
    Thread-safe: share one instance between all streams (the server keeps one per app).
    """

    def __init__(self, version: str = "v6", *, intra_op_threads: int = 1) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if (
            isinstance(intra_op_threads, bool)
            or not isinstance(intra_op_threads, int)
            or intra_op_threads < 1
        ):
            raise ValueError(f"intra_op_threads must be an int >= 1, got {intra_op_threads!r}")
        self.version = version
        self.intra_op_threads = intra_op_threads
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._session(16000)  # load (and verify) now: fail here, not on the first window

    def _session(self, sampling_rate: int) -> Any:
        session = self._sessions.get(sampling_rate)
        if session is not None:
            return session
        with self._lock:
            session = self._sessions.get(sampling_rate)
            if session is None:
                import onnxruntime as ort

                name = f"silero_vad_{self.version}_batched_{sampling_rate // 1000}k.onnx"
                data = _read_verified(name)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.intra_op_threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.log_severity_level = 3
                session = ort.InferenceSession(
                    data, sess_options=opts, providers=["CPUExecutionProvider"]
                )
                self._sessions[sampling_rate] = session
        return session

    def runner(self, sampling_rate: int):
        """``run(frames, state) -> (probs [T, N], state [2, N, 128])`` for one rate.

        ``frames`` is the ``[T, N, 4, k]`` layout of ``_native.VadCore.prepare``.
        """
        session = self._session(_check_rate(sampling_rate))
        names = ["output", "stateN"]
        # The binding's run() without the Python wrapper's per-call input validation (our
        # inputs are built by the native core); the public run() where that is not there.
        raw = getattr(getattr(session, "_sess", None), "run", None)

        if raw is not None:

            def run_batch(frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                probs, new_state = raw(names, {"frames": frames, "state": state}, None)
                return probs, new_state

        else:  # pragma: no cover - other onnxruntime builds

            def run_batch(frames: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                probs, new_state = session.run(names, {"frames": frames, "state": state})
                return probs, new_state

        return run_batch

    def __repr__(self) -> str:
        return f"SileroVad(version={self.version!r}, intra_op_threads={self.intra_op_threads})"


def _push(core: Any, sid: int, pcm: Any) -> None:
    """Append ``pcm`` (float32 1-D array, or PCM16 little-endian bytes) to a core stream."""
    if type(pcm) is np.ndarray and pcm.dtype == np.float32 and pcm.ndim == 1:
        core.push(sid, pcm if pcm.flags.c_contiguous else np.ascontiguousarray(pcm))
        return
    if isinstance(pcm, bytes | bytearray | memoryview):
        core.push_pcm16(sid, pcm if isinstance(pcm, bytes) else bytes(pcm))
        return
    if not isinstance(pcm, np.ndarray):
        raise ValueError(
            f"pcm must be a float32 numpy array or PCM16 bytes, got {type(pcm).__name__}"
        )
    if pcm.dtype != np.float32:
        raise ValueError(f"pcm must be float32 samples in [-1, 1], got dtype {pcm.dtype}")
    if pcm.ndim != 1:
        raise ValueError(f"pcm must be 1-D (mono), got shape {pcm.shape}")
    core.push(sid, np.ascontiguousarray(pcm))  # a float32 1-D subclass of ndarray


def _event(is_start: bool, sample: int) -> dict[str, int]:
    return {"start": sample} if is_start else {"end": sample}


def _check_stream_rate(model: SileroVad | None, sampling_rate: int) -> SileroVad:
    _check_rate(sampling_rate)
    return model if model is not None else SileroVad()


class VadStream:
    """One audio stream through the official ``VADIterator`` logic.

    ``push(pcm)`` accepts any chunk size (float32 1-D array in [-1, 1], or PCM16 LE bytes);
    whole windows (512 samples at 16 kHz, 256 at 8 kHz) are run through the model at once,
    the rest waits for the next push. It returns the events of those windows:
    ``{"start": sample}`` (window start minus ``speech_pad_ms``) and ``{"end": sample}``
    (start of the first silent window plus ``speech_pad_ms``, once ``min_silence_duration_ms``
    of silence is seen), sample positions counted since creation or :meth:`reset`.
    ``neg_threshold`` defaults to ``threshold - 0.15`` as in ``VADIterator``.

    :attr:`last_probabilities` holds the speech probability of each window the last push
    processed. Not thread-safe (one stream, one caller); the model it uses is shared.
    """

    def __init__(
        self,
        model: SileroVad | None = None,
        *,
        sampling_rate: int = 16000,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_silence_duration_ms: float = 100,
        speech_pad_ms: float = 30,
        max_windows_per_call: int = 64,
    ) -> None:
        self.model = _check_stream_rate(model, sampling_rate)
        if not isinstance(max_windows_per_call, int) or max_windows_per_call < 1:
            raise ValueError(f"max_windows_per_call must be >= 1, got {max_windows_per_call!r}")
        self.sampling_rate = sampling_rate
        self._core = _native.VadCore(sampling_rate)
        self._id = self._core.open(
            float(threshold), neg_threshold, float(min_silence_duration_ms), float(speech_pad_ms)
        )
        self._run = self.model.runner(sampling_rate)
        self._max_t = max_windows_per_call
        self.last_probabilities: npt.NDArray[np.float32] = np.empty(0, np.float32)

    @property
    def window_size(self) -> int:
        return self._core.window_size

    @property
    def triggered(self) -> bool:
        """True between a ``start`` and its ``end``."""
        return self._core.iterator_state(self._id)[0]

    @property
    def current_sample(self) -> int:
        """Samples processed (whole windows) since creation or the last reset."""
        return self._core.iterator_state(self._id)[1]

    @property
    def pending_samples(self) -> int:
        """Samples buffered that do not fill a window yet."""
        return self._core.pending_samples(self._id)

    def push(self, pcm: npt.NDArray[np.float32] | bytes | bytearray | memoryview) -> list[dict]:
        core, run = self._core, self._run
        _push(core, self._id, pcm)
        events: list[dict] = []
        probs: list[np.ndarray] = []
        while (batch := core.prepare(self._max_t)) is not None:
            p, state = run(batch[1], batch[2])
            for _sid, _w, is_start, sample in core.commit(p, state):
                events.append(_event(is_start, sample))
            probs.append(p[:, 0])
        if len(probs) == 1:
            self.last_probabilities = probs[0]
        else:
            self.last_probabilities = np.concatenate(probs) if probs else np.empty(0, np.float32)
        return events

    def reset(self) -> None:
        """Forget everything: model state, context, buffered samples, positions."""
        self._core.reset(self._id)
        self.last_probabilities = np.empty(0, np.float32)


class StepResult(NamedTuple):
    """What one :meth:`VadBatcher.step` did for one stream."""

    events: list[dict]
    #: speech probability of each window processed for this stream, in order
    probabilities: npt.NDArray[np.float32]


class BatchedStream:
    """A stream of a :class:`VadBatcher` (create with :meth:`VadBatcher.open`)."""

    def __init__(self, batcher: VadBatcher, sid: int) -> None:
        self._batcher = batcher
        self.id = sid

    def push(self, pcm: npt.NDArray[np.float32] | bytes | bytearray | memoryview) -> None:
        """Buffer audio (float32 1-D array or PCM16 LE bytes); processed by the next step."""
        with self._batcher._core_lock:
            _push(self._batcher._core, self.id, pcm)

    def reset(self) -> None:
        with self._batcher._core_lock:
            self._batcher._core.reset(self.id)

    def close(self) -> None:
        with self._batcher._core_lock:
            self._batcher._core.close(self.id)

    @property
    def ready_windows(self) -> int:
        with self._batcher._core_lock:
            return self._batcher._core.ready_windows(self.id)

    @property
    def triggered(self) -> bool:
        with self._batcher._core_lock:
            return self._batcher._core.iterator_state(self.id)[0]


class VadBatcher:
    """Many streams sharing one model; one inference call per batch.

    Usage from an asyncio server (one batcher, many devices)::

        batcher = VadBatcher()                 # or VadBatcher(SileroVad("v5"))
        s = batcher.open(threshold=0.5)         # per device
        s.push(pcm16_bytes)                     # whenever audio arrives (cheap, no inference)
        results = await batcher.astep()         # e.g. in one VAD task, after pushes / on a tick
        for sid, r in results.items(): ...      # r.events, r.probabilities

    :meth:`step` runs the model for every stream with a full window buffered, in one
    ``session.run`` (batch dimension = streams, up to ``max_windows_per_step`` consecutive
    windows each), commits, and repeats until no stream has a full window. It returns a
    :class:`StepResult` per stream id that advanced. Pushes from other threads (or the event
    loop while :meth:`astep` runs in a worker thread) are safe; one step runs at a time.
    """

    def __init__(
        self,
        model: SileroVad | None = None,
        *,
        sampling_rate: int = 16000,
        max_windows_per_step: int = 8,
    ) -> None:
        self.model = _check_stream_rate(model, sampling_rate)
        if not isinstance(max_windows_per_step, int) or max_windows_per_step < 1:
            raise ValueError(f"max_windows_per_step must be >= 1, got {max_windows_per_step!r}")
        self.sampling_rate = sampling_rate
        self._core = _native.VadCore(sampling_rate)
        self._core_lock = threading.Lock()
        self._step_lock = threading.Lock()
        self._run = self.model.runner(sampling_rate)
        self._max_t = max_windows_per_step

    def __len__(self) -> int:
        # The native core is borrowed mutably (GIL released) while a push/prepare/commit runs;
        # every access goes through the core lock, or pyo3 raises "Already mutably borrowed".
        with self._core_lock:
            return len(self._core)

    def open(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_silence_duration_ms: float = 100,
        speech_pad_ms: float = 30,
    ) -> BatchedStream:
        """A new stream with ``VADIterator`` parameters (see :class:`VadStream`)."""
        with self._core_lock:
            sid = self._core.open(
                float(threshold),
                neg_threshold,
                float(min_silence_duration_ms),
                float(speech_pad_ms),
            )
        return BatchedStream(self, sid)

    def step(self) -> dict[int, StepResult]:
        batches = []
        with self._step_lock:
            while True:
                with self._core_lock:
                    batch = self._core.prepare(self._max_t)
                if batch is None:
                    break
                ids, frames, state = batch
                p, new_state = self._run(frames, state)  # the core lock is not held here
                with self._core_lock:
                    committed = self._core.commit(p, new_state)
                batches.append((ids, p, committed))
        if not batches:
            return {}
        if len(batches) == 1:
            ids, p, _ = batches[0]
            cols = p.T  # [N, T] view: each stream's probabilities
            results = {sid: StepResult([], cols[j]) for j, sid in enumerate(ids)}
        else:
            per: dict[int, list[np.ndarray]] = {}
            for ids, p, _ in batches:
                cols = p.T
                for j, sid in enumerate(ids):
                    per.setdefault(sid, []).append(cols[j])
            results = {
                sid: StepResult([], c[0] if len(c) == 1 else np.concatenate(c))
                for sid, c in per.items()
            }
        for _ids, _p, committed in batches:
            for sid, _w, is_start, sample in committed:
                results[sid].events.append(_event(is_start, sample))
        return results

    async def astep(self) -> dict[int, StepResult]:
        """:meth:`step` in a worker thread (onnxruntime releases the GIL while it runs)."""
        return await asyncio.to_thread(self.step)


def _mono_float32(x: Any) -> np.ndarray:
    if isinstance(x, bytes | bytearray | memoryview):
        raw = bytes(x)
        if len(raw) % 2:
            raise ValueError(f"PCM16 input must have an even number of bytes, got {len(raw)}")
        return np.frombuffer(raw, "<i2").astype(np.float32) / np.float32(32768.0)
    if not isinstance(x, np.ndarray):
        raise ValueError(
            f"audio must be a float32 numpy array or PCM16 bytes, got {type(x).__name__}"
        )
    if x.dtype != np.float32:
        raise ValueError(f"audio must be float32 samples in [-1, 1], got dtype {x.dtype}")
    if x.ndim == 2:
        if x.shape[1] < 1:
            raise ValueError(f"2-D audio must be (frames, channels >= 1), got shape {x.shape}")
        return _audio.to_mono(x, x.shape[1])  # the channels averaged
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D or (frames, channels), got shape {x.shape}")
    return np.ascontiguousarray(x)


def speech_probabilities(
    audio: npt.NDArray[np.float32] | bytes,
    sampling_rate: int = 16000,
    *,
    model: SileroVad | None = None,
) -> npt.NDArray[np.float32]:
    """Speech probability per window of a whole clip (the last window zero-padded), as the
    probability pass of the official ``get_speech_timestamps``: ``ceil(n / window)`` values.

    Rates other than 16000 and 8000 (8000..48000) are first resampled to 16 kHz; ``n`` and
    the windows are then those of the 16 kHz audio."""
    x, sr = _model_input(_mono_float32(audio), sampling_rate)
    model = _check_stream_rate(model, sr)
    win = window_size(sr)
    n_windows = -(-len(x) // win)
    if n_windows == 0:
        return np.empty(0, np.float32)
    core = _native.VadCore(sr)
    sid = core.open(0.5, None, 100.0, 30.0)
    core.push(sid, x)
    tail = n_windows * win - len(x)
    if tail:
        core.push(sid, np.zeros(tail, np.float32))
    run = model.runner(sr)
    out = np.empty(n_windows, np.float32)
    done = 0
    while (batch := core.prepare(OFFLINE_WINDOWS_PER_CALL)) is not None:
        p, state = run(batch[1], batch[2])
        core.commit(p, state)
        out[done : done + len(p)] = p[:, 0]
        done += len(p)
    return out


def segments_from_probabilities(
    probs: Any,
    audio_length_samples: int,
    *,
    sampling_rate: int = 16000,
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_duration_ms: float = 250,
    max_speech_duration_s: float = math.inf,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    min_silence_at_max_speech: float = 98,
    use_max_poss_sil_at_max_speech: bool = True,
) -> list[dict[str, int]]:
    """Segments ``[{"start", "end"}]`` (samples, padded, half-open) from per-window speech
    probabilities, identical to the official silero-vad ``get_speech_timestamps`` given the
    same probabilities (``probs[i]`` covers samples ``[i*win, (i+1)*win)``)."""
    sr = _check_rate(sampling_rate)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"probs must be 1-D, got shape {p.shape}")
    if isinstance(audio_length_samples, bool) or not isinstance(
        audio_length_samples, int | np.integer
    ):
        raise ValueError(f"audio_length_samples must be an int, got {audio_length_samples!r}")
    pairs = _native.vad_segments(
        np.ascontiguousarray(p),
        int(audio_length_samples),
        sr,
        float(threshold),
        None if neg_threshold is None else float(neg_threshold),
        float(min_speech_duration_ms),
        float(max_speech_duration_s),
        float(min_silence_duration_ms),
        float(speech_pad_ms),
        float(min_silence_at_max_speech),
        bool(use_max_poss_sil_at_max_speech),
    )
    return [{"start": s, "end": e} for s, e in pairs]


def get_speech_timestamps(
    audio: npt.NDArray[np.float32] | bytes,
    sampling_rate: int = 16000,
    *,
    model: SileroVad | None = None,
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_duration_ms: float = 250,
    max_speech_duration_s: float = math.inf,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    min_silence_at_max_speech: float = 98,
    use_max_poss_sil_at_max_speech: bool = True,
) -> list[dict[str, int]]:
    """Speech segments of a whole clip, as the official ``get_speech_timestamps``.

    ``audio``: float32 mono, or ``(frames, channels)`` with any number of channels (averaged
    to mono with :func:`echokit_fast.audio.to_mono`), or PCM16 LE mono bytes.
    ``sampling_rate``: 16000 and 8000 run as they are; any other rate in 8000..48000 is
    resampled to 16 kHz (:func:`echokit_fast.audio.resample`) and the segments are mapped
    back to the input's sample indices (start rounded down, end rounded up and capped at the
    input length), as the official function does for multiples of 16 kHz.
    Returns ``[{"start", "end"}]`` in samples of ``audio``.
    """
    x_in = _mono_float32(audio)
    x, sr = _model_input(x_in, sampling_rate)
    segments = _segments_16k_or_8k(
        x,
        sr,
        model=model,
        threshold=threshold,
        neg_threshold=neg_threshold,
        min_speech_duration_ms=min_speech_duration_ms,
        max_speech_duration_s=max_speech_duration_s,
        min_silence_duration_ms=min_silence_duration_ms,
        speech_pad_ms=speech_pad_ms,
        min_silence_at_max_speech=min_silence_at_max_speech,
        use_max_poss_sil_at_max_speech=use_max_poss_sil_at_max_speech,
    )
    rate_in = int(sampling_rate)
    if rate_in == sr:
        return segments
    n_in = len(x_in)
    return [
        {
            "start": seg["start"] * rate_in // sr,
            "end": min(n_in, -(-seg["end"] * rate_in // sr)),
        }
        for seg in segments
    ]


def _segments_16k_or_8k(x: np.ndarray, sr: int, *, model: SileroVad | None, **params: Any):
    probs = speech_probabilities(x, sr, model=model)
    return segments_from_probabilities(probs, len(x), sampling_rate=sr, **params)


#: ``speech_timestamps_from_wav`` refuses files whose rate is outside this range.
WAV_MIN_RATE, WAV_MAX_RATE = INPUT_MIN_RATE, INPUT_MAX_RATE


class WavInputError(ValueError):
    """The WAV file cannot be used (malformed, unsupported, or its rate is out of range)."""


def speech_timestamps_from_wav(
    data: bytes | bytearray | memoryview,
    *,
    model: SileroVad | None = None,
    threshold: float = 0.5,
    min_speech_duration_ms: float = 250,
    min_silence_duration_ms: float = 100,
    speech_pad_ms: float = 30,
    max_speech_duration_s: float = math.inf,
) -> list[dict[str, int]]:
    """What ``POST /v1/audio/vad`` (silero_vad_server) answers for a WAV file: the segments in
    **16 kHz** sample indices.

    Any WAV :func:`echokit_fast.audio.read_wav` reads, at 8000..48000 Hz; the channels are
    averaged, every rate other than 16000 (8000 included, as the reference does) is resampled
    to 16 kHz, then :func:`get_speech_timestamps` runs with the given parameters (the defaults
    are the reference's). Raises :class:`WavInputError` (a ``ValueError``) with a precise
    message for a file it cannot use.
    """
    try:
        samples, rate = _audio.read_wav(data)
    except ValueError as exc:
        raise WavInputError(f"not a usable WAV file: {exc}") from exc
    if not WAV_MIN_RATE <= rate <= WAV_MAX_RATE:
        raise WavInputError(
            f"WAV sample rate {rate} Hz is not supported (expected {WAV_MIN_RATE}..{WAV_MAX_RATE})"
        )
    mono = _audio.to_mono(samples, samples.shape[1])
    x16 = mono if rate == 16000 else _audio.resample(mono, rate, 16000)
    return get_speech_timestamps(
        x16,
        16000,
        model=model,
        threshold=threshold,
        min_speech_duration_ms=min_speech_duration_ms,
        min_silence_duration_ms=min_silence_duration_ms,
        speech_pad_ms=speech_pad_ms,
        max_speech_duration_s=max_speech_duration_s,
    )
