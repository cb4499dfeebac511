//! The microphone of one turn: pre-roll, block pacing, framing and barge-in
//! accumulation (docs/protocol.md#microphone-audio, #device-behaviour). Pure: the device asks when
//! the next block is due (an offset from the moment the user starts speaking) and
//! steps the state machine at that time, so tests need no clock at all.

use std::sync::Arc;
use std::time::Duration;

/// Sample rate of everything device-facing.
pub const RATE: usize = 16_000;
/// Blocks captured before the device's own VAD fires (sent with the first frame).
pub const PRE_ROLL_BLOCKS: usize = 16;
/// A frame leaves once this many samples are buffered …
pub const FRAME_SAMPLES: usize = 8192;
/// … and more than 0.3 s has been captured (pre-roll included).
pub const MIN_CAPTURED: usize = RATE * 3 / 10;
/// Barge-in: more than 0.6 s accumulated while `Speaking`.
pub const BARGE_IN_SAMPLES: usize = RATE * 6 / 10;
/// The firmware resets locally once more than 10 s is uploaded without `ASR`.
pub const NO_ASR_SAMPLES: usize = RATE * 10;

/// A block louder than this RMS (about -40 dBFS) counts as voice for the
/// device's own VAD onset.
pub const ONSET_RMS: f64 = 328.0;

/// Where the device's own VAD would fire in a recording: the firmware only
/// starts a turn (`StartChat`) when its AFE VAD fires, with up to
/// `PRE_ROLL_BLOCKS` blocks captured before. A WAV with leading silence is
/// therefore played from `PRE_ROLL_BLOCKS` blocks before its first voiced
/// block (or from its start). Returns that start offset in samples; a WAV
/// without any voiced block is played whole.
pub fn voice_onset_start(speech: &[i16], block: usize) -> usize {
    let voiced = speech.chunks(block).position(|b| {
        let energy: f64 = b.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (energy / b.len() as f64).sqrt() > ONSET_RMS
    });
    match voiced {
        Some(k) => k.saturating_sub(PRE_ROLL_BLOCKS) * block,
        None => 0,
    }
}

/// A sample louder than this (about -40 dBFS, the onset level) is audible.
pub const AUDIBLE_LEVEL: i16 = 328;

/// The audible end of a recording: one past its last sample louder than
/// `AUDIBLE_LEVEL` (trailing silence and quiet noise excluded). A recording
/// with no audible sample ends at its last sample.
pub fn audible_end(speech: &[i16]) -> usize {
    speech
        .iter()
        .rposition(|&s| s.unsigned_abs() > AUDIBLE_LEVEL.unsigned_abs())
        .map_or(speech.len(), |i| i + 1)
}

/// What one microphone block produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicOut {
    /// Send `{"event":"StartChat"}` (before any frame of this block).
    StartChat,
    /// Send this PCM frame.
    Frame(Frame),
    /// More than 0.6 s accumulated while `Speaking`: barge in now.
    BargeIn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub samples: Vec<i16>,
    /// The frame holds at least one sample of the WAV (not only the silence after it).
    pub speech: bool,
    /// The frame holds the WAV's last sample.
    pub last_speech: bool,
    /// The frame holds the WAV's last audible sample ([`audible_end`]).
    pub audible_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Normal: StartChat after the pre-roll, frames of ≥ 8192 samples.
    Stream,
    /// The device is `Speaking` with barge-in enabled: keep everything.
    Accumulate,
}

#[derive(Debug)]
pub struct Mic {
    speech: Arc<[i16]>,
    block: usize,
    speed: f64,
    /// Blocks captured since the user started speaking (pre-roll included).
    blocks_in: usize,
    buf: Vec<i16>,
    mode: Mode,
    chat_started: bool,
    uploaded: usize,
    /// [`audible_end`] of `speech`, computed once.
    audible_end: usize,
}

