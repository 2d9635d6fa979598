"""Resampler throughput, delay and quality against the peers, in one run.

Peers: python-soxr's ResampleStream at quality 'HQ' (the target of issue 2), libsamplerate
through `samplerate` (sinc_best, streaming), and scipy's `resample_poly` (not a streaming
resampler: applied to each chunk on its own, as code that uses it on live audio does, so its
output has seams at chunk edges). All are fed from Python in 20 ms float32 chunks, in rounds
interleaved so that machine noise hits everyone alike.

Columns: us/chunk (median over rounds); "ours x" = how many times faster geminilive is (ratio
of the medians; min-max of the per-round ratios beside it); delay = output withheld after one
second of input (ms); worst alias = the worst level of anything that is not the test tone, in
dB below the tone, over a sweep of tones (decimating: across the whole band above the output
Nyquist frequency, where everything must vanish, plus a few in the pass band; interpolating:
across the input band, for images), fed in 20 ms chunks.

    python benches/bench_resample.py [--seconds 20] [--rounds 7] [--tones 48] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import samplerate
import scipy
import scipy.signal
import soxr

import geminilive

PAIRS = [(48000, 16000), (44100, 16000), (24000, 48000)]
CHUNK_S = 0.020
Process = Callable[[np.ndarray], np.ndarray]


def make_geminilive(rate_in: int, rate_out: int) -> Process:
    return geminilive.Resampler(rate_in, rate_out).process


def make_soxr(rate_in: int, rate_out: int) -> Process:
    return soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ").resample_chunk


def make_samplerate(rate_in: int, rate_out: int) -> Process:
    resampler = samplerate.Resampler("sinc_best", channels=1)
    ratio = rate_out / rate_in
    return lambda x: resampler.process(x, ratio, end_of_input=False)


def make_scipy(rate_in: int, rate_out: int) -> Process:
    ratio = Fraction(rate_out, rate_in)
    return lambda x: scipy.signal.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


PEERS: dict[str, Callable[[int, int], Process]] = {
    "geminilive": make_geminilive,
    "soxr HQ": make_soxr,
    "libsamplerate best": make_samplerate,
    "scipy resample_poly": make_scipy,
}


def chunks_of(x: np.ndarray, rate: int) -> list[np.ndarray]:
    n = int(rate * CHUNK_S)
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)]


def timed(process: Process, frames: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    for f in frames:
        process(f)
    return time.perf_counter() - t0


def withheld_ms(make: Callable[[int, int], Process], rate_in: int, rate_out: int) -> float:
    process = make(rate_in, rate_out)
    got = sum(len(process(f)) for f in np.split(np.zeros(rate_in, np.float32), 50))
    return (rate_out - got) * 1000 / rate_out


def test_tones(rate_in: int, rate_out: int, count: int) -> list[float]:
    """Decimating: `count` tones spread over the band above the output Nyquist frequency
    (each must vanish) and three in the pass band; interpolating: `count` tones across the
    input band (their images must vanish). Whole hertz, so each sits on an analysis bin."""
    nyq_in, nyq_out = rate_in / 2, rate_out / 2
    if rate_out < rate_in:
        # Just above the output Nyquist frequency, where a filter's stop band begins, gets a
        # finer grid of its own.
        edge = nyq_out * (1 + np.geomspace(0.001, 0.1, count // 4))
        tones = [*np.linspace(nyq_out, 0.995 * nyq_in, count), *edge, 0.1 * nyq_out, 0.5 * nyq_out, 0.85 * nyq_out]
    else:
        tones = list(np.linspace(0.01 * nyq_in, 0.9 * nyq_in, count))
    return [float(round(f)) for f in tones]


def worst_alias_db(make: Callable[[int, int], Process], rate_in: int, rate_out: int, tones: int) -> float:
    """Worst spurious output (dB relative to the tone's amplitude) over the test tones."""
    worst = -math.inf
    for f in test_tones(rate_in, rate_out, tones):
        t = np.arange(2 * rate_in) / rate_in
        x = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
        process = make(rate_in, rate_out)
        y = np.concatenate([process(c) for c in chunks_of(x, rate_in)]).astype(np.float64)
        y = y[len(y) // 4 : len(y) // 4 + rate_out]  # 1 s after the start-up transient
        window = scipy.signal.windows.blackmanharris(len(y))
        spectrum = np.abs(np.fft.rfft(y * window)) / (window.sum() / 2)
        freqs = np.fft.rfftfreq(len(y), 1 / rate_out)
        if f < rate_out / 2:  # the tone itself is wanted: leave out its main lobe
            spectrum[np.abs(freqs - f) < 8] = 0
        worst = max(worst, 20 * np.log10(spectrum.max() / 0.5 + 1e-30))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tones", type=int, default=48, help="tones in the alias sweep")
    parser.add_argument("--quick", action="store_true", help="2 s per round, 3 rounds, 6 tones")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.tones = 2.0, 3, 6
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    gc.collect()
    gc.freeze()
    print(
        f"# {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}; geminilive "
        f"{geminilive.__version__}, soxr {soxr.__version__}, samplerate {samplerate.__version__}, "
        f"scipy {scipy.__version__}; 20 ms float32 chunks, {args.seconds:g} s x {args.rounds} rounds "
        f"(medians), {args.tones} tones in the alias sweep"
    )
    print(
        f"{'pair':>13} {'peer':>20} {'us/chunk':>9} {'ours x':>7} {'(range)':>13} {'delay ms':>9} "
        f"{'worst alias dB':>15}"
    )
    for rate_in, rate_out in PAIRS:
        x = np.random.default_rng(0).uniform(-0.5, 0.5, int(rate_in * args.seconds)).astype(np.float32)
        frames = chunks_of(x, rate_in)
        processes = {name: make(rate_in, rate_out) for name, make in PEERS.items()}
        for process in processes.values():
            timed(process, frames[:50])
        rounds: dict[str, list[float]] = {name: [] for name in PEERS}
        for _ in range(args.rounds):
            for name in PEERS:
                rounds[name].append(timed(PEERS[name](rate_in, rate_out), frames))
        ours = rounds["geminilive"]
        for name, make in PEERS.items():
            us = statistics.median(rounds[name]) / len(frames) * 1e6
            ratio = statistics.median(rounds[name]) / statistics.median(ours)
            per_round = [peer / mine for peer, mine in zip(rounds[name], ours, strict=True)]
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}"
            print(
                f"{rate_in:>6}->{rate_out:<6} {name:>20} {us:>9.2f} {ratio:>6.2f}x {spread:>13} "
                f"{withheld_ms(make, rate_in, rate_out):>9.2f} "
                f"{worst_alias_db(make, rate_in, rate_out, args.tones):>15.1f}"
            )


if __name__ == "__main__":
    main()
