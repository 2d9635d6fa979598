"""Phone calls through the Twilio bridge, against the emulator, with a caller written here
from Twilio's Media Streams documentation (plain ``websockets``): paced 20 ms μ-law frames,
marks echoed once the audio before them has "played", ``clear`` obeyed."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import geminilive
from audio_util import run, speak
from geminilive import LiveConfig, Resampler
from geminilive.emulator import Faults, LiveEmulator
from geminilive.emulator.models import ScriptModel, ScriptTurn
from geminilive.pcm import f32_to_s16le
from geminilive.telephony import decode, encode
from geminilive.telephony.server import PhoneServer, twiml
from geminilive.telephony.twilio import CallerAudio, MarkPlayed, TwilioProtocolError, TwilioStream
from twilio_caller import FRAME, Caller


def phone_line(speech: np.ndarray) -> bytes:
    """16 kHz speech as a caller's μ-law at 8 kHz, with a second of silence after it."""
    at_8k = speech[::2]  # espeak's speech has nothing above 4 kHz worth keeping here
    return encode(f32_to_s16le(np.concatenate([at_8k, np.zeros(8000, np.float32)])))


def config() -> LiveConfig:
    return LiveConfig(output_audio_transcription=True, input_audio_transcription=True)


async def until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def hello(tmp_path_factory) -> bytes:
    return phone_line(speak("Hello, I would like to book a table for two.", tmp_path_factory.mktemp("s") / "h.wav"))


def test_a_call_speaks_to_the_model_hears_the_reply_and_hangs_up(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", record_input=True) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, webhook_port=0) as phone, Caller(phone.stream_url) as caller:
                await caller.start(language="en")
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 8000, 15, "the reply")  # a second of it
                await until(lambda: caller.marks_echoed, 10, "a mark to come back")
                await until(lambda: next(iter(phone.active)).stats.turns, 10, "the reply's turn to end")
                _, metrics = await http_get(phone.webhook_port, "/metrics")
                await caller.send(
                    {"event": "dtmf", "streamSid": "MZtest", "dtmf": {"track": "inbound_track", "digit": "5"}}
                )
                await until(
                    lambda: any(m.realtime_input and m.realtime_input.text for m in emu.connections[0].received),
                    5,
                    "the digit",
                )
                await caller.send({"event": "stop", "streamSid": "MZtest", "stop": {"callSid": "CAtest"}})
                await until(lambda: phone.finished, 5, "the call to end")
                texts = [
                    m.realtime_input.text
                    for m in emu.connections[0].received
                    if m.realtime_input and m.realtime_input.text
                ]
                consumed = len(emu.input_audio())
                assert caller.binary_messages == 0, "Twilio takes text messages only"
                return phone.finished[0], bytes(caller.heard), texts, emu.connections[0], consumed, metrics

    stats, heard, texts, connection, consumed, metrics = run(scenario())
    assert stats.ended_by == "the caller hung up" and stats.stream_sid == "MZtest"
    assert abs(stats.caller_audio_ms - len(hello) / 8) < 1
    # Every 8 kHz byte reached the session as two 16 kHz samples, but the resampler's delay.
    assert consumed == len(hello) * 4 - 2 * round(Resampler(8000, 16000).delay_samples)
    reply = np.frombuffer(decode(heard), "<i2").astype(np.float32) / 32768
    assert len(reply) / 8000 > 1.0 and np.sqrt(np.mean(reply**2)) > 0.01, "the echo of the speech came back"
    assert stats.marks_sent >= 1 and stats.marks_played >= 1 and 0 < stats.heard_ms <= stats.model_audio_ms
    assert stats.digits == "5" and any("pressed 5" in t for t in texts)
    assert not connection.open, "the hang-up closed the Live session"
    # The emulator ends the turn 500 ms into the silence; the bridge's detector hears the end first.
    assert 300 < stats.turns[0].reply_latency_ms < 5000
    assert stats.frames_late == 0, "the reply came faster than it plays"
    assert b"geminilive_phone_reply_latency_seconds_count 1.0" in metrics
    assert b"geminilive_phone_frames_late_total 0.0" in metrics


