"""Signals and measurements shared by the tests."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geminilive._loop import run as run_on_loop

# A model that answers in TEXT: the half-cascade model of the recorded sessions (the emulator
# refuses TEXT on native-audio models, as the service does).
TEXT_MODEL = "gemini-live-2.5-flash-preview"


def chirp(seconds: float, rate: int, *, f0: float = 200.0, f1: float = 3000.0, amplitude: float = 0.3) -> np.ndarray:
    """A frequency sweep: voiced-speech-like energy, and a sharp cross-correlation peak."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t)
    x = amplitude * np.sin(phase)
    fade = int(0.005 * rate)
    x[:fade] *= np.linspace(0, 1, fade)
    x[-fade:] *= np.linspace(1, 0, fade)
    return x.astype(np.float32)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def xcorr_peak(signal: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """Normalised cross-correlation peak of `reference` within `signal`: (score in [0, 1], lag)."""
    n = len(signal) + len(reference)
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(signal, size) * np.conj(np.fft.rfft(reference, size))
    corr = np.fft.irfft(spectrum, size)[: len(signal)]
    lag = int(np.argmax(np.abs(corr)))
    window = signal[lag : lag + len(reference)]
    ref = reference[: len(window)]
    denom = np.linalg.norm(window) * np.linalg.norm(ref)
    return (float(abs(window @ ref) / denom) if denom else 0.0), lag


def speak(text: str, path: Path, *, rate: int = 16000) -> np.ndarray:
    """Real speech from espeak-ng, resampled by sox to `rate` mono float32."""
    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        raise RuntimeError("espeak-ng and sox are needed (make test installs them)")
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True, capture_output=True
    )
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def frames(x: np.ndarray, rate: int, ms: int = 20) -> list[np.ndarray]:
    n = rate * ms // 1000
    return [x[i : i + n] for i in range(0, len(x), n)]


class NoFdWatchLoop(asyncio.SelectorEventLoop):
    """An event loop that, like Windows' Proactor loop, has no ``add_reader``/``add_writer``
    for callers (its own transports still work): the code paths a Windows user runs."""

    def add_reader(self, fd, callback, *args):
        raise NotImplementedError

    def add_writer(self, fd, callback, *args):
        raise NotImplementedError


LOOPS = ["asyncio", "uvloop", "no-fd-watch"]


def run(coro, *, loop: str = "asyncio"):
    """Run a test scenario with a 30 s limit, on asyncio's loop, uvloop, or a loop that cannot
    watch file descriptors ("no-fd-watch")."""
    if loop == "no-fd-watch":
        with asyncio.Runner(loop_factory=NoFdWatchLoop) as runner:
            return runner.run(asyncio.wait_for(coro, 30))
    return run_on_loop(asyncio.wait_for(coro, 30), loop=loop)


# How far the offsets of found pieces may spread: a few xruns of the rig's 10 ms PulseAudio
# streams on a busy machine (each shifts what follows by up to a period; a CI machine showed two
# in one 2 s signal). What geminilive's own streams drop or insert is counted exactly by their
# stats, which the tests assert separately; this bounds only the audio server's share.
RIG_GLITCH_SPREAD_S = 0.05


def find_in_order(
    recorded: np.ndarray, reference: np.ndarray, rate: int, piece_s: float = 0.25
) -> tuple[float, float, list]:
    """Look for `reference` in `recorded` piece by piece: (share of pieces found with a
    correlation above 0.9, spread in seconds of their offsets, all (score, offset ms)). A busy
    machine can make a PulseAudio stream of the test rig glitch, which shifts everything after
    it and would sink one whole-signal correlation; pieces stay found, and in order."""
    n = int(piece_s * rate)
    found = []
    for k in range(0, len(reference) - n + 1, n):
        piece = reference[k : k + n]
        if np.std(piece) > 0.01:
            score, lag = xcorr_peak(recorded, piece)
            found.append((score, lag - k))
    good = [offset for score, offset in found if score > 0.9]
    spread = (max(good) - min(good)) / rate if good else float("inf")
    return len(good) / max(len(found), 1), spread, [(round(s, 2), round(1000 * o / rate, 1)) for s, o in found]


async def until(condition: Callable[[], bool], timeout_s: float, what: str, *, poll_s: float = 0.01) -> None:
    """Wait for ``condition``; a step that never comes fails the test or benchmark,
    naming the step, instead of hanging it."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        await asyncio.sleep(poll_s)


def level_db(signal: np.ndarray, rate: int, freq: float, reference: float = 0.5) -> float:
    """Level of `freq` by projection on the middle half (edges hold the filter's ramps),
    Hann-windowed so a strong tone elsewhere does not leak into the measurement."""
    n = len(signal)
    idx = np.arange(n // 4, n - n // 4)
    window = np.hanning(len(idx))
    part = signal[idx].astype(np.float64) * window
    phase = 2 * np.pi * freq * idx / rate
    amp = 2 * np.hypot(part @ np.sin(phase), part @ np.cos(phase)) / window.sum()
    return 20 * np.log10(max(amp, 1e-15) / reference)
