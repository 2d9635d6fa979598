"""Vonage's Voice API WebSocket (an NCCO ``connect`` to a ``websocket`` endpoint), as a pure
state machine: frames in (:meth:`VonageStream.receive`), typed call events out, and the frames
to send built by :meth:`~VonageStream.media`, :meth:`~VonageStream.mark` and
:meth:`~VonageStream.clear`. No sockets: :mod:`geminilive.telephony.bridge` drives it.

From Vonage's WebSocket documentation: the first message is text, ``{"event":
"websocket:connected", "content-type": "audio/l16;rate=16000", ...}`` with the endpoint's
``headers`` at the top level; audio then comes both ways as *binary* messages of 16-bit
little-endian linear PCM, 20 ms each (640 bytes at 16 kHz, 320 at 8 kHz; what is sent must be
exactly that size); text events are ``websocket:dtmf`` (``digit``), ``websocket:notify`` (the
``payload`` of a ``notify`` we sent, once the audio queued before it has played) and
``websocket:cleared``. Out go ``{"action": "notify", "payload": ...}`` and ``{"action":
"clear"}`` (drop the queued audio). The call ends when Vonage closes the WebSocket.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

from geminilive.telephony.wire import (
    DTMF_DIGITS,
    CallerAudio,
    CallEvent,
    CallProtocolError,
    CallStarted,
    Digit,
    Encoding,
    MarkPlayed,
)

__all__ = ["VonageProtocolError", "VonageStream", "ncco"]

RATES_HZ = (8000, 16000)
# Vonage sends 20 ms a message; a few of them in one is still plausible, a second is not.
MAX_AUDIO_BYTES = 50 * 640
_CONTENT_TYPE = re.compile(r"^audio/l16;\s*rate=(\d+)$", re.IGNORECASE)


class VonageProtocolError(CallProtocolError):
    """A message Vonage would not send: text that is not a JSON object with an ``event``,
    audio before ``websocket:connected`` or of an odd byte count, a format this bridge does
    not take. The call goes on; the message is dropped and counted."""


class State(enum.Enum):
    CONNECTING = "connecting"  # no websocket:connected yet
    STREAMING = "streaming"


def ncco(stream_url: str, *, rate_hz: int = 16000) -> list[dict[str, Any]]:
    """The answer to Vonage's answer webhook: connect the call to the WebSocket at
    ``stream_url`` (``wss://``), 16-bit linear PCM at ``rate_hz`` both ways."""
    if rate_hz not in RATES_HZ:
        raise ValueError(f"Vonage streams at 8000 or 16000 Hz, not {rate_hz}")
    endpoint = {"type": "websocket", "uri": stream_url, "content-type": f"audio/l16;rate={rate_hz}"}
    return [{"action": "connect", "endpoint": [endpoint]}]


class VonageStream:
    """One call's WebSocket (a :class:`~geminilive.telephony.wire.CallWire`). ``dropped``
    counts messages dropped as malformed or out of place, ``unknown_events`` text events this
    does not know (Vonage may add some)."""

    provider = "vonage"
    encoding: Encoding = "l16"
    silence = b"\x00"

    def __init__(self) -> None:
        self.state = State.CONNECTING
        self.rate_hz = 16000
        self.dropped = 0
        self.unknown_events = 0
        self.marks_sent = 0

    @property
    def frame_bytes(self) -> int:
        return self.rate_hz // 50 * 2

    def receive(self, frame: str | bytes) -> list[CallEvent]:
        """Events of one message from Vonage. Raises :class:`VonageProtocolError` for a
        malformed one (after counting it)."""
        try:
            return self._receive(frame)
        except VonageProtocolError:
            self.dropped += 1
            raise

    def _receive(self, frame: str | bytes) -> list[CallEvent]:
        if isinstance(frame, bytes):
            if self.state is not State.STREAMING:
                raise VonageProtocolError("audio before websocket:connected")
            if not frame or len(frame) % 2 or len(frame) > MAX_AUDIO_BYTES:
                raise VonageProtocolError(f"an audio message of {len(frame)} bytes (16-bit samples, 20 ms a message)")
            return [CallerAudio(frame)]
        try:
            message = json.loads(frame)
        except ValueError as exc:
            raise VonageProtocolError(f"not JSON: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise VonageProtocolError("a text message without an event name")
        event = message["event"]
        if event == "websocket:connected":
            return self._connected(message)
        if self.state is not State.STREAMING:
            self.dropped += 1  # before the call's start: nothing to attach it to
            return []
        if event == "websocket:dtmf":
            digit = message.get("digit")
            if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
                raise VonageProtocolError(f"not a DTMF digit: {digit!r}")
            return [Digit(digit)]
        if event == "websocket:notify":
            payload = message.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str):
                raise VonageProtocolError("a notify without the name we gave it")
            return [MarkPlayed(name)]
        if event == "websocket:cleared":
            return []
        self.unknown_events += 1
        return []

    def _connected(self, message: dict[str, Any]) -> list[CallEvent]:
        if self.state is State.STREAMING:
            self.dropped += 1
            return []
        content_type = message.get("content-type")
        match = _CONTENT_TYPE.match(content_type) if isinstance(content_type, str) else None
        if match is None or int(match.group(1)) not in RATES_HZ:
            raise VonageProtocolError(f"content-type {content_type!r}: this bridge takes audio/l16 at 8000 or 16000 Hz")
        self.rate_hz = int(match.group(1))
        self.state = State.STREAMING
        headers = {str(k): str(v) for k, v in message.items() if k not in ("event", "content-type")}
        return [CallStarted(headers.get("uuid", ""), headers.get("conversation_uuid", ""), headers)]

    # --- to Vonage -----------------------------------------------------------------------------

    def media(self, frame: bytes) -> bytes:
        """20 ms of audio to play (``frame_bytes`` of 16-bit PCM at ``rate_hz``)."""
        if len(frame) != self.frame_bytes:
            raise VonageProtocolError(f"Vonage plays {self.frame_bytes}-byte messages, not {len(frame)}")
        return frame

    def mark(self) -> tuple[str, str]:
        """A ``notify`` after what was sent so far: (its name, the message); Vonage sends it
        back once that audio has played."""
        self.marks_sent += 1
        name = f"m{self.marks_sent}"
        return name, json.dumps({"action": "notify", "payload": {"name": name}})

    def clear(self) -> str:
        """Drop the audio Vonage holds for the caller (barge-in)."""
        return json.dumps({"action": "clear"})
