"""One browser tab's conversation: the page's microphone as an audio source, its speaker as
an audio sink, and a :class:`~geminilive.conversation.Conversation` between them and a Live
session. The tab's WebSocket can drop and come back (the page reconnects with the same tab
id): the conversation, and the Live session under it, wait for it (``reattach_grace_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import numpy as np
import websockets

from geminilive import events as ev
from geminilive._native import f32_to_s16le, s16le_to_f32
from geminilive._websocket import WebSocket
from geminilive.audio_io import FRAME_MS, AudioFrame, CallbackSink
from geminilive.conversation import Conversation
from geminilive.protocol import INPUT_RATE_HZ
from geminilive.session import Session
from geminilive.watchdog import WatchdogConfig
from geminilive.web import wire

__all__ = ["BrowserSink", "BrowserSource", "Tab"]

_log = logging.getLogger("geminilive.web")

# Microphone audio held for a conversation that cannot take it yet (a Live session moving to
# a new connection takes it all once there): beyond this the oldest is dropped, and counted.
MAX_QUEUED_INPUT_S = 10.0


class BrowserSource:
    """The page's microphone: 16-bit PCM messages as :class:`AudioFrame`\\ s. Messages may
    split samples anywhere (an odd byte count carries to the next message), so how the
    page chunks its audio never changes what the model hears."""

    def __init__(self, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._carry = b""
        self._frames: deque[AudioFrame] = deque()
        self._max_frames = int(MAX_QUEUED_INPUT_S * 1000 / FRAME_MS)
        self._wake = asyncio.Event()
        self._ended = False
        self.dropped_frames = 0
        self.last_audio_at: float | None = None

    def feed(self, pcm: bytes) -> None:
        pcm = self._carry + pcm
        whole = len(pcm) & ~1
        self._carry = pcm[whole:]
        if not whole:
            return
        now = time.monotonic()
        self.last_audio_at = now
        if len(self._frames) >= self._max_frames:
            self._frames.popleft()
            self.dropped_frames += 1
        self._frames.append(AudioFrame(s16le_to_f32(pcm[:whole]), self.sample_rate_hz, now))
        self._wake.set()

    def end(self) -> None:
        """The page's audio has ended: what is queued still goes, then the stream ends."""
        self._ended = True
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[AudioFrame]:
        while True:
            while self._frames:
                yield self._frames.popleft()
            if self._ended:
                return
            self._wake.clear()
            await self._wake.wait()


class BrowserSink(CallbackSink):
    """The page's speaker. The model's audio plays out of a playout buffer here, on the
    server's clock, in 20 ms frames at the page's rate; the page only smooths the network's
    jitter, so a barge-in clears nearly everything at once, here, and ``clear`` tells the
    page to drop the little it holds. ``send(message, text)`` goes to the tab's current
    connection (or nowhere while it has none). Silent frames are not sent."""

    def __init__(self, output_rate_hz: int, send: Callable[[bytes, bool], None]) -> None:
        self._send = send
        super().__init__(self._play, output_rate_hz=output_rate_hz, period_ms=FRAME_MS)

    def _play(self, samples: np.ndarray) -> None:
        if samples.any():
            self._send(f32_to_s16le(samples), False)

    def clear(self) -> int:
        dropped = super().clear()
        self._send(wire.encode(wire.ClearPlayback()), True)
        return dropped


