"""Notices the model's silent failures, the most reported problem with the Live API: a user
turn that gets no reply, a turn the service closes as rejected or with nothing in it, a reply
cut off (``turnComplete`` without ``generationComplete`` and without ``interrupted``: the
service sends ``generationComplete`` before ``turnComplete`` unless interrupted), reply audio
at near-zero amplitude, a tone where speech should be, an ``interrupted`` with no user activity
behind it (automatic activity detection off: only a user turn the client begins, with
``activityStart`` or a client turn, may interrupt), or a function call repeated under a new id
(the same name and arguments, in the same turn or right in the next). A pure state machine
(events and times in, failures out, and the recovery step for each);
:class:`geminilive.conversation.Conversation` drives it, reports each failure as
``events.ModelFailure`` and recovers (reprompt, or ``Session.restart`` then reprompt).

The defaults are far from what a working conversation does (a reply starts within a second
or two; speech is around -20 dBFS), so that a normal conversation never trips them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import msgspec
import numpy as np

from geminilive import events as ev
from geminilive.tools import call_key

if TYPE_CHECKING:
    from geminilive.session import Session

__all__ = ["RECOVERIES", "ModelWatchdog", "SessionWatcher", "WatchdogConfig"]

Recovery = Literal["none", "reprompt", "reconnect", "fresh"]
RECOVERIES = ("none", "reprompt", "reconnect", "fresh")
# Failures a recovery step is for (a repeated call is answered by the tools instead).
RECOVERABLE = frozenset(
    {"no_reply", "rejected", "empty_turn", "cut_off", "near_silent", "tone", "spurious_interruption"}
)


class WatchdogConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Args:
    reply_timeout_s: a finished user turn with no model output (audio, text, a tool call)
        for this long is a ``no_reply``.
    silent_dbfs: reply audio whose level over its first ``silent_after_s`` stays under this
        is ``near_silent`` (healthy speech is about -20 dBFS; the reported failure about -65).
    tone_share: reply audio whose first ``silent_after_s`` has this share of its energy at one
        frequency (within 10 Hz) is a ``tone`` (speech spreads it: well under a third; 0.9 is
        a good value). Off by default: the emulator's own models answer in tones.
    recovery: what to do after a failure (off by default: a client that speaks for the user
        should be asked for): ``"reprompt"`` sends ``reprompt_text`` as a user turn;
        ``"reconnect"`` moves the session to a new connection, resumed (the model's context
        kept, whatever generation it was stuck in gone), then reprompts; ``"fresh"`` starts a
        new session seeded with the conversation so far as text, then reprompts. A tuple is a
        ladder: failures in a row take its steps in turn (``("reprompt", "reconnect",
        "fresh")``), and once it is used up nothing more is tried until a turn succeeds
        (a turn with output and no failure starts it again). A repeated call is not
        recovered from: the tools answer it (``ToolRegistry(answer_duplicates=...)``).
    duplicate_calls_across_turns: a call repeating one of the previous turn counts as a
        ``duplicate_call`` too (a user asking the same thing twice in a row would trip it).
    """

    reply_timeout_s: float = 10.0
    silent_dbfs: float = -50.0
    silent_after_s: float = 1.0
    tone_share: float | None = None
    recovery: Recovery | tuple[Recovery, ...] = "none"
    reprompt_text: str = "(Your last answer did not come through. Please answer again.)"
    duplicate_calls_across_turns: bool = True

    def __post_init__(self) -> None:
        for step in self.ladder:
            if step not in RECOVERIES:
                raise ValueError(f"recovery steps are {', '.join(map(repr, RECOVERIES))}, not {step!r}")

    @property
    def ladder(self) -> tuple[str, ...]:
        """The recovery steps, in the order failures in a row take them."""
        steps = (self.recovery,) if isinstance(self.recovery, str) else tuple(self.recovery)
        return tuple(step for step in steps if step != "none")


