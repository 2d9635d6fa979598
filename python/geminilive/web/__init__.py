"""``geminilive web``: talk to the model (or the emulator) from a browser, through geminilive.

The page captures the microphone in an AudioWorklet and plays the reply through another;
the relay here joins them to a Live session (:class:`~geminilive.conversation.Conversation`),
so resampling, the playout buffer, barge-in, reconnects and the latency table are
geminilive's own, and the API key never reaches the browser. See :mod:`.server` and the
page's wire, :mod:`.wire`.
"""

from geminilive.web.server import WebServer

__all__ = ["WebServer"]
