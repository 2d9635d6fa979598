"""A phone caller speaking Twilio's Media Streams protocol as documented (plain
``websockets``): paced 20 ms μ-law frames, marks echoed once the audio before them has
"played", ``clear`` obeyed. Used by tests/test_telephony.py and benches/bench_phone.py.

The playback clock is Twilio's: what arrives plays after what is already queued; a reply
that starts after a pause starts ``playout_delay_s`` after its first frame (a jitter buffer;
none by default), and a frame that comes after its turn to play is *late* (a gap the caller
hears).

A bench's many callers run ``light``: on geminilive's own WebSocket client, each message
handled as it arrives. The protocol logic is the same; only the load generator costs less than
the server it measures, so that its own pacing does not slip under a reply's burst."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time

from websockets.asyncio.client import connect as ws_connect

from geminilive._websocket import connect_websocket

FRAME = 160  # 20 ms at 8 kHz
PAUSE_S = 0.2  # silence longer than this between frames: the next frame starts a new reply


class Caller:
    """One simulated call: what it heard (μ-law), the clears and marks it got, and when;
    ``frames_received``, ``frames_late`` (after their turn to play) and ``frames_sent_late``
    (its own 20 ms pacing slipped by more than a frame).

    ``light``: geminilive's WebSocket client (frames parsed in Rust, no task switch per
    message) in place of ``websockets``; it does not tell binary messages from text
    (``binary_messages`` stays 0). Tests use the default: a client independent of the code
    under test."""

    def __init__(
        self, url: str, stream_sid: str = "MZtest", *, playout_delay_s: float = 0.0, light: bool = False
    ) -> None:
        self.url = url
        self.light = light
        self.playout_delay_s = playout_delay_s
        self.stream_sid = stream_sid
        self.heard = bytearray()
        self.clears: list[float] = []
        self.binary_messages = 0  # messages that were not text (Twilio would not take them)
        self.marks_echoed: list[str] = []
        self.frames_received = self.frames_late = 0
        self.frames_sent = self.frames_sent_late = 0
        self._played_until = 0.0  # the playback clock: when what was received has played
        self._pending_marks: list[tuple[float, str]] = []

    async def __aenter__(self) -> Caller:
        if self.light:
            self.ws = await connect_websocket(self.url, ping_interval_s=None)
            self.ws.take_message_now = self._take_now
        else:
            self.ws = await ws_connect(self.url)
        self._marks_changed = asyncio.Event()
        self.listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.listener.cancel()
        await asyncio.gather(self.listener, return_exceptions=True)
        await self.ws.close()

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def start(self, **parameters: str) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "accountSid": "ACtest", "streamSid": self.stream_sid, "callSid": "CAtest", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": parameters,
        }  # fmt: skip
        await self.send({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": self.stream_sid})

    async def speak(self, codes: bytes) -> None:
        """Paced as a phone line: a 20 ms frame every 20 ms."""
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(codes), FRAME)):
            if time.monotonic() - (t0 + n * 0.02) > 0.02:
                self.frames_sent_late += 1
            payload = base64.b64encode(codes[i : i + FRAME]).decode()
            media = {"track": "inbound", "payload": payload}
            await self.send({"event": "media", "streamSid": self.stream_sid, "media": media})
            self.frames_sent += 1
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))

    async def _listen(self) -> None:
        ticker = asyncio.create_task(self._echo_marks())
        try:
            async for raw in self.ws:
                self._received(raw)
        finally:
            ticker.cancel()

    def _take_now(self, raw: bytes) -> bool:
        """A light caller's messages, as they arrive (what raises is left to ``_listen``)."""
        try:
            self._received(raw)
        except Exception:
            return False
        return True

    def _received(self, raw: str | bytes) -> None:
        # Twilio takes text messages only (JSON); a binary one would not be played.
        self.binary_messages += not self.light and not isinstance(raw, str)
        message = json.loads(raw)
        assert message["streamSid"] == self.stream_sid
        now = time.monotonic()
        if message["event"] == "media":
            codes = base64.b64decode(message["media"]["payload"])
            self.heard += codes
            self._play(now, len(codes) / 8000)
        elif message["event"] == "mark":
            self._pending_marks.append((self._played_until, message["mark"]["name"]))
            self._marks_changed.set()
        elif message["event"] == "clear":
            self.clears.append(now)
            self._played_until = now  # what was held is dropped: marks come back at once
            self._pending_marks = [(now, name) for _, name in self._pending_marks]
            self._marks_changed.set()

    def _play(self, now: float, seconds: float) -> None:
        self.frames_received += 1
        if now > self._played_until + PAUSE_S:  # a new reply: its jitter buffer fills first
            self._played_until = now + self.playout_delay_s
        elif now > self._played_until:  # it came after its turn: the caller heard a gap
            self.frames_late += 1
            self._played_until = now
        self._played_until += seconds

    async def _echo_marks(self) -> None:
        """Each mark back once the audio before it has played: wakes when one is due, or
        when marks come or a clear makes them due now (not on a fixed tick)."""
        while True:
            now = time.monotonic()
            while self._pending_marks and self._pending_marks[0][0] <= now:
                _, name = self._pending_marks.pop(0)
                self.marks_echoed.append(name)
                await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            self._marks_changed.clear()
            due = self._pending_marks[0][0] - now if self._pending_marks else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):
                    await self._marks_changed.wait()
