"""``LiveConfig``: the session setup with Pythonic names, turned into the wire ``Setup``."""

from __future__ import annotations

from typing import Literal

import msgspec

from geminilive._native import InputChunker
from geminilive.messages import (
    AudioTranscriptionConfig,
    AutomaticActivityDetection,
    Content,
    ContextWindowCompression,
    GenerationConfig,
    Part,
    PrebuiltVoiceConfig,
    ProactivityConfig,
    RealtimeInputConfig,
    SessionResumptionConfig,
    Setup,
    SlidingWindow,
    SpeechConfig,
    ThinkingConfig,
    Tool,
    VoiceConfig,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_VERTEX_MODEL", "LiveConfig"]

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
DEFAULT_VERTEX_MODEL = "gemini-live-2.5-flash-native-audio"

Sensitivity = Literal["HIGH", "LOW"]


class LiveConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a session asks of the model. Every field is optional; ``None`` leaves the
    service's default. ``to_setup`` builds the wire message."""

    response_modalities: list[Literal["AUDIO", "TEXT"]] | None = None
    voice: str | None = None
    language_code: str | None = None
    system_instruction: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int | None = None
    seed: int | None = None
    media_resolution: Literal["MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH"] | None = None
    thinking_budget: int | None = None  # 2.5
    thinking_level: Literal["MINIMAL", "LOW", "MEDIUM", "HIGH"] | None = None  # 3.1 (3.8 takes no thinking config)
    enable_affective_dialog: bool | None = None
    tools: list[Tool] | None = None
    # Voice activity detection (server side). automatic_activity_detection=False means the
    # client marks turns with activity_start()/activity_end().
    automatic_activity_detection: bool | None = None
    start_of_speech_sensitivity: Sensitivity | None = None
    end_of_speech_sensitivity: Sensitivity | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    activity_handling: Literal["START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"] | None = None
    turn_coverage: (
        Literal["TURN_INCLUDES_ONLY_ACTIVITY", "TURN_INCLUDES_ALL_INPUT", "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO"]
        | None
    ) = None
    input_audio_transcription: bool = False
    output_audio_transcription: bool = False
    # Ask for resumption handles (on by default: reconnects lose nothing).
    session_resumption: bool = True
    resumption_handle: str | None = None
    transparent_resumption: bool | None = None
    context_window_compression: bool = False
    compression_trigger_tokens: int | None = None
    compression_target_tokens: int | None = None
    proactive_audio: bool | None = None

    def input_chunker(self, sample_rate_hz: int, chunk_ms: int = 20, steady_chunk_ms: int = 100) -> InputChunker:
        """An :class:`~geminilive.InputChunker` for the user's audio whose steady stretches
        clear this setup's activity detection: speech settles after the prefix padding, a
        silence is long after the silence that ends a turn, and a pause shorter than that ends
        speech (so speech resumed after a turn could have ended goes at ``chunk_ms``)."""
        prefix, silence = self.prefix_padding_ms or 0, self.silence_duration_ms
        return InputChunker(
            sample_rate_hz,
            chunk_ms,
            steady_chunk_ms,
            settle_ms=max(300, prefix + 200),
            long_silence_ms=2000 if silence is None else max(2000, silence + 1000),
            pause_ms=200 if silence is None else max(10, min(200, silence // 2)),
        )

    def to_setup(self, model: str) -> Setup:
        """The wire ``setup`` for ``model`` (``models/`` is prefixed unless a path is given)."""
        if "/" not in model:
            model = f"models/{model}"
        speech = None
        if self.voice or self.language_code:
            voice = (
                VoiceConfig(prebuilt_voice_config=PrebuiltVoiceConfig(voice_name=self.voice)) if self.voice else None
            )
            speech = SpeechConfig(voice_config=voice, language_code=self.language_code)
        generation = GenerationConfig(
            response_modalities=self.response_modalities,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_output_tokens=self.max_output_tokens,
            seed=self.seed,
            speech_config=speech,
            media_resolution=self.media_resolution,
            thinking_config=ThinkingConfig(thinking_budget=self.thinking_budget, thinking_level=self.thinking_level)
            if self.thinking_budget is not None or self.thinking_level is not None
            else None,
            enable_affective_dialog=self.enable_affective_dialog,
        )
        vad = None
        if any(
            v is not None
            for v in (
                self.automatic_activity_detection,
                self.start_of_speech_sensitivity,
                self.end_of_speech_sensitivity,
                self.prefix_padding_ms,
                self.silence_duration_ms,
            )
        ):
            vad = AutomaticActivityDetection(
                disabled=None if self.automatic_activity_detection is None else not self.automatic_activity_detection,
                start_of_speech_sensitivity=f"START_SENSITIVITY_{self.start_of_speech_sensitivity}"  # type: ignore[arg-type]
                if self.start_of_speech_sensitivity
                else None,
                end_of_speech_sensitivity=f"END_SENSITIVITY_{self.end_of_speech_sensitivity}"  # type: ignore[arg-type]
                if self.end_of_speech_sensitivity
                else None,
                prefix_padding_ms=self.prefix_padding_ms,
                silence_duration_ms=self.silence_duration_ms,
            )
        realtime = None
        if vad or self.activity_handling or self.turn_coverage:
            realtime = RealtimeInputConfig(
                automatic_activity_detection=vad,
                activity_handling=self.activity_handling,
                turn_coverage=self.turn_coverage,
            )
        compression = None
        if self.context_window_compression:
            compression = ContextWindowCompression(
                trigger_tokens=self.compression_trigger_tokens,
                sliding_window=SlidingWindow(target_tokens=self.compression_target_tokens),
            )
        return Setup(
            model=model,
            generation_config=generation if generation != GenerationConfig() else None,
            system_instruction=Content(role="user", parts=[Part(text=self.system_instruction)])
            if self.system_instruction
            else None,
            tools=self.tools,
            realtime_input_config=realtime,
            session_resumption=SessionResumptionConfig(
                handle=self.resumption_handle, transparent=self.transparent_resumption
            )
            if self.session_resumption
            else None,
            context_window_compression=compression,
            input_audio_transcription=AudioTranscriptionConfig() if self.input_audio_transcription else None,
            output_audio_transcription=AudioTranscriptionConfig() if self.output_audio_transcription else None,
            proactivity=ProactivityConfig(proactive_audio=self.proactive_audio)
            if self.proactive_audio is not None
            else None,
        )
