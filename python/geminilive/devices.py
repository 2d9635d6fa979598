"""Microphone and speaker through the Rust core (cpal): no GIL, no allocation and no locks in
the audio callbacks; captured frames reach asyncio through a socket the loop watches, or, on a
loop that cannot watch one (Windows' Proactor loop), from a thread that waits in Rust.

    async with Capture(sample_rate_hz=16000) as mic:
        async for frame in mic:
            ...  # frame.samples: float32 at 16 kHz, frame.timestamp: time.monotonic() clock

    with Playback(source_rate_hz=24000) as speaker:
        speaker.push(pcm_24k)
        speaker.clear()          # barge-in: silent within one device period
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np

from geminilive._loop import watches_file_descriptors
from geminilive._native import CaptureStream, EchoReference, PlaybackStream, PlayoutStats
from geminilive._native import list_devices as _list_devices
from geminilive.errors import AudioDeviceError

# A device that has not called back in this long is reported as not delivering audio. Servers
# take a while to start a stream: through PulseAudio a new playback stream calls back a few times
# to fill its buffer and then not again for 1.9 s (measured on a null sink), so a stream this
# young is given this long between callbacks too.
NO_AUDIO_TIMEOUT_S = 5.0
# A stream past its start whose callbacks stop for this long is reported as gone (an audio
# server that died, a device unplugged without an error from the backend).
STALL_TIMEOUT_S = 2.0


# How often a capture waiting for frames checks that its device is alive.
CHECK_INTERVAL_S = 0.5


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _stall_limit_s(age_s: float) -> float:
    """How long a stream of this age may go without a callback before it counts as gone."""
    return NO_AUDIO_TIMEOUT_S if age_s < NO_AUDIO_TIMEOUT_S else STALL_TIMEOUT_S


__all__ = ["Capture", "CapturedFrame", "DeviceInfo", "Playback", "list_devices"]


class DeviceInfo(msgspec.Struct, frozen=True):
    host: str
    id: str
    name: str
    is_default_input: bool
    is_default_output: bool
    input_channels: int
    output_channels: int
    input_rates: tuple[int, int] | None
    output_rates: tuple[int, int] | None
    default_input_rate: int | None
    default_output_rate: int | None


@contextlib.contextmanager
def _c_stderr_silenced() -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 meanwhile to /dev/null: probing every
    ALSA plugin prints dozens of "ALSA lib ... Cannot get card index" and libjack's "jack server
    is not running" lines, noise around a listing that is the actual answer."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def list_devices(*, backend_messages: bool = False) -> list[DeviceInfo]:
    """Every device of the default audio host, with its rates and channel counts. What the
    audio libraries print while probing is hidden unless ``backend_messages``."""
    if backend_messages:
        return [msgspec.convert(d, DeviceInfo) for d in _list_devices()]
    with _c_stderr_silenced():
        return [msgspec.convert(d, DeviceInfo) for d in _list_devices()]


class _WakeupThread:
    """For a loop without ``add_reader``: a thread waits for frames in Rust (no GIL held) and
    has the loop call ``deliver``; it waits for that call before it waits again."""

    def __init__(self, stream: CaptureStream, loop: asyncio.AbstractEventLoop, deliver: Any) -> None:
        self._stream, self._loop, self._deliver = stream, loop, deliver
        self._delivered = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="geminilive-capture-wakeups", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            if not self._stream.wait_for_frames(CHECK_INTERVAL_S):
                continue
            self._delivered.clear()
            try:
                self._loop.call_soon_threadsafe(self._deliver_once)
            except RuntimeError:  # the loop is closed
                return
            self._delivered.wait(CHECK_INTERVAL_S)

    def _deliver_once(self) -> None:
        try:
            self._deliver()
        finally:
            self._delivered.set()

    def stop(self) -> None:
        self._stopping = True
        self._stream.release_waiters()
        self._delivered.set()
        self._thread.join()


class CapturedFrame(msgspec.Struct, frozen=True):
    samples: np.ndarray
    timestamp: float
    index: int
    sample_rate_hz: int


class Capture:
    """A microphone: mono float32 frames at ``sample_rate_hz`` (resampled in Rust).

    Args:
        device: a device name or id (default: the system's default input).
        frame_ms: frame length delivered to Python; ``period_ms``: the device period asked for.
        echo_reference: ``speaker.echo_reference()`` of a :class:`Playback`: what it plays is
            cancelled from what this microphone hears (AEC3, in the capture worker thread;
            ``sample_rate_hz`` 16000, 32000 or 48000).
    """

    def __init__(
        self,
        device: str | None = None,
        *,
        sample_rate_hz: int = 16000,
        frame_ms: int = 20,
        period_ms: int = 10,
        echo_reference: EchoReference | None = None,
    ) -> None:
        self.device, self.sample_rate_hz, self.frame_ms, self.period_ms = device, sample_rate_hz, frame_ms, period_ms
        self.echo_reference = echo_reference
        self._stream: CaptureStream | None = None
        self._frames: deque[CapturedFrame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set while it watches the fd
        self._wakeups: _WakeupThread | None = None  # else this

    def open(self) -> Capture:
        self._opened_at = self._progress_at = time.monotonic()
        self._callbacks_seen = 0
        self._stream = CaptureStream(
            self.device,
            sample_rate_hz=self.sample_rate_hz,
            frame_ms=self.frame_ms,
            period_ms=self.period_ms,
            clock_s=time.monotonic(),
            echo_reference=self.echo_reference,
        )
        return self

    def _check_alive(self) -> None:
        """Raise if the device never started or stopped calling back."""
        if self._stream is None:
            return
        now = time.monotonic()
        callbacks = self._stream.stats["callbacks"]
        if callbacks != self._callbacks_seen:
            self._callbacks_seen, self._progress_at = callbacks, now
        elif callbacks == 0 and now - self._opened_at > NO_AUDIO_TIMEOUT_S:
            raise AudioDeviceError(f"the capture device delivered no audio in {now - self._opened_at:.0f} s")
        elif callbacks and now - self._progress_at > _stall_limit_s(now - self._opened_at):
            raise AudioDeviceError(f"the capture device stopped delivering audio {now - self._progress_at:.1f} s ago")

    def _on_readable(self) -> None:
        assert self._stream is not None
        self._stream.drain_wakeups()
        self._take_frames()

    def _take_frames(self) -> None:
        if self._stream is None:  # closed meanwhile
            return
        for samples, timestamp, index in self._stream.take_frames():
            self._frames.append(CapturedFrame(samples, timestamp, index, self.sample_rate_hz))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __aenter__(self) -> Capture:
        self.open()
        assert self._stream is not None
        loop = asyncio.get_running_loop()
        if watches_file_descriptors(loop):
            self._loop = loop
            loop.add_reader(self._stream.fileno(), self._on_readable)
        else:
            self._wakeups = _WakeupThread(self._stream, loop, self._take_frames)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._stream.fileno())
            self._loop = None
        if self._wakeups is not None:
            self._wakeups.stop()
            self._wakeups = None
        self._stream.close()
        self._stream = None

    def __aiter__(self) -> Capture:
        return self

    async def __anext__(self) -> CapturedFrame:
        while not self._frames:
            if self._stream is None:
                raise StopAsyncIteration
            error = self._stream.error
            if error:
                raise AudioDeviceError(f"capture failed: {error}")
            # Woken by the stream (`_on_readable`), or after half a second to check that the
            # device is alive. Not `asyncio.wait_for`: on Python 3.11 it swallows a cancel that
            # comes in the same loop turn as the frame, and the task then runs on (a
            # conversation's `stop()` waited for it forever).
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(CHECK_INTERVAL_S, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
            if not self._frames:
                self._check_alive()
        return self._frames.popleft()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``callbacks``, ``frames``, ``overruns`` and ``dropped_frames`` (audio lost
        on this side), ``xruns`` (gaps the backend reported) and ``stream_errors`` (other
        backend errors recovered from, no gap)."""
        return dict(self._stream.stats) if self._stream is not None else {}

    @property
    def first_stream_error(self) -> str | None:
        """The first error other than an xrun the stream recovered from, for diagnosis."""
        return self._stream.first_stream_error if self._stream is not None else None

    @property
    def device_rate_hz(self) -> int:
        assert self._stream is not None
        return self._stream.device_rate_hz


class Playback:
    """A speaker fed from a lock-free playout buffer at the device rate.

    ``push`` takes audio at ``source_rate_hz`` (24 kHz from the Live API) and resamples in Rust;
    ``clear`` silences what is queued within one device period (with a short fade).
    """

    def __init__(
        self, device: str | None = None, *, source_rate_hz: int = 24000, period_ms: int = 10, prebuffer_ms: int = 40
    ) -> None:
        self._stream = PlaybackStream(
            device,
            source_rate_hz=source_rate_hz,
            period_ms=period_ms,
            prebuffer_ms=prebuffer_ms,
            clock_s=time.monotonic(),
        )
        self._opened_at = time.monotonic()
        self.source_rate_hz = source_rate_hz

    def __enter__(self) -> Playback:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check(self) -> PlaybackStream:
        error = self._stream.error
        if error:
            raise AudioDeviceError(f"playback failed: {error}")
        now = time.monotonic()
        if self._stream.callbacks and now - self._stream.last_callback_s > _stall_limit_s(now - self._opened_at):
            raise AudioDeviceError("the playback device stopped asking for audio")
        return self._stream

    def push(self, pcm: Any) -> None:
        """Queue 16-bit LE bytes or a float32/int16 array at the source rate (all or nothing)."""
        self._check().push(pcm)

    def end_of_turn(self) -> None:
        self._check().end_of_turn()

    def clear(self) -> int:
        return self._stream.clear()

    def set_gain(self, gain: float) -> None:
        """Duck (or restore) what plays: 0..=1, ramped over about 10 ms in the callback."""
        self._stream.set_gain(gain)

    def echo_reference(self) -> EchoReference:
        """What this speaker plays from now on, for one :class:`Capture`'s echo canceller."""
        return self._stream.echo_reference()

    @property
    def stats(self) -> PlayoutStats:
        return self._stream.stats

    @property
    def device_rate_hz(self) -> int:
        return self._stream.device_rate_hz

    @property
    def period_frames(self) -> int:
        return self._stream.period_frames

    @property
    def last_callback_s(self) -> float:
        return self._stream.last_callback_s

    @property
    def callbacks(self) -> int:
        return self._stream.callbacks

    @property
    def xruns(self) -> int:
        """Under/overruns the backend reported and recovered from: audible gaps."""
        return self._stream.xruns

    @property
    def stream_errors(self) -> int:
        """Other backend errors the stream recovered from (a failed delay query: no gap)."""
        return self._stream.stream_errors

    @property
    def first_stream_error(self) -> str | None:
        """The first error other than an xrun the stream recovered from, for diagnosis."""
        return self._stream.first_stream_error

    def close(self) -> None:
        self._stream.close()
