//! The loudspeaker: a playback clock (no sound is made, only time passes),
//! the per-`EndAudio` wait and the firmware's download-speed measurement
//! with its buffer-whole-segments mode (docs/protocol.md#what-the-firmware-does, #pacing,
//! #device-behaviour).

use std::time::Duration;
use tokio::time::Instant;

use crate::mic::RATE;

/// The firmware's "real-time limit": at or above it, segments are buffered.
pub const SPEED_LIMIT: f64 = 1.0;
/// Assumed ratio before the first measurement (play at once).
pub const INITIAL_RATIO: f64 = 0.5;
/// A measurement is repeated for a turn whose EndVad comes this long after
/// the previous measurement started.
pub const REMEASURE_AFTER: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct Player {
    speed: f64,
    /// When everything queued so far has played.
    busy_until: Option<Instant>,
    ratio: f64,
    measure_pending: bool,
    last_measure_start: Option<Instant>,
    measuring: bool,
    seg_first_chunk: Option<Instant>,
    seg_samples: usize,
    seg_buffered: bool,
    held: usize,
}

impl Player {
    /// `speed` as `--speed` (0 = playback takes no time).
    pub fn new(speed: f64) -> Player {
        Player {
            speed,
            busy_until: None,
            ratio: INITIAL_RATIO,
            measure_pending: true,
            last_measure_start: None,
            measuring: false,
            seg_first_chunk: None,
            seg_samples: 0,
            seg_buffered: false,
            held: 0,
        }
    }

    /// Playing time of `samples` at the pace factor.
    pub fn duration(&self, samples: usize) -> Duration {
        if self.speed > 0.0 {
            Duration::from_secs_f64(samples as f64 / RATE as f64 / self.speed)
        } else {
            Duration::ZERO
        }
    }

    /// The latest measured download ratio (0.5 before any).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Whether the current segment is held back until its `EndAudio`.
    pub fn buffering(&self) -> bool {
        self.seg_buffered
    }

    /// Queues `samples` for playback now; returns when they will have played.
    pub fn play(&mut self, now: Instant, samples: usize) -> Instant {
        let from = self.busy_until.map_or(now, |b| b.max(now));
        let until = from + self.duration(samples);
        self.busy_until = Some(until);
        until
    }

    /// When the queue is empty (`now` if it already is).
    pub fn done_at(&self, now: Instant) -> Instant {
        self.busy_until.map_or(now, |b| b.max(now))
    }

    /// Barge-in: the playback queue is dropped.
    pub fn clear(&mut self) {
        self.busy_until = None;
        self.held = 0;
    }

    /// `EndVad` arrived: re-measure if the last measurement is old.
    pub fn on_end_vad(&mut self, now: Instant) {
        if let Some(s) = self.last_measure_start {
            if now.saturating_duration_since(s) > REMEASURE_AFTER {
                self.measure_pending = true;
            }
        }
    }

    /// `StartAudio`.
    pub fn start_segment(&mut self) {
        self.measuring = self.measure_pending;
        self.measure_pending = false;
        self.seg_first_chunk = None;
        self.seg_samples = 0;
        self.seg_buffered = self.ratio >= SPEED_LIMIT;
        self.held = 0;
    }

    /// A decoded audio chunk of the current segment.
    pub fn chunk(&mut self, now: Instant, samples: usize) {
        if self.seg_first_chunk.is_none() {
            self.seg_first_chunk = Some(now);
            if self.measuring {
                self.last_measure_start = Some(now);
            }
        }
        self.seg_samples += samples;
        if self.seg_buffered {
            self.held += samples;
        } else {
            self.play(now, samples);
        }
    }

