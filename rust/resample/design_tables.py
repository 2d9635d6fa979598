"""Designs the resampler's fixed equiripple filters and writes `tables.rs` next to this file.

The rate pairs a voice app runs all day (48k -> 16k to send, 24k -> 48k to play, and every
decimation's final 3:2 step) get minimax (Parks-McClellan) filters. Against the Kaiser window
used for other pairs they trade passband ripple nobody hears (0.02 dB instead of 1e-5 dB) for
a third fewer taps at the same stop band. Half-band filters are designed by the
Vaidyanathan-Nguyen trick, so their even taps are exactly zero.

The committed `tables.rs` is the source of truth. Another scipy, BLAS or CPU can change the
design's last bits (1e-18 here, far below the f32 taps the Rust code runs), so `--check`
compares numbers within `RELATIVE_TOLERANCE` of the largest tap, not text: noise passes, a
changed design fails until the table is regenerated. Each table states the specification it
was designed to (`/// Spec: ...`), and the tests measure it from the committed taps.

    python rust/resample/design_tables.py           # rewrite tables.rs
    python rust/resample/design_tables.py --check   # exit 1 if tables.rs is not this design
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLES = Path(__file__).with_name("tables.rs")

# Differences up to this fraction of the largest tap are floating-point noise: 1e-9 is 50x
# below an f32 tap's rounding and a million times above what scipy releases change.
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Spec:
    """What a prototype must do, with frequencies in units where its grid runs at `rate` (Hz
    for a table made for one input rate, else relative)."""

    rate: float
    passband: float  # flat from 0 to here ...
    ripple_db: float  # ... within this many dB of unity
    stopband: float  # from here to rate / 2 ...
    attenuation_db: float  # ... at least this far down

    def render(self) -> str:
        return (
            f"/// Spec: grid rate {self.rate!r}, pass band to {self.passband!r} within {self.ripple_db!r} dB,"
            f" stop band from {self.stopband!r} down {self.attenuation_db!r} dB."
        )


SPEC_LINE = re.compile(
    r"/// Spec: grid rate (?P<rate>[\d.e+-]+), pass band to (?P<passband>[\d.e+-]+) within"
    r" (?P<ripple_db>[\d.e+-]+) dB, stop band from (?P<stopband>[\d.e+-]+) down (?P<attenuation_db>[\d.e+-]+) dB\."
)
TABLE = re.compile(
    r"(?P<doc>(?:///[^\n]*\n)+)pub\(super\) const (?P<name>\w+): Prototype = Prototype \{\s*"
    r"up: (?P<up>\d+),\s*down: (?P<down>\d+),\s*half: &\[(?P<half>[^\]]*)\],\s*\};"
)


@dataclass(frozen=True)
class Table:
    """One prototype as `tables.rs` holds it: half of a symmetric filter, from the centre."""

    name: str
    up: int
    down: int
    half: np.ndarray
    spec: Spec
    purpose: str

    def taps(self) -> np.ndarray:
        return np.concatenate([self.half[:0:-1], self.half])


def measure(table: Table, points: int = 1 << 20) -> tuple[float, float]:
    """The worst pass-band deviation from unity and the worst stop-band level, in dB, of the
    table's taps over its spec's bands (a dense FFT of the whole filter)."""
    response = np.abs(np.fft.rfft(table.taps(), points))
    freqs = np.arange(len(response)) * table.spec.rate / points
    passband = 20 * np.log10(response[freqs <= table.spec.passband])
    stopband = 20 * np.log10(np.maximum(response[freqs >= table.spec.stopband], 1e-300))
    return float(np.max(np.abs(passband))), float(-np.max(stopband))


def parse(text: str) -> dict[str, Table]:
    """The tables of a `tables.rs` text, by name; a table without a spec line is an error."""
    tables = {}
    for m in TABLE.finditer(text):
        spec = SPEC_LINE.search(m["doc"])
        if spec is None:
            raise ValueError(f"{m['name']} states no spec line")
        purpose = " ".join(line[4:] for line in m["doc"].splitlines() if not line.startswith("/// Spec:"))
        tables[m["name"]] = Table(
            name=m["name"],
            up=int(m["up"]),
            down=int(m["down"]),
            half=np.array([float(v) for v in m["half"].replace(",", " ").split()]),
            spec=Spec(**{k: float(v) for k, v in spec.groupdict().items()}),
            purpose=purpose.strip(),
        )
    return tables


def differences(committed: dict[str, Table], designed: dict[str, Table]) -> list[str]:
    """Why `committed` is not `designed`, one line per reason; empty when they agree within
    `RELATIVE_TOLERANCE`."""
    problems = []
    for name in sorted(committed.keys() ^ designed.keys()):
        problems.append(f"{name}: only in {'tables.rs' if name in committed else 'the design'}")
    for name in sorted(committed.keys() & designed.keys()):
        a, b = committed[name], designed[name]
        if (a.up, a.down, a.spec) != (b.up, b.down, b.spec):
            problems.append(f"{name}: up/down or spec differ ({a.up}/{a.down} {a.spec} vs {b.up}/{b.down} {b.spec})")
        elif len(a.half) != len(b.half):
            problems.append(f"{name}: {2 * len(a.half) - 1} taps in tables.rs, {2 * len(b.half) - 1} designed")
        else:
            worst = float(np.max(np.abs(a.half - b.half)) / np.max(np.abs(b.half)))
            if worst > RELATIVE_TOLERANCE:
                problems.append(f"{name}: taps differ by {worst:.3g} of the largest (tolerance {RELATIVE_TOLERANCE})")
    return problems


def sharp_3_2() -> np.ndarray:
    """Output rate 1, prototype rate 3 (two branches at input rate 1.5): flat to 0.45,
    stop band from 0.5, the output Nyquist frequency."""
    import scipy.signal

    return scipy.signal.remez(345, [0, 0.45, 0.5, 1.5], [1, 0], weight=[1, 10000], fs=3, maxiter=1000)


def halfband(taps: int, rate: float, passband: float) -> np.ndarray:
    """A half-band filter at `rate`, flat to `passband`, stop band from rate/2 - passband:
    `taps` = 4k + 3, every even tap off the centre exactly zero, the centre exactly 1/2."""
    import scipy.signal

    odd = (taps + 1) // 2  # taps of the type-II filter of which h's odd taps are halves
    g = scipy.signal.remez(odd, [0, 2 * passband], [1], fs=rate, maxiter=1000)
    h = np.zeros(taps)
    h[0::2] = g / 2
    h[taps // 2] = 0.5
    return h


def wide_44k1_to_24k() -> np.ndarray:
    """44.1k -> 24k on the way to 16k (80 phases): flat to 7.2 kHz, stop band from 16 kHz, what
    would fold below 8 kHz at 24 kHz. A minimax design at 4x the input rate, then taken to the
    80-phase grid by a Kaiser interpolator (flat there, stop band from its first image): 36 taps
    per phase where a Kaiser window at the same 141 dB needs 48 (the window forces 1e-7 ripple
    on the pass band too). Odd length, so that it is centred on a grid point."""
    import scipy.signal

    rate, phases = 4, 80
    passband, stopband = 7200 / 44100, 16000 / 44100  # in input-sample units
    g = scipy.signal.remez(129, [0, passband, stopband, rate / 2], [1, 0], weight=[1, 10000], fs=rate, maxiter=2000)
    attenuation = 150.0
    transition = ((rate - stopband) - passband) / phases
    taps = int(np.ceil((attenuation - 8) / (2.285 * 2 * np.pi * transition))) | 1
    cutoff = ((rate - stopband) + passband) / phases  # as a fraction of the grid's Nyquist rate
    interpolator = scipy.signal.firwin(taps, cutoff, window=("kaiser", 0.1102 * (attenuation - 8.7)))
    stuffed = np.zeros((len(g) - 1) * (phases // rate) + 1)
    stuffed[:: phases // rate] = g
    return np.convolve(stuffed, interpolator)


def design() -> dict[str, Table]:
    """Every fixed table as this scipy designs it (DC gain 1; a half-band filter keeps its
    exact centre of 1/2, since rescaling would spoil the exact zeros' partner)."""
    designs = [
        # name, prototype, interpolation and decimation factors, spec, what it is for
        ("SHARP_3_2", sharp_3_2(), 2, 3, Spec(3.0, 0.45, 0.02, 0.5, 137.5),
         "The final 3:2 step of every decimation (24k -> 16k)."),
        ("HALFBAND_DOWN_2_OF_3", halfband(51, 3.0, 0.5), 1, 2, Spec(3.0, 0.5, 1e-05, 1.0, 139.5),
         "A 2:1 step of a decimation by 3 or more (48k -> 24k on the way to 16k): flat to the"
         " final Nyquist frequency, stop band from where aliases would reach it (a larger"
         " ratio only widens the transition it needs)."),
        ("HALFBAND_UP_2", halfband(183, 2.0, 0.45), 2, 1, Spec(2.0, 0.45, 1e-05, 0.55, 144.0),
         "2x interpolation (24k -> 48k)."),
        ("WIDE_44K1_TO_24K", wide_44k1_to_24k(), 80, 147, Spec(80 * 44100.0, 7200.0, 0.015, 16000.0, 141.0),
         "44.1k -> 24k on the way to 16k: flat to 7.2 kHz, 141 dB down from 16 kHz."),
    ]  # fmt: skip
    tables = {}
    for name, h, up, down, spec, purpose in designs:
        centre = len(h) // 2
        half = h[centre:] if h[centre] == 0.5 else h[centre:] / h.sum()
        tables[name] = Table(name, up, down, half, spec, purpose)
    return tables


def wrap_doc(text: str, width: int = 96) -> list[str]:
    lines, line = [], "///"
    for word in text.split():
        if len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "///"
        line += " " + word
    return [*lines, line]


def render(tables: dict[str, Table]) -> str:
    out = [
        "//! Generated by `design_tables.py` (scipy.signal.remez); do not edit.",
        "",
        "/// A linear-phase prototype on the interpolated grid (`up` x the input rate).",
        "pub(super) struct Prototype {",
        "    pub up: u64,",
        "    pub down: u64,",
        "    /// `half[g]` is the coefficient `g` grid steps from the centre (symmetric); DC gain 1.",
        "    pub half: &'static [f64],",
        "}",
    ]
    for table in tables.values():
        out += ["", *wrap_doc(table.purpose), table.spec.render()]
        out += [f"pub(super) const {table.name}: Prototype = Prototype {{", f"    up: {table.up},"]
        out += [f"    down: {table.down},", "    half: &["]
        out += [f"        {v!r}," for v in table.half.tolist()]
        out += ["    ],", "};"]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    designed = design()
    if args.check:
        problems = differences(parse(TABLES.read_text()), designed) if TABLES.exists() else ["tables.rs is missing"]
        for problem in problems:
            print(problem, file=sys.stderr)
        sys.exit(1 if problems else 0)
    TABLES.write_text(render(designed))


if __name__ == "__main__":
    main()
