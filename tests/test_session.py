"""Endpoints, credentials and limits of the asyncio session."""

from __future__ import annotations

import numpy as np
import pytest

import geminilive
from audio_util import TEXT_MODEL, run
from geminilive import LiveConfig
from geminilive.emulator import LiveEmulator
from geminilive.errors import AudioFormatError, LocalProtocolError, MessageTooLargeError
from geminilive.session import Endpoint, connect


def test_developer_endpoint_keeps_the_key_in_a_header() -> None:
    e = Endpoint.developer("secret-key")
    assert e.url == (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    assert e.headers == {"x-goog-api-key": "secret-key"}
    assert "secret-key" not in e.url and "secret-key" not in repr(e)


def test_ephemeral_token_and_vertex_endpoints() -> None:
    e = Endpoint.ephemeral("auth_tokens/abc")
    assert e.url.endswith("v1alpha.GenerativeService.BidiGenerateContentConstrained")
    assert e.headers == {"Authorization": "Token auth_tokens/abc"}
    v = Endpoint.vertex_ai("ya29.token", location="europe-west4")
    assert v.url == (
        "wss://europe-west4-aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    )
    assert v.headers == {"Authorization": "Bearer ya29.token"} and v.vertex
    assert Endpoint.vertex_ai("t", location="global").url.startswith("wss://aiplatform.googleapis.com/")


def test_models_and_keys_are_filled_in(monkeypatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    session = connect()._session
    assert session.endpoint.headers == {"x-goog-api-key": "from-env"}
    assert session.setup.model == f"models/{geminilive.DEFAULT_MODEL}"
    vertex = connect(vertex_access_token="t", vertex_project="p", vertex_location="us-east1")._session
    assert vertex.setup.model == (
        f"projects/p/locations/us-east1/publishers/google/models/{geminilive.DEFAULT_VERTEX_MODEL}"
    )
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(LocalProtocolError, match="no API key"):
        connect()


def test_ephemeral_token_reaches_the_constrained_method() -> None:
    async def scenario():
        async with LiveEmulator(api_key="auth_tokens/abc") as emu:
            url = (
                emu.base_url
                + "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
            )
            async with connect(endpoint=url, token="auth_tokens/abc") as session:
                return session.protocol.state.value

    assert run(scenario()) == "open"


def test_frame_size_limit_and_audio_format_errors() -> None:
    async def scenario():
        async with LiveEmulator() as emu:
            async with connect(endpoint=emu.url, max_frame_bytes=4096) as session:
                with pytest.raises(MessageTooLargeError):
                    await session.send_audio(bytes(8000))
                with pytest.raises(AudioFormatError, match="even number"):
                    await session.send_audio(b"\x00\x01\x02")
                with pytest.raises(AudioFormatError, match="float32 or int16"):
                    await session.send_audio(np.zeros(10), 16000)
                await session.send_audio(np.zeros(960, np.float32), 48000)  # resampled to 16 kHz
                return emu.connections[0]

    connection = run(scenario())
    [message] = [m for m in connection.received if m.realtime_input]
    assert message.realtime_input.audio.mime_type == "audio/pcm;rate=16000"
    assert len(message.realtime_input.audio.data) < 640, "48 kHz in, 16 kHz out (minus the filter delay)"


def test_callback_style_run() -> None:
    seen = []

    async def scenario():
        async with LiveEmulator(speed=float("inf"), realtime_playback=False) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                await session.send_text("hi")

                async def handler(event):
                    seen.append(event)
                    if isinstance(event, geminilive.events.TurnComplete):
                        await session.close()

                await session.run(handler)

    run(scenario())  # returns: the session ended after close()
    assert "TurnComplete" in [type(e).__name__ for e in seen]
