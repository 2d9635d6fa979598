//! Streaming sample-rate conversion by polyphase FIR filters.
//!
//! Design (see `../shared/audio-notes.md` §2.4): a tone up to 0.9 x the lower Nyquist
//! frequency passes flat (within 0.02 dB). Decimating, the stop band starts at the output
//! Nyquist frequency; interpolating, at 1.1 x the input Nyquist frequency, where the first
//! image of a 0.9 x tone lies, which halves the taps (and for 2x makes every other output an
//! exact copy). Aliases and images are about 138 dB down on every path (soxr HQ's worst is
//! about 128 dB for 48k -> 16k).
//!
//! The ratios a voice app runs all day use fixed equiripple filters ([`folded`], designed by
//! `design_tables.py`): 48k -> 24k (half-band) -> 16k (3:2), the 3:2 step after any other
//! large decimation, and 2x interpolation. Their symmetric branches fold, so each pair of taps
//! costs one multiply-add. Other ratios use a Kaiser-windowed sinc for any ratio
//! ([`PolyphaseStage`]). 48k -> 16k delays by 4 ms, where soxr HQ withholds 10-28 ms in
//! streaming use.
//!
//! Output `n` is the band-limited input evaluated at input time `n * in / out`, so the output
//! is aligned with the input; the resampler withholds [`Resampler::delay_samples`] outputs
//! until the input that the filter's right half needs has arrived, and `flush` releases them.
//! Every output is computed by the same arithmetic whatever the chunking, so any split of the
//! input gives bit-identical output.

mod folded;
mod tables;
mod transposed;

use std::fmt;

use folded::FoldedStage;
use tables::Prototype;
use transposed::TransposedBank;

/// Lowest and highest rates accepted, in Hz.
pub const MIN_RATE_HZ: u32 = 8_000;
/// See [`MIN_RATE_HZ`].
pub const MAX_RATE_HZ: u32 = 192_000;
/// Attenuation designed for the Kaiser stop band: as far down as the fixed equiripple
/// designs (about -138 dB), so every rate pair rejects aliases better than soxr HQ does.
pub const STOPBAND_DB: f64 = 140.0;
/// Pass band edge as a fraction of the lower Nyquist frequency.
pub const PASSBAND_FRACTION: f64 = 0.9;
/// Above this many polyphase branches, branches are interpolated from a table of this size
/// instead of being stored one per phase (only odd rate pairs like 44101 -> 16000 need it).
const MAX_EXACT_PHASES: usize = 1024;
/// Taps per branch are a multiple of this (one 8-lane accumulator per output).
const TAP_BLOCK: usize = 8;
/// Outputs computed together: independent FMA chains, and shared coefficient loads.
const OUTPUT_BLOCK: usize = 8;
/// Interpolation factors up to this use the shared-branch grouping (48k -> 16k, 24k -> 48k).
const SHARED_MAX_UP: usize = 4;

/// Why a resampler could not be made or fed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResampleError {
    /// A rate outside [`MIN_RATE_HZ`, `MAX_RATE_HZ`].
    UnsupportedRate { rate: u32, min: u32, max: u32 },
    /// Zero channels, or more than [`crate::pcm::MAX_CHANNELS`].
    InvalidChannels { channels: usize },
    /// Interleaved input that is not a whole number of frames.
    PartialFrame { len: usize, channels: usize },
    /// The output buffer given to `process_into` is too small.
    OutputTooSmall { needed: usize, given: usize },
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedRate { rate, min, max } => {
                write!(
                    f,
                    "sample rate {rate} Hz is outside the supported {min}..={max} Hz"
                )
            }
            Self::InvalidChannels { channels } => write!(f, "invalid channel count {channels}"),
            Self::PartialFrame { len, channels } => write!(
                f,
                "{len} samples is not a whole number of {channels}-channel frames"
            ),
            Self::OutputTooSmall { needed, given } => {
                write!(
                    f,
                    "output buffer holds {given} samples, {needed} are needed"
                )
            }
        }
    }
}

impl std::error::Error for ResampleError {}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zeroth-order modified Bessel function of the first kind (series; converges fast for the
/// beta values used here).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..200 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn kaiser_beta(attenuation_db: f64) -> f64 {
    if attenuation_db > 50.0 {
        0.1102 * (attenuation_db - 8.7)
    } else if attenuation_db >= 21.0 {
        0.5842 * (attenuation_db - 21.0).powf(0.4) + 0.07886 * (attenuation_db - 21.0)
    } else {
        0.0
    }
}

/// The polyphase filter: `phases` branches of `taps` coefficients, branch `p` holding the
/// kernel sampled at offsets `p / phases + taps/2 - 1 - j` (j = 0..taps) input samples.
#[derive(Clone)]
struct FilterBank {
    taps: usize,
    phases: usize,
    coefficients: Vec<f32>,
    /// For each branch that is a unit impulse, the tap it picks: such outputs are copies.
    impulses: Vec<Option<usize>>,
}

