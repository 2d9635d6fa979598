"""The phone server: a provider's media streams on one port (Twilio's, or Vonage's
WebSocket), each call bridged to its own Live session, and the webhook that answers a call
with what connects it to the stream (Twilio's TwiML, Vonage's NCCO).

    async with PhoneServer(open_session, port=8080, public_url="wss://example.org/media") as phone:
        await phone.serve_forever()

Calls beyond ``max_calls`` are refused (closed 1013, "try again later") before a session is
opened. :meth:`PhoneServer.drain` (the CLI runs it on SIGTERM) refuses new calls, lets running
ones finish up to a deadline, then ends them politely. The webhook port is a minimal HTTP/1.1
responder: ``/healthz`` (503 while draining), ``/metrics`` (Prometheus, with
``prometheus-client`` installed: ``pip install 'geminilive[phone]'``), and the answer (TwiML
or NCCO) for any other GET or POST, which is all either provider needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal
from xml.sax.saxutils import quoteattr

from geminilive._websocket import WebSocket, WebSocketServer, serve_websockets
from geminilive.session import Session
from geminilive.telephony.bridge import CallBridge, CallStats
from geminilive.telephony.twilio import TwilioStream
from geminilive.telephony.vonage import VonageStream, ncco
from geminilive.telephony.wire import CallWire

__all__ = ["PROVIDERS", "PhoneServer", "twiml"]

Provider = Literal["twilio", "vonage"]
PROVIDERS: dict[str, Callable[[], CallWire]] = {"twilio": TwilioStream, "vonage": VonageStream}

_log = logging.getLogger("geminilive.telephony")
MAX_REQUEST_BYTES = 64 * 1024
LATENCY_BUCKETS_S = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def twiml(stream_url: str) -> str:
    """The answer to Twilio's voice webhook: connect the call to the media stream at
    ``stream_url`` (``wss://``), both ways."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)} /></Connect></Response>"
    )


