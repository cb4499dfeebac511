//! Many live VAD streams sharing one model: per-stream state, batch layout, scatter.
//!
//! The network runs outside this module (onnxruntime, called from Python). One round is:
//!
//! 1. [`VadCore::push`] / [`VadCore::push_pcm16`] append audio to a stream (any length).
//! 2. [`VadCore::prepare`] picks every stream with at least one full window buffered and lays
//!    out `T` consecutive windows of each (`T` = the fewest any of them has, capped) as the
//!    model input `frames [T, N, 4, k]` plus the LSTM states `[2, N, 128]`. Nothing in the
//!    streams changes yet, so a failed inference can simply be retried or dropped.
//! 3. [`VadCore::commit`] takes the probabilities `[T, N]` and new states `[2, N, 128]`,
//!    stores each stream's state, moves its context forward, drops the consumed samples and
//!    runs its [`VadIterator`], returning the events.
//!
//! `frames` are the four STFT frames (length k = 256 at 16 kHz, 128 at 8 kHz, hop k/2) of
//! `context + window` right-padded by reflection of `context` samples: exactly the samples
//! the upstream graph's `Pad(reflect)` + strided `Conv` read. The derived graph shipped in
//! `echokit_fast/assets/` takes them directly (`scripts/derive_silero_vad.py`).

use super::iterator::{Event, IteratorParams, VadIterator};
use super::{Rate, FRAMES, HIDDEN};
use crate::error::Result;
use crate::invalid;

/// Drop consumed samples from a stream's buffer once this many have piled up.
const COMPACT_AT: usize = 8192;

#[derive(Debug, Clone)]
struct Stream {
    generation: u64,
    /// LSTM state, h then c, `HIDDEN` each.
    state: Vec<f32>,
    /// The last `context` samples of the previous window (zeros after a reset).
    context: Vec<f32>,
    /// Buffered samples; `pending[head..]` are not consumed yet.
    pending: Vec<f32>,
    head: usize,
    iter: VadIterator,
}

impl Stream {
    fn ready(&self, win: usize) -> usize {
        (self.pending.len() - self.head) / win
    }
}

/// One batch laid out by [`VadCore::prepare`].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Stream ids, in batch order (`N` of them).
    pub ids: Vec<usize>,
    /// Consecutive windows per stream in this batch.
    pub t: usize,
    /// `[T, N, 4, k]` row-major.
    pub frames: Vec<f32>,
    /// `[2, N, 128]` row-major.
    pub state: Vec<f32>,
}

#[derive(Debug, Clone)]
struct InFlight {
    slots: Vec<(usize, u64)>,
    t: usize,
}

/// An event of one stream, as returned by [`VadCore::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEvent {
    pub id: usize,
    /// Window index within the batch (0..T) that produced it.
    pub window: usize,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub struct VadCore {
    rate: Rate,
    streams: Vec<Option<Stream>>,
    free: Vec<usize>,
    next_generation: u64,
    inflight: Option<InFlight>,
}