impl FilterBank {
    /// `band` is (end of the pass band, start of the stop band) in Hz; the taps per branch are
    /// a multiple of `tap_multiple` (even, so that `taps / 2` centres the kernel).
    fn design(input_rate: u32, phases: usize, band: (f64, f64), tap_multiple: usize) -> Self {
        let fs_in = f64::from(input_rate);
        let (passband, stopband) = (band.0 / fs_in, band.1 / fs_in); // cycles per input sample
        let transition = stopband - passband;
        let cutoff = (passband + stopband) / 2.0;
        let beta = kaiser_beta(STOPBAND_DB);
        let length = (STOPBAND_DB - 8.0) / (2.285 * 2.0 * std::f64::consts::PI * transition) + 1.0;
        let taps = (length.ceil() as usize).div_ceil(tap_multiple) * tap_multiple;
        let half_width = taps as f64 / 2.0;
        let i0_beta = bessel_i0(beta);
        // One extra branch at the end (phase == phases) lets interpolated banks read p + 1.
        let mut coefficients = vec![0f32; (phases + 1) * taps];
        for (p, branch) in coefficients.chunks_exact_mut(taps).enumerate() {
            let mut values = vec![0f64; taps];
            for (j, value) in values.iter_mut().enumerate() {
                let d = p as f64 / phases as f64 + half_width - 1.0 - j as f64;
                let u = d / half_width;
                if u.abs() >= 1.0 {
                    continue;
                }
                let x = 2.0 * cutoff * d;
                let sinc = if x == 0.0 {
                    1.0
                } else {
                    (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                };
                let window = bessel_i0(beta * (1.0 - u * u).sqrt()) / i0_beta;
                *value = 2.0 * cutoff * sinc * window;
            }
            // Unit gain at DC for every branch: no ripple at the phase rate.
            let sum: f64 = values.iter().sum();
            let peak = values.iter().fold(0f64, |m, v| m.max(v.abs()));
            let significant = values.iter().filter(|v| v.abs() > peak * 1e-9).count();
            for (c, v) in branch.iter_mut().zip(&values) {
                *c = if significant == 1 {
                    // A branch that samples the sinc at its zeros is an impulse: make it exact.
                    f32::from(u8::from(v.abs() == peak))
                } else {
                    (v / sum) as f32
                };
            }
        }
        let impulses = coefficients
            .chunks_exact(taps)
            .map(|branch| {
                let ones = branch.iter().filter(|c| **c == 1.0).count();
                let zeros = branch.iter().filter(|c| **c == 0.0).count();
                (ones == 1 && zeros == taps - 1)
                    .then(|| branch.iter().position(|c| *c == 1.0).unwrap_or(0))
            })
            .collect();
        Self {
            taps,
            phases,
            coefficients,
            impulses,
        }
    }

    /// The bank of a fixed prototype on the `up`-phase grid (`tables`), scaled to unit DC gain
    /// per branch on average (not each branch: that would disturb the minimax design), with
    /// taps per branch a multiple of `tap_multiple` (even) covering its support.
    fn from_prototype(prototype: &Prototype, tap_multiple: usize) -> Self {
        let phases = prototype.up as usize;
        let half = prototype.half;
        let reach = (half.len() - 1) / phases + 1; // input samples each side of the centre
        let taps = (2 * reach).div_ceil(tap_multiple) * tap_multiple;
        let half_width = (taps / 2) as isize;
        let scale = phases as f64 / (half[0] + 2.0 * half[1..].iter().sum::<f64>());
        let mut coefficients = vec![0f32; (phases + 1) * taps];
        for (p, branch) in coefficients.chunks_exact_mut(taps).enumerate() {
            for (j, c) in branch.iter_mut().enumerate() {
                // Offset p / phases + half_width - 1 - j input samples, in grid steps.
                let g = p as isize + phases as isize * (half_width - 1 - j as isize);
                if let Some(v) = half.get(g.unsigned_abs()) {
                    *c = (v * scale) as f32;
                }
            }
        }
        Self {
            taps,
            phases,
            coefficients,
            impulses: vec![None; phases + 1],
        }
    }

    fn branch(&self, phase: usize) -> &[f32] {
        &self.coefficients[phase * self.taps..(phase + 1) * self.taps]
    }
}

/// The instruction set the kernels run on, detected once per stage. Each kind of stage adds
/// its kernels as methods: the dot products here, `folded_*` in [`folded`],
/// `transposed_blocks` in [`transposed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Self::Avx2Fma;
        }
        Self::Portable
    }
}

/// The dot-product kernels. Each output always uses one 8-lane accumulator over its taps in
/// order, reduced in a fixed order, whichever kernel (and block size) computes it: that is
/// what makes the output independent of chunking. Blocks of outputs give the independent
/// FMA chains that hide latency, and share coefficient loads where the branch is shared.
impl Kernel {
    /// `out[b] = dot(h, xs[b])` for `B` windows sharing one coefficient branch.
    #[inline]
    fn dots_shared<const B: usize>(self, h: &[f32], xs: [&[f32]; B]) -> [f32; B] {
        for x in &xs {
            assert!(x.len() >= h.len() && h.len() % TAP_BLOCK == 0);
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and FMA (checked in `detect`); lengths checked above.
            Self::Avx2Fma => unsafe { avx::dots_shared(h, xs) },
            Self::Portable => portable::dots_pairs([h; B], xs),
        }
    }

    /// `out[b] = dot(hs[b], xs[b])` for `B` independent windows and branches of one length.
    #[inline]
    fn dots_pairs<const B: usize>(self, hs: [&[f32]; B], xs: [&[f32]; B]) -> [f32; B] {
        for (h, x) in hs.iter().zip(&xs) {
            assert!(x.len() >= h.len() && h.len() == hs[0].len() && h.len() % TAP_BLOCK == 0);
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `dots_shared`.
            Self::Avx2Fma => unsafe { avx::dots_pairs(hs, xs) },
            Self::Portable => portable::dots_pairs(hs, xs),
        }
    }
}

mod portable {
    use super::TAP_BLOCK;

    /// Same order as `avx::reduce`.
    fn reduce(l: [f32; 8]) -> f32 {
        ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }

