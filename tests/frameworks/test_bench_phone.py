"""The phone benchmark runs in its quick mode and prints its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benches" / "bench_phone.py"


@pytest.mark.timeout(200)
def test_the_phone_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=190)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in ["24 kHz -> 8 kHz mu-law", "Calls at once", "Calls per core", "ratio geminilive/pipecat"]:
        assert text in result.stdout, result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(("1 ", "3 "))]
    assert {(row[0], row[1]) for row in rows} == {(n, s) for n in ("1", "3") for s in ("pipecat", "geminilive")}
    assert all(row[-1] == f"{row[0]}/{row[0]}" for row in rows), "every call heard a reply, on both servers"
