//! The loudspeaker: the firmware's decode queue (40 packets; a packet that finds it full is
//! dropped, there is no back-pressure) in front of its two-task playback queue and the packet
//! being played, on a playback clock (no sound is made, only time passes), and the pacing figures
//! of one reply: underruns, how far ahead of playback the server got, how much faster than real
//! time the audio arrived.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::log::secs;

/// `MAX_DECODE_PACKETS_IN_QUEUE` (2400 ms of 60 ms packets).
pub const DECODE_QUEUE: usize = 40;
/// `MAX_PLAYBACK_TASKS_IN_QUEUE`: decoded packets waiting for the output.
pub const PLAYBACK_QUEUE: usize = 2;
/// Packets the device holds at most: decode queue, playback queue, the one playing.
pub const HELD_MAX: usize = DECODE_QUEUE + PLAYBACK_QUEUE + 1;

/// Pacing of one reply (`tts start` to `tts stop`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Pacing {
    /// Packets that arrived while speaking (including dropped ones).
    pub packets: usize,
    /// Their audio, seconds.
    pub audio_s: f64,
    /// Dropped because the decode queue was full.
    pub dropped_full: usize,
    /// Queued but thrown away by a decoder reset (a `tts start` from Listening during playback).
    pub flushed: usize,
    /// Times a packet arrived after the previous one had finished playing.
    pub underruns: usize,
    /// Total silence of those underruns, seconds.
    pub underrun_s: f64,
    /// The most audio queued ahead of the playback position when a packet arrived, seconds.
    pub max_lead_s: f64,
    /// First to last packet's arrival, seconds.
    pub arrival_s: f64,
    /// Audio that arrived after the first packet per second of `arrival_s`: 1 = real time;
    /// `null` when all of it came at once (or one packet).
    pub arrival_speed: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Speaker {
    /// Play intervals of the packets held, in order.
    held: VecDeque<(Instant, Instant)>,
    /// Arrival of this reply's first packet and its duration; of its last.
    first: Option<(Instant, Duration)>,
    last: Option<Instant>,
    /// Whether a packet of this reply has been queued (underruns count from then).
    playing_reply: bool,
    /// When the last packet queued ends.
    last_end: Option<Instant>,
    stats: Pacing,
}

impl Speaker {
    pub fn new() -> Speaker {
        Speaker::default()
    }

    fn prune(&mut self, now: Instant) {
        while self.held.front().is_some_and(|&(_, end)| end <= now) {
            self.held.pop_front();
        }
    }

    /// A new reply (`tts start`): the pacing figures start over.
    pub fn start_reply(&mut self) {
        self.first = None;
        self.last = None;
        self.playing_reply = false;
        self.stats = Pacing::default();
    }

    /// A packet of `dur` arrived while speaking; `false` when the decode queue is full and it is
    /// dropped.
    pub fn arrive(&mut self, now: Instant, dur: Duration) -> bool {
        self.stats.packets += 1;
        self.stats.audio_s += dur.as_secs_f64();
        self.first.get_or_insert((now, dur));
        self.last = Some(now);
        self.prune(now);
        if self.held.len() >= HELD_MAX {
            self.stats.dropped_full += 1;
            return false;
        }
        true
    }

    /// Queues an arrived packet's decoded audio for playback after what is held.
    pub fn play(&mut self, now: Instant, dur: Duration) {
        self.prune(now);
        let start = match self.held.back() {
            Some(&(_, end)) => end,
            None => {
                if let (true, Some(gap)) = (self.playing_reply, self.gap_since_dry(now)) {
                    self.stats.underruns += 1;
                    self.stats.underrun_s += gap.as_secs_f64();
                }
                now
            }
        };
        let end = start + dur;
        self.held.push_back((start, end));
        self.playing_reply = true;
        self.last_end = Some(end);
        let lead = end.saturating_duration_since(now).as_secs_f64();
        if lead > self.stats.max_lead_s {
            self.stats.max_lead_s = lead;
        }
    }

    fn gap_since_dry(&self, now: Instant) -> Option<Duration> {
        self.last_end.map(|e| now.saturating_duration_since(e))
    }

