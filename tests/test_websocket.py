"""The lean WebSocket connection (geminilive._websocket) against websockets' own client and
server over real sockets, through a real HTTP CONNECT proxy, and as a pure parser under
arbitrary fragmentation and TCP chunking."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri
from websockets.utils import accept_key

import geminilive
from audio_util import run
from geminilive import events as ev
from geminilive._websocket import BinaryMessage, WebSocket, connect_websocket, serve_websockets
from geminilive.emulator import LiveEmulator


def test_messages_both_ways_with_websockets_server_including_fragments_and_pings() -> None:
    async def scenario():
        async def handler(server_ws):
            await server_ws.send("text one")
            await server_ws.send(b"binary two")
            await server_ws.send([b"frag", b"mented ", b"three"])  # one message in three frames
            await server_ws.ping()
            got = [await server_ws.recv() for _ in range(2)]
            await server_ws.send(repr(got))
            await server_ws.close(4001, "bye now")

        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/x")
            received = [await ws.recv() for _ in range(3)]
            ws.send_now(b'{"a": 1}')
            await ws.send("second")
            echo = await ws.recv()
            with pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
            await ws.close()
            return received, echo, closed.value.rcvd.code, closed.value.rcvd.reason, ws.state

    received, echo, code, reason, state = run(scenario())
    assert received == [b"text one", b"binary two", b"fragmented three"]
    assert echo == b"""['{"a": 1}', 'second']"""
    assert (code, reason, state) == (4001, "bye now", State.CLOSED)


def test_a_normal_close_ends_iteration_and_a_send_after_it_raises() -> None:
    async def scenario():
        async def handler(server_ws):
            for i in range(5):
                await server_ws.send(f"m{i}")

        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/")
            got = [m async for m in ws]
            with pytest.raises(ConnectionClosedOK):
                ws.send_now(b"too late")
            return got

    assert run(scenario()) == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_a_reader_that_falls_behind_pauses_the_socket_and_loses_nothing() -> None:
    count = 1000

    async def scenario():
        async def handler(server_ws):
            for i in range(count):
                await server_ws.send(f"{i:06d}" + "x" * 2000)

        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/")
            await asyncio.sleep(0.3)  # the server writes far ahead of this reader
            queued = len(ws._messages)
            got = [int(m[:6]) async for m in ws]
            return queued, got

    queued, got = run(scenario())
    assert queued < count  # reading paused rather than buffering everything
    assert got == list(range(count))


def test_a_message_is_taken_on_arrival_only_when_the_reader_has_read_everything_before_it() -> None:
    """``take_message_now`` sees a message only while the reader waits with nothing queued, so
    what it takes and what the reader reads make the stream once, in order."""
    count = 600

    async def scenario():
        async def handler(server_ws):
            for i in range(count):
                await server_ws.send(f"{i:06d}")
                if i % 30 == 29:
                    await server_ws.recv()  # bursts: the next once the reader has this one

        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/")
            order: list[tuple[str, int]] = []

            def take(message: bytes) -> bool:
                n = int(message)
                if n % 3:
                    return False
                order.append(("taken", n))
                return True

            ws.take_message_now = take
            async for message in ws:
                n = int(message)
                order.append(("read", n))
                if n % 30 == 29:
                    ws.send_now("next")
                elif n % 7 == 0:
                    await asyncio.sleep(0.002)  # a slow reader: messages queue meanwhile
            return order

    order = run(scenario())
    assert [n for _, n in order] == list(range(count))
    # A burst's first message finds the reader waiting (but the first burst's, sent before the
    # hook was set); in a burst some queue behind others.
    assert [n for n in range(30, count, 30) if ("taken", n) not in order] == []
    assert any(kind == "read" and n % 3 == 0 for kind, n in order), "none queued behind others"


@pytest.mark.parametrize("binary_apart", [True, False])
def test_a_server_that_keeps_binary_apart_tells_binary_messages_from_text(binary_apart: bool) -> None:
    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        done = asyncio.Event()

        async def handler(ws: WebSocket) -> None:
            for _ in range(5):
                got.append(await ws.recv())
            done.set()

        server = await serve_websockets(handler, "127.0.0.1", 0, binary_apart=binary_apart)
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}") as client:
            await client.send('{"event": "text"}')
            await client.send(b"{binary that looks like text}")
            await client.send([b"frag", b"mented"])  # a binary message in fragments
            await client.send(["text ", "fragments"])
            await client.send(bytes(640))
            await asyncio.wait_for(done.wait(), 5)
        await server.close()
        return got

    got = run(scenario())
    assert got == [b'{"event": "text"}', b"{binary that looks like text}", b"fragmented", b"text fragments", bytes(640)]
    kinds = [isinstance(m, BinaryMessage) for m in got]
    assert kinds == ([False, True, True, False, True] if binary_apart else [False] * 5)


def test_server_handshake_check_handler_exit_and_failure() -> None:
    async def scenario():
        def check(protocol: ServerProtocol, request):
            if request.path == "/strange":
                raise KeyError("a check that did not expect this request")
            return protocol.reject(404, "nothing here\n") if request.path != "/ok" else None

        async def handler(ws: WebSocket):
            message = await ws.recv()
            if message == b"fail":
                raise RuntimeError("handler failed")
            await ws.send(message.upper())

        server = await serve_websockets(handler, "127.0.0.1", 0, check_request=check, compression=True)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(InvalidStatus, match="404"):
            await ws_connect(f"ws://127.0.0.1:{port}/nope")
        with pytest.raises(InvalidStatus, match="500"):  # refused, and the server stays up
            await ws_connect(f"ws://127.0.0.1:{port}/strange")
        # websockets' client offers permessage-deflate: the emulator-side server accepts it.
        async with ws_connect(f"ws://127.0.0.1:{port}/ok") as client:
            await client.send(b"hello " * 100)
            echoed = await client.recv()
            assert client.protocol.extensions, "deflate was not negotiated"
            with pytest.raises(ConnectionClosedOK):
                await client.recv()
            normal = client.close_code
        async with ws_connect(f"ws://127.0.0.1:{port}/ok") as client:
            await client.send(b"fail")
            with pytest.raises(ConnectionClosedError):
                await client.recv()
            failed = client.close_code
        async with ws_connect(f"ws://127.0.0.1:{port}/ok") as client:
            await server.close()  # stopping closes open connections with 1001
            with pytest.raises(ConnectionClosedOK):
                await client.recv()
            stopped = client.close_code
        return echoed, normal, failed, stopped

    echoed, normal, failed, stopped = run(scenario())
    assert echoed == b"HELLO " * 100
    assert (normal, failed, stopped) == (1000, 1011, 1001)


async def _accept_upgrade(reader, writer) -> None:
    """The server side of the opening handshake, by hand (the peer then does as the test says)."""
    request = await reader.readuntil(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in request.split(b"\r\n")[1:] if b": " in line)
    key = {k.lower(): v for k, v in headers.items()}[b"sec-websocket-key"]
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n"
    )


async def _frames_from(reader, seconds: float) -> list[Frame]:
    """The frames a client sent within ``seconds``, read by websockets' own parser."""
    parser = ServerProtocol(state=State.OPEN, max_size=None)
    frames: list[Frame] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            break
        if not data:
            break
        parser.receive_data(data)
        frames += [e for e in parser.events_received() if isinstance(e, Frame)]
    return frames


