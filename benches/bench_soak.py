"""Emulator soak: sessions back to back (connect, speak, hear the echo, a barge-in, close) for
--seconds, printing the process's RSS over time. RSS grows until the emulator holds
--max-sessions resumable sessions (each keeps its history for 2 h, as the service's handles
last), then stays flat.

    python benches/bench_soak.py [--seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import time

import numpy as np

import geminilive
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.emulator import LiveEmulator


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


async def one_session(url: str, speech: np.ndarray) -> int:
    config = LiveConfig(silence_duration_ms=100, output_audio_transcription=True)
    async with geminilive.connect(endpoint=url, config=config) as session:
        for i in range(0, len(speech), 320):
            await session.send_audio(speech[i : i + 320])
        received = 0
        async for event in session:
            if isinstance(event, ev.AudioChunk):
                received += len(event.data)
            if isinstance(event, ev.TurnComplete):
                break
        return received


async def run(seconds: float, report_every: float, max_sessions: int) -> None:
    t = np.arange(8000) / 16000
    speech = np.concatenate([np.zeros(1600), 0.3 * np.sin(2 * np.pi * (200 * t + 900 * t * t)), np.zeros(3200)])
    speech = speech.astype(np.float32)
    async with LiveEmulator(
        model="echo", speed=float("inf"), realtime_playback=False, max_sessions=max_sessions
    ) as emu:
        start = last = time.monotonic()
        sessions = 0
        print(f"{'t s':>6} {'sessions':>9} {'RSS MiB':>8}")
        print(f"{0:>6.0f} {0:>9} {rss_mib():>8.1f}")
        while time.monotonic() - start < seconds:
            assert await one_session(emu.url, speech) > 0
            sessions += 1
            emu.connections.clear()  # the test-inspection list would grow by design
            if time.monotonic() - last >= report_every:
                gc.collect()
                last = time.monotonic()
                print(f"{last - start:>6.0f} {sessions:>9} {rss_mib():>8.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-sessions", type=int, default=10000, help="resumable sessions the emulator keeps")
    args = parser.parse_args()
    seconds = 20.0 if args.quick else args.seconds
    asyncio.run(run(seconds, max(2.0, seconds / 10), args.max_sessions))


if __name__ == "__main__":
    main()
