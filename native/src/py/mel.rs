//! Python bindings for [`crate::mel`].
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;

use super::opus::{extract_pcm, Pcm};
use crate::mel;

/// Whisper log-mel features (80 bins) of 16 kHz mono samples, shape
/// `(80, len // 160)`, float32. float32 samples are used as given; int16
/// samples are scaled by 1/32768 first. `normalize`: zero-mean,
/// unit-variance waveform first (Smart Turn v3).
#[pyfunction]
#[pyo3(signature = (samples, normalize = false))]
fn whisper_log_mel<'py>(
    py: Python<'py>,
    samples: &Bound<'py, PyAny>,
    normalize: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let arg = extract_pcm(samples, "samples")?;
    let pcm = arg.pcm();
    let (out, n) = py.detach(|| {
        let x: Vec<f32> = match pcm {
            Pcm::F32(s) => s.into_owned(),
            Pcm::I16(s) => s.iter().map(|&v| f32::from(v) / 32768.0).collect(),
        };
        (mel::log_mel(&x, normalize), mel::frames(x.len()))
    });
    PyArray1::from_vec(py, out?).reshape([mel::N_MELS, n])
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(whisper_log_mel, m)?)?;
    Ok(())
}
