"""The web page's relay over real sockets, with a page stand-in written from the relay's wire
(plain ``websockets``), against the emulator: audio both ways, barge-in, a tab that drops and
comes back, and bad input (other sites, garbage, oversized messages, a second tab, no hello,
no audio, odd byte counts). The real browser is in test_web.py."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect

import geminilive
from audio_util import run, speak, until
from geminilive import LiveConfig, Resampler
from geminilive.emulator import Faults, LiveEmulator
from geminilive.emulator.models import ScriptModel, ScriptTurn
from geminilive.pcm import f32_to_s16le, s16le_to_f32
from geminilive.web import WebServer
from geminilive.web.relay import BrowserSource
from geminilive.web.wire import CLOSE_BUSY, CLOSE_IDLE

RATE = 48000
FRAME = RATE // 50


def config() -> LiveConfig:
    return LiveConfig(input_audio_transcription=True, output_audio_transcription=True)


class Page:
    """What the page does on the relay's wire: hello, 20 ms of 16-bit PCM at a time, and it
    keeps what comes back (audio, and each JSON message in order)."""

    def __init__(self, web: WebServer, client: str = "tab-one-0001", *, rate: int = RATE, origin: str | None = None):
        self.url = f"ws://127.0.0.1:{web.port}/relay"
        self.origin = origin or f"http://127.0.0.1:{web.port}"
        self.client, self.rate = client, rate
        self.audio = bytearray()
        self.messages: list[dict] = []
        self.ws: websockets.ClientConnection | None = None
        self._reader: asyncio.Task | None = None

    async def open(self, hello: bool = True) -> Page:
        self.ws = await ws_connect(self.url, origin=self.origin, max_size=None)  # type: ignore[arg-type]
        self._reader = asyncio.create_task(self._read())
        if hello:
            await self.ws.send(json.dumps({"type": "hello", "client": self.client, "sampleRate": self.rate}))
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                message = await self.ws.recv()
                if isinstance(message, bytes):
                    self.audio += message
                else:
                    self.messages.append({**json.loads(message), "_at_audio": len(self.audio)})

    def of(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    async def speak(self, samples: np.ndarray, *, realtime: bool = True) -> None:
        assert self.ws is not None
        pcm = f32_to_s16le(samples)
        for at in range(0, len(pcm), FRAME * 2 * self.rate // RATE):
            await self.ws.send(pcm[at : at + FRAME * 2 * self.rate // RATE])
            await asyncio.sleep(0.02 if realtime else 0)

    async def closed(self) -> tuple[int | None, str | None]:
        assert self.ws is not None and self._reader is not None
        await asyncio.wait_for(self._reader, 10)
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """A sentence at the page's rate, with the second of silence that ends a turn."""
    spoken = speak("Hello, could you tell me the time?", tmp_path_factory.mktemp("s") / "s.wav", rate=RATE)
    return np.concatenate([spoken, np.zeros(RATE, np.float32)])


def opener(emu: LiveEmulator):
    return lambda: geminilive.connect(endpoint=emu.url, config=config())


