"""G.711 in Rust against CPython's audioop (the ITU-T reference algorithm), exhaustively, and
the fused 8 kHz <-> Live API rate paths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio_util import chirp, level_db
from geminilive import Resampler
from geminilive.errors import AudioFormatError
from geminilive.pcm import f32_to_s16le, s16le_to_f32
from geminilive.telephony import G711Decoder, G711Encoder, decode, encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # removed in 3.13 (audioop-lts there)
    import audioop

EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()
EVERY_CODE = bytes(range(256))
REFERENCE = {"mulaw": (audioop.lin2ulaw, audioop.ulaw2lin), "alaw": (audioop.lin2alaw, audioop.alaw2lin)}


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_every_16_bit_sample_codes_as_the_reference_does(law: str) -> None:
    to_codes, _ = REFERENCE[law]
    ours, theirs = encode(EVERY_SAMPLE, law), to_codes(EVERY_SAMPLE, 2)
    assert len(ours) == 65536
    mismatches = [i - 32768 for i in range(65536) if ours[i] != theirs[i]]
    assert mismatches == [], f"{len(mismatches)} samples differ, first {mismatches[:5]}"


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_every_code_decodes_as_the_reference_does(law: str) -> None:
    _, to_linear = REFERENCE[law]
    assert decode(EVERY_CODE, law) == to_linear(EVERY_CODE, 2)


@given(st.binary(max_size=2000).map(lambda b: b[: len(b) // 2 * 2]), st.sampled_from(["mulaw", "alaw"]))
def test_coding_decoded_audio_gives_the_same_codes_and_memoryviews_work(pcm: bytes, law: str) -> None:
    codes = encode(memoryview(pcm), law)
    assert encode(bytearray(decode(codes, law)), law) == bytes(
        0xFF if law == "mulaw" and c == 0x7F else c for c in codes
    )


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(AudioFormatError, match="even number"):
        encode(b"\x00\x01\x02")
    with pytest.raises(AudioFormatError, match="law"):
        encode(b"\x00\x00", "g722")  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError):
        G711Encoder("mulaw", 24000).process(b"\x00")
    with pytest.raises(AudioFormatError, match="outside the supported"):
        G711Decoder("alaw", 1000)
    with pytest.raises(AudioFormatError):
        decode("text")  # type: ignore[arg-type]


@given(
    st.sampled_from([("mulaw", 16000), ("alaw", 16000), ("mulaw", 24000)]),
    st.lists(st.integers(0, 900), min_size=1, max_size=10),
    st.integers(0, 2**32 - 1),
)
def test_any_chunking_gives_the_same_bytes_both_ways(setup, sizes: list[int], seed: int) -> None:
    law, rate = setup
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, sum(sizes), dtype=np.uint8).tobytes()
    pcm = rng.integers(-20000, 20000, 3 * sum(sizes), dtype=np.int16).astype("<i2").tobytes()

    def through(make, data: bytes, cuts: list[int]) -> bytes:
        coder, out, start = make(), [], 0
        for size in cuts:
            out.append(coder.process(data[start : start + size]))
            start += size
        out.append(coder.process(data[start:]))
        return b"".join([*out, coder.flush()])

    def whole(make, data: bytes) -> bytes:
        return through(make, data, [])

    assert through(lambda: G711Decoder(law, rate), codes, sizes) == whole(lambda: G711Decoder(law, rate), codes)
    pcm_cuts = [2 * s for s in sizes]  # whole samples
    encoder = lambda: G711Encoder(law, rate)  # noqa: E731
    assert through(encoder, pcm, pcm_cuts) == whole(encoder, pcm)


def tone(rate: int, freq: float, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def test_the_model_to_the_phone_keeps_the_band_and_folds_nothing_back() -> None:
    """24 kHz -> 8 kHz mu-law: a 1 kHz tone passes (within mu-law's error); tones between 4
    and 12 kHz (sibilants), which linear interpolation folds into the band, are gone."""
    passed = s16le_to_f32(decode(G711Encoder("mulaw", 24000).process(f32_to_s16le(tone(24000, 1000)))))
    assert abs(level_db(passed, 8000, 1000)) < 0.5
    for freq in (4500, 5000, 6500, 9000, 11000):
        out = s16le_to_f32(decode(G711Encoder("mulaw", 24000).process(f32_to_s16le(tone(24000, freq)))))
        alias = abs(freq - 8000 * round(freq / 8000))
        assert level_db(out, 8000, alias) < -90, f"{freq} Hz folds to {alias} Hz"
    # What the naive path does with the same 5 kHz tone (every third sample): a loud alias.
    naive = tone(24000, 5000)[::3]
    assert level_db(naive, 8000, 3000) > -10


def test_the_phone_to_the_session_is_the_resampler_after_the_codec() -> None:
    speech = chirp(1.0, 8000, f0=200, f1=3400)
    codes = encode(f32_to_s16le(speech))
    decoder = G711Decoder("mulaw", 16000)
    fused = s16le_to_f32(decoder.process(codes) + decoder.flush())
    resampler = Resampler(8000, 16000)
    linear = s16le_to_f32(decode(codes))
    separate = np.concatenate([resampler.process(linear), resampler.flush()])
    assert np.max(np.abs(fused - separate)) <= 1 / 32768  # one 16-bit step: the final rounding
    # The fused paths add no delay of their own to the resampler's.
    assert decoder.delay_ms == resampler.delay_ms
    assert G711Encoder("mulaw", 24000).delay_ms == Resampler(24000, 8000).delay_ms
