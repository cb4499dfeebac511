//! `get_speech_timestamps` over per-window speech probabilities.
//!
//! Same decisions as the official silero-vad 6.2.3 Python function for the same
//! probabilities, including its float arithmetic (durations in samples are computed as
//! `f64`, like Python's `sr * ms / 1000`), max-length splitting (longest silence by default,
//! last silence in legacy mode) and the padding pass. Written from the algorithm's
//! description (docs/apis.md#speech-timestamps), not from the upstream source.

use super::Rate;
use crate::error::Result;
use crate::invalid;

/// Parameters of [`segments_from_probabilities`], with the official defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentParams {
    pub rate: Rate,
    pub threshold: f64,
    /// `None`: `max(threshold - 0.15, 0.01)`.
    pub neg_threshold: Option<f64>,
    pub min_speech_duration_ms: f64,
    pub max_speech_duration_s: f64,
    pub min_silence_duration_ms: f64,
    pub speech_pad_ms: f64,
    pub min_silence_at_max_speech_ms: f64,
    pub use_max_poss_sil_at_max_speech: bool,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            rate: Rate::Hz16000,
            threshold: 0.5,
            neg_threshold: None,
            min_speech_duration_ms: 250.0,
            max_speech_duration_s: f64::INFINITY,
            min_silence_duration_ms: 100.0,
            speech_pad_ms: 30.0,
            min_silence_at_max_speech_ms: 98.0,
            use_max_poss_sil_at_max_speech: true,
        }
    }
}

