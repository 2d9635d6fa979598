//! Eight consecutive outputs of a polyphase stage at once, one per SIMD lane, for ratios
//! whose phase pattern repeats within a small table (44.1k -> 24k on the way to 16k: 80 phases).
//!
//! Output `n` reads the input window starting at `floor(n * down / up)` with branch
//! `n * down % up`. For the eight outputs of a block (aligned to absolute output index
//! multiples of eight) the windows start at most a few samples apart, so one table per block
//! position holds, for each input sample of their joint window, the coefficient each lane
//! applies to it (zero outside the lane's own window): the block is then a sum over that window
//! of a broadcast input sample times a coefficient vector. No horizontal reduction and no
//! per-output bookkeeping, where a dot product per output spent more on those than on the
//! multiply-adds.
//!
//! The kernel is bound by its loads (a coefficient vector and a broadcast sample per
//! multiply-add). Blocks at the same position of consecutive pattern periods (80 outputs and
//! 147 input samples apart for 44.1k -> 24k) use the same table, so where a call holds whole
//! periods, up to six of them run together and each coefficient vector is loaded once for all;
//! the rest runs in groups of four consecutive blocks.
//!
//! Blocks are aligned to absolute output indices, and each lane always sums its window in the
//! same order (even and odd positions in two chains, added at the end); a zero coefficient
//! adds exactly nothing. So every output is computed the same way whatever the chunking.

use super::Kernel;

/// Outputs per block.
const LANES: usize = 8;
/// Blocks computed together: independent chains, to hide FMA latency.
const GROUP: usize = 4;
/// Most pattern periods whose blocks at one position are computed together, sharing the
/// loads of their coefficients.
const MAX_PERIODS: usize = 6;
/// Largest table built (bytes): beyond it the per-output dot products are used.
const MAX_TABLE_BYTES: usize = 64 * 1024;
/// Largest input window of a group of blocks (no table is built for ratios that need more):
/// the copy a group at the end of the input reads from lives on the stack.
const MAX_GROUP_WINDOW: usize = 256;

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The transposed coefficients of one polyphase stage.
#[derive(Clone, Debug)]
pub(super) struct TransposedBank {
    up: u64,
    down: u64,
    /// Block positions before the pattern repeats.
    blocks: usize,
    /// Input samples one block reads.
    width: usize,
    /// `table[(b * width + j) * LANES + k]`: lane `k` of block position `b`, input `j`.
    table: Vec<f32>,
    /// Input samples from the window of block position `b` to that of the next.
    advances: Vec<usize>,
    /// Per block position, the group of `GROUP` blocks that starts there.
    groups: Vec<GroupPlan>,
    /// Input samples one whole pattern period (`blocks` blocks) advances.
    period_inputs: usize,
    kernel: Kernel,
}

/// Where the `GROUP` blocks of a group starting at one block position read, precomputed so
/// that a run of whole groups costs no bookkeeping per block.
#[derive(Clone, Copy, Debug)]
struct GroupPlan {
    /// Start of each block's coefficients in `table`.
    tables: [usize; GROUP],
    /// Start of each block's window, from the first block's.
    windows: [usize; GROUP],
    /// Input samples from this group's first window to the next group's.
    advance: usize,
    /// Block position of the next group.
    next: usize,
}

