//! A stage with a symmetric (linear-phase) prototype and an interpolation factor of 1 or 2:
//! the ratios a voice app runs all day (48k -> 24k -> 16k to send, 24k -> 48k to play).
//!
//! Every branch of such a filter is symmetric about the output's position, so each output
//! adds the two input samples that share a coefficient before multiplying: half the
//! multiply-adds of a plain dot product. Outputs of one branch lie `down` input samples
//! apart, so the input is kept split into `down` streams (padded sample `i` goes to stream
//! `i % down`), where the samples that eight such outputs read at one tap sit side by side:
//! each SIMD lane computes one output, with one unaligned load per tap and no horizontal
//! reduction.
//!
//! Every output is computed by the same arithmetic whatever the chunking and whichever lane or
//! block it lands in (single-branch stages: two fused multiply-add chains, even and odd pairs,
//! summed at the end; two-branch stages, whose outputs n and n + 1 run in lockstep: one chain),
//! so any split of the input gives bit-identical output.

use super::tables::Prototype;
use super::{render_channels, Kernel};

/// Outputs per SIMD block.
const LANES: usize = 8;
/// Blocks computed together: independent chains to hide FMA latency, shared broadcasts.
const GROUP: usize = 4;
/// History rows kept beyond the last one filled, so that a group's unused lanes (up to a
/// group past a computable one) read allocated memory.
const SLACK_ROWS: usize = LANES * GROUP + LANES;

/// A pair of taps: `coefficient * (x[lo - d] + x[hi + d])`, as offsets in the split history.
#[derive(Clone, Copy, Debug)]
struct Pair {
    coefficient: f32,
    back: Offset,
    forward: Offset,
}

/// Padded input sample `down * (row + base) + stream`, relative to a branch's base row.
#[derive(Clone, Copy, Debug)]
struct Offset {
    stream: usize,
    row: isize,
}

impl Offset {
    fn at(relative: isize, down: usize) -> Self {
        Self {
            stream: relative.rem_euclid(down as isize) as usize,
            row: relative.div_euclid(down as isize),
        }
    }

    fn flat(self, stride: usize) -> isize {
        (self.stream * stride) as isize + self.row
    }
}

/// The taps of one phase, with flat offsets into the history for its current stride.
#[derive(Clone, Debug)]
struct Branch {
    /// `lo % down` for every output of this phase.
    residue: usize,
    centre: Option<(f32, Offset)>,
    /// Outermost (smallest) first.
    pairs: Vec<Pair>,
    /// Sum odd-numbered pairs in a second chain (stages whose outputs are computed one branch
    /// at a time need it to hide FMA latency; two-branch stages run both in lockstep).
    split: bool,
    flat_centre: Option<(f32, isize)>,
    flat_pairs: Vec<(f32, isize, isize)>,
}

impl Branch {
    /// Phase `phase` of `prototype` for outputs whose window starts at `lo` with
    /// `lo % down == residue`. The prototype is scaled by `up` (the gain interpolation
    /// needs), not each branch to unit gain: that would disturb the equiripple design (the
    /// branches' gains differ by the stop band ripple, which is what the image at the phase
    /// rate is made of anyway).
    fn new(prototype: &Prototype, phase: u64, residue: usize, split: bool) -> Self {
        let (up, down) = (prototype.up as usize, prototype.down as usize);
        let half = prototype.half;
        let phase = phase as usize;
        // Input lo - d sits phase + up * d grid steps before the output; hi + d sits
        // up * (d + gap) - phase after it, the same distance when gap = phase * 2 / up.
        let gap = 2 * phase / up;
        let distance = |d: usize| phase + up * d;
        let first = usize::from(gap == 0);
        let centre = (gap == 0).then_some(half[0]);
        let mut pairs: Vec<(f64, usize)> = (first..)
            .map(|d| (d, distance(d)))
            .take_while(|(_, g)| *g < half.len())
            .filter(|(_, g)| half[*g] != 0.0)
            .map(|(d, g)| (half[g], d))
            .collect();
        pairs.reverse();
        let sum = 1.0 / up as f64;
        let residue_i = residue as isize;
        let centre = centre.map(|c| ((c / sum) as f32, Offset::at(residue_i, down)));
        let pairs: Vec<Pair> = pairs
            .into_iter()
            .map(|(c, d)| Pair {
                coefficient: (c / sum) as f32,
                back: Offset::at(residue_i - d as isize, down),
                forward: Offset::at(residue_i + (gap + d) as isize, down),
            })
            .collect();
        Self {
            residue,
            centre,
            pairs,
            split,
            flat_centre: None,
            flat_pairs: Vec::new(),
        }
    }