impl Mic {
    /// `speed` as `--speed` (0 = no pacing). `accumulate`: the device is
    /// `Speaking` with barge-in on when the user starts talking.
    pub fn new(speech: Arc<[i16]>, block: usize, speed: f64, accumulate: bool) -> Mic {
        assert!(block > 0, "block size must be positive");
        Mic {
            audible_end: audible_end(&speech),
            speech,
            block,
            speed,
            blocks_in: 0,
            buf: Vec::new(),
            mode: if accumulate {
                Mode::Accumulate
            } else {
                Mode::Stream
            },
            chat_started: false,
            uploaded: 0,
        }
    }

    /// Blocks that hold at least one WAV sample.
    pub fn speech_blocks(&self) -> usize {
        self.speech.len().div_ceil(self.block)
    }

    /// When block `k` (0-based) is complete, as an offset from the start of
    /// speech. At speed 0 the WAV is not paced but the silence after it is,
    /// in real time: the server can only detect the end of speech from
    /// silence that lasts (and the no-ASR cut-off then bounds the upload).
    pub fn due(&self, k: usize) -> Duration {
        let samples = if self.speed > 0.0 {
            ((k + 1) * self.block) as f64 / self.speed
        } else if k < self.speech_blocks() {
            0.0
        } else {
            ((k + 1 - self.speech_blocks()) * self.block) as f64
        };
        Duration::from_secs_f64(samples / RATE as f64)
    }

    /// When the next block is due.
    pub fn next_due(&self) -> Duration {
        self.due(self.blocks_in)
    }

    /// Samples sent in frames since StartChat.
    pub fn uploaded(&self) -> usize {
        self.uploaded
    }

    pub fn chat_started(&self) -> bool {
        self.chat_started
    }

    pub fn accumulating(&self) -> bool {
        self.mode == Mode::Accumulate
    }

    /// The device barged in and sent StartChat: the accumulated audio goes out
    /// as one frame with the next block.
    pub fn barged_in(&mut self) {
        self.mode = Mode::Stream;
        self.chat_started = true;
    }

    /// The reply ended (`Listening`) before the barge-in threshold: carry on
    /// as a normal turn (StartChat with the next block, audio kept).
    pub fn listen(&mut self) {
        self.mode = Mode::Stream;
    }

