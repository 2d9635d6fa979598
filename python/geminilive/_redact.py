"""Keeping credentials out of logs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["RedactingLogger"]


class RedactingLogger(logging.LoggerAdapter):
    """A logger that replaces the given secrets in messages and arguments with ``<redacted>``.

    websockets logs every handshake header at DEBUG level, API keys and tokens included;
    both the client and the emulator hand it one of these."""

    def __init__(self, logger: logging.Logger, secrets: Iterable[str]) -> None:
        super().__init__(logger, {})
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "<redacted>")
        return value

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            self.logger.log(level, self._redact(msg), *(self._redact(a) for a in args), **kwargs)
