//! WebSocket data frames for `geminilive._websocket` (see `crate::wsframe`).

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::wsframe::{frame_into, frame_len, mask_key, next_frame, unmask_into, Next};

/// The single-frame messages at the front of `buf[at:]`, as `(messages, offset, stop)`:
/// `stop` is the end of the frame at `offset` when that frame is for the general protocol,
/// -1 when the general protocol must take everything from `offset`, and otherwise the rest is
/// an incomplete frame: 0, or minus the whole frame's length (-2 and below) once its header
/// is in (so that the caller can wait for all of it before reading again).
#[pyfunction]
fn read_frames<'py>(
    py: Python<'py>,
    buf: &[u8],
    at: usize,
    masked: bool,
    max_size: usize,
    simple: bool,
) -> PyResult<(Vec<Bound<'py, PyBytes>>, usize, isize)> {
    let mut messages = Vec::new();
    let mut at = at.min(buf.len());
    loop {
        match next_frame(buf, at, masked, max_size, simple) {
            Next::Message { payload, mask, end } => {
                let src = &buf[payload];
                messages.push(match mask {
                    Some(key) => PyBytes::new_with(py, src.len(), |dst| {
                        unmask_into(src, key, dst);
                        Ok(())
                    })?,
                    None => PyBytes::new(py, src),
                });
                at = end;
            }
            Next::Other { end } => return Ok((messages, at, end as isize)),
            Next::Refuse => return Ok((messages, at, -1)),
            Next::Incomplete { need } => return Ok((messages, at, -(need as isize))),
        }
    }
}

/// One final frame (`opcode` 1 text, 2 binary) holding `payload`, masked with a fresh random
/// key when `masked` (a client's frames).
#[pyfunction]
fn write_frame<'py>(
    py: Python<'py>,
    opcode: u8,
    payload: &[u8],
    masked: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let mask = masked.then(mask_key);
    PyBytes::new_with(py, frame_len(payload.len(), masked), |dst| {
        frame_into(opcode, payload, mask, dst);
        Ok(())
    })
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_frames, m)?)?;
    m.add_function(wrap_pyfunction!(write_frame, m)?)
}
