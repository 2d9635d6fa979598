//! `VoiceActivityDetector`: the emulator's server-side VAD and the client's barge-in detector.

use pyo3::prelude::*;

use super::audio_format_error;
use super::pcm::{extract_samples, with_s16le};
use crate::pcm::{s16le_to_f32_into, PcmError};
use crate::vad::{Vad, VadConfig, VadEvent};

#[pyclass(name = "VoiceActivityDetector", module = "geminilive._native")]
pub(crate) struct PyVoiceActivityDetector {
    inner: Vad,
}

fn high(sensitivity: &str, what: &str) -> PyResult<bool> {
    match sensitivity.to_ascii_uppercase().as_str() {
        "HIGH" => Ok(true),
        "LOW" => Ok(false),
        _ => Err(audio_format_error(format!(
            "{what} must be 'HIGH' or 'LOW', got {sensitivity:?}"
        ))),
    }
}

fn to_tuples(events: Vec<VadEvent>) -> Vec<(&'static str, u64)> {
    events
        .into_iter()
        .map(|e| match e {
            VadEvent::Start(at) => ("start", at),
            VadEvent::End(at) => ("end", at),
        })
        .collect()
}

#[pymethods]
impl PyVoiceActivityDetector {
    #[new]
    #[pyo3(signature = (sample_rate_hz=16000, *, start_sensitivity="HIGH", end_sensitivity="HIGH", prefix_padding_ms=20, silence_duration_ms=500))]
    fn new(
        sample_rate_hz: u32,
        start_sensitivity: &str,
        end_sensitivity: &str,
        prefix_padding_ms: u32,
        silence_duration_ms: u32,
    ) -> PyResult<Self> {
        if !(8_000..=192_000).contains(&sample_rate_hz) {
            return Err(audio_format_error(format!(
                "sample rate {sample_rate_hz} Hz is not supported"
            )));
        }
        let config = VadConfig::new(
            sample_rate_hz,
            high(start_sensitivity, "start_sensitivity")?,
            high(end_sensitivity, "end_sensitivity")?,
            prefix_padding_ms,
            silence_duration_ms,
        );
        Ok(Self {
            inner: Vad::new(config),
        })
    }

    /// Feed audio; returns `("start" | "end", sample_index)` for each event it completes.
    fn process(&mut self, samples: &Bound<'_, PyAny>) -> PyResult<Vec<(&'static str, u64)>> {
        if let Ok(samples) = extract_samples(samples) {
            let inner = &mut self.inner;
            return Ok(to_tuples(samples.with_f32(|x| inner.process(x))?));
        }
        let inner = &mut self.inner;
        with_s16le(samples, |bytes| {
            if bytes.len() % 2 != 0 {
                return Err(PcmError::OddByteCount { len: bytes.len() }.into());
            }
            let mut floats = vec![0f32; bytes.len() / 2];
            s16le_to_f32_into(bytes, &mut floats)?;
            Ok(to_tuples(inner.process(&floats)))
        })
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    #[getter]
    fn speaking(&self) -> bool {
        self.inner.speaking()
    }

    /// Samples consumed so far.
    #[getter]
    fn position(&self) -> u64 {
        self.inner.position()
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVoiceActivityDetector>()
}