def test_twenty_calls_at_once_each_hear_their_reply_and_end_cleanly(hello: bytes) -> None:
    calls = 20

    async def one_call(phone: PhoneServer, n: int) -> tuple[int, int]:
        async with Caller(phone.stream_url) as caller:
            await caller.start(caller=str(n))
            await caller.speak(hello)
            await until(lambda: len(caller.heard) > 8000 and caller.marks_echoed, 20, f"call {n}'s reply")
            digit = str(n % 10)
            await caller.send({"event": "dtmf", "streamSid": "MZtest", "dtmf": {"digit": digit}})
            await asyncio.sleep(0.2)
            await caller.send({"event": "stop", "streamSid": "MZtest", "stop": {}})
            return len(caller.heard), len(caller.marks_echoed)

    async def scenario():
        async with LiveEmulator(model="echo", speed=4.0) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, max_calls=calls) as phone:
                heard = await asyncio.gather(*(one_call(phone, n) for n in range(calls)))
                await until(lambda: len(phone.finished) == calls, 10, "every call to end")
                await until(lambda: not any(c.open for c in emu.connections), 10, "every session to close")
                return heard, phone

    heard, phone = run(scenario())
    assert all(audio > 8000 and marks > 0 for audio, marks in heard)
    assert sorted(s.digits for s in phone.finished) == sorted(str(n % 10) for n in range(calls))
    assert {s.ended_by for s in phone.finished} == {"the caller hung up"} and not phone.active
    assert all(s.turns and s.turns[0].reply_latency_ms is not None for s in phone.finished)


def test_talking_over_the_reply_clears_what_twilio_holds(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", speed=8.0) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener) as phone, Caller(phone.stream_url) as caller:
                await caller.start()
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 1600, 15, "the reply to start")
                await caller.speak(hello)  # the caller talks over it
                await until(lambda: caller.clears, 10, "clear")
                await caller.send({"event": "stop", "streamSid": "MZtest", "stop": {}})
                await until(lambda: phone.finished, 5, "the call to end")
                return phone.finished[0], caller

    stats, caller = run(scenario())
    assert stats.clears >= 1 and len(caller.clears) == stats.clears
    assert stats.marks_played >= 1 and stats.marks_cleared >= 1, "some of the reply played, the rest was dropped"


def test_what_the_caller_heard_before_barging_in_is_told_apart_from_what_was_cleared(hello: bytes) -> None:
    words = " ".join(f"word{n}" for n in range(40))
    script = ScriptModel([ScriptTurn(text=words, tone_s=6.0), ScriptTurn(text="sorry, go on", tone_s=0.5)])

    async def scenario():
        async with LiveEmulator(model=script, speed=4.0) as emu:  # Twilio holds what is ahead
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, tell_model_cut_off=True) as phone, Caller(phone.stream_url) as caller:
                await caller.start()
                await caller.speak(hello)
                await until(lambda: len(caller.marks_echoed) > 20, 15, "a second of the reply to play")
                await caller.speak(hello)  # the caller talks over it
                await until(lambda: caller.clears, 10, "clear")
                await asyncio.sleep(1.5)  # the reply to the second turn
                await caller.send({"event": "stop", "streamSid": "MZtest", "stop": {}})
                await until(lambda: phone.finished, 5, "the call to end")
                notes = [m.client_content for c in emu.connections for m in c.received if m.client_content]
                return phone.finished[0], notes

    stats, notes = run(scenario())
    cut = stats.turns[0]
    assert cut.interrupted and words.startswith(cut.transcript), "as far as the model got"
    assert cut.heard_transcript and cut.unheard_transcript, cut
    assert cut.heard_transcript + cut.unheard_transcript == cut.transcript
    assert 500 < cut.heard_ms < cut.audio_ms - 1000, ("what the clear dropped is not counted as heard", cut)
    assert [t.interrupted for t in stats.turns[1:]] == [False] * (len(stats.turns) - 1)
    [note] = notes
    assert note.turn_complete is False and cut.heard_transcript.strip() in note.turns[0].parts[0].text


