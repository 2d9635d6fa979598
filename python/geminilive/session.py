"""The asyncio session: a thin I/O shell around :class:`geminilive.protocol.LiveProtocol`.

``async with geminilive.connect(...) as session`` opens the WebSocket, sends ``setup``, waits
for ``setupComplete``; then ``send_*`` queue messages and ``async for event in session`` yields
typed events. When the connection drops or the service closes it after ``goAway``, the session
reconnects with its latest resumption handle and replays what the service had not consumed,
so a caller sees one uninterrupted session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import ssl as ssl_module
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import numpy as np
import websockets

from geminilive import events as ev
from geminilive._native import Resampler, f32_to_s16le, s16le_to_f32
from geminilive._redact import RedactingLogger
from geminilive._websocket import WebSocket, connect_websocket
from geminilive.config import DEFAULT_MODEL, DEFAULT_VERTEX_MODEL, LiveConfig
from geminilive.errors import (
    AudioFormatError,
    ConnectionClosedOK,
    InsecureTransportError,
    InvalidArgumentError,
    LocalProtocolError,
    PolicyViolationError,
    RemoteProtocolError,
    SessionError,
    SetupTimeoutError,
)
from geminilive.messages import Content, FunctionResponse, Setup
from geminilive.protocol import INPUT_RATE_HZ, LiveProtocol, State
from geminilive.usage import UsageTracker

__all__ = ["Endpoint", "ReconnectPolicy", "Session", "SessionStats", "connect"]

DEVELOPER_HOST = "wss://generativelanguage.googleapis.com"
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Close codes after which the same session can be resumed on a new connection.
RESUMABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
# Close codes that say the request itself is wrong: retrying cannot help.
FATAL_CLOSE_CODES = frozenset({1007, 1009})
# Query parameters that carry credentials; they are moved into headers.
_CREDENTIAL_PARAMS = {"key": "x-goog-api-key", "access_token": "Authorization"}
# PCM seconds -> bytes of audio frames on the wire (base64 is 4/3, plus the JSON per frame).
_WIRE_BYTES_PER_AUDIO_S = INPUT_RATE_HZ * 2 * 4 // 3 + 50 * 60
_log = logging.getLogger("geminilive.session")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ReconnectPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a session reconnects after an unexpected close. The first attempt goes at once;
    attempt ``n`` then waits ``min(max_delay_s, initial_delay_s * 2**(n-1))``, shortened by a
    random fraction up to ``jitter`` so that many clients cut off together do not return
    together."""

    max_attempts: int = 8
    initial_delay_s: float = 0.2
    max_delay_s: float = 5.0
    jitter: float = 0.5

    def delay_s(self, attempt: int) -> float:
        if attempt == 0:
            return 0.0
        base = min(self.max_delay_s, self.initial_delay_s * 2 ** (attempt - 1))
        return base * (1.0 - self.jitter * random.random())


class SessionStats(msgspec.Struct, kw_only=True):
    """What the session went through (see ``Session.stats``)."""

    reconnects: int = 0
    resumed: int = 0
    fresh_starts: int = 0
    replayed_messages: int = 0
    model_failures: int = 0  # silent failures a Conversation's watchdog noticed
    dropped_audio_frames: int = 0
    replay_overflow_frames: int = 0
    malformed_messages: int = 0


def _secrets_of(headers: dict[str, str]) -> list[str]:
    out = []
    for name, value in headers.items():
        if name.lower() in ("x-goog-api-key", "authorization"):
            out.append(value)
            out.append(value.partition(" ")[2])
    return out


class Endpoint(msgspec.Struct, frozen=True):
    """Where to connect and how to authenticate. Credentials only ever go in headers."""

    url: str
    headers: dict[str, str]
    vertex: bool = False

    def __repr__(self) -> str:  # never print credentials
        return f"Endpoint(url={self.url!r}, headers=<{len(self.headers)} hidden>, vertex={self.vertex})"

    @classmethod
    def from_url(cls, url: str, headers: dict[str, str] | None = None, *, vertex: bool = False) -> Endpoint:
        """An endpoint for ``url``; a ``key=`` or ``access_token=`` in its query moves into
        a header, so that no credential travels in a URL (where proxies and logs keep it)."""
        parts = urlsplit(url)
        headers = dict(headers or {})
        query = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            header = _CREDENTIAL_PARAMS.get(name)
            if header is None:
                query.append((name, value))
            elif header == "Authorization":
                headers.setdefault(header, f"Token {value}")
            else:
                headers.setdefault(header, value)
        return cls(urlunsplit(parts._replace(query=urlencode(query))), headers, vertex)

    @classmethod
    def developer(cls, api_key: str, *, api_version: str = "v1beta", host: str = DEVELOPER_HOST) -> Endpoint:
        url = f"{host}/ws/google.ai.generativelanguage.{api_version}.GenerativeService.BidiGenerateContent"
        return cls(url, {"x-goog-api-key": api_key})

    @classmethod
    def ephemeral(cls, token: str, *, api_version: str = "v1alpha", host: str = DEVELOPER_HOST) -> Endpoint:
        url = f"{host}/ws/google.ai.generativelanguage.{api_version}.GenerativeService.BidiGenerateContentConstrained"
        return cls(url, {"Authorization": f"Token {token}"})

    @classmethod
    def vertex_ai(cls, access_token: str, *, location: str = "us-central1", api_version: str = "v1beta1") -> Endpoint:
        host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
        url = f"wss://{host}/ws/google.cloud.aiplatform.{api_version}.LlmBidiService/BidiGenerateContent"
        return cls(url, {"Authorization": f"Bearer {access_token}"}, vertex=True)


