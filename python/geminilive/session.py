"""The asyncio session: a thin I/O shell around :class:`geminilive.protocol.LiveProtocol`.

``async with geminilive.connect(...) as session`` opens the WebSocket, sends ``setup``, waits
for ``setupComplete``; then ``send_*`` queue messages and ``async for event in session`` yields
typed events. When the connection drops or the service closes it after ``goAway``, the session
reconnects with its latest resumption handle and replays what the service had not consumed,
so a caller sees one uninterrupted session.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import msgspec
import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from geminilive import events as ev
from geminilive._native import Resampler, f32_to_s16le, s16le_to_f32
from geminilive.config import DEFAULT_MODEL, DEFAULT_VERTEX_MODEL, LiveConfig
from geminilive.errors import (
    AudioFormatError,
    ConnectionClosedOK,
    GeminiLiveError,
    LocalProtocolError,
    MessageTooLargeError,
    SessionError,
)
from geminilive.messages import Content, FunctionResponse, SessionResumptionConfig, Setup
from geminilive.protocol import INPUT_RATE_HZ, LiveProtocol

__all__ = ["Endpoint", "Session", "connect"]

DEVELOPER_HOST = "wss://generativelanguage.googleapis.com"
MAX_FRAME_BYTES = 16 * 1024 * 1024
# Close codes after which the same session can be resumed on a new connection.
RESUMABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})


class Endpoint(msgspec.Struct, frozen=True):
    """Where to connect and how to authenticate. Credentials only ever go in headers."""

    url: str
    headers: dict[str, str]
    vertex: bool = False

    def __repr__(self) -> str:  # never print credentials
        return f"Endpoint(url={self.url!r}, headers=<{len(self.headers)} hidden>, vertex={self.vertex})"

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


class Session:
    """A live session. Make it with :func:`connect`."""

    def __init__(
        self,
        endpoint: Endpoint,
        setup: Setup,
        *,
        ssl: ssl_module.SSLContext | None = None,
        auto_resume: bool = True,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        open_timeout_s: float = 10.0,
        max_resume_attempts: int = 5,
    ) -> None:
        self.endpoint = endpoint
        self.setup = setup
        self._ssl = ssl
        self.auto_resume = auto_resume
        self.max_frame_bytes = max_frame_bytes
        self._open_timeout_s = open_timeout_s
        self._max_resume_attempts = max_resume_attempts
        self._ws: ClientConnection | None = None
        self._protocol = LiveProtocol(setup)
        self._events: deque[ev.Event] = deque()
        self._flushing = False
        self._resamplers: dict[int, Resampler] = {}
        self._closing = False
        self._unsent: list[bytes] = []
        self.reconnects = 0
        self.session_id: str | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def _open(self) -> None:
        try:
            self._ws = await ws_connect(
                self.endpoint.url,
                additional_headers=self.endpoint.headers,
                ssl=self._ssl if self.endpoint.url.startswith("wss:") else None,
                max_size=self.max_frame_bytes,
                open_timeout=self._open_timeout_s,
                # The service has been seen answering pings only after 8-30 s (protocol §1.4):
                # keep pinging to hold NATs open, but never drop the session for a slow pong.
                ping_interval=20,
                ping_timeout=None,
                compression=None,
            )
        except (OSError, websockets.exceptions.InvalidHandshake, TimeoutError) as exc:
            raise SessionError(f"could not connect to {self.endpoint.url}: {exc}") from exc
        await self._flush()
        while True:
            frame = await self._recv_or_raise()
            events = self._protocol.receive_data(frame)
            if events:
                break
        self._events.extend(events)
        first = events[0]
        if isinstance(first, ev.SetupComplete):
            self.session_id = first.session_id
        await self._flush()

    async def _recv_or_raise(self) -> bytes | str:
        assert self._ws is not None
        try:
            return await self._ws.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            raise self._closed_error(exc) from exc

    def _closed_error(self, exc: websockets.exceptions.ConnectionClosed) -> SessionError:
        frame = exc.rcvd or exc.sent
        code = frame.code if frame else 1006
        reason = frame.reason if frame else ""
        return self._protocol.connection_closed(code, reason)

    async def __aenter__(self) -> Session:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (no resumption after this)."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close(code, reason)

    @property
    def protocol(self) -> LiveProtocol:
        """The current connection's protocol state (pending calls, handle, indices)."""
        return self._protocol

    @property
    def resumption_handle(self) -> str | None:
        return self._protocol.resumption_handle

    # --- sending -------------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Write queued frames in order. One flusher at a time: a caller that finds another
        flushing returns at once, and the active one picks its frames up (no lock to take on
        the per-frame path, and no reordering)."""
        ws = self._ws
        if self._flushing or ws is None:
            return
        self._flushing = True
        try:
            while frames := self._protocol.data_to_send():
                for n, frame in enumerate(frames):
                    if len(frame) > self.max_frame_bytes:
                        raise MessageTooLargeError(f"a {len(frame)}-byte frame exceeds {self.max_frame_bytes} bytes")
                    try:
                        await ws.send(frame, text=True)
                    except websockets.exceptions.ConnectionClosed:
                        # The receive side sees the close and resumes; what could not be sent
                        # goes out on the new connection (transparent resumption replays it).
                        if not self._protocol.transparent:
                            self._unsent.extend(frames[n:])
                        return
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
        self._protocol.send_audio(
            pcm if sample_rate_hz == INPUT_RATE_HZ and type(pcm) is bytes else self._pcm16(pcm, sample_rate_hz),
            INPUT_RATE_HZ,
        )
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
        while not self._events:
            if self._closing and self._ws is None:
                raise StopAsyncIteration
            try:
                frame = await self._recv_or_raise()
            except ConnectionClosedOK:
                if self._closing or not self._can_resume(1000):
                    raise StopAsyncIteration from None
                await self._resume()
                continue
            except SessionError as error:
                if self._closing:
                    raise StopAsyncIteration from None
                if not self._can_resume(error.code):
                    raise
                await self._resume()
                continue
            self._events.extend(self._protocol.receive_data(frame))
            if self._should_migrate():
                await self._migrate()
        return self._events.popleft()

    def _should_migrate(self) -> bool:
        """After goAway, move to a new connection at the first quiet moment (resumable, no
        turn or tool call in flight) instead of waiting for the service to cut this one."""
        p = self._protocol
        return (
            p.go_away_time_left_s is not None
            and p.resumable
            and not p.model_turn_active
            and not p.pending_tool_calls
            and self._can_resume(None)
        )

    async def _migrate(self) -> None:
        assert self._ws is not None
        await self._ws.close(1000, "moving to a new connection after goAway")
        await self._resume()

    async def receive(self) -> ev.Event:
        """The next event (raises ``StopAsyncIteration`` when the session is over)."""
        return await self.__anext__()

    def _can_resume(self, code: int | None) -> bool:
        went_away = self._protocol.go_away_time_left_s is not None
        return (
            self.auto_resume
            and self.setup.session_resumption is not None
            and self._protocol.resumption_handle is not None
            and (went_away or code in RESUMABLE_CLOSE_CODES)
        )

    async def _resume(self) -> None:
        """Reconnect with the latest handle and replay what was not consumed."""
        old = self._protocol
        resumption = msgspec.structs.replace(
            self.setup.session_resumption or SessionResumptionConfig(), handle=old.resumption_handle
        )
        self.setup = msgspec.structs.replace(self.setup, session_resumption=resumption)
        last_error: GeminiLiveError | None = None
        replay = self._unsent + old.unconsumed_frames()
        self._unsent = []
        for attempt in range(self._max_resume_attempts):
            self._protocol = LiveProtocol(self.setup, replay=replay)
            # Frames sent on the old socket after it died were never taken; resend the
            # pending tool-call bookkeeping too, so responses to them are accepted.
            self._protocol.pending_tool_calls.update(old.pending_tool_calls)
            try:
                await self._open()
                self.reconnects += 1
                return
            except SessionError as exc:
                last_error = exc
                if exc.code in (1007, 1008):
                    break
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        raise last_error or SessionError("could not resume the session")

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
        ssl: an ``ssl.SSLContext`` for ``wss://`` (e.g. one trusting a test certificate).
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
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        if isinstance(endpoint, Endpoint):
            resolved = endpoint
        elif endpoint is not None:
            key = api_key or _env_api_key()
            headers = {"x-goog-api-key": key} if key else {}
            if token:
                headers["Authorization"] = f"Token {token}"
            resolved = Endpoint(endpoint, headers)
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
        self._session = Session(resolved, setup, ssl=ssl, auto_resume=auto_resume, max_frame_bytes=max_frame_bytes)

    async def __aenter__(self) -> Session:
        return await self._session.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._session.__aexit__(*exc_info)

    def __await__(self):  # `session = await connect(...)`
        return self._session.__aenter__().__await__()