    /// `EndAudio`: plays what was held back; returns the measured ratio (when
    /// this segment was measured) and when the queue will be empty.
    pub fn end_segment(&mut self, now: Instant) -> (Option<f64>, Instant) {
        if self.held > 0 {
            let held = std::mem::take(&mut self.held);
            self.play(now, held);
        }
        let mut measured = None;
        if self.measuring {
            self.measuring = false;
            match self.seg_first_chunk {
                Some(first) if self.seg_samples > 0 => {
                    let elapsed = now.saturating_duration_since(first).as_secs_f64();
                    let ratio = elapsed / (self.seg_samples as f64 / RATE as f64);
                    self.ratio = ratio;
                    measured = Some(ratio);
                }
                // Nothing to measure: try the next segment.
                _ => self.measure_pending = true,
            }
        }
        (measured, self.done_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn playback_clock_queues_back_to_back() {
        let t0 = Instant::now();
        let mut p = Player::new(1.0);
        assert_eq!(p.done_at(t0), t0);
        // 1920 samples = 120 ms each.
        assert_eq!(p.play(t0, 1920), t0 + ms(120));
        assert_eq!(p.play(t0 + ms(10), 1920), t0 + ms(240));
        // After the queue ran dry, playback starts at the new chunk's arrival.
        assert_eq!(p.play(t0 + ms(1000), 1920), t0 + ms(1120));
        p.clear();
        assert_eq!(p.done_at(t0 + ms(1010)), t0 + ms(1010));
    }

    #[test]
    fn speed_scales_playback_and_zero_is_instant() {
        let t0 = Instant::now();
        let mut p4 = Player::new(4.0);
        assert_eq!(p4.play(t0, 16_000), t0 + ms(250));
        let mut p0 = Player::new(0.0);
        assert_eq!(p0.play(t0, 16_000), t0);
    }

    #[test]
    fn end_audio_waits_for_the_queue() {
        let t0 = Instant::now();
        let mut p = Player::new(1.0);
        p.start_segment();
        for i in 0..5 {
            p.chunk(t0 + ms(i), 1920);
        }
        // First chunk to EndAudio 5 ms, 600 ms of audio: ratio 0.005/0.6.
        let (ratio, done) = p.end_segment(t0 + ms(5));
        assert_eq!(done, t0 + ms(600));
        assert!((ratio.unwrap() - 0.005 / 0.6).abs() < 1e-9);
        assert!(!p.buffering());
    }

    #[test]
    fn slow_delivery_switches_to_buffered_segments() {
        let t0 = Instant::now();
        let mut p = Player::new(1.0);
        // Segment 1 (measured): 2 chunks of 120 ms delivered over 300 ms.
        p.start_segment();
        p.chunk(t0, 1920);
        p.chunk(t0 + ms(300), 1920);
        let (ratio, done1) = p.end_segment(t0 + ms(300));
        assert!((ratio.unwrap() - 1.25).abs() < 1e-9);
        // Played as it came: the second chunk started on arrival (queue dry).
        assert_eq!(done1, t0 + ms(420));
        // Segment 2: buffered, nothing plays before EndAudio, and it is not
        // measured again.
        p.start_segment();
        assert!(p.buffering());
        p.chunk(t0 + ms(1000), 1920);
        assert_eq!(p.done_at(t0 + ms(1000)), t0 + ms(1000));
        p.chunk(t0 + ms(1100), 1920);
        let (ratio, done2) = p.end_segment(t0 + ms(1200));
        assert_eq!(ratio, None);
        assert_eq!(done2, t0 + ms(1440));
    }

    #[test]
    fn remeasures_only_after_15_s() {
        let t0 = Instant::now();
        let mut p = Player::new(1.0);
        p.start_segment();
        p.chunk(t0, 1920);
        assert!(p.end_segment(t0).0.is_some());
        // A turn whose EndVad comes 10 s later: no new measurement.
        p.on_end_vad(t0 + ms(10_000));
        p.start_segment();
        p.chunk(t0 + ms(10_000), 1920);
        assert!(p.end_segment(t0 + ms(10_050)).0.is_none());
        // 16 s after the first measurement started: measured again.
        p.on_end_vad(t0 + ms(16_000));
        p.start_segment();
        p.chunk(t0 + ms(16_000), 1920);
        assert!(p.end_segment(t0 + ms(16_060)).0.is_some());
    }

    #[test]
    fn empty_segment_defers_the_measurement() {
        let t0 = Instant::now();
        let mut p = Player::new(1.0);
        p.start_segment();
        assert_eq!(p.end_segment(t0).0, None);
        p.start_segment();
        p.chunk(t0, 1920);
        assert!(p.end_segment(t0 + ms(1)).0.is_some());
    }
}
