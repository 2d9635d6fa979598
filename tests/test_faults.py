"""Nothing lost: reconnects, resumption and goAway against the emulator's fault injection."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import geminilive
from audio_util import TEXT_MODEL, run
from fault_drill import CHUNK, chunk_numbers, drill, mixed_faults, numbered_chunk
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.emulator import Faults, LiveEmulator
from geminilive.errors import SessionError
from geminilive.session import ReconnectPolicy

FAST = {"speed": float("inf"), "realtime_playback": False}


@pytest.mark.parametrize(
    ("seed", "loop", "nowait"),
    [(1, "asyncio", False), (2, "asyncio", False), (3, "uvloop", False), (4, "asyncio", True)],
)
def test_a_long_conversation_through_many_faults_loses_nothing(seed: int, loop: str, nowait: bool) -> None:
    # A minute of numbered audio at 25x real time through 32 faults: 1011 closes at random
    # points, silent TCP drops, goAways, and jitter/delay on some connections; client and
    # emulator on asyncio's loop, and on uvloop (what geminilive's own programs run on); sent
    # with send_audio, or with send_audio_nowait (what the phone bridge and LiveKit model call).
    faults = mixed_faults(32, seed, messages=(20, 120))
    report, emu = run(drill(chunks=3000, faults=faults, seed=seed, nowait=nowait), loop=loop)
    assert report.identical, report
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, False), report
    closes = sum(1 for c in list(emu.connections)[:-1] if c.faults.close_after_client_messages is not None)
    assert closes >= 20, report
    assert report.reconnects >= 20 and report.resumed == report.reconnects and report.fresh_starts == 0, report
    assert report.events["Resumed"] == report.reconnects
    assert report.events["Reconnecting"] >= closes, "each unplanned close is announced"
    assert report.events["GoAway"] >= 3
    assert report.replayed_messages > 0, "some faults hit messages the service had not consumed"
    assert report.events.get("MalformedMessage", 0) == 0


def test_go_away_moves_between_turns_before_the_deadline() -> None:
    async def scenario():
        faults = [Faults(go_away_after_s=0.05, go_away_time_left_s=1.0), None]
        async with LiveEmulator(model="echo", faults=faults, **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                seen = []
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ev.Resumed):
                        break
                await session.send_text("after the move")
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ev.TurnComplete):
                        return seen, [c.ws.close_code for c in emu.connections]

    seen, codes = run(scenario())
    [resumed] = [e for e in seen if isinstance(e, ev.Resumed)]
    assert resumed.after_go_away and resumed.downtime_s == 0.0
    assert not [e for e in seen if isinstance(e, ev.Reconnecting)], "a planned move, not a reconnect"
    assert codes[0] == 1000, "the client closed the old connection itself, before the 1011 deadline"
    assert [e.text for e in seen if isinstance(e, ev.TextChunk)] == ["after the move"]


def test_go_away_deadline_forces_the_move_when_no_quiet_moment_comes() -> None:
    # A reply longer than the goAway window: the client moves shortly before the deadline
    # anyway (the service may go silent after goAway), so the 1011 close never comes.
    async def scenario():
        faults = [Faults(go_away_after_s=0.2, go_away_time_left_s=0.8), None]
        async with LiveEmulator(model="tone", faults=faults, speed=1.0, realtime_playback=False) as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                await session.send_text("a long answer please")
                async for event in session:
                    if isinstance(event, ev.Resumed):
                        return event, emu.connections[0].ws.close_code

    resumed, code = run(scenario())
    assert resumed.after_go_away
    assert code == 1000


def test_audio_held_while_the_server_is_gone_is_bounded_then_sent_to_a_fresh_session() -> None:
    async def scenario():
        emu = await LiveEmulator(model="echo", record_input=True, **FAST).start()
        port = emu.port
        policy = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.1, jitter=0.5, max_attempts=100)
        config = LiveConfig(transparent_resumption=True)
        session = await geminilive.connect(
            endpoint=emu.url, config=config, reconnect=policy, max_buffered_audio_s=0.5
        ).__aenter__()
        seen: list[ev.Event] = []

        async def receive():
            async for event in session:
                seen.append(event)

        receiver = asyncio.create_task(receive())
        rng = np.random.default_rng(0)
        for n in range(10):
            await session.send_audio(numbered_chunk(n, rng))
        await asyncio.sleep(0.2)
        await emu.stop()  # the server goes away (1001) and stays away for a while
        for n in range(10, 110):  # 2 s of audio while there is no server: 0.5 s is kept
            await session.send_audio(numbered_chunk(n, rng))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        # A new server on the same port knows nothing of the old session: the handle fails.
        emu2 = await LiveEmulator(port=port, model="echo", record_input=True, **FAST).start()
        for _ in range(200):
            if any(isinstance(e, ev.ResumptionFailed) for e in seen) and len(emu2.connections):
                if len(emu2.input_audio()) >= 20 * CHUNK * 2:
                    break
            await asyncio.sleep(0.02)
        stats = session.stats
        received = emu2.input_audio()
        await session.close()
        receiver.cancel()
        await emu2.stop()
        return seen, stats, received

    seen, stats, received = run(scenario())
    reconnecting = [e for e in seen if isinstance(e, ev.Reconnecting)]
    assert reconnecting[0].code == 1001 and reconnecting[0].attempt == 1
    assert [e.attempt for e in reconnecting] == list(range(1, len(reconnecting) + 1))
    assert len(reconnecting) >= 3 and all(e.delay_s <= 0.1 for e in reconnecting)
    [failed] = [e for e in seen if isinstance(e, ev.ResumptionFailed)]
    assert "refused the resumption handle" in failed.reason
    assert stats.fresh_starts == 1 and stats.dropped_audio_frames > 0
    numbers = chunk_numbers(received)
    # The newest audio was kept, in order, with nothing after the gap missing.
    assert numbers == list(range(110 - len(numbers), 110)), numbers
    assert stats.dropped_audio_frames + len(numbers) >= 100


def test_gives_up_after_the_policy_attempts() -> None:
    async def scenario():
        emu = await LiveEmulator(**FAST).start()
        policy = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.02, max_attempts=3)
        async with geminilive.connect(endpoint=emu.url, reconnect=policy) as session:
            await emu.stop()
            seen = []
            with pytest.raises(SessionError, match="gave up reconnecting after 3 attempts"):
                async for event in session:
                    seen.append(event)
            return seen

    seen = run(scenario())
    assert [e.attempt for e in seen if isinstance(e, ev.Reconnecting)] == [1, 2, 3]


def test_without_auto_resume_a_close_is_an_error() -> None:
    async def scenario():
        faults = [Faults(close_after_client_messages=1)]
        async with LiveEmulator(faults=faults, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, auto_resume=False) as session:
                await session.send_text("hello")
                async for _ in session:
                    pass

    with pytest.raises(geminilive.errors.InternalServerError):
        run(scenario())


def test_reconnect_policy_backs_off_with_jitter() -> None:
    policy = ReconnectPolicy(initial_delay_s=0.1, max_delay_s=1.0, jitter=0.5)
    assert policy.delay_s(0) == 0.0
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.0), (20, 1.0)]:
        delays = [policy.delay_s(attempt) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base * 0.3, "jittered"


def test_closing_while_reconnecting_ends_the_session_and_its_sockets() -> None:
    async def scenario():
        faults = [Faults(close_after_client_messages=1), None]
        policy = ReconnectPolicy(initial_delay_s=0.2, max_delay_s=0.2)
        async with LiveEmulator(faults=faults, **FAST) as emu:
            session = await geminilive.connect(endpoint=emu.url, reconnect=policy).__aenter__()
            await session.send_text("hello")
            seen = []
            async for event in session:
                seen.append(event)
                if isinstance(event, ev.Reconnecting):
                    await session.close()
            await asyncio.sleep(0.5)
            return seen, [c.open for c in emu.connections]

    seen, open_connections = run(scenario())
    assert not any(isinstance(e, ev.Resumed) for e in seen)
    assert not any(open_connections), "no connection left behind"
