"""The hot paths built for the stable ABI (abi3, one wheel for every CPython from 3.11 on, what
geminilive ships) against a build for this CPython only, in one run.

Both extensions are built here with cargo from this source (release profile, as the wheels;
--quick: a profile without LTO, faster to build), each beside a copy of the Python package,
and timed in child processes taking turns (A B A B ...), medians of the rounds.

    python benches/bench_abi3.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "abi3": ("python pyo3/extension-module pyo3/abi3-py311", ".abi3.so"),
    f"cp{sysconfig.get_config_var('py_version_nodot')}": (
        "python pyo3/extension-module",
        sysconfig.get_config_var("EXT_SUFFIX"),
    ),
}
TIMING = r"""
import base64, json, sys, timeit
import numpy as np
from geminilive import LiveConfig, LiveProtocol, Resampler, pcm

number = int(sys.argv[1])
protocol = LiveProtocol(LiveConfig().to_setup("gemini-live-test"))
protocol.data_to_send()
protocol.receive_data(b'{"setupComplete": {}}')
chunk = (np.random.default_rng(0).uniform(-0.5, 0.5, 320) * 32767).astype("<i2").tobytes()
audio = base64.b64encode(bytes(1920)).decode()
blob = '{"mimeType": "audio/pcm;rate=24000", "data": "%s"}' % audio
message = ('{"serverContent": {"modelTurn": {"parts": [{"inlineData": %s}]}}}' % blob).encode()
resampler = Resampler(48000, 16000)
x48 = np.random.default_rng(1).uniform(-1, 1, 960).astype(np.float32)
x = x48[:320].copy()
cases = {
    "send a 20 ms chunk (frame built, numbered)": lambda: protocol.audio_to_write(chunk),
    "receive a 40 ms audio message": lambda: protocol.receive_data(message),
    "resample 48k->16k, 20 ms": lambda: resampler.process(x48),
    "f32 -> s16le, 320 samples": lambda: pcm.f32_to_s16le(x),
}
from geminilive import _native
timings = {name: min(timeit.repeat(f, number=number, repeat=3)) / number * 1e6 for name, f in cases.items()}
print(json.dumps({"native": _native.__file__, "us": timings}))
"""


def build(variant: str, profile: str, into: Path) -> Path:
    """Build the extension for ``variant`` and lay it beside a copy of the Python package."""
    features, suffix = VARIANTS[variant]
    target = ROOT / "target" / "bench-abi3"
    env = {**os.environ, "PYO3_PYTHON": sys.executable}
    subprocess.run(
        ["cargo", "build", "--locked", "--lib", "--profile", profile, "--features", features, "--target-dir", target],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    package = into / variant / "geminilive"
    shutil.copytree(ROOT / "python" / "geminilive", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(target / profile / "lib_native.so", package / f"_native{suffix}")
    return into / variant


def time_once(path: Path, number: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(path)}
    command = [sys.executable, "-c", TIMING, str(number)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    assert Path(result["native"]).is_relative_to(path), f"{result['native']} is not the build under test"
    return result["us"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds, builds without LTO")
    args = parser.parse_args()
    rounds, number = (3, 5000) if args.quick else (args.rounds, 50000)
    profile = "bench-quick" if args.quick else "release"
    with tempfile.TemporaryDirectory() as tmp:
        paths = {variant: build(variant, profile, Path(tmp)) for variant in VARIANTS}
        results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
        for _ in range(rounds):
            for variant, path in paths.items():
                results[variant].append(time_once(path, number))
    abi3, specific = VARIANTS
    print(
        f"# {platform.machine()}, Python {platform.python_version()}; cargo profile {profile}; "
        f"medians of {rounds} rounds (each the best of 3 x {number})"
    )
    print(f"{'hot path':<44} {abi3 + ' us':>9} {specific + ' us':>9} {'abi3/' + specific:>11}")
    for case in results[abi3][0]:
        a = statistics.median(r[case] for r in results[abi3])
        b = statistics.median(r[case] for r in results[specific])
        print(f"{case:<44} {a:>9.2f} {b:>9.2f} {a / b:>10.2f}x")


if __name__ == "__main__":
    main()
