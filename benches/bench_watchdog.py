"""Model-failure drill: a 30-minute simulated conversation (pushed to talk, a user turn every
30 s, --speedup x real time) against the emulator, in which the model fails silently in every
way the emulator can (no reply, rejected, near-silent, cut off, a tone, an interruption
nobody made, repeated function calls), each --repeats times, some several replies in a row
so that the recovery ladder (reprompt, reconnect, fresh session) climbs; the connection
limit (goAway every 10 minutes) and a session age limit (1011 at 4 minutes, then 1007 for
its handles: a fresh session seeded with the conversation) apply too. Then the same
conversation with nothing injected. Prints what was detected, recovered, lost and falsely
alarmed; exits 1 unless it is N of N, N of N, 0 and 0.
tests/watchdog_drill.py is the scenario; tests/test_watchdog.py runs a short one.

    python benches/bench_watchdog.py [--minutes 30] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from watchdog_drill import LADDER, WatchdogDrillReport, watchdog_drill


def per_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3, help="user turns each failure is injected on")
    parser.add_argument("--speedup", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="8 minutes, each failure once; a 4-minute clean run")
    args = parser.parse_args()
    logging.getLogger("geminilive").setLevel(logging.ERROR)  # each failure is a warning there
    minutes, repeats, clean_minutes = (8.0, 1, 4.0) if args.quick else (args.minutes, args.repeats, args.minutes)
    report: WatchdogDrillReport = asyncio.run(watchdog_drill(minutes=minutes, repeats=repeats, speedup=args.speedup))
    clean: WatchdogDrillReport = asyncio.run(
        watchdog_drill(minutes=clean_minutes, repeats=0, speedup=args.speedup, clean=True)
    )
    injected = sum(report.injected.values())
    detected = sum(min(n, report.detected.get(kind, 0)) for kind, n in report.injected.items())
    print(f"# model-failure drill on {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"simulated conversation   {minutes:g} min, {report.user_turns} user turns, {args.speedup:g}x real time")
    print(f"failed replies injected  {injected}: {per_kind(report.injected)}")
    print(f"detected                 {detected} of {injected}")
    print(f"recovered                {report.recovered} of {report.to_recover} failed user turns (a whole reply after)")
    steps = ", ".join(f"{step} {report.recoveries.get(step, 0)}" for step in LADDER)
    print(f"recovery steps taken     {steps}")
    print(f"repeated calls answered  {report.duplicates_answered} from the first call's result")
    seeded = ", ".join(map(str, report.seeded_turns)) or "-"
    print(f"session age limit        {report.age_limit_fresh_starts} fresh sessions, seeded with {seeded} turns")
    print(f"connections              {report.reconnects} moves: {report.resumed} resumed, {report.fresh_starts} fresh")
    print(f"user audio lost          {report.lost} chunks of {report.chunks_sent}")
    print(f"given to two sessions    {report.given_to_two_sessions} chunks (the unconfirmed tail at a fresh start)")
    print(f"false alarms             {report.false_alarms}")
    print(f"clean run                {clean_minutes:g} min, {clean.user_turns} user turns: "
          f"{sum(clean.detected.values())} false alarms, {clean.lost} chunks lost")  # fmt: skip
    print(f"wall time                {report.wall_s + clean.wall_s:.0f} s")
    ok = (
        detected == injected
        and report.recovered == report.to_recover
        and report.false_alarms == 0
        and report.lost == 0
        and not clean.detected
        and clean.lost == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
