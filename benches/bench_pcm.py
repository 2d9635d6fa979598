"""PCM conversion against the numpy expressions that do the same, on 20 ms frames.

python benches/bench_pcm.py
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

from geminilive import pcm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    number = 20000 if args.quick else 200000
    x = (np.random.default_rng(0).uniform(-1.2, 1.2, 320)).astype(np.float32)
    data = pcm.f32_to_s16le(x)
    stereo = np.random.default_rng(1).uniform(-1, 1, (960, 2)).astype(np.float32)
    cases = {
        "f32 -> s16le bytes (320)": (
            lambda: pcm.f32_to_s16le(x),
            lambda: np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes(),
        ),
        "s16le bytes -> f32 (320)": (
            lambda: pcm.s16le_to_f32(data),
            lambda: np.frombuffer(data, "<i2").astype(np.float32) / np.float32(32768),
        ),
        "stereo -> mono (960x2)": (lambda: pcm.to_mono(stereo), lambda: stereo.mean(axis=1)),
    }
    assert pcm.f32_to_s16le(x) == cases["f32 -> s16le bytes (320)"][1]()
    print(f"{'case':<28} {'geminilive us':>14} {'numpy us':>10} {'ratio':>7}  (medians of 7 rounds)")
    for name, (ours, theirs) in cases.items():
        a = statistics.median(timeit.repeat(ours, number=number, repeat=7)) / number * 1e6
        b = statistics.median(timeit.repeat(theirs, number=number, repeat=7)) / number * 1e6
        print(f"{name:<28} {a:>14.2f} {b:>10.2f} {b / a:>6.1f}x")


if __name__ == "__main__":
    main()
