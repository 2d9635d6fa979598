//! Pure-Rust cost of the resampler per 20 ms chunk (no Python in the loop), to separate the
//! FIR kernel from the binding overhead that `bench_resample.py` includes.
//! Run: `cargo bench --bench resample_kernel [-- INPUT_RATE]` (one input rate only).

use std::time::Instant;

use _native::resample::Resampler;

fn main() {
    let only: Option<u32> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    for (rate_in, rate_out) in [(48_000u32, 16_000u32), (44_100, 16_000), (24_000, 48_000)] {
        if only.is_some_and(|rate| rate != rate_in) {
            continue;
        }
        let chunk = rate_in as usize / 50;
        let input: Vec<f32> = (0..chunk * 500)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0) - 0.5)
            .collect();
        let mut resampler = Resampler::new(rate_in, rate_out, 1).expect("valid rates");
        let mut output = vec![0f32; rate_out as usize];
        let mut best = f64::MAX;
        for _ in 0..40 {
            let start = Instant::now();
            for frame in input.chunks_exact(chunk) {
                resampler
                    .process_into(frame, &mut output)
                    .expect("output is large enough");
            }
            best = best.min(start.elapsed().as_secs_f64() / 500.0);
        }
        let macs = resampler.taps() as f64 * f64::from(rate_out) / 50.0;
        println!(
            "{rate_in:>6} -> {rate_out:<6} taps {:>4}: {:>6.2} us per 20 ms chunk, {:>5.1} GMAC/s",
            resampler.taps(),
            best * 1e6,
            macs / best / 1e9
        );
    }
}
