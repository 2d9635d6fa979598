"""A Pipecat service backed by a geminilive session: ``GeminiLiveService`` takes the place of
Pipecat's ``GeminiLiveLLMService`` in a pipeline, with the same role and frames.

    llm = GeminiLiveService(api_key=..., system_instruction="...", tools=tools)
    pipeline = Pipeline([transport.input(), user_aggregator, llm, transport.output(), assistant_aggregator])

User audio frames go in at any rate (resampled to 16 kHz in Rust); bot audio comes out as
``TTSAudioRawFrame`` at the pipeline's output rate (resampled by geminilive, not by the
transport); the model's ``interrupted`` broadcasts an ``InterruptionFrame`` (the transport
clears what it queued); transcripts come out as ``TranscriptionFrame`` (upstream, for the
user aggregator) and ``TTSTextFrame``; function calls run through Pipecat's own registration
(``register_function``, ``FunctionSchema`` handlers) and their results go back to the model;
token usage is reported as Pipecat usage metrics.

Underneath is a :class:`geminilive.Session`: audio and results sent while a connection is
down are kept and replayed from what the service last consumed, ``goAway`` is handed over to
a new connection before the old one closes, and a refused resumption starts a fresh session
seeded with the conversation's transcript. A session that ends for good is a Pipecat error
(``push_error``, permanent), with the typed geminilive error as its exception.

Conversions of Pipecat's context (messages, tools) are Pipecat's own
(``GeminiLiveLLMAdapter``), so a context means what it means to ``GeminiLiveLLMService``.
The service emits the app-level events ``on_reconnecting``, ``on_resumed`` and
``on_model_failure`` (the geminilive event is the argument).

Install with ``pip install 'geminilive[pipecat]'``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from pipecat.adapters.llm.services.gemini_adapter import GeminiLLMAdapter
from pipecat.adapters.llm.services.gemini_live_adapter import GeminiLiveLLMAdapter
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallFromLLM,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    InputTextRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    LLMThoughtEndFrame,
    LLMThoughtStartFrame,
    LLMThoughtTextFrame,
    TextType,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings
from pipecat.utils.string import match_endofsentence
from pipecat.utils.time import time_now_iso8601

import geminilive
from geminilive import events as ev
from geminilive._native import Resampler, f32_to_s16le, s16le_to_f32, to_mono
from geminilive.config import DEFAULT_MODEL, LiveConfig
from geminilive.errors import GeminiLiveError
from geminilive.integrations import session_ended
from geminilive.messages import Content, FunctionResponse, Tool, from_json_tree
from geminilive.session import Session
from geminilive.watchdog import SessionWatcher, WatchdogConfig

__all__ = ["GeminiLiveService"]

_log = logging.getLogger("geminilive.integrations.pipecat")


class GeminiLiveService(LLMService):
    """Pipecat's Gemini Live service, on geminilive.

    Args:
        api_key: Gemini Developer API key (default ``GEMINI_API_KEY``/``GOOGLE_API_KEY``);
            with ``endpoint`` (e.g. the local emulator's ``emu.url``) none is needed.
        model, voice_id, system_instruction, tools: as for ``GeminiLiveLLMService``; ``tools``
            a ``ToolsSchema`` or a list of ``FunctionSchema``/direct functions (their
            handlers register themselves) or provider-native tool dicts.
        config: a :class:`geminilive.LiveConfig` for the rest of the setup (transcription of
            both sides is on unless it says otherwise; ``automatic_activity_detection=False``
            has Pipecat's ``UserStarted/StoppedSpeakingFrame`` mark the turns).
        endpoint: where to connect (default: the Gemini Developer API).
        connect_options: more keyword arguments of :func:`geminilive.connect`
            (``reconnect=``, ``ssl=``, ``max_buffered_audio_s=``, ...).
        start_audio_paused: drop user audio until ``set_audio_input_paused(False)``.
        inference_on_context_initialization: when the first context brings messages, have
            the model answer them at once.
        end_of_reply_timeout_s: an ``EndFrame`` that comes while the model is answering waits
            for the reply's end (as with ``GeminiLiveLLMService``), this long at most.
        watchdog: how the model's silent failures are noticed (:mod:`geminilive.watchdog`:
            rejected or empty turns, replies cut off, near-silent audio, repeated calls, no
            reply to a turn the client ended); each is an ``on_model_failure`` event (a
            :class:`geminilive.events.ModelFailure`) and counted in the session's
            ``stats.model_failures``. None: not watched.
    """

    adapter_class = GeminiLiveLLMAdapter

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str | None = None,
        voice_id: str | None = None,
        system_instruction: str | None = None,
        tools: Any = None,
        config: LiveConfig | None = None,
        endpoint: str | None = None,
        connect_options: Mapping[str, Any] | None = None,
        start_audio_paused: bool = False,
        inference_on_context_initialization: bool = True,
        end_of_reply_timeout_s: float = 30.0,
        watchdog: WatchdogConfig | None = WatchdogConfig(),  # noqa: B008 (frozen: one is fine)
        **kwargs: Any,
    ) -> None:
        # Pipecat's generic settings that a LiveConfig holds instead are None: "not used".
        settings = kwargs.pop("settings", None) or LLMSettings(
            model=model or DEFAULT_MODEL,
            system_instruction=system_instruction,
            temperature=None,
            max_tokens=None,
            top_p=None,
            top_k=None,
            frequency_penalty=None,
            presence_penalty=None,
            seed=None,
            filter_incomplete_user_turns=False,
            user_turn_completion_config=None,
        )
        super().__init__(settings=settings, **kwargs)
        base = config or LiveConfig(input_audio_transcription=True, output_audio_transcription=True)
        self._config = msgspec.structs.replace(base, voice=voice_id or base.voice)
        self._model = model or DEFAULT_MODEL
        self._api_key, self._endpoint = api_key, endpoint
        self._connect_options = dict(connect_options or {})
        self._system_instruction = system_instruction
        if isinstance(tools, list):
            tools = LLMContext._normalize_and_validate_tools(tools, allow_provider_tools=True)
        self._tools = tools
        self._audio_paused = start_audio_paused
        self._inference_on_context_initialization = inference_on_context_initialization
        self._session: Session | None = None
        self._receiver: Any = None
        self._watchdog_config = watchdog
        self._watcher: Any = None  # the task polling the session's watchdog
        self._context: LLMContext | None = None
        self._output_rate = 24000
        self._output_resampler: Resampler | None = None
        self._responding = False  # a response has started (LLMFullResponseStartFrame)...
        self._speaking = False  # ... and speaks (TTSStartedFrame)
        self._user_text = ""
        self.end_of_reply_timeout_s = end_of_reply_timeout_s
        self._deferred_end: EndFrame | None = None
        self._end_timer: Any = None
        self._call_names: dict[str, str] = {}
        for name in ("on_reconnecting", "on_resumed", "on_model_failure"):
            self._register_event_handler(name)

    def can_generate_metrics(self) -> bool:
        return True

    def set_audio_input_paused(self, paused: bool) -> None:
        self._audio_paused = paused

    @property
    def session(self) -> Session | None:
        """The geminilive session underneath (its ``stats``, ``usage``, ``protocol``)."""
        return self._session

    def _service_tools(self) -> Any:
        return self._tools

    # --- lifecycle -----------------------------------------------------------------------------

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]  # as FrameProcessor.setup
        await super().setup(setup)
        self._output_rate = setup.audio_out_sample_rate
        await self._connect(self._system_instruction, self._session_tools(None))

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._disconnect()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._disconnect()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._disconnect()

    async def _connect(self, system_instruction: str | None, tools: list[Tool] | None) -> None:
        config = msgspec.structs.replace(self._config, system_instruction=system_instruction, tools=tools)
        try:
            self._session = await geminilive.connect(
                model=self._model,
                config=config,
                api_key=self._api_key,
                endpoint=self._endpoint,
                **self._connect_options,
            )
        except GeminiLiveError as exc:
            message = f"Gemini Live: could not connect: {exc}"
            await self.push_error(message, exception=exc, force_treat_as_permanent=True)
            return
        watcher = None
        if self._watchdog_config is not None:
            watcher = SessionWatcher(self._session, self._watchdog_config, self._model_failed)
            self._watcher = self.create_task(watcher.watch(), name="geminilive-watchdog")
        self._receiver = self.create_task(self._receive(self._session, watcher), name="geminilive-receive")

    async def _disconnect(self) -> None:
        session, self._session = self._session, None
        for task in (self._receiver, self._watcher):
            if task is not None:
                await self.cancel_task(task)
        self._receiver = self._watcher = None
        if session is not None:
            await session.close()

    # --- frames in -----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, EndFrame) and self._responding and self._deferred_end is None:
            self._deferred_end = frame  # the reply plays to its end first
            self._end_timer = self.create_task(self._release_end_later(), name="geminilive-end-of-reply")
            return
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self._send_user_audio(frame)
        elif isinstance(frame, LLMContextFrame):
            await self._handle_context(frame.context)
            return  # the context stops here, as with GeminiLiveLLMService
        elif isinstance(frame, InputTextRawFrame):
            if self._session is not None:
                await self._session.send_text(frame.text)
        elif isinstance(frame, LLMMessagesAppendFrame):
            await self._append_messages(frame)
        elif isinstance(frame, InterruptionFrame):
            await self._end_response(interrupted=True)
        elif isinstance(frame, UserStartedSpeakingFrame):
            if self._session is not None and self._config.automatic_activity_detection is False:
                await self._session.activity_start()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.start_ttfb_metrics()
            if self._session is not None and self._config.automatic_activity_detection is False:
                await self._session.activity_end()
        await self.push_frame(frame, direction)

    async def _send_user_audio(self, frame: InputAudioRawFrame) -> None:
        if self._audio_paused or self._session is None:
            return
        pcm: bytes | np.ndarray = frame.audio
        if frame.num_channels != 1:
            pcm = to_mono(s16le_to_f32(frame.audio), frame.num_channels)
        try:
            await self._session.send_audio(pcm, frame.sample_rate)
        except GeminiLiveError as exc:  # the session is over: its receive side reports why
            _log.debug("user audio after the session ended: %s", exc)

    async def _handle_context(self, context: LLMContext) -> None:
        first = self._context is None
        self._context = context
        if not first:
            return  # the service keeps its own context; results go back as they come
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context, system_instruction=self._system_instruction, service_tools=self._tools
        )
        instruction = params.get("system_instruction") or None
        tools = self._session_tools(params.get("tools"))
        if instruction != self._system_instruction or tools != self._session_tools(None):
            # The Live API takes both only in the setup: a new session for them.
            await self._disconnect()
            await self._connect(instruction, tools)
        turns = self._turns(params.get("messages") or [])
        if turns and self._session is not None:
            await self._session.send_client_content(turns, turn_complete=self._inference_on_context_initialization)

    async def _append_messages(self, frame: LLMMessagesAppendFrame) -> None:
        if self._session is None:
            return
        context = LLMContext(messages=list(frame.messages))
        params = await self.get_llm_adapter().get_llm_invocation_params(context)
        turns = self._turns(params.get("messages") or [])
        if turns:
            await self._session.send_client_content(turns, turn_complete=frame.run_llm is not False)

    def _session_tools(self, adapted: Any) -> list[Tool] | None:
        """The tools for the setup, from the adapter's (provider-native) form."""
        if adapted is None:
            if self._tools is None:
                return None
            adapted = self.get_llm_adapter().from_standard_tools(self._tools)
        if not adapted or not isinstance(adapted, list):
            return None
        return from_json_tree(adapted, list[Tool])

    @staticmethod
    def _turns(messages: Sequence[Any]) -> list[Content]:
        """google-genai ``Content`` objects (what the adapter gives) as wire contents."""
        trees = [m.model_dump(mode="json", exclude_none=True) if hasattr(m, "model_dump") else m for m in messages]
        return from_json_tree(trees, list[Content])

    # --- function results ----------------------------------------------------------------------

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        if direction == FrameDirection.DOWNSTREAM and isinstance(frame, FunctionCallResultFrame):
            await self._send_result(frame)
        await super().push_frame(frame, direction)

    async def _send_result(self, frame: FunctionCallResultFrame) -> None:
        if self._session is None:
            return
        is_final = frame.properties.is_final if frame.properties else True
        result = GeminiLLMAdapter.to_function_response_dict(frame.result if frame.result is not None else "COMPLETED")
        response = FunctionResponse(
            id=frame.tool_call_id,
            name=self._call_names.get(frame.tool_call_id, frame.function_name),
            response=result,
            will_continue=None if is_final else True,
        )
        try:
            await self._session.send_tool_response(response)
        except GeminiLiveError as exc:
            _log.debug("a function result after the session ended: %s", exc)

    # --- events out ----------------------------------------------------------------------------

    async def _receive(self, session: Session, watcher: SessionWatcher | None) -> None:
        try:
            async for event in session:
                if watcher is not None:
                    watcher.observe(event)
                await self._on_event(event)
        except GeminiLiveError as exc:
            if self._session is session:
                await self.push_error(f"Gemini Live: {exc}", exception=exc, force_treat_as_permanent=True)
        else:
            if self._session is session:
                ended = session_ended(session)
                await self.push_error(f"Gemini Live: {ended}", exception=ended, force_treat_as_permanent=True)

    async def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.AudioChunk):
            await self._start_response()
            await self._push_audio(self._resample(event.data, event.sample_rate_hz))
        elif isinstance(event, ev.OutputTranscription):
            if event.text:
                await self._start_response()
                await self._push_output_text(event.text)
        elif isinstance(event, ev.TextChunk):
            await self._push_text(event)
        elif isinstance(event, ev.InputTranscription):
            await self._user_said(event.text, finished=event.finished)
        elif isinstance(event, ev.Interrupted):
            await self._flush_user_text()
            await self.broadcast_interruption()
            await self._end_response(interrupted=True)
        elif isinstance(event, ev.TurnComplete):
            await self._flush_user_text()
            await self._end_response(interrupted=event.interrupted)
        elif isinstance(event, ev.ToolCall):
            await self._run_calls(event)
        elif isinstance(event, ev.ToolCallCancellation):
            for call_id in event.ids:
                await self._cancel_function_calls_by_tool_call_id(call_id)
        elif isinstance(event, ev.Usage):
            await self._report_usage(event)
        elif isinstance(event, ev.Reconnecting):
            await self._call_event_handler("on_reconnecting", event)
        elif isinstance(event, ev.Resumed | ev.ResumptionFailed):
            await self._call_event_handler("on_resumed", event)

    def _model_failed(self, failure: ev.ModelFailure) -> None:
        _log.warning("the model failed (%s): %s", failure.kind, failure.detail)
        self.create_task(self._call_event_handler("on_model_failure", failure), name="geminilive-model-failure")

    async def _start_response(self, *, speech: bool = True) -> None:
        """The frames that open a response (``TTSStartedFrame`` too once it speaks)."""
        if not self._responding:
            self._responding = True
            await self._flush_user_text()
            await self.stop_ttfb_metrics()
            if speech:
                self._speaking = True
                await self.push_frame(TTSStartedFrame())
            await self.push_frame(LLMFullResponseStartFrame())
        elif speech and not self._speaking:
            self._speaking = True
            await self.push_frame(TTSStartedFrame())

    async def _end_response(self, *, interrupted: bool) -> None:
        resampler, self._output_resampler = self._output_resampler, None
        if not self._responding:
            return
        self._responding = False
        if self._speaking:
            self._speaking = False
            if not interrupted and resampler is not None:
                await self._push_audio(f32_to_s16le(resampler.flush()))
            await self.push_frame(TTSStoppedFrame())
        if not interrupted:  # an interruption already ends the response for the aggregator
            await self.push_frame(LLMFullResponseEndFrame())
        await self._release_end()

    async def _release_end_later(self) -> None:
        await asyncio.sleep(self.end_of_reply_timeout_s)
        _log.warning("the reply did not end in %.0f s: ending the pipeline anyway", self.end_of_reply_timeout_s)
        await self._release_end()

    async def _release_end(self) -> None:
        frame, self._deferred_end = self._deferred_end, None
        timer, self._end_timer = self._end_timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
        if frame is not None:
            await self.queue_frame(frame)

    def _resample(self, pcm: bytes, rate: int) -> bytes:
        if rate == self._output_rate:
            return pcm
        if self._output_resampler is None or self._output_resampler.input_rate_hz != rate:
            self._output_resampler = Resampler(rate, self._output_rate)
        return f32_to_s16le(self._output_resampler.process(s16le_to_f32(pcm)))

    async def _push_audio(self, pcm: bytes) -> None:
        if pcm:
            await self.push_frame(TTSAudioRawFrame(audio=pcm, sample_rate=self._output_rate, num_channels=1))

    async def _push_output_text(self, text: str) -> None:
        # As GeminiLiveLLMService does: an LLMTextFrame for RTVI (not for the context), and
        # the TTSTextFrame the assistant aggregator records.
        llm_text = LLMTextFrame(text)
        llm_text.append_to_context = False
        await self.push_frame(llm_text)
        tts_text = TTSTextFrame(text, text_type=TextType.SENTENCE)
        tts_text.includes_inter_frame_spaces = True
        await self.push_frame(tts_text)

    async def _push_text(self, event: ev.TextChunk) -> None:
        if event.thought:
            await self.push_frame(LLMThoughtStartFrame())
            await self.push_frame(LLMThoughtTextFrame(event.text))
            await self.push_frame(LLMThoughtEndFrame())
            return
        await self._start_response(speech=False)
        await self.push_frame(LLMTextFrame(event.text))

    async def _user_said(self, text: str, *, finished: bool) -> None:
        """Input transcription comes in pieces: pass it on a sentence at a time."""
        self._user_text += text.lstrip() if not self._user_text else text
        while end := match_endofsentence(self._user_text):
            sentence, self._user_text = self._user_text[:end], self._user_text[end:]
            await self._push_transcription(sentence)
        if finished:
            await self._flush_user_text()

    async def _flush_user_text(self) -> None:
        text, self._user_text = self._user_text.strip(), ""
        if text:
            await self._push_transcription(text)

    async def _push_transcription(self, text: str) -> None:
        frame = TranscriptionFrame(text=text.strip(), user_id="", timestamp=time_now_iso8601())
        await self.push_frame(frame, FrameDirection.UPSTREAM)

    async def _run_calls(self, event: ev.ToolCall) -> None:
        calls = []
        for call in event.function_calls:
            call_id = call.id or f"call-{len(self._call_names)}"
            self._call_names[call_id] = call.name
            calls.append(
                FunctionCallFromLLM(
                    function_name=call.name, tool_call_id=call_id, arguments=call.args or {}, context=self._context
                )
            )
        await self.run_function_calls(calls)

    async def _report_usage(self, event: ev.Usage) -> None:
        usage = event.usage
        prompt = (usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0)
        completion = (usage.response_token_count or 0) + (usage.thoughts_token_count or 0)
        await self.start_llm_usage_metrics(
            LLMTokenUsage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cache_read_input_tokens=usage.cached_content_token_count,
                reasoning_tokens=usage.thoughts_token_count,
            )
        )
