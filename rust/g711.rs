//! G.711 (the telephone network's μ-law and A-law), bit-exact with the ITU-T reference
//! algorithm as CPython's `audioop` implements it (Sun's g711.c): μ-law codes 14-bit samples
//! (the 16-bit input's top 14 bits), A-law 13-bit ones; decoding gives 16-bit samples.
//!
//! `G711Decoder` and `G711Encoder` fuse a codec with the streaming resampler: telephone audio
//! at 8 kHz in, 16-bit PCM at the Live API's rates out, and back.

use crate::pcm::{self, PcmError};
use crate::resample::{ResampleError, Resampler};

/// The two companding laws of G.711.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// North America and Japan (Twilio's `audio/x-mulaw`).
    Mu,
    /// Everywhere else.
    A,
}

/// The telephone network's sample rate.
pub const RATE_HZ: u32 = 8000;

const SEG_UEND: [i16; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i16; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
const BIAS: i16 = 0x84;
const CLIP: i16 = 8159; // the largest 14-bit magnitude μ-law codes

fn segment(value: i16, ends: &[i16; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

/// μ-law code of a 16-bit sample.
pub fn ulaw_from_s16(sample: i16) -> u8 {
    let mut value = sample >> 2; // 14-bit
    let mask: u8 = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    value = value.min(CLIP) + (BIAS >> 2);
    let seg = segment(value, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    (((seg as u8) << 4) | ((value >> (seg + 1)) as u8 & 0x0F)) ^ mask
}

/// A-law code of a 16-bit sample.
pub fn alaw_from_s16(sample: i16) -> u8 {
    let mut value = sample >> 3; // 13-bit
    let mask: u8 = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let quant = if seg < 2 { value >> 1 } else { value >> seg };
    (((seg as u8) << 4) | (quant as u8 & 0x0F)) ^ mask
}

const fn ulaw_to_s16(code: u8) -> i16 {
    let code = !code;
    let t = ((((code & 0x0F) as i16) << 3) + BIAS) << ((code & 0x70) >> 4);
    if code & 0x80 != 0 {
        BIAS - t
    } else {
        t - BIAS
    }
}

const fn alaw_to_s16(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut t = ((code & 0x0F) as i16) << 4;
    let seg = (code & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    if code & 0x80 != 0 {
        t
    } else {
        -t
    }
}

const fn table(law: Law) -> [i16; 256] {
    let mut out = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        out[code] = match law {
            Law::Mu => ulaw_to_s16(code as u8),
            Law::A => alaw_to_s16(code as u8),
        };
        code += 1;
    }
    out
}

static ULAW_TO_S16: [i16; 256] = table(Law::Mu);
static ALAW_TO_S16: [i16; 256] = table(Law::A);

impl Law {
    pub fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Law::Mu => ulaw_from_s16(sample),
            Law::A => alaw_from_s16(sample),
        }
    }

    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Mu => ULAW_TO_S16[code as usize],
            Law::A => ALAW_TO_S16[code as usize],
        }
    }
}

/// Code 16-bit little-endian PCM (`src`, an even number of bytes) into `dst` (half as long).
pub fn encode_s16le_into(law: Law, src: &[u8], dst: &mut [u8]) -> Result<(), PcmError> {
    let n = samples_in(src)?;
    if dst.len() != n {
        return Err(PcmError::LengthMismatch {
            expected: n,
            actual: dst.len(),
        });
    }
    for (code, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *code = law.encode_sample(i16::from_le_bytes([pair[0], pair[1]]));
    }
    Ok(())
}

/// Decode G.711 codes into 16-bit little-endian PCM (`dst`, twice as long as `src`).
pub fn decode_to_s16le_into(law: Law, src: &[u8], dst: &mut [u8]) -> Result<(), PcmError> {
    if dst.len() != src.len() * 2 {
        return Err(PcmError::LengthMismatch {
            expected: src.len() * 2,
            actual: dst.len(),
        });
    }
    for (&code, pair) in src.iter().zip(dst.chunks_exact_mut(2)) {
        pair.copy_from_slice(&law.decode_sample(code).to_le_bytes());
    }
    Ok(())
}

/// Telephone audio in: G.711 codes at 8 kHz to 16-bit PCM at `output_rate`, resampled with
/// state kept across calls (any chunking gives the same bytes).
pub struct G711Decoder {
    law: Law,
    resampler: Resampler,
    linear: Vec<f32>,
    resampled: Vec<f32>,
}

impl G711Decoder {
    pub fn new(law: Law, output_rate: u32) -> Result<Self, ResampleError> {
        Ok(Self {
            law,
            resampler: Resampler::new(RATE_HZ, output_rate, 1)?,
            linear: Vec::new(),
            resampled: Vec::new(),
        })
    }

    pub fn delay_ms(&self) -> f64 {
        self.resampler.delay_samples() * 1000.0 / f64::from(self.resampler.output_rate())
    }

