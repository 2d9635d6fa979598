"""Wire messages: the recorded service traffic decodes to the right events, our client can
produce every recorded client frame, both key spellings and base64 alphabets decode, and
arbitrary input only ever raises the typed error."""

from __future__ import annotations

import base64
import json
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminilive import events as ev
from geminilive.errors import LocalProtocolError, RemoteProtocolError
from geminilive.messages import (
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
    SessionResumptionUpdate,
    ToolCall,
    ToolResponse,
    Transcription,
    decode_client,
    decode_server,
    encode_client,
    encode_server,
    from_json_tree,
)
from geminilive.protocol import LiveProtocol
from recordings import all_recordings

RECORDINGS = all_recordings()


def expected_events(frame: dict) -> list[tuple[str, object]]:
    """What a frame means, read straight from the JSON (independently of our decoder)."""
    out: list[tuple[str, object]] = []
    if "setupComplete" in frame:
        out.append(("SetupComplete", frame["setupComplete"].get("sessionId")))
    if "usageMetadata" in frame:
        out.append(("Usage", frame["usageMetadata"].get("totalTokenCount")))
    content = frame.get("serverContent", {})
    for part in content.get("modelTurn", {}).get("parts", []):
        if "inlineData" in part:
            out.append(("AudioChunk", base64.b64decode(part["inlineData"]["data"])))
        elif "text" in part:
            out.append(("TextChunk", part["text"]))
    if "inputTranscription" in content:
        out.append(("InputTranscription", content["inputTranscription"].get("text", "")))
    if "outputTranscription" in content:
        out.append(("OutputTranscription", content["outputTranscription"].get("text", "")))
    if content.get("interrupted"):
        out.append(("Interrupted", None))
    if content.get("generationComplete"):
        out.append(("GenerationComplete", None))
    if content.get("turnComplete"):
        out.append(("TurnComplete", None))
    if "toolCall" in frame:
        out.append(("ToolCall", [c["id"] for c in frame["toolCall"]["functionCalls"]]))
    return out


def summary(event: ev.Event) -> tuple[str, object]:
    payload = {
        ev.SetupComplete: lambda e: e.session_id,
        ev.Usage: lambda e: e.usage.total_token_count,
        ev.AudioChunk: lambda e: e.data,
        ev.TextChunk: lambda e: e.text,
        ev.InputTranscription: lambda e: e.text,
        ev.OutputTranscription: lambda e: e.text,
        ev.ToolCall: lambda e: [c.id for c in e.function_calls],
    }.get(type(event), lambda e: None)(event)
    return type(event).__name__, payload


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda r: r.name)
def test_every_recorded_server_frame_decodes_to_the_right_events(recording) -> None:
    setup = decode_client(recording.client_frames[0]).setup
    protocol = LiveProtocol(setup)
    for frame in recording.server_frames:
        produced = [summary(e) for e in protocol.receive_data(frame)]
        expected = expected_events(json.loads(frame))
        # Usage is reported before the content of its frame.
        assert sorted(produced, key=repr) == sorted(expected, key=repr)
        assert [p for p in produced if p[0] != "Usage"] == [e for e in expected if e[0] != "Usage"]
    if recording.server_frames:
        assert protocol.session_id == (json.loads(recording.server_frames[0])["setupComplete"].get("sessionId"))


def reproduce(message: ClientMessage) -> list[bytes]:
    """Build the same message through the client's public API and return what it sends."""
    protocol = (
        LiveProtocol(message.setup) if message.setup else LiveProtocol(decode_client(b'{"setup":{"model":"m"}}').setup)
    )
    protocol.receive_data(b'{"setupComplete": {}}')
    protocol.data_to_send()
    if message.setup is not None:
        return [LiveProtocol(message.setup).data_to_send()[0]]
    if message.client_content is not None:
        protocol.send_client_content(message.client_content.turns, bool(message.client_content.turn_complete))
    elif message.realtime_input is not None:
        r = message.realtime_input
        blob = r.audio or (r.media_chunks[0] if r.media_chunks else None)
        if blob is not None:
            rate = int(re.search(r"rate=(\d+)", blob.mime_type).group(1))
            protocol.send_audio(blob.data, rate)
        elif r.text is not None:
            protocol.send_text(r.text)
        elif r.activity_start is not None:
            protocol.activity_start()
        elif r.activity_end is not None:
            protocol.activity_end()
    elif message.tool_response is not None:
        responses = message.tool_response.function_responses or []
        for response in responses:
            protocol.pending_tool_calls[response.id] = FunctionCall(name=response.name, id=response.id)
        protocol.send_tool_response(responses)
    return protocol.data_to_send()


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda r: r.name)
def test_client_can_produce_every_recorded_client_frame(recording) -> None:
    for frame in recording.client_frames:
        theirs = decode_client(frame)
        [ours] = reproduce(theirs)
        mine = decode_client(ours)
        if theirs.realtime_input and theirs.realtime_input.media_chunks:
            # The deprecated mediaChunks form is sent as the equivalent `audio` field.
            chunk = theirs.realtime_input.media_chunks[0]
            theirs = ClientMessage(realtime_input=RealtimeInput(audio=chunk))
        assert mine == theirs


def snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


FREE = {"args", "response", "parameters"}


def to_snake(value, free=False):
    if isinstance(value, dict):
        if free:
            return value
        return {snake(k): to_snake(v, k in FREE) for k, v in value.items()}
    if isinstance(value, list):
        return [to_snake(v, free) for v in value]
    return value


def urlsafe_unpadded(value):
    if isinstance(value, dict):
        return {
            k: (
                base64.urlsafe_b64encode(base64.b64decode(v)).decode().rstrip("=")
                if k == "data"
                else urlsafe_unpadded(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [urlsafe_unpadded(v) for v in value]
    return value


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda r: r.name)
def test_snake_case_and_urlsafe_base64_decode_the_same(recording) -> None:
    for frame in recording.client_frames:
        tree = json.loads(frame)
        variant = json.dumps(urlsafe_unpadded(to_snake(tree))).encode()
        assert decode_client(variant) == decode_client(frame)
    for frame in recording.server_frames:
        tree = json.loads(frame)
        assert decode_server(json.dumps(to_snake(tree))) == decode_server(frame)


def test_google_genai_style_mixed_frames() -> None:
    """Exactly what python-genai 3.6.1 sends (live-protocol.md §2)."""
    msg = decode_client(b'{"realtime_input":{"video":{"data":"_9j_","mime_type":"image/jpeg"}}}')
    assert msg.realtime_input.video == Blob(mime_type="image/jpeg", data=base64.b64decode("/9j/"))
    setup = decode_client(
        b'{"setup":{"model":"models/m","generationConfig":{"responseModalities":["AUDIO"],"topK":20.0,'
        b'"speechConfig":{"voice_config":{"prebuilt_voice_config":{"voice_name":"Kore"}},"language_code":"en-US"}},'
        b'"realtimeInputConfig":{"automatic_activity_detection":{"disabled":false,"silence_duration_ms":100},'
        b'"activity_handling":"NO_INTERRUPTION"},"contextWindowCompression":{"trigger_tokens":"25600",'
        b'"sliding_window":{"target_tokens":12800}},"tools":[{"functionDeclarations":[{"name":"get_weather",'
        b'"parameters":{"properties":{"city_name":{"type":"STRING"}},"type":"OBJECT"},"behavior":"NON_BLOCKING"}]}]}}'
    ).setup
    assert setup.generation_config.top_k == 20
    assert setup.generation_config.speech_config.voice_config.prebuilt_voice_config.voice_name == "Kore"
    assert setup.realtime_input_config.automatic_activity_detection.silence_duration_ms == 100
    assert setup.realtime_input_config.activity_handling == "NO_INTERRUPTION"
    assert setup.context_window_compression.trigger_tokens == 25600
    declaration = setup.tools[0].function_declarations[0]
    assert declaration.behavior == "NON_BLOCKING"
    assert "city_name" in declaration.parameters["properties"], "user schema keys are kept as sent"
    assert decode_client(
        b'{"tool_response":{"functionResponses":[{"id":"1","name":"f","response":{"temp_c":1}}]}}'
    ) == (ClientMessage(tool_response=ToolResponse([FunctionResponse(name="f", response={"temp_c": 1}, id="1")])))


def test_server_frames_are_pretty_camel_case() -> None:
    frame = encode_server(ServerMessage(server_content=ServerContent(turn_complete=True)))
    assert frame == b'{\n  "serverContent": {\n    "turnComplete": true\n  }\n}\n'


def test_malformed_frames_are_typed_errors() -> None:
    for bad in [
        b"",
        b"{",
        b"[]",
        b'"x"',
        b'{"serverContent": 5}',
        b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"data":"!!"}}]}}}',
    ]:
        with pytest.raises(RemoteProtocolError):
            decode_server(bad)
    assert decode_server(b'{"somethingNew": {"x": 1}}') == ServerMessage(), "unknown fields are ignored"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    for decode in (decode_server, decode_client):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


