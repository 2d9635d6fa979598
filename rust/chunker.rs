//! What user audio to send when: message boundaries for the Live API's realtime input.
//!
//! Every message costs a socket write (on a loopback, the peer's wakeup as well), so fewer,
//! longer messages cost less CPU at both ends. But audio near a turn change is latency
//! critical: the service ends the user's turn on the silence after speech, and a barge-in
//! starts on the first speech after silence. The chunker sends `chunk_ms` messages around
//! those changes and holds up to `steady_chunk_ms` only where nothing is about to change:
//! within speech that has gone on for `settle_ms` (while its frames are voiced), and within
//! a silence that has lasted `long_silence_ms`. The first quiet frame of speech, or the first
//! voiced frame of a long silence, sends whatever is held at once.
//!
//! Frames are classified by [`crate::vad::Vad`] (10 ms, adaptive noise floor). When that
//! detector misses a change the service's detector sees, the change reaches the service at
//! most `steady_chunk_ms - chunk_ms` later than with fixed chunks. The output, concatenated,
//! is the input byte for byte, whatever the input's chunking.

use std::fmt;

use crate::pcm::{s16le_to_f32_into, PcmError};
use crate::vad::{Vad, VadConfig, VadEvent};

/// Chunker settings, in milliseconds of audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub sample_rate_hz: u32,
    /// Message length around turn changes (and whenever nothing is steady).
    pub chunk_ms: u32,
    /// Longest message held within steady speech or a long silence.
    pub steady_chunk_ms: u32,
    /// Speech this long (since its start was committed) is steady.
    pub settle_ms: u32,
    /// Silence this long (since the last voiced frame) is steady.
    pub long_silence_ms: u32,
    /// A pause this long ends a stretch of speech: speech after it settles again.
    pub pause_ms: u32,
}

impl ChunkerConfig {
    /// Defaults around the given message lengths: speech settles after 300 ms, silence after
    /// 2 s (past any end-of-turn window the service uses by default), a 200 ms pause ends
    /// speech.
    pub fn new(sample_rate_hz: u32, chunk_ms: u32, steady_chunk_ms: u32) -> Self {
        Self {
            sample_rate_hz,
            chunk_ms,
            steady_chunk_ms,
            settle_ms: 300,
            long_silence_ms: 2000,
            pause_ms: 200,
        }
    }
}

/// Settings the chunker cannot work with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkerConfigError(String);

impl fmt::Display for ChunkerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChunkerConfigError {}

/// The streaming chunker over 16-bit little-endian mono PCM.
#[derive(Debug, Clone)]
pub struct Chunker {
    config: ChunkerConfig,
    vad: Vad,
    held: Vec<u8>,
    scratch: Vec<f32>,
    /// Where the speech in progress started (a committed start), if any.
    speech_start: Option<u64>,
}

/// Samples in `ms` at `rate_hz`.
fn samples(rate_hz: u32, ms: u32) -> u64 {
    u64::from(rate_hz) * u64::from(ms) / 1000
}

impl Chunker {
    pub fn new(config: ChunkerConfig) -> Result<Self, ChunkerConfigError> {
        let c = config;
        if !(8_000..=192_000).contains(&c.sample_rate_hz) {
            return Err(ChunkerConfigError(format!(
                "sample rate {} Hz is not supported",
                c.sample_rate_hz
            )));
        }
        if !(1..=1000).contains(&c.chunk_ms) {
            return Err(ChunkerConfigError(format!(
                "chunk_ms must be within 1..1000, got {}",
                c.chunk_ms
            )));
        }
        if !(c.chunk_ms..=2000).contains(&c.steady_chunk_ms) {
            return Err(ChunkerConfigError(format!(
                "steady_chunk_ms must be within chunk_ms ({})..2000, got {}",
                c.chunk_ms, c.steady_chunk_ms
            )));
        }
        let vad = Vad::new(VadConfig::new(c.sample_rate_hz, true, true, 20, c.pause_ms));
        let held = samples(c.sample_rate_hz, c.steady_chunk_ms) as usize * 2;
        Ok(Self {
            config,
            vad,
            held: Vec::with_capacity(held + held / 2),
            scratch: Vec::with_capacity(held / 2),
            speech_start: None,
        })
    }

    pub fn config(&self) -> ChunkerConfig {
        self.config
    }

    /// Take in `pcm`; true when what is held is due to be sent now ([`Self::take`]).
    /// Odd byte counts are refused, and nothing is taken in then.
    pub fn push(&mut self, pcm: &[u8]) -> Result<bool, PcmError> {
        if pcm.len() % 2 != 0 {
            return Err(PcmError::OddByteCount { len: pcm.len() });
        }
        self.scratch.resize(pcm.len() / 2, 0.0);
        s16le_to_f32_into(pcm, &mut self.scratch)?;
        for event in self.vad.process(&self.scratch) {
            self.speech_start = match event {
                VadEvent::Start(at) => Some(at),
                VadEvent::End(_) => None,
            };
        }
        self.held.extend_from_slice(pcm);
        Ok(self.held_samples() >= self.ms(self.limit_ms()))
    }

    fn held_samples(&self) -> u64 {
        (self.held.len() / 2) as u64
    }

    fn ms(&self, ms: u32) -> u64 {
        samples(self.config.sample_rate_hz, ms)
    }

    /// Whether nothing is about to change: steady speech or a long silence.
    pub fn steady(&self) -> bool {
        let c = &self.config;
        let at = self.vad.position();
        let voiced_until = self.vad.voiced_until();
        match self.speech_start {
            Some(start) => voiced_until == at && at - start >= self.ms(c.settle_ms),
            None => at - voiced_until >= self.ms(c.long_silence_ms),
        }
    }

