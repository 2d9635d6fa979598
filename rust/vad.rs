//! Voice activity detection on 16-bit-range mono audio, streaming, in 10 ms frames.
//!
//! An energy detector with an adaptive noise floor: a frame is speech when its level is
//! `margin` dB above the tracked floor and above an absolute minimum. Start of speech is
//! committed after `prefix` consecutive speech frames and dated to the first of them; end of
//! speech after `silence` consecutive non-speech frames, dated to the first silent frame.
//! The two sensitivities of the Live API's `automaticActivityDetection` map to the margins:
//! HIGH start sensitivity starts on quieter speech; HIGH end sensitivity ends on a smaller
//! drop. Samples are processed frame by frame with the remainder carried over, so any
//! chunking gives the same events.

/// Start or end of speech, at a sample index counted from the stream's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech started at this sample.
    Start(u64),
    /// Speech ended at this sample (the first sample of the silence that ended it).
    End(u64),
}

/// Detector settings; see [`VadConfig::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    pub sample_rate_hz: u32,
    /// dB above the noise floor that starts speech.
    pub start_margin_db: f32,
    /// dB above the noise floor below which speech counts as stopped.
    pub end_margin_db: f32,
    /// Speech frames needed to commit a start.
    pub prefix_frames: u32,
    /// Silent frames needed to commit an end.
    pub silence_frames: u32,
    /// No frame below this level (dBFS) is speech, however quiet the floor.
    pub min_speech_dbfs: f32,
}

/// Frame length in milliseconds.
pub const FRAME_MS: u32 = 10;

impl VadConfig {
    /// Settings from the Live API's parameters. `high_start`/`high_end` are the HIGH
    /// sensitivities; durations are rounded up to whole frames.
    pub fn new(
        sample_rate_hz: u32,
        high_start: bool,
        high_end: bool,
        prefix_padding_ms: u32,
        silence_duration_ms: u32,
    ) -> Self {
        Self {
            sample_rate_hz,
            start_margin_db: if high_start { 12.0 } else { 20.0 },
            end_margin_db: if high_end { 9.0 } else { 5.0 },
            prefix_frames: prefix_padding_ms.div_ceil(FRAME_MS).max(1),
            silence_frames: silence_duration_ms.div_ceil(FRAME_MS).max(1),
            min_speech_dbfs: if high_start { -50.0 } else { -42.0 },
        }
    }

    fn frame_len(&self) -> usize {
        (self.sample_rate_hz * FRAME_MS / 1000) as usize
    }
}

/// The streaming detector.
#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    partial: Vec<f32>,
    /// Samples consumed into whole frames so far.
    position: u64,
    noise_floor_db: f32,
    speaking: bool,
    run: u32,
    run_start: u64,
    /// The sample just after the last voiced frame (speech-level, by the margin that applies).
    voiced_until: u64,
}

impl Vad {
    pub fn new(config: VadConfig) -> Self {
        let frame = config.frame_len();
        Self {
            config,
            partial: Vec::with_capacity(frame),
            position: 0,
            noise_floor_db: -70.0,
            speaking: false,
            run: 0,
            run_start: 0,
            voiced_until: 0,
        }
    }

    /// Whether speech is in progress (committed start, no committed end yet).
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Samples consumed so far (whole frames).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The sample just after the last voiced frame: a frame loud enough to start speech, or,
    /// while speaking, not quiet enough to count toward its end (0 before any).
    pub fn voiced_until(&self) -> u64 {
        self.voiced_until
    }

    /// Forget everything (the `audioStreamEnd` reset).
    pub fn reset(&mut self) {
        *self = Self {
            position: self.position + self.partial.len() as u64,
            voiced_until: self.voiced_until,
            ..Self::new(self.config)
        };
    }

    fn level_db(frame: &[f32]) -> f32 {
        let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
        10.0 * (energy + 1e-12).log10()
    }

