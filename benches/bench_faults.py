"""Fault soak: a 30-minute streamed conversation (simulated time: the audio goes at --speedup x
real time) with a fault every minute of audio (1011 closes, silent TCP drops, goAways, some
with jitter; every fourth a resume attempt that fails: refused with 1011 or 1008, dropped, or
stalled past the setup timeout), against the emulator over real sockets. Prints reconnects, audio lost and
duplicated (both must be 0, counted by the chunk numbers the emulator recorded), and peak
memory. tests/fault_drill.py is the scenario; tests/test_faults.py asserts on shorter runs.

    python benches/bench_faults.py [--minutes 30] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fault_drill import drill, mixed_faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--speedup", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 minutes")
    parser.add_argument("--heap", action="store_true", help="also trace the Python heap (slower)")
    args = parser.parse_args()
    minutes = 3.0 if args.quick else args.minutes
    chunks = int(minutes * 60 * 50)
    faults = int(minutes)
    per_minute = 60 * 50
    if args.heap:
        tracemalloc.start()
    report, _ = asyncio.run(
        drill(
            chunks=chunks,
            faults=mixed_faults(
                faults, args.seed, messages=(per_minute * 9 // 10, per_minute * 11 // 10), failed_resumes=True
            ),
            seed=args.seed,
            speedup=args.speedup,
        )
    )
    recorded_mib = report.chunks_received * 640 / 2**20
    print(f"# fault soak on {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"simulated audio        {minutes:g} min ({chunks} chunks of 20 ms), {args.speedup:g}x real time")
    failed = len(range(1, faults, 4))
    print(f"faults injected        {faults} (one per minute of audio; {failed} of them failed resume attempts)")
    print(f"wall time              {report.wall_s:.1f} s")
    print(f"reconnects             {report.reconnects} (resumed {report.resumed}, fresh {report.fresh_starts})")
    print(f"messages replayed      {report.replayed_messages}")
    print(f"audio lost             {report.lost} chunks")
    print(f"audio duplicated       {report.duplicated} chunks")
    print(f"identical, in order    {report.identical and not report.reordered}")
    print(f"held audio dropped     {report.dropped_audio_frames} frames")
    rss = report.rss_mib_per_minute
    print(
        f"peak RSS               {report.peak_rss_mib:.0f} MiB, client and emulator in one process "
        f"(incl. {recorded_mib:.0f} MiB: the emulator's record of the audio, for the check)"
    )
    print(f"RSS by minute          {' '.join(f'{r:.0f}' for r in rss[:: max(1, len(rss) // 10)])} MiB")
    print(f"RSS growth             {(rss[-1] - rss[0]) / max(len(rss) - 1, 1):.2f} MiB/min (the record: 1.83 MiB/min)")
    heap = report.heap_mib_per_minute
    if heap:
        sampled = " ".join(f"{h:.0f}" for h in heap[:: max(1, len(heap) // 10)])
        growth = (heap[-1] - heap[1]) / max(len(heap) - 2, 1)
        print(f"Python heap by minute  {sampled} MiB (the record excluded)")
        print(f"heap growth            {growth:.3f} MiB/min after the first minute")
    ok = report.lost == 0 and report.duplicated == 0 and report.identical
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
