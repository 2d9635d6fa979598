//! Playout (jitter) buffer between the network and the audio callback.
//!
//! The Live API sends a reply in bursts, often seconds faster than real time and sometimes
//! slower, so the buffer holds minutes (allocated once, up front) and never drops audio in
//! normal operation: a push that does not fit is refused whole (`Full`), never overwritten.
//!
//! It is a single-producer single-consumer ring split into a [`PlayoutWriter`] (the network
//! side) and a [`PlayoutReader`] (the audio callback). The reader's `pull` is wait-free: no
//! lock, no allocation, no system call; only the reader advances the read index.
//!
//! * Prebuffer: playback starts once `threshold` samples are queued (or the turn has ended),
//!   and again after an underrun. Each underrun raises the threshold by half (up to a cap);
//!   steady playback decays it back towards the configured start value.
//! * End of turn: everything queued before the mark plays out, even a tail shorter than the
//!   threshold, and running dry there is not an underrun.
//! * Underrun: what is left plays with a short fade-out, then silence; the next start fades in.
//! * Clear (barge-in): the writer records the write index; the reader, at its next pull (so
//!   within one callback period), fades out over `fade` samples and skips to that index.
//!   Audio pushed after `clear` is kept.
//! * Gain (ducking): the writer sets a target in 0..=1; the reader ramps to it linearly, a full
//!   swing taking four fades (10 ms at the defaults), so that turning the model down while the
//!   user may be speaking, and back up on a false alarm, makes no click.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// How a playout buffer is set up. All sizes are in samples (mono, at the buffer's rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutConfig {
    /// Ring capacity: the most audio that can be queued.
    pub capacity: usize,
    /// Prebuffer threshold at the start and the floor it decays back to.
    pub start_threshold: usize,
    /// Cap on the threshold after repeated underruns.
    pub max_threshold: usize,
    /// Fade length on clear and around underruns.
    pub fade: usize,
    /// Steady playback after which the threshold decays one step (a tenth of the way back).
    pub decay_period: usize,
}

impl PlayoutConfig {
    /// Defaults for a rate: 5 minutes of capacity, 40 ms prebuffer (cap 400 ms), 2.5 ms fades,
    /// decay every second of steady playback.
    pub fn for_rate(sample_rate_hz: u32) -> Self {
        let ms = |m: u32| (u64::from(sample_rate_hz) * u64::from(m) / 1000) as usize;
        Self {
            capacity: ms(300_000),
            start_threshold: ms(40),
            max_threshold: ms(400),
            fade: ms(5) / 2,
            decay_period: ms(1000),
        }
    }
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlayoutError {
    /// Not enough room: nothing was written. Wait for playback to drain `needed - free`.
    Full { needed: usize, free: usize },
    /// A configuration that cannot work (zero capacity, threshold above capacity, ...).
    InvalidConfig { reason: &'static str },
}

impl fmt::Display for PlayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { needed, free } => {
                write!(
                    f,
                    "playout buffer full: {needed} samples pushed, room for {free}"
                )
            }
            Self::InvalidConfig { reason } => write!(f, "invalid playout configuration: {reason}"),
        }
    }
}

impl std::error::Error for PlayoutError {}

/// A snapshot of the buffer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlayoutStats {
    /// Samples queued and not discarded by a pending clear.
    pub depth: u64,
    /// Times playback ran dry before the end of a turn.
    pub underruns: u64,
    /// Queued samples handed to the callback (including faded ones).
    pub played: u64,
    /// Samples dropped by `clear` without being played.
    pub discarded: u64,
    /// Silent samples the callback got because nothing was playable.
    pub silence: u64,
    /// Current prebuffer threshold.
    pub threshold: u64,
    /// Samples ever pushed.
    pub pushed: u64,
}

struct Shared {
    slots: Box<[AtomicU32]>,
    /// Total samples pushed (only the writer stores it).
    write: AtomicU64,
    /// Total samples consumed or skipped (only the reader stores it).
    read: AtomicU64,
    /// Write index at the latest `clear`; the reader skips to it.
    clear_to: AtomicU64,
    /// Write index at the latest `end_of_turn`.
    turn_end: AtomicU64,
    underruns: AtomicU64,
    discarded: AtomicU64,
    silence: AtomicU64,
    threshold: AtomicU64,
    /// Target gain, as `f32` bits (only the writer stores it).
    gain: AtomicU32,
}

