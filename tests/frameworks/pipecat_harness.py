"""A real Pipecat pipeline around one service, driven the way Pipecat's own test utilities
(``pipecat.tests.utils``) drive one: a source and a sink ``QueuedFrameProcessor`` on either
side, a ``PipelineWorker`` run by a ``WorkerRunner``; frames go in with ``queue_frame``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence

from framework_util import until
from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import QueuedFrameProcessor
from pipecat.workers.runner import WorkerRunner


class _ArrivalQueue(asyncio.Queue):
    """A queue that notes when each item came (``QueuedFrameProcessor`` puts frames in it)."""

    async def put(self, item: Frame) -> None:
        await super().put((time.monotonic(), item))


class Run:
    """A running pipeline: what came out downstream (``down``) and upstream (``up``)."""

    def __init__(self, worker: PipelineWorker, down: _ArrivalQueue, up: _ArrivalQueue) -> None:
        self.worker = worker
        self._queues = {"down": down, "up": up}
        self.down: list[Frame] = []
        self.up: list[Frame] = []
        self._arrived: list[float] = []  # when each downstream frame reached the sink

    def _drain(self) -> None:
        for name, queue in self._queues.items():
            while not queue.empty():
                arrived, frame = queue.get_nowait()
                getattr(self, name).append(frame)
                if name == "down":
                    self._arrived.append(arrived)

    def arrival_times(self, kind: type) -> list[float]:
        """When the downstream frames of ``kind`` reached the sink (``time.monotonic()``)."""
        self._drain()
        return [t for f, t in zip(self.down, self._arrived, strict=True) if isinstance(f, kind)]

    def frames(self, kind: type | tuple[type, ...], *, direction: str = "down") -> list:
        self._drain()
        return [f for f in getattr(self, direction) if isinstance(f, kind)]

    async def until(self, condition: Callable[[], object], what: str, timeout_s: float = 20.0) -> None:
        await until(condition, what, timeout_s)

    async def send(self, frame: Frame) -> None:
        await self.worker.queue_frame(frame)

    async def send_audio(self, chunks: list[bytes], *, rate: int = 16000, pace_s: float = 0.005) -> None:
        """User audio, one frame per chunk, ``pace_s`` apart."""
        for chunk in chunks:
            await self.send(InputAudioRawFrame(audio=chunk, sample_rate=rate, num_channels=1))
            await asyncio.sleep(pace_s)


@contextlib.asynccontextmanager
async def pipeline(
    service: FrameProcessor,
    *,
    audio_out_rate: int = 24000,
    enable_metrics: bool = False,
    after: Sequence[FrameProcessor] = (),
) -> AsyncIterator[Run]:
    """``service`` then the processors ``after`` it, between a source and a sink."""
    down, up = _ArrivalQueue(), _ArrivalQueue()
    source = QueuedFrameProcessor(queue=up, queue_direction=FrameDirection.UPSTREAM)
    sink = QueuedFrameProcessor(queue=down, queue_direction=FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(
        Pipeline([source, service, *after, sink]),
        cancel_on_idle_timeout=False,
        params=PipelineParams(
            audio_in_sample_rate=16000,
            audio_out_sample_rate=audio_out_rate,
            enable_metrics=enable_metrics,
            enable_usage_metrics=enable_metrics,
        ),
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(15):
            await started.wait()
        yield Run(worker, down, up)
        await worker.queue_frame(EndFrame())
        async with asyncio.timeout(15):
            await running
    finally:
        if not running.done():
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