class ModelWatchdog:
    """``manual_activity``: the session's automatic activity detection is off (the client
    marks turns with ``activityStart``/``activityEnd``)."""

    def __init__(self, config: WatchdogConfig | None = None, *, manual_activity: bool = False) -> None:
        self.config = config or WatchdogConfig()
        self.manual_activity = manual_activity
        self._user_turns_started = 0  # by the client (protocol.user_turns_started), as of the last event
        self._user_turns_at_reply: int | None = None  # ... when the reply began
        self._user_turns_at_turn_end = 0  # ... when the last turn ended
        self._calls_this_turn: set[str] = set()
        self._calls_last_turn: set[str] = set()
        self._waiting_since: float | None = None  # a user turn ended, no model output since
        self._turn_failed = False  # the turn's audio failed a check
        self._turn_output = False
        self._turn_interrupted = False
        self._audio: list[np.ndarray] = []  # the reply's first silent_after_s, to judge it
        self._audio_samples = 0
        self._level_judged = False
        self._generation_complete = False
        self._reply_owed_at_turn_end = False  # a reprompt sent while a reply was under way
        self.recoveries_in_a_row = 0

    def user_turn_ended(self, now: float) -> None:
        if self._waiting_since is None:
            self._waiting_since = now

    def reprompted(self, now: float) -> None:
        """A reprompt went out: its reply is owed from now, or, with a reply still under
        way (it will be interrupted), from that turn's end."""
        if self._turn_output:
            self._reply_owed_at_turn_end = True
        else:
            self.user_turn_ended(now)

    def restarted(self) -> None:
        """The session moved to a new connection mid-turn: that turn is over."""
        self._waiting_since = None
        self._reply_owed_at_turn_end = False
        self._new_turn()

    def on_event(self, event: ev.Event, now: float, *, user_turns_started: int = 0) -> list[ev.ModelFailure]:
        """Failures this event shows (``near_silent`` once per turn, as soon as knowable);
        ``user_turns_started``: how many user turns the client began itself so far
        (``activityStart``, a client turn: ``LiveProtocol.user_turns_started``)."""
        self._user_turns_started = user_turns_started
        if isinstance(event, ev.AudioChunk):
            self._output()
            return self._hear(event)
        if isinstance(event, ev.TextChunk):
            self._output()
        elif isinstance(event, ev.ToolCall):
            self._output()
            return self._calls(event)
        elif isinstance(event, ev.Interrupted):
            self._turn_interrupted = True
            if self.manual_activity and not self._interrupted_by_a_user_turn(user_turns_started):
                self._turn_failed = True
                detail = "interrupted with automatic activity detection off and no user turn since the reply began"
                return [ev.ModelFailure(kind="spurious_interruption", detail=detail)]
        elif isinstance(event, ev.GenerationComplete):
            self._generation_complete = True
        elif isinstance(event, ev.TurnComplete):
            failures = []
            interrupted = self._turn_interrupted or event.interrupted
            if event.reason == "RESPONSE_REJECTED":
                failures.append(ev.ModelFailure(kind="rejected", detail="the service rejected the response"))
            elif not self._turn_output and not interrupted:
                failures.append(ev.ModelFailure(kind="empty_turn", detail="a turn ended with nothing in it"))
            elif self._turn_output and not interrupted and not self._generation_complete:
                detail = "turnComplete without generationComplete or interrupted: the reply stopped midway"
                failures.append(ev.ModelFailure(kind="cut_off", detail=detail))
            if failures:
                self._waiting_since = None  # reported; the next user turn starts the clock
            elif self._turn_output and not self._turn_failed:
                self.recoveries_in_a_row = 0
            self._user_turns_at_turn_end = self._user_turns_started
            self._new_turn()
            if self._reply_owed_at_turn_end:
                self._reply_owed_at_turn_end = False
                self.user_turn_ended(now)
            return failures
        return []

    def check(self, now: float) -> list[ev.ModelFailure]:
        """Failures due by ``now`` (call it a few times a second)."""
        since = self._waiting_since
        if since is not None and now - since >= self.config.reply_timeout_s:
            self._waiting_since = None
            return [ev.ModelFailure(kind="no_reply", detail=f"no reply {now - since:.1f} s after the user's turn")]
        return []

    def _interrupted_by_a_user_turn(self, started: int) -> bool:
        """A turn the client began since the reply did, or two begun before it (replies in
        order: the second cuts off the reply to the first, as after a restart re-sends one)."""
        at_reply = self._user_turns_at_reply
        return at_reply is None or started > at_reply or at_reply - self._user_turns_at_turn_end >= 2

    def _output(self) -> None:
        self._waiting_since = None
        self._generation_complete = False  # generating again (after a blocking call's answer)
        if not self._turn_output:
            self._user_turns_at_reply = self._user_turns_started
        self._turn_output = True

    def _calls(self, event: ev.ToolCall) -> list[ev.ModelFailure]:
        failures = []
        for call in event.function_calls:
            key = call_key(call)
            if key in self._calls_this_turn:
                where = "within the turn"
            elif key in self._calls_last_turn and self.config.duplicate_calls_across_turns:
                where = "of the previous turn"
            else:
                self._calls_this_turn.add(key)
                continue
            detail = f"{call.name}({call.args or {}}) again under a new id ({call.id}): a repeat {where}"
            failures.append(ev.ModelFailure(kind="duplicate_call", detail=detail))
        return failures

    def next_recovery(self, failure: ev.ModelFailure) -> str | None:
        """The recovery step for ``failure`` (counted), or None: not one to recover from, no
        recovery configured, or the ladder used up by failures in a row."""
        ladder = self.config.ladder
        if failure.kind not in RECOVERABLE or self.recoveries_in_a_row >= len(ladder):
            return None
        self.recoveries_in_a_row += 1
        return ladder[self.recoveries_in_a_row - 1]

    def _new_turn(self) -> None:
        self._calls_last_turn, self._calls_this_turn = self._calls_this_turn, set()
        self._user_turns_at_reply = None
        self._turn_failed = False
        self._turn_output = self._turn_interrupted = self._level_judged = self._generation_complete = False
        self._audio, self._audio_samples = [], 0

    def _hear(self, chunk: ev.AudioChunk) -> list[ev.ModelFailure]:
        """Judge the reply's first ``silent_after_s``: its level, and whether it is one tone
        (then no more work per chunk)."""
        if self._level_judged:
            return []
        samples = np.frombuffer(chunk.data, "<i2").astype(np.float64)
        self._audio.append(samples)
        self._audio_samples += len(samples)
        rate = chunk.sample_rate_hz
        if self._audio_samples < self.config.silent_after_s * rate:
            return []
        self._level_judged = True
        audio, self._audio = np.concatenate(self._audio), []
        # (Not ``audio @ audio``: that is a BLAS call, after which OpenBLAS's threads spin busy
        # for a while: 40 ms of CPU per second with one session on this 2-core box.)
        rms = math.sqrt(float(np.mean(np.square(audio))))
        dbfs = 20 * math.log10(max(rms, 1e-3) / 32768)
        if dbfs < self.config.silent_dbfs:
            self._turn_failed = True
            detail = f"reply audio at {dbfs:.0f} dBFS (RMS {rms:.0f}) over its first {self.config.silent_after_s:g} s"
            return [ev.ModelFailure(kind="near_silent", detail=detail)]
        if self.config.tone_share is None:
            return []
        power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
        peak = int(np.argmax(power))
        near = max(1, round(10 * len(audio) / rate))  # bins within 10 Hz
        share = float(power[max(0, peak - near) : peak + near + 1].sum() / power.sum())
        if share > self.config.tone_share:
            self._turn_failed = True
            detail = f"{share:.0%} of the reply's energy at {peak * rate / len(audio):.0f} Hz: a tone, not speech"
            return [ev.ModelFailure(kind="tone", detail=detail)]
        return []