def http_get(port: int, path: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def handshake_status(port: int, hosts: list[str], origin: str) -> int:
    """The status of a WebSocket handshake to the relay sent with these Host headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = ["GET /relay HTTP/1.1", *(f"Host: {h}" for h in hosts), "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             f"Origin: {origin}"]  # fmt: skip
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status = await reader.readline()
    writer.close()
    return int(status.split()[1])


def test_the_page_is_served_with_its_modules_and_a_strict_policy() -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu)) as web:
            got = await asyncio.to_thread(lambda: {p: http_get(web.port, p) for p in (
                "/", "/static/app.js", "/static/playout-worklet.js", "/static/style.css", "/healthz",
                "/static/../server.py", "/static/nothing.js", "/relay")})  # fmt: skip
            return got

    got = run(scenario())
    status, headers, body = got["/"]
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="/static/app.js"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert got["/static/app.js"][0] == 200 and got["/static/app.js"][1]["Content-Type"] == "text/javascript"
    assert b"registerProcessor" in got["/static/playout-worklet.js"][2]
    assert got["/static/style.css"][1]["Content-Type"] == "text/css"
    assert got["/healthz"][:1] == (200,)
    assert got["/static/../server.py"][0] == 404 and got["/static/nothing.js"][0] == 404
    assert got["/relay"][0] == 403  # a plain GET has no Origin of this server's: not the page


def test_the_relay_talks_only_to_its_own_page() -> None:
    """Another site open in the same browser must not reach the model with this API key."""

    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu)) as web:
            statuses = []
            for origin in ("http://evil.example", f"http://localhost:{web.port}", None):
                with pytest.raises(websockets.InvalidStatus) as refused:
                    if origin is None:
                        await ws_connect(f"ws://127.0.0.1:{web.port}/relay")
                    else:
                        await ws_connect(f"ws://127.0.0.1:{web.port}/relay", origin=origin)  # type: ignore[arg-type]
                statuses.append(refused.value.response.status_code)
            # DNS rebinding: evil.example resolves here now, and its page's Origin matches its
            # Host; and a request that names two hosts.
            rebound = f"evil.example:{web.port}"
            for host in ([rebound], [f"127.0.0.1:{web.port}", rebound]):
                statuses.append(await handshake_status(web.port, host, f"http://{host[-1]}"))
            return statuses, web.refused, len(emu.connections)

    statuses, refused, sessions = run(scenario())
    assert statuses == [403] * 5 and refused == 5
    assert sessions == 0  # no Live session was opened for any of them


def test_a_tab_is_heard_sample_for_sample_and_hears_the_reply_at_its_own_rate(speech: np.ndarray) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", record_input=True) as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            await page.speak(speech)
            await until(lambda: page.of("turn"), 15, "the reply's turn")
            expected = len(Resampler(RATE, 16000).process(speech))
            await until(lambda: len(emu.input_audio()) // 2 >= expected - 320, 5, "the audio to arrive")
            heard = emu.input_audio()
            await page.close()
            await until(lambda: not web.tabs, 5, "the stopped tab's conversation to end")
            return page, heard, web.ended

    page, heard, ended = run(scenario())
    ready = page.of("ready")[0]
    assert ready["backend"] == "emulator" and ready["outputRate"] == RATE and ready["inputRate"] == 16000
    assert ready["reattached"] is False
    assert page.of("state")[0]["state"] == "connected"
    # What the model heard is the page's audio through geminilive's resampler, all of it.
    r = Resampler(RATE, 16000)
    expected = r.process(speech)
    got = s16le_to_f32(heard)
    n = min(len(got), len(expected))
    assert n >= len(expected) - 320  # all of it but what the session keeps for a whole frame
    assert np.max(np.abs(got[:n] - expected[:n])) <= 2 / 32768
    # The echo came back at the page's rate: as long as what was said, and the same speech.
    reply = s16le_to_f32(bytes(page.audio))
    voiced = np.flatnonzero(np.abs(speech) > 0.01)
    assert abs(len(reply) - (voiced[-1] - voiced[0])) < 0.35 * RATE
    spectrum = np.abs(np.fft.rfft(reply[: 2 * RATE], 4 * RATE))
    assert np.argmax(spectrum) / 4 < 4000  # speech, not a tone or noise at the wrong rate
    turn = page.of("turn")[0]["metrics"]
    assert turn["speech_end_to_first_audio_ms"] > 0 and not turn["interrupted"]
    assert ended == [("tab-one-0001", "stopped on the page")]  # Stop ends it at once, no grace


def test_a_barge_in_clears_the_page_at_once(speech: np.ndarray) -> None:
    long_reply = ScriptModel([ScriptTurn(text="a very long answer", tone_s=6.0, input_transcript="hello")])

    async def scenario():
        async with LiveEmulator(model=long_reply) as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            await page.speak(speech)
            await until(lambda: len(page.audio) > RATE * 2, 15, "a second of the reply")
            await page.speak(speech[: len(speech) - RATE])  # talking over it
            await until(lambda: page.of("clear"), 10, "the clear")
            at_clear = len(page.audio)
            await asyncio.sleep(0.5)
            after = len(page.audio) - at_clear
            await until(lambda: any(t["metrics"]["interrupted"] for t in page.of("turn")), 10, "the interrupted turn")
            await page.close()
            return page, after

    page, after_clear = run(scenario())
    # The reply had seconds left; after the clear no more than the fade's own frame came.
    assert after_clear <= 2 * FRAME * 2
    assert len(page.audio) < 5 * RATE * 2
    said = {who: "".join(m["text"] for m in page.of("transcript") if m["who"] == who) for who in ("user", "model")}
    assert said["user"] == "hello" and "a very long answer".startswith(said["model"]) and said["model"]
    turn = next(t["metrics"] for t in page.of("turn") if t["metrics"]["interrupted"])
    assert turn["audio_received_s"] > 0


def test_a_dropped_tab_gets_its_conversation_back_in_the_same_live_session(speech: np.ndarray) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", record_input=True) as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            await page.speak(speech[: RATE // 2])
            assert page.ws is not None
            page.ws.transport.abort()  # the network drops the tab: no close frame
            await page.closed()
            await asyncio.sleep(0.2)
            tabs_while_gone = len(web.tabs)
            again = await Page(web).open()
            await until(lambda: again.of("ready"), 10, "ready again")
            await again.speak(speech[RATE // 2 :])
            await until(lambda: again.of("turn"), 15, "a reply after the drop")
            await again.close()
            return again, tabs_while_gone, len(emu.connections), emu.input_audio()

    again, tabs_while_gone, connections, heard = run(scenario())
    assert tabs_while_gone == 1  # its conversation waited for it
    assert again.of("ready")[0]["reattached"] is True
    assert connections == 1  # one Live session throughout
    # All the speech was heard, the half before the drop and the half after.
    assert len(heard) // 2 >= (len(speech) // 3) - 2 * 320


def test_a_tab_gone_longer_than_the_grace_ends_its_live_session() -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu), reattach_grace_s=0.4) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            assert page.ws is not None
            page.ws.transport.abort()
            await until(lambda: not web.tabs, 5, "the conversation to end")
            await until(lambda: not any(c.open for c in emu.connections), 5, "the Live session to close")
            return web.ended

    ended = run(scenario())
    assert ended == [("tab-one-0001", "the tab was gone for 0.4 s")]


def test_a_second_tab_is_told_why_and_the_first_goes_on(speech: np.ndarray) -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu, WebServer(opener(emu)) as web:
            first = await Page(web).open()
            await until(lambda: first.of("ready"), 10, "ready")
            second = await Page(web, client="tab-two-0002").open()
            code, reason = await second.closed()
            await first.speak(speech)
            await until(lambda: first.of("turn"), 15, "the first tab's reply")
            await first.close()
            return second, code, reason, web.refused, len(emu.connections)

    second, code, reason, refused, sessions = run(scenario())
    assert code == CLOSE_BUSY and "another tab" in reason
    assert second.of("notice")[0]["level"] == "error" and "another tab" in second.of("notice")[0]["message"]
    assert refused == 1 and sessions == 1


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (b"\x01\x02" * 100, "must be a hello"),  # audio before the hello
        ('{"type": "hello", "client": "tab-one-0001", "sampleRate": 12}', "sampleRate"),
        ('{"type": "hello", "client": "../../etc", "sampleRate": 48000}', "client"),
        ('{"type": "text", "text": "hi"}', "must be a hello"),
        ("{not json", "must be a hello"),
    ],
)
def test_a_page_that_does_not_say_hello_first_is_closed_with_the_reason(first, why: str) -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open(hello=False)
            assert page.ws is not None
            await page.ws.send(first)
            code, reason = await page.closed()
            return code, reason, len(emu.connections), web.tabs

    code, reason, sessions, tabs = run(scenario())
    assert code == 1008 and why in reason
    assert sessions == 0 and not tabs


def test_a_page_that_never_says_hello_is_closed() -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu), hello_timeout_s=0.3) as web:
            page = await Page(web).open(hello=False)
            code, reason = await page.closed()
            await until(lambda: web.connections == 0, 5, "the connection to go")
            return code, reason

    assert run(scenario()) == (1008, "no hello within 0.3 s")


def test_garbage_is_ignored_with_a_notice_and_a_flood_of_it_closes_the_connection(speech: np.ndarray) -> None:
    async def scenario():
        async with LiveEmulator(model="echo", record_input=True) as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            assert page.ws is not None
            for junk in ("{not json", '{"type": "text"}', '{"type": "dance"}', '{"type": "text", "text": ""}', "[]"):
                await page.ws.send(junk)
            await page.speak(speech)  # the conversation goes on
            await until(lambda: page.of("turn"), 15, "the reply")
            warnings = [m["message"] for m in page.of("notice")]
            for _ in range(60):
                await page.ws.send("garbage")
            code, reason = await page.closed()
            return warnings, code, reason, web.malformed

    warnings, code, reason, malformed = run(scenario())
    assert len(warnings) == 5 and all(w.startswith("ignored a malformed message") for w in warnings)
    assert code == 1008 and reason == "50 malformed messages" and malformed == 50


def test_an_oversized_message_closes_the_connection_and_the_tab_can_come_back() -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            assert page.ws is not None
            await page.ws.send(b"\x00" * 1_000_000)
            code, _ = await page.closed()
            again = await Page(web).open()
            await until(lambda: again.of("ready"), 10, "ready again")
            await again.close()
            return code, again.of("ready")[0]["reattached"]

    assert run(scenario()) == (1009, True)


def test_a_typed_message_reaches_the_model() -> None:
    async def scenario():
        async with LiveEmulator(model="echo") as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            assert page.ws is not None
            await page.ws.send(json.dumps({"type": "text", "text": "What time is it?"}))
            await until(lambda: page.of("turn"), 15, "the reply")
            texts = [
                part.text
                for connection in emu.connections
                for message in connection.received
                if message.client_content
                for turn in message.client_content.turns or []
                for part in turn.parts or []
            ]
            await page.close()
            return texts, page

    texts, page = run(scenario())
    assert texts == ["What time is it?"]
    assert len(page.audio) > 0  # the echo model says a typed turn as a tone


def test_a_page_that_sends_no_audio_is_warned_then_its_session_closed() -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu), no_audio_warning_s=0.3, idle_timeout_s=1.2) as web:
            page = await Page(web).open()
            code, reason = await page.closed()
            await until(lambda: not any(c.open for c in emu.connections), 5, "the Live session to close")
            return page, code, reason, web.tabs

    page, code, reason, tabs = run(scenario())
    notices = page.of("notice")
    assert notices[0]["level"] == "warning" and "no microphone audio for 0.3 s" in notices[0]["message"]
    assert code == CLOSE_IDLE and "no microphone audio for 1.2 s" in reason
    assert notices[-1]["level"] == "error" and not tabs


def test_a_live_session_that_moves_is_shown_and_the_conversation_goes_on(speech: np.ndarray) -> None:
    async def scenario():
        faults = [Faults(go_away_after_s=0.5, go_away_time_left_s=0.3), None]
        async with LiveEmulator(model="echo", faults=faults) as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            await until(lambda: any(s["state"] == "resumed" for s in page.of("state")), 10, "the resumption")
            await page.speak(speech)
            await until(lambda: page.of("turn"), 15, "a reply on the new connection")
            await page.close()
            return page

    states = [(s["state"], s["resumptions"]) for s in run(scenario()).of("state")]
    assert states[0] == ("connected", 0)
    assert "moving" in [state for state, _ in states] and states[-1] == ("resumed", 1)


def test_a_session_that_cannot_open_is_an_error_on_the_page() -> None:
    async def scenario():
        emu = await LiveEmulator().start()
        url = emu.url
        await emu.stop()  # nothing listens there any more
        fail_fast = geminilive.ReconnectPolicy(max_attempts=0)
        open_session = lambda: geminilive.connect(endpoint=url, config=config(), reconnect=fail_fast)  # noqa: E731
        async with WebServer(open_session) as web:
            page = await Page(web).open()
            code, reason = await page.closed()
            return page, code, reason, web.tabs

    page, code, reason, tabs = run(scenario())
    assert code == 1011 and reason.startswith("could not open the Live session")
    assert page.of("notice")[0]["level"] == "error" and not tabs


def test_nothing_is_left_behind_after_many_tabs_come_and_go() -> None:
    async def scenario():
        async with LiveEmulator() as emu, WebServer(opener(emu), reattach_grace_s=0.3) as web:
            tasks_before = len(asyncio.all_tasks())
            for i in range(12):
                page = await Page(web, client=f"tab-{i:04d}-xyz").open()
                await until(lambda p=page: p.of("ready"), 10, "ready")
                await page.speak(np.zeros(RATE // 10, np.float32), realtime=False)
                if i % 3 == 0:
                    await page.close()  # Stop
                elif i % 3 == 1:
                    assert page.ws is not None
                    page.ws.transport.abort()  # dropped
                    await page.closed()
                    await until(lambda: not web.tabs, 5, "the grace to run out")
                else:
                    await page.ws.close(1001)  # type: ignore[union-attr]  # the tab was closed
                    await until(lambda: not web.tabs, 5, "the grace to run out")
            await until(lambda: not web.tabs and web.connections == 0, 5, "every tab to go")
            await until(lambda: not any(c.open for c in emu.connections), 5, "every Live session to close")
            await asyncio.sleep(0.1)
            return len(web.ended), len(asyncio.all_tasks()) - tasks_before

    ended, extra_tasks = run(scenario())
    assert ended == 12 and extra_tasks <= 0


@given(st.lists(st.integers(0, 700), min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_how_the_page_chunks_its_audio_never_changes_what_is_heard(cuts: list[int], seed: int) -> None:
    """Messages may split a sample (odd byte counts): the byte stream is what counts."""
    pcm = np.random.default_rng(seed).integers(-32768, 32767, sum(cuts) // 2 + 1, dtype=np.int16).tobytes()

    async def feed() -> np.ndarray:
        source = BrowserSource(RATE)
        at = 0
        for n in cuts:
            source.feed(pcm[at : at + n])
            at += n
        source.feed(pcm[at:])
        source.end()
        frames = [frame.samples async for frame in source]
        return np.concatenate(frames) if frames else np.zeros(0, np.float32)

    heard = asyncio.run(feed())
    assert np.array_equal(heard, s16le_to_f32(pcm[: len(pcm) & ~1]))


def test_a_page_left_open_through_many_session_moves_keeps_talking(speech: np.ndarray) -> None:
    """An hour in a few seconds: connections that end every 2.5 s (goAway first, as the
    service does about every 10 minutes) and sessions capped at 5.5 s (the service's 15-minute
    audio cap: then the session cannot be resumed, and a fresh one takes over). The tab's
    conversation goes on through all of it, and nothing piles up."""
    voiced = np.flatnonzero(np.abs(speech) > 0.01)
    short = np.concatenate([speech[voiced[0] : voiced[0] + RATE // 2], np.zeros(RATE, np.float32)])

    async def scenario():
        limits = {"connection_time_limit_s": 2.5, "go_away_lead_s": 0.5, "session_time_limit_s": 5.5}
        async with LiveEmulator(model="echo", **limits) as emu, WebServer(opener(emu)) as web:
            page = await Page(web).open()
            await until(lambda: page.of("ready"), 10, "ready")
            await page.speak(np.zeros(11 * RATE, np.float32))  # the microphone on, nobody talking
            tab = next(iter(web.tabs.values()))
            moves = len(page.of("state"))
            await until(lambda: len(page.of("state")) > moves and page.of("state")[-1]["state"] != "moving",
                        10, "the next connection")  # fmt: skip
            await page.speak(short)  # a short turn: its reply fits in one connection
            await until(lambda: page.of("turn"), 10, "a reply after all that")
            open_sessions = sum(c.open for c in emu.connections)
            await page.close()
            return page, tab, open_sessions, len(emu.connections)

    page, tab, open_sessions, connections = asyncio.run(asyncio.wait_for(scenario(), 60))
    states = {s["state"] for s in page.of("state")}
    assert {"moving", "resumed", "fresh"} <= states, states
    assert connections >= 4 and open_sessions == 1
    assert not [n for n in page.of("notice") if n["level"] == "error"]
    assert tab.source.dropped_frames == 0 and tab.dropped_output_frames == 0