def _env_api_key() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")


class _Reconnect:
    """An unexpected close being recovered from."""

    def __init__(self, code: int | None, reason: str, handle: str | None, *, fresh_reason: str | None = None) -> None:
        self.code, self.reason = code, reason
        self.handle = None if fresh_reason else handle
        self.attempt = 0
        self.delay_s = 0.0
        self.replayed = 0
        self.started = time.monotonic()
        self.failure: str | None = fresh_reason or (None if handle else "no resumption handle yet")


class _HandedHistory:
    """How many frames had been handed to the socket ``margin_s`` ago.

    A resumption handle without an index (the Developer API's) covers what the service had
    read when it made it. A frame handed to the socket is read up to a round trip, plus the
    service's own delay in reading, after a server message sent at the same moment arrives:
    so a handle is taken to cover surely only what had been handed ``margin_s`` before the
    message ahead of it arrived, and the audio handed since is kept to be sent again."""

    __slots__ = ("_before", "_marks", "margin_s")

    def __init__(self, margin_s: float) -> None:
        self.margin_s = margin_s
        self._marks: deque[tuple[float, int]] = deque()  # (when, handed index then), oldest first
        self._before = 0  # the handed index as of the newest mark older than the margin

    def restart(self) -> None:
        """A new connection: indices start again (its setup is 0)."""
        self._marks.clear()
        self._before = 0

    def note(self, handed_index: int) -> None:
        now = time.monotonic()
        self._marks.append((now, handed_index))
        self._advance(now - self.margin_s)

    def handed_a_margin_ago(self) -> int:
        return self._advance(time.monotonic() - self.margin_s)

    def _advance(self, cutoff: float) -> int:
        marks = self._marks
        while marks and marks[0][0] <= cutoff:
            self._before = marks.popleft()[1]
        return self._before


