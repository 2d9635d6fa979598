"""The phone benchmark runs in its quick mode and prints its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benches" / "bench_phone.py"


@pytest.mark.timeout(200)
def test_the_phone_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=190)
    assert result.returncode == 0, result.stdout + result.stderr
    for text in ["24 kHz -> 8 kHz mu-law", "Calls at once", "Calls per core"]:
        assert text in result.stdout, result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(("1 ", "3 "))]
    assert {(row[0], row[1]) for row in rows} == {(n, s) for n in ("1", "3") for s in ("pipecat", "geminilive")}
    assert all(row[6] == f"{row[0]}/{row[0]}" for row in rows), "every call heard a reply, on both servers"
    # Whether a server kept up is a timing (not asserted): each has its line either way.
    capacity = result.stdout.split("Calls per core")[1].splitlines()
    for server in ("pipecat", "geminilive"):
        assert any(line.split()[:1] == [server] for line in capacity), result.stdout


def test_caller_audio_late_at_the_live_api_is_counted_by_frame_against_the_calls_least_delayed() -> None:
    sys.path.insert(0, str(BENCH.parent))
    with warnings.catch_warnings():  # what Pipecat imports warns of its dependencies' deprecations
        warnings.simplefilter("ignore", DeprecationWarning)
        from bench_phone import late_frames

    on_time = [(100.0 + 0.02 * (n + 1), 0.02 * (n + 1)) for n in range(50)]  # (arrival, audio s so far)
    assert late_frames(on_time) == (0, 50)
    shifted = [(t + 5.0, s) for t, s in on_time]  # a constant delay is the line's, not lateness
    assert late_frames(shifted) == (0, 50)
    stalled = [(t + (0.05 if 10 <= n < 13 else 0.0), s) for n, (t, s) in enumerate(on_time)]
    assert late_frames(stalled) == (3, 50)
    early = [(t - (0.05 if n == 0 else 0.0), s) for n, (t, s) in enumerate(on_time)]  # the rest late to it
    assert late_frames(early) == (49, 50)
    # Four frames batched into one message: its first three were held back 60, 40 and 20 ms.
    batched = [*on_time[:20], (on_time[23][0], on_time[23][1]), *on_time[24:]]
    assert late_frames(batched) == (2, 50)
    assert late_frames([]) == (0, 0)