    fn relayout(&mut self, stride: usize) {
        self.flat_centre = self.centre.map(|(c, o)| (c, o.flat(stride)));
        self.flat_pairs = self
            .pairs
            .iter()
            .map(|p| (p.coefficient, p.back.flat(stride), p.forward.flat(stride)))
            .collect();
    }

    /// Input samples before and after `lo` that outputs of this branch read.
    fn reach(&self, down: usize) -> (usize, usize) {
        let sample = |o: Offset| o.row * down as isize + o.stream as isize - self.residue as isize;
        let mut back = 0;
        let mut forward = 0;
        for p in &self.pairs {
            back = back.max(-sample(p.back));
            forward = forward.max(sample(p.forward));
        }
        (back as usize, forward as usize)
    }

    /// Multiply-adds per output.
    fn cost(&self) -> usize {
        self.pairs.len() + usize::from(self.centre.is_some())
    }
}

impl Kernel {
    /// `out[k]` for the `G * LANES` outputs whose base row is `base + k`.
    ///
    /// # Safety
    /// For every flat offset `o` of `branch`, `base + o .. base + o + G * LANES` lies in the
    /// allocation `base` points into.
    unsafe fn folded_blocks<const G: usize>(
        self,
        branch: &Branch,
        base: *const f32,
        out: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA present (checked in `detect`); the rest is the caller's.
            Self::Avx2Fma => unsafe { avx::blocks::<G>(branch, base, out) },
            // SAFETY: as above.
            Self::Portable => unsafe { portable_blocks(branch, base, G * LANES, out) },
        }
    }
}

impl Kernel {
    /// `out[2k] = a[k]`, `out[2k + 1] = b[k]` for two branches' `G * LANES` outputs each.
    ///
    /// # Safety
    /// As [`Kernel::folded_blocks`], for both branches.
    unsafe fn folded_interleaved<const G: usize>(
        self,
        a: (&Branch, *const f32),
        b: (&Branch, *const f32),
        out: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA present (checked in `detect`); the rest is the caller's.
            Self::Avx2Fma => unsafe { avx::blocks_interleaved::<G>(a, b, out) },
            Self::Portable => {
                let mut values = [[0f32; LANES * GROUP]; 2];
                for ((branch, base), values) in [a, b].into_iter().zip(&mut values) {
                    // SAFETY: the caller's.
                    unsafe { portable_blocks(branch, base, G * LANES, values) };
                }
                for (k, pair) in out.chunks_exact_mut(2).take(G * LANES).enumerate() {
                    pair.copy_from_slice(&[values[0][k], values[1][k]]);
                }
            }
        }
    }
}

impl Kernel {
    /// As [`Kernel::folded_interleaved`] for single-chain branches whose pairs `shift` lines
    /// up (see [`shared_shift`]): the same values, fewer loads.
    ///
    /// # Safety
    /// As [`Kernel::folded_interleaved`].
    unsafe fn lockstep<const G: usize>(
        self,
        a: (&Branch, *const f32),
        b: (&Branch, *const f32),
        shift: usize,
        out: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA present (checked in `detect`); the rest is the caller's.
            Self::Avx2Fma => unsafe { avx::lockstep::<G>(a, b, shift, out) },
            // SAFETY: the caller's.
            Self::Portable => unsafe { self.folded_interleaved::<G>(a, b, out) },
        }
    }
}