class SessionWatcher:
    """A watchdog on a session whose events the caller reads itself (the framework
    integrations do): pass it each event (:meth:`observe`) and run :meth:`watch` beside. The
    user's turns end where the client ended them (``activityEnd``, a client turn); with the
    service's own activity detection, a turn it ends unseen is not timed (``no_reply``), the
    other failures are. Each failure is counted in the session's stats and passed to
    ``on_failure``; what to do about it is the caller's.
    (:class:`geminilive.Conversation` drives its own, with its local VAD and recoveries.)"""

    def __init__(self, session: Session, config: WatchdogConfig, on_failure: Callable[[ev.ModelFailure], None]) -> None:
        realtime = session.protocol.setup.realtime_input_config
        detection = realtime.automatic_activity_detection if realtime else None
        self.watchdog = ModelWatchdog(config, manual_activity=bool(detection and detection.disabled))
        self.session = session
        self.on_failure = on_failure
        self._turn_ends = self._client_turn_ends()

    def _client_turn_ends(self) -> int:
        protocol = self.session.protocol
        client_turns = protocol.user_turns_started - protocol.activity_starts
        return protocol.activity_ends + client_turns

    def _note_turn_ends(self, now: float) -> None:
        ends = self._client_turn_ends()
        if ends != self._turn_ends:
            self._turn_ends = ends
            self.watchdog.user_turn_ended(now)

    def observe(self, event: ev.Event) -> None:
        now = time.monotonic()
        self._note_turn_ends(now)  # before the event: a reply faster than the poll counts
        started = self.session.protocol.user_turns_started
        for failure in self.watchdog.on_event(event, now, user_turns_started=started):
            self._failed(failure)

    async def watch(self) -> None:
        """The failures only time shows (a reply that never comes); runs until cancelled."""
        poll_s = min(0.25, self.watchdog.config.reply_timeout_s / 4)  # late by a quarter at most
        while True:
            await asyncio.sleep(poll_s)
            now = time.monotonic()
            self._note_turn_ends(now)
            for failure in self.watchdog.check(now):
                self._failed(failure)

    def _failed(self, failure: ev.ModelFailure) -> None:
        self.session.count_model_failure()
        self.on_failure(failure)
