//! G.711 for the telephony bridge: `g711_encode`, `g711_decode`, and the fused resampling
//! `G711Decoder` / `G711Encoder` over `crate::g711`.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::audio_format_error;
use super::pcm::{maybe_detach, with_s16le};
use crate::g711::{self, G711Decoder, G711Encoder, Law};

fn parse_law(name: &str) -> PyResult<Law> {
    match name {
        "mulaw" | "ulaw" | "pcmu" => Ok(Law::Mu),
        "alaw" | "pcma" => Ok(Law::A),
        _ => Err(audio_format_error(format!(
            "unknown G.711 law {name:?}: 'mulaw' or 'alaw'"
        ))),
    }
}

/// Borrow G.711 codes from bytes, bytearray or a memoryview.
fn with_codes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<R>) -> PyResult<R> {
    if let Ok(bytes) = obj.downcast::<PyBytes>() {
        return f(bytes.as_bytes());
    }
    match PyBuffer::<u8>::get(obj) {
        Ok(buffer) => f(&buffer.to_vec(obj.py())?),
        Err(_) => Err(audio_format_error(
            "G.711 codes are bytes, bytearray or a memoryview",
        )),
    }
}

/// G.711 codes (one byte a sample) of 16-bit little-endian PCM.
#[pyfunction]
fn g711_encode<'py>(
    py: Python<'py>,
    pcm: &Bound<'py, PyAny>,
    law: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let law = parse_law(law)?;
    with_s16le(pcm, |src| {
        if src.len() % 2 != 0 {
            return Err(crate::pcm::PcmError::OddByteCount { len: src.len() }.into());
        }
        PyBytes::new_with(py, src.len() / 2, |dst| {
            maybe_detach(py, dst.len(), || g711::encode_s16le_into(law, src, dst))
                .map_err(PyErr::from)
        })
    })
}

/// 16-bit little-endian PCM of G.711 codes.
#[pyfunction]
fn g711_decode<'py>(
    py: Python<'py>,
    codes: &Bound<'py, PyAny>,
    law: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let law = parse_law(law)?;
    with_codes(codes, |src| {
        PyBytes::new_with(py, src.len() * 2, |dst| {
            maybe_detach(py, src.len(), || g711::decode_to_s16le_into(law, src, dst))
                .map_err(PyErr::from)
        })
    })
}

#[pyclass(name = "G711Decoder", module = "geminilive._native")]
struct PyG711Decoder {
    inner: G711Decoder,
}

#[pymethods]
impl PyG711Decoder {
    #[new]
    #[pyo3(signature = (law, output_rate_hz=16000))]
    fn new(law: &str, output_rate_hz: u32) -> PyResult<Self> {
        Ok(Self {
            inner: G711Decoder::new(parse_law(law)?, output_rate_hz)?,
        })
    }

    /// 16-bit PCM at the output rate for these 8 kHz codes.
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        codes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let out = with_codes(codes, |src| Ok(self.inner.process(src)))?;
        Ok(PyBytes::new(py, &out))
    }

    fn flush<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.flush())
    }

    #[getter]
    fn delay_ms(&self) -> f64 {
        self.inner.delay_ms()
    }
}

#[pyclass(name = "G711Encoder", module = "geminilive._native")]
struct PyG711Encoder {
    inner: G711Encoder,
}

#[pymethods]
impl PyG711Encoder {
    #[new]
    #[pyo3(signature = (law, input_rate_hz=24000))]
    fn new(law: &str, input_rate_hz: u32) -> PyResult<Self> {
        Ok(Self {
            inner: G711Encoder::new(parse_law(law)?, input_rate_hz)?,
        })
    }

    /// 8 kHz G.711 codes for 16-bit PCM at the input rate.
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        pcm: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let out = with_s16le(pcm, |src| Ok(self.inner.process(src)?))?;
        Ok(PyBytes::new(py, &out))
    }

    fn flush<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.flush())
    }

    #[getter]
    fn delay_ms(&self) -> f64 {
        self.inner.delay_ms()
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(g711_encode, m)?)?;
    m.add_function(wrap_pyfunction!(g711_decode, m)?)?;
    m.add_class::<PyG711Decoder>()?;
    m.add_class::<PyG711Encoder>()?;
    Ok(())
}
