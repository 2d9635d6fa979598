"""Hostile or broken input on both sides, and the security defaults.

Policies under test: a server frame that does not decode is dropped, counted and reported
(``MalformedMessage``), the session goes on; a client frame the emulator cannot take closes
that connection with 1007 as the service does, and the emulator goes on serving; frames over
the size limit close with 1009; nothing grows without bound while a peer floods or stalls.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import tracemalloc

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import serve

import geminilive
from audio_util import TEXT_MODEL, run
from geminilive import LiveConfig, LiveProtocol
from geminilive import events as ev
from geminilive.emulator import Faults, LiveEmulator
from geminilive.errors import (
    ConnectionClosedError,
    InsecureTransportError,
    InvalidArgumentError,
    PolicyViolationError,
    RemoteProtocolError,
    SessionError,
    SetupTimeoutError,
)
from geminilive.messages import decode_client, decode_server
from geminilive.session import Endpoint
from tls import loopback_tls

FAST = {"speed": float("inf"), "realtime_playback": False}
KEYS = [
    "setupComplete", "serverContent", "modelTurn", "parts", "inlineData", "inline_data", "mimeType", "data",
    "text", "turnComplete", "interrupted", "generationComplete", "toolCall", "functionCalls", "id", "name",
    "args", "toolCallCancellation", "ids", "goAway", "timeLeft", "sessionResumptionUpdate", "newHandle",
    "resumable", "lastConsumedClientMessageIndex", "usageMetadata", "promptTokenCount", "voiceActivity",
    "inputTranscription", "output_transcription", "finished", "realtimeInput", "audio", "mediaChunks",
    "clientContent", "turns", "role", "toolResponse", "functionResponses", "response", "setup", "model",
    "activityStart", "audioStreamEnd", "sessionId",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["AAA=", "AA==", "!!", "audio/pcm;rate=24000", "audio/pcm", "9.5s", "-1s", "1e9"])
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=25,
)


def opened() -> LiveProtocol:
    p = LiveProtocol(LiveConfig().to_setup("gemini-test"))
    p.receive_data(b'{"setupComplete": {}}')
    return p


@given(documents)
def test_structured_garbage_never_crashes_either_decoder(doc) -> None:
    frame = json.dumps(doc).encode()
    try:
        opened().receive_data(frame)
    except RemoteProtocolError:
        pass
    try:
        decode_client(frame)
    except RemoteProtocolError:
        pass


NOT_JSON = [
    b"[" * 100_000,
    b'{"serverContent":' * 50_000,
    b'{"toolCall":{"functionCalls":[{"name":"f","args":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_002 + b"]}}",
    b"\xff\xfe\x00",
    "\ud800".encode("utf-8", "surrogatepass"),
    b"",
    b"[1, 2]",
]
BAD_SERVER_MESSAGES = [
    b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"AA=="}}]}}}',
    b'{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"!!!"}}]}}}',
    b'{"goAway":{"timeLeft":"soon"}}',
    b'{"goAway":{"timeLeft":"1e400s"}}',
    b'{"voiceActivity":{"audioOffset":"-3s"}}',
    b'{"sessionResumptionUpdate":{"resumable":true,"lastConsumedClientMessageIndex":"1e5"}}',
    b'{"serverContent": 5}',
    b'{"setupComplete": {}}',  # a second one
    b'{"serverContent":{"modelTurn":{"parts":[{"text":"\xff"}]}}}',  # not UTF-8 (a binary frame)
]
HOSTILE = NOT_JSON + BAD_SERVER_MESSAGES


@pytest.mark.parametrize("frame", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_frames_are_typed_errors(frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        opened().receive_data(frame)
    if frame in NOT_JSON:
        with pytest.raises(RemoteProtocolError):
            decode_client(frame)


def test_decoding_hostile_frames_does_not_grow_memory() -> None:
    frames = [f for f in HOSTILE if len(f) < 1000] + [json.dumps({"serverContent": {"x": "y" * 100}}).encode()]

    def churn() -> None:
        p = opened()
        for _ in range(300):
            for frame in frames:
                for decode in (p.receive_data, decode_client, decode_server):
                    try:
                        decode(frame)
                    except RemoteProtocolError:
                        pass

    churn()  # warm caches
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        churn()
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024, f"{after - before} bytes kept after 12000 hostile frames"
    assert peak - before < 8 * 1024 * 1024


# --- the client against a hostile server (a plain websockets server) ------------------------


async def hostile_server(frames: list[bytes], *, answer_setup: bool = True, hold_s: float = 5.0):
    async def handler(ws):
        await ws.recv()  # setup
        if answer_setup:
            for frame in frames:
                await ws.send(frame)
        await asyncio.sleep(hold_s)

    return await serve(handler, "127.0.0.1", 0, max_size=None)


def test_malformed_server_frames_are_dropped_counted_and_the_session_goes_on() -> None:
    garbage = [NOT_JSON[0], BAD_SERVER_MESSAGES[0], BAD_SERVER_MESSAGES[2], b"not json", b'{"serverContent": 5}']
    good_text = b'{"serverContent":{"modelTurn":{"parts":[{"text":"still here"}]}}}'
    frames = [b'{"setupComplete": {}}', *garbage, good_text, b'{"serverContent":{"turnComplete":true}}']

    async def scenario():
        server = await hostile_server(frames)
        port = server.sockets[0].getsockname()[1]
        async with server, geminilive.connect(endpoint=f"ws://127.0.0.1:{port}/ws/x") as session:
            seen = []
            async for event in session:
                seen.append(event)
                if isinstance(event, ev.TurnComplete):
                    return seen, session.stats

    seen, stats = run(scenario())
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["SetupComplete"] + ["MalformedMessage"] * 5 + ["TextChunk", "TurnComplete"]
    assert stats.malformed_messages == 5


def test_a_server_that_never_answers_setup_times_out() -> None:
    async def scenario():
        server = await hostile_server([], answer_setup=False)
        port = server.sockets[0].getsockname()[1]
        async with server:
            async with geminilive.connect(endpoint=f"ws://127.0.0.1:{port}/ws/x", setup_timeout_s=0.3):
                pass

    with pytest.raises(SetupTimeoutError, match=r"no setupComplete within 0\.3 s"):
        run(scenario())


def test_an_oversized_server_frame_is_a_typed_close_not_a_reconnect() -> None:
    big = json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "x" * 200_000}]}}}).encode()

    async def scenario():
        server = await hostile_server([b'{"setupComplete": {}}', big])
        port = server.sockets[0].getsockname()[1]
        async with server:
            async with geminilive.connect(endpoint=f"ws://127.0.0.1:{port}/ws/x", max_frame_bytes=100_000) as session:
                async for _ in session:
                    pass

    with pytest.raises(ConnectionClosedError) as caught:
        run(scenario())
    assert caught.value.code == 1009


# --- the emulator against a hostile client --------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1, 2]",
        b'{"realtimeInput": {"audio": 5}}',
        b'{"somethingNew": {}}',
        b'{"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "AQ"}}}',
        b'{"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "%%%"}}}',
        b'{"setup": {"model": "again"}}',
        b"[" * 100_000,
        b'{"realtimeInput": {"text": "\xff\xfe"}}',  # not UTF-8
    ],
)
def test_the_emulator_closes_1007_on_bad_client_frames_and_keeps_serving(frame: bytes) -> None:
    async def scenario():
        async with LiveEmulator(**FAST) as emu:
            async with websockets.connect(emu.url) as ws:
                await ws.send(json.dumps({"setup": {"model": "models/x"}}))
                await ws.recv()  # setupComplete
                await ws.send(frame)
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as s:
                await s.send_text("fine")
                async for event in s:
                    if isinstance(event, ev.TextChunk):
                        return closed.value.rcvd.code, event.text

    assert run(scenario()) == (1007, "fine")


def test_the_emulator_closes_1009_on_an_oversized_frame() -> None:
    async def scenario():
        async with LiveEmulator(max_message_bytes=64 * 1024, **FAST) as emu:
            async with websockets.connect(emu.url, max_size=None) as ws:
                await ws.send(json.dumps({"setup": {"model": "models/x"}}))
                await ws.recv()
                await ws.send(json.dumps({"realtimeInput": {"text": "x" * 100_000}}))
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
                return closed.value.rcvd.code

    assert run(scenario()) == 1009


def test_a_flood_of_client_messages_is_taken_in_order_with_bounded_memory() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", record_input=True, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                writes = []
                for n in range(20_000):
                    await session.send_audio(n.to_bytes(2, "little") * 16)
                    writes.append(session._ws.transport.get_write_buffer_size())
                while len(emu.input_audio()) < 20_000 * 32:
                    await asyncio.sleep(0.05)
                kept = len(emu.connections[0].received)
            return emu, writes, kept

    emu, writes, kept = run(scenario())
    pcm = emu.input_audio()
    assert [int.from_bytes(pcm[i : i + 2], "little") for i in range(0, len(pcm), 32)] == list(range(20_000))
    assert kept == 10_000, "the emulator keeps only the latest messages of a connection"
    assert len(emu.connections[0].received) == 200, "and fewer once it has ended"
    assert max(writes) < 1024 * 1024, "the client's socket buffer is held back by the server, not grown"


def test_a_client_that_stops_reading_holds_back_the_emulator_not_its_memory() -> None:
    async def scenario():
        model = geminilive.emulator.ToneModel(duration_s=30.0)
        async with LiveEmulator(model=model, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                await session.send_text("talk for a long time")
                await asyncio.sleep(1.0)  # not reading: 30 s of audio wants to come at once
                server_buffer = emu.connections[0].ws.transport.get_write_buffer_size()
                audio = 0
                async for event in session:
                    if isinstance(event, ev.AudioChunk):
                        audio += len(event.data)
                    if isinstance(event, ev.TurnComplete):
                        return server_buffer, audio

    server_buffer, audio = run(scenario())
    assert server_buffer < 256 * 1024, f"the emulator buffered {server_buffer} bytes for a stalled client"
    assert audio == 30 * 24000 * 2, "then everything arrived"


def test_slow_reading_emulator_delays_but_loses_nothing() -> None:
    async def scenario():
        faults = Faults(slow_reader_s=0.002)
        async with LiveEmulator(faults=faults, record_input=True, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                for n in range(300):
                    await session.send_audio(n.to_bytes(2, "little") * 320)
                while len(emu.input_audio()) < 300 * 640:
                    await asyncio.sleep(0.02)
                return emu.input_audio()

    pcm = run(scenario())
    assert [int.from_bytes(pcm[i : i + 2], "little") for i in range(0, len(pcm), 640)] == list(range(300))


# --- security defaults ----------------------------------------------------------------------


def test_plain_ws_to_a_remote_host_is_refused_unless_allowed() -> None:
    with pytest.raises(InsecureTransportError, match="refusing plain ws://"):
        geminilive.connect(endpoint="ws://live.example.com/ws/x", api_key="k")
    geminilive.connect(endpoint="ws://live.example.com/ws/x", api_key="k", allow_insecure=True)
    for local in ("ws://127.0.0.1:1/ws", "ws://localhost:1/ws", "ws://[::1]:1/ws", "ws://127.8.9.10/ws"):
        geminilive.connect(endpoint=local, api_key="k")


def test_credentials_in_a_url_move_into_headers() -> None:
    e = Endpoint.from_url("wss://h/ws/x?key=SECRET1&alt=json")
    assert e.url == "wss://h/ws/x?alt=json" and e.headers == {"x-goog-api-key": "SECRET1"}
    e = Endpoint.from_url("wss://h/ws/x?access_token=auth_tokens/T")
    assert e.url == "wss://h/ws/x" and e.headers == {"Authorization": "Token auth_tokens/T"}
    session = geminilive.connect(endpoint="wss://h/ws/x?key=SECRET2")._session
    assert "SECRET2" not in session.endpoint.url and "SECRET2" not in repr(session)


def test_keys_never_reach_logs_reprs_or_errors(caplog) -> None:
    key = "AIzaSECRET-test-key-123"

    async def scenario():
        async with LiveEmulator(api_key=key, **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, api_key=key) as session:
                text = repr(session)
            with pytest.raises(PolicyViolationError) as wrong:
                async with geminilive.connect(endpoint=emu.url, api_key=key + "x"):
                    pass
            return text, str(wrong.value)

    with caplog.at_level(logging.DEBUG):
        text, error = run(scenario())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "x-goog-api-key" in logged, "the handshake was logged at DEBUG"
    assert key not in logged and key not in text and key not in error


def test_emulator_key_check_accepts_every_documented_place_and_nothing_else() -> None:
    async def scenario():
        async with LiveEmulator(api_key="k1", **FAST) as emu:
            results = []
            for headers, query in [({"x-goog-api-key": "k1"}, ""), ({"Authorization": "Bearer k1"}, ""),
                                   ({}, "?key=k1"), ({"x-goog-api-key": "k2"}, ""), ({}, "")]:  # fmt: skip
                try:
                    async with websockets.connect(emu.url + query, additional_headers=headers) as ws:
                        await ws.send(json.dumps({"setup": {"model": "models/x"}}))
                        results.append("setupComplete" in str(await ws.recv()))
                except websockets.exceptions.ConnectionClosed as closed:
                    results.append(closed.rcvd.code)
            return results

    assert run(scenario()) == [True, True, True, 1008, 1008]


def test_tls_certificates_are_verified_by_default(tmp_path) -> None:
    certificate = loopback_tls(tmp_path)
    server_ssl = certificate.server()

    async def scenario():
        async with LiveEmulator(ssl=server_ssl, **FAST) as emu:
            with pytest.raises(SessionError, match=r"(?i)certificate verify failed"):
                async with geminilive.connect(endpoint=emu.url):
                    pass
            async with geminilive.connect(endpoint=emu.url, ssl=certificate.client()) as session:
                return session.protocol.state.value

    assert run(scenario()) == "open"


def test_bad_audio_from_the_client_is_a_typed_error_before_it_is_sent() -> None:
    async def scenario():
        async with LiveEmulator(**FAST) as emu, geminilive.connect(endpoint=emu.url) as session:
            with pytest.raises(geminilive.errors.AudioFormatError):
                await session.send_audio(b"\x01\x02\x03")
            await session.send_audio(b"\x01\x02")  # the session is still fine
            return len(emu.connections)

    assert run(scenario()) == 1


def test_a_1007_close_is_a_typed_error_and_not_retried() -> None:
    """Odd-byte audio forced past the client's own checks: the emulator closes 1007, and the
    session (auto-resume on) raises it instead of reconnecting to send it again."""

    emulators = []

    async def scenario():
        async with LiveEmulator(**FAST) as emu:
            emulators.append(emu)
            async with geminilive.connect(endpoint=emu.url) as session:
                session.protocol.send(
                    geminilive.messages.ClientMessage(
                        realtime_input=geminilive.messages.RealtimeInput(
                            audio=geminilive.messages.Blob(mime_type="audio/pcm;rate=16000", data=b"\x01")
                        )
                    )
                )
                await session._flush()
                async for _ in session:
                    pass

    with pytest.raises(InvalidArgumentError):
        run(scenario())
    assert len(emulators[0].connections) == 1, "no reconnect to send it again"


def test_a_reconnect_answered_with_nonsense_is_a_failed_attempt_not_the_end() -> None:
    connections = []

    async def handler(ws):
        connections.append(ws)
        await ws.recv()  # setup
        n = len(connections)
        if n == 2:
            await ws.send(b'{"serverContent": {"turnComplete": true}}')  # not setupComplete
            await asyncio.sleep(1)
            return
        await ws.send(b'{"setupComplete": {}}')
        await ws.send(b'{"sessionResumptionUpdate": {"newHandle": "h", "resumable": true}}')
        if n == 1:
            await ws.close(1011, "Internal error encountered.")
            return
        await asyncio.sleep(1)

    async def scenario():
        policy = geminilive.ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.02)
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with geminilive.connect(endpoint=f"ws://127.0.0.1:{port}/ws/x", reconnect=policy) as session:
                seen = []
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ev.Resumed):
                        return seen

    seen = run(scenario())
    assert [e.attempt for e in seen if isinstance(e, ev.Reconnecting)] == [1, 2]
    assert len(connections) == 3
