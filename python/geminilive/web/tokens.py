"""Ephemeral tokens for the page's direct mode (``geminilive web --direct``): the server mints a
token with its API key (``POST {rest}/v1alpha/auth_tokens``, as google-genai's
``auth_tokens.create`` does), one use, locked to the server's setup (the page cannot change the
model, the voice or the instructions), and the page connects to the Live API itself with it.
The key never leaves the server; the audio does not pass through it.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import msgspec

from geminilive.emulator.tokens import rfc3339
from geminilive.errors import GeminiLiveError
from geminilive.messages import SessionResumptionConfig, Setup

__all__ = ["SERVICE_REST_URL", "SERVICE_WS_URL", "TokenError", "TokenMinter"]

SERVICE_REST_URL = "https://generativelanguage.googleapis.com"
SERVICE_WS_URL = "wss://generativelanguage.googleapis.com"
CONSTRAINED_PATH = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"


class TokenError(GeminiLiveError):
    """The token service refused, or could not be reached."""


class TokenMinter:
    """Mints one-use tokens for ``setup`` (the page sends it as is; the token locks it).
    ``rest_url``: the token service (the emulator's ``tokens_url`` offline); ``live_url``:
    where the page connects (``ws(s)://host[:port]``)."""

    def __init__(
        self,
        api_key: str | None,
        setup: Setup,
        *,
        rest_url: str = SERVICE_REST_URL,
        live_url: str = SERVICE_WS_URL,
        expire_s: float = 30 * 60,
        new_session_expire_s: float = 60,
    ) -> None:
        # Resumption on, so that the page can move across goAway and dropped connections
        # (resuming uses no use of the token).
        resumption = setup.session_resumption or SessionResumptionConfig()
        self.setup = msgspec.structs.replace(setup, session_resumption=resumption)
        self.api_key = api_key
        self.rest_url = rest_url.rstrip("/")
        self.live_url = live_url.rstrip("/") + CONSTRAINED_PATH
        self.expire_s = expire_s
        self.new_session_expire_s = new_session_expire_s

    def _request(self) -> bytes:
        now = time.time()
        return json.dumps({
            "uses": 1,
            "expireTime": rfc3339(now + self.expire_s),
            "newSessionExpireTime": rfc3339(now + self.new_session_expire_s),
            "bidiGenerateContentSetup": msgspec.to_builtins(self.setup),
        }).encode()  # fmt: skip

    def _post(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.rest_url}/v1alpha/auth_tokens",
            data=self._request(),
            headers={"Content-Type": "application/json", **({"x-goog-api-key": self.api_key} if self.api_key else {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise TokenError(f"the token service refused ({error.code}): {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise TokenError(f"could not reach the token service: {error}") from None
        if not isinstance(answer, dict) or not str(answer.get("name", "")).startswith("auth_tokens/"):
            raise TokenError(f"the token service answered without a token: {str(answer)[:200]}")
        return answer

    async def mint(self) -> dict[str, Any]:
        """What the page needs: the token, where to connect, and the setup to send."""
        answer = await asyncio.to_thread(self._post)
        return {
            "token": answer["name"],
            "url": self.live_url,
            "setup": msgspec.to_builtins(self.setup),
            "expireTime": answer.get("expireTime"),
        }
