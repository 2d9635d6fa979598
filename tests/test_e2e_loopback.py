"""End to end on a real audio server: speech into the virtual microphone, through
start_audio_conversation and the emulator (echo), out of the virtual speaker."""

from __future__ import annotations

import numpy as np
import pytest

from audio_util import find_in_order, run
from geminilive import Resampler
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
