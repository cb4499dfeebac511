"""A faster-whisper ``WhisperModel`` whose language detection and decoding share one encode.

faster-whisper 1.x runs the Whisper encoder twice on a clip whose language is not given:
``detect_language`` encodes the first 30 s window, then ``generate_segments`` encodes it
again to decode (its ``encoder_output`` argument would take the first result, but
``transcribe`` never passes one). The encoder is most of the time a short clip costs, so a
3 s turn takes nearly twice as long as with the language pinned.

:class:`OnePassWhisper` keeps faster-whisper's own ``transcribe`` (features, prompts,
fallback, word timestamps, long clips) and changes two methods:

* ``detect_language`` encodes exactly the window that decoding starts with (the first
  ``nb_max_frames`` of the clip's content frames, padded), detects from that output as
  faster-whisper does with one detection segment, and keeps ``(window, output)`` for the
  calling thread;
* ``encode`` hands that output back when it is asked for the same window (compared by
  value), once, and otherwise encodes.

Comparing the encoder input itself, rather than trusting the call order, keeps it correct
whatever ``transcribe`` is given (VAD, clip timestamps, a chunk length: a different window
misses the cache and is encoded) and for every 30 s window after the first. The one
difference from faster-whisper's detection is its input: faster-whisper also includes the
final padding frame, which decoding leaves out, so the probabilities differ a little (by
up to ~0.05 on espeak-ng clips; the detected language was the same on every clip tried).
The cache is per thread: one model is shared by the engines of a process, each with its
own worker thread.

**Encoder windows sized to the clip** (:meth:`OnePassWhisper.sized_windows`, for the engine's
transcriptions with ``[asr] encoder_window = "auto"``, the default): Whisper pads every clip to a
30 s window of 3000 feature frames and the encoder's cost grows with the window, yet the encoder
also runs on fewer frames (the ``audio_ctx`` of whisper.cpp). A window that ends just after the
speech makes the decoder loop ("Stop! Stop! Stop! ...": it has not seen the end of the audio);
one that keeps at least :data:`PADDING` frames (5 s) of faster-whisper's zero padding after the
content, and never less than :data:`MIN_WINDOW` (10 s), decoded as well as the full window on
the project's test set (tests/test_asr_window.py, benches/bench_asr.py) at a third of the time
for short turns. The window is rounded up to :data:`STEP` frames. Content is what precedes the
padding: faster-whisper pads a window with exact zeros, which a log-mel column of audio never is.

A short window is less sure than the full one in two ways, and each falls back to the full
window (the cost of the old default, never a worse result):

* **The decode.** Besides loops, which faster-whisper's own measures flag (a fallback to a
  higher temperature, the compression ratio, the mean log-probability), the decoder can stop
  early with a clean-looking result: a browser's capture of "Tell me about Berlin instead."
  (1.9 s, quiet, through the page's echo cancellation and gain control) came out as "Tell"
  with a log-probability of -0.47. Nothing in the decode alone flags that; its length against
  the speech does: every whole decode of the test set had at least 4 text tokens per voiced
  second (:func:`voiced_seconds`), the cut one 0.7. A decode with fewer than
  :data:`MIN_TOKEN_RATE` (3) is done again on the full window. A decode that loses only its
  last words ("How far away is the moon", 4 tokens a second) still passes: one clip of 62 in
  the test set.
* **The language.** Detected on a short window, the language is right less often: "Set a timer
  for ten minutes." came out Finnish (0.27), "No, thank you." Japanese (0.42), both English on
  the full window. Below :data:`LANGUAGE_CONFIDENCE` (0.6) the language is detected, and the
  clip then decoded, on the full window; 8 clips of 62 took that path (5 of them detected
  right, less surely). Pin the language (``language``/``languages``) where it is known.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim

__all__ = [
    "LANGUAGE_CONFIDENCE",
    "MIN_TOKEN_RATE",
    "MIN_WINDOW",
    "PADDING",
    "STEP",
    "OnePassWhisper",
    "voiced_seconds",
    "window_frames",
]

log = logging.getLogger(__name__)

#: the shortest sized encoder window, in feature frames (10 ms each)
MIN_WINDOW = 1000
#: zero-padding frames a sized window keeps after the content
PADDING = 500
#: sized windows are a multiple of this many frames
STEP = 100
#: a sized window's decode with fewer text tokens per voiced second is done again on the full one
MIN_TOKEN_RATE = 3.0
#: a language detected on a sized window with a lower probability is detected on the full one
LANGUAGE_CONFIDENCE = 0.6
#: a feature column within this many dB of the window's loudest counts as voiced
VOICED_DB = 30.0


def content_columns(features: np.ndarray) -> np.ndarray:
    """Which columns of a window of features hold the clip: not faster-whisper's zero
    padding (a column all zeros; real audio's log-mel features are never exactly 0)."""
    return np.any(features != 0, axis=0)


def window_frames(features: np.ndarray, full: int) -> int:
    """The encoder window for a padded window of features (80 x ``full``): the content
    (:func:`content_columns`, up to the last) plus :data:`PADDING`, at least
    :data:`MIN_WINDOW`, rounded up to :data:`STEP`, at most ``full``."""
    columns = np.flatnonzero(content_columns(features))
    content = int(columns[-1]) + 1 if len(columns) else 0
    wanted = max(MIN_WINDOW, -(-(content + PADDING) // STEP) * STEP)
    return min(full, wanted)


def voiced_seconds(features: np.ndarray, seconds_per_frame: float = 0.01) -> float:
    """How long the speech in a window of log-mel features lasts: the columns whose power
    (summed over the mel bins) is within :data:`VOICED_DB` of the loudest column's.

    faster-whisper's features are ``(max(log10 mel, peak - 8) + 4) / 4``, so ``4 f - 4`` is
    the log10 of each bin's power again; the zero padding after the content is never voiced.
    """
    if features.size == 0:
        return 0.0
    power = np.power(10.0, features.astype(np.float64) * 4.0 - 4.0).sum(axis=0)
    level = 10.0 * np.log10(power)
    level[~content_columns(features)] = -np.inf
    loudest = level.max()
    if not np.isfinite(loudest):
        return 0.0
    return float(np.count_nonzero(level >= loudest - VOICED_DB)) * seconds_per_frame


def _text_tokens(result: Any, tokenizer: Any) -> int:
    """The text tokens of a CTranslate2 generation result (not the special or timestamp
    tokens, which all come after end-of-text in Whisper's vocabulary)."""
    tokens = result.sequences_ids[0] if result.sequences_ids else []
    return sum(1 for t in tokens if t < tokenizer.eot)


class OnePassWhisper(WhisperModel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # per thread: .encode: (window, encoder output) or None; .sized: windows sized to
        # the clip; .short: (encoder output of a sized window, the full window) or None
        self._last = threading.local()

    @contextmanager
    def sized_windows(self, enabled: bool = True) -> Iterator[None]:
        """Within the block, this thread's encodes use windows sized to the clip."""
        before = getattr(self._last, "sized", False)
        self._last.sized = enabled
        try:
            yield
        finally:
            self._last.sized = before
            self._last.short = None

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        last = getattr(self._last, "encode", None)
        self._last.encode = None
        if (
            last is not None
            and last[0].shape == features.shape
            and np.array_equal(last[0], features)
        ):
            return last[1]
        return self._encode(features)

    def _encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        full = self.feature_extractor.nb_max_frames
        if getattr(self._last, "sized", False) and features.ndim == 2:
            frames = window_frames(features, full) if features.shape[-1] == full else full
            if frames < full:
                output = super().encode(np.ascontiguousarray(features[:, :frames]))
                self._last.short = (output, features)
                return output
        return super().encode(features)

    def generate_with_fallback(
        self, encoder_output: ctranslate2.StorageView, prompt: Any, tokenizer: Any, options: Any
    ) -> Any:
        decoded = super().generate_with_fallback(encoder_output, prompt, tokenizer, options)
        short = getattr(self._last, "short", None)
        if short is None or short[0] is not encoder_output:
            return decoded
        self._last.short = None
        result, avg_logprob, temperature, compression_ratio = decoded
        first = options.temperatures[0] if options.temperatures else 0.0
        voiced = voiced_seconds(short[1], self.feature_extractor.time_per_frame)
        tokens = _text_tokens(result, tokenizer)
        unreliable = (
            # cut short: the decoder stopped before the speech did
            tokens < MIN_TOKEN_RATE * voiced
            or temperature > first
            or (
                options.compression_ratio_threshold is not None
                and compression_ratio > options.compression_ratio_threshold
            )
            or (options.log_prob_threshold is not None and avg_logprob < options.log_prob_threshold)
        )
        if not unreliable:
            return decoded
        log.debug(
            "sized window of %d frames unreliable (%d text tokens for %.2f s of speech, "
            "temperature %.1f, compression %.2f, log-prob %.2f): decoding the full window",
            encoder_output.shape[1] * 2,
            tokens,
            voiced,
            temperature,
            compression_ratio,
            avg_logprob,
        )
        full = super().encode(short[1])
        return super().generate_with_fallback(full, prompt, tokenizer, options)

    def detect_language(
        self,
        audio: np.ndarray | None = None,
        features: np.ndarray | None = None,
        vad_filter: bool = False,
        vad_parameters: Any = None,
        language_detection_segments: int = 1,
        language_detection_threshold: float = 0.5,
    ) -> tuple[str, float, list[tuple[str, float]]]:
        if vad_filter or language_detection_segments != 1:
            return super().detect_language(
                audio,
                features,
                vad_filter,
                vad_parameters,
                language_detection_segments,
                language_detection_threshold,
            )
        if audio is not None:
            # The whole clip, as transcribe computes it: the log-mel is normalised by the
            # clip's maximum, so the first window depends on all of it.
            features = self.feature_extractor(audio)
        assert features is not None, "Either `audio` or `features` must be provided."
        frames = min(self.feature_extractor.nb_max_frames, features.shape[-1] - 1)
        window = pad_or_trim(features[..., :frames])
        output = self._encode(window)
        probs = self._languages(output)
        short = getattr(self._last, "short", None)
        if short is not None and short[0] is output and probs[0][1] < LANGUAGE_CONFIDENCE:
            # a short window's detection is less sure than the full one's: when it is not
            # confident, detect (and then decode) on the full window
            log.debug(
                "language %s (%.2f) on a sized window: detecting on the full window",
                probs[0][0],
                probs[0][1],
            )
            self._last.short = None
            output = super().encode(window)
            probs = self._languages(output)
        self._last.encode = (window, output)
        return probs[0][0], probs[0][1], probs

    def _languages(self, output: ctranslate2.StorageView) -> list[tuple[str, float]]:
        # With one detection segment faster-whisper takes the top language whatever the
        # threshold; the tokens are "<|en|>".
        return [(token[2:-2], p) for token, p in self.model.detect_language(output)[0]]
