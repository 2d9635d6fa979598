"""A real audio server without hardware, for device tests and benchmarks.

PulseAudio with two null sinks: ``virt`` (the default sink; its monitor is the default source,
so it plays the part of the room a microphone hears) and ``speaker`` (where a conversation's
output goes, recorded through ``speaker.monitor``). Uses a server that is already running,
else starts one and stops only that one. ``PULSE_SINK``/``PULSE_SOURCE`` pick a sink or source
for streams opened while they are set (:func:`routed`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

SINKS = ("virt", "speaker")


def _pactl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True)


@contextlib.contextmanager
def pulse_server() -> Iterator[str]:
    if shutil.which("pulseaudio") is None:
        raise RuntimeError("pulseaudio is not installed (make test installs it)")
    env = dict(os.environ)
    started = False
    runtime = env.get("XDG_RUNTIME_DIR")
    if not (runtime and _pactl("info", env=env).returncode == 0):
        runtime = tempfile.mkdtemp(prefix="geminilive-pulse-")
        env["XDG_RUNTIME_DIR"] = runtime
        subprocess.run(
            ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--load=module-native-protocol-unix",
             "--load=module-null-sink sink_name=virt rate=48000", "--load=module-always-sink"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        started = True
        for _ in range(100):
            if _pactl("info", env=env).returncode == 0:
                break
            time.sleep(0.05)
    sinks = _pactl("list", "short", "sinks", env=env).stdout
    for sink in SINKS:
        if f"\t{sink}\t" not in sinks:
            _pactl("load-module", "module-null-sink", f"sink_name={sink}", "rate=48000", env=env)
    _pactl("set-default-sink", "virt", env=env)
    _pactl("set-default-source", "virt.monitor", env=env)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        yield runtime
    finally:
        if started:
            subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True)
            for _ in range(100):  # it removes its socket and pid file on the way out
                if subprocess.run(["pulseaudio", "--check"], env=env).returncode != 0:
                    break
                time.sleep(0.02)
            shutil.rmtree(runtime, ignore_errors=True)
        if previous is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous


@contextlib.contextmanager
def doomed_pulse_server(runtime: Path) -> Iterator[Callable[[], None]]:
    """A private PulseAudio server, the default device while the block runs, and a function that
    kills it under whatever streams are open (an audio server that dies, a device that vanishes)."""
    runtime.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    subprocess.run(
        ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--load=module-native-protocol-unix",
         "--load=module-null-sink sink_name=gone rate=48000", "--load=module-always-sink"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    _pactl("set-default-source", "gone.monitor", env=env)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield lambda: subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True)
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True)
        if previous is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous


@contextlib.contextmanager
def routed(**variables: str) -> Iterator[None]:
    """Set PULSE_SINK / PULSE_SOURCE while streams are opened."""
    old = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
