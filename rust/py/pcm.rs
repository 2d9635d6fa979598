//! `f32_to_s16le`, `s16le_to_f32`, `to_mono`, `from_mono`, and the array extraction the other
//! glue modules share.

use numpy::{
    PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use super::{audio_format_error, GIL_RELEASE_MIN_SAMPLES};
use crate::pcm;

/// A contiguous numpy array of audio samples, borrowed without copying.
pub(crate) enum Samples<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    I16(PyReadonlyArrayDyn<'py, i16>),
}

impl Samples<'_> {
    /// The samples as f32 (borrowed for float32, converted for int16).
    pub(crate) fn with_f32<R>(&self, f: impl FnOnce(&[f32]) -> R) -> PyResult<R> {
        match self {
            Self::F32(a) => Ok(f(a.as_slice().map_err(|_| not_contiguous())?)),
            Self::I16(a) => {
                let codes = a.as_slice().map_err(|_| not_contiguous())?;
                let mut floats = vec![0f32; codes.len()];
                pcm::s16_to_f32_into(codes, &mut floats)?;
                Ok(f(&floats))
            }
        }
    }

    pub(crate) fn shape(&self) -> Vec<usize> {
        match self {
            Self::F32(a) => a.shape().to_vec(),
            Self::I16(a) => a.shape().to_vec(),
        }
    }
}

fn not_contiguous() -> PyErr {
    audio_format_error("audio arrays must be C-contiguous (use numpy.ascontiguousarray)")
}

fn dtype_name(obj: &Bound<'_, PyAny>) -> String {
    obj.downcast::<PyUntypedArray>()
        .map_or_else(|_| obj.get_type().to_string(), |a| a.dtype().to_string())
}

/// Borrow a float32 or int16 array (1-D, or 2-D frames x channels), refusing other dtypes and
/// non-contiguous arrays with an `AudioFormatError` that says what was given.
pub(crate) fn extract_samples<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Samples<'py>> {
    let samples = if let Ok(a) = obj.downcast::<PyArrayDyn<f32>>() {
        Samples::F32(a.readonly())
    } else if let Ok(a) = obj.downcast::<PyArrayDyn<i16>>() {
        Samples::I16(a.readonly())
    } else {
        return Err(audio_format_error(format!(
            "expected a float32 or int16 numpy array, got {}",
            dtype_name(obj)
        )));
    };
    let contiguous = match &samples {
        Samples::F32(a) => a.is_c_contiguous(),
        Samples::I16(a) => a.is_c_contiguous(),
    };
    if !contiguous {
        return Err(not_contiguous());
    }
    if samples.shape().len() > 2 {
        return Err(audio_format_error(
            "audio arrays must be 1-D or 2-D (frames, channels)",
        ));
    }
    Ok(samples)
}

/// Borrow 16-bit little-endian PCM from bytes, bytearray, a memoryview or an int16 array.
pub(crate) fn with_s16le<R>(
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> PyResult<R>,
) -> PyResult<R> {
    if let Ok(bytes) = obj.downcast::<PyBytes>() {
        return f(bytes.as_bytes());
    }
    if let Ok(array) = obj.downcast::<PyArrayDyn<i16>>() {
        let array = array.readonly();
        let codes = array.as_slice().map_err(|_| not_contiguous())?;
        let bytes: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
        return f(&bytes);
    }
    if let Ok(array) = obj.downcast::<PyByteArray>() {
        return f(&array.to_vec());
    }
    match PyBuffer::<u8>::get(obj) {
        Ok(buffer) => f(&buffer.to_vec(obj.py())?),
        Err(_) => Err(audio_format_error(format!(
            "expected 16-bit PCM as bytes, bytearray, memoryview or an int16 array, got {}",
            dtype_name(obj)
        ))),
    }
}

/// Run `work` without the GIL when the job is big enough to pay for the release.
pub(crate) fn maybe_detach<T: Send>(
    py: Python<'_>,
    samples: usize,
    work: impl FnOnce() -> T + Send,
) -> T {
    if samples >= GIL_RELEASE_MIN_SAMPLES {
        py.allow_threads(work)
    } else {
        work()
    }
}

