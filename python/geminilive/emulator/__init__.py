"""A local Live API server: the offline default backend, the test harness, the fault injector.

async with LiveEmulator(model="echo") as emu:
    async with geminilive.connect(endpoint=emu.url) as session:
        ...
"""

from __future__ import annotations

from geminilive.emulator.faults import Faults
from geminilive.emulator.models import (
    Conversation,
    EchoModel,
    InputTranscript,
    Model,
    ReplyAudio,
    ReplyText,
    ReplyToolCall,
    ScriptModel,
    ScriptTurn,
    ToneModel,
    UserTurn,
)
from geminilive.emulator.profiles import PROFILES, ModelProfile
from geminilive.emulator.server import LiveEmulator

__all__ = [
    "PROFILES",
    "Conversation",
    "EchoModel",
    "Faults",
    "InputTranscript",
    "LiveEmulator",
    "Model",
    "ModelProfile",
    "ReplyAudio",
    "ReplyText",
    "ReplyToolCall",
    "ScriptModel",
    "ScriptTurn",
    "ToneModel",
    "UserTurn",
]