    /// Captures the next block and says what to send.
    pub fn step(&mut self) -> Vec<MicOut> {
        let start = self.blocks_in * self.block;
        let end = start + self.block;
        let n = self.speech.len();
        let lo = start.min(n);
        let hi = end.min(n);
        self.buf.extend_from_slice(&self.speech[lo..hi]);
        self.buf
            .resize(self.buf.len() + (end - start) - (hi - lo), 0);
        self.blocks_in += 1;
        let captured = self.blocks_in * self.block;

        let mut out = Vec::new();
        match self.mode {
            Mode::Accumulate => {
                if self.buf.len() > BARGE_IN_SAMPLES {
                    out.push(MicOut::BargeIn);
                }
            }
            Mode::Stream => {
                if !self.chat_started && self.blocks_in >= PRE_ROLL_BLOCKS {
                    self.chat_started = true;
                    out.push(MicOut::StartChat);
                }
                if self.chat_started && self.buf.len() >= FRAME_SAMPLES && captured > MIN_CAPTURED {
                    let samples = std::mem::take(&mut self.buf);
                    let first = captured - samples.len();
                    self.uploaded += samples.len();
                    out.push(MicOut::Frame(Frame {
                        speech: first < n,
                        last_speech: n > 0 && first < n && n <= captured,
                        audible_end: n > 0
                            && first < self.audible_end
                            && self.audible_end <= captured,
                        samples,
                    }));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Arc<[i16]> {
        (0..n).map(|i| (i % 30000) as i16 + 1).collect()
    }

    /// Runs a mic for `blocks` blocks: (block index, due, outputs) for each non-empty step.
    fn run(mic: &mut Mic, blocks: usize) -> Vec<(usize, Duration, Vec<MicOut>)> {
        let mut v = Vec::new();
        for k in 0..blocks {
            let due = mic.next_due();
            let out = mic.step();
            if !out.is_empty() {
                v.push((k, due, out));
            }
        }
        v
    }

    #[test]
    fn start_chat_after_pre_roll_and_frames_of_8192() {
        // 2 s of speech, 256-sample blocks, real time.
        let speech = ramp(32_000);
        let mut mic = Mic::new(speech.clone(), 256, 1.0, false);
        let steps = run(&mut mic, 200);
        // StartChat when the 16 pre-roll blocks are in (256 ms).
        assert_eq!(steps[0].0, 15);
        assert_eq!(steps[0].1, Duration::from_millis(256));
        assert_eq!(steps[0].2, vec![MicOut::StartChat]);
        // The first frame one pre-roll later, and it starts with the pre-roll.
        let (k, due, out) = &steps[1];
        assert_eq!((*k, *due), (31, Duration::from_millis(512)));
        let MicOut::Frame(f) = &out[0] else { panic!() };
        assert_eq!(f.samples.len(), 8192);
        assert_eq!(&f.samples[..], &speech[..8192]);
        assert!(f.speech && !f.last_speech);
        // Every frame is 8192 samples, one every 512 ms, contiguous audio.
        let frames: Vec<&Frame> = steps[1..]
            .iter()
            .map(|(_, _, o)| match &o[..] {
                [MicOut::Frame(f)] => f,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(frames.iter().all(|f| f.samples.len() == 8192));
        for w in steps[1..].windows(2) {
            assert_eq!(w[1].1 - w[0].1, Duration::from_millis(512));
        }
        // 32000 samples: frames 0..3 are speech, frame 3 (24576..32768) holds
        // the last sample, later ones are silence.
        let flags: Vec<(bool, bool)> = frames.iter().map(|f| (f.speech, f.last_speech)).collect();
        assert_eq!(
            flags[..5],
            [
                (true, false),
                (true, false),
                (true, false),
                (true, true),
                (false, false)
            ]
        );
        assert_eq!(&frames[3].samples[..32000 - 24576], &speech[24576..]);
        assert!(frames[3].samples[32000 - 24576..].iter().all(|&s| s == 0));
        assert_eq!(mic.uploaded(), 8192 * frames.len());
    }

    #[test]
    fn speed_scales_the_schedule() {
        let speech = ramp(16_000);
        let m1 = Mic::new(speech.clone(), 256, 1.0, false);
        let m4 = Mic::new(speech, 256, 4.0, false);
        for k in [0, 15, 31, 100] {
            assert_eq!(m1.due(k), Duration::from_secs_f64((k + 1) as f64 * 0.016));
            let d4 = m4.due(k).as_secs_f64();
            assert!((d4 - (k + 1) as f64 * 0.004).abs() < 1e-9, "{k}: {d4}");
        }
    }

    #[test]
    fn speed_zero_floods_the_wav_then_paces_silence_in_real_time() {
        // 1000 samples = 4 blocks of 256 (the last one partly silence).
        let m = Mic::new(ramp(1000), 256, 0.0, false);
        assert_eq!(m.speech_blocks(), 4);
        for k in 0..4 {
            assert_eq!(m.due(k), Duration::ZERO);
        }
        assert_eq!(m.due(4), Duration::from_millis(16));
        assert_eq!(m.due(13), Duration::from_millis(160));
    }

    #[test]
    fn block_512_sends_the_first_frame_with_start_chat() {
        let mut mic = Mic::new(ramp(40_000), 512, 1.0, false);
        let steps = run(&mut mic, 40);
        assert_eq!(steps[0].0, 15);
        assert_eq!(steps[0].2.len(), 2);
        assert_eq!(steps[0].2[0], MicOut::StartChat);
        let MicOut::Frame(f) = &steps[0].2[1] else {
            panic!()
        };
        assert_eq!(f.samples.len(), 8192);
        // Then every 16 blocks.
        assert_eq!(steps[1].0, 31);
    }

    #[test]
    fn audible_end_ignores_trailing_silence_and_quiet_noise() {
        let mut wav: Vec<i16> = ramp(10_000).to_vec();
        wav.extend((0..5000).map(|i| if i % 2 == 0 { 300 } else { -300 }));
        wav.extend([0i16; 20_000]);
        assert_eq!(audible_end(&wav), 10_000);
        assert_eq!(audible_end(&[0, -329, 0, 0]), 2);
        assert_eq!(audible_end(&[0i16; 50]), 50);
        assert_eq!(audible_end(&[]), 0);
        // The frame flag: the audible end (10000) is in frame 1 (8192..16384),
        // the WAV's last sample (34999) in frame 4 (32768..40960).
        let mut mic = Mic::new(wav.into(), 256, 1.0, false);
        let frames: Vec<Frame> = run(&mut mic, 200)
            .into_iter()
            .flat_map(|(_, _, o)| o)
            .filter_map(|o| match o {
                MicOut::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        let flags: Vec<(bool, bool)> = frames
            .iter()
            .map(|f| (f.audible_end, f.last_speech))
            .collect();
        assert_eq!(
            flags[..6],
            [
                (false, false),
                (true, false),
                (false, false),
                (false, false),
                (false, true),
                (false, false)
            ]
        );
    }

    #[test]
    fn short_speech_is_the_last_speech_frame_at_once() {
        // 100 samples: the first frame holds them all.
        let mut mic = Mic::new(ramp(100), 256, 1.0, false);
        let steps = run(&mut mic, 32);
        let MicOut::Frame(f) = &steps[1].2[0] else {
            panic!()
        };
        assert!(f.speech && f.last_speech && f.audible_end);
    }

    #[test]
    fn barge_in_after_more_than_0_6_s_then_one_big_frame() {
        let speech = ramp(48_000);
        let mut mic = Mic::new(speech.clone(), 256, 1.0, true);
        let steps = run(&mut mic, 38);
        // 38 blocks = 9728 samples > 9600; 37 blocks = 9472 is not enough.
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].0, 37);
        assert_eq!(steps[0].2, vec![MicOut::BargeIn]);
        assert!(!mic.chat_started());
        mic.barged_in();
        // The accumulated audio leaves with the next block, as one frame.
        let out = mic.step();
        let [MicOut::Frame(f)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(f.samples.len(), 39 * 256);
        assert_eq!(&f.samples[..], &speech[..39 * 256]);
        // Then normal 8192-sample frames.
        let steps = run(&mut mic, 40);
        assert_eq!(steps[0].0, 31);
        let MicOut::Frame(f) = &steps[0].2[0] else {
            panic!()
        };
        assert_eq!(f.samples.len(), 8192);
        assert_eq!(&f.samples[..], &speech[39 * 256..39 * 256 + 8192]);
    }

    #[test]
    fn reply_ending_before_the_threshold_turns_into_a_normal_turn() {
        let mut mic = Mic::new(ramp(48_000), 256, 1.0, true);
        assert!(run(&mut mic, 20).is_empty());
        mic.listen();
        // 21st block: StartChat (pre-roll long done); buffer 5376 < 8192.
        assert_eq!(mic.step(), vec![MicOut::StartChat]);
        let steps = run(&mut mic, 20);
        // 32 blocks = 8192 samples.
        assert_eq!(steps[0].0, 10);
        let MicOut::Frame(f) = &steps[0].2[0] else {
            panic!()
        };
        assert_eq!(f.samples.len(), 8192);
    }

    #[test]
    fn leading_silence_is_skipped_up_to_the_pre_roll() {
        let mut wav = vec![0i16; 40 * 256 + 100];
        wav.extend(std::iter::repeat_n(3000i16, 2000));
        // voice starts in block 40 → played from block 40 - 16 = 24
        assert_eq!(voice_onset_start(&wav, 256), 24 * 256);
        assert_eq!(voice_onset_start(&wav, 512), (20 - 16) * 512);
        // voice within the pre-roll of the start, or none at all: played whole
        assert_eq!(voice_onset_start(&wav[40 * 256 - 5 * 256..], 256), 0);
        assert_eq!(voice_onset_start(&[0i16; 9000], 256), 0);
        // quiet noise below the onset level is not voice
        let noise: Vec<i16> = (0..9000)
            .map(|i| if i % 2 == 0 { 200 } else { -200 })
            .collect();
        assert_eq!(voice_onset_start(&noise, 256), 0);
    }
}