impl VadCore {
    pub fn new(rate: Rate) -> VadCore {
        VadCore {
            rate,
            streams: Vec::new(),
            free: Vec::new(),
            next_generation: 1,
            inflight: None,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.streams.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Opens a stream with these iterator parameters; returns its id (ids are reused after
    /// [`close`](Self::close)).
    pub fn open(&mut self, params: &IteratorParams) -> Result<usize> {
        if params.rate != self.rate {
            return Err(invalid!(
                "stream sampling_rate {} differs from the core's {}",
                params.rate.hz(),
                self.rate.hz()
            ));
        }
        let iter = VadIterator::new(params)?;
        let generation = self.generation();
        let stream = Stream {
            generation,
            state: vec![0.0; 2 * HIDDEN],
            context: vec![0.0; self.rate.context()],
            pending: Vec::new(),
            head: 0,
            iter,
        };
        Ok(match self.free.pop() {
            Some(id) => {
                self.streams[id] = Some(stream);
                id
            }
            None => {
                self.streams.push(Some(stream));
                self.streams.len() - 1
            }
        })
    }

    fn stream_mut(&mut self, id: usize) -> Result<&mut Stream> {
        self.streams
            .get_mut(id)
            .and_then(|s| s.as_mut())
            .ok_or_else(|| invalid!("no open VAD stream with id {id}"))
    }

    fn stream(&self, id: usize) -> Result<&Stream> {
        self.streams
            .get(id)
            .and_then(|s| s.as_ref())
            .ok_or_else(|| invalid!("no open VAD stream with id {id}"))
    }

    pub fn close(&mut self, id: usize) -> Result<()> {
        self.stream(id)?;
        self.streams[id] = None;
        self.free.push(id);
        Ok(())
    }

    /// Back to the state of a new stream: zero LSTM state and context, buffered samples
    /// dropped, iterator reset (positions count from 0 again).
    pub fn reset(&mut self, id: usize) -> Result<()> {
        let generation = self.generation();
        let s = self.stream_mut(id)?;
        s.generation = generation;
        s.state.fill(0.0);
        s.context.fill(0.0);
        s.pending.clear();
        s.head = 0;
        s.iter.reset();
        Ok(())
    }

    /// Appends float samples (finite; the model is defined on [-1, 1]).
    pub fn push(&mut self, id: usize, samples: &[f32]) -> Result<()> {
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            return Err(invalid!(
                "audio sample {i} is not finite ({}); VAD input must be finite floats",
                samples[i]
            ));
        }
        let s = self.stream_mut(id)?;
        s.pending.extend_from_slice(samples);
        Ok(())
    }

    /// Appends signed 16-bit little-endian PCM, scaled by 1/32768 (as the official Python
    /// tools read WAV files).
    pub fn push_pcm16(&mut self, id: usize, bytes: &[u8]) -> Result<()> {
        if !bytes.len().is_multiple_of(2) {
            return Err(invalid!(
                "PCM16 input must have an even number of bytes, got {}",
                bytes.len()
            ));
        }
        let s = self.stream_mut(id)?;
        s.pending.extend(
            bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
        );
        Ok(())
    }

    /// Full windows buffered for this stream.
    pub fn ready_windows(&self, id: usize) -> Result<usize> {
        Ok(self.stream(id)?.ready(self.rate.window()))
    }

    /// Samples buffered but not yet in a processed window.
    pub fn pending_samples(&self, id: usize) -> Result<usize> {
        let s = self.stream(id)?;
        Ok(s.pending.len() - s.head)
    }

    /// `(triggered, current_sample)` of the stream's iterator.
    pub fn iterator_state(&self, id: usize) -> Result<(bool, i64)> {
        let s = self.stream(id)?;
        Ok((s.iter.triggered(), s.iter.current_sample()))
    }

    /// Lays out the next batch, or `None` when no stream has a full window. `max_windows`
    /// (>= 1) caps `T`. A batch prepared but never committed is simply forgotten by the next
    /// `prepare`.
    pub fn prepare(&mut self, max_windows: usize) -> Result<Option<Batch>> {
        if max_windows == 0 {
            return Err(invalid!("max_windows must be >= 1, got 0"));
        }
        let win = self.rate.window();
        let mut t = max_windows;
        let mut slots = Vec::new();
        for (id, s) in self.streams.iter().enumerate() {
            if let Some(s) = s {
                let r = s.ready(win);
                if r > 0 {
                    t = t.min(r);
                    slots.push((id, s.generation));
                }
            }
        }
        if slots.is_empty() {
            self.inflight = None;
            return Ok(None);
        }
        let n = slots.len();
        let ctx = self.rate.context();
        let k = self.rate.frame();
        let hop = k / 2;
        let row = FRAMES * k;
        let mut frames = vec![0.0f32; t * n * row];
        let mut state = vec![0.0f32; 2 * n * HIDDEN];
        // context + window + reflection, reused for every window
        let mut x = vec![0.0f32; ctx + win + ctx];
        let len = ctx + win;
        for (j, &(id, _)) in slots.iter().enumerate() {
            let s = self.streams[id].as_ref().expect("slot of an open stream");
            state[j * HIDDEN..(j + 1) * HIDDEN].copy_from_slice(&s.state[..HIDDEN]);
            state[(n + j) * HIDDEN..(n + j + 1) * HIDDEN].copy_from_slice(&s.state[HIDDEN..]);
            for w in 0..t {
                let start = s.head + w * win;
                if w == 0 {
                    x[..ctx].copy_from_slice(&s.context);
                } else {
                    x[..ctx].copy_from_slice(&s.pending[start - ctx..start]);
                }
                x[ctx..len].copy_from_slice(&s.pending[start..start + win]);
                // reflect pad (edge sample excluded): x[len + i] = x[len - 2 - i]
                for i in 0..ctx {
                    x[len + i] = x[len - 2 - i];
                }
                let base = (w * n + j) * row;
                for f in 0..FRAMES {
                    frames[base + f * k..base + (f + 1) * k]
                        .copy_from_slice(&x[f * hop..f * hop + k]);
                }
            }
        }
        self.inflight = Some(InFlight {
            slots: slots.clone(),
            t,
        });
        Ok(Some(Batch {
            ids: slots.into_iter().map(|(id, _)| id).collect(),
            t,
            frames,
            state,
        }))
    }

    /// Applies the model outputs for the batch of the last [`prepare`](Self::prepare):
    /// `probs` `[T, N]`, `state` `[2, N, 128]`. Streams closed or reset in between are
    /// skipped. Returns the iterator events, in batch order then window order.
    pub fn commit(&mut self, probs: &[f32], state: &[f32]) -> Result<Vec<StreamEvent>> {
        let inflight = self
            .inflight
            .take()
            .ok_or_else(|| invalid!("commit() without a prepared batch"))?;
        let n = inflight.slots.len();
        let t = inflight.t;
        if probs.len() != t * n || state.len() != 2 * n * HIDDEN {
            let got = (probs.len(), state.len());
            self.inflight = Some(inflight);
            return Err(invalid!(
                "model outputs do not match the prepared batch (T={t}, N={n}): expected {} \
                 probabilities and {} state values, got {} and {}",
                t * n,
                2 * n * HIDDEN,
                got.0,
                got.1
            ));
        }
        let win = self.rate.window();
        let ctx = self.rate.context();
        let mut events = Vec::new();
        for (j, &(id, generation)) in inflight.slots.iter().enumerate() {
            let Some(s) = self.streams.get_mut(id).and_then(|s| s.as_mut()) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            s.state[..HIDDEN].copy_from_slice(&state[j * HIDDEN..(j + 1) * HIDDEN]);
            s.state[HIDDEN..].copy_from_slice(&state[(n + j) * HIDDEN..(n + j + 1) * HIDDEN]);
            for w in 0..t {
                if let Some(event) = s.iter.step(probs[w * n + j] as f64) {
                    events.push(StreamEvent {
                        id,
                        window: w,
                        event,
                    });
                }
            }
            let end = s.head + t * win;
            s.context.copy_from_slice(&s.pending[end - ctx..end]);
            s.head = end;
            if s.head >= COMPACT_AT && s.head * 2 >= s.pending.len() {
                s.pending.drain(..s.head);
                s.head = 0;
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> IteratorParams {
        IteratorParams::default()
    }

    /// A fake "model": probability = mean of the window's first frame, state += 1.
    fn fake_run(b: &Batch) -> (Vec<f32>, Vec<f32>) {
        let k = 256;
        let n = b.ids.len();
        let mut probs = vec![0.0; b.t * n];
        for (i, p) in probs.iter_mut().enumerate() {
            let f = &b.frames[i * FRAMES * k..i * FRAMES * k + k];
            *p = f.iter().sum::<f32>() / k as f32;
        }
        (probs, b.state.iter().map(|v| v + 1.0).collect())
    }

    #[test]
    fn frames_hold_context_window_and_reflection() {
        let mut core = VadCore::new(Rate::Hz16000);
        let id = core.open(&params()).unwrap();
        let audio: Vec<f32> = (0..1024).map(|i| i as f32 / 1024.0).collect();
        core.push(id, &audio).unwrap();
        let b = core.prepare(8).unwrap().unwrap();
        assert_eq!((b.t, b.ids.clone()), (2, vec![id]));
        assert_eq!(b.frames.len(), 2 * 4 * 256);
        // window 0: 64 zeros of context, then samples 0..; frame 1 starts at x[128]
        assert_eq!(&b.frames[..64], &[0.0; 64][..]);
        assert_eq!(b.frames[64], audio[0]);
        assert_eq!(b.frames[256], audio[128 - 64]);
        // frame 3 = x[384..640]: x[576 + i] = x[574 - i] (reflection)
        let f3 = &b.frames[3 * 256..4 * 256];
        assert_eq!(f3[191], audio[511]); // x[575]
        assert_eq!(f3[192], audio[510]); // x[576] = x[574]
        assert_eq!(f3[255], audio[447]); // x[639] = x[511]
                                         // window 1: context = the last 64 samples of window 0
        let w1 = &b.frames[4 * 256..];
        assert_eq!(w1[0], audio[448]);
        assert_eq!(w1[64], audio[512]);
    }

    #[test]
    fn commit_advances_context_state_and_positions() {
        let mut core = VadCore::new(Rate::Hz16000);
        let id = core.open(&params()).unwrap();
        core.push(id, &vec![0.9; 700]).unwrap();
        let b = core.prepare(4).unwrap().unwrap();
        assert_eq!(b.t, 1);
        let (p, s) = fake_run(&b);
        let ev = core.commit(&p, &s).unwrap();
        assert_eq!(
            ev,
            vec![StreamEvent {
                id,
                window: 0,
                event: Event::Start(0)
            }]
        );
        assert_eq!(core.pending_samples(id).unwrap(), 188);
        assert_eq!(core.iterator_state(id).unwrap(), (true, 512));
        assert!(core.prepare(4).unwrap().is_none());
        core.push(id, &vec![0.9; 324]).unwrap();
        let b = core.prepare(4).unwrap().unwrap();
        assert_eq!(&b.frames[..64], &[0.9; 64][..]);
        assert_eq!(&b.state[..], &vec![1.0; 256][..]);
        // commit twice is an error
        let (p, s) = fake_run(&b);
        core.commit(&p, &s).unwrap();
        assert!(core.commit(&p, &s).is_err());
    }

    #[test]
    fn batch_takes_the_fewest_ready_windows_and_skips_idle_streams() {
        let mut core = VadCore::new(Rate::Hz16000);
        let a = core.open(&params()).unwrap();
        let b = core.open(&params()).unwrap();
        let c = core.open(&params()).unwrap();
        core.push(a, &vec![0.1; 512 * 3]).unwrap();
        core.push(b, &vec![0.2; 512 * 2 + 5]).unwrap();
        core.push(c, &vec![0.3; 100]).unwrap();
        let batch = core.prepare(16).unwrap().unwrap();
        assert_eq!((batch.ids.clone(), batch.t), (vec![a, b], 2));
        // state layout [2, N, 128]
        assert_eq!(batch.state.len(), 2 * 2 * 128);
        let (p, s) = fake_run(&batch);
        core.commit(&p, &s).unwrap();
        assert_eq!(core.ready_windows(a).unwrap(), 1);
        assert_eq!(core.ready_windows(b).unwrap(), 0);
        let batch = core.prepare(16).unwrap().unwrap();
        assert_eq!((batch.ids.clone(), batch.t), (vec![a], 1));
    }

    #[test]
    fn reset_or_close_between_prepare_and_commit_is_safe() {
        let mut core = VadCore::new(Rate::Hz16000);
        let a = core.open(&params()).unwrap();
        let b = core.open(&params()).unwrap();
        core.push(a, &vec![0.9; 512]).unwrap();
        core.push(b, &vec![0.9; 512]).unwrap();
        let batch = core.prepare(1).unwrap().unwrap();
        core.reset(a).unwrap();
        core.close(b).unwrap();
        let (p, s) = fake_run(&batch);
        assert!(core.commit(&p, &s).unwrap().is_empty());
        assert_eq!(core.iterator_state(a).unwrap(), (false, 0));
        assert!(core.push(b, &[0.0]).is_err());
        // the id is reused
        assert_eq!(core.open(&params()).unwrap(), b);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut core = VadCore::new(Rate::Hz16000);
        let id = core.open(&params()).unwrap();
        assert!(core.push_pcm16(id, &[1, 2, 3]).is_err());
        assert!(core.push(id, &[0.0, f32::NAN]).is_err());
        assert!(core.push(id + 1, &[0.0]).is_err());
        assert!(core.prepare(0).is_err());
        let p8 = IteratorParams {
            rate: Rate::Hz8000,
            ..params()
        };
        assert!(core.open(&p8).is_err());
        core.push(id, &vec![0.0; 512]).unwrap();
        core.prepare(1).unwrap().unwrap();
        assert!(core.commit(&[0.5, 0.5], &[0.0; 256]).is_err());
    }

    #[test]
    fn pcm16_is_scaled_by_32768() {
        let mut core = VadCore::new(Rate::Hz8000);
        let id = core
            .open(&IteratorParams {
                rate: Rate::Hz8000,
                ..params()
            })
            .unwrap();
        let mut bytes = Vec::new();
        for v in [i16::MIN, -1, 0, 16384, i16::MAX] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend(std::iter::repeat_n(0u8, 2 * 251));
        core.push_pcm16(id, &bytes).unwrap();
        let b = core.prepare(1).unwrap().unwrap();
        // 8 kHz: 32 context samples, frames of 128
        assert_eq!(
            &b.frames[32..37],
            &[-1.0, -1.0 / 32768.0, 0.0, 0.5, 32767.0 / 32768.0]
        );
    }
}
