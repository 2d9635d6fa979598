//! The native core of geminilive. Each module is pure Rust with its own tests; the pyo3 glue
//! lives in `py/` and is compiled only with the `python` feature (maturin enables it).

pub mod device;
pub mod jitter;
pub mod pcm;
pub mod resample;
pub mod vad;
pub mod wire;

#[cfg(feature = "python")]
mod py;