    /// The decoder reset: every packet not yet playing is thrown away.
    pub fn flush(&mut self, now: Instant) {
        self.prune(now);
        let playing = self.held.front().copied().filter(|&(s, _)| s <= now);
        let dropped = self.held.len() - usize::from(playing.is_some());
        self.stats.flushed += dropped;
        self.held.clear();
        if let Some(p) = playing {
            self.held.push_back(p);
        }
        self.last_end = self.held.back().map(|&(_, e)| e);
    }

    /// When everything held has played (`now` if nothing is held).
    pub fn drained_at(&self, now: Instant) -> Instant {
        self.held.back().map_or(now, |&(_, end)| end.max(now))
    }

    /// The reply's pacing so far.
    pub fn pacing(&self) -> Pacing {
        let mut p = self.stats.clone();
        if let (Some((t0, d0)), Some(t1)) = (self.first, self.last) {
            let span = t1.saturating_duration_since(t0).as_secs_f64();
            p.arrival_s = secs(span);
            if span > 0.0 {
                p.arrival_speed = Some(secs((p.audio_s - d0.as_secs_f64()) / span));
            }
        }
        p.audio_s = secs(p.audio_s);
        p.underrun_s = secs(p.underrun_s);
        p.max_lead_s = secs(p.max_lead_s);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn real_time_pacing_with_a_lead_has_no_underrun() {
        let t0 = Instant::now();
        let mut s = Speaker::new();
        s.start_reply();
        // xz-server: 5 packets at once, then one every 60 ms.
        for i in 0..20u64 {
            let at = t0 + if i < 5 { ms(0) } else { ms(60 * (i - 4)) };
            assert!(s.arrive(at, ms(60)));
            s.play(at, ms(60));
        }
        let p = s.pacing();
        assert_eq!((p.packets, p.underruns, p.dropped_full), (20, 0, 0));
        assert!((p.audio_s - 1.2).abs() < 1e-9);
        assert!((p.max_lead_s - 0.3).abs() < 1e-9, "{p:?}");
        assert!((p.arrival_s - 0.9).abs() < 1e-9);
        // 19 packets after the first (1.14 s of audio) over 0.9 s.
        assert!((p.arrival_speed.unwrap() - 1.14 / 0.9).abs() < 1e-5);
        assert_eq!(s.drained_at(t0 + ms(900)), t0 + ms(1200));
    }

    #[test]
    fn slow_delivery_underruns() {
        let t0 = Instant::now();
        let mut s = Speaker::new();
        s.start_reply();
        for i in 0..4u64 {
            let at = t0 + ms(100 * i);
            s.arrive(at, ms(60));
            s.play(at, ms(60));
        }
        let p = s.pacing();
        // Each packet came 40 ms after the previous one had played.
        assert_eq!(p.underruns, 3);
        assert!((p.underrun_s - 0.12).abs() < 1e-9);
        assert!((p.arrival_speed.unwrap() - 0.6).abs() < 1e-9);
        // A new reply starts the figures over.
        s.start_reply();
        s.arrive(t0 + ms(2000), ms(60));
        s.play(t0 + ms(2000), ms(60));
        assert_eq!(s.pacing().underruns, 0);
        assert_eq!(s.pacing().arrival_speed, None);
    }

    #[test]
    fn a_burst_beyond_the_queue_is_dropped() {
        let t0 = Instant::now();
        let mut s = Speaker::new();
        s.start_reply();
        let accepted = (0..60)
            .filter(|_| {
                let ok = s.arrive(t0, ms(60));
                if ok {
                    s.play(t0, ms(60));
                }
                ok
            })
            .count();
        assert_eq!(accepted, HELD_MAX);
        let p = s.pacing();
        assert_eq!((p.packets, p.dropped_full), (60, 60 - HELD_MAX));
        assert_eq!(p.arrival_speed, None);
        // Once the first packet has played, one more fits, and then none.
        assert!(s.arrive(t0 + ms(60), ms(60)));
        s.play(t0 + ms(60), ms(60));
        assert!(!s.arrive(t0 + ms(61), ms(60)));
    }

    #[test]
    fn flush_keeps_only_the_packet_playing() {
        let t0 = Instant::now();
        let mut s = Speaker::new();
        s.start_reply();
        for _ in 0..5 {
            s.arrive(t0, ms(60));
            s.play(t0, ms(60));
        }
        s.flush(t0 + ms(30));
        assert_eq!(s.pacing().flushed, 4);
        assert_eq!(s.drained_at(t0 + ms(30)), t0 + ms(60));
    }
}
