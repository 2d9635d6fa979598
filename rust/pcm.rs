//! PCM sample conversion: f32 <-> signed 16-bit little-endian, and channel layout.
//!
//! The scale is 32768 both ways, so an i16 survives i16 -> f32 -> i16 exactly and an f32 in
//! [-1, 1) survives f32 -> i16 -> f32 within half an LSB. Rounding is to nearest, ties to even
//! (what `numpy.rint` does); values beyond full scale clip instead of wrapping; NaN becomes 0.

use std::fmt;

/// Full-scale factor between f32 samples in [-1, 1) and i16 codes.
pub const S16_SCALE: f32 = 32768.0;

/// Why PCM input was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PcmError {
    /// 16-bit PCM must have an even number of bytes; the caller split a sample in two.
    OddByteCount { len: usize },
    /// Interleaved input whose length is not a whole number of frames.
    PartialFrame { len: usize, channels: usize },
    /// A channel count of zero (or absurdly large) was given.
    InvalidChannels { channels: usize },
    /// Input and output buffers disagree on length.
    LengthMismatch { expected: usize, actual: usize },
}

impl fmt::Display for PcmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OddByteCount { len } => {
                write!(f, "16-bit PCM needs an even number of bytes, got {len}")
            }
            Self::PartialFrame { len, channels } => write!(
                f,
                "{len} samples is not a whole number of {channels}-channel frames"
            ),
            Self::InvalidChannels { channels } => {
                write!(f, "channel count must be between 1 and 64, got {channels}")
            }
            Self::LengthMismatch { expected, actual } => {
                write!(f, "output holds {actual} samples, {expected} are needed")
            }
        }
    }
}

impl std::error::Error for PcmError {}

/// Largest channel count accepted (more than any real device exposes).
pub const MAX_CHANNELS: usize = 64;

fn check_channels(channels: usize) -> Result<(), PcmError> {
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(PcmError::InvalidChannels { channels });
    }
    Ok(())
}

fn check_len(expected: usize, actual: usize) -> Result<(), PcmError> {
    if expected != actual {
        return Err(PcmError::LengthMismatch { expected, actual });
    }
    Ok(())
}

/// One f32 sample to an i16 code: scale, round half to even, clip; NaN -> 0.
#[inline(always)]
pub fn f32_to_s16_sample(x: f32) -> i16 {
    // `as` saturates and maps NaN to 0, so the clamp is only there to keep it branch-free
    // and vectorisable.
    (x * S16_SCALE).round_ties_even().clamp(-32768.0, 32767.0) as i16
}

/// Encode f32 samples as little-endian 16-bit PCM bytes into `dst` (2 bytes per sample).
///
/// # Errors
/// `LengthMismatch` when `dst` is not exactly twice as long as `src`.
pub fn f32_to_s16le_into(src: &[f32], dst: &mut [u8]) -> Result<(), PcmError> {
    check_len(src.len() * 2, dst.len())?;
    for (x, out) in src.iter().zip(dst.chunks_exact_mut(2)) {
        out.copy_from_slice(&f32_to_s16_sample(*x).to_le_bytes());
    }
    Ok(())
}

/// Encode f32 samples as i16 codes into `dst`.
///
/// # Errors
/// `LengthMismatch` when the lengths differ.
pub fn f32_to_s16_into(src: &[f32], dst: &mut [i16]) -> Result<(), PcmError> {
    check_len(src.len(), dst.len())?;
    for (x, out) in src.iter().zip(dst.iter_mut()) {
        *out = f32_to_s16_sample(*x);
    }
    Ok(())
}

/// Decode little-endian 16-bit PCM bytes into f32 samples in [-1, 1).
///
/// # Errors
/// `OddByteCount` for an odd number of bytes; `LengthMismatch` when `dst` is not half as long.
pub fn s16le_to_f32_into(src: &[u8], dst: &mut [f32]) -> Result<(), PcmError> {
    if src.len() % 2 != 0 {
        return Err(PcmError::OddByteCount { len: src.len() });
    }
    check_len(src.len() / 2, dst.len())?;
    for (pair, out) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *out = f32::from(i16::from_le_bytes([pair[0], pair[1]])) / S16_SCALE;
    }
    Ok(())
}

/// Decode i16 codes into f32 samples.
///
/// # Errors
/// `LengthMismatch` when the lengths differ.
pub fn s16_to_f32_into(src: &[i16], dst: &mut [f32]) -> Result<(), PcmError> {
    check_len(src.len(), dst.len())?;
    for (x, out) in src.iter().zip(dst.iter_mut()) {
        *out = f32::from(*x) / S16_SCALE;
    }
    Ok(())
}

