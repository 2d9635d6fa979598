"""Session.restart: moving to a new connection on the caller's word (a watchdog's recovery),
resumed or fresh, with nothing the caller sent lost on the way."""

from __future__ import annotations

import asyncio
import collections

import numpy as np
import pytest

import geminilive
from audio_util import run
from fault_drill import chunk_numbers, delivered_at_least_once, numbered_chunk
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.emulator import LiveEmulator
from geminilive.errors import LocalProtocolError
from geminilive.session import ReconnectPolicy


async def stream_with_restarts(restarts: dict[int, tuple[bool, ...]], *, chunks: int = 500, transparent: bool = True):
    """Stream numbered 20 ms chunks (speech bursts: the echo model replies, so restarts land
    mid-reply too) at 10x real time; at chunk n, a restart for each of ``restarts[n]`` (fresh
    or resumed), one right after the other."""
    rng = np.random.default_rng(3)
    sent: list[bytes] = []
    events: list[ev.Event] = []
    async with LiveEmulator(model="echo", speed=10.0, realtime_playback=False, record_input=True) as emu:
        config = LiveConfig(transparent_resumption=transparent or None, response_modalities=["AUDIO"])
        policy = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.05)
        async with geminilive.connect(endpoint=emu.url, config=config, reconnect=policy) as session:

            async def receive() -> None:
                async for event in session:
                    events.append(event)

            receiver = asyncio.create_task(receive())
            for n in range(chunks):
                for i, fresh in enumerate(restarts.get(n, ())):
                    leaving = session.restart(fresh=fresh, reason=f"test {n}")
                    assert leaving or i, "a connection was open to leave"
                chunk = numbered_chunk(n, rng)
                sent.append(chunk)
                await session.send_audio(chunk)
                await asyncio.sleep(0.002)
            total = sum(map(len, sent))
            for _ in range(500):
                if len(emu.input_audio()) and chunk_numbers(emu.input_audio())[-1:] == [chunks - 1]:
                    break
                await asyncio.sleep(0.01)
            stats = session.stats
            every = emu.input_audio(every_session=True)
            newest = emu.input_audio()
            await session.close()
            await asyncio.gather(receiver, return_exceptions=True)
    assert len(every) >= total
    return b"".join(sent), every, newest, events, stats


@pytest.mark.parametrize("transparent", [True, False])
def test_resumed_restarts_mid_stream_lose_nothing(transparent: bool) -> None:
    restarts = {120: (False,), 260: (False, False)}
    sent, every, newest, events, stats = run(stream_with_restarts(restarts, transparent=transparent))
    if transparent:  # the handles say what they cover: nothing is sent twice
        assert every == sent, "the session took in every sample once, in order"
    else:  # audio handed in the replay margin (0.25 s) may come twice: the chunks paced in it
        # (one every 2 ms or more) and a replay, which goes out at once
        resent = delivered_at_least_once(every, [sent[i : i + 640] for i in range(0, len(sent), 640)])
        assert len(resent) <= 2 and all(n <= 0.25 / 0.002 + stats.replayed_messages for n in resent), resent
    assert newest == every
    reconnecting = [e for e in events if isinstance(e, ev.Reconnecting)]
    assert [e.code for e in reconnecting] == [1000, 1000], "two restarts asked at once are one"
    assert reconnecting[0].reason == "restart: test 120"
    assert sum(isinstance(e, ev.Resumed) for e in events) == 2 and stats.resumed == 2 and stats.fresh_starts == 0


def test_a_fresh_restart_starts_a_new_session_that_gets_everything_its_predecessor_may_not_have() -> None:
    sent, every, newest, events, stats = run(stream_with_restarts({200: (True,)}))
    [failed] = [e for e in events if isinstance(e, ev.ResumptionFailed)]
    assert failed.reason == "a fresh session was asked for: test 200"
    assert stats.fresh_starts == 1 and stats.resumed == 0
    numbers = chunk_numbers(every)
    assert set(numbers) == set(range(500)), "nothing lost over both sessions"
    fresh = chunk_numbers(newest)
    assert fresh == list(range(fresh[0], 500)), "the fresh session: in order, to the end"
    assert 150 < fresh[0] <= 200, "from what the old session's last handle did not cover"
    repeated = [n for n, c in collections.Counter(numbers).items() if c > 1]
    assert all(n >= fresh[0] for n in repeated), "only that uncovered tail went to both sessions"
    assert newest == sent[fresh[0] * 640 :], "sample for sample"


def test_restart_needs_an_open_resumable_session() -> None:
    async def scenario() -> None:
        async with LiveEmulator() as emu:
            config = LiveConfig(session_resumption=False)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                with pytest.raises(LocalProtocolError, match="needs session resumption"):
                    session.restart()
            async with geminilive.connect(endpoint=emu.url) as session:
                pass
            with pytest.raises(LocalProtocolError, match="closed"):
                session.restart()

    run(scenario())


def test_a_restart_with_a_new_setup_resumes_the_session_with_its_instructions_and_tools() -> None:
    """The Live API takes instructions and tools only in a setup, and any change but the
    model's on a resumption: restart(setup=) is how a session changes them, context kept."""

    async def scenario() -> None:
        async with LiveEmulator(model="echo", realtime_playback=False) as emu:
            config = LiveConfig(system_instruction="You greet.")
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await session.send_text("Hello.")
                async for event in session:
                    if isinstance(event, ev.TurnComplete):
                        break
                for _ in range(200):  # the handle that covers the turn
                    if session.resumption_handle:
                        break
                    await asyncio.sleep(0.01)
                tool = geminilive.messages.Tool(
                    function_declarations=[geminilive.messages.FunctionDeclaration(name="book", description="Book.")]
                )
                changed = LiveConfig(system_instruction="You book tables.", tools=[tool]).to_setup(session.setup.model)
                with pytest.raises(LocalProtocolError, match="cannot change its model"):
                    session.restart(setup=LiveConfig().to_setup("models/another"))
                assert session.restart(reason="new agent", setup=changed)
                async for event in session:
                    if isinstance(event, ev.Resumed | ev.ResumptionFailed):
                        break
                await session.send_text("Two people.")
                async for event in session:
                    if isinstance(event, ev.TurnComplete):
                        break
                one, two = emu.connections
        assert isinstance(event, ev.TurnComplete)
        assert two.setup.system_instruction.parts[0].text == "You book tables."
        assert two.setup.tools[0].function_declarations[0].name == "book"
        assert two.setup.session_resumption.handle and two.record is one.record
        assert len(two.record.conversation.turns) == 2, "one conversation across both connections"
        assert session.setup.system_instruction.parts[0].text == "You book tables."

    run(scenario())
