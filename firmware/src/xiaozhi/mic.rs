//! The microphone while voice processing runs: from the moment it is switched on (after the
//! firmware's 120 ms input warm-up), one 60 ms frame of 16 kHz mono after another at real-time
//! pace, silence until the user speaks, the WAV, silence again (the device streams everything;
//! the server's VAD finds the speech). Pure: the device asks when the next frame is due and takes
//! it then, so tests need no clock. The Opus encoder has the firmware's settings.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::mic::audible_end;

/// 60 ms at 16 kHz.
pub const FRAME_SAMPLES: usize = 960;
pub const FRAME: Duration = Duration::from_millis(60);
/// The input task's warm-up after voice processing is enabled.
pub const WARMUP: Duration = Duration::from_millis(120);

/// One frame and what it holds of the WAV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub pcm: Vec<i16>,
    /// At least one WAV sample.
    pub speech: bool,
    /// The WAV's last audible sample (`crate::mic::audible_end`).
    pub audible_end: bool,
    /// The WAV's last sample.
    pub last_speech: bool,
}

#[derive(Debug)]
struct Speech {
    samples: Arc<[i16]>,
    /// The frame that starts with the WAV's first sample.
    from: u64,
    audible_end: usize,
}

#[derive(Debug)]
pub struct Mic {
    start: Instant,
    /// One frame's capture time, scaled by `--speed`.
    period: Duration,
    taken: u64,
    speech: Option<Speech>,
}

/// The firmware's encoder: 16 kHz mono, application audio, complexity 0, VBR and DTX on,
/// automatic bitrate.
pub fn encoder() -> Result<opus::Encoder, String> {
    let e = |x: opus::Error| format!("cannot set up the Opus encoder: {x}");
    let mut enc =
        opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Audio).map_err(e)?;
    enc.set_complexity(0).map_err(e)?;
    enc.set_vbr(true).map_err(e)?;
    enc.set_dtx(true).map_err(e)?;
    enc.set_bitrate(opus::Bitrate::Auto).map_err(e)?;
    Ok(enc)
}

impl Mic {
    /// Voice processing switched on at `start`; `speed` > 0 scales the pace.
    pub fn new(start: Instant, speed: f64) -> Mic {
        Mic {
            start,
            period: FRAME.div_f64(speed),
            taken: 0,
            speech: None,
        }
    }

    /// When frame `k` (0-based) is complete.
    fn due_of(&self, k: u64) -> Instant {
        self.start + WARMUP + self.period * (k as u32 + 1)
    }

    /// When the next frame is complete.
    pub fn due(&self) -> Instant {
        self.due_of(self.taken)
    }

    /// The user starts speaking `samples` at `at`: from the first frame captured from then on.
    pub fn say(&mut self, samples: Arc<[i16]>, at: Instant) {
        let mut from = self.taken;
        while self.due_of(from) - self.period < at {
            from += 1;
        }
        self.speech = Some(Speech {
            audible_end: audible_end(&samples),
            samples,
            from,
        });
    }

    /// The WAV is still being spoken (or has not started).
    pub fn speaking(&self) -> bool {
        self.speech.as_ref().is_some_and(|s| {
            let n = s.samples.len() as u64;
            self.taken < s.from + n.div_ceil(FRAME_SAMPLES as u64)
        })
    }

    /// Takes the next frame.
    pub fn take(&mut self) -> Frame {
        let k = self.taken;
        self.taken += 1;
        let mut f = Frame {
            pcm: vec![0; FRAME_SAMPLES],
            speech: false,
            audible_end: false,
            last_speech: false,
        };
        if let Some(s) = self.speech.as_ref().filter(|s| k >= s.from) {
            let lo = ((k - s.from) as usize * FRAME_SAMPLES).min(s.samples.len());
            let hi = (lo + FRAME_SAMPLES).min(s.samples.len());
            if lo < hi {
                f.pcm[..hi - lo].copy_from_slice(&s.samples[lo..hi]);
                f.speech = true;
                f.last_speech = hi == s.samples.len();
                f.audible_end = lo < s.audible_end && s.audible_end <= hi;
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Arc<[i16]> {
        (0..n).map(|i| (i % 20_000) as i16 + 500).collect()
    }

    #[test]
    fn frames_every_60_ms_after_the_warm_up() {
        let t0 = Instant::now();
        let mut m = Mic::new(t0, 1.0);
        assert_eq!(m.due(), t0 + Duration::from_millis(180));
        m.take();
        assert_eq!(m.due(), t0 + Duration::from_millis(240));
        let m4 = Mic::new(t0, 4.0);
        assert_eq!(m4.due(), t0 + Duration::from_millis(135));
    }

    #[test]
    fn silence_then_the_wav_then_silence() {
        let t0 = Instant::now();
        let mut m = Mic::new(t0, 1.0);
        // Speech from 0.3 s: frames capture from 120 + 60k ms; frame 3 starts at 300 ms.
        let wav = ramp(2000);
        m.say(wav.clone(), t0 + Duration::from_millis(300));
        assert!(m.speaking());
        let frames: Vec<Frame> = (0..8).map(|_| m.take()).collect();
        assert!(frames[..3]
            .iter()
            .all(|f| !f.speech && f.pcm.iter().all(|&s| s == 0)));
        assert_eq!(&frames[3].pcm[..], &wav[..960]);
        assert_eq!(&frames[4].pcm[..], &wav[960..1920]);
        assert_eq!(&frames[5].pcm[..80], &wav[1920..]);
        assert!(frames[5].pcm[80..].iter().all(|&s| s == 0));
        let flags: Vec<(bool, bool, bool)> = frames
            .iter()
            .map(|f| (f.speech, f.audible_end, f.last_speech))
            .collect();
        assert_eq!(
            flags[3..7],
            [
                (true, false, false),
                (true, false, false),
                (true, true, true),
                (false, false, false)
            ]
        );
        assert!(!m.speaking());
    }

    #[test]
    fn speech_due_now_starts_with_the_next_frame() {
        let t0 = Instant::now();
        let mut m = Mic::new(t0, 1.0);
        m.take();
        m.say(ramp(960), t0);
        let f = m.take();
        assert!(f.speech && f.last_speech && f.audible_end);
    }

    #[test]
    fn the_encoder_makes_60_ms_packets_and_tiny_dtx_frames_in_silence() {
        let mut enc = encoder().unwrap();
        let mut dec = opus::Decoder::new(16_000, opus::Channels::Mono).unwrap();
        let tone: Vec<i16> = (0..960)
            .map(|i| (8000.0 * (i as f32 * 0.07).sin()) as i16)
            .collect();
        let p = enc.encode_vec(&tone, 4000).unwrap();
        let mut out = vec![0i16; 960];
        assert_eq!(dec.decode(&p, &mut out, false).unwrap(), 960);
        let sizes: Vec<usize> = (0..20)
            .map(|_| enc.encode_vec(&[0i16; 960], 4000).unwrap().len())
            .collect();
        // DTX: 1-byte frames, with a refresh frame now and then.
        let tiny = sizes[8..].iter().filter(|&&n| n == 1).count();
        assert!(tiny >= 9, "{sizes:?}");
    }
}
