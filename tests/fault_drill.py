"""A long streamed conversation through faults, and an exact account of the audio.

Every 20 ms chunk the client sends is numbered in its first two samples; the emulator records
every audio byte its session consumed (``record_input``, across connections, rewound to what
each resumption handle covered). At the end the two transcripts are compared sample for
sample, and chunk numbers tell what was lost or duplicated. Used by tests/test_faults.py and
benches/bench_faults.py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import random
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

import geminilive
from geminilive import LiveConfig
from geminilive.emulator import Faults, LiveEmulator
from geminilive.session import ReconnectPolicy

RATE = 16000
CHUNK = RATE // 50  # 20 ms


class DrillReport(msgspec.Struct, kw_only=True):
    chunks_sent: int
    chunks_received: int
    lost: int
    duplicated: int
    reordered: bool
    first_in_order: bool
    resent: list[int]
    identical: bool
    reconnects: int
    resumed: int
    fresh_starts: int
    replayed_messages: int
    dropped_audio_frames: int
    malformed_messages: int
    events: dict[str, int]
    connections: int
    wall_s: float
    peak_rss_mib: float
    rss_mib_per_minute: list[float]
    heap_mib_per_minute: list[float]


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def numbered_chunk(n: int, rng: np.random.Generator, *, speech: bool = True) -> bytes:
    """A 20 ms chunk: speech-like bursts (1.2 s of loud noise, 0.8 s quiet) so that the
    emulator's VAD takes turns and replies (or, without ``speech``, quiet all along: no turn
    ever ends), with the chunk number in the first two samples."""
    loud = speech and (n % 100) < 60
    x = rng.normal(0, 6000 if loud else 30, CHUNK).clip(-32768, 32767).astype("<i2")
    x[0], x[1] = n & 0x7FFF, n >> 15
    return x.tobytes()


def chunk_numbers(pcm: bytes) -> list[int]:
    x = np.frombuffer(pcm, "<i2").reshape(-1, CHUNK)[:, :2].astype(np.int64)
    return (x[:, 0] | (x[:, 1] << 15)).tolist()


def resent_runs(numbers: list[int]) -> list[int]:
    """Where the chunks a service took in go back (a resume that sent again what the service
    may already have had, at least once delivery), how many chunks each time."""
    return [a - b + 1 for a, b in itertools.pairwise(numbers) if b <= a]


def first_arrivals_in_order(numbers: list[int]) -> bool:
    """Whether each chunk first came after every chunk before it (repeats aside)."""
    firsts = list(dict.fromkeys(numbers))
    return firsts == sorted(firsts)


def last_chunk_in(received: bytes, count: int) -> bool:
    """Whether a service that takes what it is sent in order has taken all ``count`` chunks."""
    return chunk_numbers(received[-2 * CHUNK :]) == [count - 1]


def delivered_at_least_once(received: bytes, chunks: list[bytes]) -> list[int]:
    """Check that ``received`` holds every one of ``chunks``, sample for sample, first arriving
    in order; returns how far back each resume sent chunks again (:func:`resent_runs`)."""
    numbers = chunk_numbers(received)
    assert set(numbers) == set(range(len(chunks))), f"lost: {sorted(set(range(len(chunks))) - set(numbers))}"
    assert first_arrivals_in_order(numbers), numbers
    pieces = [received[i : i + 2 * CHUNK] for i in range(0, len(received), 2 * CHUNK)]
    assert all(piece == chunks[n] for n, piece in zip(numbers, pieces, strict=True)), "sample for sample"
    return resent_runs(numbers)


# Resume attempts that fail, in turn: refused with 1011, dropped, stalled past the client's
# setup timeout (STALL_S > the drill's SETUP_TIMEOUT_S), refused with 1008 (the handle is
# forgotten: the client starts afresh and sends what that handle did not cover).
SETUP_TIMEOUT_S = 0.5
STALL_S = 1.0
FAILED_RESUMES = (
    Faults(refuse_setup_code=1011),
    Faults(drop_at_setup=True),
    Faults(stall_setup_s=STALL_S),
    Faults(refuse_setup_code=1008, close_reason="BidiGenerateContent session not found"),
)


def mixed_faults(
    count: int, seed: int, *, messages: tuple[int, int] = (20, 160), failed_resumes: bool = False
) -> Callable[[int], Faults | None]:
    """Connection ``n`` of the first ``count`` gets a fault: mostly a 1011 close after a random
    number of messages; every fifth a silent TCP drop, every seventh a goAway; some with
    network jitter and delay too. With ``failed_resumes``, every fourth connection is a resume
    attempt that fails (``FAILED_RESUMES`` in turn), so the client keeps sending through
    failed and stalled reconnects too."""
    rng = random.Random(seed)
    plan: list[Faults] = []
    for n in range(count):
        after = rng.randint(*messages)
        jitter = {"audio_jitter_s": 0.01, "send_delay_s": 0.002} if n % 3 == 2 else {}
        if failed_resumes and n % 4 == 1:
            plan.append(FAILED_RESUMES[(n // 4 + seed) % len(FAILED_RESUMES)])
        elif n % 7 == 6:
            plan.append(Faults(go_away_after_s=0.05 + rng.random() * 0.2, go_away_time_left_s=0.4, **jitter))
        elif n % 5 == 4:
            plan.append(Faults(drop_after_client_messages=after, **jitter))
        else:
            plan.append(Faults(close_after_client_messages=after, close_code=1011, **jitter))
    return lambda n: plan[n] if n < len(plan) else None


async def drill(
    *,
    chunks: int,
    faults: Callable[[int], Faults | None],
    seed: int = 0,
    speedup: float = 25.0,
    server_tls: dict[str, Any] | None = None,
    transparent: bool = True,
    speech: bool = True,
    nowait: bool = False,
    replay_margin_s: float | None = None,
) -> tuple[DrillReport, LiveEmulator]:
    """Stream ``chunks`` numbered chunks at ``speedup`` x real time through ``faults`` (over
    wss:// with ``server_tls``, the emulator's ``ssl`` or ``certfile``/``keyfile``: the client
    trusts what the system's CA store holds), with transparent resumption (handles that say
    what they cover) or without; each chunk through ``send_audio``, or with ``nowait``
    through ``send_audio_nowait`` (and ``drain`` when it asks). ``replay_margin_s``: the
    session's, if not its default."""
    rng = np.random.default_rng(seed)
    sent = hashlib.sha256()  # what was sent, without holding it all
    rss_mib: list[float] = []
    heap_mib: list[float] = []  # Python heap (with tracemalloc on), the emulator's record excluded
    counts: collections.Counter[str] = collections.Counter()
    t0 = time.monotonic()
    emulator = LiveEmulator(
        model="echo", faults=faults, speed=1.0, realtime_playback=False, record_input=True, **(server_tls or {})
    )
    async with emulator as emu:
        config = LiveConfig(transparent_resumption=transparent or None, response_modalities=["AUDIO"])
        policy = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.2)
        margin = {} if replay_margin_s is None else {"replay_margin_s": replay_margin_s}
        async with geminilive.connect(
            endpoint=emu.url, config=config, reconnect=policy, setup_timeout_s=SETUP_TIMEOUT_S, **margin
        ) as session:

            async def receive() -> None:
                async for event in session:
                    counts[type(event).__name__] += 1

            receiver = asyncio.create_task(receive())
            start = time.monotonic()
            for n in range(chunks):
                chunk = numbered_chunk(n, rng, speech=speech)
                sent.update(chunk)
                if not nowait:
                    await session.send_audio(chunk)
                elif session.send_audio_nowait(chunk):
                    await session.drain()
                if n % 3000 == 0:  # every minute of audio
                    rss_mib.append(current_rss_mib())
                    if tracemalloc.is_tracing():
                        heap_mib.append((tracemalloc.get_traced_memory()[0] - len(emu.input_audio())) / 2**20)
                delay = start + (n + 1) * 0.02 / speedup - time.monotonic()
                await asyncio.sleep(max(delay, 0.0))
            # Wait for the service to have taken everything: the last connection stays up and
            # takes what it is sent in order, so up to the last chunk.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not last_chunk_in(emu.input_audio(), chunks):
                if receiver.done():
                    receiver.result()  # raises what ended the session
                await asyncio.sleep(0.02)
            received = emu.input_audio(every_session=True)
            peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            stats = session.stats
            await session.close()
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
    numbers = chunk_numbers(received)
    seen = collections.Counter(numbers)
    report = DrillReport(
        chunks_sent=chunks,
        chunks_received=len(numbers),
        lost=sum(1 for n in range(chunks) if n not in seen),
        duplicated=sum(c - 1 for c in seen.values() if c > 1),
        reordered=numbers != sorted(numbers),
        first_in_order=first_arrivals_in_order(numbers),
        resent=resent_runs(numbers),
        identical=hashlib.sha256(received).digest() == sent.digest(),
        reconnects=stats.reconnects,
        resumed=stats.resumed,
        fresh_starts=stats.fresh_starts,
        replayed_messages=stats.replayed_messages,
        dropped_audio_frames=stats.dropped_audio_frames,
        malformed_messages=stats.malformed_messages,
        events=dict(counts),
        connections=len(emu.connections),
        wall_s=time.monotonic() - t0,
        peak_rss_mib=peak_rss_mib,
        rss_mib_per_minute=rss_mib,
        heap_mib_per_minute=heap_mib,
    )
    return report, emu
