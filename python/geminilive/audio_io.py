"""Pluggable audio sources and sinks for the conversation loop.

A source is an async iterable of :class:`AudioFrame` (mono float32 at any rate; the session
resamples to 16 kHz in Rust). A sink takes the model's 24 kHz PCM: ``push``, ``clear`` (barge-
in), ``end_of_turn``, and reports playout statistics and when audio actually played.

Devices (:class:`MicrophoneSource`, :class:`SpeakerSink`) run on cpal; the others serve tests,
files and telephony bridges that bring their own audio. :class:`BufferedSink` plays into a
real :class:`PlayoutBuffer` pulled on a real-time clock, so clears, underruns and latency
behave as on a device.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from geminilive._native import EchoReference, PlayoutBuffer, PlayoutStats, Resampler, f32_to_s16le, s16le_to_f32
from geminilive.devices import Capture, Playback
from geminilive.pcm import to_mono

__all__ = [
    "ArraySource",
    "AudioFrame",
    "AudioSink",
    "AudioSource",
    "BufferedSink",
    "CallbackSink",
    "DuckableSink",
    "IteratorSource",
    "MicrophoneSource",
    "SpeakerSink",
    "WavSink",
    "WavSource",
    "read_wav",
]

FRAME_MS = 20
OUTPUT_RATE_HZ = 24000


class AudioFrame(msgspec.Struct, frozen=True):
    samples: np.ndarray
    sample_rate_hz: int
    timestamp: float


class AudioSource(Protocol):
    def __aiter__(self) -> AsyncIterator[AudioFrame]: ...


class AudioSink(Protocol):
    sample_rate_hz: int

    async def start(self) -> None: ...
    def push(self, pcm: bytes) -> None: ...
    def clear(self) -> int: ...
    def end_of_turn(self) -> None: ...
    @property
    def stats(self) -> PlayoutStats: ...
    def played_time(self) -> tuple[int, float]:
        """(how far into the audio pushed so far, at the source rate, everything has played or
        been dropped by a clear; when the latest of it played). Dropped audio counts: it is
        where the next turn's audio starts in the pushed stream."""
        ...

    async def close(self) -> None: ...


class DuckableSink(AudioSink, Protocol):
    """A sink that can turn what it plays down and back up (``local_barge_in="duck"``)."""

    def set_gain(self, gain: float) -> None: ...


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit WAV as mono float32 and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        samples = s16le_to_f32(w.readframes(w.getnframes()))
        if w.getnchannels() > 1:
            samples = to_mono(samples, w.getnchannels())
        return samples, w.getframerate()


class ArraySource:
    """Frames from an array, paced in real time (like a microphone) unless ``realtime=False``;
    ``trailing_silence_s`` of silence follows, so voice activity detection sees the end."""

    def __init__(
        self, samples: np.ndarray, sample_rate_hz: int, *, realtime: bool = True, trailing_silence_s: float = 1.0
    ) -> None:
        silence = np.zeros(int(trailing_silence_s * sample_rate_hz), np.float32)
        self.samples = np.concatenate([np.asarray(samples, np.float32), silence])
        self.sample_rate_hz = sample_rate_hz
        self.realtime = realtime

    async def __aiter__(self) -> AsyncIterator[AudioFrame]:
        n = self.sample_rate_hz * FRAME_MS // 1000
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(self.samples), n)):
            if self.realtime:
                await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_MS / 1000 - time.monotonic()))
            else:
                await asyncio.sleep(0)
            yield AudioFrame(self.samples[offset : offset + n], self.sample_rate_hz, time.monotonic())


class WavSource(ArraySource):
    """Frames from a 16-bit WAV file (paced in real time by default)."""

    def __init__(self, path: str | Path, *, realtime: bool = True, trailing_silence_s: float = 1.0) -> None:
        samples, rate = read_wav(path)
        super().__init__(samples, rate, realtime=realtime, trailing_silence_s=trailing_silence_s)


class IteratorSource:
    """Frames from any (async) iterable of float32/int16 arrays or 16-bit bytes at one rate."""

    def __init__(self, frames: AsyncIterable[Any] | Iterable[Any], sample_rate_hz: int) -> None:
        self.frames, self.sample_rate_hz = frames, sample_rate_hz

    async def __aiter__(self) -> AsyncIterator[AudioFrame]:
        def frame(item: Any) -> AudioFrame:
            if isinstance(item, (bytes, bytearray, memoryview)):
                samples = s16le_to_f32(bytes(item))
            elif item.dtype == np.int16:
                samples = item.astype(np.float32) / 32768
            else:
                samples = np.asarray(item, np.float32)
            return AudioFrame(samples, self.sample_rate_hz, time.monotonic())

        if isinstance(self.frames, AsyncIterable):
            async for item in self.frames:
                yield frame(item)
        else:
            for item in self.frames:
                yield frame(item)
                await asyncio.sleep(0)


class MicrophoneSource:
    """The microphone (default input device or a named one), 16 kHz frames resampled in Rust.
    Set ``capture.echo_reference`` (from a speaker) before iterating to cancel its echo; a
    conversation with ``echo_cancellation=True`` does it."""

    def __init__(self, device: str | None = None, *, frame_ms: int = FRAME_MS, period_ms: int = 10) -> None:
        self.capture = Capture(device, sample_rate_hz=16000, frame_ms=frame_ms, period_ms=period_ms)

    async def __aiter__(self) -> AsyncIterator[AudioFrame]:
        async with self.capture as mic:
            async for f in mic:
                yield AudioFrame(f.samples, f.sample_rate_hz, f.timestamp)