class PhoneServer:
    """Media streams on ``host:port`` (loopback by default: put a TLS proxy or tunnel in
    front, Twilio connects with wss://); the webhook on ``webhook_port`` if given.
    ``provider``: whose media streams (``"twilio"`` or ``"vonage"``); ``tell_model_cut_off``:
    see :class:`CallBridge`; ``reuse_port``: listen with SO_REUSEPORT, so that several worker
    processes share both ports (``geminilive phone --workers N``)."""

    def __init__(
        self,
        open_session: Callable[[], AbstractAsyncContextManager[Session]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_port: int | None = None,
        public_url: str | None = None,
        max_calls: int = 100,
        start_timeout_s: float = 10.0,
        tell_model_cut_off: bool = False,
        provider: Provider = "twilio",
        reuse_port: bool = False,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"provider is one of {', '.join(PROVIDERS)}, not {provider!r}")
        self.provider = provider
        self.reuse_port = reuse_port
        self.open_session = open_session
        self.tell_model_cut_off = tell_model_cut_off
        self.host, self._port, self._webhook_port = host, port, webhook_port
        self.public_url = public_url
        self.max_calls = max_calls
        self.start_timeout_s = start_timeout_s
        self.active: set[CallBridge] = set()
        self.finished: list[CallStats] = []
        self.refused = 0
        self.draining = False
        self._server: WebSocketServer | None = None
        self._webhook: asyncio.Server | None = None

    async def start(self) -> PhoneServer:
        # Vonage's audio comes in binary messages, its events in text ones.
        self._server = await serve_websockets(
            self._call, self.host, self._port, binary_apart=self.provider == "vonage", reuse_port=self.reuse_port
        )
        if self._webhook_port is not None:
            self._webhook = await asyncio.start_server(
                self._answer, self.host, self._webhook_port, reuse_port=self.reuse_port or None
            )
        return self

    async def stop(self) -> None:
        if self._webhook is not None:
            self._webhook.close()
            await self._webhook.wait_closed()
        if self._server is not None:
            await self._server.close(1001, "the phone server is stopping")

    async def __aenter__(self) -> PhoneServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def webhook_port(self) -> int | None:
        return self._webhook.sockets[0].getsockname()[1] if self._webhook is not None else None

    @property
    def stream_url(self) -> str:
        return self.public_url or f"ws://{self.host}:{self.port}/media"

    async def drain(self, deadline_s: float = 30.0) -> None:
        """Take no new calls; wait up to ``deadline_s`` for the running ones to end, then end
        those left (1001, "going away": Twilio ends the call's stream, each session closes)."""
        self.draining = True
        deadline = asyncio.get_running_loop().time() + deadline_s
        while self.active and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for bridge in list(self.active):
            await bridge.ws.close(1001, "the phone server is shutting down")

    async def _call(self, ws: WebSocket) -> None:
        if self.draining or len(self.active) >= self.max_calls:
            self.refused += 1
            await ws.close(1013, "shutting down" if self.draining else f"at capacity ({self.max_calls} calls)")
            return
        bridge = CallBridge(
            ws,
            self.open_session,
            start_timeout_s=self.start_timeout_s,
            tell_model_cut_off=self.tell_model_cut_off,
            wire=PROVIDERS[self.provider](),
        )
        self.active.add(bridge)
        try:
            self.finished.append(await bridge.run())
        finally:
            self.active.discard(bridge)

    def _metrics(self) -> tuple[bytes, bytes, bytes]:
        """Prometheus' text format: calls now and in all, refused, audio both ways, clears."""
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
            from prometheus_client.exposition import CONTENT_TYPE_LATEST
        except ImportError:
            return b"501 Not Implemented", b"text/plain", b"install prometheus-client for /metrics\n"
        registry = CollectorRegistry()
        Gauge("geminilive_phone_active_calls", "Calls in progress", registry=registry).set(len(self.active))
        Gauge("geminilive_phone_draining", "1 while draining", registry=registry).set(int(self.draining))
        worker = Gauge("geminilive_phone_worker", "The process that answered", ["pid"], registry=registry)
        worker.labels(pid=str(os.getpid())).set(1)
        calls = [*self.finished, *(bridge.stats for bridge in self.active)]
        for name, doc, value in (
            ("calls_finished", "Calls that ended", len(self.finished)),
            ("calls_refused", "Calls refused (over max_calls or draining)", self.refused),
            ("caller_audio_seconds", "Audio from callers", sum(c.caller_audio_ms for c in calls) / 1000),
            ("model_audio_seconds", "Audio sent to callers", sum(c.model_audio_ms for c in calls) / 1000),
            ("clears", "clear messages sent on barge-in", sum(c.clears for c in calls)),
            ("frames_late", "Reply frames sent after they were due to play", sum(c.frames_late for c in calls)),
            ("reconnects", "Live sessions' moves to a new connection", sum(c.reconnects for c in calls)),
            ("dropped_messages", "Malformed or misplaced provider messages", sum(c.dropped_messages for c in calls)),
        ):
            Counter(f"geminilive_phone_{name}", doc, registry=registry).inc(value)
        latency = Histogram(
            "geminilive_phone_reply_latency_seconds",
            "End of the caller's speech to the reply's first audio sent, per turn",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        for ms in (t.reply_latency_ms for c in calls for t in c.turns):
            if ms is not None:
                latency.observe(ms / 1000)
        return b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(registry)

    def _answer_body(self) -> tuple[bytes, bytes]:
        """What connects a call to the stream: TwiML for Twilio, an NCCO for Vonage."""
        if self.provider == "vonage":
            return json.dumps(ncco(self.stream_url)).encode(), b"application/json"
        return twiml(self.stream_url).encode(), b"text/xml"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One webhook request: read it (headers and a body up to its length), answer TwiML."""
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_REQUEST_BYTES:
                    raise ValueError("request head too large")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = min(int(value.strip()), MAX_REQUEST_BYTES)
                await reader.readexactly(length)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"POST"):
                body, status, kind = b"GET or POST\n", b"405 Method Not Allowed", b"text/plain"
            elif path == b"/healthz":
                status = b"503 Service Unavailable" if self.draining else b"200 OK"
                body, kind = (b"draining\n" if self.draining else b"ok\n"), b"text/plain"
            elif path == b"/metrics":
                status, kind, body = self._metrics()
            else:
                body, kind = self._answer_body()
                status = b"200 OK"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            _log.warning("bad webhook request: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