impl TransposedBank {
    /// `branch(p)` is phase `p`'s `taps` coefficients. `None` when the table would be large.
    pub(super) fn new<'a>(
        branch: impl Fn(usize) -> &'a [f32],
        taps: usize,
        up: u64,
        down: u64,
    ) -> Option<Self> {
        let period = up as usize / gcd(up as usize, LANES) * LANES;
        let blocks = period / LANES;
        let start = |n: u64| n * down / up;
        let spread = (0..blocks as u64)
            .map(|b| start(b * 8 + 7) - start(b * 8))
            .max()
            .unwrap_or(0) as usize;
        let width = taps + spread;
        let group_window = (GROUP - 1) * (start(8) + 1) as usize + width;
        if blocks * width * LANES * std::mem::size_of::<f32>() > MAX_TABLE_BYTES
            || group_window > MAX_GROUP_WINDOW
        {
            return None;
        }
        let mut table = vec![0f32; blocks * width * LANES];
        for b in 0..blocks {
            let n0 = (b * LANES) as u64;
            for k in 0..LANES {
                let n = n0 + k as u64;
                let shift = (start(n) - start(n0)) as usize;
                let coefficients = branch((n * down % up) as usize);
                for (t, c) in coefficients.iter().enumerate() {
                    table[(b * width + shift + t) * LANES + k] = *c;
                }
            }
        }
        let advances: Vec<usize> = (0..blocks as u64)
            .map(|b| (start(b * 8 + 8) - start(b * 8)) as usize)
            .collect();
        let groups = (0..blocks)
            .map(|first| {
                let mut plan = GroupPlan {
                    tables: [0; GROUP],
                    windows: [0; GROUP],
                    advance: 0,
                    next: first,
                };
                for i in 0..GROUP {
                    plan.tables[i] = plan.next * width * LANES;
                    plan.windows[i] = plan.advance;
                    plan.advance += advances[plan.next];
                    plan.next = (plan.next + 1) % blocks;
                }
                plan
            })
            .collect();
        Some(Self {
            up,
            down,
            blocks,
            width,
            table,
            period_inputs: advances.iter().sum(),
            advances,
            groups,
            kernel: Kernel::detect(),
        })
    }

    /// Padded input index where the block holding output `n` starts reading: history before
    /// it may be dropped once output `n` is next.
    pub(super) fn keep_from(&self, n: u64) -> u64 {
        (n / LANES as u64 * LANES as u64) * self.down / self.up
    }

    /// Outputs `first..end` into `out`, from `history` (padded input from index `origin`).
    /// The caller guarantees each output's window lies inside `history`.
    pub(super) fn render(
        &self,
        history: &[f32],
        origin: u64,
        first: u64,
        end: u64,
        out: &mut [f32],
    ) {
        let lanes = LANES as u64;
        let mut block = first / lanes;
        // Block position in the pattern and where its window starts: no division per block.
        let mut position = (block % self.blocks as u64) as usize;
        let mut base = (block * lanes * self.down / self.up - origin) as usize;
        let mut values = [0f32; LANES * GROUP];
        let mut scratch = [0f32; MAX_GROUP_WINDOW];
        while block * lanes < end {
            let n0 = block * lanes;
            // Whole pattern periods: the blocks at one position in consecutive periods share
            // their coefficients, so one load of them serves every period (the kernel is
            // bound by its loads).
            let periods = if n0 >= first {
                ((end - n0) / (lanes * self.blocks as u64)) as usize
            } else {
                0
            };
            if periods >= 2 {
                let periods = periods.min(MAX_PERIODS);
                let at = (n0 - first) as usize;
                let span = periods * self.blocks * LANES;
                if self.periods(position, periods, &history[base..], &mut out[at..at + span]) {
                    base += periods * self.period_inputs;
                    block += (periods * self.blocks) as u64;
                    continue;
                }
            }
            // Whole groups of wanted outputs, reading only inside the history: one kernel call
            // for the run (per-group slicing and calls cost 4-5% of the 44.1k -> 16k time).
            let whole_groups = if n0 >= first {
                ((end - n0) / (lanes * GROUP as u64)) as usize
            } else {
                0
            };
            if whole_groups > 0 {
                let at = (n0 - first) as usize;
                let span = whole_groups * GROUP * LANES;
                let (done, next, read) = self.kernel.transposed_groups(
                    &self.table,
                    &self.groups,
                    position,
                    whole_groups,
                    &history[base..],
                    self.width,
                    &mut out[at..at + span],
                );
                if done > 0 {
                    (position, base) = (next, base + read);
                    block += (done * GROUP) as u64;
                    continue;
                }
            }
            // The last group takes only the blocks it needs: a lone block is latency-bound.
            let count = ((end - n0).div_ceil(lanes) as usize).min(GROUP);
            let mut bases = [base; GROUP];
            let mut positions = [position; GROUP];
            for i in 1..count {
                positions[i] = self.next(positions[i - 1]);
                bases[i] = bases[i - 1] + self.advances[positions[i - 1]];
            }
            // At the end of the input the last lanes' windows run past it: they read zeros
            // from a copy, and are not stored (the lanes stored read only their own windows).
            let reach = bases[count - 1] + self.width;
            let x: &[f32] = if reach <= history.len() {
                &history[base..reach]
            } else {
                let present = history.len() - base;
                scratch[..present].copy_from_slice(&history[base..]);
                scratch[present..reach - base].fill(0.0);
                &scratch[..reach - base]
            };
            let span = count * LANES;
            let inside = n0 >= first && n0 + span as u64 <= end;
            let at = n0.saturating_sub(first) as usize;
            let dst = if inside {
                &mut out[at..at + span]
            } else {
                &mut values[..span]
            };
            let windows = |i: usize| &x[bases[i] - base..bases[i] - base + self.width];
            match count {
                1 => self.group::<1>(positions, windows, dst),
                2 => self.group::<2>(positions, windows, dst),
                3 => self.group::<3>(positions, windows, dst),
                _ => self.group::<GROUP>(positions, windows, dst),
            }
            if !inside {
                for (k, v) in values[..span].iter().enumerate() {
                    let index = n0 + k as u64;
                    if (first..end).contains(&index) {
                        out[(index - first) as usize] = *v;
                    }
                }
            }
            for _ in 0..count {
                base += self.advances[position];
                position = self.next(position);
            }
            block += count as u64;
        }
    }

    /// `periods` whole pattern periods from block position `position`, their first window at
    /// `x[0]`, into `out`; false (nothing done) when the last period would read past `x`.
    fn periods(&self, position: usize, periods: usize, x: &[f32], out: &mut [f32]) -> bool {
        let last = (periods - 1) * self.period_inputs;
        let (mut p, mut offset) = (position, 0);
        for _ in 0..self.blocks {
            if last + offset + self.width > x.len() {
                return false;
            }
            offset += self.advances[p];
            p = self.next(p);
        }
        let (k, advance, width, stride) = (
            self.kernel,
            self.period_inputs,
            self.width,
            self.blocks * LANES,
        );
        let (mut p, mut offset) = (position, 0);
        for i in 0..self.blocks {
            let table = &self.table[p * width * LANES..(p + 1) * width * LANES];
            let out = &mut out[i * LANES..];
            match periods {
                2 => k.shared_table::<2>(table, x, offset, advance, width, out, stride),
                3 => k.shared_table::<3>(table, x, offset, advance, width, out, stride),
                4 => k.shared_table::<4>(table, x, offset, advance, width, out, stride),
                5 => k.shared_table::<5>(table, x, offset, advance, width, out, stride),
                _ => k.shared_table::<MAX_PERIODS>(table, x, offset, advance, width, out, stride),
            }
            offset += self.advances[p];
            p = self.next(p);
        }
        true
    }

    fn next(&self, position: usize) -> usize {
        if position + 1 == self.blocks {
            0
        } else {
            position + 1
        }
    }

    fn group<'a, const G: usize>(
        &self,
        positions: [usize; GROUP],
        windows: impl Fn(usize) -> &'a [f32],
        out: &mut [f32],
    ) {
        let table = |p: usize| &self.table[p * self.width * LANES..(p + 1) * self.width * LANES];
        let tables: [&[f32]; G] = std::array::from_fn(|i| table(positions[i]));
        let xs: [&[f32]; G] = std::array::from_fn(windows);
        self.kernel.transposed_blocks(tables, xs, self.width, out);
    }
}

