"""A phone call joined to a Live session: one call, one session, audio both ways, over any
provider's wire (:class:`~geminilive.telephony.wire.CallWire`: Twilio, Vonage).

The caller's audio goes to the session as 16 kHz PCM (8 kHz μ-law through
:class:`G711Decoder`, 16-bit linear PCM through the resampler); the model's 24 kHz audio goes
back in the wire's format, in whole 20 ms frames (:class:`G711Encoder`, anti-aliased, or the
resampler), with a mark after each chunk: the provider echoes a mark once the audio before it
has played (Twilio also at once for marks still queued at a ``clear``: those did not play), so
the bridge knows what the caller has actually heard. On the model's ``interrupted`` it sends
``clear`` at once and splits the turn's output transcript into what the caller heard and what
not (``CallStats.turns``; with ``tell_model_cut_off`` the model is told). Keypad digits
reach the model as text. A hang-up closes the session; a session that ends or fails closes
the call's stream with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import NamedTuple

import msgspec
import websockets

from geminilive import events as ev
from geminilive._native import Resampler, VoiceActivityDetector, f32_to_s16le, s16le_to_f32
from geminilive._websocket import BinaryMessage, WebSocket
from geminilive.conversation import cut_off_note
from geminilive.errors import GeminiLiveError
from geminilive.protocol import INPUT_RATE_HZ
from geminilive.session import Session
from geminilive.telephony.g711 import G711Decoder, G711Encoder
from geminilive.telephony.twilio import TwilioStream
from geminilive.telephony.wire import (
    CallEnded,
    CallerAudio,
    CallEvent,
    CallProtocolError,
    CallStarted,
    CallWire,
    Digit,
    MarkPlayed,
)

__all__ = ["CallBridge", "CallStats", "CallTurn"]

_log = logging.getLogger("geminilive.telephony")
_DRAIN = object()  # in what _take_now leaves to the task: wait for the session's socket first


class _Raise(NamedTuple):
    """In what _take_now leaves to the task: what it raised."""

    error: Exception


class CallTurn(msgspec.Struct, kw_only=True):
    """One model turn on the phone (times in ms of audio). ``heard_ms`` is what the caller's
    side confirmed played (marks echoed); on an interrupted turn the output transcript is
    split there: ``heard_transcript`` played, ``unheard_transcript`` was cleared."""

    turn: int
    # From the end of the caller's speech (the bridge's own voice activity detector) to the
    # turn's first audio sent to the provider.
    reply_latency_ms: float | None = None
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
    # Reply frames sent after they were due to play (the caller heard a gap mid-turn).
    frames_late: int = 0
    reconnects: int = 0  # the Live session's moves to a new connection
    digits: str = ""
    turns: list[CallTurn] = msgspec.field(default_factory=list)
    dropped_messages: int = 0
    unknown_events: int = 0
    ended_by: str = ""


class _LinearRate:
    """16-bit PCM from one rate to another through the Rust resampler (its state kept across
    calls): the linear-PCM twin of G711Decoder/G711Encoder, for providers that stream L16."""

    def __init__(self, from_hz: int, to_hz: int) -> None:
        self._resampler = Resampler(from_hz, to_hz) if from_hz != to_hz else None

    def process(self, pcm: bytes) -> bytes:
        if self._resampler is None:
            return pcm
        return f32_to_s16le(self._resampler.process(s16le_to_f32(pcm)))

    def flush(self) -> bytes:
        return f32_to_s16le(self._resampler.flush()) if self._resampler is not None else b""


class CallBridge:
    """Run one call on ``ws`` (a provider's media stream, read and written through ``wire``:
    Twilio's by default) with the session ``open_session()`` opens once the call has started
    (within ``start_timeout_s``, else the stream is closed).
    ``tell_model_cut_off``: when the caller interrupts, tell the model (as context) what of
    its reply they heard."""

    def __init__(
        self,
        ws: WebSocket,
        open_session: Callable[[], AbstractAsyncContextManager[Session]],
        *,
        start_timeout_s: float = 10.0,
        tell_model_cut_off: bool = False,
        wire: CallWire | None = None,
    ) -> None:
        self.ws = ws
        self.open_session = open_session
        self.start_timeout_s = start_timeout_s
        self.tell_model_cut_off = tell_model_cut_off
        self.stream: CallWire = wire if wire is not None else TwilioStream()
        self.stats = CallStats()
        self._decoder: G711Decoder | _LinearRate | None = None  # once the call's format is known
        self._encoder: G711Encoder | _LinearRate | None = None
        self._encoder_rate = 0
        self._unsent = b""  # the part of a 20 ms frame the next chunk completes
        self._vad = VoiceActivityDetector(INPUT_RATE_HZ, silence_duration_ms=300)
        self._heard_samples = 0  # caller audio the detector has had
        self._speech_end_at: float | None = None
        self._plays_until: float | None = None  # when what this turn sent will have played
        # Sent, not yet played: (name, model audio ms up to it, its turn, where that began).
        self._marks: deque[tuple[str, float, CallTurn, float]] = deque()
        self._cleared: set[str] = set()  # marks a clear dropped: their echoes mean nothing played
        self._turn = CallTurn(turn=0)
        self._turn_start_ms = 0.0  # model audio sent before this turn
        self._said: list[tuple[float, str]] = []  # this turn's output transcript, by audio sent
        self.started: CallStarted | None = None
        # The rest of a message _take_now read, for _caller_to_session to finish.
        self._taken: list[CallEvent | _Raise | object] | None = None

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
        wire = self.stream
        if wire.encoding == "mulaw":
            self._decoder = G711Decoder("mulaw", INPUT_RATE_HZ)
        else:
            self._decoder = _LinearRate(wire.rate_hz, INPUT_RATE_HZ)
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
        """The call events of one message; malformed ones are logged and dropped. Where the
        connection tells binary messages apart (Vonage's audio), text goes to the wire as str."""
        try:
            if self.ws.binary_apart and not isinstance(frame, BinaryMessage | str):
                frame = frame.decode()
            events = self.stream.receive(frame)
        except UnicodeDecodeError as exc:
            self.stream.dropped += 1
            _log.warning("dropped a text message from %s that is not UTF-8: %s", self.stream.provider, exc)
            return []
        except CallProtocolError as exc:
            _log.warning("dropped a malformed message from %s: %s", self.stream.provider, exc)
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
        self.ws.take_message_now = lambda frame: self._take_now(frame, session)
        try:
            while True:
                try:
                    frame = await self.ws.recv()
                except websockets.exceptions.ConnectionClosed:
                    return "the caller's stream closed"
                if self._taken is not None:  # read by _take_now, to be finished here
                    events, self._taken = self._taken, None
                else:
                    events = self._handle(frame)
                for event in events:
                    if event is _DRAIN:
                        await session.drain()
                    elif isinstance(event, _Raise):
                        raise event.error
                    elif isinstance(event, CallerAudio):
                        if self._caller_audio(session, event):
                            await session.drain()
                    elif isinstance(event, Digit):
                        self.stats.digits += event.digit
                        await session.send_text(f"(The caller pressed {event.digit} on the keypad.)")
                    elif isinstance(event, CallEnded):
                        return event.reason
        finally:
            self.ws.take_message_now = None

    def _take_now(self, frame: str | bytes, session: Session) -> bool:
        """The caller's messages, read as they arrive while `_caller_to_session` waits (no task
        switch per 20 ms frame): audio goes to the session here. What needs waiting for (a
        digit, the hang-up, a socket to drain) or fails is left to the task, with the message."""
        try:
            events = self._handle(frame)
            for i, event in enumerate(events):
                if type(event) is CallerAudio:
                    if self._caller_audio(session, event):
                        self._taken = [_DRAIN, *events[i + 1 :]]
                        return False
                elif type(event) is not MarkPlayed:  # (marks were counted as they were read)
                    self._taken = events[i:]
                    return False
        except Exception as exc:  # raised in the task, as if it had read the message itself
            self._taken = [_Raise(exc)]
            return False
        return True

    def _caller_audio(self, session: Session, audio: CallerAudio) -> bool:
        """Send the caller's audio to the session; True when its socket must drain."""
        self.stats.caller_audio_ms += self._ms(len(audio.codes))
        assert self._decoder is not None
        pcm = self._decoder.process(audio.codes)
        self._detect_speech_end(pcm)
        return session.send_audio_nowait(pcm, INPUT_RATE_HZ)

    async def _session_to_caller(self, session: Session) -> str:
        async for event in session:
            if isinstance(event, ev.Reconnecting) and event.attempt == 1:
                self.stats.reconnects += 1
            elif isinstance(event, ev.AudioChunk):
                await self._play(self._encode(event.data, event.sample_rate_hz))
            elif isinstance(event, ev.Interrupted):
                await self._send(self.stream.clear())
                self.stats.clears += 1
                self._encoder, self._unsent = None, b""  # what they held belongs to the cut-off reply
                self._plays_until = None
                await self._cut_off(session)
            elif isinstance(event, ev.OutputTranscription):
                self._turn.transcript += event.text
                self._said.append((self.stats.model_audio_ms, event.text))
            elif isinstance(event, ev.GenerationComplete):
                await self._play_the_rest()  # all of the reply is here: its tail goes now
            elif isinstance(event, ev.TurnComplete):
                await self._play_the_rest()
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

    async def _play_the_rest(self) -> None:
        """What the encoder holds back and the last part-frame, padded."""
        if self._encoder is not None:
            tail = self._encoder.flush()
            self._encoder = None
            await self._play(tail, last=True)

    def _detect_speech_end(self, pcm: bytes) -> None:
        samples = s16le_to_f32(pcm)
        self._heard_samples += len(samples)
        for kind, at in self._vad.process(samples):
            if kind == "end":
                self._speech_end_at = time.monotonic() - (self._heard_samples - at) / INPUT_RATE_HZ

    def _end_turn(self) -> None:
        self._plays_until = None
        self.stats.turns.append(self._turn)
        self._turn = CallTurn(turn=len(self.stats.turns))
        self._turn_start_ms = self.stats.model_audio_ms
        self._said.clear()

    def _encode(self, pcm: bytes, rate: int) -> bytes:
        if self._encoder is None or self._encoder_rate != rate:
            wire = self.stream
            encoder = G711Encoder("mulaw", rate) if wire.encoding == "mulaw" else _LinearRate(rate, wire.rate_hz)
            self._encoder, self._encoder_rate = encoder, rate
        return self._encoder.process(pcm)

    async def _play(self, audio: bytes, *, last: bool = False) -> None:
        """Send ``audio`` (in the wire's format) in whole 20 ms media messages (the rest waits
        for the next chunk; ``last`` pads it with silence), then a mark to learn when they
        played."""
        wire = self.stream
        frame = wire.frame_bytes
        audio = self._unsent + audio
        whole = len(audio) - len(audio) % frame
        if last and whole < len(audio):
            audio, whole = audio + wire.silence * (frame - len(audio) + whole), whole + frame
        self._unsent = audio[whole:]
        if not whole:
            return
        turn = self._turn
        if turn.reply_latency_ms is None and self._speech_end_at is not None:
            turn.reply_latency_ms = (time.monotonic() - self._speech_end_at) * 1000
            self._speech_end_at = None
        frame_s = self._ms(frame) / 1000
        now = time.monotonic()
        if self._plays_until is not None and now > self._plays_until + frame_s:
            self.stats.frames_late += 1  # the provider had run dry: a gap in the reply
        self._plays_until = max(self._plays_until or now, now) + frame_s * (whole // frame)
        messages = [wire.media(audio[start : start + frame]) for start in range(0, whole, frame)]
        ms = self._ms(whole)
        self.stats.model_audio_ms += ms
        self._turn.audio_ms += ms
        name, mark = self.stream.mark()
        self._marks.append((name, self.stats.model_audio_ms, self._turn, self._turn_start_ms))
        self.stats.marks_sent += 1
        messages.append(mark)
        await self._send_all(messages)

    def _ms(self, size: int) -> float:
        """Milliseconds of audio in ``size`` bytes of the wire's format."""
        wire = self.stream
        return size / (wire.rate_hz / 1000 * (1 if wire.encoding == "mulaw" else 2))

    async def _send(self, message: str | bytes) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self.ws.send(message)

    async def _send_all(self, messages: list[str | bytes]) -> None:
        """A chunk's media frames and its mark, in one write to the socket."""
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            self.ws.send_all_now(messages)
            if self.ws.must_drain:
                await self.ws.drain()