    fn frame(&mut self, frame_start: u64, level: f32, events: &mut Vec<VadEvent>) {
        let c = self.config;
        if self.speaking {
            let silent = level < self.noise_floor_db + c.end_margin_db || level < c.min_speech_dbfs;
            if !silent {
                self.voiced_until = frame_start + c.frame_len() as u64;
            }
            if silent {
                if self.run == 0 {
                    self.run_start = frame_start;
                }
                self.run += 1;
                if self.run >= c.silence_frames {
                    self.speaking = false;
                    self.run = 0;
                    events.push(VadEvent::End(self.run_start));
                }
            } else {
                self.run = 0;
            }
        } else {
            let speech =
                level > self.noise_floor_db + c.start_margin_db && level > c.min_speech_dbfs;
            if speech {
                self.voiced_until = frame_start + c.frame_len() as u64;
                if self.run == 0 {
                    self.run_start = frame_start;
                }
                self.run += 1;
                if self.run >= c.prefix_frames {
                    self.speaking = true;
                    self.run = 0;
                    events.push(VadEvent::Start(self.run_start));
                }
            } else {
                self.run = 0;
            }
        }
        // The floor follows quiet frames quickly and loud ones very slowly, so speech does not
        // raise it but a steady noise does.
        let rate = if level < self.noise_floor_db {
            0.2
        } else if self.speaking {
            0.0005
        } else {
            0.01
        };
        self.noise_floor_db += (level - self.noise_floor_db) * rate;
        self.noise_floor_db = self.noise_floor_db.clamp(-90.0, -10.0);
    }

    /// Feed samples (f32, full scale 1.0); returns the events they complete.
    pub fn process(&mut self, samples: &[f32]) -> Vec<VadEvent> {
        let frame_len = self.config.frame_len();
        let mut events = Vec::new();
        let mut rest = samples;
        if !self.partial.is_empty() {
            let take = (frame_len - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() == frame_len {
                let level = Self::level_db(&self.partial);
                self.frame(self.position, level, &mut events);
                self.position += frame_len as u64;
                self.partial.clear();
            }
        }
        let mut frames = rest.chunks_exact(frame_len);
        for frame in &mut frames {
            let level = Self::level_db(frame);
            self.frame(self.position, level, &mut events);
            self.position += frame_len as u64;
        }
        self.partial.extend_from_slice(frames.remainder());
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(segments: &[(f32, usize)]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut seed = 1u32;
        for &(amplitude, n) in segments {
            for i in 0..n {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let tone = (i as f32 * 0.2).sin();
                out.push(if amplitude > 0.01 {
                    amplitude * tone
                } else {
                    0.002 * noise
                });
            }
        }
        out
    }

    #[test]
    fn detects_a_burst_of_speech_with_times() {
        let x = signal(&[(0.0, 8000), (0.3, 16000), (0.0, 16000)]);
        let mut vad = Vad::new(VadConfig::new(16_000, true, true, 30, 300));
        let events = vad.process(&x);
        assert_eq!(events, vec![VadEvent::Start(8000), VadEvent::End(24000)]);
        assert!(!vad.speaking());
    }

    #[test]
    fn short_pauses_do_not_end_speech() {
        let x = signal(&[
            (0.0, 8000),
            (0.3, 8000),
            (0.0, 2400),
            (0.3, 8000),
            (0.0, 16000),
        ]);
        let mut vad = Vad::new(VadConfig::new(16_000, true, true, 20, 300));
        let events = vad.process(&x);
        assert_eq!(events.len(), 2, "{events:?}");
    }

    #[test]
    fn chunking_does_not_change_events() {
        let x = signal(&[
            (0.0, 5000),
            (0.2, 9000),
            (0.0, 9000),
            (0.4, 3000),
            (0.0, 9000),
        ]);
        let whole = Vad::new(VadConfig::new(16_000, false, false, 100, 200)).process(&x);
        let mut vad = Vad::new(VadConfig::new(16_000, false, false, 100, 200));
        let mut chunked = Vec::new();
        for chunk in x.chunks(77) {
            chunked.extend(vad.process(chunk));
        }
        assert_eq!(whole, chunked);
        assert_eq!(whole.len(), 4);
    }

    #[test]
    fn voiced_until_is_the_end_of_the_last_loud_frame() {
        let mut vad = Vad::new(VadConfig::new(16_000, true, true, 20, 300));
        vad.process(&signal(&[(0.0, 8000)]));
        assert_eq!(vad.voiced_until(), 0);
        vad.process(&signal(&[(0.3, 3200), (0.0, 1600)]));
        assert_eq!(vad.voiced_until(), 11_200);
        assert!(vad.speaking(), "100 ms of quiet do not end speech here");
    }

    #[test]
    fn quiet_noise_is_not_speech() {
        let x = signal(&[(0.0, 48000)]);
        assert!(Vad::new(VadConfig::new(16_000, true, true, 20, 100))
            .process(&x)
            .is_empty());
    }
}