class Tab:
    """A tab's conversation: opened on its first ``hello``, handed each new connection of the
    same tab (:meth:`attach`), ended by :meth:`close` (the server does it when the tab has
    been gone for ``reattach_grace_s``, sent no audio for ``idle_timeout_s``, or the
    conversation ended)."""

    def __init__(
        self,
        client: str,
        sample_rate_hz: int,
        open_session: Callable[[], AbstractAsyncContextManager[Session]],
        *,
        backend: str,
        watchdog: WatchdogConfig | None = WatchdogConfig(),  # noqa: B008 (frozen: one is fine)
    ) -> None:
        self.client = client
        self.sample_rate_hz = sample_rate_hz
        self.backend = backend
        self.ws: WebSocket | None = None
        self.detached_at: float | None = time.monotonic()
        self.opened_at = time.monotonic()
        self.source = BrowserSource(sample_rate_hz)
        self.sink = BrowserSink(sample_rate_hz, self._send)
        self.dropped_output_frames = 0
        self._open_session = open_session
        self._watchdog = watchdog
        self._stack = contextlib.AsyncExitStack()
        self.session: Session | None = None
        self.conversation: Conversation | None = None
        self.ended: asyncio.Event = asyncio.Event()
        self.warned_no_audio = False
        self.stalled_since: float | None = None  # since when the page has not been reading

    async def open(self) -> None:
        """Open the Live session and start the conversation (raises what failed)."""
        self.session = await self._stack.enter_async_context(self._open_session())
        self.conversation = Conversation(
            self.session,
            source=self.source,
            sink=self.sink,
            on_event=self._on_event,
            on_transcript=self._on_transcript,
            watchdog=self._watchdog,
        )
        await self.conversation.start()

    def ready(self, *, reattached: bool) -> wire.Ready:
        assert self.session is not None
        setup = self.session.protocol.setup
        voice = None
        speech = setup.generation_config.speech_config if setup.generation_config else None
        if speech and speech.voice_config and speech.voice_config.prebuilt_voice_config:
            voice = speech.voice_config.prebuilt_voice_config.voice_name
        return wire.Ready(
            backend=self.backend,
            model=setup.model.removeprefix("models/"),
            input_rate=INPUT_RATE_HZ,
            output_rate=self.sample_rate_hz,
            reattached=reattached,
            voice=voice,
        )

    def attach(self, ws: WebSocket, *, reattached: bool) -> None:
        """``ws`` is the tab's connection from now on; one it had before is closed."""
        old, self.ws, self.detached_at = self.ws, ws, None
        if old is not None and old is not ws:
            old.start_close(wire.CLOSE_REPLACED, "this tab connected again")
        self.send_message(self.ready(reattached=reattached))
        if self.session is not None:
            self.send_message(self._connection_state("connected"))

    def detach(self, ws: WebSocket) -> None:
        if self.ws is ws:
            self.ws, self.detached_at = None, time.monotonic()

    def send_message(self, message: wire.Ready | wire.ClearPlayback | wire.Transcript | wire.TurnReport
                     | wire.ConnectionState | wire.Notice) -> None:  # fmt: skip
        self._send(wire.encode(message), True)

    def _send(self, data: bytes, text: bool) -> None:
        ws = self.ws
        if ws is None:
            if not text:
                self.dropped_output_frames += 1
            return
        if not text and ws.must_drain:  # a page that does not read: drop audio, not memory
            self.dropped_output_frames += 1
            return
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            ws.send_now(data, text=text)

    async def type_text(self, text: str) -> None:
        assert self.session is not None
        await self.session.send_client_content(text)

    async def wait(self) -> str:
        """Until the conversation ends by itself; what ended it."""
        assert self.conversation is not None
        try:
            await self.conversation.wait()
            return "the Live session ended"
        except Exception as exc:  # the session failed for good, or a loop failed
            return f"the Live session failed: {exc}"

    async def close(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        self.source.end()
        if self.conversation is not None:
            await self.conversation.stop()
        else:
            await self.sink.close()
        await self._stack.aclose()

    # --- conversation -> page ------------------------------------------------------------------

    def _connection_state(self, state: str, detail: str = "") -> wire.ConnectionState:
        stats = self.session.stats if self.session is not None else None
        return wire.ConnectionState(
            state=state,  # type: ignore[arg-type]
            reconnects=stats.reconnects if stats else 0,
            resumptions=stats.resumed if stats else 0,
            detail=detail,
        )

    def _on_transcript(self, who: str, text: str, finished: bool) -> None:
        self.send_message(wire.Transcript(who=who, text=text, finished=finished))  # type: ignore[arg-type]

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.TurnComplete):
            assert self.conversation is not None
            if self.conversation.metrics:
                turn = self.conversation.metrics[-1]
                self.send_message(wire.TurnReport(turn))
                # interrupted -> silence is measured as the playout empties: send it again then.
                asyncio.get_running_loop().call_later(0.6, lambda: self.send_message(wire.TurnReport(turn)))
        elif isinstance(event, ev.Reconnecting):
            why = f"{event.code} {event.reason}".strip() if event.code else event.reason
            self.send_message(self._connection_state("reconnecting", f"attempt {event.attempt}: {why}"))
        elif isinstance(event, ev.Resumed):
            detail = f"{event.replayed_messages} messages replayed after {event.downtime_s * 1000:.0f} ms"
            self.send_message(self._connection_state("resumed", detail))
        elif isinstance(event, ev.ResumptionFailed):
            self.send_message(self._connection_state("fresh", f"a new session: {event.reason}"))
        elif isinstance(event, ev.GoAway):
            left = f"{event.time_left_s:.0f} s left" if event.time_left_s is not None else ""
            self.send_message(self._connection_state("moving", f"the service asked to move (goAway) {left}".strip()))
        elif isinstance(event, ev.ModelFailure):
            recovery = f"; recovery: {event.recovery}" if event.recovery else ""
            self.send_message(wire.Notice(level="warning", message=f"the model failed: {event.kind}{recovery}"))
