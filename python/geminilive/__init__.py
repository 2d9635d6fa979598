"""geminilive: real-time voice sessions with the Gemini Live API.

A Rust core (PCM conversion, streaming resampling, a playout buffer, audio devices) under an
asyncio client of the Live WebSocket protocol, with a local emulator of the service.
"""

from __future__ import annotations

from geminilive import errors, pcm
from geminilive._native import PlayoutBuffer, PlayoutStats, Resampler

__all__ = ["PlayoutBuffer", "PlayoutStats", "Resampler", "errors", "pcm"]
__version__ = "0.1.0"
