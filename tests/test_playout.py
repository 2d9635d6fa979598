from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminilive import PlayoutBuffer
from geminilive.errors import AudioFormatError, BufferFullError

RATE = 1000  # 1 sample per ms keeps the arithmetic readable


def test_prebuffers_then_plays_in_order() -> None:
    buf = PlayoutBuffer(RATE, prebuffer_ms=10, fade_ms=0)
    buf.push(np.arange(1, 6, dtype=np.float32))
    assert not buf.pull(4).any()
    buf.push(np.arange(6, 11, dtype=np.float32))
    assert buf.pull(4).tolist() == [1, 2, 3, 4]
    assert buf.stats.depth == 6


def test_end_of_turn_plays_the_tail_without_underrun() -> None:
    buf = PlayoutBuffer(RATE, prebuffer_ms=40, fade_ms=0)
    buf.push(np.full(3, 0.5, np.float32))
    buf.end_of_turn()
    assert buf.pull(5).tolist() == [0.5, 0.5, 0.5, 0, 0]
    assert buf.stats.underruns == 0
    assert buf.stats.played == 3


def test_underrun_fades_counts_and_raises_threshold() -> None:
    buf = PlayoutBuffer(RATE, prebuffer_ms=10, max_prebuffer_ms=100, fade_ms=4)
    buf.push(np.ones(12, np.float32))
    out = np.concatenate([buf.pull(8), buf.pull(8)])
    assert out[:8].tolist() == [1.0] * 8
    assert out[8:12].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert not out[12:].any()
    stats = buf.stats
    assert stats.underruns == 1
    assert stats.threshold > 10
    assert stats.silence == 4


def test_clear_is_immediate_with_fade_and_reports_discarded() -> None:
    buf = PlayoutBuffer(RATE, prebuffer_ms=0, fade_ms=3)
    buf.push(np.ones(100, np.float32))
    buf.pull(10)
    assert buf.clear() == 90
    assert buf.stats.depth == 0
    out = buf.pull(10)
    assert out.tolist() == pytest.approx([0.75, 0.5, 0.25] + [0.0] * 7)
    assert buf.stats.discarded == 87


def test_full_is_refused_and_loses_nothing() -> None:
    buf = PlayoutBuffer(RATE, capacity_s=0.1, prebuffer_ms=0, max_prebuffer_ms=0, fade_ms=0)
    buf.push(np.ones(90, np.float32))
    with pytest.raises(BufferFullError):
        buf.push(np.ones(11, np.float32))
    assert buf.stats.pushed == 90
    buf.push(np.ones(10, np.float32))


def test_accepts_s16le_bytes_and_int16() -> None:
    buf = PlayoutBuffer(RATE, prebuffer_ms=0, fade_ms=0)
    buf.push(np.array([16384, -32768], "<i2").tobytes())
    buf.push(np.array([8192], np.int16))
    assert buf.pull(3).tolist() == [0.5, -1.0, 0.25]
    with pytest.raises(AudioFormatError, match="even"):
        buf.push(b"\x00")
    with pytest.raises(AudioFormatError):
        buf.push(np.zeros(3))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 50)),
        st.tuples(st.just("pull"), st.integers(1, 40)),
        st.tuples(st.just("clear"), st.just(0)),
        st.tuples(st.just("end"), st.just(0)),
    ),
    max_size=60,
)


@given(ops, st.integers(0, 30))
def test_never_reorders_duplicates_or_invents(operations, prebuffer: int) -> None:
    """Played samples are pushed samples, each at most once, in push order; after a clear
    nothing queued before it plays; everything else eventually plays."""
    buf = PlayoutBuffer(RATE, capacity_s=0.2, prebuffer_ms=prebuffer, max_prebuffer_ms=100, fade_ms=0)
    next_value, played, cleared_below = 1, [], 1
    for op, n in operations:
        if op == "push":
            values = np.arange(next_value, next_value + n, dtype=np.float32)
            try:
                buf.push(values)
                next_value += n
            except BufferFullError:
                pass
        elif op == "pull":
            played.extend(v for v in buf.pull(n).tolist() if v != 0)
        elif op == "clear":
            buf.clear()
            cleared_below = next_value
            buf.pull(1)  # the clear takes effect at the next pull
        else:
            buf.end_of_turn()
    buf.end_of_turn()
    played.extend(v for v in buf.pull(200 + next_value).tolist() if v != 0)
    assert played == sorted(set(played)), "reordered or duplicated"
    assert all(1 <= v < next_value for v in played), "invented"
    tail = list(range(cleared_below, next_value))
    assert [v for v in played if v >= cleared_below] == tail, "lost audio pushed after the last clear"
    stats = buf.stats
    assert stats.played + stats.discarded == stats.pushed


@given(
    st.lists(st.integers(1, 200), min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(0, 2000), st.sampled_from([0.0, 0.25, 0.5, 1.0])), max_size=5),
)
def test_ducking_is_the_same_however_the_callback_is_chunked(chunks: list[int], gains) -> None:
    """Gain changes at the same sample positions give the same output whatever the callback
    sizes, and scale only: with the gain back at 1 every sample plays as pushed."""
    signal = np.sin(np.arange(2400, dtype=np.float32) * 0.05) * 0.5
    changes = dict(sorted(gains))

    def play(chunk_sizes: list[int]) -> np.ndarray:
        buf = PlayoutBuffer(RATE, prebuffer_ms=0, fade_ms=2.5)
        buf.push(signal)
        buf.end_of_turn()
        out, at = [], 0
        boundaries = sorted({*changes, len(signal)})
        sizes = itertools.cycle(chunk_sizes)
        for stop in boundaries:
            while at < stop:
                n = min(next(sizes), stop - at)
                out.append(buf.pull(n))
                at += n
            if stop in changes:
                buf.set_gain(changes[stop])
        return np.concatenate(out)

    one_by_one = play([1])
    chunked = play(chunks)
    np.testing.assert_array_equal(chunked, one_by_one)
    if not changes:
        np.testing.assert_array_equal(chunked, signal)
    ratio = np.divide(chunked, signal, out=np.ones_like(signal), where=np.abs(signal) > 1e-3)
    assert np.all((ratio > -1e-6) & (ratio < 1 + 1e-6)), "a gain only scales"