    pub(super) fn dots_pairs<const B: usize>(hs: [&[f32]; B], xs: [&[f32]; B]) -> [f32; B] {
        std::array::from_fn(|b| {
            let mut acc = [0f32; 8];
            for (hc, xc) in hs[b]
                .chunks_exact(TAP_BLOCK)
                .zip(xs[b].chunks_exact(TAP_BLOCK))
            {
                for ((a, c), s) in acc.iter_mut().zip(hc).zip(xc) {
                    *a += c * s;
                }
            }
            reduce(acc)
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::TAP_BLOCK;
    use std::arch::x86_64::{
        __m256, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps,
    };

    /// Lanes (0+4),(2+6) then (1+5),(3+7), as `portable::reduce`.
    #[target_feature(enable = "avx2,fma")]
    fn reduce(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
    }

    /// # Safety
    /// Needs AVX2 and FMA; every `xs[b]` at least as long as `h`, `h.len() % 8 == 0`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots_shared<const B: usize>(h: &[f32], xs: [&[f32]; B]) -> [f32; B] {
        let mut acc = [_mm256_setzero_ps(); B];
        let mut j = 0;
        while j < h.len() {
            // SAFETY: j + 8 <= h.len() <= xs[b].len(), per the caller's contract.
            unsafe {
                let coefficients = _mm256_loadu_ps(h.as_ptr().add(j));
                for b in 0..B {
                    acc[b] = _mm256_fmadd_ps(
                        coefficients,
                        _mm256_loadu_ps(xs[b].as_ptr().add(j)),
                        acc[b],
                    );
                }
            }
            j += TAP_BLOCK;
        }
        acc.map(|a| reduce(a))
    }

    /// # Safety
    /// Needs AVX2 and FMA; all `hs` of one length, a multiple of 8; `xs[b]` at least as long.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots_pairs<const B: usize>(hs: [&[f32]; B], xs: [&[f32]; B]) -> [f32; B] {
        let mut acc = [_mm256_setzero_ps(); B];
        let mut j = 0;
        while j < hs[0].len() {
            for b in 0..B {
                // SAFETY: j + 8 <= hs[b].len() <= xs[b].len(), per the caller's contract.
                unsafe {
                    let h = _mm256_loadu_ps(hs[b].as_ptr().add(j));
                    acc[b] = _mm256_fmadd_ps(h, _mm256_loadu_ps(xs[b].as_ptr().add(j)), acc[b]);
                }
            }
            j += TAP_BLOCK;
        }
        acc.map(|a| reduce(a))
    }
}

/// `render(channel, out)` for each channel's `count` outputs, interleaved into `output`
/// (through `scratch` when there are several channels); returns the samples written.
fn render_channels(
    channels: usize,
    count: usize,
    output: &mut [f32],
    scratch: &mut Vec<f32>,
    mut render: impl FnMut(usize, &mut [f32]),
) -> usize {
    if channels == 1 {
        render(0, &mut output[..count]);
        return count;
    }
    scratch.resize(count, 0.0);
    for c in 0..channels {
        render(c, scratch);
        for (frame, value) in output[..count * channels]
            .chunks_exact_mut(channels)
            .zip(scratch.iter())
        {
            frame[c] = *value;
        }
    }
    count * channels
}

/// Where output `n` reads: the start of its window in the padded input, and its branch.
#[derive(Clone, Copy)]
struct Tap {
    window_start: u64,
    phase: usize,
    /// Interpolation weight towards `phase + 1` (interpolated banks only).
    fraction: f32,
}

/// A polyphase FIR stage with a Kaiser-windowed sinc, for any ratio.
#[derive(Clone)]
struct PolyphaseStage {
    output_rate: u32,
    channels: usize,
    /// Output/input ratio reduced: up / down.
    up: u64,
    down: u64,
    bank: FilterBank,
    /// True when `bank` is an interpolated table rather than one branch per phase.
    interpolated: bool,
    /// The bank rearranged to compute eight consecutive outputs at once, when it is small.
    transposed: Option<TransposedBank>,
    kernel: Kernel,
    /// Per-channel input history, starting at padded input index `origin`.
    history: Vec<Vec<f32>>,
    origin: u64,
    /// Real input samples (per channel) received since the last reset.
    received: u64,
    /// Outputs (per channel) produced since the last reset.
    produced: u64,
    /// Per-channel output scratch for multichannel input.
    scratch: Vec<f32>,
}

impl PolyphaseStage {
    /// A Kaiser-windowed sinc for `band` (end of the pass band, start of the stop band, Hz).
    fn new(input_rate: u32, output_rate: u32, channels: usize, band: (f64, f64)) -> Self {
        let g = gcd(u64::from(input_rate), u64::from(output_rate));
        let up = u64::from(output_rate) / g;
        let down = u64::from(input_rate) / g;
        let interpolated = up as usize > MAX_EXACT_PHASES;
        let phases = if interpolated {
            MAX_EXACT_PHASES
        } else {
            up as usize
        };
        let design = |tap_multiple| FilterBank::design(input_rate, phases, band, tap_multiple);
        Self::with_bank(design, up, down, interpolated, output_rate, channels)
    }

    /// A fixed prototype from `tables` (its `up` and `down` are the stage's ratio).
    fn from_table(prototype: &'static Prototype, output_rate: u32, channels: usize) -> Self {
        let design = |tap_multiple| FilterBank::from_prototype(prototype, tap_multiple);
        let (up, down) = (prototype.up, prototype.down);
        Self::with_bank(design, up, down, false, output_rate, channels)
    }

    /// `design(tap_multiple)` makes the bank: the transposed tables take any even length, the
    /// dot-product kernels multiples of 8.
    fn with_bank(
        design: impl Fn(usize) -> FilterBank,
        up: u64,
        down: u64,
        interpolated: bool,
        output_rate: u32,
        channels: usize,
    ) -> Self {
        let mut transposed = None;
        let mut bank = design(TAP_BLOCK);
        if !interpolated && up as usize > SHARED_MAX_UP {
            let exact = design(2);
            transposed = TransposedBank::new(|p| exact.branch(p), exact.taps, up, down);
            if transposed.is_some() {
                bank = exact;
            }
        }
        let mut stage = Self {
            output_rate,
            channels,
            up,
            down,
            bank,
            interpolated,
            transposed,
            kernel: Kernel::detect(),
            history: vec![Vec::new(); channels],
            origin: 0,
            received: 0,
            produced: 0,
            scratch: Vec::new(),
        };
        stage.reset();
        stage
    }

    /// Zeros in front of the first input sample so that output 0 is centred on input 0.
    fn lead(&self) -> u64 {
        self.bank.taps as u64 / 2 - 1
    }

    /// Outputs withheld in steady state until later input arrives (per channel).
    fn delay_samples(&self) -> f64 {
        (self.bank.taps / 2) as f64 * self.up as f64 / self.down as f64
    }

