//! Python bindings for [`crate::pcm`].
//!
//! Inputs are read in place (a `bytes` object's buffer, or a C-contiguous
//! NumPy array as a slice); outputs are written straight into a freshly
//! allocated NumPy array / `bytes` object. The GIL is released around every
//! kernel. The public wrappers in `echokit_fast/audio.py` make arrays
//! contiguous and convert float64 before calling in here.
use numpy::{
    PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::pcm;

/// Something holding little-endian bytes: `bytes`, or a 1-D uint8 array (the
/// Python wrapper passes bytearray/memoryview as `np.frombuffer(..., uint8)`,
/// a zero-copy view).
pub(crate) enum ByteSrc<'py> {
    Bytes(Bound<'py, PyBytes>),
    Array(PyReadonlyArray1<'py, u8>),
}

impl ByteSrc<'_> {
    pub(crate) fn as_slice(&self) -> PyResult<&[u8]> {
        match self {
            ByteSrc::Bytes(b) => Ok(b.as_bytes()),
            ByteSrc::Array(a) => a
                .as_slice()
                .map_err(|_| PyValueError::new_err("uint8 array must be contiguous")),
        }
    }
}

/// `bytes` or a 1-D uint8 array, if `obj` is one.
pub(crate) fn byte_src<'py>(obj: &Bound<'py, PyAny>) -> Option<ByteSrc<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Some(ByteSrc::Bytes(b.clone()));
    }
    if let Ok(a) = obj.cast::<PyArray1<u8>>() {
        return a.try_readonly().ok().map(ByteSrc::Array);
    }
    None
}

/// Describes an object for error messages: `ndarray(dtype=int32, ndim=2)` or the type name.
pub(crate) fn describe(obj: &Bound<'_, PyAny>) -> String {
    if let Ok(a) = obj.cast::<numpy::PyUntypedArray>() {
        let dtype = a
            .dtype()
            .str()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "?".into());
        return format!("ndarray(dtype={dtype}, ndim={})", a.ndim());
    }
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A fresh, uninitialised 1-D float32 array of `n` samples and a mutable slice over it.
///
/// Safety of the slice: the array was just created by us, is C-contiguous, and
/// no Python code can see it before we return it; every element is written by
/// the kernel before that (the kernels fill the whole output slice).
pub(crate) fn new_f32_1d(py: Python<'_>, n: usize) -> (Bound<'_, PyArray1<f32>>, &mut [f32]) {
    let arr = unsafe { PyArray1::<f32>::new(py, n, false) };
    let ptr = arr.data();
    // SAFETY: see above; `ptr` is valid for `n` f32 (numpy allocates >= 1 byte even for n == 0).
    let dst = unsafe { std::slice::from_raw_parts_mut(ptr, n) };
    (arr, dst)
}

/// `pcm16_to_float(data)`: s16le `bytes` (or a uint8 array view of bytes) or a
/// 1-D int16 array -> float32 array, `value / 32768`.
#[pyfunction]
fn pcm16_to_float<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    if let Some(src) = byte_src(data) {
        let src = src.as_slice()?;
        if !src.len().is_multiple_of(2) {
            // Same message as the kernel, without allocating first.
            return Err(pcm::pcm16le_bytes_to_f32(src, &mut []).unwrap_err().into());
        }
        let (out, dst) = new_f32_1d(py, src.len() / 2);
        py.detach(|| pcm::pcm16le_bytes_to_f32(src, dst))?;
        return Ok(out);
    }
    if let Ok(a) = data.cast::<PyArrayDyn<i16>>() {
        if a.ndim() != 1 {
            return Err(PyValueError::new_err(format!(
                "pcm16_to_float expects a 1-D int16 array, got shape {:?}",
                a.shape()
            )));
        }
        let ro = a.try_readonly()?;
        let src = ro
            .as_slice()
            .map_err(|_| PyValueError::new_err("int16 array must be contiguous"))?;
        let (out, dst) = new_f32_1d(py, src.len());
        py.detach(|| pcm::i16_to_f32(src, dst))?;
        return Ok(out);
    }
    Err(PyValueError::new_err(format!(
        "pcm16_to_float expects bytes (s16le) or a 1-D int16 array, got {}",
        describe(data)
    )))
}