/// # Safety
/// As [`Kernel::folded_blocks`], for `count` outputs.
unsafe fn portable_blocks(branch: &Branch, base: *const f32, count: usize, out: &mut [f32]) {
    for (k, slot) in out.iter_mut().enumerate().take(count) {
        // SAFETY: the caller guarantees every offset read is in bounds.
        let x = |o: isize| unsafe { *base.offset(o + k as isize) };
        let mut even = branch.flat_centre.map_or(0.0, |(c, o)| c * x(o));
        let mut odd = 0f32;
        for (i, (c, back, forward)) in branch.flat_pairs.iter().enumerate() {
            let acc = if branch.split && i % 2 == 1 {
                &mut odd
            } else {
                &mut even
            };
            *acc = c.mul_add(x(*back) + x(*forward), *acc);
        }
        *slot = if branch.split { even + odd } else { even };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Branch, LANES};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_blend_ps, _mm256_castpd_ps, _mm256_castps_pd,
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_permute2f128_ps,
        _mm256_permute4x64_pd, _mm256_permutevar8x32_ps, _mm256_set1_ps, _mm256_setr_epi32,
        _mm256_setzero_ps, _mm256_shuffle_ps, _mm256_storeu_ps, _mm256_unpackhi_ps,
        _mm256_unpacklo_ps,
    };

    /// Split whole rows of `input` (`down` samples each) into the streams from row
    /// `first_row` on, eight rows at a time for `down` of 2 or 3; returns the rows written.
    ///
    /// # Safety
    /// Needs AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn split_rows(
        history: &mut [f32],
        stride: usize,
        down: usize,
        first_row: usize,
        input: &[f32],
    ) -> usize {
        let blocks = input.len() / (down * LANES);
        if !(2..=3).contains(&down) || blocks == 0 {
            return 0;
        }
        assert!(first_row + blocks * LANES <= stride && history.len() >= down * stride);
        let x = input.as_ptr();
        let h = history.as_mut_ptr();
        for b in 0..blocks {
            let (src, row) = (b * down * LANES, first_row + b * LANES);
            // SAFETY: src + down * LANES <= input.len(); row + LANES <= stride (asserted).
            unsafe {
                let [v0, v1] = [_mm256_loadu_ps(x.add(src)), _mm256_loadu_ps(x.add(src + 8))];
                if down == 2 {
                    // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]
                    let order = |v: __m256| {
                        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                            v,
                        )))
                    };
                    let even = order(_mm256_shuffle_ps::<0b10_00_10_00>(v0, v1));
                    let odd = order(_mm256_shuffle_ps::<0b11_01_11_01>(v0, v1));
                    _mm256_storeu_ps(h.add(row), even);
                    _mm256_storeu_ps(h.add(stride + row), odd);
                } else {
                    let v2 = _mm256_loadu_ps(x.add(src + 16));
                    // Stream s takes samples s, s + 3, ...: one index vector puts each
                    // source's share in its lanes ([0 3 6 | 1 4 7 | 2 5] for stream 0), and
                    // two blends join the three.
                    let gather = |i: [i32; 8]| {
                        let idx = _mm256_setr_epi32(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7]);
                        (
                            _mm256_permutevar8x32_ps(v0, idx),
                            _mm256_permutevar8x32_ps(v1, idx),
                            _mm256_permutevar8x32_ps(v2, idx),
                        )
                    };
                    let (a, b, c) = gather([0, 3, 6, 1, 4, 7, 2, 5]);
                    let s0 =
                        _mm256_blend_ps::<0b1100_0000>(_mm256_blend_ps::<0b0011_1000>(a, b), c);
                    let (a, b, c) = gather([1, 4, 7, 2, 5, 0, 3, 6]);
                    let s1 =
                        _mm256_blend_ps::<0b1110_0000>(_mm256_blend_ps::<0b0001_1000>(a, b), c);
                    let (a, b, c) = gather([2, 5, 0, 3, 6, 1, 4, 7]);
                    let s2 =
                        _mm256_blend_ps::<0b1110_0000>(_mm256_blend_ps::<0b0001_1100>(a, b), c);
                    _mm256_storeu_ps(h.add(row), s0);
                    _mm256_storeu_ps(h.add(stride + row), s1);
                    _mm256_storeu_ps(h.add(2 * stride + row), s2);
                }
            }
        }
        blocks * LANES
    }

    /// The `LANES` samples of block `g` at flat offset `o`.
    ///
    /// # Safety
    /// In bounds, per [`super::Kernel::folded_blocks`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(base: *const f32, o: isize, g: usize) -> __m256 {
        // SAFETY: the caller's.
        unsafe { _mm256_loadu_ps(base.offset(o + (g * LANES) as isize)) }
    }

    /// `acc + c * (back + forward)` for block `g`.
    ///
    /// # Safety
    /// As [`load`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tap(
        acc: __m256,
        c: __m256,
        base: *const f32,
        back: isize,
        forward: isize,
        g: usize,
    ) -> __m256 {
        // SAFETY: the caller's.
        unsafe {
            _mm256_fmadd_ps(
                c,
                _mm256_add_ps(load(base, back, g), load(base, forward, g)),
                acc,
            )
        }
    }

    /// The `G` blocks' sums, in registers.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; the bounds of [`super::Kernel::folded_blocks`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sums<const G: usize>(branch: &Branch, base: *const f32) -> [__m256; G] {
        // SAFETY: the caller's.
        unsafe {
            if branch.split {
                chains::<G, true>(branch, base)
            } else {
                chains::<G, false>(branch, base)
            }
        }
    }

    /// # Safety
    /// As [`sums`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chains<const G: usize, const SPLIT: bool>(
        branch: &Branch,
        base: *const f32,
    ) -> [__m256; G] {
        let mut even = [_mm256_setzero_ps(); G];
        let mut odd = [_mm256_setzero_ps(); G];
        if let Some((c, o)) = branch.flat_centre {
            let c = _mm256_set1_ps(c);
            for (g, acc) in even.iter_mut().enumerate() {
                // SAFETY: in bounds by the caller's contract.
                *acc = _mm256_mul_ps(c, unsafe { load(base, o, g) });
            }
        }
        let mut pairs = branch.flat_pairs.chunks_exact(2);
        for two in &mut pairs {
            let (c0, b0, f0) = two[0];
            let (c1, b1, f1) = two[1];
            let (c0, c1) = (_mm256_set1_ps(c0), _mm256_set1_ps(c1));
            for g in 0..G {
                // SAFETY: in bounds by the caller's contract.
                unsafe {
                    even[g] = tap(even[g], c0, base, b0, f0, g);
                    if SPLIT {
                        odd[g] = tap(odd[g], c1, base, b1, f1, g);
                    } else {
                        even[g] = tap(even[g], c1, base, b1, f1, g);
                    }
                }
            }
        }
        if let [(c, b, f)] = *pairs.remainder() {
            let c = _mm256_set1_ps(c);
            for (g, acc) in even.iter_mut().enumerate() {
                // SAFETY: in bounds by the caller's contract.
                *acc = unsafe { tap(*acc, c, base, b, f, g) };
            }
        }
        std::array::from_fn(|g| {
            if SPLIT {
                _mm256_add_ps(even[g], odd[g])
            } else {
                even[g]
            }
        })
    }

    /// # Safety
    /// Needs AVX2 and FMA; the bounds of [`super::Kernel::folded_blocks`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn blocks<const G: usize>(
        branch: &Branch,
        base: *const f32,
        out: &mut [f32],
    ) {
        assert!(out.len() >= G * LANES);
        // SAFETY: the caller's.
        let sums = unsafe { sums::<G>(branch, base) };
        for (g, sum) in sums.iter().enumerate() {
            // SAFETY: out holds G * LANES values (asserted above).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(g * LANES), *sum) };
        }
    }

    /// Two branches' blocks, stored interleaved: `out[2k] = a[k]`, `out[2k + 1] = b[k]`.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; the bounds of [`super::Kernel::folded_blocks`] for both.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn blocks_interleaved<const G: usize>(
        a: (&Branch, *const f32),
        b: (&Branch, *const f32),
        out: &mut [f32],
    ) {
        assert!(out.len() >= 2 * G * LANES);
        // SAFETY: the caller's.
        let (first, second) = unsafe { (sums::<G>(a.0, a.1), sums::<G>(b.0, b.1)) };
        for g in 0..G {
            // [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7], then the halves.
            let low = _mm256_unpacklo_ps(first[g], second[g]);
            let high = _mm256_unpackhi_ps(first[g], second[g]);
            // SAFETY: out holds 2 * G * LANES values (asserted above).
            unsafe {
                let at = out.as_mut_ptr().add(2 * g * LANES);
                _mm256_storeu_ps(at, _mm256_permute2f128_ps::<0x20>(low, high));
                _mm256_storeu_ps(at.add(LANES), _mm256_permute2f128_ps::<0x31>(low, high));
            }
        }
    }

    /// Two single-chain branches' blocks, stored interleaved like [`blocks_interleaved`], with
    /// A's pair `i` and B's pair `i - shift` sharing the load of their (common) back sample:
    /// three loads for two pairs where separate passes take four.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; the bounds of [`super::Kernel::folded_blocks`] for both; the pairs that
    /// `shift` lines up read the same address.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn lockstep<const G: usize>(
        a: (&Branch, *const f32),
        b: (&Branch, *const f32),
        shift: usize,
        out: &mut [f32],
    ) {
        assert!(out.len() >= 2 * G * LANES && !a.0.split && !b.0.split);
        let ((branch_a, base_a), (branch_b, base_b)) = (a, b);
        let (pairs_a, pairs_b) = (&branch_a.flat_pairs, &branch_b.flat_pairs);
        let middle = pairs_a.len().saturating_sub(shift).min(pairs_b.len());
        let mut acc_a = [_mm256_setzero_ps(); G];
        let mut acc_b = [_mm256_setzero_ps(); G];
        // SAFETY: every load is in bounds by the caller's contract, and the shared ones read
        // the same address for both branches (the caller's `shift`).
        unsafe {
            for (acc, branch, base) in [
                (&mut acc_a, branch_a, base_a),
                (&mut acc_b, branch_b, base_b),
            ] {
                if let Some((c, o)) = branch.flat_centre {
                    for (g, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_mul_ps(_mm256_set1_ps(c), load(base, o, g));
                    }
                }
            }
            for &(c, back, forward) in &pairs_a[..shift.min(pairs_a.len())] {
                let c = _mm256_set1_ps(c);
                for (g, acc) in acc_a.iter_mut().enumerate() {
                    *acc = tap(*acc, c, base_a, back, forward, g);
                }
            }
            for t in 0..middle {
                let (ca, back, forward_a) = pairs_a[shift + t];
                let (cb, _, forward_b) = pairs_b[t];
                let (ca, cb) = (_mm256_set1_ps(ca), _mm256_set1_ps(cb));
                for g in 0..G {
                    let shared = load(base_a, back, g);
                    acc_a[g] = _mm256_fmadd_ps(
                        ca,
                        _mm256_add_ps(shared, load(base_a, forward_a, g)),
                        acc_a[g],
                    );
                    acc_b[g] = _mm256_fmadd_ps(
                        cb,
                        _mm256_add_ps(shared, load(base_b, forward_b, g)),
                        acc_b[g],
                    );
                }
            }
            for (acc, pairs, base) in [
                (
                    &mut acc_a,
                    &pairs_a[(shift + middle).min(pairs_a.len())..],
                    base_a,
                ),
                (&mut acc_b, &pairs_b[middle..], base_b),
            ] {
                for &(c, back, forward) in pairs {
                    let c = _mm256_set1_ps(c);
                    for (g, acc) in acc.iter_mut().enumerate() {
                        *acc = tap(*acc, c, base, back, forward, g);
                    }
                }
            }
        }
        for g in 0..G {
            let low = _mm256_unpacklo_ps(acc_a[g], acc_b[g]);
            let high = _mm256_unpackhi_ps(acc_a[g], acc_b[g]);
            // SAFETY: out holds 2 * G * LANES values (asserted above).
            unsafe {
                let at = out.as_mut_ptr().add(2 * g * LANES);
                _mm256_storeu_ps(at, _mm256_permute2f128_ps::<0x20>(low, high));
                _mm256_storeu_ps(at.add(LANES), _mm256_permute2f128_ps::<0x31>(low, high));
            }
        }
    }
}

