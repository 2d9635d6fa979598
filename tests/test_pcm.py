from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geminilive import pcm
from geminilive.errors import AudioFormatError, GeminiLiveError

floats = hnp.arrays(
    np.float32,
    st.integers(0, 2000),
    elements=st.floats(-1.0, 1.0, width=32, allow_nan=False),
)
codes = hnp.arrays(np.int16, st.integers(0, 2000))


def numpy_reference(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2").tobytes()


@given(floats)
def test_encode_matches_clip_round_cast(x: np.ndarray) -> None:
    assert pcm.f32_to_s16le(x) == numpy_reference(x)


@given(floats)
def test_float_round_trip_within_one_lsb(x: np.ndarray) -> None:
    back = pcm.s16le_to_f32(pcm.f32_to_s16le(x))
    assert back.dtype == np.float32
    assert np.all(np.abs(back - np.clip(x, -1.0, 32767 / 32768)) <= 1 / 32768)


@given(codes)
def test_int16_round_trip_exact(c: np.ndarray) -> None:
    data = c.astype("<i2").tobytes()
    assert pcm.f32_to_s16le(pcm.s16le_to_f32(data)) == data
    assert pcm.f32_to_s16le(pcm.s16le_to_f32(c)) == data
    assert pcm.f32_to_s16le(pcm.s16le_to_f32(bytearray(data))) == data
    assert pcm.f32_to_s16le(pcm.s16le_to_f32(memoryview(data))) == data


def test_clipping_does_not_wrap_and_nan_is_zero() -> None:
    x = np.array([1.5, -1.5, 1.0, -1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    assert np.frombuffer(pcm.f32_to_s16le(x), "<i2").tolist() == [32767, -32768, 32767, -32768, 0, 32767, -32768]


def test_little_endian_on_the_wire() -> None:
    assert pcm.f32_to_s16le(np.array([0.5, -1 / 32768], np.float32)) == b"\x00\x40\xff\xff"


def test_errors_are_typed_and_clear() -> None:
    with pytest.raises(AudioFormatError, match="even number of bytes, got 3"):
        pcm.s16le_to_f32(b"\x00\x01\x02")
    with pytest.raises(AudioFormatError, match="float64"):
        pcm.f32_to_s16le(np.zeros(4))
    with pytest.raises(AudioFormatError, match="contiguous"):
        pcm.f32_to_s16le(np.zeros(8, np.float32)[::2])
    with pytest.raises(AudioFormatError, match="PCM"):
        pcm.s16le_to_f32("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError) as err:
        pcm.to_mono(np.zeros(5, np.float32), 2)
    assert isinstance(err.value, GeminiLiveError)


@given(st.integers(1, 8), st.integers(0, 300), st.data())
def test_to_mono_averages_and_from_mono_duplicates(channels: int, frames: int, data) -> None:
    x = data.draw(hnp.arrays(np.float32, (frames, channels), elements=st.floats(-1, 1, width=32)))
    mono = pcm.to_mono(x)
    np.testing.assert_allclose(mono, x.mean(axis=1), atol=1e-6)
    np.testing.assert_array_equal(pcm.to_mono(x.reshape(-1), channels), mono)
    up = pcm.from_mono(mono, channels)
    assert up.shape == (frames, channels)
    np.testing.assert_allclose(pcm.to_mono(up), mono, rtol=1e-6, atol=1e-7)
