"""``LiveEmulator``: a local server that speaks the Live API's WebSocket protocol.

Faithful to the service where clients can tell (``../shared/live-protocol.md`` §0, §5, §8):
binary frames of pretty-printed camelCase JSON, ``setupComplete`` first, close reasons cut to
123 bytes, errors only as close frames, both key spellings and base64 alphabets accepted,
server-side VAD with barge-in, tool calls that block until answered, resumption handles, and
``goAway`` before the connection's time limit. Binds 127.0.0.1 unless told otherwise.

Client message indices (``lastConsumedClientMessageIndex``, sent with transparent
resumption) count per connection, ``setup`` being 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import http
import itertools
import logging
import os
import random
import re
import secrets
import ssl as ssl_module
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import websockets
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol

from geminilive._native import (
    Resampler,
    VoiceActivityDetector,
    audio_frame,
    f32_to_s16le,
    input_audio,
    s16le_to_f32,
)
from geminilive._redact import RedactingLogger
from geminilive._websocket import WebSocket, WebSocketServer, serve_websockets
from geminilive.emulator.faults import SILENT_FAILURES, Faults
from geminilive.emulator.models import (
    Conversation,
    InputTranscript,
    Model,
    ReplyAudio,
    ReplyText,
    ReplyToolCall,
    UserTurn,
    load_model,
    tone_pcm,
)
from geminilive.emulator.profiles import INVALID_ARGUMENT, LEGACY, PROFILES, ModelProfile, profile_for
from geminilive.emulator.tokens import TokenService, TokenStore
from geminilive.errors import RemoteProtocolError
from geminilive.messages import (
    Blob,
    ClientMessage,
    Content,
    FunctionCall,
    FunctionResponse,
    GoAway,
    ModalityTokenCount,
    Part,
    RealtimeInput,
    ServerContent,
    ServerMessage,
    SessionResumptionUpdate,
    Setup,
    SetupComplete,
    ToolCall,
    ToolCallCancellation,
    Transcription,
    UsageMetadata,
    decode_client,
    encode_server,
)
from geminilive.protocol import INPUT_RATE_HZ, rate_from_mime

__all__ = ["LiveEmulator"]

_PATH = re.compile(
    r"^/ws/(?:google\.ai\.generativelanguage\.(?:v1|v1beta|v1alpha)\.GenerativeService\."
    r"(?P<method>BidiGenerateContent|BidiGenerateContentConstrained)"
    r"|google\.cloud\.aiplatform\.(?:v1|v1beta1)\.LlmBidiService/BidiGenerateContent(?P<vertex>))$"
)
OPERATION_ABORTED = "The operation was aborted."
# Realtime input that reaches the emulator this soon after a blocking call was sent may have been
# sent before the client had the call: it is taken even with abort_input_during_blocking_calls.
IN_FLIGHT_S = 0.25
AUDIO_TOKENS_PER_S = 32
MAX_CLOSE_REASON_BYTES = 123
MAX_TURN_S = 60.0
HELD_BEFORE_SPEECH_S = 1.0
GAP_END_MIN_S = 1.0
RECEIVED_KEPT = 10000
# Once a connection has ended, what stays inspectable of it (memory stays bounded however
# many connections come and go).
RECEIVED_KEPT_AFTER_CLOSE = 200
CONNECTIONS_KEPT = 200


def _request_path(raw: str) -> str:
    """The path without query, repeated slashes collapsed (google-genai requests ``//ws/...``)."""
    return re.sub(r"/{2,}", "/", raw.split("?", 1)[0])


def _truncate_reason(reason: str) -> str:
    data = reason.encode()[:MAX_CLOSE_REASON_BYTES]
    return data.decode(errors="ignore")


class _Closed(Exception):
    """Raised inside a connection to close it with a code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class _SessionRecord:
    """A resumable session: the conversation, which connection holds it and, when the
    emulator records input, every audio byte the session took in (across connections)."""

    def __init__(self, conversation: Conversation, *, record_input: bool) -> None:
        self.conversation = conversation
        self.connection: _Connection | None = None
        self.expires_at = time.monotonic() + 2 * 3600
        self.started = time.monotonic()
        self.over_age = False  # past the session time limit: its handles are refused (1007)
        self.input_audio: bytearray | None = bytearray() if record_input else None


class LiveEmulator:
    """A local Live API server.

    Args:
        host, port: where to listen (``port=0`` picks a free port; see ``.port``, ``.url``).
        model: ``"echo"``, ``"tone"``, or a model object (see :mod:`geminilive.emulator.models`).
        ssl: an ``ssl.SSLContext`` to serve ``wss://`` with Python's TLS (google-genai
            insists on TLS); or ``certfile`` (PEM: the certificate, then its issuers') and
            ``keyfile`` to serve it with TLS in Rust (less CPU per message; not on Windows).
        api_key: when set, clients must present it (``x-goog-api-key``, ``Authorization``,
            or the ``key``/``access_token`` query parameter); else they are closed with 1008.
        faults: a :class:`Faults` for every connection, a list (one per connection, in order),
            or a function of the connection number.
        chunk_ms: audio chunk length in replies; ``speed``: how much faster than real time
            replies are streamed (``float('inf')`` for no pacing).
        max_sessions: resumable sessions remembered at most (expired ones go first).
        connection_time_limit_s: after this the connection gets ``goAway`` (``go_away_lead_s``
            before) and is closed with 1011, as the service does after about 10 minutes.
        session_time_limit_s: the audio session cap without context compression (15 min),
            counted from the session's start across its connections: then the connection
            closes with 1011, and resuming that session is refused with 1007, as reported of
            the service after long sessions.
        realtime_playback: hold ``turnComplete`` until the reply's audio would have played
            out in real time (the service does: barge-in can land after ``generationComplete``).
        record_input: keep every audio byte each session consumed (``input_audio(...)``), as
            of each resumption handle: a session resumed from a handle continues from what
            that handle covered. For tests of what reached the server; memory grows with it.
        time_input: note when each audio message was read, per connection
            (``input_timing``: monotonic time, seconds of audio received up to the message's
            end), for benchmarks of how late a client passes audio on; memory grows with it.
        profiles: ``(pattern, ModelProfile)`` pairs: the first pattern found in the setup's
            model name says how that model generation behaves (see
            :mod:`geminilive.emulator.profiles`; 2.5 native audio, 3.1 and 3.8 by default).
        silent_failures: the model's silent failures over the whole emulator (every
            connection and session, unlike ``Faults.failure``): called as each reply starts
            with the reply's number (from 0, over the emulator) and the user turn it answers,
            it names the failure that reply suffers (one of ``SILENT_FAILURES``) or None.
            Each injected one is kept in ``injected_failures`` (reply number, failure).
        token_port: also serve ``POST /v1alpha/auth_tokens`` here (``tokens_url``; 0: any
            free port), minting ephemeral tokens that ``BidiGenerateContentConstrained``
            takes instead of a key, with the service's limits (:mod:`.tokens`).
        abort_input_during_blocking_calls: close with 1008 "The operation was aborted." on
            realtime input while a BLOCKING call is unanswered (after ``IN_FLIGHT_S``, for
            input already on its way), as the service is widely reported to do (not
            documented; off by default, where such input is taken).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model: str | Model = "echo",
        ssl: ssl_module.SSLContext | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        faults: Faults | Sequence[Faults | None] | Callable[[int], Faults | None] | None = None,
        chunk_ms: int = 40,
        speed: float = 4.0,
        connection_time_limit_s: float = 600.0,
        go_away_lead_s: float = 50.0,
        session_time_limit_s: float = 900.0,
        realtime_playback: bool = True,
        max_message_bytes: int = 8 * 1024 * 1024,
        max_sessions: int = 10000,
        record_input: bool = False,
        time_input: bool = False,
        profiles: Sequence[tuple[str, ModelProfile]] = PROFILES,
        abort_input_during_blocking_calls: bool = False,
        silent_failures: Callable[[int, UserTurn], str | None] | None = None,
        token_port: int | None = None,
    ) -> None:
        self.host, self._requested_port = host, port
        self.model = load_model(model)
        if (certfile is None) != (keyfile is None) or (certfile is not None and ssl is not None):
            raise ValueError("certfile and keyfile go together, and instead of ssl")
        self.ssl = ssl
        self._tls = None
        if certfile is not None and keyfile is not None:
            from geminilive._native import TlsServerConfig  # not on Windows

            self._tls = TlsServerConfig(Path(certfile).read_bytes(), Path(keyfile).read_bytes())
        self.api_key = api_key
        self._logger = RedactingLogger(logging.getLogger("websockets.server"), [api_key] if api_key else [])
        self._faults = faults
        self.chunk_ms = chunk_ms
        self.speed = speed
        self.connection_time_limit_s = connection_time_limit_s
        self.go_away_lead_s = go_away_lead_s
        self.session_time_limit_s = session_time_limit_s
        self.realtime_playback = realtime_playback
        self.max_message_bytes = max_message_bytes
        self._server: WebSocketServer | None = None
        self.record_input = record_input
        self.time_input = time_input
        self.abort_input_during_blocking_calls = abort_input_during_blocking_calls
        self.silent_failures = silent_failures
        self.tokens = TokenStore()
        self._token_service = TokenService(self.tokens, host, token_port, api_key) if token_port is not None else None
        self._reply_numbers = itertools.count()
        self.injected_failures: list[tuple[int, str]] = []
        self.profiles = list(profiles)
        # handle -> (session, bytes of input audio the handle covers)
        self._sessions: dict[str, tuple[_SessionRecord, int]] = {}
        self.max_sessions = max_sessions
        self._connection_numbers = itertools.count()
        # The latest connections, for tests and tools to inspect (bounded: a soak runs forever).
        self.connections: collections.deque[_Connection] = collections.deque(maxlen=CONNECTIONS_KEPT)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> LiveEmulator:
        self._server = await serve_websockets(
            self._handle,
            self.host,
            self._requested_port,
            ssl=self.ssl,
            tls=self._tls,
            check_request=self._check_request,
            logger=self._logger,
            max_size=self.max_message_bytes,
            compression=True,
        )
        if self._token_service is not None:
            await self._token_service.start()
        return self

    async def stop(self) -> None:
        if self._token_service is not None:
            await self._token_service.stop()
        if self._server is not None:
            server, self._server = self._server, None
            await server.close()

    @property
    def tokens_url(self) -> str:
        """Where ``POST /v1alpha/auth_tokens`` mints ephemeral tokens (with ``token_port``)."""
        if self._token_service is None:
            raise RuntimeError("start the emulator with token_port= (0: any free port) to mint tokens")
        return self._token_service.url

    async def __aenter__(self) -> LiveEmulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        """``ws(s)://host:port``, e.g. for google-genai's ``base_url`` (with https)."""
        return f"{'wss' if self.ssl or self._tls else 'ws'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The full Developer API v1beta URL, for ``geminilive.connect(endpoint=...)``."""
        return f"{self.base_url}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"

    def faults_for(self, number: int) -> Faults:
        f = self._faults
        if f is None:
            return Faults()
        if isinstance(f, Faults):
            return f
        if callable(f):
            return f(number) or Faults()
        return (f[number] if number < len(f) else None) or Faults()

    # --- handshake -----------------------------------------------------------------------------

    def _check_request(self, protocol: ServerProtocol, request: Any) -> Any:
        path = _request_path(request.path)
        if not _PATH.match(path):
            return protocol.reject(http.HTTPStatus.NOT_FOUND, f"no Live API method at {path}\n")
        return None

    @staticmethod
    def _credentials(request: Any) -> list[str]:
        """What the client presented: a key or an ephemeral token, in a header or the query."""
        headers = request.headers
        offered = [headers.get("x-goog-api-key", "")]
        auth = headers.get("Authorization", "")
        for scheme in ("Token ", "Bearer "):
            if auth.startswith(scheme):
                offered.append(auth[len(scheme) :])
        query = parse_qs(request.path.partition("?")[2])
        offered += query.get("key", []) + query.get("access_token", [])
        return [o for o in offered if o]

    def _authorised(self, request: Any) -> bool:
        if self.api_key is None:
            return True
        return any(secrets.compare_digest(o, self.api_key) for o in self._credentials(request))

    async def _handle(self, ws: WebSocket) -> None:
        number = next(self._connection_numbers)
        assert ws.request is not None
        path = _request_path(ws.request.path)
        match = _PATH.match(path)
        vertex = bool(match and match.group("vertex") is not None)
        connection = _Connection(self, ws, number, vertex=vertex, faults=self.faults_for(number))
        self.connections.append(connection)
        try:
            # An emulator that mints tokens (token_port) checks them as the service does; one that
            # does not takes a token as it takes a key (``api_key="auth_tokens/..."``).
            tokens = [c for c in self._credentials(ws.request) if self.tokens.is_token(c)]
            constrained = match is not None and match.group("method") == "BidiGenerateContentConstrained"
            if tokens and constrained and self._token_service is not None:
                connection.token = tokens[0]  # checked against its limits at setup
            elif not self._authorised(ws.request):
                raise _Closed(1008, "API key not valid. Please pass a valid API key.")
            await connection.run()
        except _Closed as closed:
            await connection.close(closed.code, closed.reason, discard_incoming=True)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            connection.finish()

    def _new_handle(self, record: _SessionRecord) -> str:
        """A fresh handle for `record`. Handles of sessions that expired (2 h after their last
        connection ended) are forgotten, and so are the oldest beyond `max_sessions`."""
        handle = secrets.token_urlsafe(24)
        self._sessions[handle] = (record, len(record.input_audio) if record.input_audio is not None else 0)
        if len(self._sessions) > self.max_sessions:
            now = time.monotonic()
            for old in [h for h, (r, _) in self._sessions.items() if r.connection is None and r.expires_at < now]:
                del self._sessions[old]
            while len(self._sessions) > self.max_sessions:
                del self._sessions[next(iter(self._sessions))]
        return handle

    def _resume(self, handle: str) -> _SessionRecord:
        record, covered = self._sessions.get(handle, (None, 0))
        if record is None or record.expires_at < time.monotonic():
            raise _Closed(1008, "BidiGenerateContent session not found")
        if record.over_age:  # that session ends where the handle left it, as a forgotten one
            self._forget(handle)
            raise _Closed(1007, INVALID_ARGUMENT)
        held_by = record.connection
        if held_by is not None and held_by.open and held_by.ws.state is WsState.OPEN:
            raise _Closed(1011, "Internal error encountered.")
        if record.input_audio is not None:
            del record.input_audio[covered:]
        return record

    def _forget(self, handle: str) -> None:
        """The service no longer knows ``handle`` (1008 "session not found" follows): its
        session ends where the handle left it, which is what a client starting afresh must
        send again."""
        record, covered = self._sessions.pop(handle, (None, 0))
        if record is not None and record.input_audio is not None:
            del record.input_audio[covered:]

    def input_audio(self, *, every_session: bool = False) -> bytes:
        """The audio (16-bit PCM as sent) that the newest session consumed over all its
        connections, or with ``every_session`` that every session consumed, one after the
        other (a client that had to start afresh) (needs ``record_input=True``)."""
        if not self.record_input:
            raise RuntimeError("start the emulator with record_input=True")
        records = {id(c.record): c.record for c in self.connections if c.record is not None}
        audio = [r.input_audio for r in records.values() if r.input_audio is not None]
        if every_session:
            return b"".join(audio)  # one copy: this can be an hour of audio
        return bytes(audio[-1]) if audio else b""


