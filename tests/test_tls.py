"""TLS in Rust (rustls), what a wss:// session runs when given no ssl context: real sockets,
the emulator and websockets' server on Python's TLS at the other end."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve as ws_serve

import geminilive
from audio_util import TEXT_MODEL, run
from fault_drill import drill, mixed_faults
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive._tls import NativeTlsTransport
from geminilive._websocket import connect_websocket
from geminilive.emulator import LiveEmulator
from geminilive.errors import SessionError
from test_websocket import _connect_proxy, send_to_a_peer_that_stops_reading
from tls import LoopbackTls, loopback_tls

FAST = {"speed": float("inf"), "realtime_playback": False}


@pytest.fixture
def trusted(tmp_path, monkeypatch) -> LoopbackTls:
    """A test CA that the system's trust store holds (as OpenSSL's variable names it)."""
    tls = loopback_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return tls


async def _text_turn(session: geminilive.Session) -> list[str]:
    await session.send_text("hello over tls")
    texts = []
    async for event in session:
        if isinstance(event, ev.TextChunk):
            texts.append(event.text)
        if isinstance(event, ev.TurnComplete):
            return texts
    raise AssertionError("the session ended")


def test_a_wss_session_runs_tls_in_rust_by_default_and_hears_what_python_tls_hears(trusted) -> None:
    async def scenario():
        async with LiveEmulator(ssl=trusted.server(), **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as native:
                native_transport = type(native._ws.transport)
                native_texts = await _text_turn(native)
            async with geminilive.connect(
                endpoint=emu.url, model=TEXT_MODEL, config=config, ssl=trusted.client()
            ) as python:
                python_transport = type(python._ws.transport)
                python_texts = await _text_turn(python)
            return native_transport, python_transport, native_texts, python_texts

    native_transport, python_transport, native_texts, python_texts = run(scenario())
    assert native_transport is NativeTlsTransport
    assert python_transport is not NativeTlsTransport
    assert native_texts and native_texts == python_texts


def test_on_a_loop_that_cannot_watch_sockets_wss_falls_back_to_python_tls(trusted) -> None:
    """Windows' Proactor loop has no add_reader: a session given no ssl context runs Python's
    ssl there (trusting the same system store), and a TLS-in-Rust server is refused clearly."""

    async def scenario():
        async with LiveEmulator(ssl=trusted.server(), **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                transport = type(session._ws.transport)
                texts = await _text_turn(session)
        with pytest.raises(ValueError, match="add_reader"):
            async with LiveEmulator(certfile=trusted.chain, keyfile=trusted.key, **FAST):
                pass
        return transport, texts

    transport, texts = run(scenario(), loop="no-fd-watch")
    assert transport is not NativeTlsTransport
    assert texts == ["hello over tls"]


def test_rust_tls_refuses_an_untrusted_certificate_a_wrong_name_and_an_empty_store(tmp_path, monkeypatch) -> None:
    served = loopback_tls(tmp_path / "served")
    other = loopback_tls(tmp_path / "other")
    empty = tmp_path / "empty.pem"
    empty.write_text("")

    async def connect(url: str) -> BaseException:
        with pytest.raises(SessionError) as failed:
            async with geminilive.connect(endpoint=url):
                pass
        return failed.value

    async def scenario():
        async with LiveEmulator(ssl=served.server(), **FAST) as emu:
            monkeypatch.delenv("SSL_CERT_DIR", raising=False)
            monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
            untrusted = await connect(emu.url)
            monkeypatch.setenv("SSL_CERT_FILE", str(served.ca))
            wrong_name = await connect(emu.url.replace("127.0.0.1", "localhost"))  # the cert names the IP
            monkeypatch.setenv("SSL_CERT_FILE", str(empty))
            monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
            no_roots = await connect(emu.url)
            return untrusted, wrong_name, no_roots, len(emu.connections)

    untrusted, wrong_name, no_roots, sessions = run(scenario())
    for failure in (untrusted, wrong_name):
        assert "certificate verify failed" in str(failure)
        assert isinstance(failure.__cause__, ssl.SSLCertVerificationError)
    assert "UnknownIssuer" in str(untrusted) and "NotValidForName" in str(wrong_name)
    assert "no trusted CA certificates" in str(no_roots) and isinstance(no_roots.__cause__, ssl.SSLError)
    assert sessions == 0, "no session got as far as the emulator"


def test_a_peer_that_stops_reading_holds_sends_back_over_tls_and_loses_nothing(trusted) -> None:
    count, size = 1000, 16384  # more than the loopback socket buffers hold
    held, unsent, frames, transport = run(send_to_a_peer_that_stops_reading(count, size, server_ssl=trusted.server()))
    assert transport is NativeTlsTransport
    assert held and unsent > 64 * 1024, (held, unsent)
    assert [int.from_bytes(f.data[:4], "big") for f in frames] == list(range(count))
    assert all(len(f.data) == size + 4 for f in frames)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=300), st.integers(1000, 300_000)), min_size=1, max_size=12))
def test_messages_of_any_size_cross_rust_tls_both_ways_whole_and_in_order(trusted, messages) -> None:
    """Large messages span many TLS records and socket writes; small ones share them."""
    sent = [m if isinstance(m, bytes) else (m % 251).to_bytes(1, "big") * m for m in messages]

    async def scenario():
        async def echo(server_ws):
            async for message in server_ws:
                await server_ws.send(message)

        async with ws_serve(echo, "127.0.0.1", 0, ssl=trusted.server(), max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await connect_websocket(f"wss://127.0.0.1:{port}/")
            for message in sent:
                ws.send_now(message, text=False)
            echoed = [await ws.recv() for _ in sent]
            await ws.close()
            return echoed, ws.close_code

    echoed, code = run(scenario())
    assert echoed == sent
    assert code == 1000


def test_a_close_from_either_side_ends_a_rust_tls_connection_cleanly(trusted) -> None:
    async def scenario():
        async def handler(server_ws):
            if await server_ws.recv() == "close please":
                await server_ws.close(4000, "as asked")
            else:
                await server_ws.wait_closed()

        async with ws_serve(handler, "127.0.0.1", 0, ssl=trusted.server()) as server:
            port = server.sockets[0].getsockname()[1]
            # A close timeout far beyond the waits below: the TCP connection must end because
            # both sides finished, not because a timer gave up on the peer.
            asked = await connect_websocket(f"wss://127.0.0.1:{port}/", close_timeout_s=60)
            asked.send_now("close please")
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asked.recv()
            await asyncio.wait_for(asked.close(), 10)  # returns once the connection is gone
            ours = await connect_websocket(f"wss://127.0.0.1:{port}/", close_timeout_s=60)
            await asyncio.wait_for(ours.close(1000, "done"), 10)
            return asked.close_code, ours.close_code, ours.state

    peer_code, our_code, state = run(scenario())
    assert (peer_code, our_code) == (4000, 1000)
    assert state is websockets.protocol.State.CLOSED


def test_a_session_over_rust_tls_goes_through_the_environments_proxy(trusted, monkeypatch) -> None:
    seen: list[bytes] = []

    async def scenario():
        proxy = await asyncio.start_server(lambda r, w: _connect_proxy(seen, r, w), "127.0.0.1", 0)
        monkeypatch.setenv("wss_proxy", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        config = LiveConfig(response_modalities=["TEXT"])
        async with LiveEmulator(ssl=trusted.server(), **FAST) as emu:
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                texts = await _text_turn(session)
                transport = type(session._ws.transport)
            port = emu.port
        proxy.close()
        return port, texts, transport

    port, texts, transport = run(scenario())
    assert seen == [f"CONNECT 127.0.0.1:{port} HTTP/1.1".encode()]
    assert texts and transport is NativeTlsTransport


@pytest.mark.parametrize(
    ("loop", "server"), [("asyncio", "python"), ("uvloop", "python"), ("uvloop", "rust"), ("no-fd-watch", "python")]
)
def test_a_conversation_over_rust_tls_through_drops_and_closes_loses_nothing(trusted, loop, server) -> None:
    """Faults cut the TCP connection or close it mid-stream; every reconnect is a fresh TLS
    handshake, and the audio the service took is exactly what was sent. The emulator serves
    Python's TLS or TLS in Rust."""
    faults = mixed_faults(8, 7, messages=(20, 90))
    tls = {"ssl": trusted.server()} if server == "python" else {"certfile": trusted.chain, "keyfile": trusted.key}
    report, _ = run(drill(chunks=800, faults=faults, server_tls=tls), loop=loop)
    assert report.identical, report
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, False), report
    assert report.reconnects >= 6 and report.resumed == report.reconnects, report


