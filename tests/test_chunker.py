"""InputChunker: message boundaries for the user's audio. Nothing is lost, reordered or
changed whatever the input's chunking; long messages only where no turn is about to change;
a turn change sends what is held at once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geminilive import InputChunker, LiveConfig
from geminilive.errors import AudioFormatError

RATE = 16000
FRAME = RATE // 100  # samples in 10 ms


def audio(pattern: list[tuple[bool, int]], seed: int = 0) -> bytes:
    """10 ms frames, speech-like (loud noise, -15 dBFS) or quiet (-60 dBFS)."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, 6000 if loud else 30, frames * FRAME) for loud, frames in pattern]
    return np.concatenate(parts).clip(-32768, 32767).astype("<i2").tobytes()


def messages(chunker: InputChunker, pcm: bytes, pieces: list[int]) -> list[bytes]:
    """What ``chunker`` sends for ``pcm`` pushed in pieces of these sizes (bytes, in turn)."""
    out, at, i = [], 0, 0
    while at < len(pcm):
        size = pieces[i % len(pieces)]
        message = chunker.push(pcm[at : at + size])
        if message is not None:
            out.append(message)
        at += size
        i += 1
    return out


def ends_ms(sent: list[bytes]) -> list[float]:
    return list(np.cumsum([len(m) for m in sent]) / (2 * RATE / 1000))


patterns = st.lists(st.tuples(st.booleans(), st.integers(1, 250)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(patterns, st.lists(st.integers(1, 2000).map(lambda n: 2 * n), min_size=1, max_size=5))
def test_the_messages_are_the_input_in_order_whatever_its_chunking(pattern, pieces) -> None:
    pcm = audio(pattern)
    chunker = InputChunker(RATE)
    sent = messages(chunker, pcm, pieces)
    assert b"".join(sent) + chunker.take() == pcm
    assert chunker.held_ms == 0 and chunker.take() == b""
    # No message holds more than the steady limit, beyond the piece that completed it.
    assert all(len(m) <= 2 * (RATE // 10) + max(pieces) for m in sent)


@settings(max_examples=30, deadline=None)
@given(patterns)
def test_the_boundaries_do_not_depend_on_how_the_audio_was_split_into_frames(pattern) -> None:
    """Pushed 10 ms at a time or 1 ms at a time, the messages end at the same samples."""
    pcm = audio(pattern)
    assert ends_ms(messages(InputChunker(RATE), pcm, [2 * FRAME])) == ends_ms(
        messages(InputChunker(RATE), pcm, [2 * FRAME // 10])
    )


def test_speech_and_long_silences_go_in_long_messages_and_turn_changes_at_once() -> None:
    # 2.5 s of silence, 1 s of speech, 0.6 s of silence, pushed as a room's 10 ms frames.
    pcm = audio([(False, 250), (True, 100), (False, 60)])
    sent = messages(InputChunker(RATE, 20, 100), pcm, [2 * FRAME])
    ends = ends_ms(sent)
    sizes = [len(m) // 32 for m in sent]
    onset, speech_end = 2500, 3500
    silence = [ms for ms, end in zip(sizes, ends, strict=True) if end <= onset]
    speech = [ms for ms, end in zip(sizes, ends, strict=True) if onset < end <= speech_end]
    assert set(silence[:99]) == {20} and 100 in silence  # 20 ms until the silence is long
    assert onset + 10 in ends  # the first voiced frame went at once, with what was held
    assert set(speech[1:15]) == {20} and speech.count(100) >= 6  # 20 ms until speech settles
    assert any(speech_end < end <= speech_end + 20 for end in ends)  # its end at once
    after = [ms for ms, end in zip(sizes, ends, strict=True) if end > speech_end + 20]
    assert set(after) == {20}
    assert len(sent) < 0.8 * len(pcm) / (2 * 20 * RATE // 1000)


def test_equal_limits_make_fixed_chunks() -> None:
    pcm = audio([(False, 300), (True, 100)])
    sent = messages(InputChunker(RATE, 40, 40), pcm, [2 * FRAME])
    assert {len(m) for m in sent} == {40 * 32}


def test_bad_input_is_refused_and_nothing_held_is_lost() -> None:
    chunker = InputChunker(RATE)
    chunker.push(b"\x01\x02" * 10)
    with pytest.raises(AudioFormatError, match="even number of bytes"):
        chunker.push(b"\x00" * 3)
    with pytest.raises(AudioFormatError):
        chunker.push("not audio")  # type: ignore[arg-type]
    assert chunker.take() == b"\x01\x02" * 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((16000, 0, 100), "chunk_ms"),
        ((16000, 40, 20), "steady_chunk_ms"),
        ((1000, 20, 100), "sample rate"),
    ],
)
def test_bad_settings_are_refused(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        InputChunker(*args)


def test_a_setups_activity_detection_sets_when_speech_and_silence_are_steady() -> None:
    """A 3 s end-of-turn silence keeps 20 ms messages for 4 s of silence; a 1 s prefix
    padding keeps them for the first 1.2 s of speech."""
    pcm = audio([(False, 450), (True, 150)])
    config = LiveConfig(silence_duration_ms=3000, prefix_padding_ms=1000)
    ends = np.array(ends_ms(messages(config.input_chunker(RATE), pcm, [2 * FRAME])))
    sizes = np.diff([0.0, *ends])
    assert set(sizes[ends <= 3980]) == {20}
    assert 100 in sizes[ends > 4000]
    assert set(sizes[(ends > 4510) & (ends <= 5700)]) == {20}
