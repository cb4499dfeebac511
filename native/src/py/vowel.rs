//! Python bindings for [`crate::vowel`].
use pyo3::prelude::*;

use super::opus::{extract_pcm, Pcm};
use crate::vowel;

/// Lip-sync vowel code (0 none, 1 A, 2 E, 3 I, 4 O, 5 U) of a frame, from
/// its first 1024 samples. float32 samples are analysed as given; int16
/// samples are scaled by 1/32767 first, exactly as echokit_server does.
#[pyfunction]
#[pyo3(signature = (frame, sample_rate = 16000))]
fn vowel_of(py: Python<'_>, frame: &Bound<'_, PyAny>, sample_rate: i64) -> PyResult<u8> {
    let rate = vowel::check_sample_rate(sample_rate)?;
    let arg = extract_pcm(frame, "frame")?;
    let pcm = arg.pcm();
    Ok(py.detach(|| match pcm {
        Pcm::F32(s) => vowel::vowel_of(&s, rate),
        Pcm::I16(s) => vowel::vowel_of_i16(&s, rate),
    }))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(vowel_of, m)?)?;
    Ok(())
}
