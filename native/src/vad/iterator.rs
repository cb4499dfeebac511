//! The streaming state machine of the official silero-vad `VADIterator`.
//!
//! Per window: `start` fires on the first window with `p >= threshold` while idle, at the
//! window start minus the pad (clamped at 0); `end` fires once the silence
//! (`p < threshold - 0.15`, or the explicit `neg_threshold`) has lasted `min_silence`
//! samples, at the start of the first silent window plus the pad. No min-speech filter, no max-speech split (as
//! upstream). Positions count samples since the last reset.

use super::Rate;
use crate::error::Result;
use crate::invalid;

/// An iterator event: speech started or ended at this sample index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start(i64),
    End(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IteratorParams {
    pub rate: Rate,
    pub threshold: f64,
    /// `None`: `threshold - 0.15`, exactly as the official `VADIterator` (no floor).
    pub neg_threshold: Option<f64>,
    pub min_silence_duration_ms: f64,
    pub speech_pad_ms: f64,
}

impl Default for IteratorParams {
    fn default() -> Self {
        IteratorParams {
            rate: Rate::Hz16000,
            threshold: 0.5,
            neg_threshold: None,
            min_silence_duration_ms: 100.0,
            speech_pad_ms: 30.0,
        }
    }
}

impl IteratorParams {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("threshold", self.threshold),
            ("min_silence_duration_ms", self.min_silence_duration_ms),
            ("speech_pad_ms", self.speech_pad_ms),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        if let Some(n) = self.neg_threshold {
            if !n.is_finite() {
                return Err(invalid!("neg_threshold must be a finite number, got {n}"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct VadIterator {
    threshold: f64,
    neg_threshold: f64,
    min_silence: f64,
    pad: f64,
    win: i64,
    triggered: bool,
    temp_end: i64,
    current_sample: i64,
}

impl VadIterator {
    pub fn new(p: &IteratorParams) -> Result<VadIterator> {
        p.validate()?;
        let sr = p.rate.hz() as f64;
        Ok(VadIterator {
            threshold: p.threshold,
            neg_threshold: p.neg_threshold.unwrap_or(p.threshold - 0.15),
            min_silence: sr * p.min_silence_duration_ms / 1000.0,
            pad: sr * p.speech_pad_ms / 1000.0,
            win: p.rate.window() as i64,
            triggered: false,
            temp_end: 0,
            current_sample: 0,
        })
    }

    pub fn reset(&mut self) {
        self.triggered = false;
        self.temp_end = 0;
        self.current_sample = 0;
    }

    pub fn triggered(&self) -> bool {
        self.triggered
    }

    /// Samples consumed since the last reset (whole windows).
    pub fn current_sample(&self) -> i64 {
        self.current_sample
    }

    /// Advance by one window whose speech probability is `prob`.
    pub fn step(&mut self, prob: f64) -> Option<Event> {
        self.current_sample += self.win;
        if prob >= self.threshold && self.temp_end != 0 {
            self.temp_end = 0;
        }
        if prob >= self.threshold && !self.triggered {
            self.triggered = true;
            let start = (self.current_sample as f64 - self.pad - self.win as f64).max(0.0);
            return Some(Event::Start(start.trunc() as i64));
        }
        if prob < self.neg_threshold && self.triggered {
            if self.temp_end == 0 {
                self.temp_end = self.current_sample;
            }
            if ((self.current_sample - self.temp_end) as f64) < self.min_silence {
                return None;
            }
            let end = self.temp_end as f64 + self.pad - self.win as f64;
            self.temp_end = 0;
            self.triggered = false;
            return Some(Event::End(end.trunc() as i64));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_events() {
        // test vector v1 (tests/data/vad_test_vectors.json), VADIterator column
        let probs: Vec<f64> = [
            vec![0.02; 5],
            vec![0.9; 5],
            vec![0.1; 2],
            vec![0.9; 8],
            vec![0.05; 6],
            vec![0.8; 3],
            vec![0.05; 6],
            vec![0.7; 15],
            vec![0.4; 3],
            vec![0.7; 3],
            vec![0.1; 8],
        ]
        .concat();
        let mut it = VadIterator::new(&IteratorParams::default()).unwrap();
        let events: Vec<(usize, Event)> = probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| it.step(p).map(|e| (i, e)))
            .collect();
        assert_eq!(
            events,
            vec![
                (5, Event::Start(2080)),
                (24, Event::End(10720)),
                (26, Event::Start(12832)),
                (33, Event::End(15328)),
                (35, Event::Start(17440)),
                (60, Event::End(29152)),
            ]
        );
        assert_eq!(it.current_sample(), 64 * 512);
        it.reset();
        assert_eq!(it.current_sample(), 0);
        assert!(!it.triggered());
    }

    #[test]
    fn start_is_clamped_at_zero() {
        let mut it = VadIterator::new(&IteratorParams::default()).unwrap();
        assert_eq!(it.step(0.99), Some(Event::Start(0)));
        assert_eq!(it.step(0.99), None);
    }
}