impl SegmentParams {
    /// Rejects NaN and negative durations (the Python function would silently misbehave).
    pub fn validate(&self) -> Result<()> {
        let finite = [
            ("threshold", self.threshold),
            ("min_speech_duration_ms", self.min_speech_duration_ms),
            ("min_silence_duration_ms", self.min_silence_duration_ms),
            ("speech_pad_ms", self.speech_pad_ms),
            (
                "min_silence_at_max_speech",
                self.min_silence_at_max_speech_ms,
            ),
        ];
        for (name, v) in finite {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if self.max_speech_duration_s.is_nan() || self.max_speech_duration_s <= 0.0 {
            return Err(invalid!(
                "max_speech_duration_s must be > 0 (inf for no limit), got {}",
                self.max_speech_duration_s
            ));
        }
        if let Some(n) = self.neg_threshold {
            if !n.is_finite() {
                return Err(invalid!("neg_threshold must be a finite number, got {n}"));
            }
        }
        Ok(())
    }

    pub fn neg_threshold(&self) -> f64 {
        self.neg_threshold
            .unwrap_or_else(|| (self.threshold - 0.15).max(0.01))
    }
}

/// Speech segments `[start, end)` in samples, padding applied.
///
/// `probs[i]` is the model output for window `i` (samples `[i*win, (i+1)*win)`);
/// `audio_length_samples` is the length of the audio they came from (the last window may be
/// partial). Probabilities are compared as `f64` against the thresholds, like Python floats.
pub fn segments_from_probabilities(
    probs: &[f64],
    audio_length_samples: i64,
    p: &SegmentParams,
) -> Result<Vec<(i64, i64)>> {
    p.validate()?;
    if audio_length_samples < 0 {
        return Err(invalid!(
            "audio_length_samples must be >= 0, got {audio_length_samples}"
        ));
    }
    if let Some((i, v)) = probs.iter().enumerate().find(|(_, v)| v.is_nan()) {
        return Err(invalid!("probability {i} is NaN ({v})"));
    }
    let sr = p.rate.hz() as f64;
    let win = p.rate.window() as i64;
    let min_speech = sr * p.min_speech_duration_ms / 1000.0;
    let pad = sr * p.speech_pad_ms / 1000.0;
    let max_speech = sr * p.max_speech_duration_s - win as f64 - 2.0 * pad;
    let min_silence = sr * p.min_silence_duration_ms / 1000.0;
    let min_sil_at_max = sr * p.min_silence_at_max_speech_ms / 1000.0;
    let neg = p.neg_threshold();
    let new_mode = p.use_max_poss_sil_at_max_speech;

    let mut speeches: Vec<(i64, i64)> = Vec::new();
    // `Some(start)` exactly while triggered.
    let mut current: Option<i64> = None;
    let mut temp_end: i64 = 0;
    let mut prev_end: i64 = 0;
    let mut next_start: i64 = 0;
    let mut possible_ends: Vec<(i64, i64)> = Vec::new();

    for (i, &prob) in probs.iter().enumerate() {
        let cur = i as i64 * win;
        // 1. speech returns after a tentative end
        if prob >= p.threshold && temp_end != 0 {
            let sil = cur - temp_end;
            if sil as f64 > min_sil_at_max {
                possible_ends.push((temp_end, sil));
            }
            temp_end = 0;
            if next_start < prev_end {
                next_start = cur;
            }
        }
        // 2. speech starts
        if prob >= p.threshold && current.is_none() {
            current = Some(cur);
            continue;
        }
        // 3. max length exceeded
        if let Some(start) = current {
            if (cur - start) as f64 > max_speech {
                if new_mode && !possible_ends.is_empty() {
                    // longest silence; the first one on ties (Python's max)
                    let mut best = possible_ends[0];
                    for &pe in &possible_ends[1..] {
                        if pe.1 > best.1 {
                            best = pe;
                        }
                    }
                    let (e, d) = best;
                    speeches.push((start, e));
                    let ns = e + d;
                    current = if ns < e + cur { Some(ns) } else { None };
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                    possible_ends.clear();
                    // falls through to case 4 with the same window
                } else if prev_end != 0 {
                    speeches.push((start, prev_end));
                    current = if next_start < prev_end {
                        None
                    } else {
                        Some(next_start)
                    };
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                    possible_ends.clear();
                    // falls through to case 4 with the same window
                } else {
                    speeches.push((start, cur));
                    current = None;
                    prev_end = 0;
                    next_start = 0;
                    temp_end = 0;
                    possible_ends.clear();
                    continue;
                }
            }
        }
        // 4. silence while speaking
        if prob < neg {
            if let Some(start) = current {
                if temp_end == 0 {
                    temp_end = cur;
                }
                let sil_now = cur - temp_end;
                if !new_mode && sil_now as f64 > min_sil_at_max {
                    prev_end = temp_end;
                }
                if (sil_now as f64) < min_silence {
                    continue;
                }
                let end = temp_end;
                if (end - start) as f64 > min_speech {
                    speeches.push((start, end));
                }
                current = None;
                prev_end = 0;
                next_start = 0;
                temp_end = 0;
                possible_ends.clear();
            }
        }
    }
    if let Some(start) = current {
        if (audio_length_samples - start) as f64 > min_speech {
            speeches.push((start, audio_length_samples));
        }
    }
    pad_segments(&mut speeches, audio_length_samples, pad);
    Ok(speeches)
}

/// Python's `int(x)` for the non-negative floats of the padding pass.
fn py_int(x: f64) -> i64 {
    x.trunc() as i64
}

fn pad_segments(speeches: &mut [(i64, i64)], n: i64, pad: f64) {
    let count = speeches.len();
    for i in 0..count {
        if i == 0 {
            speeches[0].0 = py_int((speeches[0].0 as f64 - pad).max(0.0));
        }
        if i + 1 != count {
            let gap = speeches[i + 1].0 - speeches[i].1;
            if (gap as f64) < 2.0 * pad {
                let half = gap.div_euclid(2);
                speeches[i].1 += half;
                speeches[i + 1].0 = (speeches[i + 1].0 - half).max(0);
            } else {
                speeches[i].1 = py_int((n as f64).min(speeches[i].1 as f64 + pad));
                speeches[i + 1].0 = py_int((speeches[i + 1].0 as f64 - pad).max(0.0));
            }
        } else {
            speeches[i].1 = py_int((n as f64).min(speeches[i].1 as f64 + pad));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(v: f64, n: usize) -> Vec<f64> {
        vec![v; n]
    }

    #[test]
    fn basic_defaults_vector() {
        // test vector v1 (tests/data/vad_test_vectors.json: the official Python function's output)
        let probs: Vec<f64> = [
            rep(0.02, 5),
            rep(0.9, 5),
            rep(0.1, 2),
            rep(0.9, 8),
            rep(0.05, 6),
            rep(0.8, 3),
            rep(0.05, 6),
            rep(0.7, 15),
            rep(0.4, 3),
            rep(0.7, 3),
            rep(0.1, 8),
        ]
        .concat();
        let out = segments_from_probabilities(&probs, 32700, &SegmentParams::default()).unwrap();
        assert_eq!(out, vec![(2080, 10720), (17440, 29152)]);
    }

    #[test]
    fn open_segment_from_zero_is_kept() {
        let out =
            segments_from_probabilities(&rep(0.9, 20), 10000, &SegmentParams::default()).unwrap();
        assert_eq!(out, vec![(0, 10000)]);
    }

    #[test]
    fn max_split_new_and_legacy() {
        // test vector v5 (tests/data/vad_test_vectors.json)
        let probs = [
            rep(0.0, 1),
            rep(0.9, 2),
            rep(0.1, 5),
            rep(0.9, 6),
            rep(0.1, 16),
        ]
        .concat();
        let mut p = SegmentParams {
            max_speech_duration_s: 0.5,
            min_silence_duration_ms: 300.0,
            ..Default::default()
        };
        let out = segments_from_probabilities(&probs, 15360, &p).unwrap();
        assert_eq!(out, vec![(32, 2016), (3616, 11232)]);
        p.use_max_poss_sil_at_max_speech = false;
        let out = segments_from_probabilities(&probs, 15360, &p).unwrap();
        assert_eq!(out, vec![(32, 2016), (3616, 7648)]);
    }

    #[test]
    fn no_probabilities_no_segments() {
        let out = segments_from_probabilities(&[], 0, &SegmentParams::default()).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let p = SegmentParams {
            speech_pad_ms: -1.0,
            ..Default::default()
        };
        assert!(segments_from_probabilities(&[0.5], 512, &p).is_err());
        let p = SegmentParams {
            max_speech_duration_s: 0.0,
            ..Default::default()
        };
        assert!(segments_from_probabilities(&[0.5], 512, &p).is_err());
        assert!(segments_from_probabilities(&[f64::NAN], 512, &SegmentParams::default()).is_err());
        assert!(segments_from_probabilities(&[0.5], -1, &SegmentParams::default()).is_err());
    }
}