@functools.lru_cache(maxsize=64)
def _audio_frame_template(mime: str, vertex: bool) -> tuple[bytes, bytes]:
    """The text of a model-turn audio message before and after its base64 data, exactly as
    :func:`encode_server` writes it (pretty-printed, as the service does): each chunk's data
    then goes between them in Rust, without building the message."""
    sentinel = b"\xff\xff\xff"  # base64 "////", which the rest of the text cannot hold
    text = encode_server(
        ServerMessage(
            server_content=ServerContent(
                model_turn=Content(
                    parts=[Part(inline_data=Blob(mime_type=mime, data=sentinel))],
                    role="model" if vertex else None,
                )
            )
        )
    )
    prefix, marker, suffix = text.partition(b"////")
    assert marker and b"////" not in suffix
    return prefix, suffix


class _Connection:
    """One client connection: reads client frames, runs VAD, streams replies."""

    def __init__(self, server: LiveEmulator, ws: WebSocket, number: int, *, vertex: bool, faults: Faults) -> None:
        self.server, self.ws, self.number, self.vertex, self.faults = server, ws, number, vertex, faults
        self.open = True
        self.token: str | None = None  # the ephemeral token it presented (the Constrained method)
        self.record: _SessionRecord | None = None
        self.setup: Setup | None = None
        self.client_index = 0
        self.messages_after_setup = 0
        self.turns_completed = 0
        self._reply_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._tool_waiter: asyncio.Future[list[FunctionResponse]] | None = None
        self._replies_started = 0
        # Faults.failure of the reply under way: "near_silent", "cut_off", "tone" and
        # "spurious_interruption" change its audio.
        self._reply_failure: str | None = None
        self._last_turn_calls: list[FunctionCall] = []  # for "duplicate_calls" across turns
        self._tool_awaited: set[str | None] = set()  # ids of the blocking toolCall not answered yet
        self._tool_answers: list[FunctionResponse] = []
        self._tool_call_sent_at = 0.0
        self.profile: ModelProfile = LEGACY
        self._pending_calls: dict[str, FunctionCall] = {}
        self._call_ids = itertools.count(1)
        self._resamplers: dict[int, Resampler] = {}
        self._vad: VoiceActivityDetector | None = None
        self._manual_activity = False
        self._gap_timer: asyncio.Task[None] | None = None
        self._silence_s = 0.5
        # Audio heard: `_heard` holds samples from absolute index `_heard_start` on.
        self._heard: list[np.ndarray] = []
        self._heard_start = 0
        self._heard_len = 0
        self._speech_start: int | None = None
        self._turn_text: list[str] = []
        self._interruptible = True
        self._model_speaking = False
        # (arrival, seconds of audio so far) per audio message, with the server's time_input.
        self.input_timing: list[tuple[float, float]] | None = [] if server.time_input else None
        self._input_s = 0.0
        # The latest client messages, for tests and tools (bounded: a session can last hours).
        self.received: collections.deque[ClientMessage] = collections.deque(maxlen=RECEIVED_KEPT)
        # What the VAD found in audio `_take_audio_now` read, for `run` to finish.
        self._after_taken: list[tuple[str, int]] | None = None
        self._counts_for_resumption = False  # transparent resumption: run counts every message

    # --- sending -------------------------------------------------------------------------------

    async def send(self, message: ServerMessage) -> None:
        await self._send_frame(encode_server(message))

    async def _send_frame(self, frame: bytes) -> None:
        """Frames reach the socket in the order of the calls: ``WebSocket.send`` writes at once
        and only then waits for the socket to drain, if it must."""
        if self.faults.send_delay_s:
            await asyncio.sleep(self.faults.send_delay_s)
        await self.ws.send(frame, text=False)

    async def close(self, code: int, reason: str, *, discard_incoming: bool = False) -> None:
        """Close with ``code``. With ``discard_incoming`` (when nothing else reads), what the
        client still sends is read and dropped, as the service does: a server that stops
        reading stalls a busy client's close handshake until a timeout."""
        self.open = False
        discard = asyncio.create_task(self._discard_incoming()) if discard_incoming else None
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            await self.ws.close(code, _truncate_reason(reason))
        if discard is not None:
            discard.cancel()

    async def _discard_incoming(self) -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for _ in self.ws:
                pass

    def finish(self) -> None:
        self.open = False
        self.ws.take_message_now = None
        for task in [self._reply_task, self._gap_timer, *self._timers]:
            if task is None:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # e.g. the client left mid-reply: nothing to report
        if self.record is not None and self.record.connection is self:
            self.record.connection = None
            self.record.expires_at = time.monotonic() + 2 * 3600
        # A finished task keeps its exception, whose traceback keeps the frames' locals (a
        # whole reply's audio): let go of them, and of the buffers, for the connections kept.
        self._reply_task = self._gap_timer = None
        self._timers.clear()
        self._heard.clear()
        self._resamplers.clear()
        self._vad = None
        self.received = collections.deque(self.received, maxlen=RECEIVED_KEPT_AFTER_CLOSE)

    # --- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        latency_s = self.faults.read_latency_s
        if latency_s:
            self.ws.stamp_arrival = time.monotonic_ns
        first = await self.ws.recv()
        message = self._decode(first)
        if message.setup is None:
            raise _Closed(1007, INVALID_ARGUMENT)
        await self._setup_faults(message.setup)
        await self._start_session(message.setup)
        resumption = message.setup.session_resumption
        self._counts_for_resumption = bool(resumption and resumption.transparent)
        self.ws.take_message_now = self._take_audio_now
        while True:
            try:
                frame = await self.ws.recv()
            except websockets.exceptions.ConnectionClosedOK:
                return
            if self.faults.slow_reader_s:
                await asyncio.sleep(self.faults.slow_reader_s)
            if latency_s and self.ws.arrival_stamp is not None:
                due = self.ws.arrival_stamp / 1e9 + latency_s - time.monotonic()
                if due > 0:
                    await asyncio.sleep(due)
            if self._after_taken is not None:  # read by _take_audio_now, to be finished here
                found, self._after_taken = self._after_taken, None
                await self._after_hearing(found)
                continue
            message = self._decode(frame)
            self.client_index += 1
            self.messages_after_setup += 1
            self.received.append(message)
            await self._dispatch(message)
            f = self.faults
            if f.drop_after_client_messages is not None and self.messages_after_setup >= f.drop_after_client_messages:
                self.open = False
                self.ws.abort()
                return
            if f.close_after_client_messages is not None and self.messages_after_setup >= f.close_after_client_messages:
                raise _Closed(f.close_code, f.close_reason)

    async def _setup_faults(self, setup: Setup) -> None:
        """A resume that fails: refused with a close, a dropped connection, or no answer."""
        f = self.faults
        if f.drop_at_setup:
            self.open = False
            self.ws.abort()
            raise websockets.exceptions.ConnectionClosedError(None, None)
        if f.stall_setup_s:  # hung: not even a close frame is read meanwhile
            transport = self.ws.transport
            if transport is not None:
                transport.pause_reading()
            await asyncio.sleep(f.stall_setup_s)
            if transport is not None and not transport.is_closing():
                transport.resume_reading()
            raise _Closed(1011, "Internal error encountered.")
        if f.refuse_setup_code is not None:
            handle = setup.session_resumption.handle if setup.session_resumption else None
            if f.refuse_setup_code == 1008 and handle:
                self.server._forget(handle)
            raise _Closed(f.refuse_setup_code, f.close_reason)

    def _decode(self, frame: bytes | str) -> ClientMessage:
        audio = input_audio(frame)  # nearly every message: read in Rust
        if audio is not None:
            return ClientMessage(realtime_input=RealtimeInput(audio=Blob(mime_type=audio[0], data=audio[1])))
        try:
            message = decode_client(frame)
        except RemoteProtocolError as exc:
            raise _Closed(1007, f"Invalid JSON payload received. {exc}") from exc
        fields = [name for name in message.__struct_fields__ if getattr(message, name) is not None]
        if len(fields) != 1:
            raise _Closed(1007, INVALID_ARGUMENT)
        return message

    async def _start_session(self, setup: Setup) -> None:
        if self.token is not None:
            resuming = bool(setup.session_resumption and setup.session_resumption.handle)
            try:
                setup = self.server.tokens.admit(self.token, setup, resuming=resuming)
            except PermissionError as refused:
                raise _Closed(1008, str(refused)) from None
        if not setup.model:
            raise _Closed(1007, INVALID_ARGUMENT)
        generation = setup.generation_config
        if generation and generation.response_modalities and len(generation.response_modalities) > 1:
            raise _Closed(1007, INVALID_ARGUMENT)
        self.profile = profile_for(setup.model, self.server.profiles)
        refusal = self.profile.setup_refusal(setup)
        if refusal is not None:
            raise _Closed(*refusal)
        resumption = setup.session_resumption
        if resumption is not None and resumption.handle:
            record = self.server._resume(resumption.handle)
            record.conversation.setup = setup
        else:
            record = _SessionRecord(Conversation(setup=setup), record_input=self.server.record_input)
        record.connection = self
        self.record, self.setup = record, setup
        vad = setup.realtime_input_config.automatic_activity_detection if setup.realtime_input_config else None
        if not (vad and vad.disabled):
            self._vad = VoiceActivityDetector(
                INPUT_RATE_HZ,
                start_sensitivity="LOW"
                if vad and vad.start_of_speech_sensitivity == "START_SENSITIVITY_LOW"
                else "HIGH",
                end_sensitivity="LOW" if vad and vad.end_of_speech_sensitivity == "END_SENSITIVITY_LOW" else "HIGH",
                prefix_padding_ms=vad.prefix_padding_ms if vad and vad.prefix_padding_ms is not None else 20,
                silence_duration_ms=vad.silence_duration_ms if vad and vad.silence_duration_ms is not None else 500,
            )
        if vad and vad.silence_duration_ms is not None:
            self._silence_s = vad.silence_duration_ms / 1000
        handling = setup.realtime_input_config.activity_handling if setup.realtime_input_config else None
        self._interruptible = handling != "NO_INTERRUPTION"
        await self.send(
            ServerMessage(setup_complete=SetupComplete(session_id=str(uuid.uuid4()) if self.vertex else None))
        )
        if resumption is not None:
            await self._resumption_update(resumable=True)
        self._start_timers()

    def _start_timers(self) -> None:
        limit = self.server.connection_time_limit_s
        lead = min(self.server.go_away_lead_s, limit)
        if self.faults.go_away_after_s is not None:
            self._timers.append(
                asyncio.create_task(self._go_away(self.faults.go_away_after_s, self.faults.go_away_time_left_s))
            )
        else:
            self._timers.append(asyncio.create_task(self._go_away(limit - lead, lead)))
        assert self.setup is not None
        if self.setup.context_window_compression is None:
            self._timers.append(asyncio.create_task(self._session_limit(self.server.session_time_limit_s)))

    async def _go_away(self, after_s: float, time_left_s: float) -> None:
        await asyncio.sleep(after_s)
        await self.send(ServerMessage(go_away=GoAway(time_left=f"{time_left_s:g}s")))
        await asyncio.sleep(time_left_s)
        await self.close(1011, "Deadline expired before operation could complete.")

    async def _session_limit(self, limit_s: float) -> None:
        assert self.record is not None
        await asyncio.sleep(max(0.0, self.record.started + limit_s - time.monotonic()))
        self.record.over_age = True
        await self.close(1011, "Session time limit exceeded.")

    async def _resumption_update(self, *, resumable: bool) -> None:
        assert self.setup is not None and self.record is not None
        resumption = self.setup.session_resumption
        if resumption is None:
            return
        handle = self.server._new_handle(self.record) if resumable else ""
        index = str(self.client_index) if resumption.transparent else None
        await self.send(
            ServerMessage(
                session_resumption_update=SessionResumptionUpdate(
                    new_handle=handle or None, resumable=resumable, last_consumed_client_message_index=index
                )
            )
        )

    # --- client messages -----------------------------------------------------------------------

    async def _dispatch(self, message: ClientMessage) -> None:
        if message.setup is not None:
            raise _Closed(1007, INVALID_ARGUMENT)
        if message.realtime_input is not None:
            if self._awaiting_blocking_response():
                if self.profile.input_cancels_blocking_call:
                    await self._barge_in()  # 3.8: new input cancels the call
                elif self.server.abort_input_during_blocking_calls:
                    raise _Closed(1008, OPERATION_ABORTED)
            await self._realtime(message.realtime_input)
        elif message.client_content is not None:
            content = message.client_content
            texts = [p.text for turn in content.turns or () for p in turn.parts or () if p.text]
            self._turn_text.extend(texts)
            if content.turn_complete:
                await self._barge_in()
                await self._user_turn_done(audio=b"")
        elif message.tool_response is not None:
            await self._tool_response(message.tool_response.function_responses or [])
        if self.setup and self.setup.session_resumption and self.setup.session_resumption.transparent:
            if self.messages_after_setup % 25 == 0:
                await self._resumption_update(resumable=not self._model_speaking)

    def _awaiting_blocking_response(self) -> bool:
        """A blocking call is unanswered, and was sent long enough ago that input arriving now
        was sent after the client had it (input already in flight is taken)."""
        waiter = self._tool_waiter
        return waiter is not None and not waiter.done() and time.monotonic() - self._tool_call_sent_at > IN_FLIGHT_S

    async def _realtime(self, realtime: RealtimeInput) -> None:
        blob = realtime.audio or (realtime.media_chunks[0] if realtime.media_chunks else None)
        if blob is not None and blob.mime_type.startswith("audio/"):
            await self._audio(blob)
        elif realtime.text is not None:
            self._turn_text.append(realtime.text)
            await self._barge_in()
            await self._user_turn_done(audio=b"")
        elif realtime.activity_start is not None:
            if self._vad is not None:
                raise _Closed(1007, INVALID_ARGUMENT)
            self._manual_activity = True
            self._speech_start = self._heard_start + self._heard_len
            await self._barge_in()
        elif realtime.activity_end is not None:
            if self._vad is not None:
                raise _Closed(1007, INVALID_ARGUMENT)
            if self._manual_activity and self._speech_start is not None:
                self._manual_activity = False
                await self._speech_ended(self._heard_start + self._heard_len)
        elif realtime.audio_stream_end:
            if self._vad is not None:
                if self._vad.speaking and self._speech_start is not None:
                    await self._speech_ended(self._heard_start + self._heard_len)
                self._vad.reset()

    async def _audio(self, blob: Blob) -> None:
        if len(blob.data) % 2:
            raise _Closed(1007, INVALID_ARGUMENT)
        await self._after_hearing(self._hear(rate_from_mime(blob.mime_type, INPUT_RATE_HZ), blob.data))

    def _hear(self, rate: int, data: bytes) -> list[tuple[str, int]]:
        """Take in 16-bit audio; returns what the VAD found in it (speech starts and ends)."""
        assert self.record is not None
        if self.record.input_audio is not None:
            self.record.input_audio += data
        if self.input_timing is not None:
            self._input_s += len(data) / 2 / rate
            self.input_timing.append((time.monotonic(), self._input_s))
        samples = s16le_to_f32(data)
        if rate != INPUT_RATE_HZ:
            if rate not in self._resamplers:
                self._resamplers[rate] = Resampler(rate, INPUT_RATE_HZ)
            samples = self._resamplers[rate].process(samples)
        self._heard.append(samples)
        self._heard_len += len(samples)
        return self._vad.process(samples) if self._vad is not None else []

    async def _after_hearing(self, found: list[tuple[str, int]]) -> None:
        for kind, at in found:
            if kind == "start":
                self._speech_start = at
                await self._barge_in()
            elif self._speech_start is not None:
                await self._speech_ended(at)
        if not self._settle_after_audio():
            await self._speech_ended(self._heard_start + self._heard_len)

    def _settle_after_audio(self) -> bool:
        """Restart the gap timer while speech goes on, trim the audio kept while it does not;
        False when the turn has run too long and must end (which awaits)."""
        speaking = self._speech_start is not None
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None
        if speaking and self._heard_len > MAX_TURN_S * INPUT_RATE_HZ:
            return False
        if speaking and self._vad is not None:
            self._gap_timer = asyncio.create_task(self._end_on_gap())
        elif not speaking:
            self._trim_heard(int(HELD_BEFORE_SPEECH_S * INPUT_RATE_HZ))
        return True

    def _take_audio_now(self, frame: bytes) -> bool:
        """The common message, audio, read as it arrives while `run` waits for the next
        message (no task switch, no coroutines). Everything else, and audio that needs more
        than this (faults, a blocking call, counted resumption updates), goes to `run`. Audio
        in which the VAD finds speech starting or ending is taken in here too, and `run`
        finishes it (it is the next message `run` reads)."""
        f = self.faults
        if (
            not self.open
            or self._after_taken is not None
            or self._tool_waiter is not None
            or f.slow_reader_s
            or f.read_latency_s
            or f.drop_after_client_messages is not None
            or f.close_after_client_messages is not None
            or self._counts_for_resumption
        ):
            return False
        audio = input_audio(frame)
        if audio is None or len(audio[1]) % 2 or not audio[0].startswith("audio/"):
            return False
        mime_type, data = audio
        rate = rate_from_mime(mime_type, INPUT_RATE_HZ)
        if rate != INPUT_RATE_HZ and rate not in self._resamplers:
            return False  # a first message at another rate: run makes its resampler
        self.client_index += 1
        self.messages_after_setup += 1
        self.received.append(ClientMessage(realtime_input=RealtimeInput(audio=Blob(mime_type=mime_type, data=data))))
        found = self._hear(rate, data)
        if found or not self._settle_after_audio():
            self._after_taken = found
            return False
        return True

    async def _end_on_gap(self) -> None:
        """A stream that stops mid-speech ends the turn: the service's VAD runs on a real-time
        stream, where missing audio is silence. At least a second, so that a client stalled by
        a busy machine is not cut off mid-sentence."""
        await asyncio.sleep(max(self._silence_s, GAP_END_MIN_S) + 0.1)
        self._gap_timer = None
        if self._speech_start is not None:
            assert self._vad is not None
            self._vad.reset()
            await self._speech_ended(self._heard_start + self._heard_len)

    def _trim_heard(self, keep: int) -> None:
        while self._heard and self._heard_len - len(self._heard[0]) >= keep:
            dropped = self._heard.pop(0)
            self._heard_len -= len(dropped)
            self._heard_start += len(dropped)

    def _heard_between(self, start: int, end: int) -> np.ndarray:
        everything = np.concatenate(self._heard) if self._heard else np.zeros(0, np.float32)
        lo = max(start - self._heard_start, 0)
        hi = max(min(end - self._heard_start, len(everything)), lo)
        return everything[lo:hi]

    async def _speech_ended(self, end: int) -> None:
        assert self._speech_start is not None
        audio = self._heard_between(self._speech_start, end)
        self._speech_start = None
        self._trim_heard(0)
        # A marked activity is a turn even when it carried no audio (the service answers it).
        await self._user_turn_done(audio=f32_to_s16le(np.ascontiguousarray(audio)), force=True)

    async def _barge_in(self) -> None:
        """User activity: interrupt a reply in progress (unless NO_INTERRUPTION)."""
        if not (self._interruptible and self._reply_task is not None and not self._reply_task.done()):
            return
        self._reply_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reply_task
        self._reply_task = None
        if self._pending_calls:
            ids = list(self._pending_calls)
            self._pending_calls.clear()
            await self.send(ServerMessage(tool_call_cancellation=ToolCallCancellation(ids=ids)))
        await self.send(ServerMessage(server_content=ServerContent(interrupted=True)))
        await self._turn_complete()

    async def _tool_response(self, responses: list[FunctionResponse]) -> None:
        """Resolve the pending calls they answer. A response to no pending call is taken as
        new input, which the service answers (Vertex replies to one without an id)."""
        answered = [r for r in responses if r.id in self._pending_calls]
        for response in answered:
            if not response.will_continue:
                self._pending_calls.pop(response.id or "", None)
        # A blocking toolCall goes on once every call in it is answered (in one message or
        # one message per call, as a client running them concurrently sends them).
        self._tool_answers.extend(answered)
        self._tool_awaited.difference_update(r.id for r in answered)
        if answered and not self._tool_awaited and self._tool_waiter is not None and not self._tool_waiter.done():
            self._tool_waiter.set_result(self._tool_answers)
        unanswered = [r for r in responses if r not in answered]
        if unanswered:
            self._turn_text.append(", ".join(f"{r.name} returned {r.response}" for r in unanswered))
            await self._user_turn_done(audio=b"")

    # --- replies -------------------------------------------------------------------------------

    async def _user_turn_done(self, *, audio: bytes, force: bool = False) -> None:
        assert self.record is not None
        text = " ".join(self._turn_text) or None
        self._turn_text.clear()
        if not (audio or text or force):
            return
        conversation = self.record.conversation
        turn = UserTurn(audio=audio, text=text, index=len(conversation.turns))
        # The history keeps what was said, not the audio: memory stays bounded per session.
        conversation.turns.append(UserTurn(text=text, index=turn.index, audio_s=len(audio) / 2 / INPUT_RATE_HZ))
        if self._reply_task is not None and not self._reply_task.done():
            if not self._interruptible:
                return  # NO_INTERRUPTION: the model finishes; the turn stays in the history
            await self._barge_in()
        self._reply_task = asyncio.create_task(self._reply(turn))

    def _blocking(self, calls: list[FunctionCall]) -> bool:
        """Whether the turn waits for the answers: by the declared behavior, else the model
        generation's default (3.1 runs every call synchronously)."""
        assert self.setup is not None
        if not self.profile.non_blocking_calls:
            return True
        behaviours = {d.name: d.behavior for tool in self.setup.tools or () for d in tool.function_declarations or ()}
        default = "BLOCKING" if self.profile.calls_block_by_default else "NON_BLOCKING"
        return any((behaviours.get(c.name) or default) == "BLOCKING" for c in calls)

    def _silent_failure(self, turn: UserTurn) -> str | None:
        """The silent failure this reply suffers, if any (the emulator's ``silent_failures``,
        else ``Faults.failure``)."""
        server, f = self.server, self.faults
        number = next(server._reply_numbers)
        failure = server.silent_failures(number, turn) if server.silent_failures is not None else None
        if failure is None and f.failure is not None and self._replies_started <= f.silent_failure_turns:
            failure = f.failure
        if failure is None:
            return None
        if failure not in SILENT_FAILURES:
            raise ValueError(f"unknown silent failure {failure!r}: one of {', '.join(SILENT_FAILURES)}")
        server.injected_failures.append((number, failure))
        return failure

    async def _reply(self, turn: UserTurn) -> None:
        assert self.record is not None and self.setup is not None
        self._replies_started += 1
        failure = self._silent_failure(turn)
        if failure == "no_reply":
            return
        if failure == "rejected":
            rejected = ServerContent(turn_complete=True, turn_complete_reason="RESPONSE_REJECTED")
            await self.send(ServerMessage(server_content=rejected))
            self.turns_completed += 1
            return
        self._reply_failure = failure
        conversation = self.record.conversation
        self._model_speaking = True
        started = time.monotonic()
        audio_s = 0.0
        out_chars = 0
        items: Iterator[Any] = iter(self.server.model.reply(turn, conversation))
        to_send: Any = None
        repeated, self._last_turn_calls = self._last_turn_calls, []
        try:
            if failure == "duplicate_calls" and repeated:  # the last turn's calls again, new ids
                await self._call_tools(repeated)
            while True:
                try:
                    item = items.send(to_send) if isinstance(items, Generator) else next(items)
                except StopIteration:
                    break
                to_send = None
                if isinstance(item, InputTranscript):
                    if self.setup.input_audio_transcription is not None:
                        finished = True if self.profile.input_transcription_finished else None
                        await self._content(input_transcription=Transcription(text=item.text, finished=finished))
                elif isinstance(item, ReplyText):
                    out_chars += len(item.text)
                    await self._model_turn(Part(text=item.text))
                elif isinstance(item, ReplyAudio):
                    audio_s += await self._stream_audio(item, started + audio_s / self.server.speed)
                    out_chars += len(item.transcript or "")
                elif isinstance(item, ReplyToolCall):
                    calls = list(item.calls)
                    self._last_turn_calls.extend(calls)
                    if failure == "duplicate_calls":  # each call twice in the message
                        calls += [FunctionCall(name=c.name, args=c.args) for c in item.calls]
                    to_send = await self._call_tools(calls)
            if self._reply_failure == "spurious_interruption":  # no user activity behind it
                await self._content(interrupted=True)
                await self._turn_complete()
                return
            if self._reply_failure != "cut_off":  # cut off: turnComplete comes alone
                await self._content(generation_complete=True)
            if self.server.realtime_playback:
                await asyncio.sleep(max(0.0, started + audio_s - time.monotonic()))
            conversation.replies += 1
            await self._turn_complete(turn=turn, audio_s=audio_s, out_chars=out_chars)
        finally:
            self._model_speaking = False

    async def _call_tools(self, calls: list[FunctionCall]) -> list[FunctionResponse] | None:
        numbered = []
        for call in calls:
            call_id = call.id or (str(uuid.uuid4()) if self.vertex else f"function-call-{next(self._call_ids)}")
            numbered.append(FunctionCall(name=call.name, args=call.args or {}, id=call_id))
            self._pending_calls[call_id] = numbered[-1]
        blocking = self._blocking(numbered)
        loop = asyncio.get_running_loop()
        self._tool_waiter = loop.create_future() if blocking else None
        self._tool_awaited, self._tool_answers = {c.id for c in numbered}, []
        await self.send(ServerMessage(tool_call=ToolCall(function_calls=numbered)))
        self._tool_call_sent_at = time.monotonic()
        if self._tool_waiter is None:
            return None
        # The model stops generating at a blocking call, as the recorded service does
        # (toolCall, then generationComplete); the response starts the rest of the turn.
        await self._content(generation_complete=True)
        try:
            return await self._tool_waiter
        finally:
            self._tool_waiter = None

    async def _content(self, **fields: Any) -> None:
        await self.send(ServerMessage(server_content=ServerContent(**fields)))

    async def _model_turn(self, part: Part) -> None:
        """One part per message, as 2.5 models send; Vertex names the role."""
        await self._content(model_turn=Content(parts=[part], role="model" if self.vertex else None))

    async def _stream_audio(self, item: ReplyAudio, due: float) -> float:
        """Send 24 kHz PCM in chunks, paced ``speed`` times faster than real time from
        ``due`` (where the reply's previous audio ends, so that pacing does not drift over a
        long reply), with the transcript spread over the chunks. Returns the duration."""
        assert self.setup is not None
        rate = 24000
        chunk_bytes = rate * self.server.chunk_ms // 1000 * 2
        pcm = item.pcm
        if self._reply_failure == "tone":
            pcm = tone_pcm(440.0, len(pcm) / 2 / 24000)
        elif self._reply_failure in ("cut_off", "spurious_interruption"):
            pcm = pcm[: len(pcm) // 4 * 2]  # half of it, whole samples
        if self._reply_failure == "near_silent":  # about -60 dBFS
            quiet = np.frombuffer(pcm, "<i2").astype(np.float32) * 0.01
            pcm = np.round(quiet).astype("<i2").tobytes()
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)]
        words = (item.transcript or "").split()
        transcribe = self.setup.output_audio_transcription is not None and words
        per_chunk = max(1, -(-len(words) // max(len(chunks), 1))) if words else 0
        mime = "audio/pcm" if self.vertex else "audio/pcm;rate=24000"
        now = time.monotonic()
        t0 = due if now - due < 0.1 else now  # after a pause (a tool call), no catching up
        sent_s = 0.0
        f = self.faults
        prefix, suffix = _audio_frame_template(mime, self.vertex)
        bundle = self.profile.bundles_transcription
        for n, chunk in enumerate(chunks):
            text = None
            if transcribe and words:
                piece, words = words[:per_chunk], words[per_chunk:]
                text = " ".join(piece) + (" " if words else "")
            if text is not None and bundle:  # 3.x: the transcript rides with its audio
                part = Part(inline_data=Blob(mime_type=mime, data=chunk))
                await self._content(
                    model_turn=Content(parts=[part], role="model" if self.vertex else None),
                    output_transcription=Transcription(text=text),
                )
            else:
                if f.send_delay_s:
                    await self._send_frame(audio_frame(prefix, chunk, suffix))
                else:  # what _send_frame does, without two coroutines per chunk
                    self.ws.send_now(audio_frame(prefix, chunk, suffix), text=False)
                    if self.ws.must_drain:
                        await self.ws.drain()
                if text is not None:
                    await self._content(output_transcription=Transcription(text=text))
            sent_s += len(chunk) / 2 / rate
            if self.server.speed != float("inf"):
                delay = t0 + sent_s / self.server.speed - time.monotonic()
                if f.audio_burst_chunks and (n + 1) % f.audio_burst_chunks:
                    delay = 0.0
                if f.audio_jitter_s:
                    delay += random.uniform(0, f.audio_jitter_s)
                if delay > 0:
                    await asyncio.sleep(delay)
        return sent_s

    async def _turn_complete(self, *, turn: UserTurn | None = None, audio_s: float = 0.0, out_chars: int = 0) -> None:
        usage = None
        if turn is not None:
            in_audio = round(len(turn.audio) / 2 / INPUT_RATE_HZ * AUDIO_TOKENS_PER_S)
            in_text = len(turn.text or "") // 4
            out_audio = round(audio_s * AUDIO_TOKENS_PER_S)
            out_text = out_chars // 4 if not audio_s else 0
            prompt = [
                ModalityTokenCount(modality=m, token_count=c) for m, c in (("AUDIO", in_audio), ("TEXT", in_text)) if c
            ]
            response = [
                ModalityTokenCount(modality=m, token_count=c)
                for m, c in (("AUDIO", out_audio), ("TEXT", out_text))
                if c
            ]
            total_out = out_audio + out_text
            # Vertex AI names the output counts "candidates", the Developer API "response".
            usage = UsageMetadata(
                prompt_token_count=in_audio + in_text,
                total_token_count=in_audio + in_text + total_out,
                prompt_tokens_details=prompt or None,
                candidates_token_count=total_out if self.vertex else None,
                candidates_tokens_details=(response or None) if self.vertex else None,
                response_token_count=None if self.vertex else total_out,
                response_tokens_details=None if self.vertex else (response or None),
            )
        if usage is not None and self.profile.usage_alone:
            await self.send(ServerMessage(server_content=ServerContent(), usage_metadata=usage))
            usage = None
        await self.send(ServerMessage(server_content=ServerContent(turn_complete=True), usage_metadata=usage))
        self.turns_completed += 1
        await self._resumption_update(resumable=True)
        f = self.faults
        if f.close_after_turns is not None and self.turns_completed >= f.close_after_turns:
            await self.close(f.close_code, f.close_reason)
