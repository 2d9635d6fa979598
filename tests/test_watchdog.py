"""The model's silent failures, injected by the emulator, noticed by the conversation's
watchdog within bounded time; and no false alarm in a conversation that works."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

import geminilive
from audio_util import run, speak
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.audio_io import ArraySource, CallbackSink
from geminilive.conversation import Conversation
from geminilive.emulator import Faults, LiveEmulator
from geminilive.emulator.models import ScriptModel, ScriptTurn, ToneModel, UserTurn
from geminilive.messages import FunctionCall
from geminilive.tools import ToolRegistry
from geminilive.watchdog import ModelWatchdog, SessionWatcher, WatchdogConfig


def chunk(level: float, seconds: float = 0.04, rate: int = 24000) -> ev.AudioChunk:
    x = level * np.sin(2 * np.pi * 300 * np.arange(int(seconds * rate)) / rate)
    return ev.AudioChunk(data=np.round(x * 32767).astype("<i2").tobytes(), sample_rate_hz=rate)


def test_the_watchdog_state_machine() -> None:
    dog = ModelWatchdog(WatchdogConfig(reply_timeout_s=2.0, tone_share=0.9))
    dog.user_turn_ended(10.0)
    assert dog.check(11.9) == []
    [late] = dog.check(12.0)
    assert late.kind == "no_reply" and dog.check(20.0) == [], "once per user turn"
    dog.user_turn_ended(30.0)
    assert dog.on_event(chunk(0.3), 30.5) == [] and dog.check(40.0) == [], "a reply started in time"
    rng = np.random.default_rng(0)
    noise = ev.AudioChunk(data=(rng.normal(0, 3000, 960)).astype("<i2").tobytes(), sample_rate_hz=24000)
    healthy = [f for _ in range(30) for f in dog.on_event(noise, 31.0)]
    dog.on_event(ev.GenerationComplete(), 31.9)
    assert healthy == [] and dog.on_event(ev.TurnComplete(), 32.0) == []
    quiet = [f for _ in range(30) for f in dog.on_event(chunk(0.0005), 33.0)]
    assert [f.kind for f in quiet] == ["near_silent"], "once, after the first second"
    dog.on_event(ev.TurnComplete(), 34.0)
    [rejected] = dog.on_event(ev.TurnComplete(reason="RESPONSE_REJECTED"), 35.0)
    assert rejected.kind == "rejected"
    [empty] = dog.on_event(ev.TurnComplete(), 36.0)
    assert empty.kind == "empty_turn"
    dog.on_event(ev.Interrupted(), 37.0)
    assert dog.on_event(ev.TurnComplete(interrupted=True), 37.1) == [], "an interrupted turn may be empty"
    dog.on_event(ev.TextChunk(text="half a sen"), 38.0)
    [cut] = dog.on_event(ev.TurnComplete(), 38.1)
    assert cut.kind == "cut_off"
    dog.on_event(ev.TextChunk(text="a whole sentence."), 39.0)
    dog.on_event(ev.GenerationComplete(), 39.1)
    assert dog.on_event(ev.TurnComplete(), 39.2) == []
    tone = [f for _ in range(30) for f in dog.on_event(chunk(0.3), 40.0)]
    assert [f.kind for f in tone] == ["tone"], "a steady 300 Hz tone is not speech"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    return speak("Could you tell me the opening hours today?", tmp_path_factory.mktemp("w") / "q.wav")


async def converse(
    speech: np.ndarray,
    faults: Faults | None,
    watchdog: WatchdogConfig,
    turns: int,
    timeout: float,
    *,
    silent_failures: Callable[[int, UserTurn], str | None] | None = None,
    transparent: bool | None = None,
):
    emulator = LiveEmulator(
        model="echo", speed=8.0, faults=[faults] if faults else None, silent_failures=silent_failures
    )
    async with emulator as emu:
        async with geminilive.connect(
            endpoint=emu.url, config=LiveConfig(silence_duration_ms=400, transparent_resumption=transparent)
        ) as session:
            seen: list[ev.Event] = []
            conversation = Conversation(
                session, source=ArraySource(speech, 16000, trailing_silence_s=timeout + 1),
                sink=CallbackSink(lambda x: None), watchdog=watchdog, on_event=seen.append,
            )  # fmt: skip
            async with conversation:
                with_deadline = asyncio.create_task(conversation.wait(turns=turns, timeout=timeout))
                await asyncio.gather(with_deadline, return_exceptions=True)
                await asyncio.sleep(0.5)
            received = [m for c in emu.connections for m in c.received]
            return conversation, session.stats, seen, received


@pytest.mark.parametrize("failure", ["no_reply", "rejected", "near_silent", "cut_off", "tone"])
def test_each_injected_failure_is_noticed_and_counted(speech: np.ndarray, failure: str) -> None:
    watchdog = WatchdogConfig(reply_timeout_s=2.0, tone_share=0.9)
    turns = 0 if failure == "no_reply" else 1
    conversation, stats, seen, _ = run(converse(speech, Faults(failure=failure), watchdog, turns or 99, 6.0))
    kinds = [f.kind for f in conversation.failures]
    assert kinds == [failure], kinds
    assert stats.model_failures == 1
    assert any(isinstance(e, ev.ModelFailure) and e.kind == failure for e in seen), "reported to on_event"


def test_reprompting_after_no_reply_gets_the_answer(speech: np.ndarray) -> None:
    watchdog = WatchdogConfig(reply_timeout_s=1.5, recovery="reprompt")
    conversation, stats, _, received = run(converse(speech, Faults(failure="no_reply"), watchdog, 1, 10.0))
    assert stats.model_failures == 1
    assert [f.kind for f in conversation.failures] == ["no_reply"]
    prompts = [m.client_content for m in received if m.client_content is not None]
    assert prompts and "did not come through" in prompts[0].turns[0].parts[0].text
    assert len(conversation.metrics) == 1, "the model answered the reprompt"
    assert len(prompts) == 1, "one reprompt in a row at most"
    assert conversation.failures[0].recovery == "reprompt"


def test_the_recovery_ladder_takes_a_step_per_failure_in_a_row() -> None:
    dog = ModelWatchdog(WatchdogConfig(recovery=("reprompt", "reconnect", "fresh")))
    failure = ev.ModelFailure(kind="no_reply", detail="")
    assert [dog.next_recovery(failure) for _ in range(4)] == ["reprompt", "reconnect", "fresh", None]
    assert dog.next_recovery(ev.ModelFailure(kind="duplicate_call", detail="")) is None, "the tools' business"
    dog.on_event(chunk(0.3), 1.0)
    dog.on_event(ev.GenerationComplete(), 1.1)
    dog.on_event(ev.TurnComplete(), 1.2)
    assert dog.next_recovery(failure) == "reprompt", "a good turn starts the ladder again"
    assert ModelWatchdog().next_recovery(failure) is None, "no recovery by default"
    with pytest.raises(ValueError, match="recovery steps"):
        WatchdogConfig(recovery=("reprompt", "reboot"))  # type: ignore[arg-type]


def test_a_reprompt_during_a_failing_reply_is_owed_its_answer_from_that_turns_end() -> None:
    dog = ModelWatchdog(WatchdogConfig(reply_timeout_s=1.0))
    dog.on_event(chunk(0.3), 0.0)
    dog.reprompted(0.5)
    assert dog.check(5.0) == [], "the reply under way is not the reprompt's"
    dog.on_event(ev.TurnComplete(interrupted=True), 6.0)
    assert dog.check(6.9) == [] and [f.kind for f in dog.check(7.0)] == ["no_reply"]


def fail_replies(*numbers: int, failure: str) -> Callable[[int, UserTurn], str | None]:
    return lambda n, turn: failure if n in numbers else None


@pytest.mark.parametrize("step", ["reconnect", "fresh"])
def test_a_restart_recovers_a_near_silent_reply(speech: np.ndarray, step: str) -> None:
    watchdog = WatchdogConfig(recovery=step)  # type: ignore[arg-type]
    plan = fail_replies(0, failure="near_silent")
    conversation, stats, seen, received = run(converse(speech, None, watchdog, 2, 15.0, silent_failures=plan))
    [failure] = conversation.failures
    assert (failure.kind, failure.recovery) == ("near_silent", step)
    assert [e.code for e in seen if isinstance(e, ev.Reconnecting)] == [1000]
    moved = [e for e in seen if isinstance(e, ev.Resumed | ev.ResumptionFailed)]
    assert [type(e) for e in moved] == [ev.Resumed if step == "reconnect" else ev.ResumptionFailed]
    assert (stats.resumed, stats.fresh_starts) == ((1, 0) if step == "reconnect" else (0, 1))
    prompts = [m.client_content for m in received if m.client_content is not None and m.client_content.turn_complete]
    assert len(prompts) == 1 and "did not come through" in prompts[0].turns[0].parts[0].text
    answered = conversation.metrics[-1]
    assert answered.audio_received_s > 0.2 and not answered.interrupted, "the reprompt was answered"
    assert stats.model_failures == 1


def test_failures_in_a_row_climb_the_ladder_until_a_reply_comes(speech: np.ndarray) -> None:
    # The user's turn, the reprompt after it and the one after the reconnect go unanswered
    # (transparent resumption: nothing consumed is replayed, so replies are those three).
    watchdog = WatchdogConfig(reply_timeout_s=1.0, recovery=("reprompt", "reconnect", "fresh"))
    plan = fail_replies(0, 1, 2, failure="no_reply")
    dialogue = converse(speech, None, watchdog, 1, 20.0, silent_failures=plan, transparent=True)
    conversation, stats, seen, _ = run(dialogue)
    assert [(f.kind, f.recovery) for f in conversation.failures] == [
        ("no_reply", "reprompt"), ("no_reply", "reconnect"), ("no_reply", "fresh")
    ]  # fmt: skip
    assert (stats.resumed, stats.fresh_starts) == (1, 1)
    [fresh] = [e for e in seen if isinstance(e, ev.ResumptionFailed)]
    assert fresh.reason == "a fresh session was asked for: the model failed: no_reply"
    assert len(conversation.metrics) == 1 and conversation.metrics[0].audio_received_s > 0.2, "then an answer"


def test_a_working_conversation_raises_no_alarm(speech: np.ndarray) -> None:
    # Every check on, the tone check too: the echo model says the user's speech back.
    conversation, stats, _, _ = run(converse(speech, None, WatchdogConfig(tone_share=0.9), 1, 10.0))
    assert len(conversation.metrics) == 1 and conversation.metrics[0].audio_received_s > 1.0
    assert conversation.failures == [] and stats.model_failures == 0


def test_the_watchdog_notices_spurious_interruptions_and_repeated_calls() -> None:
    dog = ModelWatchdog(manual_activity=True)
    dog.on_event(ev.TurnComplete(), 0.5, user_turns_started=1)
    dog.on_event(chunk(0.3), 1.0, user_turns_started=2)
    [spurious] = dog.on_event(ev.Interrupted(), 1.5, user_turns_started=2)
    assert spurious.kind == "spurious_interruption"
    dog.on_event(ev.TurnComplete(interrupted=True), 1.6, user_turns_started=2)
    dog.on_event(chunk(0.3), 2.0, user_turns_started=2)
    assert dog.on_event(ev.Interrupted(), 2.5, user_turns_started=3) == [], "the user's activityStart interrupted"
    assert ModelWatchdog().on_event(ev.Interrupted(), 3.0) == [], "automatic detection on: the server's call"
    dog.on_event(ev.TurnComplete(interrupted=True), 3.1, user_turns_started=3)
    dog.on_event(chunk(0.3), 3.2, user_turns_started=5)
    assert dog.on_event(ev.Interrupted(), 3.3, user_turns_started=5) == [], "two turns begun: the second cuts in"
    dog.on_event(ev.TurnComplete(interrupted=True), 3.4, user_turns_started=5)

    book = {"name": "book", "args": {"table": 3}}
    other = FunctionCall(name="book", args={"table": 4}, id="b")
    calls = ev.ToolCall(function_calls=[FunctionCall(**book, id="a"), other])
    assert dog.on_event(calls, 4.0) == [], "two different calls"
    [again] = dog.on_event(ev.ToolCall(function_calls=[FunctionCall(**book, id="c")]), 4.1)
    assert again.kind == "duplicate_call" and "within the turn" in again.detail
    dog.on_event(ev.TurnComplete(), 5.0)
    [next_turn] = dog.on_event(ev.ToolCall(function_calls=[FunctionCall(**book, id="d")]), 6.0)
    assert "previous turn" in next_turn.detail
    lenient = ModelWatchdog(WatchdogConfig(duplicate_calls_across_turns=False))
    lenient.on_event(ev.ToolCall(function_calls=[FunctionCall(**book, id="e")]), 7.0)
    lenient.on_event(ev.TurnComplete(), 7.5)
    assert lenient.on_event(ev.ToolCall(function_calls=[FunctionCall(**book, id="f")]), 8.0) == []


async def manual_turns(faults: Faults | None, *, barge_in_after_s: float | None = None):
    """Text turns with automatic activity detection off, against a 2 s tone reply."""
    async with LiveEmulator(model=ToneModel(duration_s=2.0), speed=1.0, faults=[faults] if faults else None) as emu:
        config = LiveConfig(automatic_activity_detection=False)
        async with geminilive.connect(endpoint=emu.url, config=config) as session:
            conversation = Conversation(session, source=ArraySource(np.zeros(0, np.float32), 16000),
                                        sink=CallbackSink(lambda x: None))  # fmt: skip
            async with conversation:
                await session.send_text("tell me something")
                if barge_in_after_s is not None:
                    await asyncio.sleep(barge_in_after_s)
                    await session.activity_start()
                    await session.activity_end()
                await conversation.wait(turns=1, timeout=10)
                await asyncio.sleep(0.3)
            return conversation, session.stats, [type(e).__name__ for e in conversation.events]


def test_an_interruption_with_no_user_activity_behind_it_is_noticed() -> None:
    conversation, stats, kinds = run(manual_turns(Faults(failure="spurious_interruption")))
    assert "Interrupted" in kinds
    assert [f.kind for f in conversation.failures] == ["spurious_interruption"] and stats.model_failures == 1


def test_the_users_own_barge_in_with_manual_activity_is_no_alarm() -> None:
    conversation, stats, kinds = run(manual_turns(None, barge_in_after_s=0.6))
    assert "Interrupted" in kinds, "the activityStart interrupted the reply"
    assert conversation.failures == [] and stats.model_failures == 0


def test_calls_repeated_within_a_turn_and_in_the_next_are_noticed_and_run_once_per_turn() -> None:
    tools = ToolRegistry()
    runs: list[int] = []

    @tools.register
    async def book(table: int) -> dict:
        """Book a table."""
        runs.append(table)
        return {"booked": table}

    script = ScriptModel([ScriptTurn(text="booked", tool_calls=[FunctionCall(name="book", args={"table": 3})]),
                          ScriptTurn(text="anything else?")])  # fmt: skip

    async def scenario():
        faults = [Faults(failure="duplicate_calls", silent_failure_turns=2)]
        async with LiveEmulator(model=script, speed=float("inf"), realtime_playback=False, faults=faults) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=tools.tools)) as session:
                conversation = Conversation(session, source=ArraySource(np.zeros(0, np.float32), 16000),
                                            sink=CallbackSink(lambda x: None), tools=tools)  # fmt: skip
                async with conversation:
                    for n, text in enumerate(["book table 3", "thanks"]):
                        await session.send_text(text)
                        await conversation.wait(turns=n + 1, timeout=10)
                return conversation, session.stats

    conversation, stats = run(scenario())
    failures = [f.detail for f in conversation.failures if f.kind == "duplicate_call"]
    assert len(failures) == 2 and "within the turn" in failures[0] and "previous turn" in failures[1]
    assert stats.model_failures == 2
    assert runs == [3, 3], "the repeat within the turn answered from the first run; the next turn's ran"
    assert tools.duplicates_answered == 1


def test_a_drill_with_failures_in_a_row_detects_and_recovers_each_and_loses_no_audio(monkeypatch) -> None:
    import watchdog_drill

    plan = {1: ("near_silent", 3), 3: ("no_reply", 2), 5: ("duplicate_calls", 1), 7: ("spurious_interruption", 3)}
    monkeypatch.setattr(watchdog_drill, "plan_failures", lambda turns, repeats: plan)
    report = run(watchdog_drill.watchdog_drill(minutes=4.0, repeats=1))
    failed = {a.turn: a for a in report.turns if a.injected}
    assert sorted(failed) == sorted(plan)
    assert failed[1].recoveries == ["reprompt", "reconnect", "fresh"] and failed[1].detected == ["near_silent"] * 3
    assert failed[3].recoveries == ["reprompt", "reconnect"] and failed[3].detected == ["no_reply"] * 2
    assert failed[5].detected == ["duplicate_call"] * 2, "the last turn's call again, then its own twice"
    assert report.duplicates_answered == 1
    assert failed[7].detected == ["spurious_interruption"] * 3
    assert report.recovered == report.to_recover == 3
    assert report.false_alarms == 0
    assert (report.resumed, report.fresh_starts) == (3, 2), "one reconnect per ladder past its first step"
    assert report.lost == 0 and report.fresh_session_audio_identical
    assert not [a.turn for a in report.turns if a.detected and not a.injected], "nothing in the clean turns"


@pytest.mark.parametrize("turn", ["client turn", "activity end"])
def test_a_session_watcher_times_the_turns_the_client_ended(turn: str) -> None:
    """For code that reads the session itself (the framework integrations): a client turn,
    or pushed to talk an activityEnd, owes a reply; none comes to the first, and that is a
    no_reply, counted by the session; the reply to the second is no alarm."""
    config = LiveConfig(automatic_activity_detection=False) if turn == "activity end" else LiveConfig()
    loud = (np.sin(np.arange(16000) / 5) * 12000).astype("<i2").tobytes()

    async def scenario() -> tuple[list[ev.ModelFailure], list[ev.Event], int]:
        plan = fail_replies(0, failure="no_reply")
        async with LiveEmulator(model="echo", realtime_playback=False, silent_failures=plan) as emu:
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                failures: list[ev.ModelFailure] = []
                seen: list[ev.Event] = []
                watcher = SessionWatcher(session, WatchdogConfig(reply_timeout_s=0.5), failures.append)

                async def receive() -> None:
                    async for event in session:
                        watcher.observe(event)
                        seen.append(event)

                tasks = [asyncio.create_task(watcher.watch()), asyncio.create_task(receive())]

                async def one_turn() -> None:
                    if turn == "client turn":
                        await session.send_client_content("Hello.")
                    else:
                        await session.activity_start()
                        await session.send_audio(loud)
                        await session.activity_end()

                await one_turn()
                await asyncio.sleep(1.0)  # no reply: the poll notices
                await one_turn()
                async with asyncio.timeout(5):
                    while not any(isinstance(e, ev.TurnComplete) for e in seen):
                        await asyncio.sleep(0.01)
                await asyncio.sleep(1.0)
                for task in tasks:
                    task.cancel()
                return failures, seen, session.stats.model_failures

    failures, seen, counted = run(scenario())
    assert [f.kind for f in failures] == ["no_reply"]
    assert counted == 1
    assert any(isinstance(e, ev.AudioChunk) for e in seen), "the second turn was answered"
