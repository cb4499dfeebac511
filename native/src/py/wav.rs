//! Python bindings for [`crate::wav`].
use numpy::{PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::pcm::{byte_src, describe};
use crate::wav;

/// `read_wav(data)`: WAV file bytes -> (float32 array (frames, channels), sample_rate).
#[pyfunction]
fn read_wav<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyArray2<f32>>, u32)> {
    let src = byte_src(data).ok_or_else(|| {
        PyValueError::new_err(format!(
            "read_wav expects the WAV file as bytes, got {}",
            describe(data)
        ))
    })?;
    let buf = src.as_slice()?;
    let info = py.detach(|| wav::parse_header(buf))?;
    let arr = unsafe { PyArray2::<f32>::new(py, [info.frames, info.channels], false) };
    // SAFETY: freshly created C-contiguous array of frames*channels f32 that no
    // Python code has seen yet; decode_into writes every element before we return it.
    let dst = unsafe { std::slice::from_raw_parts_mut(arr.data(), info.samples()) };
    py.detach(|| wav::decode_into(buf, &info, dst))?;
    Ok((arr, info.sample_rate))
}

/// `wav_info(data)`: what a WAV file's header says, without decoding the samples:
/// `(sample_rate, channels, frames)`; the same validation and errors as `read_wav`.
#[pyfunction]
fn wav_info(data: &Bound<'_, PyAny>) -> PyResult<(u32, usize, usize)> {
    let src = byte_src(data).ok_or_else(|| {
        PyValueError::new_err(format!(
            "wav_info expects the WAV file as bytes, got {}",
            describe(data)
        ))
    })?;
    let info = wav::parse_header(src.as_slice()?)?;
    Ok((info.sample_rate, info.channels, info.frames))
}

/// `write_wav(x, sample_rate, bits=16)`: float32 1-D (mono) or (frames, channels)
/// -> WAV file bytes (16-bit PCM or 32-bit IEEE float).
#[pyfunction]
#[pyo3(signature = (x, sample_rate, bits = 16))]
fn write_wav<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    sample_rate: i64,
    bits: i64,
) -> PyResult<Bound<'py, PyBytes>> {
    let a = x.cast::<PyArrayDyn<f32>>().map_err(|_| {
        PyValueError::new_err(format!(
            "write_wav expects a float32 array (1-D mono or 2-D (frames, channels)), got {}",
            describe(x)
        ))
    })?;
    let channels = match a.shape() {
        [_] => 1,
        [_, c] => *c,
        s => {
            return Err(PyValueError::new_err(format!(
                "write_wav expects a 1-D or 2-D (frames, channels) array, got shape {s:?}"
            )))
        }
    };
    if !(1..=i64::from(u32::MAX)).contains(&sample_rate) {
        return Err(PyValueError::new_err(format!(
            "sample_rate must be 1..=4294967295 Hz, got {sample_rate}"
        )));
    }
    if bits != 16 && bits != 32 {
        return Err(PyValueError::new_err(format!(
            "bits must be 16 (PCM) or 32 (IEEE float), got {bits}"
        )));
    }
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "write_wav needs a C-contiguous array (use np.ascontiguousarray)",
        ));
    }
    let ro = a.try_readonly()?;
    let src = ro
        .as_slice()
        .map_err(|_| PyValueError::new_err("array must be contiguous"))?;
    let (rate, bits) = (sample_rate as u32, bits as u32);
    let total = wav::encoded_len(src.len(), channels, rate, bits)?;
    PyBytes::new_with(py, total, |dst| {
        py.detach(|| wav::write_wav_into(src, channels, rate, bits, dst))?;
        Ok(())
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_wav, m)?)?;
    m.add_function(wrap_pyfunction!(wav_info, m)?)?;
    m.add_function(wrap_pyfunction!(write_wav, m)?)?;
    Ok(())
}
