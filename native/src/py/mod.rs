//! pyo3 bindings: thin wrappers that validate arguments, release the GIL
//! (`py.detach`) around every kernel, and turn `crate::error::Error` into
//! `ValueError`. A panic inside a kernel surfaces as pyo3's PanicException,
//! never as a crash.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

mod mel;
mod opus;
mod pcm;
mod protocol;
mod resample;
mod vad;
mod vowel;
mod wav;

impl From<crate::error::Error> for PyErr {
    fn from(e: crate::error::Error) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    pcm::register(m)?;
    wav::register(m)?;
    resample::register(m)?;
    opus::register(m)?;
    vowel::register(m)?;
    protocol::register(m)?;
    vad::register(m)?;
    mel::register(m)?;
    Ok(())
}
