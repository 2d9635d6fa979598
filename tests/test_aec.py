"""The echo canceller on its own (AEC3), for callers with their own audio I/O; on real
devices it is tested in test_devices.py (the loopback monitor) and test_e2e_loopback.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geminilive import EchoCanceller
from geminilive.errors import AudioFormatError

RATE = 16000
FRAME = RATE // 100


def speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.standard_normal(int(seconds * RATE)), np.ones(4) / 4, mode="same")
    x *= (np.arange(len(x)) // int(0.25 * RATE)) % 3 != 2
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def run(far: np.ndarray, near: np.ndarray, split) -> np.ndarray:
    """Every 10 ms: the speaker's frame is rendered, then the microphone's (the far end 30 ms
    later at 0.6, plus ``near``) processed, each handed over in the pieces ``split`` says."""
    delay = 3 * FRAME
    mic = near.copy()
    mic[delay:] += 0.6 * far[:-delay]
    aec = EchoCanceller(RATE)
    out = []
    for k in range(len(far) // FRAME):
        frame = slice(k * FRAME, (k + 1) * FRAME)
        for piece in np.split(far[frame], split(k)):
            aec.render(piece)
        for piece in np.split(mic[frame], split(k)):
            out.append(aec.process(piece))
    return np.concatenate(out)


def test_cancels_the_echo_and_keeps_the_near_end() -> None:
    far = speech_like(5.0, seed=3)
    near = np.zeros_like(far)
    t = np.arange(RATE) / RATE
    near[4 * RATE :] = 0.1 * np.sin(2 * np.pi * 500 * t)  # the user, over the model's last second
    out = run(far, near, lambda k: [])
    assert len(out) == len(far), "every sample comes out"
    echo = 0.6 * far[2 * RATE : 4 * RATE]
    erle = 20 * np.log10(np.std(echo) / np.std(out[2 * RATE : 4 * RATE]))
    assert erle > 30, f"{erle:.1f} dB"
    kept = np.std(out[4 * RATE + FRAME :]) / np.std(near[4 * RATE + FRAME :])
    assert 0.7 < kept < 1.3, kept


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.integers(1, FRAME - 1), max_size=3, unique=True).map(sorted), min_size=1, max_size=8))
def test_the_output_does_not_depend_on_how_the_audio_is_chunked(splits) -> None:
    far = speech_like(1.0, seed=5)
    near = speech_like(1.0, seed=6) * 0.3
    whole = run(far, near, lambda k: [])
    chunked = run(far, near, lambda k: splits[k % len(splits)])
    np.testing.assert_array_equal(chunked, whole)


def test_partial_frames_wait_and_bad_rates_are_refused() -> None:
    aec = EchoCanceller(16000)
    assert len(aec.process(np.zeros(100, np.float32))) == 0 and aec.pending == 100
    assert len(aec.process(np.zeros(100, np.int16))) == FRAME and aec.pending == 40
    with pytest.raises(AudioFormatError, match="16000, 32000 or 48000"):
        EchoCanceller(44100)
    with pytest.raises(AudioFormatError):
        aec.process(np.zeros(10, np.float64))