/// Write `input` into `down` streams of `stride` samples, its first sample at split index
/// `start` (stream `start % down`, row `start / down`): whole rows a stream at a time.
fn split_into_streams(
    history: &mut [f32],
    stride: usize,
    down: usize,
    start: usize,
    input: &[f32],
) {
    let put = |history: &mut [f32], i: usize, v: f32| history[(i % down) * stride + i / down] = v;
    let head = ((down - start % down) % down).min(input.len());
    for (i, v) in input[..head].iter().enumerate() {
        put(history, start + i, *v);
    }
    let rows = &input[head..];
    let first_row = (start + head) / down;
    let whole = rows.len() / down;
    #[cfg(target_arch = "x86_64")]
    let simd = if Kernel::detect() == Kernel::Avx2Fma {
        // SAFETY: AVX2 present; the streams hold first_row + whole rows (asserted inside).
        unsafe { avx::split_rows(history, stride, down, first_row, &rows[..whole * down]) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd = 0;
    for s in 0..down {
        let stream = &mut history[s * stride + first_row + simd..s * stride + first_row + whole];
        for (slot, frame) in stream
            .iter_mut()
            .zip(rows[simd * down..].chunks_exact(down))
        {
            *slot = frame[s];
        }
    }
    for (i, v) in rows[whole * down..].iter().enumerate() {
        put(history, start + head + whole * down + i, *v);
    }
}

/// The shift that makes `a`'s pair `i` read the same back sample as `b`'s pair `i - shift`,
/// for every pair both have, when `b`'s base row is `rows` after `a`'s.
fn shared_shift(a: &Branch, b: &Branch, rows: isize) -> Option<usize> {
    let same = |i: usize, j: usize| {
        let (x, y) = (a.pairs[i].back, b.pairs[j].back);
        x.stream == y.stream && x.row == y.row + rows
    };
    if b.pairs.is_empty() {
        return None;
    }
    let shift = (0..a.pairs.len()).find(|&i| same(i, 0))?;
    let middle = (a.pairs.len() - shift).min(b.pairs.len());
    (0..middle).all(|t| same(shift + t, t)).then_some(shift)
}

/// One polyphase stage whose branches are symmetric: interpolation by 1 or 2.
#[derive(Clone)]
pub(super) struct FoldedStage {
    output_rate: u32,
    channels: usize,
    up: u64,
    down: u64,
    branches: Vec<Branch>,
    /// Per phase of an output n (two-branch stages): the shift that lines up its pairs'
    /// back samples with those of output n + 1 (see [`avx::lockstep`]), if they line up.
    shared_shifts: Vec<Option<usize>>,
    /// Input samples any output reads before / after its `lo` sample.
    reach_back: u64,
    reach_forward: u64,
    /// Zeros in front of the first input sample (a whole number of rows).
    lead: u64,
    kernel: Kernel,
    /// Per channel: `down` streams of `stride` samples; stream `s` holds padded samples
    /// `down * (origin_row + i) + s`.
    history: Vec<Vec<f32>>,
    stride: usize,
    origin_row: u64,
    /// Padded samples (per channel) present: lead + input + flush zeros.
    filled: u64,
    /// Real input samples (per channel) received since the last reset.
    received: u64,
    /// Outputs (per channel) produced since the last reset.
    produced: u64,
    scratch: Vec<f32>,
}

impl FoldedStage {
    pub(super) fn new(prototype: &'static Prototype, output_rate: u32, channels: usize) -> Self {
        let (up, down) = (prototype.up, prototype.down);
        assert!(up <= 2, "branches are symmetric only for up <= 2");
        let branches: Vec<Branch> = (0..up)
            .map(|phase| {
                // The first output of this phase fixes lo % down for all of them.
                let n = (0..up).find(|n| n * down % up == phase).unwrap_or(0);
                Branch::new(prototype, phase, ((n * down / up) % down) as usize, up == 1)
            })
            .collect();
        let (reach_back, reach_forward) = branches
            .iter()
            .map(|b| b.reach(down as usize))
            .fold((0, 0), |(b0, f0), (b, f)| (b0.max(b), f0.max(f)));
        // For two branches: when output n has phase p, how n and n + 1 share loads.
        let shared_shifts = (0..up)
            .map(|phase| {
                let n = (0..up).find(|n| n * down % up == phase)?;
                let row = |n: u64| (n * down / up / down) as isize;
                let next = &branches[((n + 1) * down % up) as usize];
                shared_shift(&branches[phase as usize], next, row(n + 1) - row(n))
            })
            .collect();
        let mut stage = Self {
            output_rate,
            channels,
            up,
            down,
            branches,
            shared_shifts,
            reach_back: reach_back as u64,
            reach_forward: reach_forward as u64,
            lead: (reach_back as u64).div_ceil(down) * down,
            kernel: Kernel::detect(),
            history: vec![Vec::new(); channels],
            stride: 0,
            origin_row: 0,
            filled: 0,
            received: 0,
            produced: 0,
            scratch: Vec::new(),
        };
        stage.reset();
        stage
    }

    pub(super) fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Multiply-adds per output (the mean over branches).
    pub(super) fn taps(&self) -> usize {
        self.branches.iter().map(Branch::cost).sum::<usize>() / self.branches.len()
    }

    pub(super) fn delay_samples(&self) -> f64 {
        self.reach_forward as f64 * self.up as f64 / self.down as f64
    }

    pub(super) fn reset(&mut self) {
        self.origin_row = 0;
        self.filled = 0;
        self.received = 0;
        self.produced = 0;
        for h in &mut self.history {
            h.fill(0.0);
        }
        self.reserve(self.lead);
        self.filled = self.lead;
    }

    /// Make room for `samples` more padded samples per channel (allocates only when the
    /// history must grow).
    fn reserve(&mut self, samples: u64) {
        let rows = (self.filled + samples).div_ceil(self.down) - self.origin_row;
        let needed = rows as usize + SLACK_ROWS;
        if needed <= self.stride {
            return;
        }
        let stride = needed.next_power_of_two();
        let down = self.down as usize;
        for h in &mut self.history {
            let mut grown = vec![0f32; down * stride];
            for s in 0..down.min(h.len() / self.stride.max(1)) {
                grown[s * stride..s * stride + self.stride]
                    .copy_from_slice(&h[s * self.stride..(s + 1) * self.stride]);
            }
            *h = grown;
        }
        self.stride = stride;
        for b in &mut self.branches {
            b.relayout(stride);
        }
    }

    /// Outputs computable once `filled` padded samples are present.
    fn computable(&self, filled: u64) -> u64 {
        // Output n reads up to lead + floor(n * down / up) + reach_forward.
        let Some(last) = filled.checked_sub(self.lead + self.reach_forward + 1) else {
            return 0;
        };
        ((last + 1) * self.up).div_ceil(self.down)
    }

    pub(super) fn output_len_max(&self, input_len: usize) -> usize {
        let frames = (input_len / self.channels) as u64;
        (self.computable(self.filled + frames) - self.produced) as usize * self.channels
    }

    /// Append whole frames of interleaved `input` (or `zeros` frames of silence).
    fn append(&mut self, input: &[f32], zeros: u64) {
        let frames = input.len() as u64 / self.channels as u64 + zeros;
        self.reserve(frames);
        let (down, stride) = (self.down as usize, self.stride);
        let start = (self.filled - self.origin_row * self.down) as usize;
        self.filled += frames;
        if self.channels == 1 && zeros == 0 {
            split_into_streams(&mut self.history[0], stride, down, start, input);
            return;
        }
        for (c, h) in self.history.iter_mut().enumerate() {
            let samples = input
                .iter()
                .skip(c)
                .step_by(self.channels)
                .copied()
                .chain(std::iter::repeat_n(0.0, zeros as usize));
            // Walk (stream, row) without a division per sample.
            let (mut stream, mut row) = (start % down, start / down);
            for v in samples {
                h[stream * stride + row] = v;
                stream += 1;
                if stream == down {
                    stream = 0;
                    row += 1;
                }
            }
        }
    }

    pub(super) fn process_into(&mut self, input: &[f32], output: &mut [f32]) -> usize {
        self.append(input, 0);
        self.received += (input.len() / self.channels) as u64;
        let end = self.computable(self.filled);
        self.render(end, output)
    }

    /// Render everything up to output `owed` (zero-padding the input), then reset.
    pub(super) fn flush_to(&mut self, owed: u64) -> Vec<f32> {
        let mut output = Vec::new();
        if owed > self.produced {
            let last_lo = self.lead + (owed - 1) * self.down / self.up;
            let needed = last_lo + self.reach_forward + 1;
            self.append(&[], needed.saturating_sub(self.filled));
            output.resize((owed - self.produced) as usize * self.channels, 0.0);
            let written = self.render(owed, &mut output);
            output.truncate(written);
        }
        self.reset();
        output
    }

    /// Outputs owed for the input so far: n < ceil(received * up / down).
    pub(super) fn owed(&self) -> u64 {
        (self.received * self.up).div_ceil(self.down)
    }

    fn render(&mut self, end: u64, output: &mut [f32]) -> usize {
        let count = (end - self.produced) as usize;
        let mut scratch = std::mem::take(&mut self.scratch);
        let total = render_channels(self.channels, count, output, &mut scratch, |c, out| {
            self.render_channel(c, end, out);
        });
        self.scratch = scratch;
        self.produced = end;
        self.drop_consumed();
        total
    }

    /// Shift out the rows no later output reads.
    fn drop_consumed(&mut self) {
        let first_read = self.lead + self.produced * self.down / self.up - self.reach_back;
        let rows = (first_read / self.down - self.origin_row) as usize;
        if rows == 0 {
            return;
        }
        let (down, stride) = (self.down as usize, self.stride);
        let kept = ((self.filled).div_ceil(self.down) - self.origin_row) as usize - rows;
        for h in &mut self.history {
            for s in 0..down {
                h.copy_within(s * stride + rows..s * stride + rows + kept, s * stride);
            }
        }
        self.origin_row += rows as u64;
    }

    /// Outputs `produced..end` of channel `channel` into `out`.
    fn render_channel(&self, channel: usize, end: u64, out: &mut [f32]) {
        let history = &self.history[channel];
        let (up, down) = (self.up, self.down);
        let count = (end - self.produced) as usize;
        // The branch of output `first` and the history row of its `lo` sample.
        let start = |first: u64| {
            let branch = &self.branches[(first * down % up) as usize];
            let lo = self.lead + first * down / up;
            debug_assert_eq!((lo % down) as usize, branch.residue);
            (branch, (lo / down - self.origin_row) as usize)
        };
        let at = |row: usize| history.as_ptr().wrapping_add(row);
        // Whole blocks only: the last one's lanes past `end` compute from rows not filled yet
        // (inside SLACK_ROWS) and are not stored. A group with two branches computes both
        // and stores them interleaved; a copy branch computes 1 * x, exactly the copy.
        let shift = self.shared_shifts[(self.produced * down % up) as usize];
        let ((a, row_a), (b, row_b)) = (start(self.produced), start(self.produced + 1));
        let mut last = [0f32; 2 * LANES * GROUP];
        let mut k = 0;
        while k * (up as usize) < count {
            let at_out = k * up as usize;
            // The last group takes only the blocks it needs: a tail is latency-bound.
            let blocks = (count - at_out).div_ceil(LANES * up as usize).min(GROUP);
            let span = blocks * LANES * up as usize;
            let whole = at_out + span <= count;
            let dst = if whole {
                &mut out[at_out..at_out + span]
            } else {
                &mut last[..span]
            };
            let (a, b) = ((a, at(row_a + k)), (b, at(row_b + k)));
            // SAFETY: the lowest offset reads row + k - reach rows >= 0 (the lead and
            // `drop_consumed` keep reach_back samples before every lo); the highest, of a lane
            // at most a group past one that is computable, lies within SLACK_ROWS of the last
            // filled row. A shift from `shared_shifts` lines up reads of the same address.
            unsafe {
                match blocks {
                    1 => self.group::<1>(a, b, shift, dst),
                    2 => self.group::<2>(a, b, shift, dst),
                    3 => self.group::<3>(a, b, shift, dst),
                    _ => self.group::<GROUP>(a, b, shift, dst),
                }
            }
            if !whole {
                out[at_out..count].copy_from_slice(&last[..count - at_out]);
            }
            k += blocks * LANES;
        }
    }

    /// `G` blocks of rows from `a` (and, with two branches, of `b`, interleaved) into `out`.
    ///
    /// # Safety
    /// As [`Kernel::folded_blocks`] for both.
    unsafe fn group<const G: usize>(
        &self,
        a: (&Branch, *const f32),
        b: (&Branch, *const f32),
        shift: Option<usize>,
        out: &mut [f32],
    ) {
        // SAFETY: the caller's.
        unsafe {
            match (self.up, shift) {
                (1, _) => self.kernel.folded_blocks::<G>(a.0, a.1, out),
                (_, Some(shift)) => self.kernel.lockstep::<G>(a, b, shift, out),
                _ => self.kernel.folded_interleaved::<G>(a, b, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tables;
    use super::*;

    fn noise(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
            .collect()
    }

    fn run(stage: &mut FoldedStage, input: &[f32], chunk: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            let mut buf = vec![0f32; stage.output_len_max(part.len())];
            let n = stage.process_into(part, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out.extend(stage.flush_to(stage.owed()));
        out
    }

    #[test]
    fn portable_and_simd_kernels_agree_bit_for_bit() {
        let input = noise(5_000);
        for prototype in [
            &tables::SHARP_3_2,
            &tables::HALFBAND_DOWN_2_OF_3,
            &tables::HALFBAND_UP_2,
        ] {
            let mut simd = FoldedStage::new(prototype, 16_000, 1);
            let mut portable = simd.clone();
            portable.kernel = Kernel::Portable;
            let a = run(&mut simd, &input, 480);
            let b = run(&mut portable, &input, 37);
            assert_eq!(a.len(), b.len());
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    #[test]
    fn splitting_into_streams_matches_the_definition() {
        for down in 1..=4 {
            for start in 0..7 {
                for len in [0, 1, 5, 23, 24, 25, 49, 100] {
                    let input = noise(len);
                    let stride = 128;
                    let mut history = vec![f32::NAN; down * stride];
                    split_into_streams(&mut history, stride, down, start, &input);
                    for (k, v) in input.iter().enumerate() {
                        let i = start + k;
                        assert_eq!(history[(i % down) * stride + i / down], *v);
                    }
                }
            }
        }
    }

    #[test]
    fn branches_are_symmetric_and_reach_what_they_read() {
        let stage = FoldedStage::new(&tables::SHARP_3_2, 16_000, 1);
        // 345 taps on the 48 kHz grid: 172 input samples each side of the output at 24 kHz
        // split between the two branches, all of them read.
        assert_eq!(stage.branches.len(), 2);
        assert!(stage.branches[0].centre.is_some() && stage.branches[1].centre.is_none());
        assert_eq!(stage.branches[0].pairs.len(), 86);
        assert_eq!(stage.branches[1].pairs.len(), 86);
        assert_eq!((stage.reach_back, stage.reach_forward), (86, 86));
        // Output 2m's pair d and output 2m + 1's pair d + 1 read x[3m - d]; output 2m + 1's
        // pair d and output 2m + 2's pair d + 2 read x[3m + 1 - d].
        assert_eq!(stage.shared_shifts, vec![Some(2), Some(1)]);
        let up = FoldedStage::new(&tables::HALFBAND_UP_2, 48_000, 1);
        // 2x: the even outputs' branch is the unit impulse (they are copies of the input).
        let even = &up.branches[0];
        assert!(even.pairs.is_empty() && even.centre.is_some_and(|(c, _)| c == 1.0));
        assert!(!up.branches[1].pairs.is_empty());
    }
}
