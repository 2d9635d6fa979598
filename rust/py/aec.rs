//! `EchoCanceller`: AEC3 for callers with their own audio I/O (a telephony bridge, a game
//! engine); geminilive's own devices wire it up themselves (`Capture(echo_reference=...)`).

use numpy::PyArray1;
use pyo3::prelude::*;

use super::audio_format_error;
use super::pcm::extract_samples;
use crate::aec::{AecError, EchoCanceller};

impl From<AecError> for PyErr {
    fn from(err: AecError) -> Self {
        audio_format_error(err.to_string())
    }
}

#[pyclass(name = "EchoCanceller", module = "geminilive._native")]
pub(crate) struct PyEchoCanceller {
    inner: EchoCanceller,
}

#[pymethods]
impl PyEchoCanceller {
    #[new]
    #[pyo3(signature = (sample_rate_hz=16000))]
    fn new(sample_rate_hz: u32) -> PyResult<Self> {
        Ok(Self {
            inner: EchoCanceller::new(sample_rate_hz)?,
        })
    }

    /// What the speaker played (float32 or int16 samples, mono, at the canceller's rate).
    fn render(&mut self, py: Python<'_>, samples: &Bound<'_, PyAny>) -> PyResult<()> {
        let samples = extract_samples(samples)?;
        let inner = &mut self.inner;
        samples.with_f32(|x| py.allow_threads(|| inner.render(x)))
    }

    /// What the microphone heard; returns the echo-free samples of every whole 10 ms frame so
    /// far (a partial frame waits for the next call).
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        samples: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let samples = extract_samples(samples)?;
        let inner = &mut self.inner;
        let mut out = Vec::new();
        samples.with_f32(|x| py.allow_threads(|| inner.process(x, &mut out)))?;
        Ok(PyArray1::from_vec(py, out))
    }

    #[getter]
    fn sample_rate_hz(&self) -> u32 {
        self.inner.sample_rate_hz()
    }

    /// Captured samples held back until their 10 ms frame is whole.
    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending()
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEchoCanceller>()
}
