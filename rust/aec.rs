//! Acoustic echo cancellation: what the speaker played is taken out of what the microphone
//! hears, so that the model's own voice does not reach the service as the user's (which makes
//! the server's VAD interrupt the model with itself, the classic complaint of open-speaker
//! voice apps; the peers ship no canceller and say "use headphones").
//!
//! WebRTC's AEC3 (the `aec3` crate, a Rust port) does the work on 10 ms frames, with its own
//! delay estimation between the far end (render) and the microphone (capture), so the two
//! streams need not be aligned by the caller: feed the render signal as it is played and the
//! capture as it is heard. AEC3 alone: no noise suppression or gain control (they change the
//! user's voice, and the service has its own).
//!
//! Both inputs take any chunk length: whole 10 ms frames are processed, the rest waits for the
//! next call, so the output never depends on how the input was chunked and no sample is lost
//! (the output trails the input by under 10 ms).

use std::fmt;

use aec3::api::config::EchoCanceller3Config;
use aec3::api::control::EchoControl;
use aec3::audio_processing::aec3::echo_canceller3::EchoCanceller3;
use aec3::audio_processing::audio_buffer::AudioBuffer;
use aec3::audio_processing::stream_config::StreamConfig;

/// Why an echo canceller could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AecError {
    /// AEC3 runs at 16, 32 or 48 kHz.
    UnsupportedRate { sample_rate_hz: u32 },
}

impl fmt::Display for AecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedRate { sample_rate_hz } => {
                write!(
                    f,
                    "echo cancellation runs at 16000, 32000 or 48000 Hz, not {sample_rate_hz}"
                )
            }
        }
    }
}

impl std::error::Error for AecError {}

/// A mono echo canceller at one sample rate.
pub struct EchoCanceller {
    echo: EchoCanceller3,
    stream: StreamConfig,
    render_buffer: AudioBuffer,
    capture_buffer: AudioBuffer,
    frame: usize,
    /// Render samples not yet making a whole frame.
    render_carry: Vec<f32>,
    /// Capture samples not yet making a whole frame.
    capture_carry: Vec<f32>,
    out_frame: Vec<f32>,
    sample_rate_hz: u32,
}

// SAFETY: `EchoCanceller3` holds its block processor as a `Box<dyn BlockProcessorBackend>`
// whose trait has no `Send` bound, so the compiler cannot see through it; the one
// implementation outside the crate's tests (`BlockProcessor`) and everything else here is
// plain owned data: no `Rc`, `Cell`, raw pointer or thread-local anywhere in aec3 0.4.0's
// non-test code (checked by reading it; the version is pinned in Cargo.toml so that a new
// release is checked again). Moving it to another thread is therefore sound.
unsafe impl Send for EchoCanceller {}
// SAFETY: no method of `EchoCanceller` that takes `&self` reaches inside the processor (they
// read plain fields), so shared references cannot race.
unsafe impl Sync for EchoCanceller {}

impl EchoCanceller {
    /// # Errors
    /// `UnsupportedRate` unless 16, 32 or 48 kHz.
    pub fn new(sample_rate_hz: u32) -> Result<Self, AecError> {
        if !matches!(sample_rate_hz, 16_000 | 32_000 | 48_000) {
            return Err(AecError::UnsupportedRate { sample_rate_hz });
        }
        let rate = sample_rate_hz as usize;
        let buffer = || AudioBuffer::from_sample_rates(rate, 1, rate, 1, rate);
        let frame = rate / 100;
        Ok(Self {
            echo: EchoCanceller3::new(EchoCanceller3Config::default(), sample_rate_hz as i32, 1, 1),
            stream: StreamConfig::new(rate, 1, false),
            render_buffer: buffer(),
            capture_buffer: buffer(),
            frame,
            render_carry: Vec::with_capacity(frame),
            capture_carry: Vec::with_capacity(frame),
            out_frame: vec![0.0; frame],
            sample_rate_hz,
        })
    }

    pub fn sample_rate_hz(&self) -> u32 {
        self.sample_rate_hz
    }

    /// What the speaker played (or is about to play), at the canceller's rate.
    pub fn render(&mut self, samples: &[f32]) {
        let (buffer, echo, stream) = (&mut self.render_buffer, &mut self.echo, &self.stream);
        in_frames(&mut self.render_carry, self.frame, samples, |frame| {
            buffer.copy_from(&[frame], stream);
            buffer.split_into_frequency_bands();
            echo.analyze_render(buffer);
        });
    }

