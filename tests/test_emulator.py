"""The emulator and geminilive's own client, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

import geminilive
from audio_util import TEXT_MODEL, chirp, frames, run, silence, xcorr_peak
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive._native import audio_frame, input_audio
from geminilive.emulator import Faults, LiveEmulator, ReplyToolCall, ScriptModel, ScriptTurn, ToneModel
from geminilive.emulator.server import _audio_frame_template
from geminilive.errors import InvalidArgumentError, PolicyViolationError, SessionError
from geminilive.messages import (
    Blob,
    Content,
    FunctionCall,
    FunctionDeclaration,
    FunctionResponse,
    Part,
    ServerContent,
    ServerMessage,
    Tool,
    decode_client,
    encode_server,
)
from recordings import all_recordings

FAST = {"speed": float("inf"), "realtime_playback": False}


async def until(session, kind, *, collect=None):
    """Events up to and including the first of type `kind`."""
    seen = []
    async for event in session:
        seen.append(event)
        if isinstance(event, kind):
            return seen
    raise AssertionError(f"session ended before {kind.__name__}: {seen}")


def audio_of(events) -> np.ndarray:
    pcm = b"".join(e.data for e in events if isinstance(e, ev.AudioChunk))
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768


async def speak_into(session, x: np.ndarray, rate: int) -> None:
    for frame in frames(x, rate):
        await session.send_audio(frame, rate)


def test_echo_round_trip_returns_the_speech_at_24k() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", **FAST) as emu:
            config = LiveConfig(silence_duration_ms=300)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                speech = chirp(1.0, 48000)
                await speak_into(session, np.concatenate([silence(0.3, 48000), speech, silence(0.6, 48000)]), 48000)
                events = await until(session, ev.TurnComplete)
        return speech, events

    speech, events = run(scenario())
    reply = audio_of(events)
    assert all(e.sample_rate_hz == 24000 for e in events if isinstance(e, ev.AudioChunk))
    expected = geminilive.Resampler(48000, 24000).process(speech)
    score, _ = xcorr_peak(reply, expected)
    assert score > 0.95, score
    assert abs(len(reply) / 24000 - 1.0) < 0.1, len(reply) / 24000
    kinds = [type(e) for e in events]
    assert kinds.index(ev.GenerationComplete) < kinds.index(ev.TurnComplete)
    assert any(isinstance(e, ev.Usage) and e.usage.prompt_token_count for e in events)


def test_text_turn_with_output_transcription() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", **FAST) as emu:
            config = LiveConfig(output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await session.send_text("hello from the test")
                return await until(session, ev.TurnComplete)

    events = run(scenario())
    text = "".join(e.text for e in events if isinstance(e, ev.OutputTranscription))
    assert text == "hello from the test"
    assert len(audio_of(events)) > 0


def test_text_modality_and_client_content() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                await session.send_client_content("what is up")
                return await until(session, ev.TurnComplete)

    events = run(scenario())
    assert [e.text for e in events if isinstance(e, ev.TextChunk)] == ["what is up"]


def test_manual_activity_turns() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", **FAST) as emu:
            config = LiveConfig(automatic_activity_detection=False)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await session.activity_start()
                speech = chirp(0.5, 16000)
                await speak_into(session, speech, 16000)
                await session.activity_end()
                return speech, await until(session, ev.TurnComplete)

    speech, events = run(scenario())
    reply = audio_of(events)
    assert len(reply) == 12000
    assert xcorr_peak(reply, geminilive.Resampler(16000, 24000).process(speech))[0] > 0.95


TOOLS = [
    Tool(
        function_declarations=[
            FunctionDeclaration(name="get_weather", parameters={"type": "OBJECT"}),
            FunctionDeclaration(name="log_event", behavior="NON_BLOCKING"),
        ]
    )
]


def test_tool_call_blocks_until_answered() -> None:
    script = ScriptModel(
        [ScriptTurn(text="It is sunny", tool_calls=[FunctionCall(name="get_weather", args={"city": "Oslo"})])]
    )

    async def scenario():
        async with LiveEmulator(model=script, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=TOOLS)) as session:
                await session.send_text("weather in Oslo?")
                [call] = [e for e in await until(session, ev.ToolCall) if isinstance(e, ev.ToolCall)]
                assert session.protocol.pending_tool_calls
                fc = call.function_calls[0]
                assert (fc.name, fc.args, fc.id) == ("get_weather", {"city": "Oslo"}, "function-call-1")
                await session.send_tool_response(FunctionResponse(id=fc.id, name=fc.name, response={"output": "sun"}))
                events = await until(session, ev.TurnComplete)
                record = emu.connections[0].record
                return events, record.conversation.state["tool_responses"]

    events, responses = run(scenario())
    assert len(audio_of(events)) > 0
    assert responses[0][0].response == {"output": "sun"}


def test_non_blocking_call_goes_on() -> None:
    script = ScriptModel([ScriptTurn(text="noted", tool_calls=[FunctionCall(name="log_event")])])

    async def scenario():
        async with LiveEmulator(model=script, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=TOOLS)) as session:
                await session.send_text("log it")
                return await until(session, ev.TurnComplete)

    events = run(scenario())
    kinds = [type(e) for e in events]
    assert ev.ToolCall in kinds and ev.AudioChunk in kinds


def test_barge_in_interrupts_the_reply_and_cancels_pending_calls() -> None:
    async def scenario():
        model = ToneModel(duration_s=5.0)
        async with LiveEmulator(model=model, speed=1.0) as emu:
            config = LiveConfig(silence_duration_ms=200)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await session.send_text("talk for a while")
                await until(session, ev.AudioChunk)
                await speak_into(session, chirp(0.3, 16000), 16000)
                return await until(session, ev.TurnComplete)

    events = run(scenario())
    kinds = [type(e) for e in events]
    assert ev.Interrupted in kinds
    assert ev.GenerationComplete not in kinds, "an interrupted turn has no generationComplete"
    assert events[-1].interrupted
    assert len(audio_of(events)) < 24000 * 2, "the 5 s reply stopped early"


def test_interruption_cancels_a_pending_tool_call() -> None:
    script = ScriptModel([ScriptTurn(text="x", tool_calls=[FunctionCall(name="get_weather")])])

    async def scenario():
        async with LiveEmulator(model=script, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=TOOLS)) as session:
                await session.send_text("weather?")
                await until(session, ev.ToolCall)
                await session.send_text("held: realtime input waits for the answer")
                held = session.protocol.held_input_frames
                await session.send_client_content("never mind")  # a new turn is not held
                return await until(session, ev.TurnComplete), session.protocol.pending_tool_calls, held

    events, pending, held = run(scenario())
    assert held == 1
    [cancel] = [e for e in events if isinstance(e, ev.ToolCallCancellation)]
    assert cancel.ids == ["function-call-1"] and not pending
    assert ev.Interrupted in [type(e) for e in events]


def numbered_frame(n: int) -> bytes:
    """20 ms of near-silence (the server VAD stays quiet) that says which frame it is."""
    return n.to_bytes(2, "little") + bytes(638)


def test_a_strict_emulator_aborts_on_realtime_input_during_a_blocking_call() -> None:
    script = ScriptModel([ScriptTurn(text="x", tool_calls=[FunctionCall(name="get_weather")])])

    async def scenario():
        async with LiveEmulator(model=script, abort_input_during_blocking_calls=True, **FAST) as emu:
            setup = {"setup": {"model": "models/m", "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}}
            async with websockets.connect(emu.url) as ws:  # a client that does not hold its input
                await ws.send(json.dumps(setup))
                await ws.recv()
                await ws.send(json.dumps({"realtimeInput": {"text": "weather?"}}))
                while "toolCall" not in json.loads(await ws.recv()):
                    pass
                await asyncio.sleep(0.4)  # past what may have been in flight
                blob = {"mimeType": "audio/pcm;rate=16000", "data": base64.b64encode(numbered_frame(0)).decode()}
                await ws.send(json.dumps({"realtimeInput": {"audio": blob}}))
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
                return closed.value.rcvd

    close = run(scenario())
    assert (close.code, close.reason) == (1008, "The operation was aborted.")


def test_the_microphone_streams_through_a_blocking_call_without_loss_or_abort() -> None:
    """The session holds realtime input while a blocking call is unanswered and sends it, in
    order, after the answer: a strict emulator takes every frame and never aborts."""
    script = ScriptModel([ScriptTurn(text="It is sunny", tool_calls=[FunctionCall(name="get_weather")])])

    async def scenario():
        emulator = LiveEmulator(model=script, abort_input_during_blocking_calls=True, record_input=True, **FAST)
        async with emulator as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=TOOLS)) as session:
                sent = 0

                async def microphone() -> None:
                    nonlocal sent
                    while True:
                        await session.send_audio(numbered_frame(sent))
                        sent += 1
                        await asyncio.sleep(0.01)

                mic = asyncio.create_task(microphone())
                await session.send_text("weather?")
                [call] = [e for e in await until(session, ev.ToolCall) if isinstance(e, ev.ToolCall)]
                await asyncio.sleep(0.8)  # the tool runs; the microphone goes on
                held = session.protocol.held_input_frames
                fc = call.function_calls[0]
                await session.send_tool_response(FunctionResponse(id=fc.id, name=fc.name, response={"output": "sun"}))
                events = await until(session, ev.TurnComplete)
                await asyncio.sleep(0.1)
                mic.cancel()
                while len(emu.input_audio()) < 640 * sent:
                    await asyncio.sleep(0.01)
                return held, events, emu.input_audio(), sent, [c.open for c in emu.connections]

    held, events, heard, sent, connections = run(scenario())
    assert held >= 20, "the microphone's frames were held during the call"
    assert ev.GenerationComplete in [type(e) for e in events], "the reply after the answer came whole"
    assert [int.from_bytes(heard[i : i + 2], "little") for i in range(0, len(heard), 640)] == list(range(sent))
    assert connections == [True], "one connection, never aborted"


SPEECH_16K = (chirp(1.0, 16000) * 32767).astype("<i2").tobytes()


def client_frame(kind: str, n: int) -> bytes:
    """Frame `n` of a stream: quiet audio at 16 or 24 kHz (saying which frame it is), 20 ms of
    speech (consecutive ones make a sweep the VAD hears), or a message that is not audio."""
    if kind in ("quiet16", "quiet24", "speech"):
        if kind == "speech":
            at = n * 640 % len(SPEECH_16K)
            pcm, rate = SPEECH_16K[at : at + 640], 16000
        else:
            rate = 16000 if kind == "quiet16" else 24000
            pcm = n.to_bytes(2, "little") + bytes(rate // 50 * 2 - 2)
        blob = {"mimeType": f"audio/pcm;rate={rate}", "data": base64.b64encode(pcm).decode()}
        return json.dumps({"realtimeInput": {"audio": blob}}).encode()
    if kind == "end":
        return b'{"realtimeInput": {"audioStreamEnd": true}}'
    return json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": str(n)}]}]}}).encode()


@settings(max_examples=10, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["quiet16", "quiet24", "speech", "end", "content"]), st.integers(1, 40)),
        min_size=1,
        max_size=8,
    )
)
def test_client_messages_read_as_they_arrive_are_taken_whole_and_in_order(runs) -> None:
    """The emulator reads most audio in the socket's callback and the rest in its reading task
    (other messages, a first frame at a new rate, audio in which the VAD finds speech starting
    or ending): whatever the mix, it takes every message once, in the order sent, and hears the
    same turns as when every message goes through the task."""
    runs = [*runs, ("quiet16", 40)]  # ends in silence: the VAD closes any turn still open
    sent = [client_frame(kind, n) for kind, count in runs for n in range(count)]

    async def scenario(faults: Faults | None):
        async with LiveEmulator(record_input=True, faults=faults, **FAST) as emu:
            async with websockets.connect(emu.url, max_size=None) as ws:
                await ws.send('{"setup": {"model": "models/m"}}')
                await ws.recv()
                for frame in sent:  # no await between them: they arrive in bursts
                    ws.protocol.send_text(frame)
                ws.send_data()
                [connection] = emu.connections
                while connection.client_index < len(sent) or connection._after_taken is not None:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
                turns = [(t.text, t.audio_s) for t in connection.record.conversation.turns]
                ws.transport.abort()  # replies we did not read may be on their way
                return list(connection.received), emu.input_audio(), turns

    received, heard, turns = run(scenario(None))
    # Any per-message fault sends every message through the task; this one never fires.
    through_task = run(scenario(Faults(close_after_client_messages=10**6)))
    expected = [decode_client(frame) for frame in sent]
    assert received == expected
    audio = [m.realtime_input.audio.data for m in expected if m.realtime_input and m.realtime_input.audio]
    assert heard == b"".join(audio)
    assert (received, heard, turns) == through_task
    if any(kind == "speech" and count >= 10 for kind, count in runs):
        assert turns, "a fifth of a second of speech and more makes a turn"


def test_time_input_notes_when_each_audio_message_was_read_and_how_much_audio_came_by_then() -> None:
    """For benchmarks of how late a client passes audio on: one entry per audio message (at
    any rate, read in the socket's callback or in the task), the audio's running length in
    seconds, times that never go back and cannot come faster than the audio was paced."""
    sizes = [(16000, 320), (24000, 480), (16000, 320), (16000, 640), (8000, 160)] * 4  # 20-40 ms

    async def scenario(time_input: bool):
        async with LiveEmulator(time_input=time_input, **FAST) as emu:
            async with websockets.connect(emu.url) as ws:
                await ws.send('{"setup": {"model": "models/m"}}')
                await ws.recv()
                t0 = time.monotonic()
                for rate, samples in sizes:
                    data = base64.b64encode(bytes(2 * samples)).decode()
                    audio = {"mimeType": f"audio/pcm;rate={rate}", "data": data}
                    await ws.send(json.dumps({"realtimeInput": {"audio": audio}}))
                    await asyncio.sleep(0.02)
                [connection] = emu.connections
                while connection.client_index < len(sizes):
                    await asyncio.sleep(0.01)
                return connection.input_timing, t0

    assert run(scenario(False))[0] is None
    timing, t0 = run(scenario(True))
    assert len(timing) == len(sizes)
    arrived, upto = zip(*timing, strict=True)
    assert list(upto) == pytest.approx(np.cumsum([samples / rate for rate, samples in sizes]).tolist())
    assert list(arrived) == sorted(arrived) and arrived[0] >= t0
    assert arrived[-1] - arrived[0] >= 0.02 * (len(sizes) - 1)


def test_no_interruption_mode_lets_the_model_finish() -> None:
    async def scenario():
        async with LiveEmulator(model=ToneModel(duration_s=0.6), speed=2.0) as emu:
            config = LiveConfig(activity_handling="NO_INTERRUPTION", silence_duration_ms=200)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await session.send_text("go")
                first = await until(session, ev.AudioChunk)
                await speak_into(session, chirp(0.3, 16000), 16000)
                return first + await until(session, ev.TurnComplete)

    events = run(scenario())
    assert ev.Interrupted not in [type(e) for e in events]
    assert len(audio_of(events)) == int(0.6 * 24000)


def test_resumes_after_a_dropped_connection_and_keeps_the_conversation() -> None:
    script = ScriptModel([ScriptTurn(text="first reply"), ScriptTurn(text="second reply")])

    async def scenario():
        faults = [Faults(close_after_turns=1, close_code=1011), None]
        async with LiveEmulator(model=script, faults=faults, **FAST) as emu:
            config = LiveConfig(output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await session.send_text("one")
                first = await until(session, ev.TurnComplete)
                await until(session, ev.SessionResumptionUpdate)
                await session.send_text("two")
                second = await until(session, ev.TurnComplete)
                return first, second, session.reconnects, emu

    first, second, reconnects, emu = run(scenario())
    said = ["".join(e.text for e in events if isinstance(e, ev.OutputTranscription)) for events in (first, second)]
    assert said == ["first reply", "second reply"], "the script went on where it was"
    assert reconnects == 1
    assert len(emu.connections) == 2
    assert emu.connections[1].record is emu.connections[0].record
    assert [t.text for t in emu.connections[1].record.conversation.turns] == ["one", "two"]


def test_transparent_resumption_replays_unconsumed_messages() -> None:
    async def scenario():
        faults = [Faults(drop_after_client_messages=3), None]
        async with LiveEmulator(model="echo", faults=faults, **FAST) as emu:
            config = LiveConfig(transparent_resumption=True, response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                for word in ["a", "b", "c", "d", "e"]:
                    await session.send_client_content(word, turn_complete=False)
                await session.send_client_content("f")
                await until(session, ev.TurnComplete)
                return emu

    emu = run(scenario())
    texts = [
        m.client_content.turns[0].parts[0].text
        for c in emu.connections
        for m in c.received
        if m.client_content is not None and m.client_content.turns
    ]
    assert texts[:3] == ["a", "b", "c"]
    assert "".join(sorted(set(texts))) == "abcdef", texts
    assert texts[3:] == [t for t in texts[3:] if t not in "abc"] or texts[3:5] == ["a", "b"]


def test_go_away_then_resume() -> None:
    async def scenario():
        faults = [Faults(go_away_after_s=0.1, go_away_time_left_s=0.2), None]
        async with LiveEmulator(model="echo", faults=faults, **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                await until(session, ev.SessionResumptionUpdate)
                [go] = [e for e in await until(session, ev.GoAway) if isinstance(e, ev.GoAway)]
                await session.send_text("still there?")
                events = await until(session, ev.TurnComplete)
                return go, events, session.reconnects

    go, events, reconnects = run(scenario())
    assert go.time_left_s == 0.2
    assert reconnects == 1
    assert [e.text for e in events if isinstance(e, ev.TextChunk)] == ["still there?"]


def test_wrong_path_key_and_handle_are_clear_errors() -> None:
    async def scenario():
        async with LiveEmulator(api_key="secret", **FAST) as emu:
            with pytest.raises(SessionError, match="404"):
                await geminilive.connect(endpoint=emu.base_url + "/ws/nope", api_key="secret")
            with pytest.raises(PolicyViolationError, match="API key not valid"):
                await geminilive.connect(endpoint=emu.url, api_key="wrong")
            with pytest.raises(PolicyViolationError, match="session not found"):
                await geminilive.connect(
                    endpoint=emu.url, api_key="secret", config=LiveConfig(resumption_handle="bogus")
                )
            async with websockets.connect(emu.url, additional_headers={"x-goog-api-key": "secret"}) as ws:
                await ws.send('{"realtimeInput": {"text": "setup first?"}}')
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1007
            async with websockets.connect(emu.url, additional_headers={"x-goog-api-key": "secret"}) as ws:
                await ws.send('{"setup": {"model": "models/m"}}')
                assert json.loads(await ws.recv()) == {"setupComplete": {}}
                await ws.send('{"setup": {"model": "models/m"}}')
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1007, "Request contains an invalid argument.")
            async with websockets.connect(emu.url, additional_headers={"x-goog-api-key": "secret"}) as ws:
                await ws.send('{"setup": {"model": "models/m"}}')
                await ws.recv()
                await ws.send("{" + "x" * 300)
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1007 and len(closed.value.rcvd.reason.encode()) <= 123

    run(scenario())


def test_odd_audio_bytes_close_with_invalid_argument() -> None:
    async def scenario():
        async with LiveEmulator(**FAST) as emu:
            async with websockets.connect(emu.url) as ws:
                await ws.send('{"setup": {"model": "models/m"}}')
                await ws.recv()
                await ws.send('{"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "AAAA"}}}')
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    await ws.recv()
                return closed.value.rcvd.code

    assert run(scenario()) == 1007
    with pytest.raises(InvalidArgumentError):
        raise geminilive.errors.closed_error(1007, "x")


def shapes(frame: bytes) -> set[str]:
    """The message's structure without values: top-level kind, content fields, part kinds."""
    tree = json.loads(frame)
    out = set()
    for key, value in tree.items():
        out.add(key)
        if key == "serverContent":
            for field, inner in value.items():
                out.add(f"serverContent.{field}")
                if field == "modelTurn":
                    out |= {f"part.{kind}" for part in inner.get("parts", []) for kind in part}
                    out |= {f"mime.{p['inlineData']['mimeType']}" for p in inner.get("parts", []) if "inlineData" in p}
                    if "role" in inner:
                        out.add(f"role.{inner['role']}")
        if key == "setupComplete":
            out |= {f"setupComplete.{k}" for k in value}
    return out


VERTEX_PATH = "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
NOT_EMULATED = {"part.executableCode"}  # the recorded model wrote code before its tool call


class ToolUsingModel:
    """Calls the first declared function on a text turn when the setup declares any (as the
    recorded model did), else says a line."""

    name = "tool-using"

    def reply(self, turn, conversation):
        declared = [d for t in conversation.setup.tools or () for d in t.function_declarations or ()]
        if declared and turn.text and not turn.text.startswith(declared[0].name):
            yield ReplyToolCall([FunctionCall(name=declared[0].name, args={})])
        yield from ScriptModel([ScriptTurn(text="I can hear you.")]).reply(turn, conversation)


@pytest.mark.parametrize("recording", all_recordings(), ids=lambda r: r.name)
def test_recorded_client_frames_are_accepted_and_answered_alike(recording) -> None:
    script = ToolUsingModel()

    async def scenario():
        async with LiveEmulator(model=script, **FAST) as emu:
            url = emu.base_url + VERTEX_PATH if recording.vertex else emu.url
            answers: list[bytes] = []
            async with websockets.connect(url) as ws:
                for frame in recording.client_frames:
                    await ws.send(frame.decode())
                    if not answers:
                        answers.append(await ws.recv())
                emulated = [f for f in recording.server_frames if not shapes(f) & NOT_EMULATED]
                expected = set().union(*(shapes(f) for f in emulated))
                while not expected <= set().union(*(shapes(a) for a in answers)):
                    answers.append(await ws.recv())
                assert ws.close_code is None, "the emulator accepted every recorded frame"
                ws.transport.abort()  # we stopped reading mid-reply; don't wait for a clean close
            return answers

    answers = run(scenario())
    assert all(isinstance(a, bytes) for a in answers), "binary frames, as the service sends"
    assert all(a.endswith(b"\n") and b'\n  "' in a for a in answers), "pretty-printed JSON"


@pytest.mark.parametrize(
    "faults",
    [
        Faults(audio_jitter_s=0.02),
        Faults(audio_burst_chunks=5),
        Faults(send_delay_s=0.005),
        Faults(slow_reader_s=0.002),
    ],
    ids=["jitter", "bursts", "send-delay", "slow-reader"],
)
def test_network_faults_delay_but_lose_nothing(faults) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", faults=faults, speed=8.0, realtime_playback=False) as emu:
            config = LiveConfig(silence_duration_ms=200)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                speech = chirp(0.6, 16000)
                await speak_into(session, np.concatenate([silence(0.2, 16000), speech, silence(0.4, 16000)]), 16000)
                return speech, await until(session, ev.TurnComplete)

    speech, events = run(scenario())
    reply = audio_of(events)
    assert len(reply) == int(0.6 * 24000) or abs(len(reply) - 0.6 * 24000) < 480
    assert xcorr_peak(reply, geminilive.Resampler(16000, 24000).process(speech))[0] > 0.95


def test_audio_stream_end_completes_the_turn() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", **FAST) as emu:
            config = LiveConfig(silence_duration_ms=2000)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                await speak_into(session, np.concatenate([silence(0.2, 16000), chirp(0.5, 16000)]), 16000)
                await session.audio_stream_end()  # the microphone was switched off mid-speech
                return await until(session, ev.TurnComplete)

    events = run(scenario())
    assert len(audio_of(events)) > 0.4 * 24000


def test_activity_markers_with_automatic_vad_are_rejected() -> None:
    async def scenario():
        async with LiveEmulator(**FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, auto_resume=False) as session:
                await session.activity_start()
                with pytest.raises(InvalidArgumentError):
                    await until(session, ev.TurnComplete)

    run(scenario())


@given(
    pcm=st.binary(min_size=1, max_size=200),  # the emulator sends no empty chunk
    mime=st.sampled_from(["audio/pcm;rate=24000", "audio/pcm"]),
    vertex=st.booleans(),
)
def test_templated_audio_messages_are_what_the_encoder_writes(pcm: bytes, mime: str, vertex: bool) -> None:
    prefix, suffix = _audio_frame_template(mime, vertex)
    message = ServerMessage(
        server_content=ServerContent(
            model_turn=Content(
                parts=[Part(inline_data=Blob(mime_type=mime, data=pcm))], role="model" if vertex else None
            )
        )
    )
    assert audio_frame(prefix, pcm, suffix) == encode_server(message)


@given(
    pcm=st.binary(max_size=97),
    layout=st.fixed_dictionaries(
        {
            "mime_key": st.sampled_from(["mimeType", "mime_type"]),
            "urlsafe": st.booleans(),
            "data_first": st.booleans(),
            "extra": st.sampled_from([None, ("text", "hi"), ("audioStreamEnd", True)]),
            "indent": st.sampled_from([None, 2]),
            "separators": st.sampled_from([None, (",", ":")]),
        }
    ),
)
def test_the_emulators_native_input_path_reads_what_the_decoder_reads(pcm: bytes, layout: dict) -> None:
    """`input_audio` takes a client audio frame only when it is exactly one blob, and then
    reads the same audio as the full decoder; every other frame is left to the decoder."""
    encoded = (base64.urlsafe_b64encode if layout["urlsafe"] else base64.b64encode)(pcm).decode()
    fields = [("data", encoded), (layout["mime_key"], "audio/pcm;rate=16000")]
    blob = dict(fields if layout["data_first"] else fields[::-1])
    realtime: dict = {"audio": blob}
    if layout["extra"]:
        realtime[layout["extra"][0]] = layout["extra"][1]
    frame = json.dumps({"realtimeInput": realtime}, indent=layout["indent"], separators=layout["separators"]).encode()
    fast = input_audio(frame)
    plain = (
        layout["mime_key"] == "mimeType"
        and not layout["extra"]
        and (not layout["urlsafe"] or ("-" not in encoded and "_" not in encoded))
    )
    if plain:
        assert fast == ("audio/pcm;rate=16000", pcm)
    if fast is not None:
        general = decode_client(frame)
        assert general.realtime_input is not None and general.realtime_input.audio == Blob(
            mime_type=fast[0], data=fast[1]
        )
        assert not layout["extra"]


# --- model generations (profiles) ------------------------------------------------------------

NATIVE_2_5 = "gemini-2.5-flash-native-audio-preview-12-2025"
FLASH_3_1 = "gemini-3.1-flash-live-preview"
LIVE_3_8 = "gemini-3.8-live"


async def first_answer(emu: LiveEmulator, setup: dict) -> tuple[int, str] | str:
    """What the emulator answers a setup with: the close (code, reason), or ``setupComplete``."""
    async with websockets.connect(emu.url) as ws:
        await ws.send(json.dumps({"setup": setup}))
        try:
            [answer] = json.loads(await ws.recv())
            return answer
        except websockets.exceptions.ConnectionClosed as closed:
            return closed.rcvd.code, closed.rcvd.reason


@pytest.mark.parametrize(
    ("model", "generation", "extra", "answer"),
    [
        (TEXT_MODEL, {"responseModalities": ["TEXT"]}, {}, "setupComplete"),
        (NATIVE_2_5, {"responseModalities": ["TEXT"]}, {}, (1007, "Cannot extract voices from a non-audio request.")),
        (FLASH_3_1, {"responseModalities": ["TEXT"]}, {}, (1011, "Internal error encountered.")),
        (LIVE_3_8, {"responseModalities": ["TEXT"]}, {}, (1007, "Request contains an invalid argument.")),
        (NATIVE_2_5, {"thinkingConfig": {"thinkingBudget": 0}}, {}, "setupComplete"),
        (LIVE_3_8, {"thinkingConfig": {"thinkingLevel": "LOW"}}, {}, (1007, "Request contains an invalid argument.")),
        (LIVE_3_8, {"enableAffectiveDialog": True}, {}, (1007, "Request contains an invalid argument.")),
        (FLASH_3_1, {"enableAffectiveDialog": True}, {}, (1007, "Request contains an invalid argument.")),
        (LIVE_3_8, {}, {"proactivity": {"proactiveAudio": False}}, (1007, "Request contains an invalid argument.")),
        (LIVE_3_8, {}, {"proactivity": {"proactiveAudio": True}}, "setupComplete"),
        (FLASH_3_1, {}, {"proactivity": {"proactiveAudio": True}}, (1007, "Request contains an invalid argument.")),
    ],
)
def test_each_model_generation_takes_or_refuses_a_setup_as_the_service_does(model, generation, extra, answer) -> None:
    async def scenario():
        async with LiveEmulator(**FAST) as emu:
            return await first_answer(emu, {"model": f"models/{model}", "generationConfig": generation, **extra})

    assert run(scenario()) == answer


@pytest.mark.parametrize("model", [NATIVE_2_5, FLASH_3_1, LIVE_3_8])
def test_3x_models_bundle_the_transcript_with_its_audio_and_the_session_reads_both(model) -> None:
    script = ScriptModel([ScriptTurn(text="the quick brown fox jumps over the lazy dog", tone_s=0.4)])

    async def scenario():
        async with LiveEmulator(model=script, **FAST) as emu:
            setup = {"model": f"models/{model}", "outputAudioTranscription": {}}
            async with websockets.connect(emu.url) as ws:
                await ws.send(json.dumps({"setup": setup}))
                await ws.recv()
                await ws.send(json.dumps({"realtimeInput": {"text": "go"}}))
                wire = []
                while "turnComplete" not in wire[-1:] and (frame := json.loads(await ws.recv())):
                    content = frame.get("serverContent", {})
                    wire.append(",".join(sorted(content)))
            config = LiveConfig(output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, model=model, config=config) as session:
                await session.send_text("go")
                events = await until(session, ev.TurnComplete)
            return wire, events

    wire, events = run(scenario())
    bundled = "modelTurn,outputTranscription" in wire
    assert bundled == (model != NATIVE_2_5), wire
    assert "".join(e.text for e in events if isinstance(e, ev.OutputTranscription)).split() == (
        "the quick brown fox jumps over the lazy dog".split()
    )
    assert len(audio_of(events)) == int(0.4 * 24000)


@pytest.mark.parametrize("model", [NATIVE_2_5, FLASH_3_1])
def test_3_1_sends_usage_in_an_empty_message_of_its_own_and_the_session_reads_it(model) -> None:
    async def scenario():
        async with LiveEmulator(model=ScriptModel([ScriptTurn(text="hello")]), **FAST) as emu:
            setup = {"model": f"models/{model}"}
            async with websockets.connect(emu.url) as ws:
                await ws.send(json.dumps({"setup": setup}))
                await ws.recv()
                await ws.send(json.dumps({"realtimeInput": {"text": "hi"}}))
                wire = []
                while not wire or "turnComplete" not in wire[-1].get("serverContent", {}):
                    wire.append(json.loads(await ws.recv()))
            async with geminilive.connect(endpoint=emu.url, model=model) as session:
                await session.send_text("hi")
                events = await until(session, ev.TurnComplete)
            return wire, events

    wire, events = run(scenario())
    usage_alone = {"serverContent": {}, "usageMetadata": wire[-2].get("usageMetadata")} == wire[-2]
    assert usage_alone == (model == FLASH_3_1), wire[-2:]
    [usage] = [e for e in events if isinstance(e, ev.Usage)]
    assert usage.usage.total_token_count, "the session reports the usage either way"
    assert isinstance(events[-1], ev.TurnComplete)


def test_3_1_runs_every_call_synchronously_and_3_8_defaults_to_non_blocking() -> None:
    script = ScriptModel([ScriptTurn(text="done", tool_calls=[FunctionCall(name="log_event")])])
    undeclared = [Tool(function_declarations=[FunctionDeclaration(name="log_event")])]

    async def reply_before_answering(model: str, tools: list[Tool]) -> bool:
        async with LiveEmulator(model=script, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, model=model, config=LiveConfig(tools=tools)) as session:
                await session.send_text("log it")
                await until(session, ev.ToolCall)
                try:
                    async with asyncio.timeout(0.5):
                        await until(session, ev.AudioChunk)
                    return True
                except TimeoutError:
                    return False

    async def scenario():
        return {
            (model, label): await reply_before_answering(model, tools)
            for model in (NATIVE_2_5, FLASH_3_1, LIVE_3_8)
            for label, tools in (("declared NON_BLOCKING", TOOLS), ("no behavior", undeclared))
        }

    assert run(scenario()) == {
        (NATIVE_2_5, "declared NON_BLOCKING"): True,
        (NATIVE_2_5, "no behavior"): False,
        (FLASH_3_1, "declared NON_BLOCKING"): False,
        (FLASH_3_1, "no behavior"): False,
        (LIVE_3_8, "declared NON_BLOCKING"): True,
        (LIVE_3_8, "no behavior"): True,
    }


def test_on_3_8_input_during_a_blocking_call_cancels_it() -> None:
    script = ScriptModel([ScriptTurn(text="x", tool_calls=[FunctionCall(name="get_weather")])])
    blocking = [Tool(function_declarations=[FunctionDeclaration(name="get_weather", behavior="BLOCKING")])]

    async def scenario():
        async with LiveEmulator(model=script, abort_input_during_blocking_calls=True, **FAST) as emu:
            config = LiveConfig(tools=blocking)
            async with geminilive.connect(endpoint=emu.url, model=LIVE_3_8, config=config) as session:
                await session.send_text("weather?")
                await until(session, ev.ToolCall)
                await asyncio.sleep(0.4)  # past what may have been in flight
                await session.send_audio(bytes(640))  # not held on 3.8: it cancels the call
                events = await until(session, ev.TurnComplete)
                return events, session.protocol.pending_tool_calls, [c.open for c in emu.connections]

    events, pending, connections = run(scenario())
    [cancel] = [e for e in events if isinstance(e, ev.ToolCallCancellation)]
    assert cancel.ids == ["function-call-1"] and not pending
    assert connections == [True], "cancelled, not aborted (3.8 takes the input)"
