"""A lean WebSocket connection for the session and the emulator.

websockets' sans-I/O protocol does the handshakes, the close handshake, control frames,
fragments and extensions. A message in one frame, which is nearly every Live API message, is
read and written in Rust (``_native.read_frames``, ``write_frame``) whenever the connection is
open without extensions; any other frame goes, whole, to the sans-I/O protocol, which is kept
standing between frames. Sends write to the transport at once (no coroutine, lock or context
manager per message; ``drain`` when the buffer is full), a received message wakes its reader
through one future, and TLS records are decrypted into one shared buffer. Per-message CPU is
what bounds how many real-time sessions one core carries (benches/bench_scale.py).

The part of websockets' asyncio API the session and the emulator use is kept: ``send``,
``recv``, ``close``, async iteration, ``state``, ``request``, and ``ConnectionClosed``
exceptions from ``websockets.exceptions``. Messages are received as ``bytes`` (text frames
too: their JSON goes to msgspec, which checks UTF-8 as it parses), except on a connection
made with ``binary_apart``, where a binary message is a :class:`BinaryMessage` (for wires that
carry text and binary messages of different meaning, such as Vonage's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl as ssl_module
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidProxy
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Protocol, Side, State
from websockets.proxy import get_proxy, parse_proxy, prepare_connect_request
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI, parse_uri

from geminilive._loop import watches_file_descriptors
from geminilive._native import read_frames, write_frame

if sys.platform != "win32":  # the transport watches the socket's readiness (no Proactor loop)
    from geminilive._tls import TlsServerConfig, accept_tls, connect_tls, open_tls_connection

    NATIVE_TLS = True
else:
    NATIVE_TLS = False

__all__ = ["WebSocket", "WebSocketServer", "connect_websocket", "serve_websockets"]

# Received messages held before reading from the socket pauses (backpressure on the peer).
_QUEUE_HIGH = 64
_QUEUE_LOW = 16
# Bytes buffered in the transport before a send waits for the socket to drain.
_WRITE_HIGH = 64 * 1024
_OPEN = State.OPEN
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
# An HTTP head longer than this goes to the protocol whole (which refuses it).
_MAX_HEAD_BYTES = 64 * 1024


# One receive buffer for every connection: the loop fills it and buffer_updated() hands its
# bytes to the parser before the next read, so it is never shared by two reads at once. As a
# buffered protocol, TLS records are decrypted straight into it (uvloop's plain-protocol path
# allocates a 256 KiB object for every read).
_RECEIVE_BUFFER = memoryview(bytearray(256 * 1024))


class BinaryMessage(bytes):
    """A message that came in binary frames, on a connection made with ``binary_apart``."""

    __slots__ = ()


class WebSocket(asyncio.BufferedProtocol):
    """One WebSocket connection (client or server side) on a sans-I/O ``protocol``. With
    ``binary_apart``, binary messages come out of :meth:`recv` as :class:`BinaryMessage`
    (every frame then goes through the protocol's parser: the Rust fast path does not tell
    the two apart)."""

    def __init__(
        self,
        protocol: Protocol,
        *,
        close_timeout_s: float = 2.0,
        ping_interval_s: float | None = None,
        binary_apart: bool = False,
    ) -> None:
        self.protocol = protocol
        self.binary_apart = binary_apart
        self._binary_message = False  # the message being received came in binary frames
        self.close_timeout_s = close_timeout_s
        self._ping_interval_s = ping_interval_s
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self._loop = asyncio.get_running_loop()
        self._messages: deque[bytes] = deque()
        self._fragments: list[bytes | bytearray | memoryview] = []
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._lost_exc: BaseException | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._server: WebSocketServer | None = None  # the listener that accepted it (server side)
        # The fast path: open, no extension, the protocol's parser between frames.
        self._fast = False
        # Received bytes that do not make a whole frame (or HTTP head) yet, and how many the
        # frame needs in all (0: not known until its header is in).
        self._pending: list[bytes] = []
        self._pending_bytes = self._pending_need = 0
        self._head_read = False
        self._masked_in = protocol.side is Side.SERVER  # clients mask what they send
        self._max_size = protocol.max_message_size or sys.maxsize
        # Called with a message when the reader waits in `recv` with nothing queued; returns
        # whether it took the message (then `recv` never sees it). A reader that handles most
        # messages synchronously saves a wake-up of its task per message this way.
        self.take_message_now: Callable[[bytes], bool] | None = None
        # Called as each message arrives (not when it is read): its value is the message's
        # ``arrival_stamp`` once `recv` returns it. A client notes with it how much it had
        # sent when a server message came, however long the message then waited in the queue.
        self.stamp_arrival: Callable[[], Any] | None = None
        self._stamps: deque[Any] = deque()
        self.arrival_stamp: Any = None

    # --- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not its subclasses
        transport.set_write_buffer_limits(_WRITE_HIGH)
        self.transport = transport
        if self._server is not None:  # only now: a failed TLS handshake never gets here
            self._server.accepted(self)

    def data_received(self, data: bytes) -> None:
        if self._fast:
            self._read_frames(data)
        elif self.protocol.state is State.CONNECTING and not self._head_read:
            self._read_handshake(data)
        else:
            self._general(data)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECEIVE_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_RECEIVE_BUFFER[:nbytes]))

    def _read_handshake(self, data: bytes) -> None:
        """Give the protocol the HTTP head alone, so that once the connection is open its
        parser stands between frames and the frames after the head can take the fast path."""
        buf = b"".join([*self._pending, data])
        self._pending.clear()
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0 and len(buf) < _MAX_HEAD_BYTES:
            self._pending.append(buf)
            return
        head, rest = (buf[: head_end + 4], buf[head_end + 4 :]) if head_end >= 0 else (buf, b"")
        self._head_read = True  # what follows is a refusal's body, or frames
        self._general(head)
        protocol = self.protocol
        self._fast = protocol.state is _OPEN and not protocol.extensions and not self.binary_apart
        if rest:
            self.data_received(rest)

    def _read_frames(self, data: bytes) -> None:
        """Whole single-frame messages are read in Rust; any other frame goes, whole, to the
        protocol, which then stands between frames again."""
        pending = self._pending
        if pending:
            pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes < self._pending_need:
                return  # a large frame is still coming in: join its pieces once, at the end
            buf = b"".join(pending)
            pending.clear()
        else:
            buf = data
        at = 0
        while True:
            messages, at, stop = read_frames(buf, at, self._masked_in, self._max_size, not self._fragments)
            for message in messages:
                self._message(message)
            if stop > 0:
                self._general(buf[at:stop])
                at = stop
            elif stop != -1:
                break
            if stop == -1 or self.protocol.state is not _OPEN:  # the protocol judges the rest
                self._fast = False
                if at < len(buf):
                    self._general(buf[at:])
                return
        if at < len(buf):
            pending.append(buf[at:])
            self._pending_bytes = len(buf) - at
            self._pending_need = -stop

    def _general(self, data: bytes) -> None:
        """Everything but the fast path: websockets' protocol parses, answers and fails."""
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._write_out()
        for event in events:
            if type(event) is Frame:
                if event.opcode in _DATA:  # control frames are answered by the protocol
                    if event.opcode is not Opcode.CONT:
                        self._binary_message = event.opcode is Opcode.BINARY
                    self._data_frame(event.data, event.fin)
            elif type(event) is Request:
                self.request = event
                self._server_handshake(event)
            elif type(event) is Response:
                self._client_handshake_done()
        if protocol.state is not _OPEN:
            self._closing()

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self._write_out()
        self._closing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent: the protocol is now CLOSED
        self._lost_exc = exc
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if not self._handshake.done():
            self._handshake.set_exception(ConnectionError("connection lost during the opening handshake"))
            self._handshake.exception()  # retrieved here: nobody may be waiting any more
        self._lost.set_result(None)
        self._wake()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- receiving -----------------------------------------------------------------------------

    def _data_frame(self, data: bytes | bytearray | memoryview, fin: bool) -> None:
        if not fin:
            self._fragments.append(data)
            return
        if self._fragments:
            self._fragments.append(data)
            data = b"".join(self._fragments)
            self._fragments.clear()
        if self._binary_message and self.binary_apart:
            self._message(BinaryMessage(data))
        else:
            self._message(data if type(data) is bytes else bytes(data))  # frames hold bytearrays

    def _message(self, data: bytes) -> None:
        waiter = self._waiter
        take = self.take_message_now
        if take is not None and waiter is not None and not waiter.done() and take(data):
            return  # the reader waits for a later message: the order holds
        self._messages.append(data)
        if self.stamp_arrival is not None:
            self._stamps.append(self.stamp_arrival())
        if len(self._messages) >= _QUEUE_HIGH and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def recv(self) -> bytes:
        """The next message; ``ConnectionClosed`` once the connection is closed and every
        message received before the close has been read."""
        messages = self._messages
        while not messages:
            if self.protocol.state is State.CLOSED:
                raise self._close_exc()
            waiter = self._waiter = self._loop.create_future()
            await waiter
        if self._reading_paused and len(messages) <= _QUEUE_LOW:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        if self._stamps:
            self.arrival_stamp = self._stamps.popleft()
        return messages.popleft()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        """Messages until a normal close (an abnormal one raises, as in websockets)."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    def _close_exc(self) -> ConnectionClosed:
        exc = self.protocol.close_exc
        if self._lost_exc is not None:
            exc.__cause__ = self._lost_exc
        return exc

    # --- sending -------------------------------------------------------------------------------

    def send_now(self, message: bytes | str, text: bool = True) -> None:
        """Write one message to the socket now (no await: the caller drains when it can).
        Raises ``ConnectionClosed`` if the connection is no longer open."""
        protocol = self.protocol
        if protocol.state is not _OPEN:
            raise self._close_exc() if protocol.state is State.CLOSED else _closing_error(protocol)
        data = message.encode() if isinstance(message, str) else message
        if self._fast:  # the protocol has nothing queued: whatever it makes is written at once
            assert self.transport is not None
            self.transport.write(write_frame(1 if text else 2, data, not self._masked_in))
            return
        if text:
            protocol.send_text(data)
        else:
            protocol.send_binary(data)
        self._write_out()

    def send_all_now(self, messages: list[bytes | str]) -> None:
        """Write several messages to the socket in one write (one syscall where one would be a
        syscall each): a phone bridge's media frames and their mark. ``str`` goes as a text
        frame, ``bytes`` as binary (as :meth:`send`); raises as :meth:`send_now`."""
        if not self._fast:
            for message in messages:
                self.send_now(message, text=isinstance(message, str))
            return
        protocol = self.protocol
        if protocol.state is not _OPEN:
            raise self._close_exc() if protocol.state is State.CLOSED else _closing_error(protocol)
        assert self.transport is not None
        masked = not self._masked_in
        self.transport.write(b"".join(
            write_frame(1, m.encode(), masked) if isinstance(m, str) else write_frame(2, m, masked) for m in messages
        ))  # fmt: skip

    @property
    def must_drain(self) -> bool:
        """Whether the transport's buffer is over its high-water mark (await :meth:`drain`)."""
        return self._writing_paused

    async def send(self, message: bytes | str, text: bool | None = None) -> None:
        """As websockets: ``str`` goes as a text frame, bytes as binary unless ``text``."""
        self.send_now(message, text=type(message) is str if text is None else text)
        if self._writing_paused:
            await self.drain()

    async def drain(self) -> None:
        if self._writing_paused and not self._lost.done():
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            try:
                await waiter
            finally:
                self._drain_waiters.remove(waiter)

    def _write_out(self) -> None:
        transport = self.transport
        for data in self.protocol.data_to_send():
            if transport is None:
                return
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                with contextlib.suppress(Exception):  # uvloop may raise RuntimeError here
                    transport.write_eof()
            else:
                transport.close()

    # --- closing -------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    def _closing(self) -> None:
        """The close handshake started (or the peer went): end the TCP connection if the peer
        does not within the close timeout."""
        if self.protocol.close_expected() and self.transport is not None and not self._lost.done():
            self._timers.append(self._loop.call_later(self.close_timeout_s, self.transport.abort))
        self._wake()

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake without waiting: what the peer sent before its close
        frame still comes out of :meth:`recv`, then ``ConnectionClosed``."""
        if self.protocol.state is _OPEN:
            self.protocol.send_close(code, reason)
            self._write_out()
            self._closing()
        elif self.protocol.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close handshake, then wait for the TCP connection to end (aborted after the close
        timeout). Safe to call more than once and on a connection already closed."""
        self.start_close(code, reason)
        if self.transport is not None:
            await asyncio.shield(self._lost)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        if self.transport is not None:
            self.transport.abort()

    # --- handshakes ----------------------------------------------------------------------------

    def _client_handshake_done(self) -> None:
        # The state may be past OPEN already: a close frame can come in the same read.
        if self.protocol.handshake_exc is None:
            self._handshake.set_result(None)
            if self._ping_interval_s:
                self._timers.append(self._loop.call_later(self._ping_interval_s, self._keepalive))
        else:
            self._handshake.set_exception(self.protocol.handshake_exc)

    def _keepalive(self) -> None:
        """Pings hold NATs open; a late pong is not a reason to drop the session."""
        if self.protocol.state is _OPEN:
            self.protocol.send_ping(os.urandom(4))
            self._write_out()
            assert self._ping_interval_s is not None
            self._timers.append(self._loop.call_later(self._ping_interval_s, self._keepalive))

    def _server_handshake(self, request: Request) -> None:
        assert isinstance(self.protocol, ServerProtocol) and self._server is not None
        protocol = self.protocol
        try:
            response = self._server.check(protocol, request) or protocol.accept(request)
        except Exception:  # a check that failed on a strange request: refuse it, stay up
            if self._server._logger is not None:
                self._server._logger.error("checking a handshake request failed", exc_info=True)
            response = protocol.reject(500, "could not check the request\n")
        protocol.send_response(response)
        self._write_out()
        if protocol.state is _OPEN:
            self._handshake.set_result(None)
            self._server.start_handler(self)
        else:
            self._handshake.set_exception(protocol.handshake_exc or InvalidHandshake("request refused"))
            self._handshake.exception()
            self._closing()


