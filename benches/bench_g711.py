"""Telephone audio both ways, per 20 ms frame, against the paths phone bridges use today:
audioop's codec with soxr HQ (Pipecat's Twilio path) or with audioop.ratecv (linear
interpolation), all in this run. Also the worst alias of the model-to-phone path (tones from
4.2 to 11.5 kHz at 24 kHz, measured on the decoded 8 kHz mu-law) and each path's delay (the
audio it holds back while streaming).

    python benches/bench_g711.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import timeit
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from audio_util import level_db
from geminilive.telephony import G711Decoder, G711Encoder, decode, encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Coder = Callable[[bytes], bytes]


def to_phone_paths() -> dict[str, Callable[[], Coder]]:
    """Factories of 24 kHz 16-bit PCM -> 8 kHz mu-law paths (each keeps its own state)."""

    def ours() -> Coder:
        return G711Encoder("mulaw", 24000).process

    def with_soxr() -> Coder:
        stream = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality="HQ")
        return lambda pcm: audioop.lin2ulaw(stream.resample_chunk(np.frombuffer(pcm, "<i2")).tobytes(), 2)

    def with_ratecv() -> Coder:
        state = None

        def run(pcm: bytes) -> bytes:
            nonlocal state
            out, state = audioop.ratecv(pcm, 2, 1, 24000, 8000, state)
            return audioop.lin2ulaw(out, 2)

        return run

    return {"geminilive": ours, "audioop + soxr HQ": with_soxr, "audioop.ratecv": with_ratecv}


def from_phone_paths() -> dict[str, Callable[[], Coder]]:
    """Factories of 8 kHz mu-law -> 16 kHz 16-bit PCM paths."""

    def ours() -> Coder:
        return G711Decoder("mulaw", 16000).process

    def with_soxr() -> Coder:
        stream = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="HQ")
        return lambda codes: stream.resample_chunk(np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2")).tobytes()

    def with_ratecv() -> Coder:
        state = None

        def run(codes: bytes) -> bytes:
            nonlocal state
            out, state = audioop.ratecv(audioop.ulaw2lin(codes, 2), 2, 1, 8000, 16000, state)
            return out

        return run

    return {"geminilive": ours, "audioop + soxr HQ": with_soxr, "audioop.ratecv": with_ratecv}


def stream(path: Coder, data: bytes, chunk: int) -> bytes:
    return b"".join(path(data[i : i + chunk]) for i in range(0, len(data), chunk))


def pcm16(x: np.ndarray) -> bytes:
    return np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def worst_alias_db(make: Callable[[], Coder]) -> float:
    rate = 24000
    t = np.arange(rate) / rate
    worst = -300.0
    for freq in np.linspace(4200, 11500, 15):
        out = stream(make(), pcm16(0.5 * np.sin(2 * np.pi * freq * t)), 960)
        decoded = np.frombuffer(decode(out), "<i2") / 32768
        alias = abs(freq - 8000 * round(freq / 8000))
        worst = max(worst, level_db(decoded, 8000, alias))
    return worst


def held_back_ms(make: Callable[[], Coder], rate_in: int, rate_out: int, coded_input: bool) -> float:
    """How much audio the path holds back while streaming: the input's length less the
    output's, after half a second in 20 ms frames (a path aligned in time but holding samples
    back delays them by exactly that)."""
    samples = rate_in // 2
    data = encode(pcm16(np.zeros(samples))) if coded_input else pcm16(np.zeros(samples))
    out = stream(make(), data, rate_in // 50 * (1 if coded_input else 2))
    out_samples = len(out) // (2 if coded_input else 1)
    return (samples / rate_in - out_samples / rate_out) * 1000


def per_frame_us(make: Callable[[], Coder], frame: bytes, number: int) -> float:
    path = make()
    return statistics.median(timeit.repeat(lambda: path(frame), number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    number = 2000 if args.quick else 20000
    rng = np.random.default_rng(0)
    frame_24k = pcm16(rng.uniform(-0.5, 0.5, 480))
    frame_ulaw = encode(pcm16(rng.uniform(-0.5, 0.5, 160)))
    print(f"# {platform.machine()}, Python {platform.python_version()}, soxr {soxr.__version__}; 20 ms frames")
    for title, paths, frame, rates, coded in (
        ("24 kHz PCM -> 8 kHz mu-law", to_phone_paths(), frame_24k, (24000, 8000), False),
        ("8 kHz mu-law -> 16 kHz PCM", from_phone_paths(), frame_ulaw, (8000, 16000), True),
    ):
        print(f"{title:<28} {'us/frame':>9} {'worst alias dB':>15} {'delay ms':>9}")
        per_frame_us(paths["geminilive"], frame, number)  # warm up
        times = {name: per_frame_us(make, frame, number) for name, make in paths.items()}
        for name, make in paths.items():
            alias = "" if coded else worst_alias_db(make)
            shown = alias if isinstance(alias, str) else "< -120" if alias < -120 else f"{alias:.1f}"
            ratio = "" if name == "geminilive" else f"  ({times[name] / times['geminilive']:.1f}x geminilive's time)"
            print(f"{name:<28} {times[name]:>9.2f} {shown:>15} {held_back_ms(make, *rates, coded):>9.2f}{ratio}")
    codec = statistics.median(timeit.repeat(lambda: encode(frame_24k[:320]), number=number, repeat=5)) / number * 1e6
    reference = (
        statistics.median(timeit.repeat(lambda: audioop.lin2ulaw(frame_24k[:320], 2), number=number, repeat=5))
        / number
        * 1e6
    )
    print(f"{'mu-law code 160 samples':<28} {codec:>9.2f} (audioop {reference:.2f})")


if __name__ == "__main__":
    main()
