from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from pulse import pulse_server

# tests/frameworks runs in a venv of its own (`make test-frameworks`, see its conftest).
collect_ignore = [] if os.environ.get("GEMINILIVE_FRAMEWORK_TESTS") else ["frameworks"]

settings.register_profile("fast", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "fast"))


@pytest.fixture(scope="session")
def pulseaudio():
    """A real audio server with no hardware (see tests/pulse.py)."""
    with pulse_server() as runtime:
        yield runtime
