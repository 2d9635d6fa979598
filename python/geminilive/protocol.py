"""The client side of the Live protocol as a pure state machine (no sockets, no clock).

Feed it what the socket received with :meth:`LiveProtocol.receive_data`, which returns typed
events; queue messages with the ``send_*`` methods; write what :meth:`LiveProtocol.data_to_send`
returns to the socket. The asyncio :class:`geminilive.session.Session` does exactly that.

Rules it enforces (``../shared/live-protocol.md`` §2.0, §5.1):

* ``setup`` is the first frame and is sent once; nothing else goes out before the service's
  ``setupComplete``: messages queued earlier are held and released in order after it.
* The first server message must be ``setupComplete``.
* While a BLOCKING function call is unanswered, realtime input (audio, text, activity marks)
  is held and goes out, in order, right after the tool response (or the call's cancellation):
  the service is widely reported to abort the session (1008 "The operation was aborted.") on
  realtime input during such a call (§5.6). Other messages are not held.
* Client messages are numbered per connection, ``setup`` being 0. With transparent resumption
  the service reports ``lastConsumedClientMessageIndex``; frames after it are kept so that a
  resumed connection can replay them (:meth:`unconsumed_frames`), so nothing is lost.

One protocol object lives as long as the session, over one connection after another: when a
connection ends and another will follow (``connection_closed(..., reconnecting=True)``), what
is sent keeps queuing, and :meth:`LiveProtocol.new_connection` starts the next connection with
everything the service may not have consumed, in order. There is one queue of what the user
sent, whatever state a connection attempt is in.
"""

from __future__ import annotations

import enum
import functools
import re
from collections import deque
from collections.abc import Iterable, Sequence

import msgspec

from geminilive import events as ev
from geminilive._native import audio_frame, model_audio
from geminilive.errors import (
    AudioFormatError,
    LocalProtocolError,
    MessageTooLargeError,
    RemoteProtocolError,
    SessionError,
    closed_error,
)
from geminilive.messages import (
    ActivityEnd,
    ActivityStart,
    Blob,
    ClientContent,
    ClientMessage,
    Content,
    FunctionCall,
    FunctionResponse,
    Part,
    RealtimeInput,
    ServerContent,
    ServerMessage,
    Setup,
    ToolResponse,
    decode_server,
    encode_client,
    parse_duration_s,
)
from geminilive.transcript import Transcript
from geminilive.usage import UsageTracker

__all__ = ["INPUT_RATE_HZ", "OUTPUT_RATE_HZ", "LiveProtocol", "State", "pcm_mime_type", "rate_from_mime"]

INPUT_RATE_HZ = 16000
OUTPUT_RATE_HZ = 24000
_RATE = re.compile(r"rate=(\d+)")
_AUDIO_FRAME_PREFIX: dict[int, bytes] = {}
_AUDIO_FRAME_START = b'{"realtimeInput":{"audio":'
_REALTIME_FRAME_START = b'{"realtimeInput":'
_TOOL_RESPONSE_FRAME_START = b'{"toolResponse":'
_ACTIVITY_START_FRAME = encode_client(ClientMessage(realtime_input=RealtimeInput(activity_start=ActivityStart())))
_ACTIVITY_END_FRAME = encode_client(ClientMessage(realtime_input=RealtimeInput(activity_end=ActivityEnd())))
# Models on which realtime input during a blocking call cancels the call instead of ending the
# session (3.8), and whose calls default to NON_BLOCKING (§5.6, §5.12): input is never held.
_INPUT_CANCELS_CALLS = re.compile(r"gemini-3\.8")
# Models that run every call synchronously, whatever its declared behavior (3.1, §5.6).
_SYNCHRONOUS_CALLS = re.compile(r"gemini-3\.1")


@functools.lru_cache(maxsize=64)
def pcm_mime_type(sample_rate_hz: int) -> str:
    return f"audio/pcm;rate={sample_rate_hz}"


@functools.lru_cache(maxsize=64)
def rate_from_mime(mime_type: str, default: int) -> int:
    """The ``rate=`` parameter of an ``audio/pcm`` MIME type (Vertex omits it)."""
    match = _RATE.search(mime_type)
    return int(match.group(1)) if match else default


