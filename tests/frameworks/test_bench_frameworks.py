"""The framework benchmark runs in its quick mode and prints its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benches" / "bench_frameworks.py"


@pytest.mark.timeout(200)
def test_the_framework_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=190)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in ["Output resampling 24 -> 48 kHz", "User audio lost across 3 faults", "CPU per session-second",
                 "framework", "End of user speech -> first bot audio frame"]:  # fmt: skip
        assert text in result.stdout, result.stdout
    lost = {line.split()[0]: float(line.split()[2]) for line in result.stdout.splitlines()
            if line.strip().startswith(("pipecat ", "geminilive ")) and len(line.split()) == 6}  # fmt: skip
    assert lost["geminilive"] == 0.0, result.stdout
