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

/// What a WAV header says (`wav_info`), read-only.
#[pyclass(module = "echokit_fast._native", name = "WavInfo", frozen, get_all)]
struct WavInfo {
    /// 1 (PCM) or 3 (IEEE float); for WAVE_FORMAT_EXTENSIBLE, its sub-format's.
    format_tag: u16,
    /// Bits per sample (the container's).
    bits: u16,
    channels: usize,
    sample_rate: u32,
    /// Whole frames of audio in the file.
    frames: usize,
    /// Byte offset of the first sample.
    data_offset: usize,
    /// True when the data size was a streaming sentinel (read to the end).
    streaming: bool,
}

#[pymethods]
impl WavInfo {
    /// Seconds of audio (`frames / sample_rate`).
    #[getter]
    fn duration(&self) -> f64 {
        self.frames as f64 / f64::from(self.sample_rate)
    }

    fn __repr__(&self) -> String {
        format!(
            "WavInfo(format_tag={}, bits={}, channels={}, sample_rate={}, frames={}, \
             data_offset={}, streaming={})",
            self.format_tag,
            self.bits,
            self.channels,
            self.sample_rate,
            self.frames,
            self.data_offset,
            if self.streaming { "True" } else { "False" }
        )
    }
}

/// `wav_info(data)`: the validated header of WAV file bytes (no samples are decoded); the
/// same checks and messages as `read_wav`.
#[pyfunction]
fn wav_info(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<WavInfo> {
    let src = byte_src(data).ok_or_else(|| {
        PyValueError::new_err(format!(
            "wav_info expects the WAV file as bytes, got {}",
            describe(data)
        ))
    })?;
    let buf = src.as_slice()?;
    let info = py.detach(|| wav::parse_header(buf))?;
    Ok(WavInfo {
        format_tag: info.format.tag(),
        bits: info.format.bits(),
        channels: info.channels,
        sample_rate: info.sample_rate,
        frames: info.frames,
        data_offset: info.data_offset,
        streaming: info.streaming,
    })
}

/// `is_wav(data)`: whether the bytes start like a WAV file (`RIFF` .. `WAVE`).
#[pyfunction]
fn is_wav(data: &Bound<'_, PyAny>) -> PyResult<bool> {
    let src = byte_src(data).ok_or_else(|| {
        PyValueError::new_err(format!("is_wav expects bytes, got {}", describe(data)))
    })?;
    Ok(wav::is_wav(src.as_slice()?))
}

fn u32_field(name: &str, value: i64) -> PyResult<u32> {
    u32::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be 0..=4294967295, got {value}")))
}

/// `wav_header(sample_rate, channels=1, data_size=None, riff_size=None)`: the 44-byte
/// header of 16-bit PCM. `data_size` None = unknown (streaming: 0xFFFFFFFF); `riff_size`
/// None = `36 + data_size`, or 0xFFFFFFFF when streaming.
#[pyfunction]
#[pyo3(signature = (sample_rate, channels = 1, data_size = None, riff_size = None))]
fn wav_header<'py>(
    py: Python<'py>,
    sample_rate: i64,
    channels: i64,
    data_size: Option<i64>,
    riff_size: Option<i64>,
) -> PyResult<Bound<'py, PyBytes>> {
    if !(1..=i64::from(u32::MAX)).contains(&sample_rate) {
        return Err(PyValueError::new_err(format!(
            "sample_rate must be 1..=4294967295 Hz, got {sample_rate}"
        )));
    }
    if !(1..=i64::from(u16::MAX)).contains(&channels) {
        return Err(PyValueError::new_err(format!(
            "channels must be 1..=65535, got {channels}"
        )));
    }
    if sample_rate * channels * 2 > i64::from(u32::MAX) {
        return Err(PyValueError::new_err(format!(
            "byte rate of {sample_rate} Hz x {channels} channel(s) x 2 bytes overflows the WAV \
             header's 32-bit field"
        )));
    }
    let data = match data_size {
        None => wav::STREAMING_SIZES[0],
        Some(n) => {
            let n = u32_field("data_size", n)?;
            if n % (channels as u32 * 2) != 0 && !wav::STREAMING_SIZES.contains(&n) {
                return Err(PyValueError::new_err(format!(
                    "data_size {n} is not a whole number of {channels}-channel 16-bit frames"
                )));
            }
            n
        }
    };
    let riff = match (riff_size, data_size) {
        (Some(n), _) => u32_field("riff_size", n)?,
        (None, None) => wav::STREAMING_SIZES[0],
        (None, Some(_)) => data.checked_add(36).ok_or_else(|| {
            PyValueError::new_err(format!(
                "data_size {data} exceeds the 4 GiB limit of a RIFF WAV file"
            ))
        })?,
    };
    let header = wav::pcm16_header(channels as u16, sample_rate as u32, riff, data);
    Ok(PyBytes::new(py, &header))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_wav, m)?)?;
    m.add_function(wrap_pyfunction!(write_wav, m)?)?;
    m.add_class::<WavInfo>()?;
    m.add_function(wrap_pyfunction!(wav_info, m)?)?;
    m.add_function(wrap_pyfunction!(is_wav, m)?)?;
    m.add_function(wrap_pyfunction!(wav_header, m)?)?;
    Ok(())
}
