"""The sans-I/O client state machine, with no sockets."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminilive import LiveConfig, LiveProtocol
from geminilive import events as ev
from geminilive._native import model_audio
from geminilive.errors import (
    AudioFormatError,
    ConnectionClosedOK,
    InternalServerError,
    InvalidArgumentError,
    LocalProtocolError,
    PolicyViolationError,
    RemoteProtocolError,
)
from geminilive.messages import FunctionDeclaration, FunctionResponse, Tool, decode_client, decode_server
from geminilive.protocol import State

SETUP_COMPLETE = b'{"setupComplete": {}}'


def make(**config) -> LiveProtocol:
    return LiveProtocol(LiveConfig(**config).to_setup("gemini-test"))


def opened(**config) -> LiveProtocol:
    protocol = make(**config)
    protocol.receive_data(SETUP_COMPLETE)
    protocol.data_to_send()
    return protocol


def sent(protocol: LiveProtocol) -> list[dict]:
    return [json.loads(f) for f in protocol.data_to_send()]


def test_setup_goes_first_and_everything_else_waits_for_setup_complete() -> None:
    p = make(voice="Kore", input_audio_transcription=True)
    assert p.send_text("early") == 1
    p.send_audio(b"\x00\x01" * 4)
    frames = sent(p)
    assert [next(iter(f)) for f in frames] == ["setup"]
    assert frames[0]["setup"]["model"] == "models/gemini-test"
    assert frames[0]["setup"]["inputAudioTranscription"] == {}
    [event] = p.receive_data(SETUP_COMPLETE)
    assert isinstance(event, ev.SetupComplete)
    assert [f["realtimeInput"] for f in sent(p)] == [
        {"text": "early"},
        {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "AAEAAQABAAE="}},
    ]
    p.activity_start()
    assert sent(p) == [{"realtimeInput": {"activityStart": {}}}], "after setupComplete frames go out at once"


def test_first_server_message_must_be_setup_complete() -> None:
    p = make()
    with pytest.raises(RemoteProtocolError, match="setupComplete"):
        p.receive_data(b'{"serverContent": {"turnComplete": true}}')


def test_local_order_errors() -> None:
    p = make()
    with pytest.raises(LocalProtocolError):
        p.send(decode_client(b'{"setup": {"model": "x"}}'))
    with pytest.raises(LocalProtocolError, match="no pending tool call"):
        p.send_tool_response([FunctionResponse(name="f", id="nope", response={})])
    with pytest.raises(AudioFormatError):
        p.send_audio(b"\x00")
    p.connection_closed(1000)
    with pytest.raises(LocalProtocolError, match="closed"):
        p.send_text("late")


def test_between_connections_sends_queue_and_a_new_connection_takes_them_in_order() -> None:
    p = opened(transparent_resumption=True)
    p.send_text("handed")
    p.data_to_send()
    p.connection_closed(1011, "Internal error encountered.", reconnecting=True)
    assert p.state is State.RECONNECTING
    p.send_text("queued while reconnecting")
    p.send_audio(b"\x01\x00")
    assert p.data_to_send() == [], "nothing goes out without a connection"
    with pytest.raises(RemoteProtocolError, match="after the connection closed"):
        p.receive_data(SETUP_COMPLETE)
    assert p.new_connection("h9") == 3
    [setup] = sent(p)
    assert setup["setup"]["sessionResumption"]["handle"] == "h9"
    p.send_text("after")
    p.receive_data(SETUP_COMPLETE)
    frames = [json.loads(f)["realtimeInput"] for f in p.data_to_send()]
    replayed_then_new = ["handed", "queued while reconnecting", "AQA=", "after"]
    assert [f.get("text") or f["audio"]["data"] for f in frames] == replayed_then_new
    assert p.connections == 2


def test_a_fresh_start_drops_the_calls_and_releases_what_they_held() -> None:
    p = opened(transparent_resumption=True)
    p.receive_data(tool_call(("c1", "lookup")))
    p.send_text("held")
    assert p.held_input_frames == 1
    p.connection_closed(1008, "session not found", reconnecting=True)
    p.new_connection(None)  # the service refused the handle: no call is pending there
    assert p.pending_tool_calls == {} and p.held_input_frames == 0
    [setup] = sent(p)
    assert "handle" not in setup["setup"].get("sessionResumption", {})
    p.receive_data(SETUP_COMPLETE)
    assert texts(p.data_to_send()) == ["held"]


@pytest.mark.parametrize("fresh", [True, False])
def test_a_fresh_session_begins_the_users_turn_its_predecessor_took_the_start_of(fresh: bool) -> None:
    p = opened(transparent_resumption=True, automatic_activity_detection=False)
    p.activity_start()  # index 1
    p.send_audio(b"\x01\x00" * 4)  # 2
    p.data_to_send()
    p.receive_data(update("h1", 1))  # the service took the activityStart, not yet the audio
    p.send_audio(b"\x02\x00" * 4)
    p.activity_end()
    p.connection_closed(1011, "", reconnecting=True)
    p.new_connection(None if fresh else "h1")
    sent(p)
    p.receive_data(SETUP_COMPLETE)
    kinds = [next(iter(json.loads(f)["realtimeInput"])) for f in p.data_to_send()]
    start = ["activityStart"] if fresh else []  # a resumed session has its own
    assert kinds == [*start, "audio", "audio", "activityEnd"]
    # With the turn's end taken too, nothing is open: nothing is added.
    p.receive_data(update("h2", 4 if fresh else 3))
    p.connection_closed(1011, "", reconnecting=True)
    p.new_connection(None)
    sent(p)
    p.receive_data(SETUP_COMPLETE)
    assert p.data_to_send() == []


def test_a_fresh_session_is_not_sent_answers_to_calls_it_never_made() -> None:
    p = opened(transparent_resumption=True)
    p.receive_data(tool_call(("c1", "lookup")))
    p.send_tool_response([FunctionResponse(id="c1", name="lookup", response={"ok": True})])
    p.send_text("after")
    p.data_to_send()
    p.connection_closed(1011, "", reconnecting=True)
    resumed = p.new_connection("h")
    assert resumed == 2, "a resumed session gets the answer again"
    p.connection_closed(1008, "session not found", reconnecting=True)
    p.new_connection(None)
    sent(p)
    p.receive_data(SETUP_COMPLETE)
    assert texts(p.data_to_send()) == ["after"]


def test_a_session_that_is_over_refuses_sends_and_new_connections() -> None:
    p = opened(transparent_resumption=True)
    p.connection_closed(1011, "", reconnecting=True)
    p.connection_closed(1011, "gave up")
    assert p.state is State.CLOSED
    with pytest.raises(LocalProtocolError, match="session is closed"):
        p.send_audio(b"\x00\x00")
    with pytest.raises(LocalProtocolError, match="session is closed"):
        p.new_connection("h")


def test_turn_events_in_order() -> None:
    p = opened()
    frame = {
        "serverContent": {
            "modelTurn": {
                "parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AAA="}}, {"text": "hi"}]
            },
            "outputTranscription": {"text": "hi", "finished": True},
            "generationComplete": True,
            "turnComplete": True,
            "turnCompleteReason": "NEED_MORE_INPUT",
        },
        "usageMetadata": {"totalTokenCount": 7},
    }
    events = p.receive_data(json.dumps(frame))
    assert [type(e).__name__ for e in events] == [
        "Usage",
        "AudioChunk",
        "TextChunk",
        "OutputTranscription",
        "GenerationComplete",
        "TurnComplete",
    ]
    assert events[1] == ev.AudioChunk(data=b"\x00\x00", sample_rate_hz=24000)
    assert events[3].finished
    assert events[-1].reason == "NEED_MORE_INPUT"
    assert p.turns_completed == 1


def test_interrupted_turn() -> None:
    p = opened()
    p.receive_data(b'{"serverContent": {"modelTurn": {"parts": [{"text": "a"}]}}}')
    assert p.model_turn_active
    events = p.receive_data(b'{"serverContent": {"interrupted": true}}')
    assert events == [ev.Interrupted()]
    [done] = p.receive_data(b'{"serverContent": {"turnComplete": true}}')
    assert isinstance(done, ev.TurnComplete) and not p.model_turn_active


def test_tool_calls_are_tracked_answered_and_cancelled() -> None:
    p = opened()
    [call] = p.receive_data(
        b'{"toolCall": {"functionCalls": [{"name": "a", "id": "function-call-1", "args": {"x": 1}},'
        b' {"name": "b", "id": "function-call-2"}]}}'
    )
    assert [c.args for c in call.function_calls] == [{"x": 1}, None]
    assert set(p.pending_tool_calls) == {"function-call-1", "function-call-2"}
    p.send_tool_response([FunctionResponse(name="a", id="function-call-1", response={"output": 2})])
    assert sent(p)[0]["toolResponse"]["functionResponses"][0] == {
        "name": "a",
        "response": {"output": 2},
        "id": "function-call-1",
    }
    [cancel] = p.receive_data(b'{"toolCallCancellation": {"ids": ["function-call-2"]}}')
    assert cancel.ids == ["function-call-2"] and not p.pending_tool_calls


def tool_call(*calls: tuple[str, str]) -> bytes:
    functions = [{"name": name, "id": call_id} for call_id, name in calls]
    return json.dumps({"toolCall": {"functionCalls": functions}}).encode()


def kinds(frames: list[bytes]) -> list[str]:
    """Each frame as its message kind, realtime input by what it carries."""
    out = []
    for frame in frames:
        message = json.loads(frame)
        [kind] = message
        out.append(f"{kind}.{next(iter(message[kind]))}" if kind == "realtimeInput" else kind)
    return out


def test_realtime_input_waits_for_the_answer_to_a_blocking_call() -> None:
    p = opened()  # no behaviour declared: a 2.5-style model blocks on every call
    p.receive_data(tool_call(("function-call-1", "lookup")))
    assert p.input_held and p.audio_to_write(bytes(640)) is None
    assert p.send_audio(bytes(640)) is None and p.send_text("meanwhile") is None
    p.send_client_content("not realtime: not held")
    assert kinds(p.data_to_send()) == ["clientContent"] and p.held_input_frames == 2
    p.send_tool_response([FunctionResponse(name="lookup", id="function-call-1", response={"output": 1})])
    assert not p.input_held
    assert kinds(p.data_to_send()) == ["toolResponse", "realtimeInput.audio", "realtimeInput.text"]
    assert p.audio_to_write(bytes(640)) is not None, "the direct path is back"


def test_input_queued_before_the_call_came_is_held_too() -> None:
    p = opened()
    p.send_text("queued, not yet written")
    p.send_client_content("other")
    p.receive_data(tool_call(("c1", "lookup")))
    assert kinds(p.data_to_send()) == ["clientContent"]
    p.send_text("after")
    p.send_tool_response([FunctionResponse(name="lookup", id="c1", response={})])
    frames = p.data_to_send()
    assert kinds(frames) == ["toolResponse", "realtimeInput.text", "realtimeInput.text"]
    assert texts(frames[1:]) == ["queued, not yet written", "after"]


def test_a_cancelled_call_releases_the_held_input() -> None:
    p = opened()
    p.receive_data(tool_call(("a", "lookup"), ("b", "lookup")))
    p.send_audio(bytes(640))
    p.send_tool_response([FunctionResponse(name="lookup", id="a", response={})])
    assert kinds(p.data_to_send()) == ["toolResponse"], "b is still unanswered"
    assert not p.has_queued_frames
    p.receive_data(b'{"toolCallCancellation": {"ids": ["b"]}}')
    assert p.has_queued_frames and kinds(p.data_to_send()) == ["realtimeInput.audio"]


@pytest.mark.parametrize(
    ("model", "behavior", "held"),
    [
        ("gemini-2.5-flash-native-audio-preview-12-2025", None, True),
        ("gemini-2.5-flash-native-audio-preview-12-2025", "NON_BLOCKING", False),
        ("gemini-3.1-flash-live-preview", "NON_BLOCKING", True),  # 3.1 runs every call synchronously
        ("gemini-3.8-live", None, False),  # 3.8 defaults to NON_BLOCKING
        ("gemini-3.8-live", "BLOCKING", False),  # and input during a blocking call cancels it
    ],
)
def test_which_calls_hold_input_follows_the_declaration_and_the_model(model, behavior, held) -> None:
    tools = [Tool(function_declarations=[FunctionDeclaration(name="lookup", behavior=behavior)])]
    p = LiveProtocol(LiveConfig(tools=tools).to_setup(model))
    p.receive_data(SETUP_COMPLETE)
    p.data_to_send()
    p.receive_data(tool_call(("c1", "lookup")))
    p.send_text("hello")
    assert p.input_held is held
    assert kinds(p.data_to_send()) == ([] if held else ["realtimeInput.text"])


def test_held_input_goes_to_the_next_connection_and_stays_held_while_the_call_is_pending() -> None:
    p = opened(transparent_resumption=True)
    p.receive_data(tool_call(("c1", "lookup")))
    p.send_text("held")
    replay = p.unconsumed_frames()
    assert texts(replay) == ["held"]
    p.connection_closed(1011, "", reconnecting=True)
    assert p.new_connection("h1") == 1
    p.data_to_send()
    p.receive_data(SETUP_COMPLETE)
    assert p.data_to_send() == [] and p.held_input_frames == 1
    p.send_tool_response([FunctionResponse(name="lookup", id="c1", response={})])
    assert kinds(p.data_to_send()) == ["toolResponse", "realtimeInput.text"]


@given(
    st.lists(
        st.sampled_from(
            ["audio", "text", "content", "call", "call_nb", "answer", "cancel", "flush", "fault", "resume"]
        ),
        max_size=60,
    ),
    st.data(),
)
def test_held_input_is_never_sent_during_a_blocking_call_and_never_lost_or_reordered(steps, data) -> None:
    """Whatever the interleaving of input, calls, answers, cancellations and reconnects: no
    realtime frame is handed to the socket while a blocking call is unanswered, and every
    message is handed exactly once, realtime input in order and other messages in order."""
    tools = [
        Tool(
            function_declarations=[
                FunctionDeclaration(name="blocks"),
                FunctionDeclaration(name="runs_along", behavior="NON_BLOCKING"),
            ]
        )
    ]
    setup = LiveConfig(tools=tools, transparent_resumption=True).to_setup("gemini-2.5-flash-native-audio")
    p = LiveProtocol(setup)
    p.data_to_send()
    p.receive_data(SETUP_COMPLETE)
    realtime_sent, others_sent, handed = [], [], []
    calls = 0

    def resume() -> None:
        """Resumed with no handle taken yet: the server took nothing, all is replayed."""
        nonlocal handed
        handed = []
        p.new_connection("resumed")  # the calls carry over
        p.data_to_send()
        p.receive_data(SETUP_COMPLETE)

    def flush() -> None:
        frames = p.data_to_send()
        if any(c.name == "blocks" for c in p.pending_tool_calls.values()):
            assert not any(f.startswith(b'{"realtimeInput"') for f in frames)
        handed.extend(frames)

    for step in steps:
        n = len(realtime_sent) + len(others_sent)
        if step == "audio":
            p.send_audio(n.to_bytes(2, "little"))
            realtime_sent.append(f"audio:{base64.b64encode(n.to_bytes(2, 'little')).decode()}")
        elif step == "text":
            p.send_text(str(n))
            realtime_sent.append(f"text:{n}")
        elif step == "content":
            p.send_client_content(str(n))
            others_sent.append(f"content:{n}")
        elif step in ("call", "call_nb") and p.state is State.OPEN:  # the server speaks on a connection
            calls += 1
            p.receive_data(tool_call((f"c{calls}", "blocks" if step == "call" else "runs_along")))
        elif step == "answer" and p.pending_tool_calls:
            call_id = data.draw(st.sampled_from(sorted(p.pending_tool_calls)))
            p.send_tool_response([FunctionResponse(name="x", id=call_id, response={})])
            others_sent.append(f"answer:{call_id}")
        elif step == "cancel" and p.pending_tool_calls and p.state is State.OPEN:
            call_id = data.draw(st.sampled_from(sorted(p.pending_tool_calls)))
            p.receive_data(json.dumps({"toolCallCancellation": {"ids": [call_id]}}).encode())
        elif step == "flush":
            flush()
        elif step == "fault":  # the connection drops; the steps after it run between connections
            p.connection_closed(1011, "", reconnecting=True)
        elif step == "resume" and p.state is State.RECONNECTING:
            resume()
    if p.state is State.RECONNECTING:
        resume()
    for call_id in sorted(p.pending_tool_calls):  # the app answers what is left
        p.send_tool_response([FunctionResponse(name="x", id=call_id, response={})])
        others_sent.append(f"answer:{call_id}")
    flush()

    def label(frame: bytes) -> str:
        message = json.loads(frame)
        if "realtimeInput" in message:
            realtime = message["realtimeInput"]
            return f"audio:{realtime['audio']['data']}" if "audio" in realtime else f"text:{realtime['text']}"
        if "clientContent" in message:
            return f"content:{message['clientContent']['turns'][0]['parts'][0]['text']}"
        return f"answer:{message['toolResponse']['functionResponses'][0]['id']}"

    labels = [label(f) for f in handed]
    assert [x for x in labels if x.startswith(("audio", "text"))] == realtime_sent
    assert [x for x in labels if x.startswith(("content", "answer"))] == others_sent


def test_resumption_handle_go_away_and_transparent_replay() -> None:
    p = opened(transparent_resumption=True)
    for i in range(5):
        assert p.send_text(str(i)) == i + 1
    p.data_to_send()
    [update] = p.receive_data(
        b'{"sessionResumptionUpdate": {"newHandle": "h1", "resumable": true, "lastConsumedClientMessageIndex": "3"}}'
    )
    assert update == ev.SessionResumptionUpdate(handle="h1", resumable=True, last_consumed_client_message_index=3)
    assert p.resumption_handle == "h1"
    replay = p.unconsumed_frames()
    assert [json.loads(f)["realtimeInput"]["text"] for f in replay] == ["3", "4"]
    # Not resumable while generating: the handle stays the last good one.
    p.receive_data(b'{"sessionResumptionUpdate": {"resumable": false}}')
    assert p.resumption_handle == "h1" and not p.resumable
    [go] = p.receive_data(b'{"goAway": {"timeLeft": "9.5s"}}')
    assert go.time_left_s == 9.5
    # A new connection replays what was not consumed, before anything newer.
    p.connection_closed(1000, "", reconnecting=True)
    p.send_text("5")  # sent between connections: queued behind the replay
    assert p.new_connection(p.resumption_handle) == 3
    p.send_text("6")
    [setup] = sent(p)
    assert setup["setup"]["sessionResumption"]["handle"] == "h1"
    p.receive_data(SETUP_COMPLETE)
    assert [f["realtimeInput"]["text"] for f in sent(p)] == ["3", "4", "5", "6"]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (1000, ConnectionClosedOK),
        (1007, InvalidArgumentError),
        (1008, PolicyViolationError),
        (1011, InternalServerError),
    ],
)
def test_close_codes_become_typed_errors(code: int, error: type) -> None:
    p = make()
    err = p.connection_closed(code, "Request contains an invalid argument.")
    assert isinstance(err, error)
    assert err.code == code and err.reason == "Request contains an invalid argument."


def test_live_config_builds_the_full_setup() -> None:
    setup = LiveConfig(
        response_modalities=["AUDIO"],
        voice="Puck",
        language_code="en-US",
        system_instruction="Be brief.",
        temperature=0.5,
        automatic_activity_detection=True,
        start_of_speech_sensitivity="LOW",
        end_of_speech_sensitivity="HIGH",
        prefix_padding_ms=40,
        silence_duration_ms=300,
        activity_handling="NO_INTERRUPTION",
        turn_coverage="TURN_INCLUDES_ALL_INPUT",
        context_window_compression=True,
        compression_trigger_tokens=1000,
        output_audio_transcription=True,
        proactive_audio=True,
        enable_affective_dialog=True,
        media_resolution="MEDIA_RESOLUTION_LOW",
    ).to_setup("gemini-x")
    wire = json.loads(LiveProtocol(setup).data_to_send()[0])["setup"]
    assert wire["generationConfig"]["speechConfig"] == {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}},
        "languageCode": "en-US",
    }
    assert wire["realtimeInputConfig"] == {
        "automaticActivityDetection": {
            "disabled": False,
            "startOfSpeechSensitivity": "START_SENSITIVITY_LOW",
            "endOfSpeechSensitivity": "END_SENSITIVITY_HIGH",
            "prefixPaddingMs": 40,
            "silenceDurationMs": 300,
        },
        "activityHandling": "NO_INTERRUPTION",
        "turnCoverage": "TURN_INCLUDES_ALL_INPUT",
    }
    assert wire["systemInstruction"] == {"parts": [{"text": "Be brief."}], "role": "user"}
    assert wire["contextWindowCompression"] == {"triggerTokens": 1000, "slidingWindow": {}}
    assert wire["sessionResumption"] == {}
    assert wire["proactivity"] == {"proactiveAudio": True}
    assert "thinkingConfig" not in wire["generationConfig"], "none unless asked for (3.8 refuses one)"
    level = LiveConfig(thinking_level="LOW").to_setup("gemini-3.1-flash-live-preview")
    assert json.loads(LiveProtocol(level).data_to_send()[0])["setup"]["generationConfig"] == {
        "thinkingConfig": {"thinkingLevel": "LOW"}
    }


def test_audio_fast_path_frames_equal_the_encoder() -> None:
    from geminilive.messages import Blob, ClientMessage, RealtimeInput, encode_client

    p = opened()
    for rate, pcm in [(16000, bytes(range(256)) * 2), (24000, b"\x01\x02"), (8000, b"\xff\xfe")]:
        p.send_audio(pcm, rate)
        [frame] = p.data_to_send()
        expected = ClientMessage(realtime_input=RealtimeInput(audio=Blob(mime_type=f"audio/pcm;rate={rate}", data=pcm)))
        assert frame == encode_client(expected)


@given(st.binary(max_size=2000).map(lambda b: b[: len(b) // 2 * 2]), st.sampled_from([8000, 16000, 24000, 48000]))
def test_audio_frames_built_in_rust_equal_the_encoder(pcm: bytes, rate: int) -> None:
    from geminilive.messages import Blob, ClientMessage, RealtimeInput, decode_client, encode_client

    p = opened()
    p.send_audio(pcm, rate)
    [frame] = p.data_to_send()
    message = ClientMessage(realtime_input=RealtimeInput(audio=Blob(mime_type=f"audio/pcm;rate={rate}", data=pcm)))
    assert decode_client(frame) == message
    if pcm:
        assert frame == encode_client(message)


def update(handle: str | None, index: int | None, *, resumable: bool = True) -> bytes:
    fields: dict = {"resumable": resumable}
    if handle:
        fields["newHandle"] = handle
    if index is not None:
        fields["lastConsumedClientMessageIndex"] = str(index)
    return json.dumps({"sessionResumptionUpdate": fields}).encode()


def texts(frames: list[bytes]) -> list[str]:
    return [json.loads(f)["realtimeInput"]["text"] for f in frames]


def test_only_a_resumable_handle_moves_the_replay_point() -> None:
    p = opened(transparent_resumption=True)
    for i in range(6):
        p.send_text(str(i))
    p.data_to_send()
    p.receive_data(update("h1", 2))
    # Not resumable (the model is speaking): resuming must use h1, which covers only 1..2.
    p.receive_data(update(None, 5, resumable=False))
    assert p.resumption_handle == "h1" and p.last_consumed_index == 5
    assert texts(p.unconsumed_frames()) == ["2", "3", "4", "5"]


def test_without_transparent_resumption_a_handle_covers_what_was_sent_before_the_message_ahead_of_it() -> None:
    """A handle without an index was issued after the server message before it: what the
    client sent once that message was in may not be covered, and is kept for a resume (the
    service sends a handle right behind setupComplete, before it reads anything more)."""
    p = opened()
    for i in range(3):
        p.send_text(str(i))
    p.data_to_send()
    assert texts(p.unconsumed_frames()) == ["0", "1", "2"], "no handle yet: all of them"
    p.receive_data(update("h1", None))  # right behind setupComplete
    assert texts(p.unconsumed_frames()) == ["0", "1", "2"], "issued before any of them was read"
    p.receive_data(json.dumps({"serverContent": {"turnComplete": True}}).encode())
    p.send_text("3")
    p.data_to_send()
    p.receive_data(update("h2", None))
    assert texts(p.unconsumed_frames()) == ["3"], "sent after the turnComplete that came before h2"
    p.send_text("4")  # not handed to the socket yet
    assert texts(p.unconsumed_frames()) == ["3", "4"]


def test_a_handle_without_an_index_covers_what_was_sent_when_the_message_ahead_of_it_arrived() -> None:
    """Not when the client got round to reading it: a turnComplete that waited in the queue
    while more audio went out does not vouch for that audio (the server made the handle
    before it could read it)."""
    p = opened()
    p.send_text("0")
    p.data_to_send()
    arrived_at = p.handed_index  # the turnComplete arrives now...
    p.send_text("1")  # ... and this goes out while it waits to be read
    p.data_to_send()
    p.receive_data(json.dumps({"serverContent": {"turnComplete": True}}).encode(), handed_at_arrival=arrived_at)
    p.receive_data(update("h1", None))
    assert texts(p.unconsumed_frames()) == ["1"]


def test_a_handle_without_an_index_may_leave_out_what_went_out_a_round_trip_before_its_audio_is_kept() -> None:
    """What went out in the margin before the message ahead of the handle arrived may still
    have been on its way: its audio is sent again on a resume (a moment heard twice at worst),
    its other messages not (a turn or a tool response would repeat whole). A later handle
    that surely covers them lets them go."""
    p = opened()
    p.send_audio(b"\x00\x01" * 4)
    p.data_to_send()
    surely = p.handed_index  # a margin before the turnComplete arrives
    p.send_text("in flight")
    p.send_audio(b"\x00\x02" * 4)
    p.data_to_send()
    arrived = p.handed_index
    p.send_audio(b"\x00\x03" * 4)
    p.data_to_send()
    turn_complete = json.dumps({"serverContent": {"turnComplete": True}}).encode()
    p.receive_data(turn_complete, handed_at_arrival=arrived, handed_a_margin_before=surely)
    p.receive_data(update("h1", None), handed_at_arrival=p.handed_index, handed_a_margin_before=p.handed_index)
    audio = lambda frames: [base64.b64decode(json.loads(f)["realtimeInput"]["audio"]["data"])[1] for f in frames]  # noqa: E731
    assert audio(p.unconsumed_frames()) == [2, 3], "the text in the margin is not sent again"
    assert p.unconsumed_count == 2
    p.receive_data(turn_complete, handed_at_arrival=p.handed_index, handed_a_margin_before=p.handed_index)
    p.receive_data(update("h2", None))
    assert p.unconsumed_frames() == []
    p.new_connection("h2")
    assert p.unconsumed_frames() == []


def test_without_resumption_nothing_is_kept_for_replay() -> None:
    p = opened(session_resumption=False)
    p.send_text("a")
    p.data_to_send()
    assert p.unconsumed_frames() == []


def test_pending_audio_beyond_the_bound_is_shed_oldest_first_and_counted() -> None:
    p = make()
    frame_bytes = len(json.dumps({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "A" * 856}}}))
    p.max_pending_bytes = 5 * frame_bytes
    p.send_text("first")
    for n in range(20):
        p.send_audio(bytes([n]) * 640)
    p.send_text("last")
    p.receive_data(SETUP_COMPLETE)
    p.data_to_send()  # setup
    frames = [json.loads(f)["realtimeInput"] for f in p.data_to_send()]
    assert frames[0] == {"text": "first"} and frames[-1] == {"text": "last"}, "only audio is shed"
    audio = [base64.b64decode(f["audio"]["data"])[0] for f in frames[1:-1]]
    assert audio == list(range(20 - len(audio), 20)), "the newest audio is kept, in order"
    assert p.dropped_audio_frames == 20 - len(audio) > 0


def test_replay_memory_is_bounded() -> None:
    p = opened(transparent_resumption=True)
    p.max_replay_bytes = 10_000
    for _ in range(100):
        p.send_audio(bytes(640))
    p.data_to_send()
    assert sum(map(len, p.unconsumed_frames())) <= 10_000
    assert p.replay_overflow_frames > 0


@given(st.lists(st.sampled_from(["send", "flush", "handle", "stale", "fault"]), max_size=60), st.data())
def test_resumption_never_loses_duplicates_or_reorders(steps: list[str], data) -> None:
    """A model server: it consumes handed frames in order, makes handles that cover what it
    consumed, and on a fault the session resumes from the newest resumable handle. What the
    server's state holds at the end must be everything sent, once, in order."""
    p = opened(transparent_resumption=True)
    state: list[str] = []  # what the newest resumable handle covers
    consumed: list[str] = []  # what the server took on this connection (beyond the handle)
    wire: list[str] = []  # handed to the socket, not yet read by the server
    sent_texts: list[str] = []
    handed = 0  # frames handed to the socket on this connection (setup is index 0)
    for step in steps:
        if step == "send":
            sent_texts.append(str(len(sent_texts)))
            p.send_text(sent_texts[-1])
        elif step == "flush":
            frames = p.data_to_send()
            handed += len(frames)
            wire += texts(frames)
        elif step in ("handle", "stale") and wire:
            k = data.draw(st.integers(0, len(wire)))
            consumed += wire[:k]
            del wire[:k]
            index = handed - len(wire)
            if step == "handle":
                state += consumed
                consumed = []
                p.receive_data(update(f"h{len(state)}", index))
            else:
                p.receive_data(update(None, index, resumable=False))
        elif step == "fault":
            consumed, wire, handed = [], [], 0  # resuming restores the handle's state
            p.new_connection(p.resumption_handle)
            p.data_to_send()
            p.receive_data(SETUP_COMPLETE)
    wire += texts(p.data_to_send())
    assert state + consumed + wire == sent_texts


