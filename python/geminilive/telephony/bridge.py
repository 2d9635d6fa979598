"""A phone call joined to a Live session: one call, one session, audio both ways.

The caller's 8 kHz μ-law goes to the session as 16 kHz PCM (:class:`G711Decoder`); the model's
24 kHz audio goes back as μ-law in 20 ms frames (:class:`G711Encoder`, anti-aliased), with a
mark after each chunk: Twilio echoes a mark once the audio before it has played (and at once
for marks still queued at a ``clear``: those did not play), so the bridge knows what the caller
has actually heard. On the model's ``interrupted`` it sends ``clear`` at once and splits the
turn's output transcript into what the caller heard and what not (``CallStats.turns``; with
``tell_model_cut_off`` the model is told). Keypad digits reach the model as text. A hang-up
closes the session; a session that ends or fails closes the call's stream with the reason.
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
from geminilive.conversation import cut_off_note
from geminilive.errors import GeminiLiveError
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

__all__ = ["CallBridge", "CallStats", "CallTurn"]

_log = logging.getLogger("geminilive.telephony")


class CallTurn(msgspec.Struct, kw_only=True):
    """One model turn on the phone (times in ms of audio). ``heard_ms`` is what the caller's
    side confirmed played (marks echoed); on an interrupted turn the output transcript is
    split there: ``heard_transcript`` played, ``unheard_transcript`` was cleared."""

    turn: int
    audio_ms: float = 0.0
    heard_ms: float = 0.0
    interrupted: bool = False
    transcript: str = ""
    heard_transcript: str = ""
    unheard_transcript: str = ""


class CallStats(msgspec.Struct, kw_only=True):
    """What happened on one call (times in ms of audio)."""

    stream_sid: str | None = None
    caller_audio_ms: float = 0.0
    model_audio_ms: float = 0.0
    heard_ms: float = 0.0  # model audio the caller's side confirmed played (marks echoed)
    marks_sent: int = 0
    marks_played: int = 0
    marks_cleared: int = 0  # queued at Twilio when a clear dropped what they marked
    clears: int = 0
    digits: str = ""
    turns: list[CallTurn] = msgspec.field(default_factory=list)
    dropped_messages: int = 0
    unknown_events: int = 0
    ended_by: str = ""


class CallBridge:
    """Run one call on ``ws`` (a Twilio media stream) with the session ``open_session()``
    opens once the call has started (within ``start_timeout_s``, else the stream is closed).
    ``tell_model_cut_off``: when the caller interrupts, tell the model (as context) what of
    its reply they heard."""

    def __init__(
        self,
        ws: WebSocket,
        open_session: Callable[[], AbstractAsyncContextManager[Session]],
        *,
        start_timeout_s: float = 10.0,
        tell_model_cut_off: bool = False,
    ) -> None:
        self.ws = ws
        self.open_session = open_session
        self.start_timeout_s = start_timeout_s
        self.tell_model_cut_off = tell_model_cut_off
        self.stream = TwilioStream()
        self.stats = CallStats()
        self._decoder = G711Decoder("mulaw", INPUT_RATE_HZ)
        self._encoder: G711Encoder | None = None
        self._encoder_rate = 0
        # Sent, not yet played: (name, model audio ms up to it, its turn, where that began).
        self._marks: deque[tuple[str, float, CallTurn, float]] = deque()
        self._cleared: set[str] = set()  # marks a clear dropped: their echoes mean nothing played
        self._turn = CallTurn(turn=0)
        self._turn_start_ms = 0.0  # model audio sent before this turn
        self._said: list[tuple[float, str]] = []  # this turn's output transcript, by audio sent
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
        code = 1000
        try:
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
        except GeminiLiveError as exc:  # the session could not open, or failed: end the call
            _log.warning("the call's session failed: %s", exc)
            self.stats.ended_by, code = f"the session failed: {exc}", 1011
        await self.ws.close(code, self.stats.ended_by[:120])
        return self._finish()

    def _finish(self) -> CallStats:
        if self._turn.audio_ms or self._turn.transcript:  # a turn the call's end cut short
            self._end_turn()
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
        """A mark came back: the audio before it played (unless a clear dropped it)."""
        if name in self._cleared:
            self._cleared.discard(name)
            return
        while self._marks:
            sent, audio_ms, turn, turn_start_ms = self._marks.popleft()
            self.stats.marks_played += 1
            self.stats.heard_ms = audio_ms
            turn.heard_ms = audio_ms - turn_start_ms
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
                await self._cut_off(session)
            elif isinstance(event, ev.OutputTranscription):
                self._turn.transcript += event.text
                self._said.append((self.stats.model_audio_ms, event.text))
            elif isinstance(event, ev.TurnComplete):
                if self._encoder is not None:
                    await self._play(self._encoder.flush())
                self._end_turn()
        return "the session ended"

    async def _cut_off(self, session: Session) -> None:
        """The caller interrupted: what is queued at Twilio will not play (its marks come back
        at once), so the turn's transcript splits where the last mark that played was."""
        for name, *_ in self._marks:
            self._cleared.add(name)
        self.stats.marks_cleared += len(self._marks)
        self._marks.clear()
        heard_until = self.stats.heard_ms
        turn = self._turn
        turn.interrupted = True
        turn.heard_transcript = "".join(text for sent, text in self._said if sent <= heard_until)
        turn.unheard_transcript = "".join(text for sent, text in self._said if sent > heard_until)
        if self.tell_model_cut_off and turn.unheard_transcript.strip():
            await session.send_client_content(cut_off_note(turn.heard_transcript), turn_complete=False)

    def _end_turn(self) -> None:
        self.stats.turns.append(self._turn)
        self._turn = CallTurn(turn=len(self.stats.turns))
        self._turn_start_ms = self.stats.model_audio_ms
        self._said.clear()

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
        self._turn.audio_ms += len(codes) / 8
        name, message = self.stream.mark()
        self._marks.append((name, self.stats.model_audio_ms, self._turn, self._turn_start_ms))
        self.stats.marks_sent += 1
        await self._send(message)

    async def _send(self, message: str) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self.ws.send(message)
