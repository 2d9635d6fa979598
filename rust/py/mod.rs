//! pyo3 glue: argument extraction, GIL release, and the one place Rust errors become Python
//! exceptions. The exception classes live in `geminilive/errors.py`, so the tree is defined
//! once, with the builtin bases (`ValueError`) Python users expect.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

mod aec;
mod chunker;
mod device;
mod g711;
mod jitter;
mod pcm;
mod resample;
#[cfg(unix)]
mod tls;
mod vad;
mod wire;
mod wsframe;

/// Inputs at least this long are processed with the GIL released; below it the release costs
/// more than the work (a 20 ms frame converts in well under a microsecond).
pub(crate) const GIL_RELEASE_MIN_SAMPLES: usize = 8192;

fn error_class<'py>(
    py: Python<'py>,
    cell: &'static GILOnceCell<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "geminilive.errors", name)
}

macro_rules! python_error {
    ($fn_name:ident, $class:literal) => {
        pub(crate) fn $fn_name(message: impl Into<String>) -> PyErr {
            static CLASS: GILOnceCell<Py<PyType>> = GILOnceCell::new();
            let message = message.into();
            Python::with_gil(|py| match error_class(py, &CLASS, $class) {
                Ok(class) => PyErr::from_type(class.clone(), message),
                Err(err) => err,
            })
        }
    };
}

python_error!(audio_format_error, "AudioFormatError");
python_error!(audio_device_error, "AudioDeviceError");
python_error!(buffer_full_error, "BufferFullError");

impl From<crate::pcm::PcmError> for PyErr {
    fn from(err: crate::pcm::PcmError) -> Self {
        audio_format_error(err.to_string())
    }
}

impl From<crate::resample::ResampleError> for PyErr {
    fn from(err: crate::resample::ResampleError) -> Self {
        audio_format_error(err.to_string())
    }
}

impl From<crate::jitter::PlayoutError> for PyErr {
    fn from(err: crate::jitter::PlayoutError) -> Self {
        match err {
            crate::jitter::PlayoutError::Full { .. } => buffer_full_error(err.to_string()),
            _ => pyo3::exceptions::PyValueError::new_err(err.to_string()),
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The version is Cargo.toml's, and only there (maturin gives it to the wheel too).
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    aec::register(m)?;
    chunker::register(m)?;
    device::register(m)?;
    g711::register(m)?;
    pcm::register(m)?;
    resample::register(m)?;
    #[cfg(unix)]
    tls::register(m)?;
    jitter::register(m)?;
    vad::register(m)?;
    wire::register(m)?;
    wsframe::register(m)?;
    Ok(())
}