def test_a_call_whose_session_fails_is_ended_with_the_reason_and_its_stats_kept(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", api_key="the-right-key") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, api_key="a-wrong-key")  # noqa: E731
            async with PhoneServer(opener) as phone, Caller(phone.stream_url) as caller:
                await caller.start()
                async with asyncio.timeout(10):
                    await caller.ws.wait_closed()
                await until(lambda: phone.finished, 5, "the call to end")
                return caller.ws.close_code, caller.ws.close_reason, phone

    code, reason, phone = run(scenario())
    assert code == 1011 and reason.startswith("the session failed")
    assert phone.finished[0].ended_by.startswith("the session failed") and phone.finished[0].stream_sid == "MZtest"
    assert "a-wrong-key" not in reason and not phone.active


def test_a_send_that_fails_mid_call_ends_it_with_the_reason_and_nothing_escapes_to_the_loop() -> None:
    # The caller's audio goes to the session from the socket's callback (no task switch per
    # frame): a send that raises there (here a message of a second of audio, over a frame
    # limit the session was opened with) ends the call as a failed session does (1011, the
    # reason, the stats), not in the event loop's handler as a broken protocol callback.
    async def scenario():
        loop_errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config(), max_frame_bytes=16_000)  # noqa: E731
            async with PhoneServer(opener) as phone, Caller(phone.stream_url) as caller:
                await caller.start()
                await caller.speak(bytes(FRAME) * 5)  # 20 ms frames go
                second = base64.b64encode(bytes(FRAME) * 50).decode()
                await caller.send({"event": "media", "streamSid": "MZtest", "media": {"payload": second}})
                async with asyncio.timeout(10):
                    await caller.ws.wait_closed()
                await until(lambda: phone.finished, 5, "the call to end")
                return caller.ws.close_code, caller.ws.close_reason, phone.finished[0], loop_errors

    code, reason, stats, loop_errors = run(scenario())
    assert code == 1011 and reason.startswith("the session failed") and "exceeds 16000 bytes" in reason, reason
    assert stats.ended_by.startswith(reason) and stats.caller_audio_ms == 5 * 20 + 1000
    assert loop_errors == []


def test_a_reply_that_comes_later_than_it_plays_is_counted_in_late_frames(hello: bytes) -> None:
    async def scenario():
        faults = Faults(audio_jitter_s=0.15)  # each chunk up to 150 ms late, at real-time pace
        async with LiveEmulator(model="echo", speed=1.0, faults=faults) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener) as phone, Caller(phone.stream_url) as caller:
                await caller.start()
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 16000, 15, "two seconds of the reply")
                await caller.send({"event": "stop", "streamSid": "MZtest", "stop": {}})
                await until(lambda: phone.finished, 5, "the call to end")
                return phone.finished[0]

    stats = run(scenario())
    assert stats.frames_late > 0


def test_bad_messages_are_dropped_and_the_call_goes_on(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener) as phone, Caller(phone.stream_url) as caller:
                payload = base64.b64encode(bytes(FRAME)).decode()
                await caller.send({"event": "media", "media": {"payload": payload}})  # before start
                await caller.ws.send("{not json")
                await caller.start()
                await caller.send({"event": "media", "media": {"payload": "!!not base64!!"}})
                await caller.send({"event": "media", "media": {"payload": ""}})
                await caller.send({"event": "media", "media": {"payload": base64.b64encode(bytes(100_000)).decode()}})
                await caller.send({"event": "media"})
                await caller.send({"event": "dtmf", "dtmf": {"digit": "55"}})
                await caller.send({"event": "new-kind-of-event", "x": 1})
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 4000, 15, "the reply")
                await caller.send({"event": "stop", "stop": {}})
                await until(lambda: phone.finished, 5, "the call to end")
                return phone.finished[0]

    stats = run(scenario())
    assert stats.dropped_messages == 7 and stats.unknown_events == 1
    assert stats.ended_by == "the caller hung up"


def test_a_stream_that_never_starts_is_closed_and_opens_no_session() -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url)  # noqa: E731
            async with PhoneServer(opener, start_timeout_s=0.5) as phone, Caller(phone.stream_url) as caller:
                await caller.send({"event": "connected"})
                async with asyncio.timeout(5):
                    await caller.ws.wait_closed()
                return caller.ws.close_code, phone.finished, len(emu.connections)

    code, finished, sessions = run(scenario())
    assert code == 1008
    assert finished[0].ended_by == "no start message" and sessions == 0


def test_a_caller_that_vanishes_ends_the_session_and_calls_over_the_limit_are_refused(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url)  # noqa: E731
            async with PhoneServer(opener, max_calls=2) as phone:
                async with Caller(phone.stream_url) as first, Caller(phone.stream_url) as second:
                    await first.start()
                    await second.start()
                    await until(lambda: len(emu.connections) == 2, 5, "two sessions")
                    async with Caller(phone.stream_url) as third, asyncio.timeout(5):
                        await third.ws.wait_closed()
                        refused = third.ws.close_code
                    first.ws.transport.abort()  # the caller's side vanishes, no close frame
                    await until(lambda: len(phone.finished) == 1, 10, "the vanished call to end")
                    await until(lambda: not emu.connections[0].open, 5, "its session to close")
                return refused, phone

    refused, phone = run(scenario())
    assert refused == 1013
    assert phone.refused == 1 and phone.finished[0].ended_by == "the caller's stream closed"
    assert len(phone.active) == 0, "nothing left behind"


