"""The event loop geminilive's own programs (the CLI, the emulator server, the benchmarks) run
on: uvloop when it is installed (``pip install geminilive[fast]``), else asyncio's own.

uvloop's C transports and TLS take about a fifth off the CPU a session costs, client and
emulator alike, and half its memory (``benches/bench_scale.py --loop asyncio|uvloop``).
Applications choose their own loop; the library runs on either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

LoopKind = Literal["auto", "asyncio", "uvloop"]


def loop_name(kind: LoopKind = "auto") -> str:
    """The loop ``run`` would use for ``kind``: "uvloop" or "asyncio"."""
    if kind != "auto":
        return kind
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T], *, loop: LoopKind = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``kind`` names ("auto": uvloop if installed)."""
    if loop_name(loop) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
