"""geminilive inside the voice frameworks: :mod:`geminilive.integrations.pipecat` and
:mod:`geminilive.integrations.livekit`.

Each module imports its framework (an extra: ``pip install 'geminilive[pipecat]'``,
``'geminilive[livekit]'``); importing ``geminilive`` imports none of them.
"""

from __future__ import annotations

from geminilive.errors import SessionError
from geminilive.session import Session


def session_ended(session: Session) -> SessionError:
    """Why a session's events stopped without an error: the service closed it and it could
    not be resumed (a normal close, say). A framework is told, as of any other end."""
    code, reason = session.protocol.close_code, session.protocol.close_reason
    return SessionError(f"the Live session ended ({f'{code} {reason}'.strip()})", code=code, reason=reason)
