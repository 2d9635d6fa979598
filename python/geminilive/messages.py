"""The Live API's wire messages (BidiGenerateContent), one ``msgspec.Struct`` each.

Field names are Pythonic (snake_case) and travel as lowerCamelCase, as the service sends them.
Decoding is forward compatible (unknown fields are ignored) and accepts what the service's
proto3 JSON parser accepts: camelCase or snake_case keys at any level, standard or URL-safe
base64 with or without padding, integers as strings, integral floats for integer fields.
The common case (camelCase, standard base64) is decoded by msgspec in C; only frames that
need it take the slower normalising path.

Use :func:`encode_client`, :func:`decode_client`, :func:`encode_server`, :func:`decode_server`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from geminilive.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ActivityEnd",
    "ActivityStart",
    "AudioTranscriptionConfig",
    "AutomaticActivityDetection",
    "Blob",
    "ClientContent",
    "ClientMessage",
    "CodeExecutionResult",
    "Content",
    "ContextUpdate",
    "ContextWindowCompression",
    "ExecutableCode",
    "FunctionCall",
    "FunctionDeclaration",
    "FunctionResponse",
    "GenerationConfig",
    "GoAway",
    "HistoryConfig",
    "ModalityTokenCount",
    "Part",
    "PrebuiltVoiceConfig",
    "ProactivityConfig",
    "RealtimeInput",
    "RealtimeInputConfig",
    "ServerContent",
    "ServerMessage",
    "SessionResumptionConfig",
    "SessionResumptionUpdate",
    "Setup",
    "SetupComplete",
    "SlidingWindow",
    "SpeechConfig",
    "ThinkingConfig",
    "Tool",
    "ToolCall",
    "ToolCallCancellation",
    "ToolResponse",
    "Transcription",
    "UsageMetadata",
    "VoiceActivity",
    "VoiceConfig",
    "decode_client",
    "decode_server",
    "encode_client",
    "encode_server",
    "from_json_tree",
    "parse_duration_s",
]


class Wire(msgspec.Struct, rename="camel", omit_defaults=True, gc=False):
    """Base of every wire struct: camelCase keys, defaults (None) left out. Not tracked by the
    garbage collector: decoded JSON holds no cycles, and an emulator keeping thousands of
    received messages per connection made every full collection a pause of tens of ms."""


JsonObject = dict[str, Any]


# --- shared -----------------------------------------------------------------------------------


class Blob(Wire):
    """Inline media: ``data`` is raw bytes in Python, base64 on the wire."""

    mime_type: str = ""
    data: bytes = b""


class FunctionCall(Wire):
    name: str = ""
    args: JsonObject | None = None
    id: str | None = None
    will_continue: bool | None = None


class FunctionResponse(Wire):
    name: str = ""
    response: JsonObject | None = None
    id: str | None = None
    will_continue: bool | None = None
    scheduling: Literal["SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT"] | None = None


class ExecutableCode(Wire):
    language: str | None = None
    code: str | None = None


class CodeExecutionResult(Wire):
    outcome: str | None = None
    output: str | None = None


class Part(Wire):
    text: str | None = None
    inline_data: Blob | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    executable_code: ExecutableCode | None = None
    code_execution_result: CodeExecutionResult | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class Content(Wire):
    parts: list[Part] | None = None
    role: str | None = None


# --- setup ------------------------------------------------------------------------------------


class PrebuiltVoiceConfig(Wire):
    voice_name: str | None = None


class VoiceConfig(Wire):
    prebuilt_voice_config: PrebuiltVoiceConfig | None = None


class SpeechConfig(Wire):
    voice_config: VoiceConfig | None = None
    language_code: str | None = None


class ThinkingConfig(Wire):
    thinking_budget: int | None = None
    include_thoughts: bool | None = None
    thinking_level: str | None = None


class GenerationConfig(Wire):
    response_modalities: list[Literal["AUDIO", "TEXT"]] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: float | None = None
    max_output_tokens: int | None = None
    seed: int | None = None
    candidate_count: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    speech_config: SpeechConfig | None = None
    media_resolution: str | None = None
    thinking_config: ThinkingConfig | None = None
    enable_affective_dialog: bool | None = None


class FunctionDeclaration(Wire):
    name: str = ""
    description: str | None = None
    parameters: JsonObject | None = None
    parameters_json_schema: JsonObject | None = None
    response: JsonObject | None = None
    behavior: Literal["BLOCKING", "NON_BLOCKING"] | None = None


class Tool(Wire):
    function_declarations: list[FunctionDeclaration] | None = None
    google_search: JsonObject | None = None
    code_execution: JsonObject | None = None
    url_context: JsonObject | None = None
    google_maps: JsonObject | None = None


class AutomaticActivityDetection(Wire):
    disabled: bool | None = None
    start_of_speech_sensitivity: (
        Literal["START_SENSITIVITY_UNSPECIFIED", "START_SENSITIVITY_HIGH", "START_SENSITIVITY_LOW"] | None
    ) = None
    end_of_speech_sensitivity: (
        Literal["END_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_HIGH", "END_SENSITIVITY_LOW"] | None
    ) = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None


class RealtimeInputConfig(Wire):
    automatic_activity_detection: AutomaticActivityDetection | None = None
    activity_handling: (
        Literal["ACTIVITY_HANDLING_UNSPECIFIED", "START_OF_ACTIVITY_INTERRUPTS", "NO_INTERRUPTION"] | None
    ) = None
    turn_coverage: str | None = None


class SessionResumptionConfig(Wire):
    handle: str | None = None
    transparent: bool | None = None


class SlidingWindow(Wire):
    target_tokens: int | None = None


class ContextWindowCompression(Wire):
    trigger_tokens: int | None = None
    sliding_window: SlidingWindow | None = None


class AudioTranscriptionConfig(Wire):
    language_codes: list[str] | None = None


class ProactivityConfig(Wire):
    proactive_audio: bool | None = None


class HistoryConfig(Wire):
    initial_history_in_client_content: bool | None = None


class Setup(Wire):
    model: str = ""
    generation_config: GenerationConfig | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    realtime_input_config: RealtimeInputConfig | None = None
    session_resumption: SessionResumptionConfig | None = None
    context_window_compression: ContextWindowCompression | None = None
    input_audio_transcription: AudioTranscriptionConfig | None = None
    output_audio_transcription: AudioTranscriptionConfig | None = None
    proactivity: ProactivityConfig | None = None
    history_config: HistoryConfig | None = None


# --- client -> server ---------------------------------------------------------------------------


class ClientContent(Wire):
    turns: list[Content] | None = None
    turn_complete: bool | None = None


class ActivityStart(Wire):
    pass


class ActivityEnd(Wire):
    pass


class RealtimeInput(Wire):
    """Exactly one field per message."""

    audio: Blob | None = None
    video: Blob | None = None
    text: str | None = None
    activity_start: ActivityStart | None = None
    activity_end: ActivityEnd | None = None
    audio_stream_end: bool | None = None
    media_chunks: list[Blob] | None = None


class ToolResponse(Wire):
    function_responses: list[FunctionResponse] | None = None


class ContextUpdate(Wire):
    system_instruction: Content | None = None
    tools: JsonObject | None = None


class ClientMessage(Wire):
    """One client frame: exactly one field set."""

    setup: Setup | None = None
    client_content: ClientContent | None = None
    realtime_input: RealtimeInput | None = None
    tool_response: ToolResponse | None = None
    context_update: ContextUpdate | None = None


# --- server -> client ---------------------------------------------------------------------------


class SetupComplete(Wire):
    session_id: str | None = None


class Transcription(Wire):
    text: str | None = None
    finished: bool | None = None


class ServerContent(Wire):
    model_turn: Content | None = None
    turn_complete: bool | None = None
    interrupted: bool | None = None
    generation_complete: bool | None = None
    input_transcription: Transcription | None = None
    output_transcription: Transcription | None = None
    grounding_metadata: JsonObject | None = None
    url_context_metadata: JsonObject | None = None
    turn_complete_reason: str | None = None
    waiting_for_input: bool | None = None
    interaction_status: str | None = None


class ToolCall(Wire):
    function_calls: list[FunctionCall] | None = None


class ToolCallCancellation(Wire):
    ids: list[str] | None = None


class GoAway(Wire):
    time_left: str | None = None


class SessionResumptionUpdate(Wire):
    new_handle: str | None = None
    resumable: bool | None = None
    # int64: the service sends it as a decimal string.
    last_consumed_client_message_index: int | str | None = None


class ModalityTokenCount(Wire):
    modality: str | None = None
    token_count: int | None = None


class UsageMetadata(Wire):
    prompt_token_count: int | None = None
    cached_content_token_count: int | None = None
    response_token_count: int | None = None
    candidates_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None
    thoughts_token_count: int | None = None
    total_token_count: int | None = None
    prompt_tokens_details: list[ModalityTokenCount] | None = None
    cache_tokens_details: list[ModalityTokenCount] | None = None
    response_tokens_details: list[ModalityTokenCount] | None = None
    candidates_tokens_details: list[ModalityTokenCount] | None = None
    tool_use_prompt_tokens_details: list[ModalityTokenCount] | None = None
    traffic_type: str | None = None


class VoiceActivity(Wire):
    type: str | None = None
    voice_activity_type: str | None = None
    audio_offset: str | None = None


class ServerMessage(Wire):
    """One server frame: one of the fields, optionally with ``usage_metadata``."""

    setup_complete: SetupComplete | None = None
    server_content: ServerContent | None = None
    tool_call: ToolCall | None = None
    tool_call_cancellation: ToolCallCancellation | None = None
    go_away: GoAway | None = None
    session_resumption_update: SessionResumptionUpdate | None = None
    usage_metadata: UsageMetadata | None = None
    voice_activity: VoiceActivity | None = None


# --- codecs -------------------------------------------------------------------------------------

_client_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientMessage, strict=False)
_server_decoder = msgspec.json.Decoder(ServerMessage, strict=False)
_any_decoder = msgspec.json.Decoder()

# A key with an underscore: the frame may use snake_case names somewhere.
_SNAKE_KEY = re.compile(rb'"[A-Za-z0-9]*_[A-Za-z0-9_]*"\s*:')
_SNAKE_PART = re.compile(r"_([a-z0-9])")
# Values under these keys are user data (function arguments, JSON schemas): keys stay as sent.
_FREE_FORM_KEYS = frozenset(
    {
        "args",
        "response",
        "parameters",
        "parametersJsonSchema",
        "responseJsonSchema",
        "groundingMetadata",
        "urlContextMetadata",
        "googleSearch",
        "codeExecution",
        "urlContext",
        "googleMaps",
        "tools",
    }
)
_BYTES_KEYS = frozenset({"data"})


def _camel(key: str) -> str:
    return _SNAKE_PART.sub(lambda m: m.group(1).upper(), key) if "_" in key else key


def _standard_b64(text: str) -> str:
    """URL-safe and/or unpadded base64 to the standard padded alphabet msgspec decodes."""
    text = text.translate(_URLSAFE_TO_STD)
    return text + "=" * (-len(text) % 4)


_URLSAFE_TO_STD = str.maketrans("-_", "+/")


def _normalise(value: Any, *, free: bool = False) -> Any:
    if isinstance(value, dict):
        if free:
            return value
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _camel(key)
            if name in _BYTES_KEYS and isinstance(item, str):
                out[name] = _standard_b64(item)
            elif name == "tools" and isinstance(item, list):
                out[name] = [_normalise(t) for t in item]
            else:
                out[name] = _normalise(item, free=name in _FREE_FORM_KEYS)
        return out
    if isinstance(value, list):
        return [_normalise(v, free=free) for v in value]
    return value


def _decode(frame: bytes | str, decoder: msgspec.json.Decoder, cls: type) -> Any:
    try:
        return _decode_frame(frame, decoder, cls)
    except RecursionError:
        raise RemoteProtocolError("malformed JSON frame: nested too deeply") from None
    except UnicodeError as exc:  # a lone surrogate in a str, or bytes that are not UTF-8
        raise RemoteProtocolError(f"malformed text frame: {exc}") from None


def _decode_frame(frame: bytes | str, decoder: msgspec.json.Decoder, cls: type) -> Any:
    raw = frame.encode() if isinstance(frame, str) else frame
    # `_` never occurs in standard base64 or camelCase keys: the common frame skips the regex.
    if b"_" not in raw or not _SNAKE_KEY.search(raw):
        try:
            return decoder.decode(raw)
        except msgspec.ValidationError:
            pass  # maybe URL-safe or unpadded base64: normalise below
        except msgspec.DecodeError as exc:
            raise RemoteProtocolError(f"malformed JSON frame: {exc}") from exc
    try:
        tree = _any_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"malformed JSON frame: {exc}") from exc
    if not isinstance(tree, dict):
        raise RemoteProtocolError(f"a frame must be a JSON object, got {type(tree).__name__}")
    try:
        return msgspec.convert(_normalise(tree), cls, strict=False)
    except msgspec.ValidationError as exc:
        raise RemoteProtocolError(f"invalid {cls.__name__}: {exc}") from exc


def from_json_tree(tree: Any, cls: Any) -> Any:
    """``cls`` (a wire struct, or a ``list[...]`` of them) from decoded JSON with keys in
    either style, as the service takes them (google-genai's ``model_dump()`` gives
    snake_case, the JS SDK camelCase).

    Raises:
        LocalProtocolError: a field of the wrong type.
    """
    try:
        return msgspec.convert(_normalise(tree), cls, strict=False)
    except msgspec.ValidationError as exc:
        raise LocalProtocolError(f"invalid {getattr(cls, '__name__', cls)}: {exc}") from exc


def decode_client(frame: bytes | str) -> ClientMessage:
    """Decode a client frame (text or binary).

    Raises:
        RemoteProtocolError: not JSON, not an object, or a field of the wrong type.
    """
    return _decode(frame, _client_decoder, ClientMessage)


def decode_server(frame: bytes | str) -> ServerMessage:
    """Decode a server frame (text or binary).

    Raises:
        RemoteProtocolError: not JSON, not an object, or a field of the wrong type.
    """
    return _decode(frame, _server_decoder, ServerMessage)


def encode_client(message: ClientMessage) -> bytes:
    """Compact camelCase JSON with standard base64, as the JS SDK and the docs send it."""
    return _client_encoder.encode(message)


def encode_server(message: ServerMessage, *, pretty: bool = True) -> bytes:
    """Server JSON as the service sends it: pretty-printed, two-space indent, final newline."""
    data = _client_encoder.encode(message)
    if not pretty:
        return data
    return msgspec.json.format(data, indent=2) + b"\n"


_DURATION = re.compile(r"\d{1,12}(?:\.\d{0,9})?s?")


def parse_duration_s(value: str | None) -> float | None:
    """A protobuf Duration (``"9.5s"``) in seconds.

    Raises:
        RemoteProtocolError: not a non-negative decimal number of seconds.
    """
    if not value:
        return None
    if not _DURATION.fullmatch(value):
        raise RemoteProtocolError(f"not a duration: {value[:40]!r}")
    return float(value.removesuffix("s"))
