from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("fast", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "fast"))


def _pulse_running(env: dict[str, str]) -> bool:
    return subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def pulseaudio(tmp_path_factory):
    """A real audio server with no hardware: PulseAudio with a null sink `virt` whose monitor
    is the default source, so what is played comes back as captured audio. Uses a server that
    is already running, else starts one and stops only that one."""
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed (make test installs it)")
    if os.environ.get("XDG_RUNTIME_DIR") and _pulse_running(dict(os.environ)):
        subprocess.run(["pactl", "set-default-source", "virt.monitor"], capture_output=True)
        yield os.environ["XDG_RUNTIME_DIR"]
        return
    runtime = tmp_path_factory.mktemp("pulse-runtime")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    subprocess.run(
        ["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--load=module-native-protocol-unix",
         "--load=module-null-sink sink_name=virt rate=48000", "--load=module-always-sink"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    for _ in range(50):
        if _pulse_running(env):
            break
        time.sleep(0.1)
    subprocess.run(["pactl", "set-default-source", "virt.monitor"], env=env, check=True, capture_output=True)
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield str(runtime)
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True)
        if previous is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous
