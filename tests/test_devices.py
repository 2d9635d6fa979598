"""Real cpal streams on a real audio server (PulseAudio null sink and its monitor)."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time

import numpy as np
import pytest

from audio_util import LOOPS, RIG_GLITCH_SPREAD_S, chirp, find_in_order, run, until
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


@pytest.mark.parametrize("loop", LOOPS)
def test_loopback_returns_what_was_played_in_order_without_gaps(loop: str) -> None:
    signal = chirp(2.0, 24000)

    async def scenario():
        async with Capture(sample_rate_hz=16000) as mic:
            assert (mic._wakeups is not None) == (loop == "no-fd-watch"), "a thread wakes the loop only there"
            with Playback(source_rate_hz=24000) as speaker:
                frames = await capture_while(mic, 3.0, lambda: (speaker.push(signal), speaker.end_of_turn()))
                recovered = [
                    (speaker.stream_errors, speaker.first_stream_error),
                    (mic.stats["stream_errors"], mic.first_stream_error),
                ]
                return frames, speaker.stats, mic.stats, recovered

    frames, playout, capture, recovered = run(scenario(), loop=loop)
    # Backend errors recovered from (other than xruns) are counted, the first kept for diagnosis.
    assert all((count > 0) == (first is not None) for count, first in recovered), recovered
    assert [f.index for f in frames] == [frames[0].index + 320 * i for i in range(len(frames))], "no gaps"
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(frames)), "in order"
    captured = np.concatenate([f.samples for f in frames])
    share, spread, scores = find_in_order(captured, Resampler(24000, 16000).process(signal), 16000)
    # Most pieces found, at offsets only the rig's xruns move (one may spoil a piece).
    assert share >= 0.6 and spread < RIG_GLITCH_SPREAD_S, scores
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


def speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Low-passed noise in 0.4 s bursts with 0.2 s gaps: a far end with a voice's rhythm."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.standard_normal(int(seconds * rate)), np.ones(6) / 6, mode="same")
    x *= (np.arange(len(x)) // int(0.2 * rate)) % 3 != 2
    return (0.25 * x / np.abs(x).max()).astype(np.float32)


def test_echo_cancellation_takes_what_the_speaker_played_out_of_the_microphone() -> None:
    """Two microphones on the loopback monitor at once, one cancelling the echo of the
    speaker it is linked to: once the canceller has converged the model's voice is over
    30 dB down, while a second speaker it is not linked to (the user) comes through whole."""
    far = speech_like(9.0, 24000, seed=1)
    t = np.arange(24000) / 24000
    user = (0.2 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)

    async def scenario():
        with Playback(source_rate_hz=24000) as model_voice, Playback(source_rate_hz=24000) as user_voice:
            async with (
                Capture(sample_rate_hz=16000) as plain,
                Capture(sample_rate_hz=16000, echo_reference=model_voice.echo_reference()) as cancelled,
            ):
                heard: dict[str, list] = {"plain": [], "cancelled": []}

                async def listen(name: str, mic: Capture) -> None:
                    async for frame in mic:
                        heard[name].append(frame)

                listeners = [asyncio.create_task(listen(n, m)) for n, m in (("plain", plain), ("cancelled", cancelled))]
                for speaker in (model_voice, user_voice):  # new PulseAudio streams take ~2 s to settle
                    speaker.push(np.zeros(4800, np.float32))
                    speaker.end_of_turn()
                await asyncio.sleep(2.5)
                model_voice.push(far)
                model_voice.end_of_turn()
                await asyncio.sleep(9.0)
                await until(lambda: model_voice.stats.depth == 0, 10, "the model's voice played out")
                await asyncio.sleep(0.5)  # and through the audio server
                far_over = time.monotonic()
                user_voice.push(user)
                user_voice.end_of_turn()
                await asyncio.sleep(1.5)
                for task in listeners:
                    task.cancel()
                return heard, far_over

    heard, far_over = run(scenario())

    def loud_from(after: float) -> float:
        """When the plain microphone first heard something after ``after``."""
        loud = (f.timestamp for f in heard["plain"] if f.timestamp > after and np.abs(f.samples).max() > 0.02)
        return next(loud, float("inf"))

    def level(name: str, lo: float, hi: float) -> float:
        frames = [f.samples for f in heard[name] if lo <= f.timestamp < hi]
        assert frames, f"the {name} microphone heard nothing from {lo:.2f} to {hi:.2f}"
        return float(np.sqrt(np.mean(np.concatenate(frames) ** 2)))

    far_heard = loud_from(0.0)
    # Per half second once converged; the median, as an xrun of the rig on a busy machine shifts
    # the echo path and costs the canceller a second or so to find it again (a CI machine showed
    # two in 3.5 s), so the far end plays long enough for most windows to follow a settled path.
    starts = far_heard + 2.0 + 0.5 * np.arange(13)
    erle = [20 * np.log10(level("plain", a, a + 0.5) / level("cancelled", a, a + 0.5)) for a in starts]
    assert np.median(erle) > 30, f"the echo is not removed: {np.round(erle, 1)} dB"
    user_heard = loud_from(far_over)
    during_user = (user_heard + 0.2, user_heard + 0.8)
    kept = level("cancelled", *during_user) / level("plain", *during_user)
    assert kept > 0.7, f"the user's voice lost {-20 * np.log10(kept):.1f} dB (echo {np.round(erle, 1)} dB down)"


def test_an_echo_reference_serves_one_microphone() -> None:
    with Playback() as speaker:
        reference = speaker.echo_reference()
        with pytest.raises(AudioDeviceError, match="taken already"):
            speaker.echo_reference()
        Capture(echo_reference=reference).open().close()
        with pytest.raises(AudioDeviceError, match="already in use"):
            Capture(echo_reference=reference).open()
        with pytest.raises(AudioDeviceError, match="16000, 32000 or 48000"):
            Capture(sample_rate_hz=24000, echo_reference=Playback().echo_reference()).open()


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


@pytest.mark.parametrize("loop", LOOPS)
def test_a_closed_capture_ends_its_iteration(loop: str) -> None:
    async def scenario():
        mic = Capture(sample_rate_hz=16000)
        async with mic:
            await mic.__anext__()
            mic.close()
            with pytest.raises(StopAsyncIteration):
                await mic.__anext__()

    run(scenario(), loop=loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_capture_cancelled_as_its_frame_arrives_stops(loop: str) -> None:
    """A cancel that lands in the same loop turn as the frame's wake-up ends the wait (with
    `asyncio.wait_for` on 3.11 it was swallowed and the task ran on)."""

    async def scenario():
        async with Capture(sample_rate_hz=16000) as mic:
            await mic.__anext__()
            while True:  # until the task waits: a frame delivered before it ran ends it at once
                mic._frames.clear()
                waiting = asyncio.create_task(mic.__anext__())
                while not waiting.done() and (mic._waiter is None or mic._waiter.done()):
                    await asyncio.sleep(0)
                if not waiting.done():
                    break
            mic._waiter.set_result(None)  # the stream's wake-up...
            waiting.cancel()  # ...and a cancel in the same turn
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await waiting

    run(scenario(), loop=loop)


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


@pytest.mark.parametrize("loop", LOOPS)
def test_a_vanishing_audio_server_is_an_error_not_a_hang(tmp_path, loop: str) -> None:
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
        run(scenario(kill_server), loop=loop)