def _blocking_functions(setup: Setup) -> frozenset[str] | None:
    """Names of the functions whose unanswered calls hold realtime input (``None``: every
    call's): those not declared NON_BLOCKING (all on 3.1), and none on a model that takes such
    input (3.8)."""
    model = setup.model or ""
    if _INPUT_CANCELS_CALLS.search(model):
        return frozenset()
    if _SYNCHRONOUS_CALLS.search(model):
        return None
    declarations = [d for tool in setup.tools or () for d in tool.function_declarations or ()]
    if all(d.behavior != "NON_BLOCKING" for d in declarations):
        return None
    return frozenset(d.name for d in declarations if d.behavior != "NON_BLOCKING")


class State(enum.Enum):
    AWAITING_SETUP_COMPLETE = "awaiting_setup_complete"
    OPEN = "open"
    # The connection ended and the session will open another: sends queue for it.
    RECONNECTING = "reconnecting"
    # The session is over: sends raise.
    CLOSED = "closed"


class LiveProtocol:
    """One session's worth of the Live protocol, client side, over one connection after
    another (:meth:`new_connection`).

    Args:
        setup: the setup message; it is sent first on every connection, by the protocol itself.
        max_frame_bytes: the largest frame the peer takes; a bigger message is refused with
            ``MessageTooLargeError`` when it is queued, before anything is sent.
        max_pending_bytes: bound on frames waiting to go out (before ``setupComplete``, e.g.
            while reconnecting). Over it, the oldest *audio* frames are dropped and counted in
            ``dropped_audio_frames``; other messages are never dropped.
        max_replay_bytes: bound on frames kept for a resumed connection to replay. Over it the
            oldest are forgotten and counted in ``replay_overflow_frames``.
        remember_chars: how much of the conversation, as text, seeds a fresh session when a
            resume is refused (:class:`geminilive.transcript.Transcript`; 0: none).

    Replay (``unconsumed_frames``) keeps what the service may not have taken into the state of
    the newest resumption handle: with transparent resumption, the frames after the
    ``lastConsumedClientMessageIndex`` that came with that handle (exact); without it, the
    frames handed to the socket after that handle arrived (frames in flight when the service
    made the handle, less than a round trip, are the only uncertainty).
    """

    def __init__(
        self,
        setup: Setup,
        *,
        max_frame_bytes: int = 16 * 1024 * 1024,
        max_pending_bytes: int = 4 * 1024 * 1024,
        max_replay_bytes: int = 16 * 1024 * 1024,
        remember_chars: int = 8000,
    ) -> None:
        if not setup.model:
            raise LocalProtocolError("setup needs a model")
        self.setup = setup
        self.max_frame_bytes = max_frame_bytes
        self.max_pending_bytes = max_pending_bytes
        resumption = setup.session_resumption
        self.transparent = bool(resumption and resumption.transparent)
        self._keep_replay = resumption is not None
        self.max_replay_bytes = max_replay_bytes
        # Session-long: counters, unanswered calls (a resumed session carries them), turns.
        self.dropped_audio_frames = 0
        self.replay_overflow_frames = 0
        self.pending_tool_calls: dict[str, FunctionCall] = {}
        self._blocking_functions = _blocking_functions(setup)
        self.turns_completed = 0
        self.connections = 0
        compression = setup.context_window_compression
        self.usage = UsageTracker(compression.trigger_tokens if compression is not None else None)
        self.transcript = Transcript(remember_chars)
        # Model text from the output transcription when the setup asks for one, else text parts.
        self._transcribed_output = setup.output_audio_transcription is not None
        self.seeded_turns = 0  # of the transcript, in the last fresh start
        # User turns the client began itself (activityStart, or clientContent with
        # turnComplete): what may interrupt the model with automatic detection off.
        self.user_turns_started = 0
        self.activity_starts = 0  # activityStart messages sent
        self.activity_ends = 0  # activityEnd messages sent
        self._start_connection()

    def _start_connection(self) -> None:
        """Per-connection state, as a new connection starts (the queues start empty)."""
        self.connections += 1
        self.state = State.AWAITING_SETUP_COMPLETE
        self.session_id: str | None = None
        self._setup_frame: bytes | None = encode_client(ClientMessage(setup=self.setup))
        # Frames queued but not yet handed to the socket (held until setupComplete).
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        # Index of the last frame handed to the socket (setup is 0), and what it was when the
        # latest server message came in (what a handle without an index can cover at most),
        # and a margin before that (what such a handle surely covers: the caller's estimate).
        self._handed_index = -1
        self._handed_before_last_message = 0
        self._handed_a_margin_before_last_message = 0
        # Audio frames a handle without an index may or may not cover, (index, frame): sent
        # again on a resume, before `_unconsumed`.
        self._resend: deque[tuple[int, bytes]] = deque()
        # Handed-out frames the newest handle may not include; the first has index
        # `_unconsumed_first` (indices are consecutive).
        self._unconsumed: deque[bytes] = deque()
        self._unconsumed_first = 1
        self._unconsumed_bytes = 0
        # Realtime input held while a blocking call is unanswered (bounded as `_pending`).
        self._held: list[bytes] = []
        self._held_bytes = 0
        resumption = self.setup.session_resumption
        self.resumption_handle: str | None = resumption.handle if resumption else None
        self.resumable = False
        self.last_consumed_index: int | None = None
        self.model_turn_active = False
        self._turn_interrupted = False
        self.go_away_time_left_s: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def new_connection(self, handle: str | None) -> int:
        """Start the session's next connection: a resumption with ``handle`` (unanswered
        calls carry over, and realtime input stays held behind a blocking one), or, with
        ``None``, a fresh session (no call is pending there, and answers to the old one's calls
        are not sent; a user turn whose ``activityStart`` the old one took is begun again).
        Everything the service may not have consumed goes out first after ``setupComplete``,
        then what was queued since, in order; returns how many frames that is. Callable in any state but ``CLOSED``."""
        if self.state is State.CLOSED:
            raise LocalProtocolError("the session is closed")
        carried = self.unconsumed_frames()
        if handle is None:  # answers to the old session's calls mean nothing to a new one
            carried = [f for f in carried if not f.startswith(_TOOL_RESPONSE_FRAME_START)]
        resumption = self.setup.session_resumption
        if resumption is not None:
            resumption = msgspec.structs.replace(resumption, handle=handle)
            self.setup = msgspec.structs.replace(self.setup, session_resumption=resumption)
        if handle is None:
            self.pending_tool_calls.clear()
        self._start_connection()
        self.seeded_turns = 0
        seed = self.transcript.turns() if handle is None and self.transcript.max_chars else []
        if seed:  # a fresh session: the conversation so far, as context (no reply asked for)
            self._queue(encode_client(ClientMessage(client_content=ClientContent(turns=seed, turn_complete=False))))
            self.seeded_turns = len(seed)
        if handle is None and self._activity_open_before(carried):
            # The old session took the activityStart of the user's turn under way: the new one
            # hears that turn from where its audio resumes, as a turn.
            self._queue(_ACTIVITY_START_FRAME)
        for frame in carried:
            self._queue(frame)
        return len(carried)

    def _activity_open_before(self, carried: list[bytes]) -> bool:
        """Whether an activity (``activityStart`` without its end) was open where ``carried``
        begins: what went before it counts."""
        starts = self.activity_starts - carried.count(_ACTIVITY_START_FRAME)
        return starts > self.activity_ends - carried.count(_ACTIVITY_END_FRAME)

    # --- sending -------------------------------------------------------------------------------

    def _queue(self, frame: bytes) -> int | None:
        if len(frame) > self.max_frame_bytes:
            raise MessageTooLargeError(f"a {len(frame)}-byte frame exceeds {self.max_frame_bytes} bytes")
        if self.pending_tool_calls and frame.startswith(_REALTIME_FRAME_START) and self.input_held:
            self._held.append(frame)
            self._held_bytes = self._shed_audio(self._held, self._held_bytes + len(frame))
            return None
        pending = self._pending
        pending.append(frame)
        self._pending_bytes = self._shed_audio(pending, self._pending_bytes + len(frame))
        return max(self._handed_index, 0) + len(self._pending)

    def _shed_audio(self, frames: list[bytes], size: int) -> int:
        """Over the bound, drop the oldest audio frames of ``frames`` (in place) until ``size``
        fits, never the newest frame nor a message that is not audio; returns the new size."""
        if size <= self.max_pending_bytes:
            return size
        kept: list[bytes] = []
        for n, frame in enumerate(frames[:-1]):
            if size <= self.max_pending_bytes:
                kept.extend(frames[n:-1])
                break
            if frame.startswith(_AUDIO_FRAME_START):
                size -= len(frame)
                self.dropped_audio_frames += 1
            else:
                kept.append(frame)
        kept.append(frames[-1])
        frames[:] = kept
        return size

    @property
    def input_held(self) -> bool:
        """Whether realtime input is being held: a blocking function call is unanswered."""
        blocking = self._blocking_functions
        return any(blocking is None or call.name in blocking for call in self.pending_tool_calls.values())

    @property
    def held_input_frames(self) -> int:
        """Realtime frames waiting for the answer to a blocking call."""
        return len(self._held)

    def _hold_queued_input(self) -> None:
        """Realtime input queued before a blocking call came but not yet handed out is held
        too (ahead of what is held already): none goes out while the call is unanswered."""
        held = [f for f in self._pending if f.startswith(_REALTIME_FRAME_START)]
        if held:
            held_bytes = sum(map(len, held))
            self._pending = [f for f in self._pending if not f.startswith(_REALTIME_FRAME_START)]
            self._pending_bytes -= held_bytes
            self._held[:0] = held
            self._held_bytes += held_bytes

    def _release_held(self) -> None:
        """Queue the held realtime input, in order, once no blocking call is unanswered."""
        if self._held and not self.input_held:
            held, self._held = self._held, []
            self._pending.extend(held)
            self._pending_bytes = self._shed_audio(self._pending, self._pending_bytes + self._held_bytes)
            self._held_bytes = 0

    @property
    def has_queued_frames(self) -> bool:
        """Whether :meth:`data_to_send` has frames to hand out now."""
        return bool(self._pending) and self.state is State.OPEN and self._setup_frame is None

    def send(self, message: ClientMessage) -> int | None:
        """Queue a client message; returns the index it will have on this connection (unless
        it is audio shed while the connection is not open), or ``None`` for realtime input
        held while a blocking call is unanswered (its index is known when it is released).

        Raises:
            LocalProtocolError: a second setup, a message with no or several fields, or a
                closed session.
        """
        if self.state is State.CLOSED:
            raise LocalProtocolError("the session is closed")
        fields = [f for f in message.__struct_fields__ if getattr(message, f) is not None]
        if len(fields) != 1:
            raise LocalProtocolError(f"a client message carries exactly one field, got {fields or 'none'}")
        if fields[0] == "setup":
            raise LocalProtocolError("setup is sent once, first, by the protocol itself")
        return self._queue(encode_client(message))

    def send_realtime(self, realtime_input: RealtimeInput) -> int | None:
        set_fields = [f for f in realtime_input.__struct_fields__ if getattr(realtime_input, f) is not None]
        if len(set_fields) != 1:
            raise LocalProtocolError(f"realtimeInput carries exactly one field, got {set_fields or 'none'}")
        return self.send(ClientMessage(realtime_input=realtime_input))

    def send_audio(self, pcm: bytes, sample_rate_hz: int = INPUT_RATE_HZ) -> int | None:
        """Queue 16-bit little-endian mono PCM (the service takes any rate; 16 kHz is native)."""
        return self._queue(self._audio_frame(pcm, sample_rate_hz))

    def audio_to_write(self, pcm: bytes, sample_rate_hz: int = INPUT_RATE_HZ) -> bytes | None:
        """:meth:`send_audio` then :meth:`data_to_send` in one step, for the common case of an
        open connection with nothing queued: the frame to write now, numbered and kept for
        replay as the queue would have. ``None`` when the frame must queue instead."""
        if self._pending or self.pending_tool_calls or self.state is not State.OPEN or self._setup_frame is not None:
            return None
        frame = self._audio_frame(pcm, sample_rate_hz)
        if len(frame) > self.max_frame_bytes:
            raise MessageTooLargeError(f"a {len(frame)}-byte frame exceeds {self.max_frame_bytes} bytes")
        self._hand((frame,), len(frame))
        return frame

    def _audio_frame(self, pcm: bytes, sample_rate_hz: int) -> bytes:
        if len(pcm) % 2:
            raise AudioFormatError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
        if self.state is State.CLOSED:
            raise LocalProtocolError("the session is closed")
        # The frame is a fixed JSON prefix, the base64 (Rust) and a suffix; it is byte for
        # byte what encode_client makes of the same message (tested).
        prefix = _AUDIO_FRAME_PREFIX.get(sample_rate_hz)
        if prefix is None:
            prefix = _AUDIO_FRAME_PREFIX[sample_rate_hz] = (
                b'{"realtimeInput":{"audio":{"mimeType":"' + pcm_mime_type(sample_rate_hz).encode() + b'","data":"'
            )
        return audio_frame(prefix, pcm if type(pcm) is bytes else bytes(pcm), b'"}}}')

    def send_video_frame(self, image: bytes, mime_type: str = "image/jpeg") -> int | None:
        if not mime_type.startswith("image/"):
            raise LocalProtocolError(f"video frames are images, got {mime_type!r}")
        return self.send_realtime(RealtimeInput(video=Blob(mime_type=mime_type, data=image)))

    def send_text(self, text: str) -> int | None:
        """Realtime text: part of the live stream, counts as user activity."""
        index = self.send_realtime(RealtimeInput(text=text))
        self.transcript.user(text)
        return index

    def activity_start(self) -> int | None:
        self.user_turns_started += 1
        self.activity_starts += 1
        return self.send_realtime(RealtimeInput(activity_start=ActivityStart()))

    def activity_end(self) -> int | None:
        self.activity_ends += 1
        return self.send_realtime(RealtimeInput(activity_end=ActivityEnd()))

    def audio_stream_end(self) -> int | None:
        return self.send_realtime(RealtimeInput(audio_stream_end=True))

    def send_client_content(
        self, turns: Iterable[Content] | str | None = None, turn_complete: bool = True
    ) -> int | None:
        """Append turns to the conversation (a string is one user text turn)."""
        if isinstance(turns, str):
            turns = [Content(role="user", parts=[Part(text=turns)])]
        content = ClientContent(turns=list(turns) if turns is not None else None, turn_complete=turn_complete)
        index = self.send(ClientMessage(client_content=content))
        self.user_turns_started += turn_complete
        for turn in content.turns or ():
            text = "".join(part.text for part in turn.parts or () if part.text)
            if text:
                (self.transcript.model if turn.role == "model" else self.transcript.user)(text)
        return index

    def send_tool_response(self, responses: Iterable[FunctionResponse]) -> int | None:
        """Answer pending calls (each response's ``id`` must be a pending call's).

        Raises:
            LocalProtocolError: an id that is not pending.
        """
        responses = list(responses)
        for response in responses:
            if response.id not in self.pending_tool_calls:
                raise LocalProtocolError(f"no pending tool call with id {response.id!r}")
        index = self.send(ClientMessage(tool_response=ToolResponse(function_responses=responses)))
        for response in responses:
            if not response.will_continue:
                self.pending_tool_calls.pop(response.id or "", None)
        self._release_held()
        return index

    def data_to_send(self) -> list[bytes]:
        """Frames to write to the socket now, in order (only ``setup`` until ``setupComplete``)."""
        if self._setup_frame is not None:
            out = [self._setup_frame]
            self._setup_frame = None
            self._handed_index = 0
            return out
        out = self._pending
        if not out or self.state is not State.OPEN:
            return []
        self._pending = []
        self._hand(out, self._pending_bytes)
        self._pending_bytes = 0
        return out

    def _hand(self, frames: Sequence[bytes], size: int) -> None:
        """Number ``frames`` (``size`` bytes in all) as handed to the socket; keep them for
        replay."""
        if self._keep_replay:
            unconsumed = self._unconsumed
            if not unconsumed:
                self._unconsumed_first = self._handed_index + 1
            unconsumed.extend(frames)
            size += self._unconsumed_bytes
            self._unconsumed_bytes = size if size <= self.max_replay_bytes else self._trim_replay(size)
        self._handed_index += len(frames)

    def _trim_replay(self, size: int) -> int:
        """Forget the oldest replay frames, down to 7/8 of the bound (so that a long stream
        over the bound does not pay for this on every frame)."""
        unconsumed, dropped = self._unconsumed, 0
        target = self.max_replay_bytes - self.max_replay_bytes // 8
        while size > target:
            size -= len(unconsumed.popleft())
            dropped += 1
        self._unconsumed_first += dropped
        self.replay_overflow_frames += dropped
        return size

    def unconsumed_frames(self) -> list[bytes]:
        """Frames a new connection must send first: those the newest resumption handle may
        not include, then those never handed to the socket (held realtime input last)."""
        return [*(frame for _, frame in self._resend), *self._unconsumed, *self._pending, *self._held]

    @property
    def unconsumed_count(self) -> int:
        """How many frames :meth:`unconsumed_frames` would return."""
        return len(self._resend) + len(self._unconsumed) + len(self._pending) + len(self._held)

    def _forget_consumed(self, index: int) -> None:
        unconsumed = self._unconsumed
        while unconsumed and self._unconsumed_first <= index:
            self._unconsumed_bytes -= len(unconsumed.popleft())
            self._unconsumed_first += 1

    def _forget_covered(self, surely: int, maybe: int) -> None:
        """A handle without an index covers the frames up to ``surely`` and perhaps those up to
        ``maybe``. Of the latter, audio is kept to be sent again: a repeat is a moment of
        audio heard twice, where other messages (a turn, a tool response) would repeat whole."""
        resend = self._resend
        while resend and resend[0][0] <= surely:
            resend.popleft()
        unconsumed = self._unconsumed
        while unconsumed and self._unconsumed_first <= maybe:
            frame = unconsumed.popleft()
            self._unconsumed_bytes -= len(frame)
            if self._unconsumed_first > surely and frame.startswith(_AUDIO_FRAME_START):
                resend.append((self._unconsumed_first, frame))
            self._unconsumed_first += 1

    # --- receiving -----------------------------------------------------------------------------

    @property
    def handed_index(self) -> int:
        """The index of the newest frame handed to this connection's socket (-1: none yet)."""
        return self._handed_index

    def receive_data(
        self, frame: bytes | str, *, handed_at_arrival: int | None = None, handed_a_margin_before: int | None = None
    ) -> list[ev.Event]:
        """Decode one received frame into events. ``handed_at_arrival``: the
        :attr:`handed_index` when the frame arrived, if it waited to be read (what a
        resumption handle without an index can cover at most follows from it).
        ``handed_a_margin_before``: what it was a round trip or so before that (what such a
        handle surely covers; audio between the two is sent again on a resume). Without it,
        the two are taken to be the same.

        Raises:
            RemoteProtocolError: a malformed frame, or anything before ``setupComplete``.
        """
        if self.state is State.CLOSED or self.state is State.RECONNECTING:
            raise RemoteProtocolError("frame received after the connection closed")
        arrived = self._handed_index if handed_at_arrival is None else handed_at_arrival
        surely = arrived if handed_a_margin_before is None else handed_a_margin_before
        if self.state is State.OPEN:
            # The hot path: a frame with one audio chunk and nothing else, read without
            # building its message (a third of the time per received message).
            audio = model_audio(frame)
            if audio is not None:
                self.model_turn_active = True
                self._handed_before_last_message = arrived
                self._handed_a_margin_before_last_message = surely
                return [self._audio_chunk(*audio)]
        message = decode_server(frame)
        if self.state is State.AWAITING_SETUP_COMPLETE and message.setup_complete is None:
            raise RemoteProtocolError("the first server message must be setupComplete")
        out: list[ev.Event] = []
        self._events(message, out)
        self._handed_before_last_message = arrived
        self._handed_a_margin_before_last_message = surely
        return out

    def _events(self, message: ServerMessage, out: list[ev.Event]) -> None:
        content = message.server_content
        if content is not None and message.usage_metadata is None and message.setup_complete is None:
            # The hot path: content alone (one audio or text chunk per message on 2.5 models).
            self._content_events(content, out)
            return
        if message.setup_complete is not None:
            if self.state is State.OPEN:
                raise RemoteProtocolError("a second setupComplete")
            self.state = State.OPEN
            self.session_id = message.setup_complete.session_id
            out.append(ev.SetupComplete(session_id=self.session_id))
        if message.usage_metadata is not None:
            # Before the content: a caller that stops at turnComplete still sees the usage.
            out.append(ev.Usage(usage=message.usage_metadata))
            if self.usage.add(message.usage_metadata):
                trigger = self.usage.compression_trigger_tokens or 0
                out.append(ev.ContextWindowWarning(prompt_tokens=self.usage.context_tokens, trigger_tokens=trigger))
        if content is not None:
            self._content_events(content, out)
        if message.tool_call is not None:
            calls = message.tool_call.function_calls or []
            for call in calls:
                self.pending_tool_calls[call.id or call.name] = call
            if self._pending and self.input_held:
                self._hold_queued_input()
            out.append(ev.ToolCall(function_calls=calls))
        if message.tool_call_cancellation is not None:
            ids = message.tool_call_cancellation.ids or []
            for call_id in ids:
                self.pending_tool_calls.pop(call_id, None)
            self._release_held()
            out.append(ev.ToolCallCancellation(ids=ids))
        if message.go_away is not None:
            self.go_away_time_left_s = parse_duration_s(message.go_away.time_left)
            out.append(ev.GoAway(time_left_s=self.go_away_time_left_s))
        if message.session_resumption_update is not None:
            out.append(self._resumption(message.session_resumption_update))
        if message.voice_activity is not None:
            activity = message.voice_activity
            out.append(
                ev.VoiceActivity(
                    type=activity.type or activity.voice_activity_type,
                    audio_offset_s=parse_duration_s(activity.audio_offset),
                )
            )

    def _content_events(self, content: ServerContent, out: list[ev.Event]) -> None:
        if content.model_turn is not None:
            self.model_turn_active = True
            for part in content.model_turn.parts or ():
                blob = part.inline_data
                if blob is not None:
                    out.append(self._audio_chunk(blob.mime_type, blob.data))
                elif part.text is not None:
                    out.append(ev.TextChunk(text=part.text, thought=bool(part.thought)))
                    if not part.thought and not self._transcribed_output:
                        self.transcript.model(part.text)
        if content.input_transcription is not None:
            t = content.input_transcription
            out.append(ev.InputTranscription(text=t.text or "", finished=bool(t.finished)))
            self.transcript.user(t.text or "")
        if content.output_transcription is not None:
            t = content.output_transcription
            out.append(ev.OutputTranscription(text=t.text or "", finished=bool(t.finished)))
            self.transcript.model(t.text or "")
        if content.grounding_metadata is not None:
            out.append(ev.GroundingMetadata(metadata=content.grounding_metadata))
        if content.interrupted:
            self.model_turn_active = False
            self._turn_interrupted = True
            out.append(ev.Interrupted())
        if content.generation_complete:
            out.append(ev.GenerationComplete())
        if content.turn_complete:
            self.model_turn_active = False
            self.turns_completed += 1
            self.transcript.end_turn()
            out.append(
                ev.TurnComplete(
                    reason=content.turn_complete_reason,
                    waiting_for_input=bool(content.waiting_for_input),
                    interrupted=self._turn_interrupted,
                )
            )
            self._turn_interrupted = False

    @staticmethod
    def _audio_chunk(mime_type: str, data: bytes) -> ev.AudioChunk:
        if len(data) % 2 and mime_type.startswith("audio/pcm"):
            raise RemoteProtocolError(f"16-bit PCM with an odd byte count ({len(data)})")
        return ev.AudioChunk(data=data, sample_rate_hz=rate_from_mime(mime_type, OUTPUT_RATE_HZ))

    def _resumption(self, update) -> ev.SessionResumptionUpdate:
        self.resumable = bool(update.resumable)
        index = update.last_consumed_client_message_index
        if index is not None:
            try:
                self.last_consumed_index = int(index)
            except ValueError as exc:
                raise RemoteProtocolError(f"lastConsumedClientMessageIndex is not an integer: {index!r}") from exc
        if update.resumable and update.new_handle:
            self.resumption_handle = update.new_handle
            # Only a resumable handle moves the replay point: resuming from an older handle
            # needs everything after *its* index.
            if index is not None:
                self._forget_consumed(int(index))
            elif not self.transparent:
                # Without an index the handle covers at most what had been sent when the
                # message before it came: the service issues it after that one (right after
                # setupComplete, before reading what the client sent on, for one), so what
                # went out since may not be in it and is kept for a resume. Nor may what went
                # out a round trip before that message came: its audio is kept too.
                self._forget_covered(self._handed_a_margin_before_last_message, self._handed_before_last_message)
        return ev.SessionResumptionUpdate(
            handle=update.new_handle or None,
            resumable=self.resumable,
            last_consumed_client_message_index=self.last_consumed_index if index is not None else None,
        )

    def connection_closed(self, code: int | None, reason: str = "", *, reconnecting: bool = False) -> SessionError:
        """Record the close; returns the typed error that describes it. With ``reconnecting``
        another connection follows (:meth:`new_connection`) and sends keep queuing for it;
        without, the session is over and sends raise. Closing a closed session changes nothing."""
        if self.state is not State.CLOSED:
            self.state = State.RECONNECTING if reconnecting else State.CLOSED
            self.close_code, self.close_reason = code, reason
        return closed_error(code, reason)
