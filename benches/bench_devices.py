"""Device latency and robustness on the PulseAudio loopback (a real audio server, no hardware).

Prints, over a run of --seconds (60 by default):
- capture: delay from the audio callback delivering a frame to Python receiving it (median, p99);
- playback: delay from `push` to the device callback that plays the first pushed sample;
- clear: time from `clear()` to the first callback that outputs silence, and to silence at the
  loopback monitor (what a listener hears);
- under/overruns while audio streams in real time, 20 ms at a time, for the whole run.

    python benches/bench_devices.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from audio_util import until
from geminilive.devices import Capture, Playback
from pulse import pulse_server, routed

RATE = 24000


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


async def wait_played(speaker: Playback, target: int) -> float:
    """When the device callback that played sample `target` (device rate) ran."""
    await until(lambda: speaker.stats.played > target, 5, "playback of what was pushed", poll_s=0.0005)
    return speaker.last_callback_s


async def run(seconds: float) -> None:
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE * 2) / RATE)).astype(np.float32)
    chunk = tone[: RATE // 50]
    capture_delays: list[float] = []
    push_delays: list[float] = []
    clear_callback: list[float] = []
    clear_heard: list[float] = []
    async with Capture(sample_rate_hz=16000) as mic:
        with routed(PULSE_SINK="virt"):
            speaker = Playback(source_rate_hz=RATE, prebuffer_ms=40)
        recent: list = []

        async def listen() -> None:
            async for frame in mic:
                capture_delays.append(time.monotonic() - frame.timestamp)
                recent.append(frame)
                del recent[:-200]

        listener = asyncio.create_task(listen())
        await until(lambda: bool(recent), 10, "captured audio")
        # Push-to-callback: short bursts into an idle buffer (end_of_turn bypasses the prebuffer).
        for _ in range(20):
            before = speaker.stats.pushed
            t_push = time.monotonic()
            speaker.push(chunk)
            speaker.end_of_turn()
            played_at = await wait_played(speaker, before)
            push_delays.append(played_at - t_push)
            await asyncio.sleep(0.1)
        # Clear: one second of tone, cleared after 300 ms.
        for _ in range(5):
            speaker.push(tone[:RATE])
            await asyncio.sleep(0.3)
            t_clear = time.monotonic()
            speaker.clear()
            await until(
                lambda t_clear=t_clear: speaker.last_callback_s > t_clear and not speaker.stats.depth,
                5,
                "silent callback after clear()",
                poll_s=0.0005,
            )
            clear_callback.append(speaker.last_callback_s - t_clear)
            await asyncio.sleep(0.4)
            quiet_after = [f for f in recent if f.timestamp > t_clear and np.sqrt(np.mean(f.samples**2)) < 1e-3]
            if quiet_after:
                clear_heard.append(quiet_after[0].timestamp - t_clear)
            await asyncio.sleep(0.2)
        # Steady streaming in real time for the rest of the run.
        stats0, overruns0 = speaker.stats, mic.stats["overruns"]
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            speaker.push(tone[(n % 100) * 480 : (n % 100) * 480 + 480])
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
        speaker.end_of_turn()
        await asyncio.sleep(0.3)
        stats1 = speaker.stats
        listener.cancel()
        capture_stats, mic_first = mic.stats, mic.first_stream_error
        speaker_xruns, speaker_errors, speaker_first = speaker.xruns, speaker.stream_errors, speaker.first_stream_error
        speaker.close()
    print(f"{'measure':<46} {'median ms':>10} {'p99 ms':>8} {'n':>6}")
    rows = [
        ("capture callback -> Python frame", capture_delays),
        ("playback push -> device callback", push_delays),
        ("clear() -> first silent callback", clear_callback),
        ("clear() -> silence at the loopback monitor", clear_heard),
    ]
    for name, values in rows:
        print(f"{name:<46} {pct(values, 50):>10.2f} {pct(values, 99):>8.2f} {len(values):>6}")
    print(
        f"streaming {seconds:.0f} s in 20 ms pushes: playback underruns {stats1.underruns - stats0.underruns}, "
        f"capture overruns {capture_stats['overruns'] - overruns0}, capture frames dropped "
        f"{capture_stats['dropped_frames']}"
    )
    # Backend errors over the whole run: xruns are gaps; the others (after an xrun, PulseAudio's
    # ALSA plugin can fail the delay query, snd_pcm_avail_delay, on most periods) leave the audio
    # whole.
    for name, xruns, others, first in (
        ("speaker", speaker_xruns, speaker_errors, speaker_first),
        ("microphone", capture_stats["xruns"], capture_stats["stream_errors"], mic_first),
    ):
        print(
            f"{name}: xruns {xruns}, other recovered backend errors {others}" + (f" (first: {first})" if first else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with pulse_server():
        asyncio.run(run(10.0 if args.quick else args.seconds))


if __name__ == "__main__":
    main()
