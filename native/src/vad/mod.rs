//! Silero VAD, native side: everything except the neural network itself.
//!
//! * [`segments`]: the offline segmenter, `get_speech_timestamps` of the official
//!   silero-vad 6.2.3 Python package applied to per-window probabilities (max-length
//!   splitting and the padding pass included), reimplemented from its documented behaviour.
//! * [`iterator`]: the streaming state machine of the official `VADIterator`
//!   (`{"start"}` / `{"end"}` events).
//! * [`core`]: many live streams sharing one model. Each stream keeps its LSTM state
//!   (2 x 128 floats), its context (the last 64 / 32 samples) and the samples that do not
//!   fill a window yet. `VadCore::prepare` lays out one batch of every stream with a full
//!   window ready (the model's batch dimension); the caller runs the network once
//!   (onnxruntime, in Python) and hands probabilities and new states back to
//!   `VadCore::commit`, which scatters them and advances each stream's iterator.
//!
//! No pyo3 here: `cargo test` runs without Python.

pub mod core;
pub mod iterator;
pub mod segments;

use crate::error::Result;
use crate::invalid;

/// One of the two rates the Silero model supports, with its window geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Hz8000,
    Hz16000,
}

impl Rate {
    /// 8000 or 16000; anything else is an error naming the value.
    pub fn from_hz(hz: i64) -> Result<Rate> {
        match hz {
            16000 => Ok(Rate::Hz16000),
            8000 => Ok(Rate::Hz8000),
            other => Err(invalid!(
                "sampling_rate must be 8000 or 16000 (the Silero VAD rates), got {other}"
            )),
        }
    }
    pub fn hz(self) -> u32 {
        match self {
            Rate::Hz16000 => 16000,
            Rate::Hz8000 => 8000,
        }
    }
    /// New samples per model call: 512 at 16 kHz, 256 at 8 kHz (32 ms).
    pub fn window(self) -> usize {
        match self {
            Rate::Hz16000 => 512,
            Rate::Hz8000 => 256,
        }
    }
    /// Samples of the previous window prepended to each call: 64 / 32.
    pub fn context(self) -> usize {
        self.window() / 8
    }
    /// STFT frame length of the model (hop is half of it; 4 frames per call).
    pub fn frame(self) -> usize {
        self.window() / 2
    }
}

/// LSTM hidden size of the Silero model; the state is `[2, batch, HIDDEN]` (h then c).
pub const HIDDEN: usize = 128;
/// STFT frames per window the model computes.
pub const FRAMES: usize = 4;