/// Number of frames in `len` interleaved samples of `channels` channels.
///
/// # Errors
/// `InvalidChannels` or `PartialFrame`.
pub fn frame_count(len: usize, channels: usize) -> Result<usize, PcmError> {
    check_channels(channels)?;
    if len % channels != 0 {
        return Err(PcmError::PartialFrame { len, channels });
    }
    Ok(len / channels)
}

/// Downmix interleaved frames to mono by averaging the channels of each frame.
///
/// # Errors
/// `InvalidChannels`, `PartialFrame`, or `LengthMismatch` when `dst` is not one per frame.
pub fn to_mono_into(src: &[f32], channels: usize, dst: &mut [f32]) -> Result<(), PcmError> {
    check_len(frame_count(src.len(), channels)?, dst.len())?;
    if channels == 1 {
        dst.copy_from_slice(src);
        return Ok(());
    }
    let gain = 1.0 / channels as f32;
    for (frame, out) in src.chunks_exact(channels).zip(dst.iter_mut()) {
        *out = frame.iter().sum::<f32>() * gain;
    }
    Ok(())
}

/// Upmix mono samples to interleaved frames by copying each sample to every channel.
///
/// # Errors
/// `InvalidChannels`, or `LengthMismatch` when `dst` is not `channels` per input sample.
pub fn from_mono_into(src: &[f32], channels: usize, dst: &mut [f32]) -> Result<(), PcmError> {
    check_channels(channels)?;
    check_len(src.len() * channels, dst.len())?;
    for (x, frame) in src.iter().zip(dst.chunks_exact_mut(channels)) {
        frame.fill(*x);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_rounding_and_clipping() {
        let src = [
            0.0,
            1.0,
            -1.0,
            2.0,
            -2.0,
            0.5,
            f32::NAN,
            1.5 / 32768.0,
            2.5 / 32768.0,
        ];
        let mut dst = [0i16; 9];
        f32_to_s16_into(&src, &mut dst).unwrap();
        assert_eq!(dst, [0, 32767, -32768, 32767, -32768, 16384, 0, 2, 2]);
        assert_eq!(f32_to_s16_sample(f32::INFINITY), 32767);
        assert_eq!(f32_to_s16_sample(f32::NEG_INFINITY), -32768);
    }

    #[test]
    fn bytes_are_little_endian() {
        let mut bytes = [0u8; 4];
        f32_to_s16le_into(&[0.5, -1.0 / 32768.0], &mut bytes).unwrap();
        assert_eq!(bytes, [0x00, 0x40, 0xff, 0xff]);
        let mut back = [0f32; 2];
        s16le_to_f32_into(&bytes, &mut back).unwrap();
        assert_eq!(back, [0.5, -1.0 / 32768.0]);
    }

    #[test]
    fn every_i16_round_trips_exactly() {
        let codes: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut floats = vec![0f32; codes.len()];
        s16_to_f32_into(&codes, &mut floats).unwrap();
        let mut again = vec![0i16; codes.len()];
        f32_to_s16_into(&floats, &mut again).unwrap();
        assert_eq!(codes, again);
    }

    #[test]
    fn odd_bytes_and_bad_lengths_are_errors() {
        let mut out = [0f32; 1];
        assert_eq!(
            s16le_to_f32_into(&[1, 2, 3], &mut out),
            Err(PcmError::OddByteCount { len: 3 })
        );
        assert_eq!(
            s16le_to_f32_into(&[1, 2, 3, 4], &mut out),
            Err(PcmError::LengthMismatch {
                expected: 2,
                actual: 1
            })
        );
    }

    #[test]
    fn channel_layouts() {
        let stereo = [1.0, 0.0, 0.5, 0.5, -1.0, 1.0];
        let mut mono = [0f32; 3];
        to_mono_into(&stereo, 2, &mut mono).unwrap();
        assert_eq!(mono, [0.5, 0.5, 0.0]);
        let mut up = [0f32; 6];
        from_mono_into(&mono, 2, &mut up).unwrap();
        assert_eq!(up, [0.5, 0.5, 0.5, 0.5, 0.0, 0.0]);
        assert_eq!(
            to_mono_into(&stereo, 4, &mut mono),
            Err(PcmError::PartialFrame {
                len: 6,
                channels: 4
            })
        );
        assert_eq!(
            to_mono_into(&stereo, 0, &mut mono),
            Err(PcmError::InvalidChannels { channels: 0 })
        );
    }
}
