"""The exceptions geminilive raises.

Every error derives from :class:`GeminiLiveError`; errors about bad input also derive from
the builtin that fits (``ValueError``), so ``except ValueError`` keeps working::

    GeminiLiveError
    ├── AudioFormatError (ValueError)      PCM with odd bytes, a wrong dtype, a bad rate
    ├── BufferFullError                    a playout push that does not fit (nothing written)
    ├── AudioDeviceError                   no such device, unsupported format, device gone
    ├── ProtocolError
    │   ├── LocalProtocolError             we were asked to send something out of order
    │   └── RemoteProtocolError            the peer sent something malformed or out of order
    ├── InsecureTransportError (ValueError) plain ws:// to a host that is not this machine
    ├── SessionError                       the service reported an error or closed the socket
    │   ├── SetupTimeoutError (TimeoutError) no setupComplete in time
    │   ├── ConnectionClosedOK             closed normally (1000)
    │   └── ConnectionClosedError          closed with an error code
    │       ├── InvalidArgumentError       1007: a bad setup or message
    │       ├── PolicyViolationError       1008: auth, quota, unsupported feature
    │       └── InternalServerError        1011: the service failed
    └── MessageTooLargeError (ValueError)  a frame over the size limit
"""

from __future__ import annotations

__all__ = [
    "AudioDeviceError",
    "AudioFormatError",
    "BufferFullError",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "GeminiLiveError",
    "InsecureTransportError",
    "InternalServerError",
    "InvalidArgumentError",
    "LocalProtocolError",
    "MessageTooLargeError",
    "PolicyViolationError",
    "ProtocolError",
    "RemoteProtocolError",
    "SessionError",
    "SetupTimeoutError",
    "closed_error",
]


class GeminiLiveError(Exception):
    """Base of every geminilive error."""


class AudioFormatError(GeminiLiveError, ValueError):
    """Audio that cannot be interpreted: odd byte count, wrong dtype, layout or rate."""


class BufferFullError(GeminiLiveError):
    """A playout push did not fit; nothing was written. Wait for playback, then retry."""


class AudioDeviceError(GeminiLiveError):
    """An audio device could not be opened or failed while running."""


class ProtocolError(GeminiLiveError):
    """A Live protocol rule was broken."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol does not allow now."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a malformed or out-of-order message."""


class MessageTooLargeError(GeminiLiveError, ValueError):
    """A message exceeds the frame size limit."""


class SessionError(GeminiLiveError):
    """The session ended or the service reported an error."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class SetupTimeoutError(SessionError, TimeoutError):
    """The server accepted the connection but did not answer ``setup`` in time."""


class InsecureTransportError(GeminiLiveError, ValueError):
    """A plain ``ws://`` URL to a host that is not this machine (credentials and audio would
    cross the network unencrypted); pass ``allow_insecure=True`` to insist."""


class ConnectionClosedOK(SessionError):
    """The connection closed normally."""


class ConnectionClosedError(SessionError):
    """The connection closed with an error code."""


class InvalidArgumentError(ConnectionClosedError):
    """Close code 1007: the service rejected a message or the setup."""


class PolicyViolationError(ConnectionClosedError):
    """Close code 1008: authentication, quota, or a feature the model does not allow."""


class InternalServerError(ConnectionClosedError):
    """Close code 1011: the service failed (often transient; reconnect or resume)."""


_BY_CODE: dict[int, type[ConnectionClosedError]] = {
    1007: InvalidArgumentError,
    1008: PolicyViolationError,
    1011: InternalServerError,
}


def closed_error(code: int | None, reason: str) -> SessionError:
    """The typed exception for a WebSocket close with ``code`` and ``reason``."""
    if code in (1000, 1001):
        return ConnectionClosedOK(f"connection closed ({code}) {reason}".strip(), code=code, reason=reason)
    cls = _BY_CODE.get(code or 0, ConnectionClosedError)
    return cls(f"connection closed with code {code}: {reason}", code=code, reason=reason)
