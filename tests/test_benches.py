"""Every benchmark runs, in its quick mode, and prints its table (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parents[1] / "benches"
# bench file -> text its table must contain
EXPECTED = {
    "bench_resample.py": ["soxr HQ", "libsamplerate best", "scipy resample_poly", "worst alias dB"],
    "bench_protocol.py": ["send 20 ms", "receive 40 ms audio", "google-genai"],
    "bench_pcm.py": ["f32 -> s16le", "numpy"],
    "bench_g711.py": ["24 kHz PCM -> 8 kHz mu-law", "audioop + soxr HQ", "audioop.ratecv"],
    "bench_abi3.py": ["abi3/cp3", "send a 20 ms chunk", "resample 48k->16k"],
    "bench_faults.py": ["audio lost             0 chunks", "audio duplicated       0 chunks"],
    "bench_watchdog.py": ["detected", "recovery steps taken", "false alarms             0"],
    "bench_scale.py": ["geminilive", "transport", "google-genai", "KiB/sess"],
    "bench_soak.py": ["RSS"],
    "bench_devices.py": ["clear() -> first silent callback"],
    "bench_conversation.py": ["end->play", "intr->sil"],
    "bench_latency.py": ["geminilive", "reference", "intr->sil"],
}
NEEDS_AUDIO = {"bench_devices.py", "bench_conversation.py", "bench_latency.py"}
# Run in the frameworks' venv, by tests/frameworks/test_bench_frameworks.py and test_bench_phone.py.
ELSEWHERE = {"bench_frameworks.py", "bench_phone.py"}
# Seconds a quick run may take: bench_abi3 builds the extension twice first (a minute from scratch).
TIMEOUT_S = {"bench_abi3.py": 400}


def test_every_benchmark_is_listed() -> None:
    assert sorted(p.name for p in BENCHES.glob("bench_*.py")) == sorted([*EXPECTED, *ELSEWHERE])


@pytest.mark.parametrize(
    "bench", [pytest.param(b, marks=pytest.mark.timeout(TIMEOUT_S.get(b, 110) + 10)) for b in sorted(EXPECTED)]
)
def test_benchmark_runs_in_quick_mode(bench: str, request) -> None:
    if bench in NEEDS_AUDIO:
        request.getfixturevalue("pulseaudio")  # share the session's sound server
    result = subprocess.run(
        [sys.executable, str(BENCHES / bench), "--quick"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S.get(bench, 110),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for text in EXPECTED[bench]:
        assert text in result.stdout, result.stdout


def test_scale_repeats_each_step_and_counts_the_runs_that_passed() -> None:
    command = [sys.executable, str(BENCHES / "bench_scale.py"), "--clients", "transport", "--steps", "5"]
    result = subprocess.run([*command, "--seconds", "1", "--repeat", "2"], capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(line.split()[:2] == ["transport", "5"] for line in result.stdout.splitlines()) == 2, result.stdout
    assert "5 passed in 2 of 2 runs" in result.stdout, result.stdout
    assert "transport: sustains 5 sessions on one core with under 1% late frames in 2 of 2 runs" in result.stdout
