"""What every provider's media stream has in common: the call events a wire's ``receive``
gives (:class:`CallStarted`, :class:`CallerAudio`, :class:`MarkPlayed`, :class:`Digit`,
:class:`CallEnded`), and the :class:`CallWire` interface the call bridge drives. Each
provider's wire is a pure state machine (frames in, events out; frames to send built on
request): :mod:`geminilive.telephony.twilio`, :mod:`geminilive.telephony.vonage`.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from geminilive.errors import GeminiLiveError

__all__ = [
    "CallEnded",
    "CallEvent",
    "CallProtocolError",
    "CallStarted",
    "CallWire",
    "CallerAudio",
    "Digit",
    "Encoding",
    "MarkPlayed",
]

Encoding = Literal["mulaw", "l16"]


class CallProtocolError(GeminiLiveError, ValueError):
    """A message the provider would not send (not JSON, a field of the wrong type, audio of
    the wrong shape). The call goes on; the message is dropped and counted."""


class CallStarted(msgspec.Struct, frozen=True):
    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str]


class CallerAudio(msgspec.Struct, frozen=True):
    """The caller's audio as the wire carries it (``CallWire.encoding`` at ``rate_hz``)."""

    codes: bytes


class MarkPlayed(msgspec.Struct, frozen=True):
    """The provider played everything sent before the mark of this name."""

    name: str


class Digit(msgspec.Struct, frozen=True):
    digit: str


class CallEnded(msgspec.Struct, frozen=True):
    reason: str


CallEvent = CallStarted | CallerAudio | MarkPlayed | Digit | CallEnded

DTMF_DIGITS = "0123456789*#ABCD"


class CallWire(Protocol):
    """One call's media stream as the bridge sees it. ``encoding``/``rate_hz`` describe the
    audio both ways (known once the call started); ``frame_bytes`` is 20 ms of it;
    ``silence`` one silent byte pair's worth (to pad a last frame)."""

    provider: str
    encoding: Encoding
    rate_hz: int
    dropped: int
    unknown_events: int

    @property
    def frame_bytes(self) -> int: ...

    @property
    def silence(self) -> bytes: ...

    def receive(self, frame: str | bytes) -> list[CallEvent]: ...

    def media(self, frame: bytes) -> str | bytes: ...

    def mark(self) -> tuple[str, str]: ...

    def clear(self) -> str: ...
