from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio_util import level_db
from geminilive import Resampler
from geminilive.errors import AudioFormatError

HOT_PAIRS = [(48000, 16000), (44100, 16000), (16000, 16000), (24000, 48000), (24000, 44100)]
# Pairs that take every kind of stage: half-band steps (one to three), the fixed 3:2 filter
# alone or after a Kaiser step, transposed tables (44.1k -> 24k, 22.05k -> 24k).
STAGE_MIX = [(192000, 8000), (88200, 16000), (24000, 16000), (32000, 16000), (22050, 24000), (48000, 24000)]


def tone(rate: int, freq: float, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def resample_all(r: Resampler, x: np.ndarray) -> np.ndarray:
    return np.concatenate([r.process(x), r.flush()])


@pytest.mark.parametrize(("rate_in", "rate_out"), [*HOT_PAIRS, *STAGE_MIX, (8000, 48000)])
def test_passband_within_005_db(rate_in: int, rate_out: int) -> None:
    nyquist = min(rate_in, rate_out) / 2
    for fraction in (0.005, 0.1, 0.25, 0.5, 0.75, 0.85, 0.9):
        f = fraction * nyquist
        out = resample_all(Resampler(rate_in, rate_out), tone(rate_in, f))
        gain = level_db(out, rate_out, f)
        assert abs(gain) < 0.05, f"{rate_in}->{rate_out} {f:.0f} Hz: {gain:.4f} dB"


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(48000, 16000), (44100, 16000), (48000, 24000), (192000, 8000), (88200, 16000)]
)
def test_tones_above_output_nyquist_fold_back_below_130_db(rate_in: int, rate_out: int) -> None:
    nyquist = rate_out / 2
    for f in np.linspace(nyquist, rate_in / 2 * 0.995, 17):
        alias = abs(f - rate_out * round(f / rate_out))
        out = resample_all(Resampler(rate_in, rate_out), tone(rate_in, f))
        level = level_db(out, rate_out, alias)
        assert level < -130, f"{rate_in}->{rate_out}: {f:.0f} Hz folds to {alias:.0f} at {level:.1f} dB"


@pytest.mark.parametrize(("rate_in", "rate_out"), [(24000, 48000), (24000, 44100), (16000, 48000), (8000, 44100)])
def test_upsampling_images_are_rejected(rate_in: int, rate_out: int) -> None:
    """Images of any tone up to 0.9 of the input Nyquist frequency are 130 dB down (the issue
    asks for 100; soxr HQ's worst is about 128 for 48k -> 16k)."""
    for f in np.linspace(0.02, 0.9, 9) * rate_in / 2:
        out = resample_all(Resampler(rate_in, rate_out), tone(rate_in, f))
        image = rate_in - f
        image = rate_out - image if image > rate_out / 2 else image
        level = level_db(out, rate_out, image)
        assert level < -130, f"{rate_in}->{rate_out}: {f:.0f} Hz images at {image:.0f} Hz, {level:.1f} dB"