    fn reset(&mut self) {
        let lead = self.lead() as usize;
        for h in &mut self.history {
            h.clear();
            h.resize(lead, 0.0);
        }
        self.origin = 0;
        self.received = 0;
        self.produced = 0;
    }

    fn tap(&self, n: u64) -> Tap {
        let position = n * self.down;
        let window_start = position / self.up;
        let remainder = position % self.up;
        if self.interpolated {
            let scaled = remainder as f64 * self.bank.phases as f64 / self.up as f64;
            let phase = scaled.floor() as usize;
            Tap {
                window_start,
                phase,
                fraction: (scaled - phase as f64) as f32,
            }
        } else {
            Tap {
                window_start,
                phase: remainder as usize,
                fraction: 0.0,
            }
        }
    }

    /// Total outputs computable once `padded_len` padded input samples are present.
    fn computable(&self, padded_len: u64) -> u64 {
        let taps = self.bank.taps as u64;
        if padded_len < taps {
            return 0;
        }
        // Output n needs window_start(n) + taps <= padded_len.
        let last_start = padded_len - taps;
        ((last_start + 1) * self.up - 1) / self.down + 1
    }

    /// Output samples (all channels) that `process_into` of `input_len` samples returns.
    fn output_len_max(&self, input_len: usize) -> usize {
        let frames = (input_len / self.channels) as u64;
        let padded = self.lead() + self.received + frames;
        (self.computable(padded) - self.produced) as usize * self.channels
    }

    fn append(&mut self, input: &[f32]) {
        if self.channels == 1 {
            self.history[0].extend_from_slice(input);
        } else {
            for (c, h) in self.history.iter_mut().enumerate() {
                h.extend(input.iter().skip(c).step_by(self.channels));
            }
        }
    }

    /// Compute outputs `self.produced..end` into `output` (interleaved), then drop history
    /// no later output needs.
    fn render(&mut self, end: u64, output: &mut [f32]) -> usize {
        let count = (end - self.produced) as usize;
        let mut scratch = std::mem::take(&mut self.scratch);
        let total = render_channels(self.channels, count, output, &mut scratch, |c, out| {
            self.render_channel(c, count, out);
        });
        self.scratch = scratch;
        self.produced = end;
        let keep_from = match &self.transposed {
            Some(t) => t.keep_from(self.produced),
            None => self.tap(self.produced).window_start,
        };
        let drop = (keep_from - self.origin) as usize;
        if drop > 0 {
            for h in &mut self.history {
                h.drain(..drop.min(h.len()));
            }
            self.origin += drop as u64;
        }
        total
    }

    fn render_channel(&self, channel: usize, count: usize, out: &mut [f32]) {
        let history = &self.history[channel];
        if let Some(transposed) = &self.transposed {
            let end = self.produced + count as u64;
            transposed.render(history, self.origin, self.produced, end, out);
            return;
        }
        let taps = self.bank.taps;
        let origin = self.origin;
        let window = |start: u64| {
            let start = (start - origin) as usize;
            &history[start..start + taps]
        };
        // Walk the output positions incrementally: no division per output.
        let (step_whole, step_rem) = (self.down / self.up, self.down % self.up);
        let mut cursor = self.tap(self.produced);
        let mut remainder = (self.produced * self.down) % self.up;
        let advance = |cursor: &mut Tap, remainder: &mut u64| {
            cursor.window_start += step_whole;
            *remainder += step_rem;
            if *remainder >= self.up {
                *remainder -= self.up;
                cursor.window_start += 1;
            }
            if self.interpolated {
                let scaled = *remainder as f64 * self.bank.phases as f64 / self.up as f64;
                cursor.phase = scaled.floor() as usize;
                cursor.fraction = (scaled - cursor.phase as f64) as f32;
            } else {
                cursor.phase = *remainder as usize;
            }
        };
        if self.interpolated {
            for slot in out.iter_mut().take(count) {
                let x = window(cursor.window_start);
                let branches = [
                    self.bank.branch(cursor.phase),
                    self.bank.branch(cursor.phase + 1),
                ];
                let [a, b] = self.kernel.dots_pairs(branches, [x, x]);
                *slot = a + (b - a) * cursor.fraction;
                advance(&mut cursor, &mut remainder);
            }
            return;
        }
        let up = self.up as usize;
        let mut i = 0;
        if up <= SHARED_MAX_UP {
            // Outputs n, n + up, n + 2 up, n + 3 up share a branch and their windows lie
            // `down` input samples apart: compute them together, sharing coefficient loads.
            let group = OUTPUT_BLOCK * up;
            while i + group <= count {
                for r in 0..up {
                    let xs: [&[f32]; OUTPUT_BLOCK] =
                        std::array::from_fn(|k| window(cursor.window_start + k as u64 * self.down));
                    let values = match self.bank.impulses[cursor.phase] {
                        Some(tap) => xs.map(|x| x[tap]),
                        None => self.kernel.dots_shared(self.bank.branch(cursor.phase), xs),
                    };
                    for (k, v) in values.into_iter().enumerate() {
                        out[i + r + k * up] = v;
                    }
                    advance(&mut cursor, &mut remainder);
                }
                // `up` outputs done from the group's first row; skip the other three rows.
                cursor.window_start += (OUTPUT_BLOCK as u64 - 1) * self.down;
                i += group;
            }
        } else {
            while i + OUTPUT_BLOCK <= count {
                let mut block = [cursor; OUTPUT_BLOCK];
                for slot in block.iter_mut().skip(1) {
                    advance(&mut cursor, &mut remainder);
                    *slot = cursor;
                }
                advance(&mut cursor, &mut remainder);
                let values = self.kernel.dots_pairs(
                    block.map(|t| self.bank.branch(t.phase)),
                    block.map(|t| window(t.window_start)),
                );
                out[i..i + OUTPUT_BLOCK].copy_from_slice(&values);
                // Impulse branches are copies on every path, so results never depend on it.
                for (k, t) in block.iter().enumerate() {
                    if let Some(tap) = self.bank.impulses[t.phase] {
                        out[i + k] = window(t.window_start)[tap];
                    }
                }
                i += OUTPUT_BLOCK;
            }
        }
        for slot in out.iter_mut().take(count).skip(i) {
            let [v] = self.kernel.dots_shared(
                self.bank.branch(cursor.phase),
                [window(cursor.window_start)],
            );
            *slot = v;
            advance(&mut cursor, &mut remainder);
        }
    }

