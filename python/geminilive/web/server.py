"""``geminilive web``: one page and its relay on one port.

    async with WebServer(lambda: geminilive.connect(...), port=8000) as web:
        print(web.url)
        await web.serve_forever()

``GET /`` is the page, ``/static/...`` its modules (plain JS, shipped in the package: no build
step), ``/healthz`` a liveness check, and ``/relay`` the WebSocket each tab talks through
(:mod:`geminilive.web.wire`). The API key stays here: the page reaches the model only through
the relay, and the relay takes connections only from its own page (the ``Origin`` must be
this server's, and the ``Host`` one of its names), so another site open in the same browser
cannot use it, not even by rebinding its name to this machine.

One conversation per tab, ``max_tabs`` at once (one by default: two tabs would hear each
other); a tab over the limit is told why. A tab's conversation outlives a dropped connection
for ``reattach_grace_s`` (the page reconnects with its tab id and carries on in the same
Live session); a tab that sends no audio is warned after ``no_audio_warning_s`` and its Live
session closed after ``idle_timeout_s``.

With ``tokens`` (a :class:`~geminilive.web.tokens.TokenMinter`: ``geminilive web --direct``)
the relay carries no audio: it hands each page a one-use ephemeral token locked to the
server's setup, and the page talks to the Live API itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources

import msgspec
import websockets
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from geminilive._websocket import BinaryMessage, WebSocket, WebSocketServer, serve_websockets
from geminilive.errors import GeminiLiveError
from geminilive.session import Session
from geminilive.watchdog import WatchdogConfig
from geminilive.web import wire
from geminilive.web.relay import Tab
from geminilive.web.tokens import TokenError, TokenMinter

__all__ = ["WebServer"]

_log = logging.getLogger("geminilive.web")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARD_HOSTS = {"", "0.0.0.0", "::"}
MAX_MALFORMED = 50  # malformed messages from one connection before it is closed
STALLED_S = 10.0  # a connection whose page reads nothing this long is dropped
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]


def content_security_policy(live_url: str | None) -> str:
    """Only this server's own scripts and connections; in direct mode, the Live API's too."""
    connect = "'self'"
    if live_url is not None:
        parts = urllib.parse.urlsplit(live_url)
        connect += f" {parts.scheme}://{parts.netloc}"
    return f"default-src 'self'; connect-src {connect}; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once: URL path -> (body, content type)."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("geminilive.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[f"/static/{entry.name}"] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    files["/"] = files["/static/index.html"]
    return files


def _one(headers: Headers, name: str) -> str | None:
    """A header given once (twice is ambiguous: as if not given)."""
    values = headers.get_all(name)
    return values[0] if len(values) == 1 else None


class WebServer:
    """The page and the relay on ``host:port`` (loopback by default: the relay speaks with
    your API key). ``backend`` is what the page shows it talks to."""

    def __init__(
        self,
        open_session: Callable[[], AbstractAsyncContextManager[Session]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        backend: str = "emulator",
        max_tabs: int = 1,
        hello_timeout_s: float = 10.0,
        reattach_grace_s: float = 30.0,
        no_audio_warning_s: float = 10.0,
        idle_timeout_s: float = 600.0,
        watchdog: WatchdogConfig | None = WatchdogConfig(),  # noqa: B008 (frozen: one is fine)
        tokens: TokenMinter | None = None,
    ) -> None:
        if max_tabs < 1:
            raise ValueError(f"max_tabs must be at least 1, got {max_tabs}")
        self.open_session = open_session
        self.host, self._port = host, port
        self.backend = backend
        self.max_tabs = max_tabs
        self.hello_timeout_s = hello_timeout_s
        self.reattach_grace_s = reattach_grace_s
        self.no_audio_warning_s = no_audio_warning_s
        self.idle_timeout_s = idle_timeout_s
        self.watchdog = watchdog
        self.tokens = tokens
        self.tokens_minted = 0
        self._policy = content_security_policy(tokens.live_url if tokens is not None else None)
        self.tabs: dict[str, Tab] = {}
        self.ended: list[tuple[str, str]] = []  # (tab id, why its conversation ended)
        self.refused = 0
        self.malformed = 0
        self._files = _static_files()
        self._server: WebSocketServer | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> WebServer:
        self._server = await serve_websockets(
            self._relay,
            self.host,
            self._port,
            check_request=self._check_request,
            max_size=wire.MAX_AUDIO_MESSAGE_BYTES,
            binary_apart=True,
        )
        self._housekeeping = asyncio.create_task(self._keep_house())
        return self

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        for tab in list(self.tabs.values()):
            await self._end(tab, "the server is stopping", 1001)
        if self._closing:
            await asyncio.wait(list(self._closing))
        if self._server is not None:
            await self._server.close(1001, "the server is stopping")

    async def __aenter__(self) -> WebServer:
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
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def connections(self) -> int:
        """Open WebSocket connections (relays and those still closing)."""
        return len(self._server.connections) if self._server is not None else 0

    # --- HTTP ----------------------------------------------------------------------------------

    def _host_allowed(self, host: str | None) -> bool:
        """Whether a request's ``Host`` names this server: a page of another site whose name
        was rebound to this machine's address (DNS rebinding) names its own."""
        if host is None:
            return False
        if self.host in WILDCARD_HOSTS:
            return True  # serving every interface: whatever name reaches it (the CLI warns)
        name = urllib.parse.urlsplit(f"//{host}").hostname
        return name is not None and (name in LOOPBACK_NAMES or name == self.host.strip("[]"))

    def _check_request(self, protocol: ServerProtocol, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        host = _one(request.headers, "Host")
        if not self._host_allowed(host):
            self.refused += 1
            return protocol.reject(http.HTTPStatus.FORBIDDEN, "not this server's name\n")
        if path == "/relay":
            origin = _one(request.headers, "Origin")
            if origin is None or origin != f"http://{host}":
                self.refused += 1
                return protocol.reject(http.HTTPStatus.FORBIDDEN, "the relay serves its own page only\n")
            return None  # the WebSocket handshake goes on
        if path == "/healthz":
            return self._response(http.HTTPStatus.OK, b"ok\n", "text/plain")
        if path == "/config.json":
            mode = {"mode": "direct" if self.tokens is not None else "relay", "backend": self.backend}
            return self._response(http.HTTPStatus.OK, json.dumps(mode).encode(), "application/json")
        file = self._files.get(path)
        if file is None:
            return self._response(http.HTTPStatus.NOT_FOUND, f"no page at {path}\n".encode(), "text/plain")
        return self._response(http.HTTPStatus.OK, *file)

    def _response(self, status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                ("Content-Security-Policy", self._policy),
                *SECURITY_HEADERS,
            ]
        )
        return Response(status.value, status.phrase, headers, body)

    # --- the relay -----------------------------------------------------------------------------

    async def _relay(self, ws: WebSocket) -> None:
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                hello = wire.decode_page_message(await ws.recv())
        except TimeoutError:
            await ws.close(1008, f"no hello within {self.hello_timeout_s:g} s")
            return
        except msgspec.MsgspecError as exc:
            self.malformed += 1
            await ws.close(1008, f"the first message must be a hello: {exc}"[:120])
            return
        except websockets.exceptions.ConnectionClosed:
            return
        if isinstance(hello, wire.TokenRequest):
            await self._hand_out_token(ws)
            return
        if not isinstance(hello, wire.Hello) or self.tokens is not None:
            why = "this server hands out tokens (direct mode)" if self.tokens else "the first message must be a hello"
            await ws.close(1008, why)
            return
        tab = await self._tab_for(ws, hello)
        if tab is None:
            return
        try:
            await self._pass_on(ws, tab)
        finally:
            tab.detach(ws)
        said = ws.protocol.close_rcvd
        if said is not None and said.code == 1000 and tab.ws is None:  # the page's Stop: end it now
            await self._end(tab, "stopped on the page", None)

    async def _hand_out_token(self, ws: WebSocket) -> None:
        """Direct mode: a one-use token locked to this server's setup, for the page to reach
        the Live API with (the key stays here)."""
        if self.tokens is None:
            await ws.close(1008, "this server relays the audio: there is no direct mode here")
            return
        try:
            minted = await self.tokens.mint()
        except TokenError as exc:
            _log.warning("%s", exc)
            await ws.send(wire.encode(wire.Notice(level="error", message=str(exc))), text=True)
            await ws.close(1011, str(exc)[:120])
            return
        self.tokens_minted += 1
        token = wire.Token(token=minted["token"], url=minted["url"], setup=minted["setup"], backend=self.backend,
                           expire_time=minted["expireTime"])  # fmt: skip
        await ws.send(wire.encode(token), text=True)
        await ws.close(1000, "token handed out")

    async def _tab_for(self, ws: WebSocket, hello: wire.Hello) -> Tab | None:
        """The tab's conversation: its own again (a reconnect), or a new one if there is room."""
        tab = self.tabs.get(hello.client)
        if tab is not None and tab.sample_rate_hz == hello.sample_rate:
            tab.attach(ws, reattached=True)
            return tab
        if tab is not None:  # the same tab with another audio rate (a new device): start over
            await self._end(tab, "the tab's audio rate changed", None)
        if len(self.tabs) >= self.max_tabs:
            self.refused += 1
            message = (
                "another tab is already talking to the model: close it first"
                if self.max_tabs == 1
                else f"{self.max_tabs} tabs are already talking to the model (--max-tabs)"
            )
            await ws.send(wire.encode(wire.Notice(level="error", message=message)), text=True)
            await ws.close(wire.CLOSE_BUSY, message)
            return None
        tab = Tab(hello.client, hello.sample_rate, self.open_session, backend=self.backend, watchdog=self.watchdog)
        self.tabs[hello.client] = tab
        try:
            await tab.open()
        except (GeminiLiveError, OSError) as exc:
            message = f"could not open the Live session: {exc}"
            _log.warning("%s", message)
            self.tabs.pop(hello.client, None)
            self.ended.append((tab.client, message))
            await tab.close(message)
            await ws.send(wire.encode(wire.Notice(level="error", message=message)), text=True)
            await ws.close(1011, message[:120])
            return None
        tab.attach(ws, reattached=False)
        self._watch_conversation(tab)
        return tab

    async def _pass_on(self, ws: WebSocket, tab: Tab) -> None:
        """The page's messages to the tab's conversation, until the connection closes."""
        malformed = 0
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for message in ws:
                if isinstance(message, BinaryMessage):
                    tab.source.feed(message)
                    tab.warned_no_audio = False
                    continue
                try:
                    decoded = wire.decode_page_message(message)
                except msgspec.MsgspecError as exc:
                    malformed += 1
                    self.malformed += 1
                    if malformed >= MAX_MALFORMED:
                        await ws.close(1008, f"{malformed} malformed messages")
                        return
                    tab.send_message(wire.Notice(level="warning", message=f"ignored a malformed message: {exc}"))
                    continue
                if isinstance(decoded, wire.TypedText):
                    try:
                        await tab.type_text(decoded.text)
                    except GeminiLiveError as exc:  # the session is ending: its watcher says why
                        tab.send_message(wire.Notice(level="warning", message=f"not sent: {exc}"))
                else:
                    tab.send_message(wire.Notice(level="warning", message="ignored a second hello"))

    def _watch_conversation(self, tab: Tab) -> None:
        async def watch() -> None:
            reason = await tab.wait()
            await self._end(tab, reason, 1011 if "failed" in reason else 1000)

        task = asyncio.create_task(watch())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _end(self, tab: Tab, reason: str, code: int | None) -> None:
        """End a tab's conversation; tell its page why (``code``: close its connection too)."""
        if tab.ended.is_set():
            return
        if self.tabs.get(tab.client) is tab:
            del self.tabs[tab.client]
            self.ended.append((tab.client, reason))
        ws = tab.ws
        if ws is not None and code is not None:
            tab.send_message(wire.Notice(level="error" if code != 1000 else "info", message=reason))
            ws.start_close(code, reason[:120])
        await tab.close(reason)

    async def _keep_house(self) -> None:
        """Once a second: end conversations of tabs gone too long or silent too long, warn a
        tab whose microphone sends nothing, drop connections that have stopped reading."""
        while True:
            await asyncio.sleep(min(1.0, self.reattach_grace_s / 4, self.no_audio_warning_s / 4))
            now = time.monotonic()
            for tab in list(self.tabs.values()):
                self._drop_if_stalled(tab, now)
                last_audio = tab.source.last_audio_at or tab.opened_at
                if tab.ws is None and tab.detached_at is not None and now - tab.detached_at > self.reattach_grace_s:
                    await self._end(tab, f"the tab was gone for {self.reattach_grace_s:g} s", None)
                elif tab.ws is not None and now - last_audio > self.idle_timeout_s:
                    reason = f"no microphone audio for {self.idle_timeout_s:g} s: the conversation was closed"
                    await self._end(tab, reason, wire.CLOSE_IDLE)
                elif tab.ws is not None and now - last_audio > self.no_audio_warning_s and not tab.warned_no_audio:
                    tab.warned_no_audio = True
                    tab.send_message(
                        wire.Notice(
                            level="warning",
                            message=f"no microphone audio for {self.no_audio_warning_s:g} s: "
                            "is the microphone allowed for this page (the icon in the address bar)?",
                        )
                    )

    @staticmethod
    def _drop_if_stalled(tab: Tab, now: float) -> None:
        """A page that has read nothing for ``STALLED_S`` (a frozen tab, a dead link that TCP
        has not noticed yet) loses its connection, not the server its memory; it reconnects."""
        ws = tab.ws
        if ws is None or not ws.must_drain:
            tab.stalled_since = None
        elif tab.stalled_since is None:
            tab.stalled_since = now
        elif now - tab.stalled_since > STALLED_S:
            _log.warning("tab %s stopped reading for %g s: dropping its connection", tab.client, STALLED_S)
            ws.abort()
