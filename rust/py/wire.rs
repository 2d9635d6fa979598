//! The wire hot paths (see `crate::wire`): `audio_frame` builds a `realtimeInput` audio frame
//! in one pass; `model_audio` and `input_audio` read the audio out of a server or client frame
//! that carries nothing else.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::wire::{
    base64_decode_into, base64_decoded_len, frame_into, framed_len, single_blob, Step,
};

/// Where a server message keeps the audio of a model turn.
const MODEL_TURN_BLOB: [Step; 5] = [
    Step::Key("serverContent"),
    Step::Key("modelTurn"),
    Step::Key("parts"),
    Step::Only,
    Step::Key("inlineData"),
];

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

/// Where a client message keeps realtime input audio.
const REALTIME_AUDIO_BLOB: [Step; 2] = [Step::Key("realtimeInput"), Step::Key("audio")];

/// `(mime_type, data)` when `frame` (bytes or str) is a server message with one model-turn
/// part holding inline data and nothing else; `None` for any other frame, which the general
/// decoder then reads (it also reports what is malformed).
#[pyfunction]
fn model_audio<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyString>, Bound<'py, PyBytes>)>> {
    blob_at(py, frame, &MODEL_TURN_BLOB)
}

/// The same for a client's `realtimeInput` audio message (what the emulator reads most).
#[pyfunction]
fn input_audio<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyString>, Bound<'py, PyBytes>)>> {
    blob_at(py, frame, &REALTIME_AUDIO_BLOB)
}

fn blob_at<'py>(
    py: Python<'py>,
    frame: &Bound<'py, PyAny>,
    path: &[Step],
) -> PyResult<Option<(Bound<'py, PyString>, Bound<'py, PyBytes>)>> {
    let text: &[u8] = if let Ok(bytes) = frame.downcast::<PyBytes>() {
        bytes.as_bytes()
    } else if let Ok(string) = frame.downcast::<PyString>() {
        string.to_str()?.as_bytes()
    } else {
        return Ok(None);
    };
    let Some((mime, data)) = single_blob(text, path) else {
        return Ok(None);
    };
    let (Ok(mime), Some(len)) = (std::str::from_utf8(mime), base64_decoded_len(data)) else {
        return Ok(None);
    };
    let mut valid = true;
    let pcm = PyBytes::new_with(py, len, |dst| {
        valid = base64_decode_into(data, dst);
        Ok(())
    })?;
    Ok(valid.then(|| (PyString::new(py, mime), pcm)))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(audio_frame, m)?)?;
    m.add_function(wrap_pyfunction!(model_audio, m)?)?;
    m.add_function(wrap_pyfunction!(input_audio, m)?)
}
