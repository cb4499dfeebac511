//! Python bindings for [`crate::resample`].
//!
//! Input: a 1-D NumPy array, float32 (read in place when contiguous), float64
//! or int16 (converted; int16 scaled by 1/32768). Output: a new float32 array
//! built from the kernel's `Vec` without a copy. The GIL is released around
//! the kernel; the streaming state sits behind a mutex, so one `Resampler`
//! shared by several threads serialises their calls instead of racing.
use std::sync::{Mutex, MutexGuard};

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBool;

use crate::resample as kernel;

/// A sample rate argument: an integer (Python or NumPy), range checked by the kernel.
fn rate_arg(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let bad = || {
        let shown = obj
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "?".into());
        PyValueError::new_err(format!(
            "{name} must be an integer number of Hz between {} and {}, got {shown}",
            kernel::MIN_RATE,
            kernel::MAX_RATE
        ))
    };
    if obj.is_instance_of::<PyBool>() {
        return Err(bad());
    }
    let rate = obj.extract::<i64>().map_err(|_| bad())?;
    kernel::check_rate(name, rate)?;
    Ok(rate)
}

/// Input samples: a contiguous float32 array read in place, or a converted copy.
enum Samples<'py> {
    Borrowed(PyReadonlyArray1<'py, f32>),
    Owned(Vec<f32>),
}

impl Samples<'_> {
    fn as_slice(&self) -> &[f32] {
        match self {
            // Contiguity was checked when the variant was chosen.
            Samples::Borrowed(a) => a.as_slice().unwrap_or(&[]),
            Samples::Owned(v) => v,
        }
    }
}

/// The samples of a 1-D float32/float64/int16 array.
fn samples<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Samples<'py>> {
    let Ok(arr) = obj.cast::<PyUntypedArray>() else {
        let ty = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(PyValueError::new_err(format!(
            "{what} must be a 1-D numpy array of float32 (or float64/int16), got {ty}"
        )));
    };
    if arr.ndim() != 1 {
        let dims: Vec<String> = arr.shape().iter().map(|d| d.to_string()).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        return Err(PyValueError::new_err(format!(
            "{what} must be 1-D (mono audio only), got an array of shape {shape}; \
             mix channels down first (e.g. with to_mono)"
        )));
    }
    if let Ok(a) = obj.cast::<PyArray1<f32>>() {
        let a = a
            .try_readonly()
            .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))?;
        return Ok(if a.as_slice().is_ok() {
            Samples::Borrowed(a)
        } else {
            Samples::Owned(a.as_array().iter().copied().collect())
        });
    }
    if let Ok(a) = obj.cast::<PyArray1<f64>>() {
        let a = a.readonly();
        return Ok(Samples::Owned(
            a.as_array().iter().map(|&v| v as f32).collect(),
        ));
    }
    if let Ok(a) = obj.cast::<PyArray1<i16>>() {
        let a = a.readonly();
        let scale = 1.0 / 32768.0;
        return Ok(Samples::Owned(
            a.as_array().iter().map(|&v| v as f32 * scale).collect(),
        ));
    }
    let dtype = arr
        .dtype()
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(PyValueError::new_err(format!(
        "{what} must have dtype float32, float64 or int16, got {dtype}"
    )))
}

/// Streaming mono resampler (polyphase windowed-sinc FIR).
///
/// Output sample n is the input at time n * from_rate / to_rate, so a stream's
/// output is aligned with its input. `process` emits every output whose filter
/// window is complete and holds back the rest (`delay` output samples at most);
/// `flush` emits them (the input continued with silence) and resets, so the
/// concatenation of all outputs of a stream equals `resample()` of its whole
/// input, sample for sample, whatever the chunk sizes, and has
/// round(n_in * to_rate / from_rate) samples.
#[pyclass(module = "echokit_fast._native", name = "Resampler", frozen, subclass)]
pub struct PyResampler {
    from_rate: u32,
    to_rate: u32,
    delay: usize,
    inner: Mutex<kernel::Resampler>,
}

impl PyResampler {
    fn lock(&self) -> MutexGuard<'_, kernel::Resampler> {
        // The kernel never panics mid-update on valid input; recover anyway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyResampler {
    #[new]
    fn new(from_rate: &Bound<'_, PyAny>, to_rate: &Bound<'_, PyAny>) -> PyResult<Self> {
        let from = rate_arg("from_rate", from_rate)?;
        let to = rate_arg("to_rate", to_rate)?;
        let r = kernel::Resampler::new(from, to)?;
        Ok(PyResampler {
            from_rate: r.from_rate(),
            to_rate: r.to_rate(),
            delay: r.delay(),
            inner: Mutex::new(r),
        })
    }

    /// Feed a chunk (any length, 0 included); returns the outputs it completes.
    fn process<'py>(
        &self,
        py: Python<'py>,
        chunk: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let x = samples(chunk, "chunk")?;
        let x = x.as_slice();
        let out = py.detach(|| self.lock().process(x));
        Ok(PyArray1::from_vec(py, out))
    }

    /// End the stream: emit the held-back outputs, then reset.
    fn flush<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let out = py.detach(|| self.lock().flush());
        PyArray1::from_vec(py, out)
    }

    /// Drop the stream's state without emitting anything.
    fn reset(&self) {
        self.lock().reset();
    }

    /// Latency in output samples: outputs held back until later input arrives.
    #[getter]
    fn delay(&self) -> usize {
        self.delay
    }

    #[getter(from_rate)]
    fn get_from_rate(&self) -> u32 {
        self.from_rate
    }

    #[getter(to_rate)]
    fn get_to_rate(&self) -> u32 {
        self.to_rate
    }

    fn __repr__(&self) -> String {
        format!(
            "Resampler(from_rate={}, to_rate={})",
            self.from_rate, self.to_rate
        )
    }
}

/// One-shot resampling of mono audio, aligned with the input and
/// round(len(x) * to_rate / from_rate) samples long (a copy for equal rates).
#[pyfunction]
#[pyo3(name = "resample")]
fn resample_py<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    from_rate: &Bound<'py, PyAny>,
    to_rate: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let from = rate_arg("from_rate", from_rate)?;
    let to = rate_arg("to_rate", to_rate)?;
    let x = samples(x, "x")?;
    let x = x.as_slice();
    let out = py.detach(|| kernel::resample(x, from, to))?;
    Ok(PyArray1::from_vec(py, out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyResampler>()?;
    m.add_function(wrap_pyfunction!(resample_py, m)?)?;
    Ok(())
}
