"""The end-to-end scenario on the PulseAudio loopback, shared by the test and the benchmark.

A "mouth" (a Playback on the default sink ``virt``) speaks espeak-ng speech into the room;
``start_audio_conversation`` captures it from ``virt.monitor`` (the virtual microphone), sends it
to the emulator in echo mode, and plays the reply on the ``speaker`` sink, which a recorder
captures from ``speaker.monitor``. Then the mouth talks over a reply: the emulator interrupts,
the conversation clears its playout buffer, and the speaker goes quiet.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import numpy as np

import geminilive
from audio_util import speak, until
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.audio_io import MicrophoneSource, SpeakerSink
from geminilive.devices import Capture, Playback
from geminilive.emulator import LiveEmulator
from pulse import routed

RATE = 16000


class LoopbackResult(msgspec.Struct):
    first_speech: np.ndarray
    recorded: np.ndarray  # speaker.monitor at 16 kHz
    recorded_start: float  # time.monotonic() of recorded[0]
    interrupted_at: float | None
    metrics: list
    latency_table: str
    playout: dict


def conversation_speech(workdir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the "mouth" says, at 24 kHz: a first turn, a longer second one, and a barge-in."""
    first = speak("Hello there, this is the first thing I say", workdir / "first.wav", rate=24000)
    second = speak(
        "Now a second, much longer sentence, so that the reply takes a while to play.",
        workdir / "second.wav",
        rate=24000,
    )
    barge = speak("Stop, stop, wait a moment please.", workdir / "barge.wav", rate=24000)
    return first, second, barge


async def loopback_conversation(workdir: Path) -> LoopbackResult:
    first, second, barge = conversation_speech(workdir)
    recorded: list[np.ndarray] = []
    interrupted: list[float] = []

    audio_chunks: list[float] = []

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.Interrupted):
            interrupted.append(time.monotonic())
        elif isinstance(event, ev.AudioChunk):
            audio_chunks.append(time.monotonic())

    async with LiveEmulator(model="echo", speed=2.0) as emu:
        config = LiveConfig(silence_duration_ms=600)
        async with geminilive.connect(endpoint=emu.url, config=config) as session:
            with routed(PULSE_SOURCE="speaker.monitor"):
                recorder = Capture(sample_rate_hz=RATE, period_ms=20)
                await recorder.__aenter__()
            # 20 ms device periods: with 10 ms ones (two-period ALSA buffers through the PulseAudio
            # plugin) a loaded 2-core CI box drops audio now and then, which this test would
            # take for a pipeline fault.
            with routed(PULSE_SINK="speaker"):
                conversation = await session.start_audio_conversation(
                    source=MicrophoneSource(period_ms=20), sink=SpeakerSink(period_ms=20), on_event=on_event
                )
            mouth = Playback(source_rate_hz=24000, period_ms=20)
            start = None

            async def record() -> None:
                nonlocal start
                async for frame in recorder:
                    if start is None:
                        start = frame.timestamp - len(frame.samples) / RATE
                    recorded.append(frame.samples)

            recording = asyncio.create_task(record())
            await asyncio.sleep(2.0)  # the monitors take about a second to start delivering
            mouth.push(first)
            mouth.end_of_turn()
            await conversation.wait(turns=1, timeout=30)
            await asyncio.sleep(0.5)
            chunks_before = len(audio_chunks)
            mouth.push(second)
            mouth.end_of_turn()
            # Talk over the reply once it has been playing for a moment.
            await until(lambda: len(audio_chunks) > chunks_before, 30, "the reply to the second sentence")
            await asyncio.sleep(0.6)
            turns_before_barge = len(conversation.metrics)
            mouth.push(barge)
            mouth.end_of_turn()
            await conversation.wait(turns=turns_before_barge + 1, timeout=30)
            await asyncio.sleep(1.5)
            recording.cancel()
            mouth.close()
            await conversation.stop()
            recorder.close()
            stats = conversation.sink.stats if conversation.sink.playback is not None else None
            playout = {
                "underruns": stats.underruns if stats else 0,
                "discarded": stats.discarded if stats else 0,
                "played": stats.played if stats else 0,
            }
    return LoopbackResult(
        first_speech=first,
        recorded=np.concatenate(recorded) if recorded else np.zeros(0, np.float32),
        recorded_start=start or 0.0,
        interrupted_at=interrupted[0] if interrupted else None,
        metrics=conversation.metrics,
        latency_table=conversation.latency_table(),
        playout=playout,
    )
