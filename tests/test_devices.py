"""Real cpal streams on a real audio server (PulseAudio null sink and its monitor)."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time

import numpy as np
import pytest

from audio_util import chirp, find_in_order, run
from geminilive import Resampler
from geminilive.devices import Capture, Playback, list_devices
from geminilive.errors import AudioDeviceError
from pulse import doomed_pulse_server

pytestmark = pytest.mark.usefixtures("pulseaudio")


def test_lists_default_devices_with_rates() -> None:
    devices = list_devices()
    default_in = [d for d in devices if d.is_default_input]
    default_out = [d for d in devices if d.is_default_output]
    assert default_in and default_out
    assert default_in[0].default_input_rate and default_in[0].input_channels >= 1
    assert default_out[0].output_rates is not None


async def capture_while(mic: Capture, seconds: float, action=None) -> list:
    """Frames captured for `seconds` after the stream is flowing; `action()` runs once first."""
    frames = []
    async for frame in mic:  # wait until the monitor delivers
        frames.append(frame)
        break
    if action is not None:
        action()
    stop = frames[0].timestamp + seconds
    async for frame in mic:
        frames.append(frame)
        if frame.timestamp >= stop:
            return frames
    return frames


def level(frames: list) -> float:
    """RMS of captured frames."""
    return float(np.sqrt(np.mean(np.concatenate([f.samples for f in frames]) ** 2)))


def test_loopback_returns_what_was_played_in_order_without_gaps() -> None:
    signal = chirp(2.0, 24000)

    async def scenario():
        async with Capture(sample_rate_hz=16000) as mic:
            with Playback(source_rate_hz=24000) as speaker:
                frames = await capture_while(mic, 3.0, lambda: (speaker.push(signal), speaker.end_of_turn()))
                recovered = [
                    (speaker.stream_errors, speaker.first_stream_error),
                    (mic.stats["stream_errors"], mic.first_stream_error),
                ]
                return frames, speaker.stats, mic.stats, recovered

    frames, playout, capture, recovered = run(scenario())
    # Backend errors recovered from (other than xruns) are counted, the first kept for diagnosis.
    assert all((count > 0) == (first is not None) for count, first in recovered), recovered
    assert [f.index for f in frames] == [frames[0].index + 320 * i for i in range(len(frames))], "no gaps"
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(frames)), "in order"
    captured = np.concatenate([f.samples for f in frames])
    share, spread, scores = find_in_order(captured, Resampler(24000, 16000).process(signal), 16000)
    # Most pieces at one consistent offset (an xrun on a loaded machine may spoil a piece).
    assert share >= 0.6 and spread < 0.02, scores
    assert playout.played == playout.pushed and playout.underruns == 0
    assert capture["overruns"] == 0


def test_clear_silences_playback() -> None:
    tone = (0.3 * np.sin(2 * np.pi * 500 * np.arange(24000 * 3) / 24000)).astype(np.float32)

    async def scenario():
        async with Capture(sample_rate_hz=16000) as mic:
            with Playback(source_rate_hz=24000) as speaker:
                frames = await capture_while(mic, 0.6, lambda: speaker.push(tone))
                discarded = speaker.clear()
                after = await capture_while(mic, 0.6)
                return frames, after, discarded, speaker.stats

    before, after, discarded, stats = run(scenario())
    assert level(before[-10:]) > 0.1, "the tone was playing"
    assert level(after[-10:]) < 1e-3, "and is silent after clear()"
    assert discarded > 48000, "most of the 3 s tone was still queued"
    assert stats.discarded > 0 and stats.played + stats.discarded == stats.pushed


def test_set_gain_ducks_what_the_monitor_hears_and_restores_it() -> None:
    tone = (0.3 * np.sin(2 * np.pi * 500 * np.arange(24000 * 4) / 24000)).astype(np.float32)

    async def scenario():
        async with Capture(sample_rate_hz=16000) as mic:
            with Playback(source_rate_hz=24000) as speaker:
                full = await capture_while(mic, 0.6, lambda: speaker.push(tone))
                ducked = await capture_while(mic, 0.6, lambda: speaker.set_gain(0.25))
                restored = await capture_while(mic, 0.6, lambda: speaker.set_gain(1.0))
                with pytest.raises(ValueError, match="gain"):
                    speaker.set_gain(2.0)
                return full, ducked, restored, speaker.stats

    full, ducked, restored, stats = run(scenario())
    # The last 0.2 s of each stretch: past the ramp and the audio server's own latency.
    assert level(full[-10:]) > 0.1, "the tone was playing"
    assert level(ducked[-10:]) / level(full[-10:]) == pytest.approx(0.25, abs=0.03)
    assert level(restored[-10:]) / level(full[-10:]) == pytest.approx(1.0, abs=0.05)
    assert stats.discarded == 0, "ducking drops nothing"


def test_no_such_device_is_a_clear_error() -> None:
    with pytest.raises(AudioDeviceError, match='no audio device named "nope"'):
        Playback("nope")
    with pytest.raises(AudioDeviceError, match='no audio device named "nope"'):
        Capture("nope").open()


def test_open_and_close_100_times_leaks_nothing() -> None:
    def resources() -> tuple[int, int]:
        return len(os.listdir("/proc/self/fd")), threading.active_count() + len(os.listdir("/proc/self/task"))

    Playback().close()  # warm up the ALSA/PulseAudio client libraries
    before = resources()
    for i in range(100):
        if i % 2:
            Playback().close()
        else:
            Capture().open().close()
    assert resources() == before


def test_a_closed_capture_ends_its_iteration() -> None:
    async def scenario():
        mic = Capture(sample_rate_hz=16000)
        async with mic:
            await mic.__anext__()
            mic.close()
            with pytest.raises(StopAsyncIteration):
                await mic.__anext__()

    asyncio.run(scenario())


def test_a_capture_cancelled_as_its_frame_arrives_stops() -> None:
    """A cancel that lands in the same loop turn as the frame's wake-up ends the wait (with
    `asyncio.wait_for` on 3.11 it was swallowed and the task ran on)."""

    async def scenario():
        async with Capture(sample_rate_hz=16000) as mic:
            await mic.__anext__()
            mic._frames.clear()
            waiting = asyncio.create_task(mic.__anext__())
            while mic._waiter is None or mic._waiter.done():
                await asyncio.sleep(0)
            mic._waiter.set_result(None)  # the stream's wake-up...
            waiting.cancel()  # ...and a cancel in the same turn
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await waiting

    run(scenario())


def test_a_starting_playback_stream_is_not_taken_for_a_stalled_one() -> None:
    """Through PulseAudio a new playback stream calls back a few times, then not for about
    1.9 s while the server starts it: pushing all through that start is no error."""

    async def scenario():
        with Playback(source_rate_hz=24000, period_ms=20) as speaker:
            for _ in range(175):  # 3.5 s
                speaker.push(np.zeros(480, np.float32))
                await asyncio.sleep(0.02)
            assert speaker.callbacks > 50, "the stream ran once started"

    run(scenario())


def test_a_vanishing_audio_server_is_an_error_not_a_hang(tmp_path) -> None:
    """Kill a private PulseAudio server under running streams: both report it."""

    async def scenario(kill_server):
        async with Capture(sample_rate_hz=16000) as mic:
            speaker = Playback()
            await mic.__anext__()
            kill_server()
            with pytest.raises(AudioDeviceError):
                while True:
                    await mic.__anext__()
            deadline = time.monotonic() + 10
            with pytest.raises(AudioDeviceError):
                while time.monotonic() < deadline:
                    speaker.push(np.zeros(480, np.float32))
                    await asyncio.sleep(0.1)
            speaker.close()

    with doomed_pulse_server(tmp_path / "runtime") as kill_server:
        run(scenario(kill_server))
