"""Typed events a live session produces, one frozen ``msgspec.Struct`` each."""

from __future__ import annotations

import msgspec

from geminilive.messages import FunctionCall, UsageMetadata

__all__ = [
    "AudioChunk",
    "ContextWindowWarning",
    "Event",
    "GenerationComplete",
    "GoAway",
    "GroundingMetadata",
    "HeardBeforeInterruption",
    "InputTranscription",
    "Interrupted",
    "MalformedMessage",
    "ModelFailure",
    "OutputTranscription",
    "Reconnecting",
    "Resumed",
    "ResumptionFailed",
    "SessionAgeWarning",
    "SessionResumptionUpdate",
    "SetupComplete",
    "TextChunk",
    "ToolCall",
    "ToolCallCancellation",
    "TurnComplete",
    "Usage",
    "VoiceActivity",
]


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of every event (immutable data, no cycles: not tracked by the garbage collector,
    which a busy session would otherwise make scan every chunk it receives)."""


class SetupComplete(Event, frozen=True):
    """The service accepted the setup; the session is open."""

    session_id: str | None = None


class AudioChunk(Event, frozen=True):
    """Model audio: 16-bit little-endian mono PCM."""

    data: bytes
    sample_rate_hz: int = 24000

    @property
    def duration_s(self) -> float:
        return len(self.data) / 2 / self.sample_rate_hz


class TextChunk(Event, frozen=True):
    """Model text (TEXT modality), or a thought summary when ``thought``."""

    text: str
    thought: bool = False


class InputTranscription(Event, frozen=True):
    """Transcript of the user's speech (a fragment unless ``finished``)."""

    text: str
    finished: bool = False


class OutputTranscription(Event, frozen=True):
    """Transcript of the model's speech (a fragment unless ``finished``)."""

    text: str
    finished: bool = False


class TurnComplete(Event, frozen=True):
    """The model's turn is over; ``reason`` is the service's turnCompleteReason, if any."""

    reason: str | None = None
    waiting_for_input: bool = False
    interrupted: bool = False


class Interrupted(Event, frozen=True):
    """User activity interrupted the model: stop and flush playback now."""


class GenerationComplete(Event, frozen=True):
    """The model finished generating (playback may still be running)."""


class GroundingMetadata(Event, frozen=True):
    metadata: dict


class ToolCall(Event, frozen=True):
    """The model asks for function results; answer with ``send_tool_response``."""

    function_calls: list[FunctionCall]


class ToolCallCancellation(Event, frozen=True):
    """These pending calls were cancelled (the turn was interrupted)."""

    ids: list[str]


class GoAway(Event, frozen=True):
    """The service will close this connection in ``time_left_s``; resume on a new one."""

    time_left_s: float | None


class SessionResumptionUpdate(Event, frozen=True):
    """A handle to resume this session on a new connection (when ``resumable``)."""

    handle: str | None
    resumable: bool
    last_consumed_client_message_index: int | None = None


class Usage(Event, frozen=True):
    usage: UsageMetadata


class ContextWindowWarning(Event, frozen=True):
    """The context the model reads each turn has reached 90% of the compression trigger:
    the service will soon compress it (older turns dropped) or, without compression, end the
    session at its limit."""

    prompt_tokens: int
    trigger_tokens: int


class VoiceActivity(Event, frozen=True):
    """The service's own voice activity signal (newer models)."""

    type: str | None
    audio_offset_s: float | None = None


class Reconnecting(Event, frozen=True):
    """The connection ended unexpectedly (``code``/``reason``, ``None`` for a network error);
    attempt number ``attempt`` to reconnect starts after ``delay_s``. Audio sent meanwhile is
    held (bounded) and goes out once connected."""

    attempt: int
    delay_s: float
    code: int | None = None
    reason: str = ""


class Resumed(Event, frozen=True):
    """The session goes on over a new connection, with its history. ``replayed_messages``
    were re-sent because the service had not consumed them; ``downtime_s`` is how long no
    connection was open (0 for a planned move after ``goAway``)."""

    replayed_messages: int
    downtime_s: float
    after_go_away: bool = False


class ResumptionFailed(Event, frozen=True):
    """The session was not resumed (``reason``: no handle yet, the service rejected it, or a
    fresh session was asked for: ``Session.restart(fresh=True)``) and a fresh one was started
    on the new connection: the model's own context is gone,
    but it was given the conversation so far as text (``seeded_turns`` turns, within the
    session's ``remember_chars``), and the audio held while reconnecting was sent after it."""

    reason: str
    replayed_messages: int = 0
    seeded_turns: int = 0


class MalformedMessage(Event, frozen=True):
    """A server frame that did not decode was dropped (counted in ``Session.stats``); the
    session goes on."""

    error: str


class ModelFailure(Event, frozen=True):
    """The model failed without an error (see :mod:`geminilive.watchdog`): ``kind`` is
    ``"no_reply"``, ``"rejected"``, ``"empty_turn"``, ``"cut_off"``, ``"near_silent"``,
    ``"tone"``, ``"spurious_interruption"`` or ``"duplicate_call"``; ``recovery`` is the step
    the conversation took (``"reprompt"``, ``"reconnect"``, ``"fresh"``) or None."""

    kind: str
    detail: str
    recovery: str | None = None


class HeardBeforeInterruption(Event, frozen=True):
    """The user interrupted the model: of its reply's output transcript, ``heard`` had played
    when playback stopped, ``not_heard`` had not (from a Conversation, which knows playout)."""

    heard: str
    not_heard: str


class SessionAgeWarning(Event, frozen=True):
    """The session has been running for ``age_s`` (``session_age_warning_s`` asked to be told)."""

    age_s: float
