# One command installs everything the tests need from nothing and runs them all: `make test`.
SHELL := /bin/bash
PYTHON ?= python3
APT_PACKAGES := libasound2-dev pkg-config pulseaudio libasound2-plugins alsa-utils espeak-ng sox openssl ca-certificates libportaudio2
PY_TEST_PACKAGES := maturin numpy msgspec websockets pytest pytest-timeout hypothesis ruff mypy soxr google-genai samplerate scipy sounddevice uvloop

.PHONY: test demo deps apt-deps py-deps build-dev lint test-rust test-python bench

test: deps build-dev lint test-rust test-python

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

py-deps:
	$(PYTHON) -m pip install -q --disable-pip-version-check $(PY_TEST_PACKAGES)

deps: apt-deps py-deps

# Editable install: maturin builds the extension into python/geminilive (release profile,
# since the tests measure real-time behaviour).
build-dev:
	rm -f python/geminilive/_native*.so
	$(PYTHON) -m pip install -q --disable-pip-version-check --no-build-isolation -e .

lint:
	cargo clippy --release --all-targets -- -D warnings
	cargo clippy --release --all-targets --features python -- -D warnings
	$(PYTHON) -m ruff check python tests benches rust
	$(PYTHON) -m mypy python/geminilive
	$(PYTHON) -m mypy.stubtest geminilive._native

test-rust:
	cargo test --release

test-python:
	PYTHONASYNCIODEBUG=1 $(PYTHON) -m pytest -q

demo: deps build-dev
	$(PYTHON) -m geminilive demo $(DEMO_ARGS)

bench: deps build-dev
	$(PYTHON) -m geminilive bench