def test_the_webhook_answers_with_twiml_that_connects_the_stream() -> None:
    async def scenario():
        async with PhoneServer(lambda: None, webhook_port=0, public_url="wss://example.org/media?a=1&b=2") as phone:  # type: ignore[arg-type,return-value]
            reader, writer = await asyncio.open_connection("127.0.0.1", phone.webhook_port)
            body = b"CallSid=CA1&From=%2B15550001111"
            writer.write(b"POST /voice HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            answer = await reader.read()
            writer.close()
            return answer

    answer = run(scenario())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/xml" in head
    assert body.decode() == twiml("wss://example.org/media?a=1&b=2")
    assert '<Stream url="wss://example.org/media?a=1&amp;b=2" />' in body.decode()


def test_the_twilio_wire_state_machine() -> None:
    stream = TwilioStream()
    with pytest.raises(TwilioProtocolError):
        stream.media(b"x")  # nothing to send to before start
    assert stream.receive(json.dumps({"event": "connected"})) == []
    with pytest.raises(TwilioProtocolError, match="audio/x-mulaw"):
        stream.receive(
            json.dumps(
                {
                    "event": "start",
                    "streamSid": "MZ",
                    "start": {"mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000}},
                }
            )
        )
    [started] = stream.receive(json.dumps({"event": "start", "streamSid": "MZ", "start": {"callSid": "CA"}}))
    assert started.stream_sid == "MZ"
    [audio] = stream.receive(
        json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\x7f" * 160).decode()}})
    )
    assert audio == CallerAudio(b"\x7f" * 160)
    assert stream.receive(json.dumps({"event": "media", "media": {"track": "outbound", "payload": "AA=="}})) == []
    assert json.loads(stream.clear()) == {"event": "clear", "streamSid": "MZ"}
    name, mark = stream.mark()
    assert json.loads(mark) == {"event": "mark", "streamSid": "MZ", "mark": {"name": name}}
    assert json.loads(stream.media(b"\xff\x00"))["media"]["payload"] == "/wA="


async def http_get(port: int, path: str) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_draining_refuses_new_calls_lets_running_ones_end_then_ends_the_rest() -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url)  # noqa: E731
            async with PhoneServer(opener, webhook_port=0) as phone, Caller(phone.stream_url) as caller:
                await caller.start()
                await until(lambda: len(emu.connections) == 1, 5, "the session")
                healthy = await http_get(phone.webhook_port, "/healthz")
                metrics = await http_get(phone.webhook_port, "/metrics")
                draining = asyncio.create_task(phone.drain(deadline_s=0.5))
                await asyncio.sleep(0.1)
                unhealthy = await http_get(phone.webhook_port, "/healthz")
                async with Caller(phone.stream_url) as late, asyncio.timeout(5):
                    await late.ws.wait_closed()
                    refused = (late.ws.close_code, late.ws.close_reason)
                async with asyncio.timeout(5):
                    await caller.ws.wait_closed()
                await draining
                await until(lambda: not emu.connections[0].open, 5, "the session to close")
                return healthy, metrics, unhealthy, refused, caller.ws.close_code, phone

    healthy, metrics, unhealthy, refused, ended, phone = run(scenario())
    assert healthy[0].startswith(b"HTTP/1.1 200") and unhealthy[0].startswith(b"HTTP/1.1 503")
    assert b"geminilive_phone_active_calls 1.0" in metrics[1] and b"text/plain" in metrics[0]
    assert refused[0] == 1013 and "shutting down" in refused[1]
    assert ended == 1001, "the call still running at the deadline was ended politely"
    assert phone.refused == 1 and not phone.active


@given(st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=640), st.sampled_from(["inbound", "outbound"]))
def test_twilios_messages_round_trip_through_the_fast_paths(sid: str, codes: bytes, track: str) -> None:
    """Media and marks are built from templates and read in one pass: what they carry, for
    any stream id (quotes, unicode) and any audio, is what the general JSON path reads."""
    stream = TwilioStream()
    stream.receive(json.dumps({"event": "start", "streamSid": sid, "start": {"callSid": "CA"}}))
    message = stream.media(codes)
    assert isinstance(message, str)  # Twilio's messages are text
    sent = json.loads(message)
    assert sent == {"event": "media", "streamSid": sid, "media": {"payload": base64.b64encode(codes).decode()}}
    name, mark = stream.mark()
    assert json.loads(mark) == {"event": "mark", "streamSid": sid, "mark": {"name": name}}
    echoed = {"event": "media", "streamSid": sid, "media": {"track": track, "payload": sent["media"]["payload"]}}
    assert stream.receive(json.dumps(echoed)) == ([CallerAudio(codes)] if track == "inbound" else [])
    assert stream.receive(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}})) == [MarkPlayed(name)]
