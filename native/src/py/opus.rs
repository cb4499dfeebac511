//! Python bindings for [`crate::opus`].
use std::borrow::Cow;
use std::sync::Mutex;

use numpy::{PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::opus::{Decoder, Encoder};

/// A 1-D PCM argument: float32 or int16 samples, borrowed when contiguous.
pub(super) enum Pcm<'a> {
    F32(Cow<'a, [f32]>),
    I16(Cow<'a, [i16]>),
}

/// Keeps the numpy borrows alive while the slices are used.
pub(super) enum PcmArg<'py> {
    F32(numpy::PyReadonlyArray1<'py, f32>),
    I16(numpy::PyReadonlyArray1<'py, i16>),
}

impl PcmArg<'_> {
    pub(super) fn pcm(&self) -> Pcm<'_> {
        match self {
            PcmArg::F32(a) => Pcm::F32(match a.as_slice() {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(a.as_array().to_vec()),
            }),
            PcmArg::I16(a) => Pcm::I16(match a.as_slice() {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(a.as_array().to_vec()),
            }),
        }
    }
}

/// Accept a 1-D numpy array of float32 or int16; anything else is a
/// ValueError naming what was passed.
pub(super) fn extract_pcm<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<PcmArg<'py>> {
    let Ok(arr) = obj.cast::<PyUntypedArray>() else {
        let ty = obj.get_type().name()?;
        return Err(PyValueError::new_err(format!(
            "{what} must be a 1-D numpy array of float32 or int16, got {ty}"
        )));
    };
    if arr.ndim() != 1 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a 1-D array (mono samples), got shape {:?}",
            arr.shape()
        )));
    }
    let borrow_err =
        |e: numpy::BorrowError| PyValueError::new_err(format!("{what} cannot be borrowed: {e}"));
    if let Ok(a) = obj.cast::<PyArray1<f32>>() {
        return Ok(PcmArg::F32(a.try_readonly().map_err(borrow_err)?));
    }
    if let Ok(a) = obj.cast::<PyArray1<i16>>() {
        return Ok(PcmArg::I16(a.try_readonly().map_err(borrow_err)?));
    }
    let dtype = arr.dtype();
    Err(PyValueError::new_err(format!(
        "{what} must have dtype float32 or int16, got {}",
        dtype.str()?
    )))
}

/// Bytes-like argument: bytes are borrowed (immutable), bytearray copied.
fn extract_packet<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    let ty = obj.get_type().name()?;
    Err(PyValueError::new_err(format!(
        "packet must be bytes or bytearray, got {ty}"
    )))
}

fn packets_to_py<'py>(py: Python<'py>, packets: Vec<Vec<u8>>) -> Vec<Bound<'py, PyBytes>> {
    packets.iter().map(|p| PyBytes::new(py, p)).collect()
}

fn pairs_to_py<'py>(py: Python<'py>, pairs: Vec<(Vec<u8>, u8)>) -> Vec<(Bound<'py, PyBytes>, u8)> {
    pairs
        .iter()
        .map(|(p, v)| (PyBytes::new(py, p), *v))
        .collect()
}

/// Streaming Opus encoder (mono, VOIP, libopus defaults, packets <= 1280
/// bytes), one packet per whole frame.
#[pyclass(module = "echokit_fast._native", name = "OpusEncoder")]
pub struct PyOpusEncoder {
    // Mutex only to make the class Sync; methods take &mut self and use
    // get_mut, so it is never locked.
    inner: Mutex<Encoder>,
}

impl PyOpusEncoder {
    fn enc(&mut self) -> &mut Encoder {
        self.inner.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyOpusEncoder {
    #[new]
    #[pyo3(signature = (sample_rate = 16000, frame_ms = 120.0, complexity = None))]
    fn new(sample_rate: i64, frame_ms: f64, complexity: Option<i64>) -> PyResult<Self> {
        let rate = u32::try_from(sample_rate).map_err(|_| {
            PyValueError::new_err(format!(
                "sample_rate must be one of 8000, 12000, 16000, 24000, 48000 (Opus rates), got {sample_rate}"
            ))
        })?;
        let mut enc = Encoder::new(rate, frame_ms)?;
        if let Some(c) = complexity {
            enc.set_complexity(c)?;
        }
        Ok(Self {
            inner: Mutex::new(enc),
        })
    }

    #[getter]
    fn frame_size(&mut self) -> usize {
        self.enc().frame_size()
    }

    #[getter]
    fn complexity(&mut self) -> PyResult<i64> {
        Ok(self.enc().complexity()?)
    }

    #[getter]
    fn pending(&mut self) -> usize {
        self.enc().pending()
    }

    #[getter]
    fn sample_rate(&mut self) -> u32 {
        self.enc().sample_rate()
    }

    fn push<'py>(
        &mut self,
        py: Python<'py>,
        pcm: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let arg = extract_pcm(pcm, "pcm")?;
        let pcm = arg.pcm();
        let enc = self.enc();
        let packets = py.detach(|| match pcm {
            Pcm::F32(s) => enc.push_f32(&s),
            Pcm::I16(s) => enc.push_i16(&s),
        })?;
        Ok(packets_to_py(py, packets))
    }

    fn push_with_vowels<'py>(
        &mut self,
        py: Python<'py>,
        pcm: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, u8)>> {
        let arg = extract_pcm(pcm, "pcm")?;
        let pcm = arg.pcm();
        let enc = self.enc();
        let pairs = py.detach(|| match pcm {
            Pcm::F32(s) => enc.push_f32_with_vowels(&s),
            Pcm::I16(s) => enc.push_i16_with_vowels(&s),
        })?;
        Ok(pairs_to_py(py, pairs))
    }

    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let enc = self.enc();
        let packets = py.detach(|| enc.flush())?;
        Ok(packets_to_py(py, packets))
    }

    fn flush_with_vowels<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<Vec<(Bound<'py, PyBytes>, u8)>> {
        let enc = self.enc();
        let pairs = py.detach(|| enc.flush_with_vowels())?;
        Ok(pairs_to_py(py, pairs))
    }

    fn reset(&mut self) -> PyResult<()> {
        Ok(self.enc().reset()?)
    }
}

/// Mono Opus decoder (packets of at most 120 ms).
#[pyclass(module = "echokit_fast._native", name = "OpusDecoder")]
pub struct PyOpusDecoder {
    inner: Mutex<Decoder>,
}

impl PyOpusDecoder {
    fn dec(&mut self) -> &mut Decoder {
        self.inner.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyOpusDecoder {
    #[new]
    #[pyo3(signature = (sample_rate = 16000))]
    fn new(sample_rate: i64) -> PyResult<Self> {
        let rate = u32::try_from(sample_rate).map_err(|_| {
            PyValueError::new_err(format!(
                "sample_rate must be one of 8000, 12000, 16000, 24000, 48000 (Opus rates), got {sample_rate}"
            ))
        })?;
        Ok(Self {
            inner: Mutex::new(Decoder::new(rate)?),
        })
    }

    #[getter]
    fn sample_rate(&mut self) -> u32 {
        self.dec().sample_rate()
    }

    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        packet: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let packet = extract_packet(packet)?;
        let dec = self.dec();
        let out = py.detach(|| dec.decode_f32(&packet))?;
        Ok(PyArray1::from_vec(py, out))
    }

    fn reset(&mut self) -> PyResult<()> {
        Ok(self.dec().reset()?)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyOpusEncoder>()?;
    m.add_class::<PyOpusDecoder>()?;
    Ok(())
}