def _closing_error(protocol: Protocol) -> ConnectionClosed:
    """The error for a send after our or the peer's close frame, before the TCP close."""
    return ConnectionClosed(protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent)


async def connect_websocket(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    ssl: ssl_module.SSLContext | None = None,
    max_size: int | None = None,
    open_timeout_s: float | None = 10.0,
    close_timeout_s: float = 2.0,
    ping_interval_s: float | None = 20.0,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> WebSocket:
    """Open a client connection to ``url`` (``ws://`` or ``wss://``), through the HTTP(S)
    proxy the environment names for it, if any. ``wss://`` without an ``ssl`` context runs TLS
    in Rust (:mod:`geminilive._tls`), trusting the system's CA certificates; with one, Python's
    ``ssl`` as configured. Raises ``OSError`` (``ssl.SSLError`` included), ``TimeoutError`` or
    ``websockets.exceptions.InvalidHandshake``."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    protocol = ClientProtocol(uri, max_size=max_size, logger=logger)
    ws = WebSocket(protocol, close_timeout_s=close_timeout_s, ping_interval_s=ping_interval_s)
    # TLS in Rust needs a loop that watches file descriptors; elsewhere Python's ssl.
    native_tls = uri.secure and ssl is None and NATIVE_TLS and watches_file_descriptors(loop)
    tls = (ssl or ssl_module.create_default_context()) if uri.secure and not native_tls else None
    try:
        async with asyncio.timeout(open_timeout_s):
            proxy = get_proxy(uri)
            if proxy is not None:
                sock = await _tunnel(proxy, uri)
                if native_tls:
                    await connect_tls(ws, sock, uri.host)
                else:
                    hostname = uri.host if tls else None
                    await loop.create_connection(lambda: ws, sock=sock, ssl=tls, server_hostname=hostname)
            elif native_tls:
                await open_tls_connection(ws, uri.host, uri.port)
            else:
                await loop.create_connection(lambda: ws, uri.host, uri.port, ssl=tls)
            request = protocol.connect()
            if headers:
                request.headers.update(Headers(headers))
            protocol.send_request(request)
            ws._write_out()
            await ws._handshake
    except BaseException:
        ws.abort()
        raise
    return ws


async def _tunnel(proxy: str, uri: WebSocketURI) -> socket.socket:
    """A TCP socket to ``uri`` through an HTTP proxy's CONNECT (the usual corporate setup)."""
    parsed = parse_proxy(proxy)
    if parsed.scheme != "http":
        raise InvalidProxy(proxy, "only http:// proxies are supported (set NO_PROXY to bypass)")
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    try:
        writer.write(prepare_connect_request(parsed, uri))
        status = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
        parts = status.split(None, 2)
        if len(parts) < 2 or not parts[1].startswith(b"2"):
            raise InvalidHandshake(f"proxy refused CONNECT: {status.decode(errors='replace').strip()}")
        sock = writer.get_extra_info("socket")
        duplicate = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    finally:
        writer.transport.abort()
    duplicate.setblocking(False)
    return duplicate


class WebSocketServer:
    """Accepted connections of :func:`serve_websockets` and their handler tasks."""

    def __init__(
        self,
        handler: Callable[[WebSocket], Awaitable[None]],
        check_request: Callable[[ServerProtocol, Request], Response | None],
        *,
        max_size: int | None,
        compression: bool,
        open_timeout_s: float,
        logger: logging.Logger | logging.LoggerAdapter | None,
        tls: TlsServerConfig | None = None,
        binary_apart: bool = False,
    ) -> None:
        self._handler = handler
        self._binary_apart = binary_apart
        self._tls = tls
        self.check = check_request
        self._max_size = max_size
        self._extensions = enable_server_permessage_deflate(None) if compression else None
        self._open_timeout_s = open_timeout_s
        self._logger = logger
        self.connections: set[WebSocket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[None]] = set()  # TLS in Rust, before the connection is made
        self.server: asyncio.Server | None = None

    def new_connection(self) -> WebSocket:
        protocol = ServerProtocol(max_size=self._max_size, extensions=self._extensions, logger=self._logger)
        ws = WebSocket(protocol, binary_apart=self._binary_apart)
        ws._server = self
        return ws

    def hand_over(self) -> asyncio.Protocol:
        """For the loop's server: takes each accepted connection's socket for TLS in Rust."""
        return _HandOver(self)

    def start_tls(self, sock: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self._accept_tls(sock))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _accept_tls(self, sock: socket.socket) -> None:
        assert self._tls is not None
        try:
            async with asyncio.timeout(self._open_timeout_s):
                await accept_tls(self.new_connection(), sock, self._tls)
        except (OSError, TimeoutError) as exc:  # a client that failed its TLS handshake
            if self._logger is not None:
                self._logger.debug("TLS handshake failed: %s", exc)

    def accepted(self, ws: WebSocket) -> None:
        self.connections.add(ws)
        ws._lost.add_done_callback(lambda _: self.connections.discard(ws))
        ws._timers.append(ws._loop.call_later(self._open_timeout_s, self._expire, ws))

    def _expire(self, ws: WebSocket) -> None:
        if not ws._handshake.done():
            ws.abort()

    def start_handler(self, ws: WebSocket) -> None:
        task = asyncio.get_running_loop().create_task(self._run(ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ws: WebSocket) -> None:
        try:
            await self._handler(ws)
        except Exception:
            if self._logger is not None:
                self._logger.error("connection handler failed", exc_info=True)
            await ws.close(1011)
        else:
            await ws.close()

    async def close(self, code: int = 1001, reason: str = "") -> None:
        """Stop listening, close every connection (``code``), and wait for the handlers."""
        if self.server is not None:
            self.server.close()
        for handshake in self._handshakes:  # a client stalled mid-handshake holds nothing up
            handshake.cancel()
        await asyncio.gather(*(ws.close(code, reason) for ws in list(self.connections)), return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if self.server is not None:
            await self.server.wait_closed()

    async def serve_forever(self) -> None:
        assert self.server is not None
        await self.server.serve_forever()

    @property
    def sockets(self) -> tuple:
        return tuple(self.server.sockets) if self.server is not None else ()


class _HandOver(asyncio.Protocol):
    """Takes a connection the loop's server accepted: duplicates its socket for TLS in Rust
    and drops the loop's transport (which closes only its own descriptor) before it reads."""

    def __init__(self, server: WebSocketServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        duplicate = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
        cast(asyncio.Transport, transport).abort()
        self._server.start_tls(duplicate)


async def serve_websockets(
    handler: Callable[[WebSocket], Awaitable[None]],
    host: str,
    port: int,
    *,
    ssl: ssl_module.SSLContext | None = None,
    tls: TlsServerConfig | None = None,
    check_request: Callable[[ServerProtocol, Request], Response | None] | None = None,
    max_size: int | None = None,
    compression: bool = False,
    open_timeout_s: float = 10.0,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
    binary_apart: bool = False,
    reuse_port: bool = False,
) -> WebSocketServer:
    """Listen on ``host:port``; run ``handler(ws)`` for each connection whose handshake
    ``check_request`` lets through (it returns a rejection ``Response`` or ``None``). The
    connection is closed (1000) when the handler returns, 1011 if it raises. ``wss://`` with
    ``tls`` (TLS in Rust) or ``ssl`` (Python's). ``binary_apart``: see :class:`WebSocket`.
    ``reuse_port``: SO_REUSEPORT, so that several processes listen on one port (the kernel
    spreads connections over them)."""
    if tls is not None and (ssl is not None or not NATIVE_TLS):
        raise ValueError("tls= is TLS in Rust (not on Windows), ssl= Python's: one of them")
    server = WebSocketServer(
        handler,
        check_request or (lambda protocol, request: None),
        max_size=max_size,
        compression=compression,
        open_timeout_s=open_timeout_s,
        logger=logger,
        tls=tls,
        binary_apart=binary_apart,
    )
    loop = asyncio.get_running_loop()
    if tls is not None and not watches_file_descriptors(loop):
        raise ValueError("tls= (TLS in Rust) needs an event loop with add_reader; pass ssl= (Python's) on this one")
    if tls is not None:
        server.server = await loop.create_server(server.hand_over, host, port, reuse_port=reuse_port or None)
    else:
        server.server = await loop.create_server(
            server.new_connection, host, port, ssl=ssl, reuse_port=reuse_port or None
        )
    return server
