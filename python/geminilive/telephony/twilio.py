"""Twilio Media Streams, the wire of a bidirectional ``<Connect><Stream>``, as a pure state
machine: text frames in (:meth:`TwilioStream.receive`), typed call events out, and the frames
to send built by :meth:`TwilioStream.media`, :meth:`~TwilioStream.mark` and
:meth:`~TwilioStream.clear`. No sockets: :mod:`geminilive.telephony.bridge` drives it.

From Twilio's Media Streams documentation: the messages in are ``connected``, ``start``
(``streamSid``, ``callSid``, ``customParameters``, the media format: ``audio/x-mulaw`` at 8000
Hz, mono), ``media`` (base64 μ-law in ``media.payload``), ``mark`` (a mark we sent, echoed when
the audio before it has played), ``dtmf`` (``dtmf.digit``) and ``stop``; out go ``media``,
``mark`` and ``clear`` (drop the audio Twilio still holds), each naming the ``streamSid``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from typing import Any

import msgspec

from geminilive._native import audio_frame
from geminilive.telephony.wire import (
    DTMF_DIGITS,
    CallEnded,
    CallerAudio,
    CallEvent,
    CallProtocolError,
    CallStarted,
    Digit,
    Encoding,
    MarkPlayed,
)

__all__ = [
    "CallEnded",
    "CallStarted",
    "CallerAudio",
    "Digit",
    "MarkPlayed",
    "TwilioProtocolError",
    "TwilioStream",
]

# A 20 ms frame of 8 kHz μ-law, what Twilio sends; much more in one message is not Twilio.
FRAME_BYTES = 160
MAX_PAYLOAD_BYTES = 64 * FRAME_BYTES


class TwilioProtocolError(CallProtocolError):
    """A message Twilio would not send: not JSON, a field of the wrong type, audio that is not
    base64 μ-law. The call goes on; the message is dropped and counted."""


class _Media(msgspec.Struct):
    payload: bytes  # base64 in the JSON, decoded by msgspec (strictly: bad base64 fails)
    track: str = "inbound"


class _Mark(msgspec.Struct):
    name: str


class _Event(msgspec.Struct):
    """Every message's event name, a media message's audio and a mark's echo: what every
    call's 50 and more messages a second are, decoded in one pass. Anything this does not
    fit (other events, malformed messages) is read by the general path, which says what is
    wrong."""

    event: str
    media: _Media | None = None
    mark: _Mark | None = None


_events = msgspec.json.Decoder(_Event)


class State(enum.Enum):
    CONNECTED = "connected"  # no start yet
    STREAMING = "streaming"
    STOPPED = "stopped"


class TwilioStream:
    """One call's media stream (a :class:`~geminilive.telephony.wire.CallWire`). ``dropped``
    counts messages dropped as malformed or out of place (``unknown_events`` those of events
    this does not know, which Twilio may add)."""

    provider = "twilio"
    encoding: Encoding = "mulaw"
    rate_hz = 8000
    frame_bytes = FRAME_BYTES
    silence = b"\xff"  # μ-law's zero

    def __init__(self) -> None:
        self.state = State.CONNECTED
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.dropped = 0
        self.unknown_events = 0
        self.marks_sent = 0
        self._media_prefix: bytes | None = None  # a media message up to its payload, once started
        self._sid_json = ""

    def receive(self, frame: str | bytes) -> list[CallEvent]:
        """Events of one message from Twilio. Raises :class:`TwilioProtocolError` for a
        malformed one (after counting it); messages out of place give no events."""
        try:
            return self._receive(frame)
        except TwilioProtocolError:
            self.dropped += 1
            raise

    def _receive(self, frame: str | bytes) -> list[CallEvent]:
        try:
            head = _events.decode(frame)
        except msgspec.DecodeError:
            pass  # (the general path below says what is wrong)
        else:
            media = head.media
            if head.event == "media" and media is not None and self.state is State.STREAMING:
                if media.track != "inbound":
                    return []
                if not media.payload or len(media.payload) > MAX_PAYLOAD_BYTES:
                    raise TwilioProtocolError(f"a media payload of {len(media.payload)} bytes")
                return [CallerAudio(media.payload)]
            if head.event == "mark" and head.mark is not None and self.state is State.STREAMING:
                return [MarkPlayed(head.mark.name)]
        try:
            message = json.loads(frame)
        except (ValueError, UnicodeDecodeError) as exc:
            raise TwilioProtocolError(f"not JSON: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise TwilioProtocolError("a message without an event name")
        event = message["event"]
        if self.state is State.STOPPED:
            self.dropped += 1
            return []
        if event == "connected":
            return []
        if event == "start":
            return self._start(message)
        if event in ("media", "mark", "dtmf", "stop") and self.state is not State.STREAMING:
            self.dropped += 1  # before start: nothing to attach it to
            return []
        if event == "media":
            media = _field(message, "media", dict)
            if media.get("track", "inbound") != "inbound":
                return []
            payload = _field(media, "payload", str)
            try:
                codes = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise TwilioProtocolError("media payload is not base64") from None
            if not codes or len(codes) > MAX_PAYLOAD_BYTES:
                raise TwilioProtocolError(f"a media payload of {len(codes)} bytes")
            return [CallerAudio(codes)]
        if event == "mark":
            return [MarkPlayed(_field(_field(message, "mark", dict), "name", str))]
        if event == "dtmf":
            digit = _field(_field(message, "dtmf", dict), "digit", str)
            if len(digit) != 1 or digit not in DTMF_DIGITS:
                raise TwilioProtocolError(f"not a DTMF digit: {digit!r}")
            return [Digit(digit)]
        if event == "stop":
            self.state = State.STOPPED
            return [CallEnded("the caller hung up")]
        self.unknown_events += 1
        return []

    def _start(self, message: dict[str, Any]) -> list[CallEvent]:
        if self.state is not State.CONNECTED:
            self.dropped += 1
            return []
        start = _field(message, "start", dict)
        media_format = start.get("mediaFormat") or {}
        encoding = media_format.get("encoding", "audio/x-mulaw")
        if encoding != "audio/x-mulaw" or media_format.get("sampleRate", 8000) != 8000:
            raise TwilioProtocolError(f"media format {media_format!r}: this bridge takes audio/x-mulaw at 8000 Hz")
        sid = message.get("streamSid") or start.get("streamSid")
        if not isinstance(sid, str) or not sid:
            raise TwilioProtocolError("start without a streamSid")
        parameters = start.get("customParameters") or {}
        if not isinstance(parameters, dict):
            raise TwilioProtocolError("customParameters is not an object")
        self.state = State.STREAMING
        self.stream_sid = sid
        self._sid_json = json.dumps(sid)
        self._media_prefix = b'{"event":"media","streamSid":' + self._sid_json.encode() + b',"media":{"payload":"'
        self.call_sid = str(start.get("callSid") or "")
        return [CallStarted(sid, self.call_sid, {str(k): str(v) for k, v in parameters.items()})]

    # --- to Twilio -----------------------------------------------------------------------------

    def _message(self, event: str, **fields: Any) -> str:
        if self.stream_sid is None:
            raise TwilioProtocolError(f"no stream to send {event} to before start")
        return json.dumps({"event": event, "streamSid": self.stream_sid, **fields})

    def media(self, codes: bytes) -> str:
        """Audio to play to the caller (8 kHz μ-law): the message built and base64 encoded in
        one pass. (A text message, as all of Twilio's are.)"""
        if self._media_prefix is None:
            raise TwilioProtocolError("no stream to send media to before start")
        return audio_frame(self._media_prefix, codes, b'"}}').decode("ascii")

    def mark(self) -> tuple[str, str]:
        """A mark after what was sent so far: (its name, the message). Twilio echoes it once
        that audio has played (or at once, after a ``clear``)."""
        if self.stream_sid is None:
            raise TwilioProtocolError("no stream to send mark to before start")
        self.marks_sent += 1
        name = f"m{self.marks_sent}"
        return name, f'{{"event":"mark","streamSid":{self._sid_json},"mark":{{"name":"{name}"}}}}'

    def clear(self) -> str:
        """Drop the audio Twilio holds for the caller (barge-in)."""
        return self._message("clear")


def _field(container: dict[str, Any], name: str, kind: type) -> Any:
    value = container.get(name)
    if not isinstance(value, kind):
        raise TwilioProtocolError(f"{name!r} is missing or not a {kind.__name__}")
    return value