    /// Resample whole frames of interleaved `input` into `output` (at least
    /// `output_len_max(input.len())` long); returns the samples written.
    fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> usize {
        self.append(input);
        self.received += (input.len() / self.channels) as u64;
        let end = self.computable(self.lead() + self.received);
        self.render(end, output)
    }

    /// Render everything up to output `owed` (zero-padding the input), then reset.
    fn flush_to(&mut self, owed: u64) -> Vec<f32> {
        let mut output = Vec::new();
        if owed > self.produced {
            let last = self.tap(owed - 1);
            let padded_needed = last.window_start + self.bank.taps as u64;
            let present = self.origin + self.history[0].len() as u64;
            let zeros = padded_needed.saturating_sub(present) as usize;
            for h in &mut self.history {
                h.resize(h.len() + zeros, 0.0);
            }
            output.resize((owed - self.produced) as usize * self.channels, 0.0);
            let written = self.render(owed, &mut output);
            output.truncate(written);
        }
        self.reset();
        output
    }

    /// Outputs owed for the input so far: n < ceil(received * up / down).
    fn owed(&self) -> u64 {
        (self.received * self.up).div_ceil(self.down)
    }
}

/// One step of a resampler: a general polyphase stage, or a folded one for the fixed designs.
#[derive(Clone)]
enum Stage {
    /// Same rate: the input, untouched and undelayed.
    Identity {
        output_rate: u32,
    },
    Polyphase(PolyphaseStage),
    Folded(FoldedStage),
}

impl Stage {
    fn kaiser(input_rate: u32, output_rate: u32, channels: usize, band: (f64, f64)) -> Self {
        Self::Polyphase(PolyphaseStage::new(input_rate, output_rate, channels, band))
    }

    fn folded(prototype: &'static Prototype, output_rate: u32, channels: usize) -> Self {
        Self::Folded(FoldedStage::new(prototype, output_rate, channels))
    }

    fn table(prototype: &'static Prototype, output_rate: u32, channels: usize) -> Self {
        Self::Polyphase(PolyphaseStage::from_table(prototype, output_rate, channels))
    }

    fn output_rate(&self) -> u32 {
        match self {
            Self::Identity { output_rate, .. } => *output_rate,
            Self::Polyphase(s) => s.output_rate,
            Self::Folded(s) => s.output_rate(),
        }
    }

    /// Multiply-adds per output of this stage.
    fn taps(&self) -> usize {
        match self {
            Self::Identity { .. } => 0,
            Self::Polyphase(s) => s.bank.taps,
            Self::Folded(s) => s.taps(),
        }
    }

    fn delay_samples(&self) -> f64 {
        match self {
            Self::Identity { .. } => 0.0,
            Self::Polyphase(s) => s.delay_samples(),
            Self::Folded(s) => s.delay_samples(),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Identity { .. } => {}
            Self::Polyphase(s) => s.reset(),
            Self::Folded(s) => s.reset(),
        }
    }

    fn output_len_max(&self, input_len: usize) -> usize {
        match self {
            Self::Identity { .. } => input_len,
            Self::Polyphase(s) => s.output_len_max(input_len),
            Self::Folded(s) => s.output_len_max(input_len),
        }
    }

    fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> usize {
        match self {
            Self::Identity { .. } => {
                output[..input.len()].copy_from_slice(input);
                input.len()
            }
            Self::Polyphase(s) => s.process_into(input, output),
            Self::Folded(s) => s.process_into(input, output),
        }
    }

    fn flush_to(&mut self, owed: u64) -> Vec<f32> {
        match self {
            Self::Identity { .. } => Vec::new(),
            Self::Polyphase(s) => s.flush_to(owed),
            Self::Folded(s) => s.flush_to(owed),
        }
    }

