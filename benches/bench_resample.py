"""Resampler throughput and delay against python-soxr's ResampleStream (quality 'HQ').

Both are fed from Python in 20 ms float32 chunks, in the same run, interleaved in rounds so
that machine noise hits both alike. Delay is measured the same way for both: the output
samples still withheld after one second of input (soxr's `resample_chunk` with `last=False`).
The target (issue 2): >= 2x soxr's throughput and <= half its delay.

    python benches/bench_resample.py [--seconds 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np
import soxr

import geminilive

PAIRS = [(48000, 16000), (44100, 16000), (24000, 48000)]
CHUNK_S = 0.020


def chunks(rate: int, seconds: float) -> list[np.ndarray]:
    n = int(rate * CHUNK_S)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, int(rate * seconds)).astype(np.float32)
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)]


def run_geminilive(rate_in: int, rate_out: int, frames: list[np.ndarray]) -> float:
    r = geminilive.Resampler(rate_in, rate_out)
    process = r.process
    t0 = time.perf_counter()
    for f in frames:
        process(f)
    return time.perf_counter() - t0


def run_soxr(rate_in: int, rate_out: int, frames: list[np.ndarray]) -> float:
    s = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")
    process = s.resample_chunk
    t0 = time.perf_counter()
    for f in frames:
        process(f)
    return time.perf_counter() - t0


def withheld_ms(rate_in: int, rate_out: int) -> tuple[float, float]:
    x = np.zeros(rate_in, np.float32)
    ours = geminilive.Resampler(rate_in, rate_out)
    got_ours = sum(len(ours.process(f)) for f in np.split(x, 50))
    theirs = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")
    got_theirs = sum(len(theirs.resample_chunk(f)) for f in np.split(x, 50))
    return (
        (rate_out - got_ours) * 1000 / rate_out,
        (rate_out - got_theirs) * 1000 / rate_out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 s per round, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 2.0, 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    gc.collect()
    gc.freeze()
    print(
        f"geminilive {geminilive.__version__}, soxr {soxr.__version__}; 20 ms float32 chunks, "
        f"{args.seconds:.0f} s x {args.rounds} rounds, best round"
    )
    header = (
        f"{'pair':>14} {'taps':>5} {'ours us/chunk':>14} {'soxr us/chunk':>14} "
        f"{'speed x soxr':>13} {'ours ms':>8} {'soxr ms':>8} {'delay ratio':>12}"
    )
    print(header)
    for rate_in, rate_out in PAIRS:
        frames = chunks(rate_in, args.seconds)
        run_geminilive(rate_in, rate_out, frames[:50])
        run_soxr(rate_in, rate_out, frames[:50])
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(run_geminilive(rate_in, rate_out, frames))
            theirs.append(run_soxr(rate_in, rate_out, frames))
        ours_us = min(ours) / len(frames) * 1e6
        theirs_us = min(theirs) / len(frames) * 1e6
        delay_ours, delay_theirs = withheld_ms(rate_in, rate_out)
        taps = geminilive.Resampler(rate_in, rate_out).taps
        print(
            f"{rate_in:>6}->{rate_out:<6} {taps:>5} {ours_us:>14.2f} {theirs_us:>14.2f} "
            f"{theirs_us / ours_us:>12.2f}x {delay_ours:>8.2f} {delay_theirs:>8.2f} "
            f"{delay_ours / delay_theirs:>12.2f}"
        )


if __name__ == "__main__":
    main()