impl Shared {
    fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    fn slot(&self, index: u64) -> &AtomicU32 {
        &self.slots[(index % self.capacity()) as usize]
    }
}

/// The network side: pushes audio, marks turn ends, requests clears.
pub struct PlayoutWriter {
    shared: Arc<Shared>,
}

/// The audio-callback side: `pull` is wait-free and allocation-free.
pub struct PlayoutReader {
    shared: Arc<Shared>,
    config: PlayoutConfig,
    playing: bool,
    /// The next start follows an underrun, so it fades in.
    fade_in_next: bool,
    threshold: usize,
    steady: usize,
    /// The gain applied now, ramping towards the target.
    gain: f32,
}

/// Make a playout buffer; both halves can be moved to their threads.
///
/// # Errors
/// `InvalidConfig` for a zero capacity or thresholds that exceed it.
pub fn playout_buffer(
    config: PlayoutConfig,
) -> Result<(PlayoutWriter, PlayoutReader), PlayoutError> {
    if config.capacity == 0 {
        return Err(PlayoutError::InvalidConfig {
            reason: "capacity must be positive",
        });
    }
    if config.start_threshold > config.max_threshold || config.max_threshold > config.capacity {
        return Err(PlayoutError::InvalidConfig {
            reason: "need start_threshold <= max_threshold <= capacity",
        });
    }
    let shared = Arc::new(Shared {
        slots: (0..config.capacity).map(|_| AtomicU32::new(0)).collect(),
        write: AtomicU64::new(0),
        read: AtomicU64::new(0),
        clear_to: AtomicU64::new(0),
        turn_end: AtomicU64::new(0),
        underruns: AtomicU64::new(0),
        discarded: AtomicU64::new(0),
        silence: AtomicU64::new(0),
        threshold: AtomicU64::new(config.start_threshold as u64),
        gain: AtomicU32::new(1.0f32.to_bits()),
    });
    let reader = PlayoutReader {
        shared: Arc::clone(&shared),
        config,
        playing: false,
        fade_in_next: false,
        threshold: config.start_threshold,
        steady: 0,
        gain: 1.0,
    };
    Ok((PlayoutWriter { shared }, reader))
}

fn stats_of(shared: &Shared) -> PlayoutStats {
    let read = shared.read.load(Ordering::Acquire);
    let write = shared.write.load(Ordering::Acquire);
    let clear_to = shared.clear_to.load(Ordering::Acquire);
    PlayoutStats {
        depth: write - read.max(clear_to).min(write),
        underruns: shared.underruns.load(Ordering::Relaxed),
        played: read - shared.discarded.load(Ordering::Relaxed),
        discarded: shared.discarded.load(Ordering::Relaxed),
        silence: shared.silence.load(Ordering::Relaxed),
        threshold: shared.threshold.load(Ordering::Relaxed),
        pushed: write,
    }
}

impl PlayoutWriter {
    /// Room for this many more samples right now.
    pub fn free(&self) -> usize {
        let used =
            self.shared.write.load(Ordering::Relaxed) - self.shared.read.load(Ordering::Acquire);
        (self.shared.capacity() - used) as usize
    }

    /// Queue `samples` for playback, all or nothing.
    ///
    /// # Errors
    /// `Full` when they do not all fit; nothing is written then.
    pub fn push(&mut self, samples: &[f32]) -> Result<(), PlayoutError> {
        self.push_with(samples.len(), |i| samples[i])
    }

    /// Queue `count` samples produced by `sample(i)`, all or nothing (lets callers convert
    /// from i16 or bytes straight into the ring).
    ///
    /// # Errors
    /// `Full` when they do not all fit.
    pub fn push_with(
        &mut self,
        count: usize,
        sample: impl Fn(usize) -> f32,
    ) -> Result<(), PlayoutError> {
        let free = self.free();
        if count > free {
            return Err(PlayoutError::Full {
                needed: count,
                free,
            });
        }
        let write = self.shared.write.load(Ordering::Relaxed);
        for i in 0..count {
            self.shared
                .slot(write + i as u64)
                .store(sample(i).to_bits(), Ordering::Relaxed);
        }
        self.shared
            .write
            .store(write + count as u64, Ordering::Release);
        Ok(())
    }