def test_the_client_pings_to_keep_the_connection_alive() -> None:
    async def scenario():
        seen: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()

        async def server(reader, writer):
            await _accept_upgrade(reader, writer)
            seen.set_result(await _frames_from(reader, 0.5))
            writer.close()

        listener = await asyncio.start_server(server, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        ws = await connect_websocket(f"ws://127.0.0.1:{port}/", ping_interval_s=0.1)
        frames = await seen
        ws.abort()
        listener.close()
        return frames

    frames = run(scenario())
    assert 3 <= sum(f.opcode is Opcode.PING for f in frames) <= 6
    assert all(len(f.data) == 4 for f in frames)


async def send_to_a_peer_that_stops_reading(count: int, size: int, *, server_ssl=None):
    """Messages to a peer that reads nothing for a while, then everything: whether the sender
    was held back meanwhile (waiting, over the high-water mark), what the transport held unsent
    then, the frames the peer got, and the client's transport type."""
    reading = asyncio.Event()
    got: asyncio.Future[list[Frame]] = asyncio.get_running_loop().create_future()

    async def server(reader, writer):
        await _accept_upgrade(reader, writer)
        await reading.wait()
        got.set_result(await _frames_from(reader, 2.0))
        writer.close()

    listener = await asyncio.start_server(server, "127.0.0.1", 0, ssl=server_ssl)
    port = listener.sockets[0].getsockname()[1]
    ws = await connect_websocket(f"{'wss' if server_ssl else 'ws'}://127.0.0.1:{port}/")

    async def send_all():
        for i in range(count):
            await ws.send(i.to_bytes(4, "big") + bytes(size))

    sender = asyncio.create_task(send_all())
    await asyncio.sleep(0.3)
    held = not sender.done() and ws.must_drain  # the socket's buffers filled: the sender waits
    assert ws.transport is not None
    unsent = ws.transport.get_write_buffer_size()
    reading.set()
    await sender
    frames = await got
    ws.abort()
    listener.close()
    return held, unsent, frames, type(ws.transport)


def test_a_peer_that_stops_reading_holds_sends_back_and_loses_nothing() -> None:
    count, size = 400, 16384
    held, _, frames, _ = run(send_to_a_peer_that_stops_reading(count, size))
    assert held
    assert [int.from_bytes(f.data[:4], "big") for f in frames] == list(range(count))
    assert all(f.opcode is Opcode.BINARY and len(f.data) == size + 4 for f in frames)


def test_a_close_timeout_drops_a_peer_that_never_answers() -> None:
    async def scenario():
        hold = asyncio.Event()

        async def silent(reader, writer):  # accepts the upgrade, then ignores everything
            await _accept_upgrade(reader, writer)
            await hold.wait()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ws = await connect_websocket(f"ws://127.0.0.1:{port}/", close_timeout_s=0.2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(ws.close(), 5)
        took = loop.time() - start
        hold.set()
        server.close()
        return took, ws.state

    took, state = run(scenario())
    assert state is State.CLOSED
    assert 0.15 < took < 2.0


async def _connect_proxy(seen: list[bytes], reader, writer) -> None:
    """A minimal HTTP CONNECT proxy: reads the CONNECT, dials the target, relays both ways."""
    head = await reader.readuntil(b"\r\n\r\n")
    seen.append(head.split(b"\r\n", 1)[0])
    host, _, port = head.split()[1].decode().rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

    async def pipe(src, dst):
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_a_session_goes_through_the_http_proxy_the_environment_names(monkeypatch) -> None:
    seen: list[bytes] = []

    async def scenario():
        proxy = await asyncio.start_server(lambda r, w: _connect_proxy(seen, r, w), "127.0.0.1", 0)
        proxy_port = proxy.sockets[0].getsockname()[1]
        monkeypatch.setenv("ws_proxy", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        async with LiveEmulator(speed=50.0) as emu, geminilive.connect(endpoint=emu.url) as session:
            await session.send_text("hello")
            async for event in session:
                if isinstance(event, ev.TurnComplete):
                    break
            port = emu.port
        proxy.close()
        return port

    port = run(scenario())
    assert seen == [f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()]


def test_a_proxy_that_refuses_is_a_clear_error(monkeypatch) -> None:
    async def scenario():
        async def refuse(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
        monkeypatch.setenv("ws_proxy", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with pytest.raises(geminilive.errors.SessionError, match="403"):
            await geminilive.connect(endpoint="ws://127.0.0.1:9/ws/x")
        proxy.close()

    run(scenario())


class _Sink:
    """Just enough of a transport for feeding a WebSocket by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _repeated(size: int, byte: int) -> bytes:
    return bytes([byte]) * size


messages_strategy = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.builds(_repeated, st.integers(100, 70000), st.integers(0, 255)),  # 16- and 64-bit lengths
    ),
    min_size=1,
    max_size=10,
)


@pytest.mark.parametrize("side", ["client", "server"])
@given(messages=messages_strategy, data=st.data())
def test_fragmentation_and_tcp_chunking_never_change_the_messages(side, messages, data) -> None:
    """A handshake, then each message as one frame or cut into fragments, pings between, a
    close at the end; the byte stream cut into random reads (with the client's HTTP head and
    the first frames in one read too). The
    messages come out whole, in order, as bytes; every ping is answered and the close too."""

    async def scenario():
        sink = _Sink()
        if side == "client":
            ws = WebSocket(ClientProtocol(parse_uri("ws://x/"), max_size=None))
            ws.connection_made(sink)  # type: ignore[arg-type]
            request = ws.protocol.connect()
            ws.protocol.send_request(request)
            ws._write_out()
            peer: ClientProtocol | ServerProtocol = ServerProtocol(max_size=None)
            peer.receive_data(sink.written.pop())
            peer.send_response(peer.accept(peer.events_received()[0]))
        else:
            ws = WebSocket(ServerProtocol(max_size=None))
            ws._server = SimpleNamespace(
                check=lambda p, r: None, start_handler=lambda ws: None, accepted=lambda ws: None
            )
            ws.connection_made(sink)  # type: ignore[arg-type]
            peer = ClientProtocol(parse_uri("ws://x/"), max_size=None)
            peer.send_request(peer.connect())
            request = b"".join(peer.data_to_send())
            cut = data.draw(st.integers(0, len(request)))
            ws.data_received(request[:cut])
            ws.data_received(request[cut:])
            peer.receive_data(sink.written.pop())  # the 101: a client sends frames only after it
            assert peer.events_received() and peer.state is State.OPEN
        pings = 0
        for message in messages:
            cuts = sorted(data.draw(st.lists(st.integers(0, len(message)), max_size=3)))
            pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
            for i, piece in enumerate(pieces):
                opcode = Opcode.BINARY if i == 0 else Opcode.CONT
                peer.send_frame(Frame(opcode, piece, fin=i == len(pieces) - 1))
                if data.draw(st.booleans()):
                    peer.send_ping(b"p")
                    pings += 1
        peer.send_close(1000, "done")
        stream = b"".join(peer.data_to_send())
        reads = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
        for a, b in zip([0, *reads], [*reads, len(stream)], strict=True):
            ws.data_received(stream[a:b])
        out = [await ws.recv() for _ in messages]
        peer.receive_data(b"".join(sink.written))
        answers = [e.opcode for e in peer.events_received() if isinstance(e, Frame)]
        return out, answers, pings, ws.state

    out, answers, pings, state = run(scenario())
    assert out == messages
    assert all(type(m) is bytes for m in out)
    assert answers == [Opcode.PONG] * pings + [Opcode.CLOSE]
    assert state is not State.OPEN


def test_a_message_over_the_limit_fails_the_connection_with_1009() -> None:
    async def scenario():
        async def handler(server_ws):
            await server_ws.send(b"small")
            await server_ws.send(b"x" * 5000)
            await server_ws.wait_closed()

        async with ws_serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_websocket(f"ws://127.0.0.1:{port}/", max_size=1000)
            first = await ws.recv()
            with pytest.raises(ConnectionClosedError) as closed:
                await ws.recv()
            return first, closed.value.sent.code

    assert run(scenario()) == (b"small", 1009)


def test_emulator_speaks_to_websockets_client_with_deflate() -> None:
    async def scenario():
        async with LiveEmulator(speed=50.0) as emu:
            async with websockets.connect(emu.url) as ws:
                await ws.send('{"setup": {"model": "models/m"}}')
                first = await ws.recv()
                return first, bool(ws.protocol.extensions)

    first, deflated = run(scenario())
    assert json.loads(first) == {"setupComplete": {}}
    assert deflated
