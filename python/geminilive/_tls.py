"""TLS in Rust (rustls) under WebSockets: an asyncio transport over a socket the event loop
watches for readiness, where one native call encrypts and writes a message and one reads and
decrypts what arrived (Python's ``ssl`` under a loop's transport costs several interpreter-level
calls and copies per message, a fifth of a session's CPU).

Clients use it for ``wss://`` when given no ``ssl`` context (the system's CA certificates are
trusted, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as with OpenSSL; a given context means Python's
``ssl``, configured exactly as given); servers when given a :class:`TlsServerConfig`.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol

from geminilive._native import TlsServerConfig, TlsStream

__all__ = ["NativeTlsTransport", "TlsServerConfig", "accept_tls", "connect_tls", "open_tls_connection"]

# The transport pauses its protocol's writers above this many unsent bytes.
_DEFAULT_HIGH = 64 * 1024


class StreamProtocol(Protocol):
    """What the transport drives (an ``asyncio.Protocol``'s callbacks)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class NativeTlsTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, stream: TlsStream, protocol: StreamProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._tls = stream
        self._protocol = protocol
        self._fd = stream.fileno()
        self._high = _DEFAULT_HIGH
        self._closing = False  # close() or abort() called, or the connection failed
        self._lost = False  # connection_lost scheduled
        self._waiting_writable = False
        self._writing_paused = False
        self._reading = True

    def start(self) -> None:
        """Begin reading (and read what the handshake may have taken in already)."""
        self._loop.add_reader(self._fd, self._readable)
        self._loop.call_soon(self._readable)

    # --- reading -------------------------------------------------------------------------------

    def _readable(self) -> None:
        if self._lost or not self._reading:
            return
        try:
            data, open_ = self._tls.read()
        except OSError as exc:
            self._fail(exc)
            return
        if data:
            self._protocol.data_received(data)
        if not open_ and not self._lost:  # the peer ended the stream (a close_notify, or EOF)
            self._loop.remove_reader(self._fd)
            self._reading = False
            self._protocol.eof_received()
            self.close()

    def pause_reading(self) -> None:
        if self._reading and not self._lost:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._lost:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)
            self._loop.call_soon(self._readable)  # rustls may hold records already read

    def is_reading(self) -> bool:
        return self._reading

    # --- writing -------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return  # as asyncio's transports: writes after close are dropped
        try:
            done = self._tls.write(data)
        except OSError as exc:
            self._fail(exc)
            return
        if not done:
            self._wait_writable()

    def _wait_writable(self) -> None:
        if not self._waiting_writable:
            self._waiting_writable = True
            self._loop.add_writer(self._fd, self._writable)
        if not self._writing_paused and self._tls.unsent > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _writable(self) -> None:
        try:
            done = self._tls.flush()
        except OSError as exc:
            self._fail(exc)
            return
        if not done:
            return
        self._loop.remove_writer(self._fd)
        self._waiting_writable = False
        if self._writing_paused:
            self._writing_paused = False
            self._protocol.resume_writing()
        if self._closing:
            self._lose(None, graceful=True)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = _DEFAULT_HIGH if high is None else high

    def get_write_buffer_size(self) -> int:
        return self._tls.unsent if self._waiting_writable else 0

    def can_write_eof(self) -> bool:
        return False

    # --- closing -------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close once what was written has gone (close_notify, then the socket)."""
        if self._closing:
            return
        self._closing = True
        if not self._waiting_writable:
            self._lose(None, graceful=True)

    def abort(self) -> None:
        """Drop the connection now, without close_notify (what is unsent is lost)."""
        self._closing = True
        self._lose(None, graceful=False)

    def _fail(self, exc: OSError) -> None:
        self._closing = True
        self._lose(exc, graceful=False)

    def _lose(self, exc: Exception | None, *, graceful: bool) -> None:
        if self._lost:
            return
        self._lost = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._tls.close(graceful)
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Until `fd` is readable (or writable)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    watch, unwatch = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    watch(fd, wake)
    try:
        await ready
    finally:
        unwatch(fd)


async def connect_tls(protocol: StreamProtocol, sock: socket.socket, server_hostname: str) -> NativeTlsTransport:
    """TLS over the connected socket `sock` (given up to the transport), trusting the system's
    CA certificates, handshake done, and `protocol` connected to it."""
    _prepare(sock)
    return await _handshake(TlsStream(sock.detach(), server_hostname), protocol)


async def accept_tls(protocol: StreamProtocol, sock: socket.socket, config: TlsServerConfig) -> NativeTlsTransport:
    """The server's side of TLS with the client that connected on `sock` (given up to the
    transport), handshake done, and `protocol` connected to it."""
    _prepare(sock)
    return await _handshake(TlsStream.accept(sock.detach(), config), protocol)


def _prepare(sock: socket.socket) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _handshake(stream: TlsStream, protocol: StreamProtocol) -> NativeTlsTransport:
    loop = asyncio.get_running_loop()
    fd = stream.fileno()
    try:
        while (wanted := stream.handshake()) != "done":
            await _ready(loop, fd, write=wanted == "write")
    except BaseException:
        stream.close(False)
        raise
    transport = NativeTlsTransport(loop, stream, protocol)
    protocol.connection_made(transport)
    transport.start()
    return transport


async def open_tls_connection(protocol: StreamProtocol, host: str, port: int) -> NativeTlsTransport:
    """A TCP connection to `host` (each address in turn, as asyncio does), then TLS."""
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return await connect_tls(protocol, sock, host)
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"could not connect to {host}:{port}: {'; '.join(map(str, errors))}")
