"""A phone call joined to a Live session: one call, one session, audio both ways.

The caller's 8 kHz μ-law goes to the session as 16 kHz PCM (:class:`G711Decoder`); the model's
24 kHz audio goes back as μ-law in 20 ms frames (:class:`G711Encoder`, anti-aliased), with a
mark after each chunk: Twilio echoes a mark once the audio before it has played, so the bridge
knows what the caller has actually heard. On the model's ``interrupted`` it sends ``clear`` at
once. Keypad digits reach the model as text. A hang-up closes the session; a session that ends
closes the call's stream with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import msgspec
import websockets

from geminilive import events as ev
from geminilive._websocket import WebSocket
from geminilive.protocol import INPUT_RATE_HZ
from geminilive.session import Session
from geminilive.telephony.g711 import G711Decoder, G711Encoder
from geminilive.telephony.twilio import (
    FRAME_BYTES,
    CallEnded,
    CallerAudio,
    CallStarted,
    Digit,
    MarkPlayed,
    TwilioProtocolError,
    TwilioStream,
)

__all__ = ["CallBridge", "CallStats"]

_log = logging.getLogger("geminilive.telephony")


class CallStats(msgspec.Struct, kw_only=True):
    """What happened on one call (times in ms of audio)."""

    stream_sid: str | None = None
    caller_audio_ms: float = 0.0
    model_audio_ms: float = 0.0
    heard_ms: float = 0.0  # model audio the caller's side confirmed played (marks echoed)
    marks_sent: int = 0
    marks_played: int = 0
    clears: int = 0
    digits: str = ""
    dropped_messages: int = 0
    unknown_events: int = 0
    ended_by: str = ""


class CallBridge:
    """Run one call on ``ws`` (a Twilio media stream) with the session ``open_session()``
    opens once the call has started (within ``start_timeout_s``, else the stream is closed)."""

    def __init__(
        self,
        ws: WebSocket,
        open_session: Callable[[], AbstractAsyncContextManager[Session]],
        *,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.ws = ws
        self.open_session = open_session
        self.start_timeout_s = start_timeout_s
        self.stream = TwilioStream()
        self.stats = CallStats()
        self._decoder = G711Decoder("mulaw", INPUT_RATE_HZ)
        self._encoder: G711Encoder | None = None
        self._encoder_rate = 0
        self._marks: deque[tuple[str, float]] = deque()  # sent, not yet played: (name, audio ms)
        self.started: CallStarted | None = None

    async def run(self) -> CallStats:
        """The whole call; returns its stats (``ended_by`` says why it ended)."""
        try:
            async with asyncio.timeout(self.start_timeout_s):
                while self.started is None:
                    self._handle(await self.ws.recv())
        except TimeoutError:
            self.stats.ended_by = "no start message"
            await self.ws.close(1008, "no start message")
            return self._finish()
        except websockets.exceptions.ConnectionClosed:
            self.stats.ended_by = "the stream closed before the call started"
            return self._finish()
        self.stats.stream_sid = self.started.stream_sid
        async with self.open_session() as session:
            tasks = [
                asyncio.create_task(self._caller_to_session(session)),
                asyncio.create_task(self._session_to_caller(session)),
            ]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.stats.ended_by = next(iter(done)).result()
        await self.ws.close(1000, self.stats.ended_by[:120])
        return self._finish()

    def _finish(self) -> CallStats:
        self.stats.dropped_messages = self.stream.dropped
        self.stats.unknown_events = self.stream.unknown_events
        return self.stats

    def _handle(self, frame: str | bytes) -> list:
        """The call events of one message; malformed ones are logged and dropped."""
        try:
            events = self.stream.receive(frame)
        except TwilioProtocolError as exc:
            _log.warning("dropped a malformed message from Twilio: %s", exc)
            return []
        for event in events:
            if isinstance(event, CallStarted):
                self.started = event
            elif isinstance(event, MarkPlayed):
                self._played(event.name)
        return events

    def _played(self, name: str) -> None:
        while self._marks:
            sent, audio_ms = self._marks.popleft()
            self.stats.marks_played += 1
            self.stats.heard_ms = audio_ms
            if sent == name:
                return

    async def _caller_to_session(self, session: Session) -> str:
        while True:
            try:
                frame = await self.ws.recv()
            except websockets.exceptions.ConnectionClosed:
                return "the caller's stream closed"
            for event in self._handle(frame):
                if isinstance(event, CallerAudio):
                    self.stats.caller_audio_ms += len(event.codes) / 8
                    await session.send_audio(self._decoder.process(event.codes), INPUT_RATE_HZ)
                elif isinstance(event, Digit):
                    self.stats.digits += event.digit
                    await session.send_text(f"(The caller pressed {event.digit} on the keypad.)")
                elif isinstance(event, CallEnded):
                    return event.reason

    async def _session_to_caller(self, session: Session) -> str:
        async for event in session:
            if isinstance(event, ev.AudioChunk):
                await self._play(self._encode(event.data, event.sample_rate_hz))
            elif isinstance(event, ev.Interrupted):
                await self._send(self.stream.clear())
                self.stats.clears += 1
                self._encoder = None  # what it held belongs to the cut-off reply
            elif isinstance(event, ev.TurnComplete) and self._encoder is not None:
                await self._play(self._encoder.flush())
        return "the session ended"

    def _encode(self, pcm: bytes, rate: int) -> bytes:
        if self._encoder is None or self._encoder_rate != rate:
            self._encoder, self._encoder_rate = G711Encoder("mulaw", rate), rate
        return self._encoder.process(pcm)

    async def _play(self, codes: bytes) -> None:
        """Send ``codes`` in 20 ms media messages, then a mark to learn when they played."""
        if not codes:
            return
        for start in range(0, len(codes), FRAME_BYTES):
            await self._send(self.stream.media(codes[start : start + FRAME_BYTES]))
        self.stats.model_audio_ms += len(codes) / 8
        name, message = self.stream.mark()
        self._marks.append((name, self.stats.model_audio_ms))
        self.stats.marks_sent += 1
        await self._send(message)

    async def _send(self, message: str) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self.ws.send(message)