@given(
    # Weighted towards what makes the race: audio on the wire when a handle is made, then a fault.
    st.lists(
        st.sampled_from(
            ["audio", "audio", "text", "flush", "flush", "consume", "message", "handle", "handle", "fault"]
        ),
        max_size=40,
    ),
    st.data(),
)
def test_without_an_index_audio_arrives_at_least_once_and_the_rest_at_most_once(steps: list[str], data) -> None:
    """A model server for handles without an index: it reads handed frames in order, sends a
    message, then makes a handle covering what it has read, which is at least what the client's
    margin says was read when that message left and at most what had been handed when it
    arrived. On a fault the session resumes from the newest handle. What the server's state
    holds at the end: all the audio, first arrivals in order, only audio ever twice. A text
    still on its way when the handle resumed from was made is the one thing that can be
    missing: the client cannot tell it from one the service read, and must not repeat it."""
    p = opened()
    state: list[str] = []  # what the newest handle covers
    consumed: list[str] = []  # what the server read on this connection beyond that
    wire: list[str] = []  # handed to the socket, not yet read
    sent_items: list[str] = []
    handed = 0  # the newest index handed on this connection (setup is 0)
    in_flight: set[str] = set()  # texts unread when the newest handle was made
    may_be_missing: set[str] = set()  # such texts of handles resumed from

    def items(frames: list[bytes]) -> list[str]:
        out = []
        for frame in frames:
            realtime = json.loads(frame)["realtimeInput"]
            if "text" in realtime:
                out.append(realtime["text"])
            else:
                out.append("a" + str(int.from_bytes(base64.b64decode(realtime["audio"]["data"]), "little")))
        return out

    for step in steps:
        if step == "text":
            sent_items.append(f"t{len(sent_items)}")
            p.send_text(sent_items[-1])
        elif step == "audio":
            sent_items.append(f"a{len(sent_items)}")
            p.send_audio((len(sent_items) - 1).to_bytes(2, "little"))
        elif step == "flush":
            frames = p.data_to_send()
            handed += len(frames)
            wire += items(frames)
        elif step == "consume" and wire:
            k = data.draw(st.integers(1, len(wire)))
            consumed += wire[:k]
            del wire[:k]
        elif step in ("message", "handle"):
            read = handed - len(wire)  # the newest index the server has read as the message leaves
            surely = data.draw(st.integers(0, read))
            turn_complete = json.dumps({"serverContent": {"turnComplete": True}}).encode()
            p.receive_data(turn_complete, handed_at_arrival=handed, handed_a_margin_before=surely)
            if step == "handle":
                k = data.draw(st.integers(0, len(wire)))  # it may read on before making it
                consumed += wire[:k]
                del wire[:k]
                state += consumed
                consumed = []
                in_flight = {item for item in wire if item.startswith("t")}
                p.receive_data(update(f"h{len(state)}", None), handed_at_arrival=handed)
        elif step == "fault" and p.resumption_handle:
            may_be_missing |= in_flight
            consumed, wire, handed = [], [], 0  # resuming restores the handle's state
            p.new_connection(p.resumption_handle)
            p.data_to_send()
            p.receive_data(SETUP_COMPLETE)
    wire += items(p.data_to_send())
    taken = state + consumed + wire
    missing = set(sent_items) - set(taken)
    assert missing <= may_be_missing, f"lost: {missing - may_be_missing}"
    firsts = list(dict.fromkeys(taken))
    assert firsts == [item for item in sent_items if item not in missing], "first arrivals in the order sent"
    twice = {item for item in taken if taken.count(item) > 1}
    assert all(item.startswith("a") for item in twice), f"only audio is sent again: {twice}"


