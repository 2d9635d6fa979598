//! `CaptureStream`, `PlaybackStream`, `list_devices`: thin handles over `crate::device`.

use std::sync::Mutex;
use std::time::Duration;

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::audio_device_error;
use super::pcm::{extract_samples, with_s16le, Samples};
use crate::device::{
    self, loop_wake, CaptureConfig, CaptureStream, DeviceError, EchoReference, FrameWaiter,
    PlaybackConfig, PlaybackStream,
};
use crate::pcm::{s16le_to_f32_into, PcmError};

impl From<DeviceError> for PyErr {
    fn from(err: DeviceError) -> Self {
        audio_device_error(err.to_string())
    }
}

#[pyfunction]
fn list_devices(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let devices = py.allow_threads(device::list_devices)?;
    devices
        .into_iter()
        .map(|d| {
            let dict = PyDict::new(py);
            dict.set_item("host", d.host)?;
            dict.set_item("id", d.id)?;
            dict.set_item("name", d.name)?;
            dict.set_item("is_default_input", d.is_default_input)?;
            dict.set_item("is_default_output", d.is_default_output)?;
            dict.set_item("input_channels", d.input_channels)?;
            dict.set_item("output_channels", d.output_channels)?;
            dict.set_item("input_rates", d.input_rates)?;
            dict.set_item("output_rates", d.output_rates)?;
            dict.set_item("default_input_rate", d.default_input_rate)?;
            dict.set_item("default_output_rate", d.default_output_rate)?;
            Ok(dict)
        })
        .collect()
}

/// What a playback stream plays, handed to one capture stream for its echo canceller.
#[pyclass(name = "EchoReference", module = "geminilive._native")]
pub(crate) struct PyEchoReference {
    inner: Mutex<Option<EchoReference>>,
}

#[pyclass(name = "CaptureStream", module = "geminilive._native")]
pub(crate) struct PyCaptureStream {
    inner: CaptureStream,
    #[cfg_attr(not(unix), allow(dead_code))] // Unix only: the socket behind fileno()
    wake: loop_wake::End,
    waiter: FrameWaiter,
}

#[pymethods]
impl PyCaptureStream {
    #[new]
    #[pyo3(signature = (device=None, *, sample_rate_hz=16000, frame_ms=20, period_ms=10, clock_s=0.0, max_queued_frames=500, echo_reference=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        device: Option<String>,
        sample_rate_hz: u32,
        frame_ms: u32,
        period_ms: u32,
        clock_s: f64,
        max_queued_frames: usize,
        echo_reference: Option<&PyEchoReference>,
    ) -> PyResult<Self> {
        let echo = match echo_reference {
            Some(reference) => {
                let taken = reference.inner.lock().ok().and_then(|mut slot| slot.take());
                Some(taken.ok_or_else(|| {
                    audio_device_error(String::from("this echo reference is already in use"))
                })?)
            }
            None => None,
        };
        let config = CaptureConfig {
            device,
            sample_rate_hz,
            frame_samples: (sample_rate_hz * frame_ms / 1000) as usize,
            period_ms,
            max_queued_frames,
        };
        let (inner, wake) = py.allow_threads(|| CaptureStream::open(&config, clock_s, echo))?;
        let waiter = inner.waiter();
        Ok(Self {
            inner,
            wake,
            waiter,
        })
    }

    /// Wait (without the GIL) up to `timeout_s` for frames; true if some are queued. For a
    /// loop that cannot watch `fileno()`: a thread waits here and wakes the loop.
    fn wait_for_frames(&self, py: Python<'_>, timeout_s: f64) -> bool {
        let waiter = &self.waiter;
        py.allow_threads(|| waiter.wait(Duration::from_secs_f64(timeout_s.max(0.0))))
    }

    /// Make `wait_for_frames` return at once, now and from now on (before `close`).
    fn release_waiters(&self) {
        self.waiter.release();
    }

    /// The socket the worker writes a byte to per frame (for `loop.add_reader`).
    #[cfg(unix)]
    fn fileno(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.wake.as_raw_fd()
    }

    /// Read pending wake-up bytes; returns how many there were.
    #[cfg(unix)]
    fn drain_wakeups(&mut self) -> usize {
        use std::io::Read;
        let mut buf = [0u8; 256];
        let mut total = 0;
        while let Ok(n) = self.wake.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }

    /// Frames captured so far: (samples, capture time on the clock given, first index).
    fn take_frames<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyArray1<f32>>, f64, u64)> {
        self.inner
            .take_frames()
            .into_iter()
            .map(|f| (PyArray1::from_vec(py, f.samples), f.timestamp_s, f.index))
            .collect()
    }

    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let dict = PyDict::new(py);
        dict.set_item("callbacks", s.callbacks)?;
        dict.set_item("overruns", s.overruns)?;
        dict.set_item("dropped_frames", s.dropped_frames)?;
        dict.set_item("frames", s.frames)?;
        dict.set_item("xruns", s.xruns)?;
        dict.set_item("stream_errors", s.stream_errors)?;
        Ok(dict)
    }

    #[getter]
    fn first_stream_error(&self) -> Option<String> {
        self.inner.first_stream_error()
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error()
    }

    #[getter]
    fn device_rate_hz(&self) -> u32 {
        self.inner.device_rate
    }

    #[getter]
    fn device_channels(&self) -> u16 {
        self.inner.device_channels
    }

    fn close(&mut self, py: Python<'_>) {
        let inner = &mut self.inner;
        py.allow_threads(|| inner.close());
    }
}

