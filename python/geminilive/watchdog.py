"""Notices the model's silent failures, the most reported problem with the Live API: a user
turn that gets no reply, a turn the service closes as rejected or with nothing in it, a reply
cut off (``turnComplete`` without ``generationComplete`` and without ``interrupted``: the
service sends ``generationComplete`` before ``turnComplete`` unless interrupted), reply audio
at near-zero amplitude, a tone where speech should be, an ``interrupted`` with no user activity
behind it (automatic activity detection off: only the client's ``activityStart`` may
interrupt), or a function call repeated under a new id (the same name and arguments, in the
same turn or right in the next). A pure state machine (events and times in, failures out);
:class:`geminilive.conversation.Conversation` drives it and reports each failure as
``events.ModelFailure``.

The defaults are far from what a working conversation does (a reply starts within a second
or two; speech is around -20 dBFS), so that a normal conversation never trips them.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np

from geminilive import events as ev
from geminilive.tools import call_key

__all__ = ["ModelWatchdog", "WatchdogConfig"]


class WatchdogConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Args:
    reply_timeout_s: a finished user turn with no model output (audio, text, a tool call)
        for this long is a ``no_reply``.
    silent_dbfs: reply audio whose level over its first ``silent_after_s`` stays under this
        is ``near_silent`` (healthy speech is about -20 dBFS; the reported failure about -65).
    tone_share: reply audio whose first ``silent_after_s`` has this share of its energy at one
        frequency (within 10 Hz) is a ``tone`` (speech spreads it: well under a third; 0.9 is
        a good value). Off by default: the emulator's own models answer in tones.
    recovery: ``"reprompt"`` sends ``reprompt_text`` as a user turn after a failure (off by
        default: a client that speaks for the user should be asked for), at most
        ``max_reprompts`` times in a row (a turn without failure starts the count again).
    duplicate_calls_across_turns: a call repeating one of the previous turn counts as a
        ``duplicate_call`` too (a user asking the same thing twice in a row would trip it).
    """

    reply_timeout_s: float = 10.0
    silent_dbfs: float = -50.0
    silent_after_s: float = 1.0
    tone_share: float | None = None
    recovery: Literal["none", "reprompt"] = "none"
    reprompt_text: str = "(Your last answer did not come through. Please answer again.)"
    max_reprompts: int = 1
    duplicate_calls_across_turns: bool = True


class ModelWatchdog:
    """``manual_activity``: the session's automatic activity detection is off (the client
    marks turns with ``activityStart``/``activityEnd``)."""

    def __init__(self, config: WatchdogConfig | None = None, *, manual_activity: bool = False) -> None:
        self.config = config or WatchdogConfig()
        self.manual_activity = manual_activity
        self._activity_starts = 0  # the client's activityStarts, as of the last event
        self._activity_at_reply: int | None = None  # ... when the reply began
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
        self.reprompts_in_a_row = 0

    def user_turn_ended(self, now: float) -> None:
        if self._waiting_since is None:
            self._waiting_since = now

    def on_event(self, event: ev.Event, now: float, *, activity_starts: int = 0) -> list[ev.ModelFailure]:
        """Failures this event shows (``near_silent`` once per turn, as soon as knowable);
        ``activity_starts``: how many ``activityStart`` the client has sent so far."""
        self._activity_starts = activity_starts
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
            if self.manual_activity and self._activity_at_reply == activity_starts:
                self._turn_failed = True
                detail = "interrupted with automatic activity detection off and no activityStart since the reply began"
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
                self.reprompts_in_a_row = 0
            self._new_turn()
            return failures
        return []

    def check(self, now: float) -> list[ev.ModelFailure]:
        """Failures due by ``now`` (call it a few times a second)."""
        since = self._waiting_since
        if since is not None and now - since >= self.config.reply_timeout_s:
            self._waiting_since = None
            return [ev.ModelFailure(kind="no_reply", detail=f"no reply {now - since:.1f} s after the user's turn")]
        return []

    def _output(self) -> None:
        self._waiting_since = None
        if not self._turn_output:
            self._activity_at_reply = self._activity_starts
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

    def may_reprompt(self) -> bool:
        """Whether recovery may reprompt now (counts the reprompt when it may)."""
        if self.config.recovery != "reprompt" or self.reprompts_in_a_row >= self.config.max_reprompts:
            return False
        self.reprompts_in_a_row += 1
        return True

    def _new_turn(self) -> None:
        self._calls_last_turn, self._calls_this_turn = self._calls_this_turn, set()
        self._activity_at_reply = None
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
        rms = math.sqrt(float(audio @ audio) / len(audio))
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