    /// 16-bit little-endian PCM at the output rate for these codes.
    pub fn process(&mut self, codes: &[u8]) -> Vec<u8> {
        let law = self.law;
        self.linear.clear();
        self.linear.extend(
            codes
                .iter()
                .map(|&c| f32::from(law.decode_sample(c)) / 32768.0),
        );
        let len = self.resampler.output_len_max(self.linear.len());
        self.resampled.resize(len, 0.0);
        let n = self
            .resampler
            .process_into(&self.linear, &mut self.resampled)
            .unwrap_or(0);
        s16le(&self.resampled[..n])
    }

    /// What the resampler still holds (end of the call); the decoder starts afresh after.
    pub fn flush(&mut self) -> Vec<u8> {
        s16le(&self.resampler.flush())
    }
}

/// Telephone audio out: 16-bit PCM at `input_rate` (the model's 24 kHz) to G.711 codes at
/// 8 kHz, anti-aliased by the resampler, with state kept across calls.
pub struct G711Encoder {
    law: Law,
    resampler: Resampler,
    linear: Vec<f32>,
    resampled: Vec<f32>,
}

impl G711Encoder {
    pub fn new(law: Law, input_rate: u32) -> Result<Self, ResampleError> {
        Ok(Self {
            law,
            resampler: Resampler::new(input_rate, RATE_HZ, 1)?,
            linear: Vec::new(),
            resampled: Vec::new(),
        })
    }

    pub fn delay_ms(&self) -> f64 {
        self.resampler.delay_samples() * 1000.0 / f64::from(RATE_HZ)
    }

    /// G.711 codes at 8 kHz for 16-bit little-endian PCM (an even number of bytes).
    pub fn process(&mut self, pcm: &[u8]) -> Result<Vec<u8>, PcmError> {
        let n = samples_in(pcm)?;
        self.linear.resize(n, 0.0);
        pcm::s16le_to_f32_into(pcm, &mut self.linear)?;
        let len = self.resampler.output_len_max(n);
        self.resampled.resize(len, 0.0);
        let made = self
            .resampler
            .process_into(&self.linear, &mut self.resampled)
            .unwrap_or(0);
        Ok(self.code(&self.resampled[..made]))
    }

    /// What the resampler still holds (end of the reply); the encoder starts afresh after.
    pub fn flush(&mut self) -> Vec<u8> {
        let rest = self.resampler.flush();
        self.code(&rest)
    }

    fn code(&self, samples: &[f32]) -> Vec<u8> {
        let law = self.law;
        samples
            .iter()
            .map(|&x| law.encode_sample(pcm::f32_to_s16_sample(x)))
            .collect()
    }
}

fn samples_in(s16le: &[u8]) -> Result<usize, PcmError> {
    if s16le.len() % 2 != 0 {
        return Err(PcmError::OddByteCount { len: s16le.len() });
    }
    Ok(s16le.len() / 2)
}

fn s16le(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&x| pcm::f32_to_s16_sample(x).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes() {
        // Silence, the extremes, and the reference's fixed points.
        assert_eq!(ulaw_from_s16(0), 0xFF);
        assert_eq!(ulaw_from_s16(i16::MAX), 0x80);
        assert_eq!(ulaw_from_s16(i16::MIN), 0x00);
        assert_eq!(alaw_from_s16(0), 0xD5);
        assert_eq!(Law::Mu.decode_sample(0xFF), 0);
        assert_eq!(Law::Mu.decode_sample(0x80), 32124);
        assert_eq!(Law::A.decode_sample(0xD5), 8);
        assert_eq!(Law::A.decode_sample(0xAA), 32256);
    }

    #[test]
    fn every_code_decodes_to_a_value_that_codes_back_to_it() {
        for law in [Law::Mu, Law::A] {
            for code in 0..=255u8 {
                let back = law.encode_sample(law.decode_sample(code));
                // μ-law has two codes for zero (0x7F and 0xFF); zero codes as 0xFF.
                let expected = if law == Law::Mu && code == 0x7F {
                    0xFF
                } else {
                    code
                };
                assert_eq!(back, expected, "{law:?} {code:#x}");
            }
        }
    }

    #[test]
    fn fused_paths_do_not_depend_on_chunking() {
        let codes: Vec<u8> = (0..4000u32).map(|i| (i * 37 % 256) as u8).collect();
        let mut whole = G711Decoder::new(Law::Mu, 16000).unwrap();
        let mut expected = whole.process(&codes);
        expected.extend(whole.flush());
        let mut chunked = G711Decoder::new(Law::Mu, 16000).unwrap();
        let mut got = Vec::new();
        for piece in codes.chunks(160 + 7) {
            got.extend(chunked.process(piece));
        }
        got.extend(chunked.flush());
        assert_eq!(got, expected);
        assert_eq!(expected.len(), codes.len() * 2 * 2);
    }

    #[test]
    fn odd_pcm_is_an_error() {
        let mut encoder = G711Encoder::new(Law::A, 24000).unwrap();
        assert!(encoder.process(&[0u8; 3]).is_err());
        let mut codes = [0u8; 1];
        assert!(encode_s16le_into(Law::Mu, &[0u8; 4], &mut codes).is_err());
    }
}