    /// Everything pushed so far is the end of a turn: play it all out, ignoring the threshold.
    pub fn end_of_turn(&mut self) {
        let write = self.shared.write.load(Ordering::Relaxed);
        self.shared.turn_end.store(write, Ordering::Release);
    }

    /// Drop everything queued (barge-in). The reader fades out and skips it at its next pull.
    /// Returns the samples queued at this moment that will not be played in full.
    pub fn clear(&mut self) -> u64 {
        let write = self.shared.write.load(Ordering::Relaxed);
        let read = self.shared.read.load(Ordering::Acquire);
        self.shared.clear_to.store(write, Ordering::Release);
        write - read
    }

    /// Scale what plays from the next callback on (ramped, see the module notes): 1 is full
    /// level, 0 silence; what is queued is kept either way.
    ///
    /// # Errors
    /// `InvalidConfig` for a gain outside 0..=1 (or NaN).
    pub fn set_gain(&mut self, gain: f32) -> Result<(), PlayoutError> {
        if !(0.0..=1.0).contains(&gain) {
            return Err(PlayoutError::InvalidConfig {
                reason: "gain must be within 0..=1",
            });
        }
        self.shared.gain.store(gain.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// The gain last set (the level playback is at or ramping to).
    pub fn gain(&self) -> f32 {
        f32::from_bits(self.shared.gain.load(Ordering::Relaxed))
    }

    /// Counters, readable from any thread.
    pub fn stats(&self) -> PlayoutStats {
        stats_of(&self.shared)
    }
}

impl PlayoutReader {
    /// Counters, as the writer sees them.
    pub fn stats(&self) -> PlayoutStats {
        stats_of(&self.shared)
    }

    fn copy_out(&self, from: u64, out: &mut [f32]) {
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = f32::from_bits(self.shared.slot(from + i as u64).load(Ordering::Relaxed));
        }
    }

    fn fade(out: &mut [f32], rising: bool, fade: usize) {
        let n = out.len().min(fade);
        let (start, end) = if rising {
            (0, n)
        } else {
            (out.len() - n, out.len())
        };
        for (k, v) in out[start..end].iter_mut().enumerate() {
            let step = if rising { k + 1 } else { n - k };
            *v *= step as f32 / (n + 1) as f32;
        }
    }

    fn set_threshold(&mut self, threshold: usize) {
        self.threshold = threshold;
        self.shared
            .threshold
            .store(threshold as u64, Ordering::Relaxed);
    }

    /// Fill `out` with the next samples (silence where there is nothing to play). Wait-free.
    pub fn pull(&mut self, out: &mut [f32]) {
        let mut read = self.shared.read.load(Ordering::Relaxed);
        let mut filled = 0;

        let clear_to = self.shared.clear_to.load(Ordering::Acquire);
        if clear_to > read {
            let skipped = clear_to - read;
            let faded = if self.playing {
                skipped.min(self.config.fade as u64) as usize
            } else {
                0
            };
            let faded = faded.min(out.len());
            self.copy_out(read, &mut out[..faded]);
            Self::fade(&mut out[..faded], false, faded);
            filled = faded;
            self.shared
                .discarded
                .fetch_add(skipped - faded as u64, Ordering::Relaxed);
            read = clear_to;
            self.playing = false;
            self.fade_in_next = false;
        }

        let write = self.shared.write.load(Ordering::Acquire);
        let turn_end = self.shared.turn_end.load(Ordering::Acquire);
        let available = (write - read) as usize;
        let draining = turn_end > read;
        if !self.playing && available > 0 && (available >= self.threshold || draining) {
            self.playing = true;
        }
        if self.playing {
            let wanted = out.len() - filled;
            let n = available.min(wanted);
            let chunk = &mut out[filled..filled + n];
            self.copy_out(read, chunk);
            if self.fade_in_next {
                Self::fade(chunk, true, self.config.fade);
                self.fade_in_next = false;
            }
            read += n as u64;
            filled += n;
            if n < wanted {
                self.playing = false;
                if read == turn_end {
                    // The turn played out in full: not an underrun.
                    self.steady = 0;
                } else {
                    Self::fade(chunk, false, self.config.fade);
                    self.shared.underruns.fetch_add(1, Ordering::Relaxed);
                    self.fade_in_next = true;
                    self.steady = 0;
                    let raised = (self.threshold + self.threshold.max(self.config.fade) / 2)
                        .min(self.config.max_threshold);
                    self.set_threshold(raised);
                }
            } else if self.threshold > self.config.start_threshold {
                self.steady += n;
                if self.steady >= self.config.decay_period {
                    self.steady = 0;
                    let step = (self.threshold - self.config.start_threshold).div_ceil(10);
                    self.set_threshold(self.threshold - step);
                }
            }
        }
        out[filled..].fill(0.0);
        self.apply_gain(&mut out[..filled]);
        self.shared
            .silence
            .fetch_add((out.len() - filled) as u64, Ordering::Relaxed);
        self.shared.read.store(read, Ordering::Release);
    }

    /// Scale `out` by the gain, moving it towards the target by at most one step a sample.
    fn apply_gain(&mut self, out: &mut [f32]) {
        let target = f32::from_bits(self.shared.gain.load(Ordering::Relaxed));
        if self.gain == target {
            if target != 1.0 {
                out.iter_mut().for_each(|v| *v *= target);
            }
            return;
        }
        let step = 1.0 / (4 * self.config.fade.max(1)) as f32;
        for v in out.iter_mut() {
            self.gain = if self.gain < target {
                (self.gain + step).min(target)
            } else {
                (self.gain - step).max(target)
            };
            *v *= self.gain;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PlayoutConfig {
        PlayoutConfig {
            capacity: 1000,
            start_threshold: 10,
            max_threshold: 100,
            fade: 0,
            decay_period: 50,
        }
    }

    fn ramp(from: usize, n: usize) -> Vec<f32> {
        (from..from + n).map(|i| i as f32 + 1.0).collect()
    }

    #[test]
    fn push_pull_and_clear_allocate_nothing() {
        let (mut w, mut r) = playout_buffer(config()).unwrap();
        let input = ramp(0, 64);
        let mut out = [0f32; 4];
        let before = crate::alloc_count::allocations();
        for round in 0..100 {
            w.push(&input[..8]).unwrap();
            r.pull(&mut out); // plays, underruns, fades: every branch of the callback side
            r.pull(&mut out);
            r.pull(&mut out);
            if round % 10 == 0 {
                w.clear();
                w.end_of_turn();
                w.set_gain(if round % 20 == 0 { 0.3 } else { 1.0 }).unwrap();
            }
            let _ = r.stats();
        }
        assert_eq!(crate::alloc_count::allocations(), before);
    }

    #[test]
    fn gain_ramps_to_its_target_and_back_without_a_jump() {
        let config = PlayoutConfig {
            fade: 5,
            ..config()
        };
        let (mut w, mut r) = playout_buffer(config).unwrap();
        w.push(&[1.0; 200]).unwrap();
        w.end_of_turn();
        let mut out = [0f32; 10];
        r.pull(&mut out);
        assert_eq!(out, [1.0; 10], "full level until asked");
        w.set_gain(0.2).unwrap();
        let mut ducked = [0f32; 60];
        r.pull(&mut ducked);
        let steps: Vec<f32> = ducked.windows(2).map(|p| (p[0] - p[1]).abs()).collect();
        assert!(
            steps.iter().all(|&d| d <= 1.0 / 20.0 + 1e-6),
            "no click: {steps:?}"
        );
        assert!((ducked[0] - 0.95).abs() < 1e-6, "the ramp starts at once");
        assert!(
            ducked[20..].iter().all(|&v| (v - 0.2).abs() < 1e-6),
            "there after 0.8 of a 20-sample swing"
        );
        w.set_gain(1.0).unwrap();
        r.pull(&mut ducked);
        assert!(
            ducked[16..].iter().all(|&v| (v - 1.0).abs() < 1e-6),
            "and back"
        );
        assert_eq!(r.stats().played, 130, "ducking drops nothing");
        assert!(
            w.set_gain(1.5).is_err() && w.set_gain(f32::NAN).is_err() && w.set_gain(-0.1).is_err()
        );
        assert_eq!(w.gain(), 1.0, "a refused gain changes nothing");
    }

    #[test]
    fn waits_for_threshold_then_plays_in_order() {
        let (mut w, mut r) = playout_buffer(config()).unwrap();
        let mut out = [9.0f32; 4];
        w.push(&ramp(0, 5)).unwrap();
        r.pull(&mut out);
        assert_eq!(out, [0.0; 4], "below threshold: silence");
        w.push(&ramp(5, 5)).unwrap();
        r.pull(&mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
        r.pull(&mut out);
        assert_eq!(out, [5.0, 6.0, 7.0, 8.0]);
        assert_eq!(r.stats().underruns, 0);
    }

    #[test]
    fn end_of_turn_plays_short_tail_without_underrun() {
        let (mut w, mut r) = playout_buffer(config()).unwrap();
        w.push(&ramp(0, 3)).unwrap();
        w.end_of_turn();
        let mut out = [0.0f32; 5];
        r.pull(&mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 0.0, 0.0]);
        let stats = r.stats();
        assert_eq!((stats.underruns, stats.played, stats.depth), (0, 3, 0));
    }

    #[test]
    fn underrun_counts_and_raises_threshold_then_decays() {
        let (mut w, mut r) = playout_buffer(config()).unwrap();
        w.push(&ramp(0, 10)).unwrap();
        let mut out = [0.0f32; 8];
        r.pull(&mut out);
        r.pull(&mut out);
        assert_eq!(&out[..2], &[9.0, 10.0]);
        assert_eq!(r.stats().underruns, 1);
        assert_eq!(r.stats().threshold, 15);
        // Below the raised threshold nothing plays.
        w.push(&ramp(10, 12)).unwrap();
        r.pull(&mut out);
        assert_eq!(out, [0.0; 8]);
        w.push(&ramp(22, 200)).unwrap();
        for _ in 0..20 {
            r.pull(&mut out);
        }
        assert!(r.stats().threshold < 15, "decays with steady playback");
    }

    #[test]
    fn full_is_refused_whole() {
        let (mut w, _r) = playout_buffer(config()).unwrap();
        w.push(&[0.5; 990]).unwrap();
        assert_eq!(
            w.push(&[0.5; 11]),
            Err(PlayoutError::Full {
                needed: 11,
                free: 10
            })
        );
        assert_eq!(w.stats().pushed, 990);
        w.push(&[0.5; 10]).unwrap();
    }

    #[test]
    fn clear_skips_queued_audio_with_fade_and_keeps_later_pushes() {
        let cfg = PlayoutConfig {
            fade: 4,
            ..config()
        };
        let (mut w, mut r) = playout_buffer(cfg).unwrap();
        w.push(&[1.0; 100]).unwrap();
        let mut out = [0.0f32; 10];
        r.pull(&mut out);
        assert_eq!(w.clear(), 90);
        w.push(&[0.25; 20]).unwrap();
        r.pull(&mut out);
        assert_eq!(&out[..4], &[0.8, 0.6, 0.4, 0.2]);
        assert!(
            out[4..].iter().all(|v| *v == 0.25),
            "new audio after the clear plays: {out:?}"
        );
        let stats = r.stats();
        assert_eq!(stats.discarded, 86);
        assert_eq!(stats.played, 10 + 4 + 6);
    }

    #[test]
    fn wraps_around_the_ring() {
        let (mut w, mut r) = playout_buffer(config()).unwrap();
        let mut next = 0;
        let mut expected = 0;
        let mut out = [0.0f32; 64];
        for _ in 0..100 {
            w.push(&ramp(next, 64)).unwrap();
            next += 64;
            r.pull(&mut out);
            for v in out {
                if v != 0.0 {
                    expected += 1;
                    assert_eq!(v, expected as f32);
                }
            }
        }
    }

    #[test]
    fn halves_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PlayoutWriter>();
        assert_send::<PlayoutReader>();
    }

    #[test]
    fn concurrent_push_and_pull_lose_nothing() {
        let (mut w, mut r) = playout_buffer(PlayoutConfig {
            capacity: 256,
            ..config()
        })
        .unwrap();
        let total = 200_000usize;
        let producer = std::thread::spawn(move || {
            let mut next = 0;
            while next < total {
                let n = (total - next).min(37);
                if w.push(&ramp(next, n)).is_ok() {
                    next += n;
                } else {
                    std::thread::yield_now();
                }
            }
            w.end_of_turn();
        });
        let mut seen = 0usize;
        let mut out = [0.0f32; 29];
        while seen < total {
            r.pull(&mut out);
            for v in out {
                if v != 0.0 {
                    seen += 1;
                    assert_eq!(v, seen as f32);
                }
            }
        }
        producer.join().unwrap();
    }
}