class Session:
    """A live session. Make it with :func:`connect`.

    Connections end all the time (``goAway`` before the connection limit, 1011 under load,
    networks). With ``auto_resume`` (the default, needs session resumption, which
    ``LiveConfig`` asks for by default) the session carries on over a new connection and
    the caller sees events, not errors:

    * after ``goAway`` it opens the next connection's socket while the old one still works,
      then, at the first moment between turns (or shortly before the deadline), closes the
      old one, turns what it still delivers into events, and resumes on the new one with the
      newest handle;
    * after an unexpected close (1011, 1006, a network error) it reconnects with backoff and
      jitter (:class:`ReconnectPolicy`), reporting :class:`~geminilive.events.Reconnecting`,
      then :class:`~geminilive.events.Resumed`, or
      :class:`~geminilive.events.ResumptionFailed` when it had to start a fresh session;
    * messages the service had not consumed are re-sent first, in order; what is sent while
      reconnecting (whatever state an attempt is in: one protocol, one queue, for the whole
      session) is held (at most ``max_buffered_audio_s`` of audio: beyond that the oldest
      audio is dropped and counted in ``stats.dropped_audio_frames``, other messages never).
      The same bound applies to what is kept for replay (``stats.replay_overflow_frames``).

    With ``session_age_warning_s``, :class:`~geminilive.events.SessionAgeWarning` comes once the
    session is that old (with the next message from the service), before a limit such as the
    15 minutes of an audio session without context compression.

    When the service refuses to resume and a fresh session starts, that session is first given
    the conversation so far as text, the newest ``remember_chars`` of it (0: nothing), so the
    user does not start over (:class:`~geminilive.events.ResumptionFailed` says how much).

    A server frame that does not decode is dropped, counted, and reported as
    :class:`~geminilive.events.MalformedMessage`; the session goes on.

    Delivery of what the caller sent is at least once across a resume. With transparent
    resumption (Vertex) the service says which message it consumed last, and the replay is
    exact. The Developer API's handles carry no index: audio that went to the socket in the
    last ``replay_margin_s`` before the message ahead of the handle arrived may not have been
    read when the service made it, so it is sent again on the resumed connection. Up to that
    much of the user's audio can then reach the service twice, but none is lost as long as the
    margin exceeds the round trip plus the service's delay in reading (0 trusts the arrival
    time exactly, and loses what was in flight). Other messages (turns, tool responses) are
    never sent twice: one still on its way when the service made the handle is not re-sent,
    as the client cannot tell it from one the service read, and a repeat would be whole.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        setup: Setup,
        *,
        ssl: ssl_module.SSLContext | None = None,
        auto_resume: bool = True,
        reconnect: ReconnectPolicy | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        open_timeout_s: float = 10.0,
        setup_timeout_s: float = 15.0,
        max_buffered_audio_s: float = 60.0,
        allow_insecure: bool = False,
        remember_chars: int = 8000,
        session_age_warning_s: float | None = None,
        replay_margin_s: float = 0.25,
    ) -> None:
        if replay_margin_s < 0:
            raise ValueError(f"replay_margin_s must be 0 or more, got {replay_margin_s}")
        parts = urlsplit(endpoint.url)
        if parts.scheme == "ws" and not allow_insecure and not is_loopback(parts.hostname):
            raise InsecureTransportError(
                f"refusing plain ws:// to {parts.hostname}: use wss://, or pass allow_insecure=True"
            )
        self.endpoint = endpoint
        self.setup = setup
        self._ssl = ssl
        self.auto_resume = auto_resume
        self.reconnect_policy = reconnect or ReconnectPolicy()
        self.max_frame_bytes = max_frame_bytes
        self._open_timeout_s = open_timeout_s
        self._setup_timeout_s = setup_timeout_s
        self._max_pending_bytes = int(max_buffered_audio_s * _WIRE_BYTES_PER_AUDIO_S)
        self._logger = RedactingLogger(logging.getLogger("websockets.client"), _secrets_of(endpoint.headers))
        self._ws: WebSocket | None = None
        # One protocol for the whole session: one queue of what the caller sent and one order
        # of what the service said, across every connection (LiveProtocol.new_connection).
        self._protocol = LiveProtocol(
            setup,
            max_frame_bytes=max_frame_bytes,
            max_pending_bytes=self._max_pending_bytes,
            max_replay_bytes=self._max_pending_bytes,
            remember_chars=remember_chars,
        )
        resumption = setup.session_resumption
        exact = resumption is None or bool(resumption.transparent)
        self._handed = None if exact or not replay_margin_s else _HandedHistory(replay_margin_s)
        self._events: deque[ev.Event] = deque()
        self._flushing = False
        self._resamplers: dict[int, Resampler] = {}
        self._closing = False
        self._reconnect: _Reconnect | None = None
        # A restart the caller asked for (restart()): None, "resume" or "fresh", and why.
        self._restart: tuple[str, str] | None = None
        # The connection a restart is closing: nothing more is handed to it, so no frame is
        # numbered on it that it never sent (a handle without an index could count it in).
        self._leaving: WebSocket | None = None
        self._go_away_deadline: float | None = None
        self._stats = SessionStats()
        self.session_id: str | None = None
        self._started = time.monotonic()
        # When to say the session is getting old (once): SessionAgeWarning.
        self._age_warning_at = None if session_age_warning_s is None else self._started + session_age_warning_s

    def __repr__(self) -> str:
        return f"Session({self.endpoint!r}, model={self.setup.model!r}, session_id={self.session_id!r})"

    # --- lifecycle -----------------------------------------------------------------------------

    async def _open_socket(self) -> WebSocket:
        try:
            return await connect_websocket(
                self.endpoint.url,
                headers=self.endpoint.headers,
                ssl=self._ssl,  # None: TLS in Rust, the system's CAs trusted
                max_size=self.max_frame_bytes,
                open_timeout_s=self._open_timeout_s,
                # The service has been seen answering pings only after 8-30 s (protocol §1.4):
                # keep pinging to hold NATs open, but never drop the session for a slow pong.
                ping_interval_s=20,
                # A server that does not finish a close handshake soon is gone: reconnect.
                close_timeout_s=2.0,
                logger=self._logger,
            )
        except (
            OSError,
            websockets.exceptions.InvalidHandshake,
            websockets.exceptions.InvalidProxy,
            TimeoutError,
        ) as exc:
            raise SessionError(f"could not connect to {self.endpoint.url}: {exc}") from exc

    async def _handshake(self, ws: WebSocket) -> None:
        """Send setup (and then what is queued) on ``ws``; wait for setupComplete. On failure
        the protocol is left between connections: what is sent meanwhile keeps queuing."""
        self._ws = ws
        protocol = self._protocol
        handed = self._handed
        if handed is None:
            ws.stamp_arrival = lambda: (protocol.handed_index, None)
        else:
            handed.restart()
            ws.stamp_arrival = lambda: (protocol.handed_index, handed.handed_a_margin_ago())
        await self._flush()
        try:
            async with asyncio.timeout(self._setup_timeout_s):
                events: list[ev.Event] = []
                while not events:
                    frame = await self._recv_or_raise(ws)
                    events = self._decode(frame, ws)
        except TimeoutError:
            self._ws = None
            protocol.connection_closed(None, "setup timed out", reconnecting=True)
            await ws.close(1000, "no setupComplete")
            raise SetupTimeoutError(f"no setupComplete within {self._setup_timeout_s:g} s") from None
        except SessionError:  # the connection closed (recorded by _recv_or_raise)
            self._ws = None
            raise
        except RemoteProtocolError:
            self._ws = None
            protocol.connection_closed(None, "setup failed", reconnecting=True)
            await ws.close(1002, "bad setup answer")
            raise
        if self._closing:  # closed by the caller while this connection was being set up
            self._ws = None
            await ws.close()
            return
        self._events.extend(events)
        first = events[0]
        if isinstance(first, ev.SetupComplete):
            self.session_id = first.session_id
        self._go_away_deadline = None
        await self._flush()
        if self._restart is not None:  # asked for while a goAway move was connecting
            self._leave(ws)

    async def _recv_or_raise(self, ws: WebSocket) -> bytes:
        try:
            return await ws.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            raise self._closed(exc) from exc

    def _closed(self, exc: websockets.exceptions.ConnectionClosed) -> SessionError:
        """Record the end of a connection on the protocol (sends keep queuing until the
        session decides it is over: :meth:`_over`); the typed error that describes it."""
        frame = exc.rcvd or exc.sent
        if frame is None:
            return self._protocol.connection_closed(None, "connection lost", reconnecting=True)
        return self._protocol.connection_closed(frame.code, frame.reason, reconnecting=True)

    def _over(self, error: SessionError | None = None) -> None:
        """The session ends here: no connection follows, and sends raise from now on."""
        self._reconnect = None
        code = error.code if error is not None else self._protocol.close_code
        self._protocol.connection_closed(code, error.reason if error is not None else self._protocol.close_reason)

    async def __aenter__(self) -> Session:
        try:
            await self._handshake(await self._open_socket())
        except (SessionError, RemoteProtocolError):
            self._over()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (no resumption after this)."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close(code, reason)

    def restart(self, *, fresh: bool = False, reason: str = "asked for", setup: Setup | None = None) -> bool:
        """Move the session to a new connection now, as after an unexpected close: resumed
        with the newest handle (the model's context kept, whatever it was stuck in gone), or,
        with ``fresh``, a new session seeded with the conversation so far as text (the way a
        refused handle is recovered from). What the service had not consumed is re-sent;
        what is sent meanwhile is held. The current connection is closed politely and what
        it still delivers comes out first; then ``Reconnecting`` (code 1000, ``reason``) and
        ``Resumed`` or ``ResumptionFailed`` (its reason says a fresh session was asked for).
        A watchdog's recovery (:mod:`geminilive.watchdog`) calls this. With ``setup``, the
        new connection asks for it: the Live API takes instructions and tools only in a setup,
        and any change but the model's on a resumption (the session keeps its own resumption
        settings). Returns at once: True when a connection is being left for it
        (``Reconnecting`` follows), False when the session was between connections already
        (the next one is the restart)."""
        if self._closing or self._protocol.state is State.CLOSED:
            raise LocalProtocolError("the session is closed: nothing to restart")
        if self.setup.session_resumption is None or not self.auto_resume:
            raise LocalProtocolError("restart() needs session resumption and auto_resume")
        if setup is not None:
            if setup.model != self.setup.model:
                raise LocalProtocolError(f"a session cannot change its model ({self.setup.model} to {setup.model})")
            setup = msgspec.structs.replace(setup, session_resumption=self._protocol.setup.session_resumption)
            self.setup = self._protocol.setup = setup
        kind = "fresh" if fresh else "resume"
        if self._reconnect is not None:  # already between connections: the next one is it
            if fresh:
                self._reconnect.handle, self._reconnect.failure = None, f"a fresh session was asked for: {reason}"
            return False
        if self._restart is None or fresh:
            self._restart = (kind, reason)
        if self._ws is not None:
            self._leave(self._ws)
        # (no socket: a goAway move is under way; the restart follows once it is connected)
        return True

    def _leave(self, ws: WebSocket) -> None:
        """Close ``ws`` for a restart; sends wait for the next connection from now on."""
        assert self._restart is not None
        self._leaving = ws
        ws.start_close(1000, f"restart: {self._restart[1]}"[:120])

    @property
    def protocol(self) -> LiveProtocol:
        """The session's protocol state, over all its connections (pending calls, handle, queues)."""
        return self._protocol

    @property
    def resumption_handle(self) -> str | None:
        return self._protocol.resumption_handle

    @property
    def reconnects(self) -> int:
        return self._stats.reconnects

    @property
    def age_s(self) -> float:
        """Seconds since the session started (over all its connections): with
        ``usage.cost(prices)``, what it costs per minute."""
        return time.monotonic() - self._started

    def count_model_failure(self) -> None:
        """Count a silent failure of the model's in ``stats`` (a watchdog calls this)."""
        self._stats.model_failures += 1

    @property
    def usage(self) -> UsageTracker:
        """Tokens per turn and in total, by modality, across every connection; ``cost(prices)``."""
        return self._protocol.usage

    @property
    def stats(self) -> SessionStats:
        """Counters over the whole session, all connections included."""
        p = self._protocol
        return msgspec.structs.replace(
            self._stats, dropped_audio_frames=p.dropped_audio_frames, replay_overflow_frames=p.replay_overflow_frames
        )

    # --- sending -------------------------------------------------------------------------------

    def _write_queued(self) -> bool:
        """Write the frames the protocol has queued, now (the socket write is synchronous);
        True when the socket's buffer is full and the caller must :meth:`_flush`. Nothing is
        written while another caller waits for the socket to drain: frames then wait in the
        protocol, in order, and that caller writes them (no lock on the per-frame path)."""
        ws = self._ws
        if ws is None or self._flushing or ws is self._leaving:  # frames wait for the next socket
            return False
        frames = self._protocol.data_to_send()
        if frames and self._handed is not None:
            self._handed.note(self._protocol.handed_index)
        try:
            for frame in frames:
                ws.send_now(frame)
        except websockets.exceptions.ConnectionClosed:
            # The receive side sees the close and reconnects; the protocol kept these frames
            # for replay (with resumption on).
            return False
        return ws.must_drain

    async def _flush(self) -> None:
        """Write queued frames in order, waiting for the socket to drain when it is full."""
        if self._flushing:
            return
        while self._write_queued():
            ws = self._ws
            assert ws is not None
            self._flushing = True
            try:
                await ws.drain()
            finally:
                self._flushing = False

    def _pcm16(self, pcm: Any, sample_rate_hz: int) -> bytes:
        """16 kHz 16-bit PCM bytes from bytes or a float32/int16 array at any rate."""
        if isinstance(pcm, np.ndarray):
            if pcm.dtype not in (np.int16, np.float32):
                raise AudioFormatError(f"audio arrays must be float32 or int16, got {pcm.dtype}")
            samples = pcm
            if sample_rate_hz != INPUT_RATE_HZ:
                samples = self._resampler(sample_rate_hz).process(samples)
            if samples.dtype == np.int16:
                return samples.astype("<i2", copy=False).tobytes()
            return f32_to_s16le(np.ascontiguousarray(samples))
        data = bytes(pcm)
        if len(data) % 2:
            raise AudioFormatError(f"16-bit PCM needs an even number of bytes, got {len(data)}")
        if sample_rate_hz == INPUT_RATE_HZ:
            return data
        return f32_to_s16le(self._resampler(sample_rate_hz).process(s16le_to_f32(data)))

    def _resampler(self, rate: int) -> Resampler:
        if rate not in self._resamplers:
            self._resamplers[rate] = Resampler(rate, INPUT_RATE_HZ)
        return self._resamplers[rate]

    async def send_audio(self, pcm: bytes | np.ndarray, sample_rate_hz: int = INPUT_RATE_HZ) -> None:
        """Send microphone audio: 16-bit LE bytes, or a float32/int16 array, at any rate
        (resampled to 16 kHz in Rust, with the resampler's state kept across calls)."""
        if self.send_audio_nowait(pcm, sample_rate_hz):
            await self._flush()

    def send_audio_nowait(self, pcm: bytes | np.ndarray, sample_rate_hz: int = INPUT_RATE_HZ) -> bool:
        """:meth:`send_audio` without waiting, for code called per frame outside a coroutine
        (a socket's callback, a framework's push): the audio is written to the socket at once,
        or kept in order for the next connection or behind a writer that waits for the socket.
        True when the socket's buffer is full: ``await session.drain()`` before much more."""
        pcm16 = pcm if sample_rate_hz == INPUT_RATE_HZ and type(pcm) is bytes else self._pcm16(pcm, sample_rate_hz)
        ws = self._ws
        if ws is not None and not self._flushing and ws is not self._leaving:
            frame = self._protocol.audio_to_write(pcm16)
            if frame is not None:  # the common case: straight to the socket
                if self._handed is not None:
                    self._handed.note(self._protocol.handed_index)
                try:
                    ws.send_now(frame)
                except websockets.exceptions.ConnectionClosed:
                    return False  # kept for replay; the receive side reconnects
                return ws.must_drain
        self._protocol.send_audio(pcm16, INPUT_RATE_HZ)
        return self._write_queued()

    async def drain(self) -> None:
        """Wait until what was sent has gone to the socket (after :meth:`send_audio_nowait`
        said its buffer is full)."""
        await self._flush()

    async def send_text(self, text: str) -> None:
        self._protocol.send_text(text)
        await self._flush()

    async def send_video_frame(self, image: bytes, mime_type: str = "image/jpeg") -> None:
        self._protocol.send_video_frame(image, mime_type)
        await self._flush()

    async def activity_start(self) -> None:
        self._protocol.activity_start()
        await self._flush()

    async def activity_end(self) -> None:
        self._protocol.activity_end()
        await self._flush()

    async def audio_stream_end(self) -> None:
        self._protocol.audio_stream_end()
        await self._flush()

    async def send_client_content(
        self, turns: Iterable[Content] | str | None = None, turn_complete: bool = True
    ) -> None:
        self._protocol.send_client_content(turns, turn_complete)
        await self._flush()

    async def send_tool_response(self, responses: Iterable[FunctionResponse] | FunctionResponse) -> None:
        if isinstance(responses, FunctionResponse):
            responses = [responses]
        self._protocol.send_tool_response(responses)
        await self._flush()

    # --- receiving -----------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ev.Event]:
        return self

    async def __anext__(self) -> ev.Event:
        events = self._events
        while not events:
            ws = self._ws
            if ws is None:
                if self._reconnect is None:
                    self._over()
                    raise StopAsyncIteration
                await self._attempt_reconnect()
                continue
            try:
                if self._go_away_deadline is None:
                    frame = await ws.recv()
                else:
                    frame = await self._recv_until_go_away_deadline(ws)
            except TimeoutError:
                await self._migrate()  # the deadline after goAway is near: move now
                continue
            except websockets.exceptions.ConnectionClosed as exc:
                error = self._closed(exc)
                self._ws = None
                if self._restart is not None and not self._closing:
                    self._begin_restart()
                    continue
                if self._closing or (isinstance(error, ConnectionClosedOK) and not self._may_reconnect(error.code)):
                    self._over(error)
                    raise StopAsyncIteration from None
                if not self._may_reconnect(error.code):
                    self._over(error)
                    raise error from exc
                self._begin_reconnect(error.code, error.reason)
                continue
            if not self._receive(frame, ws):
                continue
            protocol = self._protocol
            if protocol.go_away_time_left_s is not None:
                if self._go_away_deadline is None:
                    self._go_away_deadline = time.monotonic() + protocol.go_away_time_left_s
                if self._should_migrate():
                    await self._migrate()
        return self._events.popleft()

    def _decode(self, frame: bytes, ws: WebSocket) -> list[ev.Event]:
        """Events of a frame from ``ws``, with what had been handed to it when the frame came."""
        handed, handed_a_margin_before = ws.arrival_stamp or (None, None)
        return self._protocol.receive_data(
            frame, handed_at_arrival=handed, handed_a_margin_before=handed_a_margin_before
        )

    def _receive(self, frame: bytes, ws: WebSocket) -> bool:
        """Decode a server frame from ``ws`` into events; False (counted, reported) if it is
        malformed."""
        protocol = self._protocol
        try:
            self._events.extend(self._decode(frame, ws))
        except RemoteProtocolError as exc:
            self._stats.malformed_messages += 1
            _log.warning("dropped a malformed server message: %s", exc)
            self._events.append(ev.MalformedMessage(error=str(exc)))
            return False
        if protocol.has_queued_frames:  # realtime input released by a call's cancellation
            self._write_queued()  # no wait for a drain here: the next sender waits
        if self._age_warning_at is not None and time.monotonic() >= self._age_warning_at:
            self._age_warning_at = None
            self._events.append(ev.SessionAgeWarning(age_s=self.age_s))
        return True

    async def receive(self) -> ev.Event:
        """The next event (raises ``StopAsyncIteration`` when the session is over)."""
        return await self.__anext__()

    async def _recv_until_go_away_deadline(self, ws: WebSocket) -> bytes:
        """The next frame; ``TimeoutError`` when a goAway deadline is about to pass without
        a quiet moment to move (the service may go silent after goAway)."""
        deadline = self._go_away_deadline
        if deadline is None or not self._may_reconnect(None):
            return await self._recv_or_raise(ws)
        margin = min(1.0, (self._protocol.go_away_time_left_s or 0.0) / 4)
        async with asyncio.timeout(max(0.0, deadline - margin - time.monotonic())):
            return await self._recv_or_raise(ws)

    def _may_reconnect(self, code: int | None) -> bool:
        went_away = self._protocol.go_away_time_left_s is not None
        return (
            self.auto_resume
            and not self._closing
            and self.setup.session_resumption is not None
            and code not in FATAL_CLOSE_CODES
            and (went_away or code is None or code in RESUMABLE_CLOSE_CODES)
        )

    def _should_migrate(self) -> bool:
        """After goAway, move to a new connection at the first quiet moment (resumable, no
        turn or tool call in flight) instead of waiting for the service to cut this one."""
        p = self._protocol
        return (
            p.go_away_time_left_s is not None
            and p.resumable
            and p.resumption_handle is not None
            and not p.model_turn_active
            and not p.pending_tool_calls
            and self._may_reconnect(None)
        )

    async def _read_out(self, ws: WebSocket, reason: str) -> None:
        """Close ``ws`` and turn every frame it still delivers into events, in order: a
        goAway can have a tool call, the rest of a turn or a newer handle right behind it."""
        ws.start_close(1000, reason)
        while True:
            try:
                frame = await ws.recv()
            except websockets.exceptions.ConnectionClosed:
                break
            self._receive(frame, ws)
        await ws.close()  # the TCP connection's end

    async def _migrate(self) -> None:
        """Make before break: open the next socket while the old connection works, then close
        the old one (the service refuses a resume while it is open), read what it still
        delivers, and resume with the newest handle."""
        old_ws = self._ws
        assert old_ws is not None
        self._go_away_deadline = None
        try:
            new_ws = await self._open_socket()
        except SessionError as exc:
            _log.warning("could not open the next connection after goAway: %s", exc)
            self._protocol.go_away_time_left_s = None  # stay; the close will be recovered from
            return
        replayed = self._protocol.unconsumed_count
        self._ws = None  # what is sent from here on queues for the new connection
        await self._read_out(old_ws, "moving to a new connection after goAway")
        if self._closing:
            new_ws.abort()
            return
        self._protocol.new_connection(self._protocol.resumption_handle)
        try:
            await self._handshake(new_ws)
        except RemoteProtocolError as exc:  # a server that answered setup with nonsense
            self._begin_reconnect(None, f"bad answer to setup: {exc}")
            return
        except SessionError as exc:
            self._begin_reconnect(exc.code, exc.reason)
            return
        if self._closing:
            return
        self._stats.reconnects += 1
        self._stats.resumed += 1
        self._stats.replayed_messages += replayed
        self._events.append(ev.Resumed(replayed_messages=replayed, downtime_s=0.0, after_go_away=True))

    def _begin_reconnect(self, code: int | None, reason: str, *, fresh_reason: str | None = None) -> None:
        self._reconnect = _Reconnect(code, reason, self._protocol.resumption_handle, fresh_reason=fresh_reason)
        self._reconnect.replayed = self._protocol.unconsumed_count
        _log.info("connection closed (%s %s); reconnecting", code, reason)
        self._events.append(ev.Reconnecting(attempt=1, delay_s=0.0, code=code, reason=reason))

    def _begin_restart(self) -> None:
        assert self._restart is not None
        (kind, reason), self._restart = self._restart, None
        self._leaving = None
        fresh_reason = f"a fresh session was asked for: {reason}" if kind == "fresh" else None
        self._begin_reconnect(1000, f"restart: {reason}", fresh_reason=fresh_reason)

    def _attempt_failed(self, exc: SessionError) -> None:
        """Count a failed attempt: start afresh if the handle was refused, give up on a fatal
        close or after the policy's attempts, else announce the next attempt."""
        r = self._reconnect
        assert r is not None
        r.attempt += 1
        if r.handle is not None and isinstance(exc, PolicyViolationError | InvalidArgumentError):
            # An unknown or expired handle (1008 "session not found"), or a session past its
            # time limit (1007 for its handles): start afresh. A 1007 on the fresh setup too is
            # the setup's own fault, and final.
            r.failure = f"the service refused the resumption handle: {exc.reason or exc}"
            r.handle = None
        elif exc.code in FATAL_CLOSE_CODES or isinstance(exc, PolicyViolationError):
            self._over(exc)
            raise exc
        if r.attempt >= self.reconnect_policy.max_attempts:
            error = SessionError(f"gave up reconnecting after {r.attempt} attempts: {exc}", code=exc.code)
            self._over(error)
            raise error from exc
        r.delay_s = self.reconnect_policy.delay_s(r.attempt)
        self._events.append(ev.Reconnecting(attempt=r.attempt + 1, delay_s=r.delay_s, code=exc.code, reason=exc.reason))

    async def _attempt_reconnect(self) -> None:
        r = self._reconnect
        assert r is not None
        if r.delay_s:
            await asyncio.sleep(r.delay_s)
        if self._closing:
            self._reconnect = None
            return
        try:
            ws = await self._open_socket()
            self._protocol.new_connection(r.handle)
            await self._handshake(ws)
        except RemoteProtocolError as exc:  # a server that answered setup with nonsense
            self._attempt_failed(SessionError(f"bad answer to setup: {exc}"))
            return
        except SessionError as exc:
            self._attempt_failed(exc)
            return
        self._reconnect = None
        if self._closing:
            return
        self._stats.reconnects += 1
        self._stats.replayed_messages += r.replayed
        if r.handle is None:
            self._stats.fresh_starts += 1
            self._events.append(
                ev.ResumptionFailed(
                    reason=r.failure or "", replayed_messages=r.replayed, seeded_turns=self._protocol.seeded_turns
                )
            )
        else:
            self._stats.resumed += 1
            self._events.append(ev.Resumed(replayed_messages=r.replayed, downtime_s=time.monotonic() - r.started))

    async def start_audio_conversation(
        self,
        input_device: str | None = None,
        output_device: str | None = None,
        *,
        source: Any = None,
        sink: Any = None,
        tools: Any = None,
        on_event: Callable[[ev.Event], Awaitable[None] | None] | None = None,
        on_transcript: Callable[[str, str, bool], Awaitable[None] | None] | None = None,
        local_barge_in: str = "off",
        duck_gain: float = 0.25,
        echo_cancellation: bool = False,
    ) -> Any:
        """Join the microphone (or ``source``), this session and the speaker (or ``sink``);
        returns the running :class:`geminilive.conversation.Conversation` (``await c.stop()``)."""
        from geminilive.audio_io import MicrophoneSource, SpeakerSink
        from geminilive.conversation import Conversation

        conversation = Conversation(
            self,
            source=source if source is not None else MicrophoneSource(input_device),
            sink=sink if sink is not None else SpeakerSink(output_device),
            tools=tools,
            on_event=on_event,
            on_transcript=on_transcript,
            local_barge_in=local_barge_in,  # type: ignore[arg-type]
            duck_gain=duck_gain,
            echo_cancellation=echo_cancellation,
        )
        return await conversation.start()

    async def run(self, handler: Callable[[ev.Event], Awaitable[None] | None]) -> None:
        """Callback style: call ``handler`` for every event until the session ends."""
        async for event in self:
            result = handler(event)
            if result is not None:
                await result