#[pyfunction]
fn f32_to_s16le<'py>(
    py: Python<'py>,
    samples: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let samples = extract_samples(samples)?;
    let Samples::F32(array) = &samples else {
        return Err(audio_format_error(
            "f32_to_s16le takes float32 samples; int16 is already PCM",
        ));
    };
    let src = array.as_slice().map_err(|_| not_contiguous())?;
    PyBytes::new_with(py, src.len() * 2, |dst| {
        maybe_detach(py, src.len(), || pcm::f32_to_s16le_into(src, dst)).map_err(PyErr::from)
    })
}

#[pyfunction]
fn s16le_to_f32<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    with_s16le(data, |bytes| {
        if bytes.len() % 2 != 0 {
            return Err(pcm::PcmError::OddByteCount { len: bytes.len() }.into());
        }
        let out = PyArray1::<f32>::zeros(py, bytes.len() / 2, false);
        {
            // SAFETY: `out` was just created here and no other reference to its data exists.
            let dst = unsafe { out.as_slice_mut() }.map_err(|_| not_contiguous())?;
            maybe_detach(py, dst.len(), || pcm::s16le_to_f32_into(bytes, dst))?;
        }
        Ok(out)
    })
}

/// Interleaved length and channel count of a 1-D (with `channels`) or 2-D array.
pub(crate) fn layout(shape: &[usize], channels: Option<usize>) -> PyResult<(usize, usize)> {
    match (shape, channels) {
        ([frames, ch], None) => Ok((frames * ch, *ch)),
        ([frames, ch], Some(given)) if *ch == given => Ok((frames * ch, *ch)),
        ([_, ch], Some(given)) => Err(audio_format_error(format!(
            "array has {ch} channels but channels={given} was given"
        ))),
        ([len], ch) => Ok((*len, ch.unwrap_or(1))),
        _ => Err(audio_format_error(
            "audio arrays must be 1-D or 2-D (frames, channels)",
        )),
    }
}

#[pyfunction]
#[pyo3(signature = (samples, channels=None))]
fn to_mono<'py>(
    py: Python<'py>,
    samples: &Bound<'py, PyAny>,
    channels: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let samples = extract_samples(samples)?;
    let (len, channels) = layout(&samples.shape(), channels)?;
    let frames = pcm::frame_count(len, channels)?;
    let out = PyArray1::<f32>::zeros(py, frames, false);
    samples.with_f32(|src| {
        // SAFETY: `out` was just created here and no other reference to its data exists.
        let dst = unsafe { out.as_slice_mut() }.map_err(|_| not_contiguous())?;
        maybe_detach(py, src.len(), || pcm::to_mono_into(src, channels, dst)).map_err(PyErr::from)
    })??;
    Ok(out)
}

#[pyfunction]
fn from_mono<'py>(
    py: Python<'py>,
    samples: &Bound<'py, PyAny>,
    channels: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let samples = extract_samples(samples)?;
    let shape = samples.shape();
    let [frames] = shape[..] else {
        return Err(audio_format_error("from_mono takes a 1-D mono array"));
    };
    if channels == 0 || channels > pcm::MAX_CHANNELS {
        return Err(pcm::PcmError::InvalidChannels { channels }.into());
    }
    let out = PyArray2::<f32>::zeros(py, [frames, channels], false);
    samples.with_f32(|src| {
        // SAFETY: `out` was just created here and no other reference to its data exists.
        let dst = unsafe { out.as_slice_mut() }.map_err(|_| not_contiguous())?;
        maybe_detach(py, dst.len(), || pcm::from_mono_into(src, channels, dst)).map_err(PyErr::from)
    })??;
    Ok(out)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(f32_to_s16le, m)?)?;
    m.add_function(wrap_pyfunction!(s16le_to_f32, m)?)?;
    m.add_function(wrap_pyfunction!(to_mono, m)?)?;
    m.add_function(wrap_pyfunction!(from_mono, m)?)?;
    Ok(())
}
