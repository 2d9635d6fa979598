"""Reply models for the emulator: what the "model" says for a user turn.

A model is any object with a ``reply(turn, conversation)`` method returning an iterator of
reply items. A generator can ``yield ReplyToolCall(...)`` and receives the client's function
responses back from the ``yield`` (a list of ``FunctionResponse``), so scripts can use the
results. Built in: :class:`EchoModel` (speaks the user's own audio back, so round trips can be
measured), :class:`ToneModel` and :class:`ScriptModel`.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from geminilive._native import Resampler, f32_to_s16le, s16le_to_f32
from geminilive.messages import FunctionCall, FunctionResponse, Setup

__all__ = [
    "Conversation",
    "EchoModel",
    "InputTranscript",
    "Model",
    "ReplyAudio",
    "ReplyItem",
    "ReplyText",
    "ReplyToolCall",
    "ScriptModel",
    "ScriptTurn",
    "ToneModel",
    "UserTurn",
    "load_model",
    "read_wav_24k",
    "tone_pcm",
]

OUTPUT_RATE_HZ = 24000
INPUT_RATE_HZ = 16000


class UserTurn(msgspec.Struct, kw_only=True):
    """A finished user turn: 16 kHz 16-bit PCM heard (may be empty) and/or text."""

    audio: bytes = b""
    text: str | None = None
    index: int = 0
    audio_s: float = 0.0


class ReplyAudio(msgspec.Struct, kw_only=True):
    """24 kHz 16-bit mono PCM to speak, with the words it says (for output transcription)."""

    pcm: bytes
    transcript: str | None = None


class ReplyText(msgspec.Struct):
    """Text output (TEXT modality)."""

    text: str


class InputTranscript(msgspec.Struct):
    """What the user said, for input transcription."""

    text: str


class ReplyToolCall(msgspec.Struct):
    """Ask the client to run functions; ids are assigned by the server when missing."""

    calls: list[FunctionCall]


ReplyItem = ReplyAudio | ReplyText | InputTranscript | ReplyToolCall


class Conversation(msgspec.Struct, kw_only=True):
    """Server-side session state; it survives reconnects through resumption handles."""

    setup: Setup
    turns: list[UserTurn] = msgspec.field(default_factory=list)
    replies: int = 0
    state: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def text_output(self) -> bool:
        config = self.setup.generation_config
        return bool(config and config.response_modalities and config.response_modalities[0] == "TEXT")


class Model(Protocol):
    name: str

    def reply(
        self, turn: UserTurn, conversation: Conversation
    ) -> Iterator[ReplyItem] | Generator[ReplyItem, Any, None]:
        """The reply to ``turn``."""
        ...


def tone_pcm(frequency_hz: float, duration_s: float, *, amplitude: float = 0.3, rate: int = OUTPUT_RATE_HZ) -> bytes:
    """A sine tone with 5 ms fades, as 16-bit PCM."""
    n = int(rate * duration_s)
    t = np.arange(n) / rate
    x = amplitude * np.sin(2 * math.pi * frequency_hz * t)
    fade = min(n // 2, int(rate * 0.005))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[n - fade :] *= ramp[::-1]
    return f32_to_s16le(x.astype(np.float32))


def read_wav_24k(path: str | Path) -> bytes:
    """A 16-bit WAV file as 24 kHz mono PCM."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        frames = w.readframes(w.getnframes())
    samples = s16le_to_f32(frames)
    if channels > 1:
        from geminilive.pcm import to_mono

        samples = to_mono(samples, channels)
    if rate != OUTPUT_RATE_HZ:
        r = Resampler(rate, OUTPUT_RATE_HZ)
        samples = np.concatenate([r.process(samples), r.flush()])
    return f32_to_s16le(samples)


class EchoModel:
    """Speaks the user's turn back at 24 kHz; a text turn is answered with its own text
    (TEXT modality) or a tone as long as the text takes to say."""

    name = "echo"

    def reply(self, turn: UserTurn, conversation: Conversation) -> Iterator[ReplyItem]:
        if turn.audio:
            r = Resampler(INPUT_RATE_HZ, OUTPUT_RATE_HZ)
            heard = s16le_to_f32(turn.audio)
            yield ReplyAudio(pcm=f32_to_s16le(np.concatenate([r.process(heard), r.flush()])))
        elif turn.text:
            if conversation.text_output:
                yield ReplyText(turn.text)
            else:
                yield ReplyAudio(pcm=tone_pcm(440.0, 0.06 * max(len(turn.text), 5)), transcript=turn.text)


class ToneModel:
    """Answers every turn with a tone."""

    name = "tone"

    def __init__(self, frequency_hz: float = 440.0, duration_s: float = 1.0, transcript: str = "beep") -> None:
        self.frequency_hz, self.duration_s, self.transcript = frequency_hz, duration_s, transcript

    def reply(self, turn: UserTurn, conversation: Conversation) -> Iterator[ReplyItem]:
        if conversation.text_output:
            yield ReplyText(self.transcript)
        else:
            yield ReplyAudio(pcm=tone_pcm(self.frequency_hz, self.duration_s), transcript=self.transcript)


class ScriptTurn(msgspec.Struct, kw_only=True):
    """One scripted reply. Audio from ``audio`` (24 kHz PCM bytes), ``wav`` (a file) or
    ``tone_hz``/``tone_s``; ``tool_calls`` are asked for first, and the reply follows their
    responses (BLOCKING) or goes on at once (NON_BLOCKING)."""

    text: str | None = None
    audio: bytes | None = None
    wav: str | None = None
    tone_hz: float = 440.0
    tone_s: float | None = None
    input_transcript: str | None = None
    tool_calls: list[FunctionCall] | None = None

    def pcm(self) -> bytes | None:
        if self.audio is not None:
            return self.audio
        if self.wav is not None:
            return read_wav_24k(self.wav)
        if self.tone_s is not None:
            return tone_pcm(self.tone_hz, self.tone_s)
        return None


class ScriptModel:
    """Plays scripted turns in order, one per user turn (cycling when it runs out)."""

    name = "script"

    def __init__(self, turns: Sequence[ScriptTurn]) -> None:
        if not turns:
            raise ValueError("a script needs at least one turn")
        self.turns = list(turns)

    def reply(self, turn: UserTurn, conversation: Conversation) -> Generator[ReplyItem, Any, None]:
        script = self.turns[conversation.replies % len(self.turns)]
        if script.input_transcript:
            yield InputTranscript(script.input_transcript)
        if script.tool_calls:
            responses: list[FunctionResponse] | None = yield ReplyToolCall(list(script.tool_calls))
            conversation.state.setdefault("tool_responses", []).append(responses)
        pcm = script.pcm()
        if conversation.text_output:
            if script.text:
                yield ReplyText(script.text)
        elif pcm is not None:
            yield ReplyAudio(pcm=pcm, transcript=script.text)
        elif script.text:
            yield ReplyAudio(pcm=tone_pcm(script.tone_hz, 0.06 * max(len(script.text), 5)), transcript=script.text)


def load_model(spec: str | Model) -> Model:
    """A model from a name (``echo``, ``tone``) or a model object."""
    if not isinstance(spec, str):
        return spec
    if spec == "echo":
        return EchoModel()
    if spec == "tone":
        return ToneModel()
    raise ValueError(f"unknown model {spec!r}: use 'echo', 'tone', or pass a model object")
