"""Phone calls over Vonage's Voice API WebSocket, against the emulator, with a caller written
here from Vonage's WebSocket documentation (plain ``websockets``): a ``websocket:connected``
text message first, then 20 ms binary frames of 16-bit linear PCM paced in real time,
``notify`` payloads sent back once the audio before them has "played", ``clear`` obeyed."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from websockets.asyncio.client import connect as ws_connect

import geminilive
from audio_util import run, speak, until
from geminilive import LiveConfig, Resampler
from geminilive.emulator import LiveEmulator
from geminilive.pcm import f32_to_s16le
from geminilive.telephony.server import PhoneServer
from geminilive.telephony.vonage import VonageProtocolError, VonageStream, ncco
from geminilive.telephony.wire import CallerAudio, CallStarted, Digit, MarkPlayed


class VonageCaller:
    """One simulated call: what it heard (PCM), the frame sizes, clears and notifies."""

    def __init__(self, url: str, rate_hz: int = 16000) -> None:
        self.url, self.rate_hz = url, rate_hz
        self.heard = bytearray()
        self.frame_sizes: set[int] = set()
        self.clears: list[float] = []
        self.notified: list[str] = []
        self._played_until = 0.0
        self._pending: list[tuple[float, dict]] = []

    async def __aenter__(self) -> VonageCaller:
        self.ws = await ws_connect(self.url)
        self.listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.listener.cancel()
        await asyncio.gather(self.listener, return_exceptions=True)
        await self.ws.close()

    async def connected(self, **headers: str) -> None:
        content_type = f"audio/l16;rate={self.rate_hz}"
        await self.ws.send(json.dumps({"event": "websocket:connected", "content-type": content_type, **headers}))

    async def speak(self, pcm: bytes) -> None:
        """Paced as the phone network: one 20 ms binary frame every 20 ms."""
        frame = self.rate_hz // 50 * 2
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), frame)):
            await self.ws.send(pcm[i : i + frame])
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))

    async def _listen(self) -> None:
        ticker = asyncio.create_task(self._notify())
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.heard += message
                    self.frame_sizes.add(len(message))
                    self._played_until = max(self._played_until, now) + len(message) / 2 / self.rate_hz
                    continue
                command = json.loads(message)
                if command["action"] == "notify":
                    self._pending.append((self._played_until, command["payload"]))
                elif command["action"] == "clear":
                    self.clears.append(now)
                    self._played_until = now
                    self._pending.clear()  # what they marked never plays
                    await self.ws.send(json.dumps({"event": "websocket:cleared"}))
        finally:
            ticker.cancel()

    async def _notify(self) -> None:
        while True:
            now = time.monotonic()
            while self._pending and self._pending[0][0] <= now:
                _, payload = self._pending.pop(0)
                self.notified.append(payload["name"])
                await self.ws.send(json.dumps({"event": "websocket:notify", "payload": payload}))
            await asyncio.sleep(0.01)


def config() -> LiveConfig:
    return LiveConfig(output_audio_transcription=True, input_audio_transcription=True)


@pytest.fixture(scope="module")
def hello(tmp_path_factory) -> bytes:
    """16 kHz speech with a second of silence after it, as Vonage sends it."""
    speech = speak("Hello, I would like to book a table for two.", tmp_path_factory.mktemp("v") / "h.wav")
    return f32_to_s16le(np.concatenate([speech, np.zeros(16000, np.float32)]))


def test_a_vonage_call_reaches_the_model_sample_for_sample_and_hears_the_reply(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", record_input=True) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, provider="vonage") as phone, VonageCaller(phone.stream_url) as caller:
                await caller.connected(uuid="call-1", language="en")
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 32000, 15, "a second of the reply")
                await until(lambda: caller.notified, 10, "a notify to come back")
                await caller.ws.send(json.dumps({"event": "websocket:dtmf", "digit": "5", "duration": 260}))

                def texts() -> list[str]:
                    received = emu.connections[0].received
                    return [m.realtime_input.text for m in received if m.realtime_input and m.realtime_input.text]

                await until(lambda: texts(), 5, "the digit")
                await caller.ws.close()  # Vonage ends a call by closing the WebSocket
                await until(lambda: phone.finished, 5, "the call to end")
                await until(lambda: not emu.connections[0].open, 5, "the session to close")
                return phone.finished[0], caller, texts(), emu.input_audio()

    stats, caller, texts, consumed = run(scenario())
    assert stats.stream_sid == "call-1" and stats.ended_by == "the caller's stream closed"
    assert consumed == hello, "16 kHz linear PCM reaches the session untouched, every sample"
    assert caller.frame_sizes == {640}, "Vonage plays exactly 640-byte messages"
    reply = np.frombuffer(bytes(caller.heard), "<i2").astype(np.float32) / 32768
    assert np.sqrt(np.mean(reply**2)) > 0.01, "the echo of the speech came back"
    assert stats.marks_played >= 1 and 0 < stats.heard_ms <= stats.model_audio_ms
    assert stats.digits == "5" and any("pressed 5" in t for t in texts)


def test_an_8_khz_vonage_call_is_resampled_both_ways(hello: bytes) -> None:
    at_8k = f32_to_s16le(np.frombuffer(hello, "<i2").astype(np.float32)[::2] / 32768)

    async def scenario():
        async with LiveEmulator(model="echo", record_input=True) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, provider="vonage") as phone, VonageCaller(phone.stream_url, 8000) as caller:
                await caller.connected()
                await caller.speak(at_8k)
                await until(lambda: len(caller.heard) > 16000, 15, "a second of the reply")
                await caller.ws.close()
                await until(lambda: phone.finished, 5, "the call to end")
                return phone.finished[0], caller, len(emu.input_audio())

    stats, caller, consumed = run(scenario())
    assert caller.frame_sizes == {320}
    assert consumed == len(at_8k) * 2 - 2 * round(Resampler(8000, 16000).delay_samples), "every sample, resampled"
    assert abs(stats.caller_audio_ms - len(at_8k) / 16) < 1


def test_talking_over_a_vonage_reply_clears_it(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", speed=8.0) as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, provider="vonage") as phone, VonageCaller(phone.stream_url) as caller:
                await caller.connected()
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 3200, 15, "the reply to start")
                await caller.speak(hello)  # the caller talks over it
                await until(lambda: caller.clears, 10, "clear")
                await caller.ws.close()
                await until(lambda: phone.finished, 5, "the call to end")
                return phone.finished[0], caller

    stats, caller = run(scenario())
    assert stats.clears >= 1 and len(caller.clears) == stats.clears
    assert stats.turns[0].interrupted and stats.turns[0].heard_ms < stats.turns[0].audio_ms


def test_bad_vonage_messages_are_dropped_and_the_call_goes_on(hello: bytes) -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url, config=config())  # noqa: E731
            async with PhoneServer(opener, provider="vonage") as phone, VonageCaller(phone.stream_url) as caller:
                await caller.ws.send(bytes(640))  # audio before websocket:connected
                await caller.ws.send(json.dumps({"event": "websocket:dtmf", "digit": "1"}))  # likewise
                await caller.connected()
                await caller.ws.send(bytes(641))  # half a sample
                await caller.ws.send("{not json")
                await caller.ws.send(json.dumps(["an", "array"]))
                await caller.ws.send(json.dumps({"event": "websocket:dtmf", "digit": "55"}))
                await caller.ws.send(json.dumps({"event": "websocket:notify", "payload": "m1"}))
                await caller.connected()  # a second time
                await caller.ws.send(json.dumps({"event": "websocket:something-new"}))
                await caller.speak(hello)
                await until(lambda: len(caller.heard) > 16000, 15, "the reply")
                await caller.ws.close()
                await until(lambda: phone.finished, 5, "the call to end")
                return phone.finished[0]

    stats = run(scenario())
    assert stats.dropped_messages == 8 and stats.unknown_events == 1
    assert stats.ended_by == "the caller's stream closed" and stats.model_audio_ms > 500


def test_a_vonage_stream_in_a_format_it_cannot_take_is_closed_without_a_session() -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu:
            opener = lambda: geminilive.connect(endpoint=emu.url)  # noqa: E731
            phone = PhoneServer(opener, provider="vonage", start_timeout_s=0.5)
            async with phone, VonageCaller(phone.stream_url) as caller:
                caller.rate_hz = 44100
                await caller.connected()
                async with asyncio.timeout(5):
                    await caller.ws.wait_closed()
                return caller.ws.close_code, phone.finished, len(emu.connections)

    code, finished, sessions = run(scenario())
    assert code == 1008 and finished[0].ended_by == "no start message" and finished[0].dropped_messages == 1
    assert sessions == 0


def test_the_answer_webhook_returns_an_ncco_that_connects_the_websocket() -> None:
    async def scenario():
        phone = PhoneServer(lambda: None, provider="vonage", webhook_port=0, public_url="wss://example.org/media")  # type: ignore[arg-type, return-value]
        async with phone:
            reader, writer = await asyncio.open_connection("127.0.0.1", phone.webhook_port)
            writer.write(b"GET /answer?from=447700900000 HTTP/1.1\r\nHost: x\r\n\r\n")
            response = await reader.read()
            writer.close()
            return response

    head, _, body = run(scenario()).partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"application/json" in head
    assert json.loads(body) == ncco("wss://example.org/media")
    [connect] = json.loads(body)
    assert connect["endpoint"] == [
        {"type": "websocket", "uri": "wss://example.org/media", "content-type": "audio/l16;rate=16000"}
    ]
    with pytest.raises(ValueError, match="8000 or 16000"):
        ncco("wss://x", rate_hz=24000)
    with pytest.raises(ValueError, match="provider"):
        PhoneServer(lambda: None, provider="telnyx")  # type: ignore[arg-type, return-value]


def test_the_vonage_wire_state_machine() -> None:
    stream = VonageStream()
    with pytest.raises(VonageProtocolError, match="before websocket:connected"):
        stream.receive(bytes(640))
    [started] = stream.receive(
        json.dumps({"event": "websocket:connected", "content-type": "audio/l16;rate=8000", "uuid": "u", "x": 1})
    )
    assert started == CallStarted("u", "", {"uuid": "u", "x": "1"}) and stream.rate_hz == 8000
    assert stream.frame_bytes == 320
    assert stream.receive(bytes(320)) == [CallerAudio(bytes(320))]
    assert stream.receive('{"event": "websocket:dtmf", "digit": "#", "duration": 260}') == [Digit("#")]
    name, message = stream.mark()
    assert json.loads(message) == {"action": "notify", "payload": {"name": name}}
    assert stream.receive(json.dumps({"event": "websocket:notify", "payload": {"name": name}})) == [MarkPlayed(name)]
    assert json.loads(stream.clear()) == {"action": "clear"}
    assert stream.receive('{"event": "websocket:cleared"}') == []
    assert stream.media(bytes(320)) == bytes(320)
    with pytest.raises(VonageProtocolError, match="320-byte"):
        stream.media(bytes(640))
    assert stream.dropped == 1