@given(st.text(max_size=200).map(str.encode))
def test_arbitrary_text_never_crashes_the_decoder(data: bytes) -> None:
    try:
        decode_server(data)
    except RemoteProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
blobs = st.builds(Blob, mime_type=st.sampled_from(["audio/pcm;rate=16000", "image/jpeg"]), data=st.binary(max_size=64))
parts = st.one_of(st.builds(Part, text=st.text(max_size=20)), st.builds(Part, inline_data=blobs))
contents = st.builds(Content, parts=st.lists(parts, max_size=3), role=st.sampled_from(["user", "model"]))
client_messages = st.one_of(
    st.builds(lambda b: ClientMessage(realtime_input=RealtimeInput(audio=b)), blobs),
    st.builds(lambda t: ClientMessage(realtime_input=RealtimeInput(text=t)), st.text(max_size=30)),
    st.builds(
        lambda turns, done: ClientMessage(client_content=ClientContent(turns=turns, turn_complete=done)),
        st.lists(contents, max_size=2),
        st.booleans(),
    ),
    st.builds(
        lambda name, resp, i: ClientMessage(
            tool_response=ToolResponse([FunctionResponse(name=name, response=resp, id=i)])
        ),
        st.text(min_size=1, max_size=10),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        st.text(min_size=1, max_size=10),
    ),
)
server_messages = st.one_of(
    st.builds(lambda c: ServerMessage(server_content=ServerContent(model_turn=c)), contents),
    st.builds(
        lambda t, f: ServerMessage(
            server_content=ServerContent(output_transcription=Transcription(text=t, finished=f))
        ),
        st.text(max_size=30),
        st.booleans(),
    ),
    st.builds(
        lambda name, args: ServerMessage(
            tool_call=ToolCall([FunctionCall(name=name, args=args, id="function-call-1")])
        ),
        st.text(min_size=1, max_size=10),
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    st.builds(
        lambda h, r: ServerMessage(session_resumption_update=SessionResumptionUpdate(new_handle=h, resumable=r)),
        st.text(min_size=1, max_size=20),
        st.booleans(),
    ),
)


@given(client_messages)
def test_client_messages_round_trip(message: ClientMessage) -> None:
    assert decode_client(encode_client(message)) == message


@given(server_messages, st.booleans())
def test_server_messages_round_trip(message: ServerMessage, pretty: bool) -> None:
    assert decode_server(encode_server(message, pretty=pretty)) == message
    assert msgspec.json.decode(encode_server(message)) == msgspec.json.decode(encode_client(message))


def _snake(tree):
    if isinstance(tree, dict):
        return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): _snake(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_snake(v) for v in tree]
    return tree


@given(
    texts=st.lists(st.text(max_size=20), max_size=3),
    data=st.binary(max_size=64),
    args=st.dictionaries(st.sampled_from(["city", "max_rows", "sortOrder"]), st.integers(), max_size=3),
)
def test_a_json_tree_in_either_key_style_converts_to_the_same_wire_struct(texts, data, args) -> None:
    """What google-genai's ``model_dump()`` gives (snake_case, URL-safe base64) and what the JS
    SDK sends (camelCase) are one Content; function arguments keep their keys as given."""
    parts = [Part(text=t) for t in texts] + [
        Part(inline_data=Blob(mime_type="audio/pcm;rate=16000", data=data)),
        Part(function_call=FunctionCall(name="lookup", args=args, id="c1")),
    ]
    content = Content(parts=parts, role="user")
    camel = msgspec.json.decode(msgspec.json.encode(content))
    snake = _snake(camel)
    snake["parts"][len(texts)]["inline_data"]["data"] = base64.urlsafe_b64encode(data).decode().rstrip("=")
    snake["parts"][len(texts) + 1]["function_call"]["args"] = args
    assert from_json_tree(camel, Content) == content
    assert from_json_tree([snake], list[Content]) == [content]


def test_a_json_tree_of_the_wrong_shape_is_a_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError, match="invalid"):
        from_json_tree({"parts": "not a list"}, Content)