class SpeakerSink:
    """The speaker: cpal output fed by the lock-free playout buffer (resampled in Rust)."""

    def __init__(self, device: str | None = None, *, prebuffer_ms: int = 40, period_ms: int = 10) -> None:
        self.device, self.prebuffer_ms, self.period_ms = device, prebuffer_ms, period_ms
        self.sample_rate_hz = OUTPUT_RATE_HZ
        self.playback: Playback | None = None

    async def start(self) -> None:
        self.playback = Playback(
            self.device, source_rate_hz=OUTPUT_RATE_HZ, prebuffer_ms=self.prebuffer_ms, period_ms=self.period_ms
        )

    def _pb(self) -> Playback:
        if self.playback is None:
            raise RuntimeError("the sink is not started")
        return self.playback

    def push(self, pcm: bytes) -> None:
        self._pb().push(pcm)

    def clear(self) -> int:
        return self._pb().clear()

    def set_gain(self, gain: float) -> None:
        self._pb().set_gain(gain)

    def echo_reference(self) -> EchoReference:
        """What this speaker plays from now on, for a microphone's echo canceller."""
        return self._pb().echo_reference()

    def end_of_turn(self) -> None:
        self._pb().end_of_turn()

    @property
    def stats(self) -> PlayoutStats:
        return self._pb().stats

    def played_time(self) -> tuple[int, float]:
        pb = self._pb()
        stats = pb.stats
        return (stats.played + stats.discarded) * OUTPUT_RATE_HZ // pb.device_rate_hz, pb.last_callback_s

    async def close(self) -> None:
        if self.playback is not None:
            self.playback.close()


class BufferedSink:
    """A playout buffer pulled in ``period_ms`` steps on a real-time clock (``speed`` times
    faster, for simulations that run ahead of real time, or as fast as possible with
    ``realtime=False``); what plays goes to ``on_audio(float32 samples)``."""

    def __init__(
        self,
        on_audio: Callable[[np.ndarray], None],
        *,
        sample_rate_hz: int = OUTPUT_RATE_HZ,
        period_ms: int = 10,
        prebuffer_ms: float = 40.0,
        realtime: bool = True,
        speed: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.on_audio = on_audio
        self.speed = speed
        self.sample_rate_hz = sample_rate_hz
        self.period = sample_rate_hz * period_ms // 1000
        self.buffer = PlayoutBuffer(sample_rate_hz, prebuffer_ms=prebuffer_ms)
        self.realtime = realtime
        self._task: asyncio.Task[None] | None = None
        self._last_pull = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._clock())

    async def _clock(self) -> None:
        start = time.monotonic()
        ticks = 0
        while True:
            ticks += 1
            if self.realtime:
                due = start + ticks * self.period / self.sample_rate_hz / self.speed
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            else:
                await asyncio.sleep(0)
            self.on_audio(self.buffer.pull(self.period))
            self._last_pull = time.monotonic()

    def push(self, pcm: bytes) -> None:
        self.buffer.push(pcm)

    def clear(self) -> int:
        return self.buffer.clear()

    def set_gain(self, gain: float) -> None:
        self.buffer.set_gain(gain)

    def end_of_turn(self) -> None:
        self.buffer.end_of_turn()

    @property
    def stats(self) -> PlayoutStats:
        return self.buffer.stats

    def played_time(self) -> tuple[int, float]:
        stats = self.buffer.stats
        return stats.played + stats.discarded, self._last_pull

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class WavSink(BufferedSink):
    """Writes what would have played (including silences and cut-offs) to a WAV file."""

    def __init__(self, path: str | Path, *, realtime: bool = True, trim_silence: bool = True) -> None:
        self.path = Path(path)
        self.trim_silence = trim_silence
        self._chunks: list[np.ndarray] = []
        self.written_s = 0.0
        super().__init__(self._chunks.append, realtime=realtime)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    async def close(self) -> None:
        await super().close()
        audio = self.audio
        if self.trim_silence:
            loud = np.flatnonzero(np.abs(audio) > 1e-4)
            audio = audio[loud[0] : loud[-1] + 1] if len(loud) else audio[:0]
        self.written_s = len(audio) / self.sample_rate_hz
        with wave.open(str(self.path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate_hz)
            w.writeframes(f32_to_s16le(np.ascontiguousarray(audio, np.float32)))


class CallbackSink(BufferedSink):
    """Hands each played period (``period_ms``) to ``callback(samples)`` (telephony bridges,
    the web relay, custom outputs); ``output_rate_hz`` resamples to what the callback wants."""

    def __init__(
        self, callback: Callable[[np.ndarray], None], *, output_rate_hz: int = OUTPUT_RATE_HZ, period_ms: int = 10
    ) -> None:
        if output_rate_hz != OUTPUT_RATE_HZ:
            resampler = Resampler(OUTPUT_RATE_HZ, output_rate_hz)
            super().__init__(lambda x: callback(resampler.process(x)), period_ms=period_ms)
        else:
            super().__init__(callback, period_ms=period_ms)
