//! `PlayoutBuffer`: the playout buffer with both halves held for Python, for callers that pull
//! audio themselves (file and callback sinks, tests). Device playback owns its own buffer,
//! whose reader lives in the audio callback.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;

use super::pcm::{extract_samples, with_s16le, Samples};
use crate::jitter::{playout_buffer, PlayoutConfig, PlayoutReader, PlayoutStats, PlayoutWriter};
use crate::pcm::S16_SCALE;

#[pyclass(name = "PlayoutStats", module = "geminilive._native", frozen, get_all)]
#[derive(Clone)]
pub(crate) struct PyPlayoutStats {
    /// Samples queued now.
    depth: u64,
    underruns: u64,
    played: u64,
    discarded: u64,
    silence: u64,
    threshold: u64,
    pushed: u64,
    sample_rate_hz: u32,
}

#[pymethods]
impl PyPlayoutStats {
    #[getter]
    fn depth_ms(&self) -> f64 {
        self.depth as f64 * 1000.0 / f64::from(self.sample_rate_hz)
    }

    #[getter]
    fn threshold_ms(&self) -> f64 {
        self.threshold as f64 * 1000.0 / f64::from(self.sample_rate_hz)
    }

    fn __repr__(&self) -> String {
        format!(
            "PlayoutStats(depth={}, underruns={}, played={}, discarded={}, silence={}, threshold={}, pushed={})",
            self.depth, self.underruns, self.played, self.discarded, self.silence, self.threshold, self.pushed
        )
    }
}

#[pyclass(name = "PlayoutBuffer", module = "geminilive._native")]
pub(crate) struct PyPlayoutBuffer {
    writer: PlayoutWriter,
    reader: PlayoutReader,
    sample_rate_hz: u32,
}

impl PyPlayoutBuffer {
    pub(crate) fn convert(stats: PlayoutStats, sample_rate_hz: u32) -> PyPlayoutStats {
        PyPlayoutStats {
            depth: stats.depth,
            underruns: stats.underruns,
            played: stats.played,
            discarded: stats.discarded,
            silence: stats.silence,
            threshold: stats.threshold,
            pushed: stats.pushed,
            sample_rate_hz,
        }
    }
}

fn ms_to_samples(ms: f64, rate: u32) -> usize {
    (ms.max(0.0) * f64::from(rate) / 1000.0).round() as usize
}

#[pymethods]
impl PyPlayoutBuffer {
    #[new]
    #[pyo3(signature = (sample_rate_hz, *, capacity_s=300.0, prebuffer_ms=40.0, max_prebuffer_ms=400.0, fade_ms=2.5))]
    fn new(
        sample_rate_hz: u32,
        capacity_s: f64,
        prebuffer_ms: f64,
        max_prebuffer_ms: f64,
        fade_ms: f64,
    ) -> PyResult<Self> {
        if sample_rate_hz == 0 {
            return Err(super::audio_format_error("sample_rate_hz must be positive"));
        }
        let config = PlayoutConfig {
            capacity: ms_to_samples(capacity_s * 1000.0, sample_rate_hz),
            start_threshold: ms_to_samples(prebuffer_ms, sample_rate_hz),
            max_threshold: ms_to_samples(max_prebuffer_ms, sample_rate_hz),
            fade: ms_to_samples(fade_ms, sample_rate_hz),
            ..PlayoutConfig::for_rate(sample_rate_hz)
        };
        let (writer, reader) = playout_buffer(config)?;
        Ok(Self {
            writer,
            reader,
            sample_rate_hz,
        })
    }

    /// Queue audio: 16-bit little-endian bytes, or a float32 / int16 array. All or nothing.
    fn push(&mut self, pcm: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(samples) = extract_samples(pcm) {
            return match &samples {
                Samples::F32(a) => Ok(self.writer.push(a.as_slice()?)?),
                Samples::I16(a) => {
                    let codes = a.as_slice()?;
                    Ok(self
                        .writer
                        .push_with(codes.len(), |i| f32::from(codes[i]) / S16_SCALE)?)
                }
            };
        }
        let writer = &mut self.writer;
        with_s16le(pcm, |bytes| {
            if bytes.len() % 2 != 0 {
                return Err(crate::pcm::PcmError::OddByteCount { len: bytes.len() }.into());
            }
            Ok(writer.push_with(bytes.len() / 2, |i| {
                f32::from(i16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])) / S16_SCALE
            })?)
        })
    }

    /// The next `frames` samples for the output (silence where nothing is playable).
    fn pull<'py>(&mut self, py: Python<'py>, frames: usize) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let out = PyArray1::<f32>::zeros(py, frames, false);
        // SAFETY: `out` was just created here and no other reference to its data exists.
        self.reader.pull(unsafe { out.as_slice_mut() }?);
        Ok(out)
    }

    fn end_of_turn(&mut self) {
        self.writer.end_of_turn();
    }

    /// Drop everything queued; returns the samples that will not be played in full.
    fn clear(&mut self) -> u64 {
        self.writer.clear()
    }

    /// Scale what plays (0..=1, ramped over about 10 ms); what is queued is kept.
    fn set_gain(&mut self, gain: f32) -> PyResult<()> {
        Ok(self.writer.set_gain(gain)?)
    }

    #[getter]
    fn gain(&self) -> f32 {
        self.writer.gain()
    }

    #[getter]
    fn free(&self) -> usize {
        self.writer.free()
    }

    #[getter]
    fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    #[getter]
    fn stats(&self) -> PyPlayoutStats {
        Self::convert(self.writer.stats(), self.sample_rate_hz)
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPlayoutBuffer>()?;
    m.add_class::<PyPlayoutStats>()
}
