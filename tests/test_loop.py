"""The event loop geminilive's own programs run on (geminilive._loop)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from geminilive._loop import loop_name, run


async def running_loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_picks_uvloop_when_installed_and_each_kind_is_honoured() -> None:
    assert loop_name() == "uvloop"
    assert issubclass(run(running_loop_type()), uvloop.Loop)
    assert issubclass(run(running_loop_type(), loop="uvloop"), uvloop.Loop)
    plain = run(running_loop_type(), loop="asyncio")
    assert not issubclass(plain, uvloop.Loop) and issubclass(plain, asyncio.AbstractEventLoop)


def test_run_returns_the_result_and_raises_the_error() -> None:
    async def fail() -> None:
        raise ValueError("from inside")

    assert run(asyncio.sleep(0, result=7)) == 7
    with pytest.raises(ValueError, match="from inside"):
        run(fail())
