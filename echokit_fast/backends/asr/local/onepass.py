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
"""

from __future__ import annotations

import threading
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim


class OnePassWhisper(WhisperModel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last = threading.local()  # .encode: (window, encoder output) or None

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        last = getattr(self._last, "encode", None)
        self._last.encode = None
        if (
            last is not None
            and last[0].shape == features.shape
            and np.array_equal(last[0], features)
        ):
            return last[1]
        return super().encode(features)

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
        output = super().encode(window)
        self._last.encode = (window, output)
        # With one detection segment faster-whisper takes the top language whatever the
        # threshold; the tokens are "<|en|>".
        probs = [(token[2:-2], p) for token, p in self.model.detect_language(output)[0]]
        return probs[0][0], probs[0][1], probs
