"""End to end on a real audio server: speech into the virtual microphone, through
start_audio_conversation and the emulator (echo), out of the virtual speaker."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

import geminilive
from audio_util import find_in_order, run, speak
from geminilive import LiveConfig, Resampler
from geminilive import events as ev
from geminilive.audio_io import MicrophoneSource, SpeakerSink
from geminilive.devices import Playback
from geminilive.emulator import LiveEmulator
from loopback import RATE, loopback_conversation

pytestmark = pytest.mark.usefixtures("pulseaudio")


def test_speech_comes_back_out_of_the_speaker_and_barge_in_silences_it(tmp_path) -> None:
    result = run(loopback_conversation(tmp_path))
    spoken = Resampler(24000, RATE).process(result.first_speech)
    # The echo of the first utterance, found in what the speaker played, in order. The last
    # 0.3 s are left out: the server's VAD may end the turn inside the soft end of the speech.
    # Under load the rig's 10 ms PulseAudio streams can drop a few milliseconds (an xrun),
    # so a few pieces may not match; most must, at one consistent offset.
    share, spread, scores = find_in_order(result.recorded, spoken[: -int(0.3 * RATE)], RATE)
    diagnosis = f"scores {scores}\n{result.latency_table}\n{result.playout}"
    assert share >= 0.6, diagnosis
    assert spread < 0.02, "the pieces come back in order, one after another\n" + diagnosis
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


@pytest.mark.parametrize("echo_cancellation", [True, False], ids=["cancelled", "open-loop"])
def test_on_open_speakers_echo_cancellation_keeps_the_model_from_hearing_itself(tmp_path, echo_cancellation) -> None:
    """Speaker and microphone share one room (the speaker plays into the sink the microphone
    listens to). Without echo cancellation the echo model hears its own reply as the user
    and answers it again, over and over; with it, one question gets one answer."""
    question = speak("Hello there, can you hear me in this room?", tmp_path / "q.wav", rate=24000)

    async def scenario():
        turns: list[float] = []
        async with LiveEmulator(model="echo", speed=2.0) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(silence_duration_ms=600)) as session:
                conversation = await session.start_audio_conversation(
                    source=MicrophoneSource(period_ms=20),
                    sink=SpeakerSink(period_ms=20),
                    on_event=lambda e: turns.append(time.monotonic()) if isinstance(e, ev.TurnComplete) else None,
                    echo_cancellation=echo_cancellation,
                )
                with Playback(source_rate_hz=24000, period_ms=20) as mouth:
                    await asyncio.sleep(2.5)  # the new PulseAudio streams settle
                    mouth.push(question)
                    mouth.end_of_turn()
                    await conversation.wait(turns=1, timeout=30)
                    await asyncio.sleep(6.0)  # long enough for the reply to come back round, twice
                await conversation.stop()
                return len(turns)

    turns = run(scenario())
    if echo_cancellation:
        assert turns == 1, f"the model answered itself: {turns} turns"
    else:
        assert turns > 1, "the open loop was expected to feed the reply back in"
