"""End to end on a real audio server: speech into the virtual microphone, through
start_audio_conversation and the emulator (echo), out of the virtual speaker."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import geminilive
from audio_util import RIG_GLITCH_SPREAD_S, find_in_order, run, speak
from geminilive import LiveConfig, Resampler
from geminilive import events as ev
from geminilive.audio_io import MicrophoneSource, SpeakerSink
from geminilive.devices import Capture, Playback
from geminilive.emulator import LiveEmulator
from loopback import RATE, loopback_conversation

pytestmark = pytest.mark.usefixtures("pulseaudio")


def test_speech_comes_back_out_of_the_speaker_and_barge_in_silences_it(tmp_path) -> None:
    result = run(loopback_conversation(tmp_path))
    spoken = Resampler(24000, RATE).process(result.first_speech)
    # The echo of the first utterance, found in what the speaker played, in order. The last
    # 0.3 s are left out: the server's VAD may end the turn inside the soft end of the speech.
    # Under load the rig's 10 ms PulseAudio streams can drop a few milliseconds (an xrun),
    # so a few pieces may not match; most must, at offsets only those xruns move. The
    # speaker's own underruns are counted exactly.
    share, spread, scores = find_in_order(result.recorded, spoken[: -int(0.3 * RATE)], RATE)
    diagnosis = f"scores {scores}\n{result.latency_table}\n{result.playout}"
    assert share >= 0.6, diagnosis
    assert spread < RIG_GLITCH_SPREAD_S, "the pieces come back in order, one after another\n" + diagnosis
    assert result.playout["underruns"] == 0, diagnosis
    # The interruption: the reply to the second utterance was cut, and the speaker went quiet
    # while the user was still talking over it.
    assert result.interrupted_at is not None, diagnosis
    assert any(m.interrupted for m in result.metrics), diagnosis
    cut = int((result.interrupted_at - result.recorded_start + 0.3) * RATE)
    rms = lambda x: float(np.sqrt(np.mean(x**2))) if len(x) else float("nan")  # noqa: E731
    quiet = result.recorded[cut : cut + int(0.5 * RATE)]
    before = result.recorded[cut - int(0.8 * RATE) : cut - int(0.3 * RATE)]
    levels = f"rms before {rms(before):.4f}, after {rms(quiet):.5f}\n" + diagnosis
    assert len(quiet) > 0 and rms(quiet) < 1e-3, levels
    assert rms(before) > 0.01, "the reply was playing before the barge-in; " + levels
    assert result.playout["discarded"] > 0, levels


class HeardMicrophone(MicrophoneSource):
    """The conversation's microphone, keeping (time, samples) of every frame it sends on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.frames: list[tuple[float, np.ndarray]] = []

    async def __aiter__(self):
        async for frame in super().__aiter__():
            self.frames.append((frame.timestamp, frame.samples))
            yield frame


@pytest.mark.parametrize("echo_cancellation", [True, False], ids=["cancelled", "open-loop"])
def test_on_open_speakers_the_session_is_not_sent_the_model_s_own_voice(tmp_path, echo_cancellation) -> None:
    """Speaker and microphone share one room (the speaker plays into the sink the microphone
    listens to). While the model's reply plays, a plain microphone in the room hears it; what
    the conversation sends to the session is compared with that, 100 ms at a time."""
    question = speak("Hello there, can you hear me in this room?", tmp_path / "q.wav", rate=24000)

    async def scenario():
        room: list[tuple[float, np.ndarray]] = []
        replies: list[float] = []
        async with LiveEmulator(model="echo", speed=2.0) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(silence_duration_ms=600)) as session:
                microphone = HeardMicrophone(period_ms=20)
                conversation = await session.start_audio_conversation(
                    source=microphone,
                    sink=SpeakerSink(period_ms=20),
                    on_event=lambda e: (
                        replies.append(time.monotonic()) if isinstance(e, (ev.AudioChunk, ev.TurnComplete)) else None
                    ),
                    echo_cancellation=echo_cancellation,
                )
                async with Capture(sample_rate_hz=RATE, period_ms=20) as plain:

                    async def listen() -> None:
                        async for frame in plain:
                            room.append((frame.timestamp, frame.samples))

                    listening = asyncio.create_task(listen())
                    with Playback(source_rate_hz=24000, period_ms=20) as mouth:
                        await asyncio.sleep(2.5)  # the new PulseAudio streams settle
                        mouth.push(question)
                        mouth.end_of_turn()
                        await conversation.wait(turns=1, timeout=30)
                        await asyncio.sleep(2.0)  # (an open loop goes on answering itself)
                    listening.cancel()
                await conversation.stop()
                return room, microphone.frames, replies

    room, sent, replies = run(scenario())

    def level(frames, lo: float) -> float:
        chunk = [samples for at, samples in frames if lo <= at < lo + 0.1]
        return float(np.sqrt(np.mean(np.concatenate(chunk) ** 2))) if chunk else float("nan")

    # From the first reply on, all the room hears is the model (the question was over).
    windows = np.arange(replies[0], room[-1][0] - 0.1, 0.1)
    loud = [w for w in windows if level(room, w) > 0.01]
    # (an open loop hears the start of each reply and cuts itself off: fewer loud moments)
    assert len(loud) >= (5 if echo_cancellation else 2), "the room heard the model"
    down_db = np.median([20 * np.log10(level(room, w) / level(sent, w)) for w in loud])
    if echo_cancellation:
        assert down_db > 20, f"the session was sent the model's voice only {down_db:.1f} dB down"
    else:
        assert down_db < 3, f"without cancellation the session hears the reply as loud as the room: {down_db:.1f}"
