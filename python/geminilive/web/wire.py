"""The relay's wire between the page and ``geminilive web``: what each side sends.

One WebSocket per tab, at ``/relay``. Binary messages carry audio: mono 16-bit little-endian
PCM, the page's microphone at its own rate going up, the model's voice at the page's rate
coming down (resampled by geminilive, paced by its playout buffer). Text messages are JSON
objects with a ``type``:

page -> relay: ``hello`` (first, once: the tab's id and its audio rate), ``text`` (a typed
message to the model); or, in direct mode, ``token`` alone (answered with a ``token``: an
ephemeral token, and the page talks to the Live API itself).

relay -> page: ``ready`` (the conversation is on; ``reattached`` when a tab that lost its
connection got its conversation back), ``clear`` (barge-in: drop what is queued to play, now),
``transcript``, ``turn`` (one turn's latency; a turn may come again as late measurements
land), ``state`` (the Live session's connection: reconnects, resumptions), ``notice`` (what
the user should know: a warning, or the error that ends the conversation, also given as the
close reason).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from geminilive.conversation import TurnMetrics

__all__ = [
    "CLOSE_BUSY",
    "CLOSE_IDLE",
    "CLOSE_REPLACED",
    "MAX_AUDIO_MESSAGE_BYTES",
    "ClearPlayback",
    "ConnectionState",
    "Hello",
    "Notice",
    "Ready",
    "Token",
    "TokenRequest",
    "Transcript",
    "TurnReport",
    "TypedText",
    "decode_page_message",
    "encode",
]

# Close codes the page does not retry after (it says why).
CLOSE_BUSY = 4409  # another tab has the conversation
CLOSE_IDLE = 4408  # no audio for too long: the conversation was closed
CLOSE_REPLACED = 4001  # this tab connected again: its older connection is closed

# A second of 16-bit audio at 192 kHz; the page sends 20 ms at a time.
MAX_AUDIO_MESSAGE_BYTES = 384_000
MAX_TEXT_CHARS = 4000

ClientId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
SampleRate = Annotated[int, msgspec.Meta(ge=8000, le=192000)]


class Hello(msgspec.Struct, tag="hello", tag_field="type", rename="camel"):
    """The page's first message: which tab it is (kept across its reconnects) and the rate
    of the audio it sends and wants back (its AudioContext's)."""

    client: ClientId
    sample_rate: SampleRate


class TypedText(msgspec.Struct, tag="text", tag_field="type"):
    """A message typed on the page, sent to the model as a user turn."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]


class TokenRequest(msgspec.Struct, tag="token", tag_field="type"):
    """Direct mode (``geminilive web --direct``): the page asks for an ephemeral token, to
    connect to the Live API itself (the first and only message of such a connection)."""


_page_decoder = msgspec.json.Decoder(Hello | TypedText | TokenRequest)


def decode_page_message(data: bytes) -> Hello | TypedText | TokenRequest:
    """A text message from the page; ``msgspec.ValidationError`` or ``DecodeError`` (both
    ``msgspec.MsgspecError``) say what is wrong with one that is not well formed."""
    return _page_decoder.decode(data)


class Ready(msgspec.Struct, tag="ready", tag_field="type", rename="camel"):
    backend: str  # "emulator" or "Gemini Live API"
    model: str
    input_rate: int  # what the model hears (geminilive resamples the page's audio to it)
    output_rate: int  # the rate of the audio sent to the page (its own)
    reattached: bool = False
    voice: str | None = None


class ClearPlayback(msgspec.Struct, tag="clear", tag_field="type"):
    """Barge-in: the model was interrupted; what the page holds must not play."""


class Transcript(msgspec.Struct, tag="transcript", tag_field="type"):
    who: Literal["user", "model"]
    text: str
    finished: bool = False


class TurnReport(msgspec.Struct, tag="turn", tag_field="type"):
    metrics: TurnMetrics


class ConnectionState(msgspec.Struct, tag="state", tag_field="type"):
    """The Live session's connection, as the page shows it."""

    state: Literal["connected", "reconnecting", "resumed", "fresh", "moving"]
    reconnects: int = 0
    resumptions: int = 0
    detail: str = ""


class Token(msgspec.Struct, tag="token", tag_field="type", rename="camel"):
    """An ephemeral token for the page: where to connect with it, and the setup to send (the
    token locks it)."""

    token: str
    url: str
    setup: dict
    backend: str
    expire_time: str | None = None


class Notice(msgspec.Struct, tag="notice", tag_field="type"):
    level: Literal["info", "warning", "error"]
    message: str


_encoder = msgspec.json.Encoder()


def encode(message: Ready | ClearPlayback | Transcript | TurnReport | ConnectionState | Notice | Token) -> bytes:
    return _encoder.encode(message)
