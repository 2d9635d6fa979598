"""The framework integrations' tests. They run in a virtual environment of their own
(``make test-frameworks``, from ``requirements/frameworks.lock``): the frameworks pin versions
the rest of the tests do not use (google-genai < 3, soxr 1.0)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # The frameworks' own deprecations, at their import: not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:'audioop' is deprecated:DeprecationWarning")