def _blob_frame(draw_layout: dict, pcm: bytes) -> bytes:
    """A model-turn audio frame, laid out as `draw_layout` says."""
    data = base64.b64encode(pcm).decode()
    if draw_layout["urlsafe"]:
        data = base64.urlsafe_b64encode(pcm).decode()
    if draw_layout["unpadded"]:
        data = data.rstrip("=")
    blob = {"mimeType": draw_layout["mime"], "data": data}
    if draw_layout["data_first"]:
        blob = {"data": data, "mimeType": draw_layout["mime"]}
    content: dict = {"modelTurn": {"parts": [{"inlineData": blob}]}}
    if draw_layout["turn_complete"]:
        content["turnComplete"] = True
    message: dict = {"serverContent": content}
    if draw_layout["usage"]:
        message["usageMetadata"] = {"totalTokenCount": 3}
    text = json.dumps(message, indent=draw_layout["indent"], separators=draw_layout["separators"])
    if draw_layout["escaped_slash"]:
        text = text.replace("/", "\\/")
    return text.encode()


@given(
    pcm=st.binary(max_size=97),
    layout=st.fixed_dictionaries(
        {
            "mime": st.sampled_from(
                ["audio/pcm;rate=24000", "audio/pcm", "audio/pcm;rate=16000", "image/png", "a\u00e9"]
            ),
            "urlsafe": st.booleans(),
            "unpadded": st.booleans(),
            "data_first": st.booleans(),
            "turn_complete": st.booleans(),
            "usage": st.booleans(),
            "indent": st.sampled_from([None, 0, 2, "\t"]),
            "separators": st.sampled_from([None, (",", ":"), (" ,", " : ")]),
            "escaped_slash": st.booleans(),
        }
    ),
    as_text=st.booleans(),
)
def test_the_native_audio_path_gives_what_the_general_decoder_gives(pcm: bytes, layout: dict, as_text: bool) -> None:
    """Whatever the layout, spelling or extra fields of an audio frame, the events (or the
    error) are those of the full decoder: the native fast path only takes what it can read
    exactly, and leaves the rest to it."""
    frame = _blob_frame(layout, pcm)
    received = frame.decode() if as_text else frame
    fast, general = opened(), opened()

    def outcome(run):
        try:
            return run(), None
        except RemoteProtocolError as exc:
            return None, str(exc)

    def decoded() -> list[ev.Event]:
        out: list[ev.Event] = []
        general._events(decode_server(received), out)
        return out

    assert outcome(lambda: fast.receive_data(received)) == outcome(decoded)
    assert fast.model_turn_active == general.model_turn_active
    if not (layout["urlsafe"] or layout["unpadded"] or layout["turn_complete"] or layout["usage"]):
        if not layout["escaped_slash"] and layout["mime"].isascii():
            assert model_audio(received) == (layout["mime"], pcm), "the plain frame takes the native path"
    if layout["turn_complete"] or layout["usage"] or layout["escaped_slash"]:
        assert model_audio(received) is None


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("audio"), st.binary(max_size=40).map(lambda b: b[: len(b) // 2 * 2])),
            st.tuples(st.just("text"), st.text(max_size=5)),
            st.tuples(st.just("flush"), st.none()),
            st.tuples(st.just("handle"), st.integers(0, 30)),
            st.tuples(st.just("setup_complete"), st.none()),
        ),
        max_size=40,
    ),
    transparent=st.booleans(),
    max_replay_bytes=st.sampled_from([300, 16 * 1024 * 1024]),
)
def test_writing_audio_directly_is_the_queue_then_data_to_send(steps, transparent, max_replay_bytes) -> None:
    """Driven the same way, a protocol that writes audio through `audio_to_write` whenever it
    can writes the same frames, in the same order, numbered and kept for replay the same, as
    one that always queues and then takes `data_to_send`."""
    setup = LiveConfig(transparent_resumption=transparent).to_setup("gemini-test")
    queued = LiveProtocol(setup, max_replay_bytes=max_replay_bytes)
    direct = LiveProtocol(setup, max_replay_bytes=max_replay_bytes)
    written: dict[str, list[bytes]] = {"queued": [], "direct": []}
    for kind, value in steps:
        if kind == "audio":
            queued.send_audio(value)
            written["queued"] += queued.data_to_send()
            frame = direct.audio_to_write(value)
            if frame is None:
                direct.send_audio(value)
                written["direct"] += direct.data_to_send()
            else:
                written["direct"].append(frame)
        elif kind == "text":
            queued.send_text(value)
            direct.send_text(value)
        elif kind == "flush":
            written["queued"] += queued.data_to_send()
            written["direct"] += direct.data_to_send()
        else:
            message = (
                SETUP_COMPLETE if kind == "setup_complete" else update(f"h{value}", value if transparent else None)
            )
            outcomes = []
            for p in (queued, direct):
                try:
                    outcomes.append(p.receive_data(message))
                except RemoteProtocolError as exc:
                    outcomes.append(str(exc))
            assert outcomes[0] == outcomes[1]
        assert written["queued"] == written["direct"]
        assert queued.unconsumed_frames() == direct.unconsumed_frames()
        assert (queued._handed_index, queued.replay_overflow_frames) == (
            direct._handed_index,
            direct.replay_overflow_frames,
        )