#[pyclass(name = "PlaybackStream", module = "geminilive._native")]
pub(crate) struct PyPlaybackStream {
    inner: PlaybackStream,
}

#[pymethods]
impl PyPlaybackStream {
    #[new]
    #[pyo3(signature = (device=None, *, source_rate_hz=24000, period_ms=10, prebuffer_ms=40, clock_s=0.0))]
    fn new(
        py: Python<'_>,
        device: Option<String>,
        source_rate_hz: u32,
        period_ms: u32,
        prebuffer_ms: u32,
        clock_s: f64,
    ) -> PyResult<Self> {
        let config = PlaybackConfig {
            device,
            source_rate_hz,
            period_ms,
            prebuffer_ms,
        };
        Ok(Self {
            inner: py.allow_threads(|| PlaybackStream::open(&config, clock_s))?,
        })
    }

    /// Queue audio at the source rate: 16-bit LE bytes or a float32/int16 array. All or nothing.
    fn push(&mut self, py: Python<'_>, pcm: &Bound<'_, PyAny>) -> PyResult<()> {
        let inner = &mut self.inner;
        if let Ok(samples) = extract_samples(pcm) {
            if let Samples::F32(a) = &samples {
                let src = a.as_slice()?;
                return Ok(py.allow_threads(|| inner.push(src))?);
            }
            return samples
                .with_f32(|src| inner.push(src))?
                .map_err(PyErr::from);
        }
        with_s16le(pcm, |bytes| {
            if bytes.len() % 2 != 0 {
                return Err(PcmError::OddByteCount { len: bytes.len() }.into());
            }
            let mut floats = vec![0f32; bytes.len() / 2];
            s16le_to_f32_into(bytes, &mut floats)?;
            Ok(py.allow_threads(|| inner.push(&floats))?)
        })
    }

    fn end_of_turn(&mut self) {
        self.inner.end_of_turn();
    }

    /// Silence within one device period; returns the device samples dropped.
    fn clear(&mut self) -> u64 {
        self.inner.clear()
    }

    /// Scale what plays (0..=1, ramped over about 10 ms); what is queued is kept.
    fn set_gain(&mut self, gain: f32) -> PyResult<()> {
        Ok(self.inner.set_gain(gain)?)
    }

    #[getter]
    fn gain(&self) -> f32 {
        self.inner.gain()
    }

    #[getter]
    fn stats(&self) -> super::jitter::PyPlayoutStats {
        super::jitter::PyPlayoutBuffer::convert(self.inner.stats(), self.inner.device_rate)
    }

    #[getter]
    fn callbacks(&self) -> u64 {
        self.inner.callbacks()
    }

    /// What this stream plays from now on, for one capture stream's echo canceller
    /// (`CaptureStream(echo_reference=...)`); an error once taken.
    fn echo_reference(&mut self) -> PyResult<PyEchoReference> {
        let reference = self.inner.echo_reference().ok_or_else(|| {
            audio_device_error(String::from(
                "this playback stream's echo reference was taken already",
            ))
        })?;
        Ok(PyEchoReference {
            inner: Mutex::new(Some(reference)),
        })
    }

    #[getter]
    fn xruns(&self) -> u64 {
        self.inner.xruns()
    }

    #[getter]
    fn stream_errors(&self) -> u64 {
        self.inner.stream_errors()
    }

    #[getter]
    fn first_stream_error(&self) -> Option<String> {
        self.inner.first_stream_error()
    }

    /// When the latest device callback ran, on the clock given at open.
    #[getter]
    fn last_callback_s(&self) -> f64 {
        self.inner.last_callback_s()
    }

    #[getter]
    fn error(&self) -> Option<String> {
        self.inner.error()
    }

    #[getter]
    fn device_rate_hz(&self) -> u32 {
        self.inner.device_rate
    }

    #[getter]
    fn device_channels(&self) -> u16 {
        self.inner.device_channels
    }

    #[getter]
    fn period_frames(&self) -> u32 {
        self.inner.period_frames
    }

    fn close(&mut self, py: Python<'_>) {
        let inner = &mut self.inner;
        py.allow_threads(|| inner.close());
    }
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(list_devices, m)?)?;
    m.add_class::<PyCaptureStream>()?;
    m.add_class::<PyEchoReference>()?;
    m.add_class::<PyPlaybackStream>()
}
