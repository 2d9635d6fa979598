"""A real LiveKit ``AgentSession`` with no room: its audio input and output are LiveKit's own
I/O interfaces (``voice.io.AudioInput``/``AudioOutput``, as its console mode and its own tests
plug in), fed from and recorded to memory. The output "plays" each segment at once and
reports it played, as a sink must; ``clear_buffer`` reports it interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from framework_util import until
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.voice import io


class QueuedAudioInput(io.AudioInput):
    """User audio the test puts in: the session reads it as a microphone."""

    def __init__(self) -> None:
        super().__init__(label="test-input")
        self._frames: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()

    def put(self, pcm: bytes, rate: int = 16000) -> None:
        self._frames.put_nowait(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2))

    async def __anext__(self) -> rtc.AudioFrame:
        return await self._frames.get()


class QueuedVideoInput(io.VideoInput):
    """Camera frames the test puts in: the session reads them as a participant's video."""

    def __init__(self) -> None:
        super().__init__(label="test-camera")
        self._frames: asyncio.Queue[rtc.VideoFrame] = asyncio.Queue()

    def put(self, frame: rtc.VideoFrame) -> None:
        self._frames.put_nowait(frame)

    async def __anext__(self) -> rtc.VideoFrame:
        return await self._frames.get()


class RecordingAudioOutput(io.AudioOutput):
    """What the agent said: every frame it was given, and each segment's end."""

    def __init__(self) -> None:
        super().__init__(label="test-output", capabilities=io.AudioOutputCapabilities(pause=False))
        self.frames: list[rtc.AudioFrame] = []
        self.arrived: list[float] = []
        self.cleared = 0
        self._segment_s = 0.0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._segment_s == 0.0:
            self.on_playback_started(created_at=time.time())
        self.frames.append(frame)
        self.arrived.append(time.monotonic())
        self._segment_s += frame.samples_per_channel / frame.sample_rate

    def flush(self) -> None:
        super().flush()
        played, self._segment_s = self._segment_s, 0.0
        self.on_playback_finished(playback_position=played, interrupted=False)

    def clear_buffer(self) -> None:
        self.cleared += 1
        played, self._segment_s = self._segment_s, 0.0
        self.on_playback_finished(playback_position=played, interrupted=True)

    def seconds(self) -> float:
        return sum(f.samples_per_channel / f.sample_rate for f in self.frames)


class Run:
    def __init__(
        self, session: AgentSession, mic: QueuedAudioInput, speaker: RecordingAudioOutput, camera: QueuedVideoInput
    ) -> None:
        self.session, self.mic, self.speaker, self.camera = session, mic, speaker, camera
        self.items: list = []  # conversation_item_added
        self.transcribed: list = []  # user_input_transcribed
        self.errors: list = []
        session.on("conversation_item_added", lambda e: self.items.append(e.item))
        session.on("user_input_transcribed", self.transcribed.append)
        session.on("error", self.errors.append)

    def said(self, role: str) -> list[str]:
        return [item.text_content for item in self.items if getattr(item, "role", None) == role]

    async def until(self, condition: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
        await until(condition, what, timeout_s)

    async def send_audio(self, chunks: list[bytes], *, rate: int = 16000, pace_s: float = 0.005) -> None:
        for chunk in chunks:
            self.mic.put(chunk, rate)
            await asyncio.sleep(pace_s)


@contextlib.asynccontextmanager
async def agent_session(llm: object, agent: Agent) -> AsyncIterator[Run]:
    mic, speaker, camera = QueuedAudioInput(), RecordingAudioOutput(), QueuedVideoInput()
    # No AEC warm-up: LiveKit would send the model silence in place of the user's audio
    # while the agent speaks in its first seconds (there is no echo here to cancel).
    session = AgentSession(llm=llm, aec_warmup_duration=None)
    session.input.audio = mic
    session.input.video = camera
    session.output.audio = speaker
    run = Run(session, mic, speaker, camera)
    await session.start(agent=agent, record=False)
    try:
        yield run
    finally:
        await session.aclose()
