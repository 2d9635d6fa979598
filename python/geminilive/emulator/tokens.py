"""Ephemeral tokens, as the service issues and checks them (the ephemeral-tokens page and
api/live "Ephemeral authentication tokens"): ``POST /v1alpha/auth_tokens`` with the API key
mints one (``uses``, 1 by default; ``expireTime``, 30 min; ``newSessionExpireTime``, 60 s;
optionally a locked ``bidiGenerateContentSetup``), and a client of the
``BidiGenerateContentConstrained`` method presents it instead of a key. A new session uses a
use and must start before ``newSessionExpireTime``; resuming a session uses none; nothing
goes after ``expireTime``. Fields the lock sets override the client's setup.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import time
from typing import Any

import msgspec

from geminilive.messages import Setup

__all__ = ["TokenService", "TokenStore", "rfc3339"]

_log = logging.getLogger("geminilive.emulator")
MAX_REQUEST_BYTES = 256 * 1024


class _Token(msgspec.Struct, kw_only=True):
    name: str
    uses_left: int | None  # None: unlimited (uses=0)
    expires_at: float  # time.time()
    new_sessions_until: float
    locked_setup: dict[str, Any] | None = None


def _timestamp(text: str | None, default: float) -> float:
    if not text:
        return default
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


class TokenStore:
    """The tokens an emulator has minted, and the checks a connection presenting one gets."""

    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}

    def mint(self, request: dict[str, Any]) -> dict[str, Any]:
        """A token for a request body as google-genai sends it; the AuthToken answer.
        ``ValueError`` for a request the service would refuse."""
        now = time.time()
        uses = request.get("uses", 1)
        if not isinstance(uses, int) or uses < 0:
            raise ValueError("uses must be a non-negative integer")
        expires_at = _timestamp(request.get("expireTime"), now + 30 * 60)
        new_sessions_until = _timestamp(request.get("newSessionExpireTime"), now + 60)
        if not now < expires_at <= now + 20 * 3600:
            raise ValueError("expireTime must be in the future and under 20 hours away")
        lock = request.get("bidiGenerateContentSetup")
        if lock is not None and not isinstance(lock, dict):
            raise ValueError("bidiGenerateContentSetup must be an object")
        name = f"auth_tokens/{secrets.token_urlsafe(24)}"
        self._tokens[name] = _Token(name=name, uses_left=uses or None, expires_at=expires_at,
                                    new_sessions_until=new_sessions_until, locked_setup=lock)  # fmt: skip
        self._forget_expired(now)
        return {"name": name, "uses": uses, "expireTime": rfc3339(expires_at),
                "newSessionExpireTime": rfc3339(new_sessions_until)}  # fmt: skip

    def is_token(self, credential: str) -> bool:
        return credential.startswith("auth_tokens/")

    def admit(self, credential: str, setup: Setup, *, resuming: bool) -> Setup:
        """The setup to run for a connection that presented ``credential`` (with the token's
        lock applied); ``PermissionError`` with the reason when the token does not allow it."""
        now = time.time()
        token = self._tokens.get(credential)
        if token is None or now >= token.expires_at:
            raise PermissionError("The ephemeral token is invalid or has expired.")
        if not resuming:
            if now >= token.new_sessions_until:
                raise PermissionError("The ephemeral token no longer allows new sessions.")
            if token.uses_left is not None:
                if token.uses_left == 0:
                    raise PermissionError("The ephemeral token has been used up.")
                token.uses_left -= 1
        if not token.locked_setup:
            return setup
        merged = {**msgspec.to_builtins(setup), **token.locked_setup}
        return msgspec.convert(merged, Setup)

    def _forget_expired(self, now: float) -> None:
        for name in [n for n, t in self._tokens.items() if now >= t.expires_at]:
            del self._tokens[name]


class TokenService:
    """The REST side: ``POST /v1alpha/auth_tokens`` on its own port (a minimal HTTP/1.1
    responder, enough for google-genai and the web page's server), the API key checked as
    the Live endpoint checks it."""

    def __init__(self, store: TokenStore, host: str, port: int, api_key: str | None) -> None:
        self.store, self.host, self._port, self.api_key = store, host, port, api_key
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, self.host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.sockets[0].getsockname()[1]}"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, body = 500, {"error": {"code": 500, "message": "internal error"}}
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                length = int(headers.get("content-length", "0"))
                if length > MAX_REQUEST_BYTES:
                    raise ValueError("request too large")
                payload = await reader.readexactly(length)
            status, body = self._route(method, path, headers, payload)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            status, body = 400, {"error": {"code": 400, "message": f"bad request: {exc}", "status": "INVALID_ARGUMENT"}}
        data = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(status, "Error")
        with contextlib.suppress(OSError):
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)  # fmt: skip
            await writer.drain()
        writer.close()

    def _route(self, method: str, path: str, headers: dict[str, str], payload: bytes) -> tuple[int, dict]:
        if method != "POST" or path.split("?", 1)[0].rstrip("/") not in ("/v1alpha/auth_tokens", "/v1beta/auth_tokens"):
            return 404, {"error": {"code": 404, "message": f"no method {method} {path}", "status": "NOT_FOUND"}}
        offered = headers.get("x-goog-api-key", "")
        if self.api_key is not None and not secrets.compare_digest(offered, self.api_key):
            return 403, {"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}
        try:
            request = json.loads(payload or b"{}")
            if not isinstance(request, dict):
                raise ValueError("the body must be a JSON object")
            return 200, self.store.mint(request)
        except ValueError as exc:
            return 400, {"error": {"code": 400, "message": str(exc), "status": "INVALID_ARGUMENT"}}