    fn owed(&self) -> u64 {
        match self {
            Self::Identity { .. } => 0,
            Self::Polyphase(s) => s.owed(),
            Self::Folded(s) => s.owed(),
        }
    }
}

/// Run `input` through `stages`, each but the last writing into its `between` buffer.
fn run_chain(
    stages: &mut [Stage],
    between: &mut [Vec<f32>],
    input: &[f32],
    output: &mut [f32],
) -> usize {
    match (stages, between) {
        ([last], []) => last.process_into(input, output),
        ([first, rest @ ..], [buffer, buffers @ ..]) => {
            let needed = first.output_len_max(input.len());
            if buffer.len() < needed {
                buffer.resize(needed, 0.0);
            }
            let n = first.process_into(input, buffer);
            run_chain(rest, buffers, &buffer[..n], output)
        }
        _ => unreachable!("one buffer between each two stages"),
    }
}

/// A streaming resampler for interleaved f32 audio.
///
/// Large decimations run in steps (see `decimation`) that end in one sharp filter at 1.5 x
/// the output rate: far fewer multiply-adds than one sharp filter at the input rate, for
/// under 1 ms more delay.
///
/// Allocation happens in `new` and when a call brings more input than any before it; the
/// `process_into` path with a caller's buffer allocates nothing in steady state.
#[derive(Clone)]
pub struct Resampler {
    input_rate: u32,
    output_rate: u32,
    channels: usize,
    stages: Vec<Stage>,
    /// Output of each stage but the last.
    between: Vec<Vec<f32>>,
    received: u64,
    produced: u64,
}

impl fmt::Debug for Resampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resampler")
            .field("input_rate", &self.input_rate)
            .field("output_rate", &self.output_rate)
            .field("channels", &self.channels)
            .field("stages", &self.stages.len())
            .field("taps", &self.taps())
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// A resampler from `input_rate` to `output_rate` Hz for `channels` interleaved channels.
    ///
    /// # Errors
    /// `UnsupportedRate` outside 8..=192 kHz, `InvalidChannels` for 0 or more than 64.
    pub fn new(input_rate: u32, output_rate: u32, channels: usize) -> Result<Self, ResampleError> {
        for rate in [input_rate, output_rate] {
            if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&rate) {
                return Err(ResampleError::UnsupportedRate {
                    rate,
                    min: MIN_RATE_HZ,
                    max: MAX_RATE_HZ,
                });
            }
        }
        if channels == 0 || channels > crate::pcm::MAX_CHANNELS {
            return Err(ResampleError::InvalidChannels { channels });
        }
        let fs_in = f64::from(input_rate);
        let stages = if output_rate == input_rate {
            vec![Stage::Identity { output_rate }]
        } else if output_rate == 2 * input_rate {
            vec![Stage::folded(&tables::HALFBAND_UP_2, output_rate, channels)]
        } else if output_rate > input_rate {
            // Interpolation: the images of a tone at f lie at fs_in - f and above, so with the
            // pass band ending at 0.9 of the input Nyquist frequency they start at 1.1 of it.
            // The transition is symmetric about the input Nyquist frequency: half the taps of
            // one that ends there.
            let nyquist_in = fs_in / 2.0;
            let band = (
                PASSBAND_FRACTION * nyquist_in,
                (2.0 - PASSBAND_FRACTION) * nyquist_in,
            );
            vec![Stage::kaiser(input_rate, output_rate, channels, band)]
        } else {
            Self::decimation(input_rate, output_rate, channels)
        };
        Ok(Self {
            input_rate,
            output_rate,
            channels,
            between: vec![Vec::new(); stages.len() - 1],
            stages,
            received: 0,
            produced: 0,
        })
    }

    /// The steps from `input_rate` down to `output_rate`: half-band 2:1 steps while the rate
    /// is at least 3 x the output (cheap, and they leave the sharp filter a lower input rate),
    /// then the fixed 3:2 filter from 1.5 x the output rate, reached by a short Kaiser stage
    /// whose wide transition only has to keep out what would fold below the output Nyquist
    /// frequency. 48k -> 24k -> 16k; 44.1k -> 24k -> 16k (measured: faster than a half-band
    /// to 22.05k first, one stage fewer).
    fn decimation(input_rate: u32, output_rate: u32, channels: usize) -> Vec<Stage> {
        let nyquist_out = f64::from(output_rate) / 2.0;
        let sharp = (PASSBAND_FRACTION * nyquist_out, nyquist_out);
        let even_output = output_rate % 2 == 0;
        let mut stages = Vec::new();
        let mut rate = input_rate;
        while even_output && rate % 2 == 0 && rate >= 3 * output_rate {
            rate /= 2;
            stages.push(Stage::folded(&tables::HALFBAND_DOWN_2_OF_3, rate, channels));
        }
        let middle = output_rate / 2 * 3;
        if 2 * rate == 3 * output_rate {
            stages.push(Stage::folded(&tables::SHARP_3_2, output_rate, channels));
        } else if even_output && (rate >= 2 * output_rate || !stages.is_empty()) {
            let wide = (sharp.0, f64::from(middle) - nyquist_out);
            let table = &tables::WIDE_44K1_TO_24K;
            stages.push(
                if u64::from(rate) * table.up == u64::from(middle) * table.down {
                    Stage::table(table, middle, channels)
                } else {
                    Stage::kaiser(rate, middle, channels, wide)
                },
            );
            stages.push(Stage::folded(&tables::SHARP_3_2, output_rate, channels));
        } else {
            stages.push(Stage::kaiser(rate, output_rate, channels, sharp));
        }
        stages
    }

    /// Input rate in Hz.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Output rate in Hz.
    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Interleaved channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Multiply-adds per output sample and channel, over all stages.
    pub fn taps(&self) -> usize {
        self.stages
            .iter()
            .map(|s| {
                (s.taps() as u64 * u64::from(s.output_rate()) / u64::from(self.output_rate))
                    as usize
            })
            .sum()
    }

    /// Outputs withheld in steady state until later input arrives: the resampler's latency,
    /// in output samples (per channel). `flush` releases them.
    pub fn delay_samples(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| s.delay_samples() * f64::from(self.output_rate) / f64::from(s.output_rate()))
            .sum()
    }

    /// Forget all history, as if newly made.
    pub fn reset(&mut self) {
        for stage in &mut self.stages {
            stage.reset();
        }
        self.received = 0;
        self.produced = 0;
    }

    /// Output samples (all channels) that `process` of `input_len` interleaved samples
    /// returns; use it to size `process_into`'s buffer.
    pub fn output_len_max(&self, input_len: usize) -> usize {
        self.stages
            .iter()
            .fold(input_len, |len, stage| stage.output_len_max(len))
    }

    /// Resample interleaved `input`, writing into `output`; returns the samples written.
    ///
    /// # Errors
    /// `PartialFrame` for input that is not whole frames, `OutputTooSmall` when `output` is
    /// shorter than [`Self::output_len_max`] (nothing is consumed then).
    pub fn process_into(
        &mut self,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<usize, ResampleError> {
        if input.len() % self.channels != 0 {
            return Err(ResampleError::PartialFrame {
                len: input.len(),
                channels: self.channels,
            });
        }
        let needed = self.output_len_max(input.len());
        if output.len() < needed {
            return Err(ResampleError::OutputTooSmall {
                needed,
                given: output.len(),
            });
        }
        let written = run_chain(&mut self.stages, &mut self.between, input, output);
        self.received += (input.len() / self.channels) as u64;
        self.produced += (written / self.channels) as u64;
        Ok(written)
    }

    /// Resample interleaved `input` into a new vector.
    ///
    /// # Errors
    /// `PartialFrame` for input that is not whole frames.
    pub fn process(&mut self, input: &[f32]) -> Result<Vec<f32>, ResampleError> {
        let mut output = vec![0f32; self.output_len_max(input.len())];
        let written = self.process_into(input, &mut output)?;
        output.truncate(written);
        Ok(output)
    }

    /// Outputs still owed for the input received so far: everything up to the last input
    /// sample's time. Returns them and resets the resampler for a new stream.
    pub fn flush(&mut self) -> Vec<f32> {
        let owed =
            (self.received * u64::from(self.output_rate)).div_ceil(u64::from(self.input_rate));
        // Each stage's tail goes through the next, which then gives up its own.
        let mut tail = Vec::new();
        for stage in &mut self.stages {
            let mut out = vec![0f32; stage.output_len_max(tail.len())];
            let n = stage.process_into(&tail, &mut out);
            out.truncate(n);
            out.extend(stage.flush_to(stage.owed()));
            tail = out;
        }
        // Several stages can owe one sample more than the direct ratio does; keep the exact count.
        tail.truncate((owed.saturating_sub(self.produced)) as usize * self.channels);
        self.reset();
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, freq: f64, seconds: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin())
                    as f32
            })
            .collect()
    }

    /// Amplitude of `freq` in `signal` by projection on sine and cosine over the middle part,
    /// Hann-windowed so that a strong tone elsewhere does not leak into the measurement.
    fn amplitude(signal: &[f32], rate: u32, freq: f64) -> f64 {
        let skip = signal.len() / 4;
        let part = &signal[skip..signal.len() - skip];
        let n = part.len() as f64;
        let (mut s, mut c, mut w_sum) = (0.0, 0.0, 0.0);
        for (i, v) in part.iter().enumerate() {
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos();
            let phase = 2.0 * std::f64::consts::PI * freq * (i + skip) as f64 / f64::from(rate);
            s += w * f64::from(*v) * phase.sin();
            c += w * f64::from(*v) * phase.cos();
            w_sum += w;
        }
        2.0 * (s * s + c * c).sqrt() / w_sum
    }

    fn resample_all(r: &mut Resampler, input: &[f32]) -> Vec<f32> {
        let mut out = r.process(input).unwrap();
        out.extend(r.flush());
        out
    }

    #[test]
    fn rejects_bad_rates_and_channels() {
        assert_eq!(
            Resampler::new(7_999, 16_000, 1).unwrap_err(),
            ResampleError::UnsupportedRate {
                rate: 7_999,
                min: MIN_RATE_HZ,
                max: MAX_RATE_HZ
            }
        );
        assert!(matches!(
            Resampler::new(48_000, 16_000, 0),
            Err(ResampleError::InvalidChannels { channels: 0 })
        ));
        let mut r = Resampler::new(48_000, 16_000, 2).unwrap();
        assert_eq!(
            r.process(&[0.0; 3]).unwrap_err(),
            ResampleError::PartialFrame {
                len: 3,
                channels: 2
            }
        );
    }

    #[test]
    fn output_length_matches_ratio_after_flush() {
        for (a, b) in [
            (48_000, 16_000),
            (44_100, 16_000),
            (24_000, 48_000),
            (16_000, 16_000),
            (8_000, 44_100),
        ] {
            let mut r = Resampler::new(a, b, 1).unwrap();
            let input = vec![0.1f32; 12_345];
            let out = resample_all(&mut r, &input);
            let expected = (12_345u64 * u64::from(b)).div_ceil(u64::from(a)) as usize;
            assert_eq!(out.len(), expected, "{a}->{b}");
        }
    }

    #[test]
    fn chunking_is_bit_identical() {
        for (a, b) in [
            (48_000, 16_000),
            (44_100, 16_000),
            (24_000, 48_000),
            (44_101, 16_000),
        ] {
            let input = tone(a, 1234.5, 0.3);
            let whole = resample_all(&mut Resampler::new(a, b, 1).unwrap(), &input);
            let mut r = Resampler::new(a, b, 1).unwrap();
            let mut chunked = Vec::new();
            let mut rest = &input[..];
            let mut size = 1;
            while !rest.is_empty() {
                let take = size.min(rest.len());
                chunked.extend(r.process(&rest[..take]).unwrap());
                rest = &rest[take..];
                size = size * 7 % 1013 + 1;
            }
            chunked.extend(r.flush());
            assert_eq!(whole.len(), chunked.len());
            assert!(
                whole
                    .iter()
                    .zip(&chunked)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{a}->{b}"
            );
        }
    }

    #[test]
    fn passband_is_flat_and_aliases_are_rejected() {
        for (a, b) in [(48_000u32, 16_000u32), (44_100, 16_000), (24_000, 48_000)] {
            let nyquist_low = f64::from(a.min(b)) / 2.0;
            for fraction in [0.01, 0.3, 0.6, 0.9] {
                let f = fraction * nyquist_low;
                let out = resample_all(&mut Resampler::new(a, b, 1).unwrap(), &tone(a, f, 0.5));
                let gain_db = 20.0 * (amplitude(&out, b, f) / 0.5).log10();
                assert!(gain_db.abs() < 0.05, "{a}->{b} {f} Hz: {gain_db} dB");
            }
            if b < a {
                let nyquist_out = f64::from(b) / 2.0;
                for f in [
                    nyquist_out * 1.0,
                    nyquist_out * 1.05,
                    nyquist_out * 1.5,
                    f64::from(a) / 2.0 * 0.99,
                ] {
                    let alias = (f - f64::from(b) * (f / f64::from(b)).round()).abs();
                    let out = resample_all(&mut Resampler::new(a, b, 1).unwrap(), &tone(a, f, 0.5));
                    let level_db = 20.0 * (amplitude(&out, b, alias).max(1e-12) / 0.5).log10();
                    assert!(
                        level_db < -130.0,
                        "{a}->{b} {f} Hz aliases at {level_db} dB"
                    );
                }
            }
        }
    }

    #[test]
    fn multichannel_matches_per_channel() {
        let left = tone(48_000, 440.0, 0.1);
        let right = tone(48_000, 3000.0, 0.1);
        let stereo: Vec<f32> = left
            .iter()
            .zip(&right)
            .flat_map(|(l, r)| [*l, *r])
            .collect();
        let both = resample_all(&mut Resampler::new(48_000, 16_000, 2).unwrap(), &stereo);
        let l = resample_all(&mut Resampler::new(48_000, 16_000, 1).unwrap(), &left);
        let r = resample_all(&mut Resampler::new(48_000, 16_000, 1).unwrap(), &right);
        assert_eq!(both.len(), 2 * l.len());
        assert!(both
            .chunks_exact(2)
            .zip(l.iter().zip(&r))
            .all(|(f, (x, y))| f[0] == *x && f[1] == *y));
    }

    #[test]
    fn delay_is_small_and_reported() {
        let r = Resampler::new(48_000, 16_000, 1).unwrap();
        let delay_ms = r.delay_samples() / 16.0;
        assert!(delay_ms < 5.0, "{delay_ms} ms");
        let mut r = Resampler::new(48_000, 16_000, 1).unwrap();
        let out = r.process(&vec![0.0; 48_000]).unwrap();
        let withheld = 16_000.0 - out.len() as f64;
        assert!(
            (withheld - r.delay_samples()).abs() <= 1.0,
            "{withheld} vs {}",
            r.delay_samples()
        );
    }

    #[test]
    fn interpolation_rejects_images() {
        for (a, b) in [
            (24_000u32, 48_000u32),
            (16_000, 48_000),
            (24_000, 44_100),
            (8_000, 44_100),
        ] {
            let nyquist_in = f64::from(a) / 2.0;
            for fraction in [0.1, 0.5, 0.9] {
                let f = fraction * nyquist_in;
                let out = resample_all(&mut Resampler::new(a, b, 1).unwrap(), &tone(a, f, 0.5));
                let image = f64::from(a) - f;
                let image = if image > f64::from(b) / 2.0 {
                    f64::from(b) - image
                } else {
                    image
                };
                let level_db = 20.0 * (amplitude(&out, b, image).max(1e-12) / 0.5).log10();
                assert!(
                    level_db < -130.0,
                    "{a}->{b}: {f} Hz images at {image} Hz, {level_db} dB"
                );
            }
        }
    }

    #[test]
    fn doubling_copies_the_even_outputs() {
        let input = tone(24_000, 1234.5, 0.1);
        let out = resample_all(&mut Resampler::new(24_000, 48_000, 1).unwrap(), &input);
        assert!(out
            .iter()
            .step_by(2)
            .zip(&input)
            .all(|(y, x)| y.to_bits() == x.to_bits()));
    }

    #[test]
    fn same_rate_is_exact_and_immediate() {
        let input = tone(48_000, 1000.0, 0.1);
        let mut r = Resampler::new(48_000, 48_000, 1).unwrap();
        assert_eq!(r.delay_samples(), 0.0);
        assert_eq!(r.process(&input).unwrap(), input);
        assert!(r.flush().is_empty());
    }

    #[test]
    fn kernels_agree() {
        let h: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.11).cos()).collect();
        let reference: f64 = h
            .iter()
            .zip(&x)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let [p] = Kernel::Portable.dots_shared(&h, [&x]);
        let [q] = Kernel::detect().dots_shared(&h, [&x]);
        assert!((f64::from(p) - reference).abs() < 1e-5);
        assert!((f64::from(q) - reference).abs() < 1e-5);
    }

    #[test]
    fn process_into_allocates_nothing_in_steady_state() {
        for (a, b) in [
            (48_000u32, 16_000u32),
            (44_100, 16_000),
            (24_000, 48_000),
            (24_000, 44_100),
            (192_000, 8_000),
        ] {
            let mut r = Resampler::new(a, b, 1).unwrap();
            let input = tone(a, 440.0, 0.02);
            let mut output = vec![0f32; input.len() * b as usize / a as usize + 8];
            for _ in 0..5 {
                r.process_into(&input, &mut output).unwrap();
            }
            let before = crate::alloc_count::allocations();
            for _ in 0..200 {
                r.process_into(&input, &mut output).unwrap();
            }
            assert_eq!(crate::alloc_count::allocations(), before, "{a}->{b}");
            // The counter sees allocations: `process` returns a new vector.
            r.process(&input).unwrap();
            assert!(crate::alloc_count::allocations() > before);
        }
    }

    #[test]
    fn hot_pairs_take_the_fast_stages() {
        let kinds = |a, b| {
            let r = Resampler::new(a, b, 1).unwrap();
            r.stages
                .iter()
                .map(|s| match s {
                    Stage::Identity { .. } => "identity",
                    Stage::Folded(_) => "folded",
                    Stage::Polyphase(p) if p.transposed.is_some() => "transposed",
                    Stage::Polyphase(_) => "dot products",
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(48_000, 16_000), ["folded", "folded"]);
        assert_eq!(kinds(44_100, 16_000), ["transposed", "folded"]);
        assert_eq!(kinds(24_000, 48_000), ["folded"]);
        assert_eq!(kinds(24_000, 16_000), ["folded"]);
        assert_eq!(kinds(16_000, 16_000), ["identity"]);
        assert_eq!(kinds(192_000, 8_000), ["folded"; 5]);
    }

    #[test]
    fn table_bank_covers_its_prototype_with_unit_gain() {
        let bank = FilterBank::from_prototype(&tables::WIDE_44K1_TO_24K, 2);
        // 2789 taps on the 80-phase grid reach 17.4 input samples each side: 36 taps.
        assert_eq!((bank.phases, bank.taps), (80, 36));
        for p in 0..bank.phases {
            let sum: f32 = bank.branch(p).iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "branch {p}: {sum}");
        }
        // Branch 0 is centred on an input sample: symmetric about tap 17.
        let centre = bank.branch(0);
        assert!((0..17).all(|j| centre[17 - j] == centre[17 + j]));
    }

    #[test]
    fn resampler_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<Resampler>();
    }
}