def test_the_emulator_serves_tls_in_rust_to_every_client_and_outlives_bad_handshakes(trusted, tmp_path) -> None:
    distrustful = loopback_tls(tmp_path / "other").client()  # trusts another CA only

    async def scenario():
        config = LiveConfig(response_modalities=["TEXT"])
        emulator = LiveEmulator(certfile=trusted.chain, keyfile=trusted.key, **FAST)
        async with emulator as emu:
            host, port = "127.0.0.1", emu.port
            # A client that speaks no TLS, one that leaves mid-handshake, one that does not
            # trust the certificate (it aborts the handshake with an alert).
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            garbage_answer = await reader.read()
            writer.close()
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"\x16\x03\x01\x00\xc8\x01\x00")  # the start of a ClientHello
            writer.close()
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(host, port, ssl=distrustful)
            replies = []
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as native:
                replies.append(await _text_turn(native))
            ssl_client = trusted.client()
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config, ssl=ssl_client) as py:
                replies.append(await _text_turn(py))
            async with websockets.connect(emu.url, ssl=ssl_client) as ws:  # websockets' own client
                await ws.send('{"setup": {"model": "models/m"}}')
                setup_complete = await ws.recv()
            while emu._server is not None and (emu._server.connections or emu._server._handshakes):
                await asyncio.sleep(0.01)  # every connection and handshake ends
            # A client stalled mid-handshake when the emulator stops.
            stalled, stalled_writer = await asyncio.open_connection(host, port)
            stalled_writer.write(b"\x16\x03\x01\x00\xc8\x01\x00")
            while not emu._server._handshakes:
                await asyncio.sleep(0.01)
        # Stopping dropped it at once (not after the 10 s allowed for an opening handshake).
        try:
            dropped = await asyncio.wait_for(stalled.read(), 5) == b""
        except ConnectionResetError:
            dropped = True
        stalled_writer.close()
        return garbage_answer, replies, setup_complete, dropped

    garbage_answer, replies, setup_complete, dropped = run(scenario())
    assert dropped
    assert not garbage_answer.startswith(b"HTTP"), "plain HTTP gets no answer (a TLS alert at most)"
    assert replies[0] and replies[0] == replies[1]
    assert b"setupComplete" in setup_complete
