"""geminilive: real-time voice sessions with the Gemini Live API.

A Rust core (PCM conversion, streaming resampling, a lock-free playout buffer, voice activity
detection, echo cancellation) under an asyncio client of the Live WebSocket protocol, with a local emulator of
the service (:mod:`geminilive.emulator`) for offline development and tests.
"""

from __future__ import annotations

from geminilive import audio_io, devices, errors, events, messages, pcm
from geminilive._native import (
    EchoCanceller,
    InputChunker,
    PlayoutBuffer,
    PlayoutStats,
    Resampler,
    VoiceActivityDetector,
    __version__,
)
from geminilive.config import DEFAULT_MODEL, DEFAULT_VERTEX_MODEL, LiveConfig
from geminilive.protocol import LiveProtocol
from geminilive.session import Endpoint, ReconnectPolicy, Session, SessionStats, connect

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_VERTEX_MODEL",
    "EchoCanceller",
    "Endpoint",
    "InputChunker",
    "LiveConfig",
    "LiveProtocol",
    "PlayoutBuffer",
    "PlayoutStats",
    "ReconnectPolicy",
    "Resampler",
    "Session",
    "SessionStats",
    "VoiceActivityDetector",
    "__version__",
    "audio_io",
    "connect",
    "devices",
    "errors",
    "events",
    "messages",
    "pcm",
]
