//! `audio_frame`: the `realtimeInput` audio frame built in one pass (see `crate::wire`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::wire::{frame_into, framed_len};

/// `prefix + base64(pcm) + suffix` as one new `bytes` object.
#[pyfunction]
fn audio_frame<'py>(
    py: Python<'py>,
    prefix: &[u8],
    pcm: &[u8],
    suffix: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, framed_len(prefix, pcm.len(), suffix), |dst| {
        frame_into(prefix, pcm, suffix, dst);
        Ok(())
    })
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(audio_frame, m)?)
}
