//! echokit-native: the hot paths of echokit-fast.
//!
//! Every kernel lives in a pure-Rust module (testable with `cargo test`, no
//! Python needed); the `python` feature adds the pyo3 bindings in `py/`, one
//! file per concern, each with a `register` function.

pub mod error;
pub mod mel;
pub mod opus;
pub mod pcm;
pub mod protocol;
pub mod resample;
pub mod vad;
pub mod vowel;
pub mod wav;

#[cfg(feature = "python")]
mod py;