/// `float_to_pcm16(x)`: 1-D float32 array -> s16le `bytes`.
#[pyfunction]
fn float_to_pcm16<'py>(py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let a = x.cast::<PyArrayDyn<f32>>().map_err(|_| {
        PyValueError::new_err(format!(
            "float_to_pcm16 expects a 1-D float32 array, got {}",
            describe(x)
        ))
    })?;
    if a.ndim() != 1 {
        return Err(PyValueError::new_err(format!(
            "float_to_pcm16 expects a 1-D float32 array, got shape {:?}",
            a.shape()
        )));
    }
    let ro = a.try_readonly()?;
    let src = ro
        .as_slice()
        .map_err(|_| PyValueError::new_err("float32 array must be contiguous"))?;
    PyBytes::new_with(py, src.len() * 2, |dst| {
        py.detach(|| pcm::f32_to_pcm16le_bytes(src, dst))?;
        Ok(())
    })
}

/// Interleaved samples of one supported dtype, read in place.
enum MonoSrc<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    I16(PyReadonlyArrayDyn<'py, i16>),
}

/// `to_mono(x, channels)`: 1-D interleaved or 2-D (frames, channels) float32 or
/// int16 -> float32 average of the channels (int16 scaled by 1/32768).
#[pyfunction]
fn to_mono<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    channels: i64,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let src = if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
        MonoSrc::F32(a.try_readonly()?)
    } else if let Ok(a) = x.cast::<PyArrayDyn<i16>>() {
        MonoSrc::I16(a.try_readonly()?)
    } else {
        return Err(PyValueError::new_err(format!(
            "to_mono expects a float32 or int16 array, got {}",
            describe(x)
        )));
    };
    if channels < 1 {
        return Err(PyValueError::new_err(format!(
            "channels must be >= 1, got {channels}"
        )));
    }
    let channels = usize::try_from(channels)
        .map_err(|_| PyValueError::new_err(format!("channels too large: {channels}")))?;
    let (shape, c_contig) = match &src {
        MonoSrc::F32(a) => (a.shape().to_vec(), a.is_c_contiguous()),
        MonoSrc::I16(a) => (a.shape().to_vec(), a.is_c_contiguous()),
    };
    match shape.len() {
        1 => {}
        2 => {
            if shape[1] != channels {
                return Err(PyValueError::new_err(format!(
                    "to_mono: 2-D input has shape {shape:?} (frames, channels) but channels={channels}"
                )));
            }
        }
        n => {
            return Err(PyValueError::new_err(format!(
                "to_mono expects a 1-D interleaved or 2-D (frames, channels) array, got {n}-D shape {shape:?}"
            )))
        }
    }
    if !c_contig {
        return Err(PyValueError::new_err(
            "to_mono needs a C-contiguous array (use np.ascontiguousarray)",
        ));
    }
    let len: usize = shape.iter().product();
    let frames = pcm::frames_of(len, channels)?;
    let (out, dst) = new_f32_1d(py, frames);
    match &src {
        MonoSrc::F32(a) => {
            let s = a
                .as_slice()
                .map_err(|_| PyValueError::new_err("array must be contiguous"))?;
            py.detach(|| pcm::to_mono_f32(s, channels, dst))?;
        }
        MonoSrc::I16(a) => {
            let s = a
                .as_slice()
                .map_err(|_| PyValueError::new_err("array must be contiguous"))?;
            py.detach(|| pcm::to_mono_i16(s, channels, dst))?;
        }
    }
    Ok(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pcm16_to_float, m)?)?;
    m.add_function(wrap_pyfunction!(float_to_pcm16, m)?)?;
    m.add_function(wrap_pyfunction!(to_mono, m)?)?;
    Ok(())
}
