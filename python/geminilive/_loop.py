"""The event loop geminilive's own programs (the CLI, the emulator server, the benchmarks) run
on: uvloop when it is installed (``pip install geminilive[fast]``), else asyncio's own.

uvloop's C transports and TLS take about a fifth off the CPU a session costs, client and
emulator alike, and half its memory (``benches/bench_scale.py --loop asyncio|uvloop``).
Applications choose their own loop; the library runs on either.
"""

from __future__ import annotations

import asyncio
import socket
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


_WATCHES_FDS: dict[type, bool] = {}


def watches_file_descriptors(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` has ``add_reader``/``add_writer`` (asyncio's selector loop and uvloop
    do; Windows' Proactor loop does not): asked once per loop type, on a socket pair."""
    kind = type(loop)
    if kind not in _WATCHES_FDS:
        a, b = socket.socketpair()
        try:
            loop.add_reader(a.fileno(), lambda: None)
            loop.remove_reader(a.fileno())
            loop.add_writer(a.fileno(), lambda: None)
            loop.remove_writer(a.fileno())
            _WATCHES_FDS[kind] = True
        except NotImplementedError:
            _WATCHES_FDS[kind] = False
        finally:
            a.close()
            b.close()
    return _WATCHES_FDS[kind]
