//! Python bindings for [`crate::vad`]: the segmenter and the multi-stream core.
use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::vad::core::VadCore as Core;
use crate::vad::iterator::{Event, IteratorParams};
use crate::vad::segments::{segments_from_probabilities, SegmentParams};
use crate::vad::{Rate, FRAMES, HIDDEN};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(vad_segments, m)?)?;
    m.add_class::<VadCore>()?;
    Ok(())
}

/// Official `get_speech_timestamps` state machine over per-window probabilities.
/// Returns `[(start, end), ...]` in samples.
#[pyfunction]
#[pyo3(signature = (probs, audio_length_samples, sampling_rate, threshold, neg_threshold,
    min_speech_duration_ms, max_speech_duration_s, min_silence_duration_ms, speech_pad_ms,
    min_silence_at_max_speech, use_max_poss_sil_at_max_speech))]
#[allow(clippy::too_many_arguments)]
fn vad_segments(
    py: Python<'_>,
    probs: PyReadonlyArray1<'_, f64>,
    audio_length_samples: i64,
    sampling_rate: i64,
    threshold: f64,
    neg_threshold: Option<f64>,
    min_speech_duration_ms: f64,
    max_speech_duration_s: f64,
    min_silence_duration_ms: f64,
    speech_pad_ms: f64,
    min_silence_at_max_speech: f64,
    use_max_poss_sil_at_max_speech: bool,
) -> PyResult<Vec<(i64, i64)>> {
    let params = SegmentParams {
        rate: Rate::from_hz(sampling_rate)?,
        threshold,
        neg_threshold,
        min_speech_duration_ms,
        max_speech_duration_s,
        min_silence_duration_ms,
        speech_pad_ms,
        min_silence_at_max_speech_ms: min_silence_at_max_speech,
        use_max_poss_sil_at_max_speech,
    };
    let probs = probs.as_slice()?;
    Ok(py.detach(|| segments_from_probabilities(probs, audio_length_samples, &params))?)
}

/// Per-stream VAD state for many streams sharing one model (see `crate::vad::core`).
/// Not meant to be used directly: `echokit_fast.vad` wraps it.
#[pyclass(module = "echokit_fast._native")]
pub struct VadCore {
    core: Core,
}

fn event_tuple(e: Event) -> (bool, i64) {
    match e {
        Event::Start(s) => (true, s),
        Event::End(s) => (false, s),
    }
}

#[pymethods]
impl VadCore {
    #[new]
    fn new(sampling_rate: i64) -> PyResult<Self> {
        Ok(VadCore {
            core: Core::new(Rate::from_hz(sampling_rate)?),
        })
    }

    #[getter]
    fn sampling_rate(&self) -> u32 {
        self.core.rate().hz()
    }

    #[getter]
    fn window_size(&self) -> usize {
        self.core.rate().window()
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }

    #[pyo3(signature = (threshold, neg_threshold, min_silence_duration_ms, speech_pad_ms))]
    fn open(
        &mut self,
        threshold: f64,
        neg_threshold: Option<f64>,
        min_silence_duration_ms: f64,
        speech_pad_ms: f64,
    ) -> PyResult<usize> {
        Ok(self.core.open(&IteratorParams {
            rate: self.core.rate(),
            threshold,
            neg_threshold,
            min_silence_duration_ms,
            speech_pad_ms,
        })?)
    }

    fn close(&mut self, id: usize) -> PyResult<()> {
        Ok(self.core.close(id)?)
    }

    fn reset(&mut self, id: usize) -> PyResult<()> {
        Ok(self.core.reset(id)?)
    }

    /// Append float32 samples (1-D, C-contiguous).
    fn push(
        &mut self,
        py: Python<'_>,
        id: usize,
        samples: PyReadonlyArray1<'_, f32>,
    ) -> PyResult<()> {
        let s = samples.as_slice()?;
        let core = &mut self.core;
        Ok(py.detach(|| core.push(id, s))?)
    }

    /// Append PCM16 little-endian bytes.
    fn push_pcm16(&mut self, py: Python<'_>, id: usize, data: &[u8]) -> PyResult<()> {
        let core = &mut self.core;
        Ok(py.detach(|| core.push_pcm16(id, data))?)
    }

    fn ready_windows(&self, id: usize) -> PyResult<usize> {
        Ok(self.core.ready_windows(id)?)
    }

    fn pending_samples(&self, id: usize) -> PyResult<usize> {
        Ok(self.core.pending_samples(id)?)
    }

    /// `(triggered, current_sample)`.
    fn iterator_state(&self, id: usize) -> PyResult<(bool, i64)> {
        Ok(self.core.iterator_state(id)?)
    }

    /// `None`, or `(ids, frames [T, N, 4, k] float32, state [2, N, 128] float32)`.
    #[allow(clippy::type_complexity)]
    fn prepare<'py>(
        &mut self,
        py: Python<'py>,
        max_windows: usize,
    ) -> PyResult<Option<(Vec<usize>, Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let core = &mut self.core;
        let Some(batch) = py.detach(|| core.prepare(max_windows))? else {
            return Ok(None);
        };
        let n = batch.ids.len();
        let k = self.core.rate().frame();
        let frames = PyArray1::from_vec(py, batch.frames).reshape([batch.t, n, FRAMES, k])?;
        let state = PyArray1::from_vec(py, batch.state).reshape([2, n, HIDDEN])?;
        Ok(Some((batch.ids, frames.into_any(), state.into_any())))
    }

    /// Apply `probs` (`[T, N]`) and `state` (`[2, N, 128]`) to the prepared batch.
    /// Returns `[(id, window, is_start, sample), ...]`.
    fn commit(
        &mut self,
        py: Python<'_>,
        probs: PyReadonlyArrayDyn<'_, f32>,
        state: PyReadonlyArrayDyn<'_, f32>,
    ) -> PyResult<Vec<(usize, usize, bool, i64)>> {
        if !probs.is_c_contiguous() || !state.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "probs and state must be C-contiguous float32 arrays",
            ));
        }
        let p = probs.as_slice()?;
        let s = state.as_slice()?;
        let core = &mut self.core;
        let events = py.detach(|| core.commit(p, s))?;
        Ok(events
            .into_iter()
            .map(|e| {
                let (is_start, sample) = event_tuple(e.event);
                (e.id, e.window, is_start, sample)
            })
            .collect())
    }
}
