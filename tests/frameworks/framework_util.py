"""What the framework integrations' tests share: user audio, the faults they stream through,
a reconnect as slow as one over the internet, and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from fault_drill import numbered_chunk
from geminilive.emulator import Faults
from geminilive.session import ReconnectPolicy

# A reconnect that takes as long as one over the internet, so user audio keeps coming while
# there is no connection (on loopback it is over between two frames).
SLOW_RECONNECT = {"reconnect": ReconnectPolicy(initial_delay_s=0.25, max_delay_s=0.5)}

FAULTS = {
    "1011 close": Faults(close_after_client_messages=40, close_code=1011),
    "silent drop": Faults(drop_after_client_messages=40),
    "goAway": Faults(go_away_after_s=0.4, go_away_time_left_s=0.3),
}


def speech_chunks(count: int, seed: int = 0) -> list[bytes]:
    """Numbered 20 ms chunks of speech-like bursts (a user turn every 2 s for the emulator)."""
    rng = np.random.default_rng(seed)
    return [numbered_chunk(n, rng) for n in range(count)]


async def until(condition: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
