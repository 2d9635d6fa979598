"""A long conversation in which the model fails silently in every way the emulator can, each
several times, some several times in a row, and the conversation's watchdog notices and
recovers. Used by tests/test_watchdog.py (short) and benches/bench_watchdog.py (30 minutes).

The simulated user speaks every ``CYCLE_S`` (a burst of numbered noise, pushed to talk:
automatic activity detection off, ``activityStart``/``activityEnd`` around it, so that an
``interrupted`` the user did not cause is knowable). The model answers each user turn by
saying the user's audio back after a function call; a reprompt (text) gets noise of its own.
Everything runs ``speedup`` times faster than real time, thresholds scaled with it. The
emulator's connection limit (goAway after 10 minutes) and a session age limit (1011, then
1007 for its handles: a fresh session, seeded; 4 minutes here) apply in simulated time.

For each user turn the report knows what was injected (the emulator's record) and what the
watchdog said until the next user turn, and whether a healthy reply came after the last
failure in it; the audio account is the fault drill's (chunk numbers in the samples).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Generator
from typing import Any

import msgspec
import numpy as np

import geminilive
from fault_drill import CHUNK, RATE, chunk_numbers
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.audio_io import AudioFrame, BufferedSink
from geminilive.conversation import Conversation
from geminilive.emulator import LiveEmulator
from geminilive.emulator.faults import SILENT_FAILURES
from geminilive.emulator.models import (
    Conversation as EmulatedConversation,
)
from geminilive.emulator.models import (
    EchoModel,
    InputTranscript,
    ReplyAudio,
    ReplyItem,
    ReplyToolCall,
    UserTurn,
)
from geminilive.messages import FunctionCall
from geminilive.session import ReconnectPolicy
from geminilive.tools import ToolRegistry
from geminilive.watchdog import WatchdogConfig

CYCLE_S = 30.0  # a user turn every 30 s: room for three recovery steps after a no_reply
REPLY_TIMEOUT_S = 5.0
# The service's is 15 minutes; a shorter one meets it several times in 30 (the recovery
# ladder's fresh sessions start the age again).
SESSION_AGE_LIMIT_S = 240.0
SPEECH_S = 2.4
LADDER = ("reprompt", "reconnect", "fresh")
# What the watchdog calls each injected failure.
DETECTED_AS = {failure: failure for failure in SILENT_FAILURES} | {"duplicate_calls": "duplicate_call"}


class DrillModel:
    """Answers a user turn with a function call (``note(turn=k)``), then the user's audio
    back; a text turn (a reprompt) with a second of noise. Transcripts both ways, so a fresh
    session has a conversation to be seeded with."""

    name = "drill"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.user_turns = 0

    def reply(self, turn: UserTurn, conversation: EmulatedConversation) -> Generator[ReplyItem, Any, None]:
        if turn.audio:
            self.user_turns += 1
            said = f"user turn {self.user_turns}"
            yield InputTranscript(said)
            yield ReplyToolCall([FunctionCall(name="note", args={"what": said})])
            for echo in EchoModel().reply(turn, conversation):
                assert isinstance(echo, ReplyAudio)
                yield ReplyAudio(pcm=echo.pcm, transcript=f"you said {said}.")
        else:
            noise = self.rng.normal(0, 5000, 24000).clip(-32768, 32767).astype("<i2")
            yield ReplyAudio(pcm=noise.tobytes(), transcript="once more.")


def plan_failures(turns: int, repeats: int) -> dict[int, tuple[str, int]]:
    """User turn -> (failure, how many replies in a row suffer it): every failure ``repeats``
    times, spread out with clean turns between; streaks of 1, 2 and 3 replies in turn climb
    the recovery ladder (a repeated call is answered, not recovered from: always 1)."""
    kinds = [k for _ in range(repeats) for k in SILENT_FAILURES]
    if 2 * len(kinds) + 1 > turns:
        raise ValueError(f"{turns} user turns are too few for {len(kinds)} failures with a clean turn after each")
    step = turns / len(kinds)
    plan = {}
    for n, kind in enumerate(kinds):
        streak = 1 if kind == "duplicate_calls" else 1 + n % 3
        plan[1 + int(n * step)] = (kind, streak)
    return plan


class _FailurePlan:
    """The emulator's ``silent_failures``: which user turn a reply answers, by the chunk
    numbers in its audio (a turn replayed to a new session is the same turn, not the next)."""

    def __init__(self, plan: dict[int, tuple[str, int]]) -> None:
        self.plan, self.remaining, self.failure = plan, 0, ""
        self.turns_seen: set[int] = set()

    def __call__(self, number: int, turn: UserTurn) -> str | None:
        if turn.audio:
            user_turn = chunk_numbers(turn.audio[: 2 * CHUNK])[0] // int(CYCLE_S * 50)
            if user_turn not in self.turns_seen:
                self.turns_seen.add(user_turn)
                self.failure, self.remaining = self.plan.get(user_turn, ("", 0))
        if self.remaining:
            self.remaining -= 1
            return self.failure
        return None


class TurnAccount(msgspec.Struct, kw_only=True):
    turn: int
    injected: list[str]  # one per failed reply
    detected: list[str]
    recoveries: list[str]
    healthy_reply_after: bool


class WatchdogDrillReport(msgspec.Struct, kw_only=True):
    minutes: float
    user_turns: int
    turns: list[TurnAccount]
    injected: dict[str, int]
    detected: dict[str, int]
    false_alarms: int
    recovered: int
    to_recover: int
    recoveries: dict[str, int]
    duplicates_answered: int
    age_limit_fresh_starts: int
    seeded_turns: list[int]
    resumed: int
    fresh_starts: int
    reconnects: int
    chunks_sent: int
    chunks_received: int
    lost: int
    given_to_two_sessions: int
    fresh_session_audio_identical: bool
    wall_s: float


class _User:
    """The user, an AudioSource: pushed-to-talk bursts of numbered noise every CYCLE_S
    (``activityStart`` before, ``activityEnd`` after; ``starts`` has when each began), quiet
    between, paced ``speedup`` times faster than real time."""

    def __init__(self, chunks: int, speedup: float, session: geminilive.Session) -> None:
        self.chunks, self.speedup, self.session = chunks, speedup, session
        self.starts: list[float] = []
        self.done = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[AudioFrame]:
        rng = np.random.default_rng(1)
        per_cycle, loud = int(CYCLE_S * 50), int(SPEECH_S * 50)
        t0 = time.monotonic()
        for n in range(self.chunks):
            phase = n % per_cycle
            if phase == 0:
                self.starts.append(time.monotonic())
                await self.session.activity_start()
            x = rng.normal(0, 6000 if phase < loud else 30, CHUNK).clip(-32768, 32767).astype("<i2")
            x[0], x[1] = n & 0x7FFF, n >> 15
            yield AudioFrame(x.astype(np.float32) / 32768, RATE, time.monotonic())  # exact back to s16
            if phase == loud - 1:
                await self.session.activity_end()
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 / self.speedup - time.monotonic()))
        self.done.set()


async def watchdog_drill(*, minutes: float, repeats: int, speedup: float = 20.0, clean: bool = False, seed: int = 5):
    """Run the conversation; with ``clean`` nothing is injected (a false-alarm check)."""
    chunks = int(minutes * 60 * 50)
    user_turns = chunks // int(CYCLE_S * 50)
    plan = {} if clean else plan_failures(user_turns, repeats)
    failure_plan = _FailurePlan(plan)
    timeline: list[tuple[float, ev.Event]] = []
    t0 = time.monotonic()
    tools = ToolRegistry()

    @tools.register
    async def note(what: str) -> dict:
        """Note what the user said."""
        return {"noted": what}

    emulator = LiveEmulator(
        model=DrillModel(seed),
        speed=speedup,
        realtime_playback=False,
        record_input=True,
        silent_failures=failure_plan,
        connection_time_limit_s=600 / speedup,
        go_away_lead_s=50 / speedup,
        session_time_limit_s=SESSION_AGE_LIMIT_S / speedup,
    )
    config = LiveConfig(
        automatic_activity_detection=False,
        transparent_resumption=True,
        tools=tools.tools,
        input_audio_transcription=True,
        output_audio_transcription=True,
    )
    watchdog = WatchdogConfig(reply_timeout_s=REPLY_TIMEOUT_S / speedup, tone_share=0.9, recovery=LADDER)
    async with emulator as emu:
        policy = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.1)
        async with geminilive.connect(endpoint=emu.url, config=config, reconnect=policy) as session:
            user = _User(chunks, speedup, session)
            conversation = Conversation(
                session,
                source=user,
                sink=BufferedSink(lambda x: None, period_ms=200, speed=speedup),
                tools=tools,
                watchdog=watchdog,
                on_event=lambda e: timeline.append((time.monotonic(), e)),
            )
            async with conversation:
                await user.done.wait()
                await asyncio.sleep(CYCLE_S / speedup)
            if conversation.error is not None:
                raise conversation.error
            stats = session.stats
            every, newest = emu.input_audio(every_session=True), emu.input_audio()
            injected = list(emu.injected_failures)
    account = _account(plan, user.starts, timeline, injected)
    numbers = chunk_numbers(every)
    seen = collections.Counter(numbers)
    fresh_numbers = chunk_numbers(newest)
    fresh = [e for _, e in timeline if isinstance(e, ev.ResumptionFailed)]
    return WatchdogDrillReport(
        minutes=minutes,
        user_turns=len(user.starts),
        **account,
        duplicates_answered=tools.duplicates_answered,
        age_limit_fresh_starts=sum("refused" in e.reason for e in fresh),
        seeded_turns=[e.seeded_turns for e in fresh if "refused" in e.reason],
        resumed=stats.resumed,
        fresh_starts=stats.fresh_starts,
        reconnects=stats.reconnects,
        chunks_sent=chunks,
        chunks_received=len(numbers),
        lost=sum(1 for n in range(chunks) if n not in seen),
        given_to_two_sessions=sum(c - 1 for c in seen.values() if c > 1),
        fresh_session_audio_identical=bool(fresh_numbers) and fresh_numbers == list(range(fresh_numbers[0], chunks)),
        wall_s=time.monotonic() - t0,
    )


def _account(
    plan: dict[int, tuple[str, int]],
    starts: list[float],
    timeline: list[tuple[float, ev.Event]],
    injected: list[tuple[int, str]],
) -> dict[str, Any]:
    """Per user turn: what was planned, what the watchdog said and did, whether a healthy
    reply came after; totals, checked against what the emulator says it injected."""
    turns: list[TurnAccount] = []
    bounds = [*starts, float("inf")]
    for k in range(len(starts)):
        window = [e for at, e in timeline if bounds[k] <= at < bounds[k + 1]]
        failures = [e for e in window if isinstance(e, ev.ModelFailure)]
        kind, streak = plan.get(k, ("", 0))
        turns.append(
            TurnAccount(
                turn=k,
                injected=[kind] * streak,
                detected=[f.kind for f in failures],
                recoveries=[f.recovery for f in failures if f.recovery],
                healthy_reply_after=_healthy_turn_after_failures(window),
            )
        )
    expected = collections.Counter()
    for account in turns:
        for failure in account.injected:
            expected[DETECTED_AS[failure]] += 1
        if account.injected[:1] == ["duplicate_calls"]:
            expected["duplicate_call"] += 1  # the reply calls the last turn's functions again, too
    detected = collections.Counter(kind for account in turns for kind in account.detected)
    false_alarms = sum((detected - expected).values())
    to_recover = [a for a in turns if a.injected and a.injected[0] != "duplicate_calls"]
    planned = sorted(f for a in turns for f in a.injected)
    if planned != sorted(f for _, f in injected):
        raise AssertionError(f"the emulator injected {sorted(f for _, f in injected)}, the plan was {planned}")
    return {
        "turns": turns,
        "injected": dict(collections.Counter(DETECTED_AS[f] for f in planned)),
        "detected": dict(detected),
        "false_alarms": false_alarms,
        "recovered": sum(a.healthy_reply_after for a in to_recover),
        "to_recover": len(to_recover),
        "recoveries": dict(collections.Counter(r for a in turns for r in a.recoveries)),
    }


def _healthy_turn_after_failures(events: list[ev.Event]) -> bool:
    """Whether a model turn that began after the last failure among ``events`` (or at all,
    with none) came whole: audio, generationComplete, not interrupted."""
    last_failure = max((i for i, e in enumerate(events) if isinstance(e, ev.ModelFailure)), default=-1)
    first_audio: int | None = None
    complete = False
    for i, event in enumerate(events):
        if isinstance(event, ev.AudioChunk) and first_audio is None:
            first_audio = i
        elif isinstance(event, ev.GenerationComplete):
            complete = True
        elif isinstance(event, ev.Interrupted | ev.Reconnecting):  # (no turn outlives its connection)
            first_audio, complete = None, False
        elif isinstance(event, ev.TurnComplete):
            if first_audio is not None and first_audio > last_failure and complete and not event.interrupted:
                return True
            first_audio, complete = None, False
    return False
