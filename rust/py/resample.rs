//! `Resampler`: float32 (or int16) numpy arrays in, float32 arrays out.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;

use super::pcm::{extract_samples, layout, maybe_detach, Samples};
use super::GIL_RELEASE_MIN_SAMPLES;
use crate::resample::Resampler;

#[pyclass(name = "Resampler", module = "geminilive._native")]
pub(crate) struct PyResampler {
    inner: Resampler,
}

impl PyResampler {
    /// The hot path, a mono float32 frame small enough to keep the GIL for: read in place and
    /// written straight into a new array, skipping the borrow tracking and shape copies of the
    /// general path (half the cost of resampling 20 ms). `None` for anything else.
    fn process_frame<'py>(
        &mut self,
        py: Python<'py>,
        samples: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Ok(array) = samples.downcast::<PyArray1<f32>>() else {
            return Ok(None);
        };
        // SAFETY: the GIL is held until this returns, so no Python code can change or resize
        // the array meanwhile; `as_slice` fails unless it is contiguous.
        let Ok(src) = (unsafe { array.as_slice() }) else {
            return Ok(None);
        };
        if self.inner.channels() != 1 || src.len() >= GIL_RELEASE_MIN_SAMPLES {
            return Ok(None);
        }
        let len = self.inner.output_len_max(src.len());
        // SAFETY: every element is written by `process_into` (it writes exactly
        // `output_len_max` samples) before the array is returned; on error it is dropped.
        let out = unsafe { PyArray1::<f32>::new(py, len, false) };
        // SAFETY: `out` was just created here and no other reference to its data exists.
        let dst = unsafe { out.as_slice_mut() }?;
        let written = self.inner.process_into(src, dst)?;
        debug_assert_eq!(written, len);
        Ok(Some(out.into_any()))
    }

    /// A 1-D array for mono, 2-D (frames, channels) otherwise.
    fn wrap<'py>(&self, py: Python<'py>, samples: Vec<f32>) -> PyResult<Bound<'py, PyAny>> {
        let channels = self.inner.channels();
        if channels == 1 {
            return Ok(PyArray1::from_vec(py, samples).into_any());
        }
        let frames = samples.len() / channels;
        Ok(PyArray1::from_vec(py, samples)
            .reshape([frames, channels])?
            .into_any())
    }
}

#[pymethods]
impl PyResampler {
    #[new]
    #[pyo3(signature = (input_rate_hz, output_rate_hz, channels=1))]
    fn new(input_rate_hz: u32, output_rate_hz: u32, channels: usize) -> PyResult<Self> {
        Ok(Self {
            inner: Resampler::new(input_rate_hz, output_rate_hz, channels)?,
        })
    }

    fn process<'py>(
        &mut self,
        py: Python<'py>,
        samples: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some(out) = self.process_frame(py, samples)? {
            return Ok(out);
        }
        let samples = extract_samples(samples)?;
        let (len, _) = layout(&samples.shape(), Some(self.inner.channels()))?;
        let inner = &mut self.inner;
        if let (Samples::F32(array), 1) = (&samples, inner.channels()) {
            // The hot path (a mono float32 frame): straight into a new array, no temporaries.
            let src = array
                .as_slice()
                .map_err(|_| super::audio_format_error("not contiguous"))?;
            let out = PyArray1::<f32>::zeros(py, inner.output_len_max(len), false);
            {
                // SAFETY: `out` was just created here and no other reference to its data exists.
                let dst = unsafe { out.as_slice_mut() }?;
                maybe_detach(py, len, || inner.process_into(src, dst))?;
            }
            return Ok(out.into_any());
        }
        let result =
            samples.with_f32(|src| maybe_detach(py, src.len(), || inner.process(src)))??;
        self.wrap(py, result)
    }

    /// The outputs still owed for the input so far; resets for a new stream.
    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let tail = self.inner.flush();
        self.wrap(py, tail)
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    #[getter]
    fn input_rate_hz(&self) -> u32 {
        self.inner.input_rate()
    }

    #[getter]
    fn output_rate_hz(&self) -> u32 {
        self.inner.output_rate()
    }

    #[getter]
    fn channels(&self) -> usize {
        self.inner.channels()
    }

    #[getter]
    fn taps(&self) -> usize {
        self.inner.taps()
    }

    #[getter]
    fn delay_samples(&self) -> usize {
        self.inner.delay_samples().round() as usize
    }

    #[getter]
    fn delay_ms(&self) -> f64 {
        self.inner.delay_samples() * 1000.0 / f64::from(self.inner.output_rate())
    }

    fn __repr__(&self) -> String {
        format!(
            "Resampler({}, {}, channels={})",
            self.inner.input_rate(),
            self.inner.output_rate(),
            self.inner.channels()
        )
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyResampler>()
}
