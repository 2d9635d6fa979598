"""A LiveKit Agents realtime model backed by a geminilive session: ``RealtimeModel`` takes the
place of ``livekit.plugins.google.realtime.RealtimeModel`` in an ``AgentSession``.

    session = AgentSession(llm=RealtimeModel(voice="Puck"))
    await session.start(agent=Agent(instructions="...", tools=[...]), room=ctx.room)

It speaks the framework's realtime interface as LiveKit's Google plugin does: each reply is a
``generation_created`` event with its audio (24 kHz frames), its text (the output
transcription) and its function calls; the model's ``interrupted`` is ``input_speech_started``
(LiveKit stops the agent's speech and clears its output); the user's words come out as
``input_audio_transcription_completed``; token usage as ``RealtimeModelMetrics``; tools are
declared the LiveKit way (``@function_tool``), run by LiveKit, and their results go back to the
model from the chat context; ``generate_reply(instructions=...)`` asks for a reply.

Underneath is a :class:`geminilive.Session`: user audio (any rate, resampled in Rust) and
results sent while a connection is down are kept and replayed from what the service last
consumed, ``goAway`` is handed over to a new connection before the old one closes, and a
refused resumption starts a fresh session seeded with the conversation. A reconnect is
``session_reconnected``; a session that ends for good is a non-recoverable ``error`` whose
``error`` is the typed geminilive error.

The Live API takes instructions and tools only in its setup: the connection opens once the
agent has given them (or the first audio or reply request comes), and a later change (a new
agent) resumes the session on a new connection with the new setup, its context kept.

Install with ``pip install 'geminilive[livekit]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from livekit import rtc
from livekit.agents import llm, utils
from livekit.agents.metrics import RealtimeModelMetrics
from livekit.agents.metrics.base import Metadata
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import images, is_given

import geminilive
from geminilive import events as ev
from geminilive._native import InputChunker, f32_to_s16le, s16le_to_f32, to_mono
from geminilive.config import DEFAULT_MODEL, LiveConfig
from geminilive.errors import GeminiLiveError
from geminilive.integrations import session_ended
from geminilive.messages import (
    Content,
    FunctionResponse,
    ModalityTokenCount,
    Part,
    Tool,
    UsageMetadata,
    from_json_tree,
)
from geminilive.session import Session
from geminilive.watchdog import SessionWatcher, WatchdogConfig

__all__ = ["ModelFailed", "RealtimeModel", "RealtimeSession"]

_log = logging.getLogger("geminilive.integrations.livekit")

OUTPUT_RATE_HZ = 24000
# How generate_reply's instructions reach the model: a user turn that says what they are.
INSTRUCTIONS_TEMPLATE = "<instructions>\n{content}\n</instructions>"


class ModelFailed(GeminiLiveError):
    """The model failed silently (a geminilive watchdog's :class:`~geminilive.events.ModelFailure`),
    reported as a recoverable realtime error."""

    def __init__(self, failure: ev.ModelFailure) -> None:
        super().__init__(f"model failure ({failure.kind}): {failure.detail}")
        self.failure = failure


class RealtimeModel(llm.RealtimeModel):
    """LiveKit's realtime model interface, on geminilive.

    Args:
        instructions: system instructions (an ``Agent``'s own instructions take their place).
        model: the Live model (default: geminilive's default native-audio model).
        api_key: Gemini Developer API key (default ``GEMINI_API_KEY``/``GOOGLE_API_KEY``); with
            ``endpoint`` (e.g. the local emulator's ``emu.url``) none is needed.
        voice, temperature: as for LiveKit's Google realtime model.
        config: a :class:`geminilive.LiveConfig` for the rest of the setup (transcription of
            both sides is on unless it says otherwise; ``automatic_activity_detection=False``
            has LiveKit's turn detection send activityStart/activityEnd).
        endpoint: where to connect (default: the Gemini Developer API).
        connect_options: more keyword arguments of :func:`geminilive.connect`
            (``reconnect=``, ``ssl=``, ``max_buffered_audio_s=``, ...).
        input_chunk_ms: the user's audio goes to the Live API in chunks of this much around
            turn changes (a room's microphone frames are 10 ms: 20 ms halves the messages and
            costs 10 ms of latency at most; LiveKit's Google plugin sends 50 ms chunks).
        steady_input_chunk_ms: the longest chunk within steady speech and long silences,
            where no turn is about to change (:class:`geminilive.InputChunker`: the first
            quiet frame of speech, or voiced frame of a silence, sends what is held at once).
            Fewer messages cost less CPU; equal to ``input_chunk_ms``, chunks are fixed. A
            chunk the frames stop filling goes as it is when its limit has passed.
        watchdog: how the model's silent failures are noticed (:mod:`geminilive.watchdog`:
            rejected or empty turns, replies cut off, near-silent audio, repeated calls, a reply
            that never comes to a ``generate_reply`` or a turn LiveKit committed); each is a
            recoverable ``error`` whose ``error`` is a :class:`ModelFailed`, and counted in
            the session's ``stats.model_failures``. None: not watched. Its ``recovery`` is the
            conversation's (``geminilive.Conversation``); here the app decides.
    """

    def __init__(
        self,
        *,
        instructions: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        voice: str | None = None,
        temperature: float | None = None,
        config: LiveConfig | None = None,
        endpoint: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
        input_chunk_ms: int = 20,
        steady_input_chunk_ms: int = 100,
        watchdog: WatchdogConfig | None = WatchdogConfig(),  # noqa: B008 (frozen: one is fine)
    ) -> None:
        if not 1 <= input_chunk_ms <= 1000:
            raise ValueError(f"input_chunk_ms must be within 1..1000, got {input_chunk_ms}")
        if not input_chunk_ms <= steady_input_chunk_ms <= 2000:
            raise ValueError(f"steady_input_chunk_ms must be within input_chunk_ms..2000, got {steady_input_chunk_ms}")
        self._input_chunk_ms, self._steady_input_chunk_ms = input_chunk_ms, steady_input_chunk_ms
        base = config or LiveConfig(input_audio_transcription=True, output_audio_transcription=True)
        self._config = msgspec.structs.replace(
            base,
            voice=voice or base.voice,
            temperature=base.temperature if temperature is None else temperature,
            system_instruction=instructions if instructions is not None else base.system_instruction,
        )
        self._model_name = model or DEFAULT_MODEL
        self._api_key, self._endpoint = api_key, endpoint
        self._connect_options = dict(connect_options or {})
        self._watchdog_config = watchdog
        audio_out = "TEXT" not in (base.response_modalities or ["AUDIO"])
        super().__init__(
            capabilities=llm.RealtimeCapabilities(
                message_truncation=False,
                turn_detection=base.automatic_activity_detection is not False,
                user_transcription=base.input_audio_transcription,
                auto_tool_reply_generation=True,
                audio_output=audio_out,
                manual_function_calls=False,
                mutable_chat_context=True,
                mutable_instructions=True,
                mutable_tools=True,
                per_response_tool_choice=False,
            )
        )

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def provider(self) -> str:
        return "Gemini"

    def session(self, *, turn_detection_disabled: bool = False) -> RealtimeSession:
        return RealtimeSession(self)

    def _input_chunker(self, sample_rate_hz: int) -> InputChunker:
        return self._config.input_chunker(sample_rate_hz, self._input_chunk_ms, self._steady_input_chunk_ms)

    async def aclose(self) -> None:
        pass


@dataclass
class _Generation:
    """One reply: the channels the framework reads it from."""

    message_ch: utils.aio.Chan[llm.MessageGeneration]
    function_ch: utils.aio.Chan[llm.FunctionCall]
    text_ch: utils.aio.Chan[str]
    audio_ch: utils.aio.Chan[rtc.AudioFrame]
    response_id: str
    input_id: str
    created_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    first_audio_at: float | None = None
    input_text: str = ""
    output_text: str = ""
    done: bool = False

    def close_output(self) -> None:
        self.text_ch.close()
        self.audio_ch.close()


# What push_audio and friends ask for, in order: (name of a Session coroutine, its arguments).
_Send = tuple[str, tuple[Any, ...]]


class RealtimeSession(llm.RealtimeSession):
    """One conversation; its connection is a geminilive :class:`~geminilive.Session`."""

    def __init__(self, realtime_model: RealtimeModel) -> None:
        super().__init__(realtime_model)
        self._owner = realtime_model
        self._loop = asyncio.get_running_loop()  # (asking per audio chunk costs a getpid on 3.11)
        self._instructions = realtime_model._config.system_instruction
        self._tools = llm.ToolContext.empty()
        self._chat_ctx = llm.ChatContext.empty()
        self._outbox: asyncio.Queue[_Send] = asyncio.Queue()
        self._chunker: InputChunker | None = None  # holds the user's audio of the chunk being filled
        self._unsent_timer: asyncio.TimerHandle | None = None
        self._session: Session | None = None
        self._wanted = asyncio.Event()  # open the connection (configured, or needed)
        self._generation: _Generation | None = None
        self._pending_reply: asyncio.Future[llm.GenerationCreatedEvent] | None = None
        self._in_user_activity = False
        self._closed = False
        self._main = asyncio.create_task(self._run(), name="geminilive-livekit-session")

    # --- configuration -------------------------------------------------------------------------

    @property
    def chat_ctx(self) -> llm.ChatContext:
        return self._chat_ctx.copy()

    @property
    def tools(self) -> llm.ToolContext:
        return self._tools.copy()

    @property
    def session(self) -> Session | None:
        """The geminilive session underneath (its ``stats``, ``usage``, ``protocol``)."""
        return self._session

    async def _update_session(
        self,
        *,
        instructions: NotGivenOr[str] = NOT_GIVEN,
        chat_ctx: NotGivenOr[llm.ChatContext] = NOT_GIVEN,
        tools: NotGivenOr[list[llm.Tool]] = NOT_GIVEN,
    ) -> None:
        # The agent's activity configures a new session with this one call: connect after it.
        await super()._update_session(instructions=instructions, chat_ctx=chat_ctx, tools=tools)
        self._wanted.set()

    async def update_instructions(self, instructions: str) -> None:
        if instructions != self._instructions:
            self._instructions = instructions
            self._setup_changed()

    async def update_tools(self, tools: list[llm.Tool]) -> None:
        tool_ctx = llm.ToolContext(tools)
        if tool_ctx != self._tools:
            self._tools = tool_ctx
            self._setup_changed()

    def _setup_changed(self) -> None:
        """Before the connection opens, the setup just takes the change; after, the session
        resumes on a new connection with the new setup (its context kept)."""
        session = self._session
        if session is not None:
            setup = self._live_config().to_setup(session.setup.model)
            session.restart(reason="the agent's instructions or tools changed", setup=setup)

    async def update_chat_ctx(self, chat_ctx: llm.ChatContext) -> None:
        chat_ctx = chat_ctx.copy(
            exclude_handoff=True, exclude_instructions=True, exclude_empty_message=True, exclude_config_update=True
        )
        if self._session is None:
            self._chat_ctx = chat_ctx  # the whole context seeds the connection when it opens
            return
        diff = llm.utils.compute_chat_ctx_diff(self._chat_ctx, chat_ctx)
        if diff.to_remove:
            _log.warning("the Live API cannot remove messages from a conversation: %d kept", len(diff.to_remove))
        added = llm.ChatContext([item for _, item_id in diff.to_create if (item := chat_ctx.get_by_id(item_id))])
        self._chat_ctx = chat_ctx
        turns = _turns(added)
        if turns:
            self._send("send_client_content", turns, False)
        results = [_function_response(item) for item in added.items if item.type == "function_call_output"]
        if results:
            self._send("send_tool_response", results)

    def update_options(self, *, tool_choice: NotGivenOr[llm.ToolChoice | None] = NOT_GIVEN) -> None:
        if is_given(tool_choice) and tool_choice not in (None, "auto"):
            _log.warning("the Live API has no tool_choice=%r: the model chooses", tool_choice)

    def _live_config(self) -> LiveConfig:
        return msgspec.structs.replace(
            self._owner._config, system_instruction=self._instructions, tools=_tools(self._tools)
        )

    # --- input ---------------------------------------------------------------------------------

    def _send(self, name: str, *args: Any) -> None:
        """Queue a call on the session, after the user's audio that came before it."""
        self._send_unsent_audio()
        self._queue(name, *args)

    def _queue(self, name: str, *args: Any) -> None:
        if not self._closed:
            self._outbox.put_nowait((name, args))
            self._wanted.set()

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        pcm = bytes(frame.data)
        if frame.num_channels != 1:
            pcm = f32_to_s16le(to_mono(s16le_to_f32(pcm), frame.num_channels))
        chunker = self._chunker
        if chunker is None or frame.sample_rate != chunker.sample_rate_hz:
            self._send_unsent_audio()
            chunker = self._chunker = self._owner._input_chunker(frame.sample_rate)
        chunk = chunker.push(pcm)
        if chunk is not None:
            self._send_chunk(chunk, chunker.sample_rate_hz)
        elif self._unsent_timer is None:  # a chunk begins: it goes when full, or when frames stop
            self._unsent_timer = self._loop.call_later(chunker.limit_ms / 1000, self._send_unsent_audio)

    def _send_unsent_audio(self) -> None:
        if self._chunker is not None and self._chunker.held_ms:
            self._send_chunk(self._chunker.take(), self._chunker.sample_rate_hz)

    def _send_chunk(self, pcm: bytes, rate: int) -> None:
        if self._unsent_timer is not None:
            self._unsent_timer.cancel()
            self._unsent_timer = None
        session = self._session
        if session is None or not self._outbox.empty() or self._closed:
            self._queue("send_audio", pcm, rate)  # in order, behind what waits
            return
        try:  # the common case: to the socket now, no task switch per chunk
            if session.send_audio_nowait(pcm, rate):
                self._queue("drain")
        except GeminiLiveError as exc:  # the session is over: the receiver reports why
            _log.debug("audio after the session ended: %s", exc)

    def push_video(self, frame: rtc.VideoFrame) -> None:
        options = images.EncodeOptions(format="JPEG", quality=75)
        self._send("send_video_frame", images.encode(frame, options), "image/jpeg")

    def generate_reply(
        self,
        *,
        instructions: NotGivenOr[str] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        tools: NotGivenOr[list[llm.Tool]] = NOT_GIVEN,
    ) -> asyncio.Future[llm.GenerationCreatedEvent]:
        if is_given(tools) or is_given(tool_choice):
            _log.warning("the Live API takes no tools per reply: the session's tools stay")
        if self._pending_reply is not None and not self._pending_reply.done():
            self._pending_reply.cancel("superseded by a new generate_reply")
        reply: asyncio.Future[llm.GenerationCreatedEvent] = asyncio.get_running_loop().create_future()
        self._pending_reply = reply
        self._end_user_activity()
        turns = []
        if is_given(instructions):
            text = INSTRUCTIONS_TEMPLATE.format(content=instructions)
            turns.append(Content(role="user", parts=[Part(text=text)]))
        self._send("send_client_content", turns, True)
        timer = asyncio.get_running_loop().call_later(10.0, self._reply_timed_out, reply)
        reply.add_done_callback(lambda _: timer.cancel())
        return reply

    def _reply_timed_out(self, reply: asyncio.Future[llm.GenerationCreatedEvent]) -> None:
        if not reply.done():
            reply.set_exception(llm.RealtimeError("generate_reply: no reply began within 10 s"))
        if self._pending_reply is reply:
            self._pending_reply = None

    def start_user_activity(self) -> None:
        if self._owner._config.automatic_activity_detection is False and not self._in_user_activity:
            self._in_user_activity = True
            self._send("activity_start")

    def _end_user_activity(self) -> None:
        if self._in_user_activity:
            self._in_user_activity = False
            self._send("activity_end")

    def commit_audio(self) -> None:
        """The end of the user's turn when LiveKit detects turns (automatic detection off)."""
        self._end_user_activity()

    def clear_audio(self) -> None:
        pass  # the Live API keeps no input buffer to clear

    def interrupt(self) -> None:
        # The Live API stops a reply when user activity starts.
        if self._owner._config.activity_handling != "NO_INTERRUPTION":
            self.start_user_activity()

    def truncate(
        self,
        *,
        message_id: str,
        modalities: list[Literal["text", "audio"]],
        audio_end_ms: int,
        audio_transcript: NotGivenOr[str] = NOT_GIVEN,
    ) -> None:
        pass  # capabilities.message_truncation is False: the service keeps what it generated

    async def aclose(self) -> None:
        self._closed = True
        self._main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._main
        if self._pending_reply is not None and not self._pending_reply.done():
            self._pending_reply.cancel("session closed")
        self._finish_generation()

    # --- the connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._wanted.wait()
        config = self._live_config()
        try:
            session = await geminilive.connect(
                model=self._owner._model_name,
                config=config,
                api_key=self._owner._api_key,
                endpoint=self._owner._endpoint,
                **self._owner._connect_options,
            )
        except GeminiLiveError as exc:
            self._error(exc, recoverable=False)
            return
        try:
            turns = _turns(self._chat_ctx)
            if turns:  # the conversation so far, as context
                await session.send_client_content(turns, turn_complete=False)
            self._session = session
            if self._live_config() != config:  # changed while the connection was being opened
                self._setup_changed()
            helpers = [asyncio.create_task(self._send_outbox(session))]
            watcher = None
            if self._owner._watchdog_config is not None:
                watcher = SessionWatcher(session, self._owner._watchdog_config, self._model_failed)
                helpers.append(asyncio.create_task(watcher.watch()))
            try:
                await self._receive(session, watcher)
            finally:
                for task in helpers:
                    task.cancel()
        finally:
            self._session = None
            self._finish_generation()
            await session.close()

    async def _send_outbox(self, session: Session) -> None:
        while True:
            name, args = await self._outbox.get()
            try:
                await getattr(session, name)(*args)
            except GeminiLiveError as exc:  # the session is over: the receiver reports why
                _log.debug("%s after the session ended: %s", name, exc)
                return

    async def _receive(self, session: Session, watcher: SessionWatcher | None) -> None:
        try:
            async for event in session:
                if watcher is not None:
                    watcher.observe(event)
                self._on_event(event)
        except GeminiLiveError as exc:
            self._error(exc, recoverable=False)
        else:
            if not self._closed:
                self._error(session_ended(session), recoverable=False)

    def _model_failed(self, failure: ev.ModelFailure) -> None:
        _log.warning("the model failed (%s): %s", failure.kind, failure.detail)
        self._error(ModelFailed(failure), recoverable=True)

    def _error(self, exc: Exception, *, recoverable: bool) -> None:
        self.emit(
            "error",
            llm.RealtimeModelError(timestamp=time.time(), label=self._owner.label, error=exc, recoverable=recoverable),
        )

    # --- events out ----------------------------------------------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Interrupted):
            if self._pending_reply is None:  # (a reply asked for interrupts what went before)
                self.emit("input_speech_started", llm.InputSpeechStartedEvent())
            return
        if _opens_generation(event) and (self._generation is None or self._generation.done):
            self._start_generation()
        generation = self._generation
        if isinstance(event, ev.AudioChunk) and generation is not None and not generation.audio_ch.closed:
            if generation.first_audio_at is None:
                generation.first_audio_at = time.time()
            samples = len(event.data) // 2
            frame = rtc.AudioFrame(event.data, event.sample_rate_hz, 1, samples)
            generation.audio_ch.send_nowait(frame)
        elif isinstance(event, ev.OutputTranscription) and generation is not None:
            self._push_text(generation, event.text)
        elif isinstance(event, ev.TextChunk) and generation is not None and not event.thought:
            if not self._owner.capabilities.audio_output or not self._owner._config.output_audio_transcription:
                self._push_text(generation, event.text)
        elif isinstance(event, ev.InputTranscription) and generation is not None and event.text:
            text = event.text.lstrip() if not generation.input_text else event.text
            generation.input_text += text
            self._user_transcript(generation, final=False)
        elif isinstance(event, ev.GenerationComplete) and generation is not None:
            generation.completed_at = time.time()
            generation.close_output()  # turnComplete waits for the playout; the reply is whole
        elif isinstance(event, ev.TurnComplete):
            if generation is not None and generation.completed_at is None:
                generation.completed_at = time.time()
            self._finish_generation()
        elif isinstance(event, ev.ToolCall) and generation is not None:
            for call in event.function_calls:
                arguments = json.dumps(call.args or {})
                generation.function_ch.send_nowait(
                    llm.FunctionCall(call_id=call.id or utils.shortuuid("call_"), name=call.name, arguments=arguments)
                )
            self._finish_generation()  # the reply to the results is a generation of its own
        elif isinstance(event, ev.ToolCallCancellation):
            _log.info("the service cancelled calls %s", event.ids)
        elif isinstance(event, ev.Usage):
            self._report_usage(event.usage)
        elif isinstance(event, ev.Resumed | ev.ResumptionFailed):
            if isinstance(event, ev.ResumptionFailed):
                _log.warning("resumption refused (%s): %d turns seeded", event.reason, event.seeded_turns)
            self.emit("session_reconnected", llm.RealtimeSessionReconnectedEvent())

    def _user_transcript(self, generation: _Generation, *, final: bool) -> None:
        """What the user said in the turn so far (LiveKit replaces it with each)."""
        transcript = llm.InputTranscriptionCompleted(
            item_id=generation.input_id,
            transcript=generation.input_text,
            is_final=final,
            turn_started_at=generation.created_at,
        )
        self.emit("input_audio_transcription_completed", transcript)

    def _push_text(self, generation: _Generation, text: str) -> None:
        if text and not generation.text_ch.closed:
            generation.output_text += text
            generation.text_ch.send_nowait(text)

    def _start_generation(self) -> None:
        generation = _Generation(
            message_ch=utils.aio.Chan(),
            function_ch=utils.aio.Chan(),
            text_ch=utils.aio.Chan(),
            audio_ch=utils.aio.Chan(),
            response_id=utils.shortuuid("GR_"),
            input_id=utils.shortuuid("GI_"),
        )
        self._generation = generation
        audio_out = self._owner.capabilities.audio_output
        if not audio_out:
            generation.audio_ch.close()
        modalities: asyncio.Future[list[Literal["text", "audio"]]] = asyncio.get_running_loop().create_future()
        modalities.set_result(["audio", "text"] if audio_out else ["text"])
        generation.message_ch.send_nowait(
            llm.MessageGeneration(
                message_id=generation.response_id,
                text_stream=generation.text_ch,
                audio_stream=generation.audio_ch,
                modalities=modalities,
            )
        )
        created = llm.GenerationCreatedEvent(
            message_stream=generation.message_ch,
            function_stream=generation.function_ch,
            user_initiated=False,
            response_id=generation.response_id,
        )
        reply, self._pending_reply = self._pending_reply, None
        if reply is not None and not reply.done():
            created.user_initiated = True
            reply.set_result(created)
        else:  # a reply nobody asked for cuts what the agent still plays (as LiveKit's plugin)
            self.emit("input_speech_started", llm.InputSpeechStartedEvent())
        self.emit("generation_created", created)

    def _finish_generation(self) -> None:
        generation = self._generation
        if generation is None or generation.done:
            return
        generation.done = True
        self.emit("input_speech_stopped", llm.InputSpeechStoppedEvent(user_transcription_enabled=False))
        if generation.input_text:
            self._user_transcript(generation, final=True)
            self._chat_ctx.add_message(role="user", content=generation.input_text, id=generation.input_id)
        if generation.output_text:
            self._chat_ctx.add_message(role="assistant", content=generation.output_text, id=generation.response_id)
        generation.close_output()
        generation.function_ch.close()
        generation.message_ch.close()

    def _report_usage(self, usage: UsageMetadata) -> None:
        generation = self._generation
        if generation is None:
            return
        duration = (generation.completed_at or time.time()) - generation.created_at
        response = usage.response_token_count or 0
        ttft = generation.first_audio_at - generation.created_at if generation.first_audio_at else -1
        prompt, reply = _by_modality(usage.prompt_tokens_details), _by_modality(usage.response_tokens_details)
        self.emit(
            "metrics_collected",
            RealtimeModelMetrics(
                label=self._owner.label,
                request_id=generation.response_id,
                timestamp=generation.created_at,
                duration=duration,
                ttft=ttft,
                cancelled=False,
                input_tokens=usage.prompt_token_count or 0,
                output_tokens=response,
                total_tokens=usage.total_token_count or 0,
                tokens_per_second=response / duration if duration > 0 else 0.0,
                input_token_details=RealtimeModelMetrics.InputTokenDetails(
                    audio_tokens=prompt.get("AUDIO", 0),
                    text_tokens=prompt.get("TEXT", 0),
                    image_tokens=prompt.get("IMAGE", 0),
                    cached_tokens=usage.cached_content_token_count or 0,
                ),
                output_token_details=RealtimeModelMetrics.OutputTokenDetails(
                    audio_tokens=reply.get("AUDIO", 0), text_tokens=reply.get("TEXT", 0)
                ),
                metadata=Metadata(model_name=self._owner.model, model_provider=self._owner.provider),
            ),
        )


def _opens_generation(event: ev.Event) -> bool:
    """Output of a reply, or the user's words it answers (as LiveKit's Google plugin counts)."""
    if isinstance(event, ev.AudioChunk | ev.ToolCall):
        return True
    if isinstance(event, ev.TextChunk):
        return not event.thought
    return isinstance(event, ev.OutputTranscription | ev.InputTranscription) and bool(event.text)


def _by_modality(details: list[ModalityTokenCount] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for detail in details or ():
        modality = detail.modality or ""
        counts[modality] = counts.get(modality, 0) + (detail.token_count or 0)
    return counts


def _turns(chat_ctx: llm.ChatContext) -> list[Content]:
    """The messages of ``chat_ctx`` as Live API turns (LiveKit's own Google conversion)."""
    trees, _ = chat_ctx.copy(exclude_function_call=True).to_provider_format(
        format="google", inject_dummy_user_message=False
    )
    return from_json_tree(trees, list[Content])


def _tools(tool_ctx: llm.ToolContext) -> list[Tool] | None:
    declarations = tool_ctx.parse_function_tools("google", use_parameters_json_schema=False)
    if not declarations:
        return None
    plain = json.loads(json.dumps(declarations))  # (google-genai's type enums are strings)
    return from_json_tree([{"functionDeclarations": plain}], list[Tool])


def _function_response(output: llm.FunctionCallOutput) -> FunctionResponse:
    return FunctionResponse(
        id=output.call_id,
        name=output.name,
        response={"error": output.output} if output.is_error else {"output": output.output},
    )