    /// What the microphone heard, at the canceller's rate; the echo-free samples of every whole
    /// frame are appended to `out` (a partial frame waits for the next call).
    pub fn process(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        let (buffer, echo, stream) = (&mut self.capture_buffer, &mut self.echo, &self.stream);
        let out_frame = &mut self.out_frame;
        in_frames(&mut self.capture_carry, self.frame, samples, |frame| {
            buffer.copy_from(&[frame], stream);
            echo.analyze_capture(buffer);
            buffer.split_into_frequency_bands();
            echo.process_capture(buffer, false);
            buffer.merge_frequency_bands();
            buffer.copy_to_stream(stream, &mut [out_frame.as_mut_slice()]);
            out.extend_from_slice(out_frame);
        });
    }

    /// Samples of capture held back until their frame is whole.
    pub fn pending(&self) -> usize {
        self.capture_carry.len()
    }
}

/// Hand `samples` to `on_frame` in whole frames of `frame` samples, `carry` holding what is
/// left of a frame between calls.
fn in_frames(
    carry: &mut Vec<f32>,
    frame: usize,
    samples: &[f32],
    mut on_frame: impl FnMut(&[f32]),
) {
    let mut rest = samples;
    while !rest.is_empty() {
        let take = (frame - carry.len()).min(rest.len());
        carry.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        if carry.len() == frame {
            on_frame(carry);
            carry.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 16_000;

    /// Speech-like far end: low-passed noise, on for 0.5 s and off for 0.25 s.
    fn far_end(seconds: usize) -> Vec<f32> {
        let mut seed = 7u32;
        let mut low = 0.0f32;
        (0..RATE * seconds)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                low = 0.7 * low + 0.3 * noise;
                if (i / 4000) % 3 == 2 {
                    0.0
                } else {
                    0.8 * low
                }
            })
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    /// The microphone: the far end 50 ms later at half level, plus `near`. Every 10 ms the
    /// speaker's frame is rendered, then the microphone's is processed; both are handed over
    /// in pieces of `piece` samples.
    fn run(far: &[f32], near: &[f32], piece: usize) -> Vec<f32> {
        let delay = RATE / 20;
        let mut aec = EchoCanceller::new(RATE as u32).unwrap();
        let mut out = Vec::new();
        for (k, far_frame) in far.chunks(RATE / 100).enumerate() {
            for bit in far_frame.chunks(piece) {
                aec.render(bit);
            }
            let at = k * RATE / 100;
            let mic: Vec<f32> = (at..at + far_frame.len())
                .map(|i| {
                    near[i]
                        + if i >= delay {
                            0.5 * far[i - delay]
                        } else {
                            0.0
                        }
                })
                .collect();
            for bit in mic.chunks(piece) {
                aec.process(bit, &mut out);
            }
        }
        out
    }

    #[test]
    fn removes_the_echo_and_keeps_the_near_end() {
        let far = far_end(6);
        let mut near = vec![0.0f32; far.len()];
        for (i, v) in near.iter_mut().enumerate().take(5 * RATE).skip(4 * RATE) {
            let t = i as f32 / RATE as f32;
            *v = 0.15 * (2.0 * std::f32::consts::PI * 300.0 * t).sin() * (1.0 + (6.0 * t).sin());
        }
        let out = run(&far, &near, 160);
        assert_eq!(out.len(), far.len(), "every sample comes out");
        let echo = |s: usize| 0.5 * rms(&far[s * RATE..(s + 1) * RATE]);
        let left = |s: usize| rms(&out[s * RATE..(s + 1) * RATE]);
        let erle = |s: usize| 20.0 * (echo(s) / left(s).max(1e-9)).log10();
        assert!(
            erle(0) > 15.0,
            "converges within the first second: {} dB",
            erle(0)
        );
        assert!(
            erle(2) > 30.0 && erle(3) > 30.0,
            "{} {} dB",
            erle(2),
            erle(3)
        );
        let near_level = rms(&near[4 * RATE..5 * RATE]);
        let ratio = left(4) / near_level;
        assert!(
            (0.7..1.3).contains(&ratio),
            "double talk keeps the user's voice: {ratio}"
        );
    }

    #[test]
    fn the_output_does_not_depend_on_the_chunking() {
        let far = far_end(2);
        let near = vec![0.0f32; far.len()];
        let whole = run(&far, &near, 160);
        for piece in [1, 7, 33, 100] {
            assert_eq!(run(&far, &near, piece), whole, "pieces of {piece}");
        }
    }

    #[test]
    fn only_aec3_rates_are_taken() {
        assert!(matches!(
            EchoCanceller::new(24_000),
            Err(AecError::UnsupportedRate {
                sample_rate_hz: 24_000
            })
        ));
        for rate in [16_000, 32_000, 48_000] {
            assert_eq!(EchoCanceller::new(rate).unwrap().sample_rate_hz(), rate);
        }
    }
}