class connect:  # lower case: used as `async with geminilive.connect(...)`, like websockets.connect
    """Open a live session.

    Args:
        model: the model (default: the native-audio model of the endpoint's platform).
        config: a :class:`LiveConfig`, or a raw ``Setup`` (then ``model`` is taken from it).
        api_key: Gemini Developer API key (default ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``).
        token: an ephemeral token (``auth_tokens/...``) instead of an API key.
        endpoint: a URL (e.g. the local emulator's ``emu.url``) or an :class:`Endpoint`.
        vertex_access_token, vertex_location, vertex_project: Vertex AI.
        ssl: an ``ssl.SSLContext`` for ``wss://``, to run Python's TLS as it is configured. By
            default TLS runs in Rust (rustls, less CPU per message) and verifies certificates
            and host names against the system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` as
            with OpenSSL).
        auto_resume, reconnect, setup_timeout_s, max_buffered_audio_s, remember_chars,
            session_age_warning_s, replay_margin_s: see :class:`Session`.
        allow_insecure: allow plain ``ws://`` to a host that is not this machine.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        config: LiveConfig | Setup | None = None,
        api_key: str | None = None,
        token: str | None = None,
        endpoint: str | Endpoint | None = None,
        api_version: str = "v1beta",
        vertex_access_token: str | None = None,
        vertex_project: str | None = None,
        vertex_location: str = "us-central1",
        ssl: ssl_module.SSLContext | None = None,
        auto_resume: bool = True,
        reconnect: ReconnectPolicy | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        setup_timeout_s: float = 15.0,
        max_buffered_audio_s: float = 60.0,
        allow_insecure: bool = False,
        remember_chars: int = 8000,
        session_age_warning_s: float | None = None,
        replay_margin_s: float = 0.25,
    ) -> None:
        if isinstance(endpoint, Endpoint):
            resolved = endpoint
        elif endpoint is not None:
            key = api_key or _env_api_key()
            headers = {"x-goog-api-key": key} if key else {}
            if token:
                headers["Authorization"] = f"Token {token}"
            resolved = Endpoint.from_url(endpoint, headers)
        elif vertex_access_token:
            resolved = Endpoint.vertex_ai(vertex_access_token, location=vertex_location)
        elif token:
            resolved = Endpoint.ephemeral(token)
        else:
            key = api_key or _env_api_key()
            if not key:
                raise LocalProtocolError(
                    "no API key: pass api_key=, set GEMINI_API_KEY, or connect to the local emulator (endpoint=)"
                )
            resolved = Endpoint.developer(key, api_version=api_version)
        if isinstance(config, Setup):
            setup = config if model is None else msgspec.structs.replace(config, model=model)
        else:
            name = model or (DEFAULT_VERTEX_MODEL if resolved.vertex else DEFAULT_MODEL)
            if resolved.vertex and vertex_project and "/" not in name:
                name = f"projects/{vertex_project}/locations/{vertex_location}/publishers/google/models/{name}"
            setup = (config or LiveConfig()).to_setup(name)
        self._session = Session(
            resolved,
            setup,
            ssl=ssl,
            auto_resume=auto_resume,
            reconnect=reconnect,
            max_frame_bytes=max_frame_bytes,
            setup_timeout_s=setup_timeout_s,
            max_buffered_audio_s=max_buffered_audio_s,
            allow_insecure=allow_insecure,
            remember_chars=remember_chars,
            session_age_warning_s=session_age_warning_s,
            replay_margin_s=replay_margin_s,
        )

    async def __aenter__(self) -> Session:
        return await self._session.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._session.__aexit__(*exc_info)

    def __await__(self):  # `session = await connect(...)`
        return self._session.__aenter__().__await__()
