"""Voice latency on the PulseAudio loopback: geminilive against the reference pipeline.

The reference is built the way google-genai's documentation and cookbook build it: microphone
reads of 1024 frames (sounddevice/PortAudio, blocking, in a thread), an asyncio queue to the
google-genai session, model audio into an asyncio queue, a thread writing it to the output
stream, and on ``interrupted`` the queue emptied. Both pipelines run on the same devices (a
PulseAudio null sink as the room, its monitor as the microphone, a second null sink as the
speaker), against the same emulator in echo mode over wss://, with the same speech (espeak-ng).

Measured acoustically where it can be, with recorders on both monitors (same clock):
capt->wire = speech onset at the microphone -> first speech frame at the emulator;
wire->spk = first reply audio received -> reply onset at the speaker; end->play = end of the
user's speech at the microphone -> reply onset at the speaker (includes the 600 ms the server's
VAD waits); intr->sil = ``interrupted`` received -> the speaker silent. Medians over --runs.

    python benches/bench_latency.py [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import geminilive
import geminilive.emulator.server as emulator_server
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.audio_io import MicrophoneSource, SpeakerSink
from geminilive.devices import Capture, Playback
from geminilive.emulator import LiveEmulator
from loopback import conversation_speech
from pulse import pulse_server, routed
from tls import loopback_tls

RATE = 16000
MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
THRESHOLD = 10 ** (-40 / 20)  # -40 dBFS


class Marks:
    """Times (time.monotonic) of what the pipelines and the emulator saw."""

    def __init__(self) -> None:
        self.server_loud: list[float] = []  # audio frames with speech reaching the emulator
        self.first_audio: list[float] = []  # first reply audio received, per turn
        self.interrupted: list[float] = []
        self._in_turn = False

    def audio(self) -> None:
        if not self._in_turn:
            self._in_turn = True
            self.first_audio.append(time.monotonic())

    def turn_over(self) -> None:
        self._in_turn = False


def instrument_emulator(marks: Marks) -> None:
    original = emulator_server._Connection._audio

    async def audio(self, blob):
        pcm = np.frombuffer(blob.data, "<i2")
        if len(pcm) and np.sqrt(np.mean((pcm / 32768.0) ** 2)) > THRESHOLD:
            marks.server_loud.append(time.monotonic())
        await original(self, blob)

    emulator_server._Connection._audio = audio


class Recorder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.frames: list = []
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Recorder:
        with routed(PULSE_SOURCE=self.source):  # the device opens here
            self.capture = Capture(sample_rate_hz=RATE, period_ms=10)
            await self.capture.__aenter__()

        async def run() -> None:
            async for frame in self.capture:
                self.frames.append(frame)

        self.task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        self.task.cancel()
        self.capture.close()

    def loud_times(self) -> tuple[np.ndarray, np.ndarray]:
        """(time, loud) per 10 ms window."""
        times, loud = [], []
        for frame in self.frames:
            n = len(frame.samples)
            for i in range(0, n - 159, 160):
                window = frame.samples[i : i + 160]
                times.append(frame.timestamp - (n - i - 160) / RATE)
                loud.append(np.sqrt(np.mean(window**2)) > THRESHOLD)
        return np.array(times), np.array(loud, bool)


def onset_after(rec: Recorder, t: float) -> float | None:
    times, loud = rec.loud_times()
    hits = np.nonzero(loud & (times >= t))[0]
    return float(times[hits[0]]) if len(hits) else None


def end_before(rec: Recorder, t0: float, t1: float) -> float | None:
    """The last loud window in [t0, t1)."""
    times, loud = rec.loud_times()
    hits = np.nonzero(loud & (times >= t0) & (times < t1))[0]
    return float(times[hits[-1]]) if len(hits) else None


def silent_after(rec: Recorder, t: float, hold_s: float = 0.15) -> float | None:
    """The start of the first stretch of at least `hold_s` of silence after t."""
    times, loud = rec.loud_times()
    start = None
    for ti, li in zip(times, loud, strict=True):
        if ti < t:
            continue
        if li:
            start = None
        elif start is None:
            start = ti
        elif ti - start >= hold_s:
            return start
    return None


async def ours(url: str, context: ssl.SSLContext, marks: Marks):
    config = LiveConfig(silence_duration_ms=600)
    session = await geminilive.connect(endpoint=url, config=config, ssl=context, api_key="k").__aenter__()

    def on_event(event: ev.Event) -> None:
        if isinstance(event, ev.AudioChunk):
            marks.audio()
        elif isinstance(event, ev.Interrupted):
            marks.interrupted.append(time.monotonic())
        elif isinstance(event, ev.TurnComplete):
            marks.turn_over()

    with routed(PULSE_SINK="speaker"):
        conversation = await session.start_audio_conversation(
            source=MicrophoneSource(), sink=SpeakerSink(), on_event=on_event
        )

    async def stop() -> None:
        await conversation.stop()
        await session.close()

    return stop


def in_daemon_thread(fn, *args) -> asyncio.Future:
    """Like ``asyncio.to_thread``, on a daemon thread: PortAudio calls that block forever
    (a read on a stream the sound server stopped feeding) cannot hold up the exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def run() -> None:
        try:
            loop.call_soon_threadsafe(settle, fn(*args), None)
        except BaseException as error:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, error)

    threading.Thread(target=run, daemon=True).start()
    return future