impl Kernel {
    /// Up to `groups` whole groups from block position `position` on, their first window at
    /// `x[0]`, into `out` (as `transposed_blocks` for each): as many as read only inside `x`.
    /// Returns how many ran, the position after them and the input samples they advanced.
    #[allow(clippy::too_many_arguments)]
    fn transposed_groups(
        self,
        table: &[f32],
        plans: &[GroupPlan],
        position: usize,
        groups: usize,
        x: &[f32],
        width: usize,
        out: &mut [f32],
    ) -> (usize, usize, usize) {
        // Check every read up front; the loop below then runs without bounds checks.
        let (mut next, mut read, mut fit) = (position, 0, 0);
        while fit < groups && read + plans[next].windows[GROUP - 1] + width <= x.len() {
            assert!(plans[next]
                .tables
                .iter()
                .all(|&t| t + width * LANES <= table.len()));
            (next, read, fit) = (plans[next].next, read + plans[next].advance, fit + 1);
        }
        let groups = fit;
        assert!(out.len() >= groups * GROUP * LANES);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA present (checked in `detect`); every read and write was
            // checked above.
            Self::Avx2Fma => unsafe { avx::groups(table, plans, position, groups, x, width, out) },
            Self::Portable => {
                let (mut at, mut from) = (position, 0);
                for out in out.chunks_exact_mut(GROUP * LANES).take(groups) {
                    let plan = &plans[at];
                    let tables = plan.tables.map(|t| &table[t..t + width * LANES]);
                    let xs = plan.windows.map(|w| &x[from + w..from + w + width]);
                    self.transposed_blocks::<GROUP>(tables, xs, width, out);
                    (at, from) = (plan.next, from + plan.advance);
                }
            }
        }
        (groups, next, read)
    }

    /// `P` blocks at one position: block `k` reads `x[offset + k * advance..][..width]` and
    /// goes to `out[k * stride..][..LANES]`; each as `transposed_blocks` computes it.
    #[allow(clippy::too_many_arguments)]
    fn shared_table<const P: usize>(
        self,
        table: &[f32],
        x: &[f32],
        offset: usize,
        advance: usize,
        width: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        assert!(table.len() >= width * LANES);
        assert!(offset + (P - 1) * advance + width <= x.len());
        assert!(out.len() >= (P - 1) * stride + LANES);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA present (checked in `detect`); bounds checked above.
            Self::Avx2Fma => unsafe {
                avx::shared_table::<P>(table, x, offset, advance, width, out, stride)
            },
            Self::Portable => {
                for k in 0..P {
                    let xs = [&x[offset + k * advance..offset + k * advance + width]];
                    let block = &mut out[k * stride..k * stride + LANES];
                    self.transposed_blocks::<1>([table], xs, width, block);
                }
            }
        }
    }

    /// `out[g * LANES + k]` (lane `k` of block `g`): the sum over `j < width` of
    /// `tables[g][j * LANES + k] * xs[g][j]`.
    fn transposed_blocks<const G: usize>(
        self,
        tables: [&[f32]; G],
        xs: [&[f32]; G],
        width: usize,
        out: &mut [f32],
    ) {
        for (t, x) in tables.iter().zip(&xs) {
            assert!(x.len() >= width && t.len() >= width * LANES);
        }
        assert!(out.len() >= G * LANES);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 and FMA present (checked in `detect`); lengths checked above.
            Self::Avx2Fma => unsafe { avx::blocks(tables, xs, width, out) },
            Self::Portable => {
                for (g, lanes) in out.chunks_exact_mut(LANES).take(G).enumerate() {
                    for (k, slot) in lanes.iter_mut().enumerate() {
                        let (mut even, mut odd) = (0f32, 0f32);
                        for j in 0..width {
                            let acc = if j % 2 == 0 { &mut even } else { &mut odd };
                            *acc = tables[g][j * LANES + k].mul_add(xs[g][j], *acc);
                        }
                        *slot = even + odd;
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{GroupPlan, GROUP, LANES};
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };

    /// `acc + table[j * LANES..][..LANES] * x[j]`.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `j < x.len()` and `(j + 1) * LANES <= table.len()`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn term(acc: __m256, table: &[f32], x: &[f32], j: usize) -> __m256 {
        // SAFETY: the caller's.
        unsafe {
            let coefficients = _mm256_loadu_ps(table.as_ptr().add(j * LANES));
            _mm256_fmadd_ps(coefficients, _mm256_broadcast_ss(&*x.as_ptr().add(j)), acc)
        }
    }

    /// The groups of [`super::Kernel::transposed_groups`], one kernel call for the run.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; every read and write in bounds (checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn groups(
        table: &[f32],
        plans: &[GroupPlan],
        mut position: usize,
        groups: usize,
        x: &[f32],
        width: usize,
        out: &mut [f32],
    ) {
        let mut from = 0;
        for g in 0..groups {
            // SAFETY: the caller checked these ranges for this run of groups.
            unsafe {
                let plan = plans.get_unchecked(position);
                // (Loops rather than `map`, whose closures are not inlined here.)
                let mut tables: [&[f32]; GROUP] = [&[]; GROUP];
                let mut xs: [&[f32]; GROUP] = [&[]; GROUP];
                for i in 0..GROUP {
                    let (t, w) = (plan.tables[i], from + plan.windows[i]);
                    tables[i] = table.get_unchecked(t..t + width * LANES);
                    xs[i] = x.get_unchecked(w..w + width);
                }
                let at = g * GROUP * LANES;
                blocks::<GROUP>(
                    tables,
                    xs,
                    width,
                    out.get_unchecked_mut(at..at + GROUP * LANES),
                );
                (position, from) = (plan.next, from + plan.advance);
            }
        }
    }

    /// The blocks of [`super::Kernel::shared_table`]: each coefficient vector is loaded once
    /// for all `P` of them. Same sums, in the same order, as [`blocks`].
    ///
    /// # Safety
    /// Needs AVX2 and FMA; the bounds checked by the caller.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn shared_table<const P: usize>(
        table: &[f32],
        x: &[f32],
        offset: usize,
        advance: usize,
        width: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        let mut even: [__m256; P] = [_mm256_setzero_ps(); P];
        let mut odd: [__m256; P] = [_mm256_setzero_ps(); P];
        let t = table.as_ptr();
        let xs = x.as_ptr().wrapping_add(offset);
        let mut j = 0;
        while j + 1 < width {
            // SAFETY: j + 1 < width, so table reads stay below width * LANES and x reads below
            // offset + (P - 1) * advance + width (checked by the caller).
            unsafe {
                let c0 = _mm256_loadu_ps(t.add(j * LANES));
                let c1 = _mm256_loadu_ps(t.add((j + 1) * LANES));
                for (k, (even, odd)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
                    let x = xs.add(k * advance + j);
                    *even = _mm256_fmadd_ps(c0, _mm256_broadcast_ss(&*x), *even);
                    *odd = _mm256_fmadd_ps(c1, _mm256_broadcast_ss(&*x.add(1)), *odd);
                }
            }
            j += 2;
        }
        if j < width {
            // SAFETY: j < width, as above.
            unsafe {
                let c0 = _mm256_loadu_ps(t.add(j * LANES));
                for (k, even) in even.iter_mut().enumerate() {
                    let x = xs.add(k * advance + j);
                    *even = _mm256_fmadd_ps(c0, _mm256_broadcast_ss(&*x), *even);
                }
            }
        }
        for (k, (even, odd)) in even.iter().zip(&odd).enumerate() {
            // SAFETY: out holds (P - 1) * stride + LANES floats (checked by the caller).
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr().add(k * stride), _mm256_add_ps(*even, *odd))
            };
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA; `xs[g]` at least `width` long, `tables[g]` `width * LANES`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn blocks<const G: usize>(
        tables: [&[f32]; G],
        xs: [&[f32]; G],
        width: usize,
        out: &mut [f32],
    ) {
        let mut even: [__m256; G] = [_mm256_setzero_ps(); G];
        let mut odd: [__m256; G] = [_mm256_setzero_ps(); G];
        let mut j = 0;
        while j + 1 < width {
            for g in 0..G {
                // SAFETY: j + 1 < width, within both slices per the caller's contract.
                unsafe {
                    even[g] = term(even[g], tables[g], xs[g], j);
                    odd[g] = term(odd[g], tables[g], xs[g], j + 1);
                }
            }
            j += 2;
        }
        if j < width {
            for g in 0..G {
                // SAFETY: j < width, as above.
                unsafe { even[g] = term(even[g], tables[g], xs[g], j) };
            }
        }
        for g in 0..G {
            // SAFETY: out holds G * LANES floats (checked by the caller).
            unsafe {
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(g * LANES),
                    _mm256_add_ps(even[g], odd[g]),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_match_per_output_dot_products() {
        // 160/147 (22.05k -> 24k) with made-up branches of 5 taps; 1200 samples reach eight
        // whole pattern periods, so runs of 2 to 6 periods sharing their tables are covered.
        let (up, down, taps) = (160u64, 147u64, 5usize);
        let branches: Vec<Vec<f32>> = (0..up)
            .map(|p| {
                (0..taps)
                    .map(|t| ((p * 7 + t as u64) % 11) as f32 - 5.0)
                    .collect()
            })
            .collect();
        let bank = TransposedBank::new(|p| &branches[p], taps, up, down).unwrap();
        let history: Vec<f32> = (0..1200).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
        let end = (history.len() as u64 - taps as u64) * up / down;
        for (first, kernel) in [
            (0, Kernel::detect()),
            (3, Kernel::detect()),
            (5, Kernel::Portable),
        ] {
            let bank = TransposedBank {
                kernel,
                ..bank.clone()
            };
            let mut out = vec![0f32; (end - first) as usize];
            bank.render(&history, 0, first, end, &mut out);
            // As a stage calls it: the history ends where the last output's window does.
            for stop in (first + 1..end).step_by(7) {
                let needed = (stop - 1) * down / up + taps as u64;
                let mut part = vec![0f32; (stop - first) as usize];
                bank.render(&history[..needed as usize], 0, first, stop, &mut part);
                assert_eq!(part[..], out[..part.len()], "outputs {first}..{stop}");
            }
            for (i, y) in out.iter().enumerate() {
                let n = first + i as u64;
                let start = (n * down / up) as usize;
                let expected: f32 = branches[(n * down % up) as usize]
                    .iter()
                    .zip(&history[start..])
                    .map(|(c, x)| c * x)
                    .sum();
                assert_eq!(*y, expected, "output {n}");
            }
        }
    }
}