@given(
    st.sampled_from([*HOT_PAIRS, *STAGE_MIX, (8000, 44100), (44101, 16000), (96000, 22050)]),
    st.lists(st.integers(0, 2500), min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
)
def test_any_chunking_is_bit_identical(pair: tuple[int, int], sizes: list[int], seed: int) -> None:
    rate_in, rate_out = pair
    x = np.random.default_rng(seed).uniform(-1, 1, sum(sizes)).astype(np.float32)
    whole = resample_all(Resampler(rate_in, rate_out), x)
    r = Resampler(rate_in, rate_out)
    parts, start = [], 0
    for size in sizes:
        parts.append(r.process(x[start : start + size]))
        start += size
    parts.append(r.flush())
    chunked = np.concatenate(parts)
    assert chunked.tobytes() == whole.tobytes()


def test_output_length_and_reported_delay() -> None:
    for rate_in, rate_out in HOT_PAIRS:
        r = Resampler(rate_in, rate_out)
        x = np.zeros(rate_in, np.float32)
        out = r.process(x)
        assert abs((rate_out - len(out)) - r.delay_samples) <= 1
        assert len(out) + len(r.flush()) == rate_out
    assert Resampler(48000, 16000).delay_ms < 5.0
    assert Resampler(44100, 16000).delay_ms < 14.0


def test_delay_aligns_the_output() -> None:
    """An impulse comes out at the same time position (the output is not shifted)."""
    x = np.zeros(4800, np.float32)
    x[2400] = 1.0
    out = resample_all(Resampler(48000, 16000), x)
    assert int(np.argmax(out)) == 800


@pytest.mark.parametrize(("rate_in", "rate_out"), [(44100, 16000), (24000, 48000), (22050, 24000)])
def test_stereo_matches_each_channel_alone(rate_in: int, rate_out: int) -> None:
    left, right = tone(rate_in, 440), tone(rate_in, 3000)
    both = resample_all(Resampler(rate_in, rate_out, channels=2), np.stack([left, right], axis=1))
    for channel, mono in enumerate((left, right)):
        np.testing.assert_array_equal(both[:, channel], resample_all(Resampler(rate_in, rate_out), mono))


def test_int16_stereo_and_flush_reset() -> None:
    left, right = tone(48000, 440), tone(48000, 1000)
    stereo = np.stack([left, right], axis=1)
    r = Resampler(48000, 16000, channels=2)
    out = resample_all(r, stereo)
    assert out.shape == (8000, 2)
    mono = resample_all(Resampler(48000, 16000), left)
    np.testing.assert_array_equal(out[:, 0], mono)
    as_int = np.round(left * 32767).astype(np.int16)
    out16 = resample_all(Resampler(48000, 16000), as_int)
    assert abs(level_db(out16, 16000, 440, 0.5 * 32767 / 32768)) < 0.05
    # flush resets: the same input gives the same output again
    np.testing.assert_array_equal(resample_all(r, stereo), out)


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(AudioFormatError, match="outside the supported"):
        Resampler(4000, 16000)
    with pytest.raises(AudioFormatError):
        Resampler(48000, 16000, channels=0)
    r = Resampler(48000, 16000, channels=2)
    with pytest.raises(AudioFormatError, match="whole number"):
        r.process(np.zeros(3, np.float32))
    with pytest.raises(AudioFormatError, match="channels"):
        r.process(np.zeros((4, 3), np.float32))
    with pytest.raises(AudioFormatError, match="float64"):
        Resampler(48000, 16000).process(np.zeros(10))


DESIGN_SCRIPT = Path(__file__).parents[1] / "rust" / "resample" / "design_tables.py"


def load_design_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("design_tables", DESIGN_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["design_tables"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


design_tables = load_design_tables()
COMMITTED_TABLES = design_tables.parse(design_tables.TABLES.read_text())


def test_fixed_filter_tables_match_their_design() -> None:
    """rust/resample/tables.rs is what design_tables.py makes with this scipy, within
    floating-point noise (the script's --check, as a contributor runs it)."""
    check = subprocess.run([sys.executable, str(DESIGN_SCRIPT), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_every_table_is_parsed() -> None:
    names = set(re.findall(r"pub\(super\) const (\w+): Prototype", design_tables.TABLES.read_text()))
    assert names == set(COMMITTED_TABLES) == set(design_tables.design())


@pytest.mark.parametrize("name", sorted(COMMITTED_TABLES))
def test_fixed_table_meets_the_spec_its_comment_states(name: str) -> None:
    table = COMMITTED_TABLES[name]
    ripple_db, attenuation_db = design_tables.measure(table)
    assert ripple_db <= table.spec.ripple_db, f"{name}: pass band {ripple_db:.3g} dB"
    assert attenuation_db >= table.spec.attenuation_db, f"{name}: stop band {attenuation_db:.1f} dB down"
    assert abs(table.taps().sum() - 1) < 1e-6  # DC gain 1
    if table.half[0] == 0.5:  # a half-band filter: every even tap off the centre is exactly zero
        assert not table.half[2::2].any()


def test_table_check_ignores_noise_and_catches_a_changed_design() -> None:
    designed = design_tables.design()
    assert design_tables.differences(COMMITTED_TABLES, designed) == []

    def with_half(name: str, half: np.ndarray) -> dict:
        return {**designed, name: dataclasses.replace(designed[name], half=half)}

    half = designed["SHARP_3_2"].half
    noise = half * (1 + 1e-13 * np.random.default_rng(0).standard_normal(len(half)))
    assert design_tables.differences(COMMITTED_TABLES, with_half("SHARP_3_2", noise)) == []
    nudged = half.copy()
    nudged[40] += 1e-6 * np.abs(half).max()  # far below hearing, far above noise
    assert design_tables.differences(COMMITTED_TABLES, with_half("SHARP_3_2", nudged))
    shorter = with_half("SHARP_3_2", half[:-1])  # two taps fewer
    assert "taps in tables.rs" in design_tables.differences(COMMITTED_TABLES, shorter)[0]
    up = designed["HALFBAND_UP_2"]
    moved_edge = dataclasses.replace(up, spec=dataclasses.replace(up.spec, stopband=0.56))
    respecified = {**designed, "HALFBAND_UP_2": moved_edge}
    assert design_tables.differences(COMMITTED_TABLES, respecified)


def test_a_table_that_misses_its_spec_is_caught() -> None:
    """The spec test can fail: a table rounded to 4 digits no longer reaches its stop band."""
    table = COMMITTED_TABLES["HALFBAND_UP_2"]
    rounded = dataclasses.replace(table, half=np.round(table.half, 4))
    assert design_tables.measure(rounded)[1] < table.spec.attenuation_db
