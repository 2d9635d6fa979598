//! `InputChunker`: message boundaries for the user's audio over `crate::chunker`.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::audio_format_error;
use super::pcm::with_s16le;
use crate::chunker::{Chunker, ChunkerConfig};

#[pyclass(name = "InputChunker", module = "geminilive._native")]
pub(crate) struct PyInputChunker {
    inner: Chunker,
}

impl PyInputChunker {
    fn take_held<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let out = PyBytes::new(py, self.inner.held());
        self.inner.clear_held();
        out
    }
}

#[pymethods]
impl PyInputChunker {
    #[new]
    #[pyo3(signature = (sample_rate_hz=16000, chunk_ms=20, steady_chunk_ms=100, *, settle_ms=300, long_silence_ms=2000, pause_ms=200))]
    fn new(
        sample_rate_hz: u32,
        chunk_ms: u32,
        steady_chunk_ms: u32,
        settle_ms: u32,
        long_silence_ms: u32,
        pause_ms: u32,
    ) -> PyResult<Self> {
        let config = ChunkerConfig {
            settle_ms,
            long_silence_ms,
            pause_ms,
            ..ChunkerConfig::new(sample_rate_hz, chunk_ms, steady_chunk_ms)
        };
        Chunker::new(config)
            .map(|inner| Self { inner })
            .map_err(|e| audio_format_error(e.to_string()))
    }

    /// Take in 16-bit PCM; returns the message to send now (what was held, this included),
    /// or None while it is held.
    fn push<'py>(
        &mut self,
        py: Python<'py>,
        pcm: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let due = with_s16le(pcm, |bytes| Ok(self.inner.push(bytes)?))?;
        Ok(due.then(|| self.take_held(py)))
    }

    /// Everything held, now (frames stopped coming, the rate changes, the stream ends).
    fn take<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.take_held(py)
    }

    /// Milliseconds of audio held.
    #[getter]
    fn held_ms(&self) -> f64 {
        self.inner.held_ms()
    }

    /// How long the audio held now may grow before it goes (ms): `chunk_ms`, or
    /// `steady_chunk_ms` within steady speech or a long silence.
    #[getter]
    fn limit_ms(&self) -> u32 {
        self.inner.limit_ms()
    }

    #[getter]
    fn steady(&self) -> bool {
        self.inner.steady()
    }

    #[getter]
    fn sample_rate_hz(&self) -> u32 {
        self.inner.config().sample_rate_hz
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyInputChunker>()
}
