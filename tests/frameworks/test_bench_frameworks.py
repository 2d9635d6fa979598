"""The framework benchmark runs in its quick mode and prints its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benches" / "bench_frameworks.py"
TABLES = {
    "pipecat": ["Output resampling 24 -> 48 kHz", "framework"],
    "livekit": ["Input resampling 48 -> 16 kHz", "LiveKit AgentSession"],
}


@pytest.mark.timeout(200)
@pytest.mark.parametrize("framework", TABLES)
def test_the_framework_benchmark_runs_in_quick_mode(framework: str) -> None:
    command = [sys.executable, str(BENCH), "--quick", "--framework", framework]
    result = subprocess.run(command, capture_output=True, text=True, timeout=190)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in [*TABLES[framework], "User audio lost across 3 faults", "CPU per session-second",
                 "End of user speech -> first bot audio frame"]:  # fmt: skip
        assert text in result.stdout, result.stdout
    lost = {line.split()[0]: float(line.split()[2]) for line in result.stdout.splitlines()
            if line.strip().startswith((f"{framework} ", "geminilive ")) and len(line.split()) == 6}  # fmt: skip
    assert set(lost) == {framework, "geminilive"}, result.stdout
    # At most one 20 ms chunk a fault: a frame in flight while the server made the handle it
    # resumes from is lost about once in ten runs (a handle without an index cannot say what
    # it covers; the framework's own service loses seconds).
    assert lost["geminilive"] <= 3 * 0.02 < lost[framework], result.stdout