    /// The longest the audio held now may grow before it goes, in ms.
    pub fn limit_ms(&self) -> u32 {
        if self.steady() {
            self.config.steady_chunk_ms
        } else {
            self.config.chunk_ms
        }
    }

    /// The audio held (not yet due).
    pub fn held(&self) -> &[u8] {
        &self.held
    }

    /// Forget what is held (after the caller has sent it).
    pub fn clear_held(&mut self) {
        self.held.clear();
    }

    /// Milliseconds of audio held.
    pub fn held_ms(&self) -> f64 {
        self.held_samples() as f64 * 1000.0 / f64::from(self.config.sample_rate_hz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    /// 10 ms frames, loud (a tone at -10 dBFS) or quiet (a -66 dBFS hiss).
    fn frames(pattern: &[(bool, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut seed = 7u32;
        let mut i = 0usize;
        for &(loud, count) in pattern {
            for _ in 0..count * 160 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 32.0;
                let x = if loud {
                    10_000.0 * (i as f32 * 0.2).sin()
                } else {
                    noise
                };
                out.extend_from_slice(&(x as i16).to_le_bytes());
                i += 1;
            }
        }
        out
    }

    /// Messages (in ms of audio) when `pcm` is pushed in `push_ms` pieces.
    fn messages(chunker: &mut Chunker, pcm: &[u8], push_ms: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for piece in pcm.chunks(push_ms * 32) {
            if chunker.push(piece).unwrap() {
                out.push(chunker.held().len() / 32);
                chunker.clear_held();
            }
        }
        out
    }

    fn chunker() -> Chunker {
        Chunker::new(ChunkerConfig::new(RATE, 20, 100)).unwrap()
    }

    #[test]
    fn steady_speech_goes_in_long_messages_and_its_end_at_once() {
        let pcm = frames(&[(false, 50), (true, 150), (false, 50)]);
        let sizes = messages(&mut chunker(), &pcm, 10);
        // 500 ms of silence (not yet long): 20 ms messages; speech: 20 ms until it settles
        // (300 ms after its start), then 100 ms; the quiet frame after it sends what is held.
        assert!(sizes[..25].iter().all(|&ms| ms == 20), "{sizes:?}");
        assert!(
            sizes.iter().filter(|&&ms| ms == 100).count() >= 10,
            "{sizes:?}"
        );
        let speech_end_ms = 2000;
        let mut sent = 0;
        for &ms in &sizes {
            sent += ms;
            if sent > speech_end_ms {
                assert!(
                    sent <= speech_end_ms + 20,
                    "the end of speech was held: {sizes:?}"
                );
                break;
            }
        }
    }

    #[test]
    fn a_long_silence_goes_in_long_messages_until_speech_starts() {
        let pcm = frames(&[(false, 400), (true, 10)]);
        let mut c = chunker();
        let sizes = messages(&mut c, &pcm, 10);
        assert!(sizes[..99].iter().all(|&ms| ms == 20), "{sizes:?}");
        assert!(sizes.contains(&100), "{sizes:?}");
        // The first voiced frame sends what is held, itself included, at once.
        let sent: usize = sizes.iter().sum();
        let onset_ms = 4000;
        let first_after = sizes
            .iter()
            .scan(0, |t, &ms| {
                *t += ms;
                Some(*t)
            })
            .find(|&t| t > onset_ms)
            .unwrap();
        assert_eq!(first_after, onset_ms + 10, "{sizes:?}");
        assert_eq!(sent + c.held().len() / 32, 4100);
    }

    #[test]
    fn a_short_pause_sends_at_once_and_speech_after_it_stays_steady() {
        let pcm = frames(&[(true, 60), (false, 5), (true, 60)]);
        let mut c = chunker();
        let sizes = messages(&mut c, &pcm, 10);
        let mut t = 0;
        for &ms in &sizes {
            t += ms;
            if t > 600 {
                assert!(t <= 620, "{sizes:?}");
                break;
            }
        }
        assert!(c.steady(), "speech resumed after a 50 ms pause");
    }

    #[test]
    fn output_is_the_input_whatever_the_chunking() {
        let pcm = frames(&[
            (false, 230),
            (true, 90),
            (false, 30),
            (true, 40),
            (false, 260),
        ]);
        let mut whole = Vec::new();
        for push_ms in [1usize, 10, 20, 33, 250] {
            let mut c = chunker();
            let mut out = Vec::new();
            for piece in pcm.chunks(push_ms * 32) {
                if c.push(piece).unwrap() {
                    out.extend_from_slice(c.held());
                    c.clear_held();
                }
            }
            out.extend_from_slice(c.held());
            assert_eq!(out, pcm, "push_ms {push_ms}");
            whole = out;
        }
        assert_eq!(whole.len(), pcm.len());
    }

    #[test]
    fn odd_byte_counts_are_refused_and_nothing_is_taken_in() {
        let mut c = chunker();
        c.push(&[1, 2]).unwrap();
        assert_eq!(c.push(&[1, 2, 3]), Err(PcmError::OddByteCount { len: 3 }));
        assert_eq!(c.held(), &[1, 2]);
    }

    #[test]
    fn bad_settings_are_refused() {
        for (rate, chunk, steady) in [(16_000, 0, 100), (16_000, 40, 20), (4_000, 20, 100)] {
            assert!(Chunker::new(ChunkerConfig::new(rate, chunk, steady)).is_err());
        }
    }

    #[test]
    fn equal_lengths_mean_fixed_chunks() {
        let pcm = frames(&[(false, 300), (true, 100), (false, 50)]);
        let sizes = messages(
            &mut Chunker::new(ChunkerConfig::new(RATE, 20, 20)).unwrap(),
            &pcm,
            10,
        );
        assert!(sizes.iter().all(|&ms| ms == 20), "{sizes:?}");
    }
}