async def reference(port: int, context: ssl.SSLContext, marks: Marks):
    """The cookbook pipeline (Get_started_LiveAPI.py), with sounddevice in place of PyAudio
    (and daemon threads in place of ``asyncio.to_thread``, which behave the same)."""
    import sounddevice as sd
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(base_url=f"https://127.0.0.1:{port}/", async_client_args={"ssl": context}),
    )
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(silence_duration_ms=600)
        ),
    )
    connection = client.aio.live.connect(model=MODEL, config=config)
    session = await connection.__aenter__()
    with routed(PULSE_SINK="speaker"):
        mic = sd.RawInputStream(samplerate=16000, channels=1, dtype="int16", blocksize=1024, latency="low")
        speaker = sd.RawOutputStream(samplerate=24000, channels=1, dtype="int16", latency="low")
    mic.start()
    speaker.start()
    out_queue: asyncio.Queue = asyncio.Queue(maxsize=5)
    audio_in_queue: asyncio.Queue = asyncio.Queue()

    busy = [0]  # PortAudio reads and writes in flight: a stream must not close under one
    busy_lock = threading.Lock()

    def tracked(fn, *args):
        with busy_lock:
            busy[0] += 1
        try:
            return fn(*args)
        finally:
            with busy_lock:
                busy[0] -= 1

    def read_block() -> bytes:
        return bytes(tracked(mic.read, 1024)[0])

    async def listen_audio() -> None:
        while True:
            data = await in_daemon_thread(read_block)
            if data:
                await out_queue.put(types.Blob(data=data, mime_type="audio/pcm"))

    async def send_realtime() -> None:
        while True:
            await session.send_realtime_input(audio=await out_queue.get())

    async def receive_audio() -> None:
        while True:
            async for response in session.receive():
                if response.data:
                    marks.audio()
                    audio_in_queue.put_nowait(response.data)
                content = response.server_content
                if content and content.interrupted:
                    marks.interrupted.append(time.monotonic())
            marks.turn_over()
            # "If you interrupt the model, it sends a turn_complete. For interruptions to work,
            # we need to stop playback. So empty out the audio queue" (the cookbook).
            while not audio_in_queue.empty():
                audio_in_queue.get_nowait()

    def write_block(data: bytes) -> None:
        tracked(speaker.write, data)

    async def play_audio() -> None:
        while True:
            await in_daemon_thread(write_block, await audio_in_queue.get())

    tasks = [asyncio.create_task(c()) for c in (listen_audio, send_realtime, receive_audio, play_audio)]

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        # abort() returns at once and wakes a blocked read or write in the worker threads
        # (stop() would wait for buffers to drain, and a read can wait forever for input).
        # The threads finish the read or write they are in (the streams still run), then
        # the streams close: closing one under a blocked read crashes PortAudio.
        for _ in range(200):
            if not busy[0]:
                break
            await asyncio.sleep(0.01)
        for stream in (mic, speaker):
            stream.abort()
            stream.close()
        await connection.__aexit__(None, None, None)

    return stop


async def one_run(kind: str, workdir: Path, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> dict:
    first, second, barge = conversation_speech(workdir)
    marks = Marks()
    instrument_emulator(marks)
    async with LiveEmulator(model="echo", speed=2.0, ssl=server_ssl) as emu:
        async with Recorder("virt.monitor") as mic_rec, Recorder("speaker.monitor") as spk_rec:
            if kind == "geminilive":
                stop = await ours(emu.url, client_ssl, marks)
            else:
                stop = await reference(emu.port, client_ssl, marks)
            mouth = Playback(source_rate_hz=24000, period_ms=20)
            await asyncio.sleep(2.0)
            t_say1 = time.monotonic()
            mouth.push(first)
            mouth.end_of_turn()
            await asyncio.sleep(len(first) / 24000 + 4.0)
            t_say2 = time.monotonic()
            mouth.push(second)
            mouth.end_of_turn()
            while len(marks.first_audio) < 2 and time.monotonic() < t_say2 + 15:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.8)
            t_barge = time.monotonic()
            mouth.push(barge)
            mouth.end_of_turn()
            await asyncio.sleep(len(barge) / 24000 + 3.0)
            mouth.close()
            await stop()
    onset1 = onset_after(mic_rec, t_say1)
    end1 = end_before(mic_rec, t_say1, t_say2)
    server1 = next((t for t in marks.server_loud if onset1 and t >= onset1 - 0.05), None)
    play1 = onset_after(spk_rec, end1) if end1 else None
    recv1 = marks.first_audio[0] if marks.first_audio else None
    intr = next((t for t in marks.interrupted if t >= t_barge), None)
    silent = silent_after(spk_rec, intr) if intr else None

    def ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) * 1000

    return {
        "capt->wire": ms(onset1, server1),
        "wire->spk": ms(recv1, play1),
        "end->play": ms(end1, play1),
        "intr->sil": ms(intr, silent),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run each")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp, pulse_server():
        workdir = Path(tmp)
        certificate = loopback_tls(workdir)
        server_ssl, client_ssl = certificate.server(), certificate.client()
        results: dict[str, list[dict]] = {"geminilive": [], "reference": []}
        for _ in range(runs):
            for kind in results:
                try:
                    results[kind].append(
                        asyncio.run(asyncio.wait_for(one_run(kind, workdir, server_ssl, client_ssl), 60))
                    )
                except TimeoutError:
                    print(f"# a {kind} run did not finish in 60 s (left out)", flush=True)
    print(
        f"# PulseAudio null sinks, emulator echo over wss; {platform.machine()}, Python "
        f"{platform.python_version()}; median of {runs} run(s), ms"
    )
    columns = ["capt->wire", "wire->spk", "end->play", "intr->sil"]
    print(f"{'pipeline':>12} " + " ".join(f"{c:>11}" for c in columns))
    for kind, rows in results.items():
        cells = []
        for c in columns:
            values = [r[c] for r in rows if r[c] is not None]
            cells.append(f"{statistics.median(values):>11.0f}" if values else f"{'-':>11}")
        print(f"{kind:>12} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # PortAudio's exit handler can wait forever on a stream the sound server left hanging.
    os._exit(code)
