"""The voice frameworks, side by side in one run: the same Pipecat pipeline with Pipecat's own
``GeminiLiveLLMService`` (google-genai over wss) and with geminilive's ``GeminiLiveService``,
and the same LiveKit ``AgentSession`` with LiveKit's Google ``RealtimeModel`` (google-genai
too) and with geminilive's, against the same emulator.

1. **User audio lost across faults**: 20 ms numbered chunks streamed at real-time pace while
   the connection takes, in turn, a 1011 close, a silent TCP drop and a goAway (then the 1011
   that follows it), ``--faults`` in all, ``--spacing-s`` apart (Pipecat's service gives up
   after 3 failures within 10 s of each other, so the default spacing lets it recover from
   every one). The emulator records every audio byte each session consumed; the chunk numbers
   say what was lost.
2. **End of user speech to the first bot audio frame** out of the service: the time the last
   loud chunk of a turn went in to the first ``TTSAudioRawFrame`` of the reply at the sink
   (the emulator's VAD and reply are the same for both), median and p95.
3. **CPU per session-second** with 1, 10 and 50 pipelines in one process (``--steps``; a
   fresh process for each series and step), each streaming at real-time pace for
   ``--seconds``, the median of ``--repeat`` runs taken in turn with the other series'
   (this machine's pace varies from minute to minute); the emulator runs in another process
   (TLS in Rust). Both pipelines end at 48 kHz: geminilive's service resamples itself;
   Pipecat's output transport would resample its 24 kHz frames with
   ``create_stream_resampler()`` (soxr VHQ), so its pipeline has a processor doing just that.
4. **The delay the output resampling adds** (24 kHz to 48 kHz): an impulse fed in 1 ms
   chunks, and how much input had gone in when its peak came out.

LiveKit's half measures the same four, with the agent session's audio I/O in memory
(``tests/frameworks/livekit_harness.py``: LiveKit's own input/output interfaces, no room).
A room's microphone frames come at 48 kHz, so the CPU runs send 48 kHz (both models resample
them to 16 kHz: LiveKit's with ``rtc.AudioResampler``, geminilive's in Rust) and the delay
measured is that input path's, 48 to 16 kHz; the loss runs send 16 kHz, numbered, so the
emulator's record says what was lost. LiveKit's 'framework' is an ``AgentSession`` with a
realtime model that takes the audio and does nothing with it.

Run in the frameworks' venv (``make test-frameworks`` makes it):

    .venv-frameworks/bin/python benches/bench_frameworks.py [--framework pipecat|livekit|all]
        [--faults 10] [--spacing-s 11] [--steps 1,10,50] [--seconds 10] [--repeat 3] [--quick]
        [--input-chunk-ms 20] [--steady-input-chunk-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("tests", "tests/frameworks")]

from google.genai.types import HttpOptions  # noqa: E402
from livekit import rtc  # noqa: E402
from livekit.agents import Agent, llm  # noqa: E402
from livekit.plugins.google.realtime import RealtimeModel as GoogleRealtimeModel  # noqa: E402
from livekit_harness import agent_session  # noqa: E402
from loguru import logger  # noqa: E402
from pipecat.audio.utils import create_stream_resampler  # noqa: E402
from pipecat.frames.frames import ErrorFrame, Frame, LLMContextFrame, TTSAudioRawFrame  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService  # noqa: E402
from pipecat_harness import Run, pipeline  # noqa: E402

import geminilive  # noqa: E402
from fault_drill import chunk_numbers, numbered_chunk  # noqa: E402
from geminilive import Resampler  # noqa: E402
from geminilive.emulator import Faults, LiveEmulator  # noqa: E402
from geminilive.integrations.livekit import RealtimeModel  # noqa: E402
from geminilive.integrations.pipecat import GeminiLiveService  # noqa: E402
from geminilive.session import ReconnectPolicy  # noqa: E402
from tls import LoopbackTls, loopback_tls  # noqa: E402

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
KEY = "bench-key"
OUT_RATE = 48000
CHUNK_S = 0.02
SERVICES = ("pipecat", "geminilive")
CHUNK_ENV = "GEMINILIVE_BENCH_INPUT_CHUNK_MS"
STEADY_CHUNK_ENV = "GEMINILIVE_BENCH_STEADY_INPUT_CHUNK_MS"
LIVEKIT_MODELS = ("livekit", "geminilive")
ROOM_RATE = 48000  # a LiveKit room's microphone frames
RECONNECT = ReconnectPolicy(initial_delay_s=0.05, max_delay_s=1.0)
MAX_LATE_PCT = 10.0  # a CPU series with more of its frames late than this was out of CPU


class TransportResampler(FrameProcessor):
    """What Pipecat's output transport does to the service's audio: soxr VHQ to its rate."""

    def __init__(self) -> None:
        super().__init__()
        self._resampler = create_stream_resampler(clear_after_secs=None)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and frame.sample_rate != OUT_RATE:
            audio = await self._resampler.resample(frame.audio, frame.sample_rate, OUT_RATE)
            frame = TTSAudioRawFrame(audio=audio, sample_rate=OUT_RATE, num_channels=1)
        await self.push_frame(frame, direction)


class NoService(FrameProcessor):
    """In the service's place for the ``framework`` series: the pipeline's own cost per
    session-second (frames in and through, nothing sent anywhere)."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


def make_service(name: str, url: str, tls: LoopbackTls) -> Any:
    """The service ``name`` connecting to the emulator at ``url`` (its full wss URL)."""
    if name == "framework":
        return NoService()
    if name == "pipecat":
        http = HttpOptions(base_url=f"https://{urlsplit(url).netloc}/", async_client_args={"ssl": tls.client()})
        return GeminiLiveLLMService(
            api_key=KEY,
            http_options=http,
            inference_on_context_initialization=False,
            settings=GeminiLiveLLMService.Settings(model=f"models/{MODEL}"),
        )
    return GeminiLiveService(endpoint=url, api_key=KEY, model=MODEL, connect_options={"reconnect": RECONNECT})


async def start_pipeline(name: str, url: str, tls: LoopbackTls, stack: Any) -> Run:
    service = make_service(name, url, tls)
    processors = [TransportResampler()] if name == "pipecat" else []
    p = await stack.enter_async_context(pipeline(service, audio_out_rate=OUT_RATE, after=processors))
    await p.send(LLMContextFrame(LLMContext()))  # Pipecat's service takes audio once it has a context
    await asyncio.sleep(0.3)
    return p


class NullRealtimeModel(llm.RealtimeModel):
    """In the model's place for LiveKit's ``framework`` series: the agent session's own cost
    per session-second with a realtime model attached (audio in and forwarded, nothing sent
    anywhere, no reply ever). A session with no model at all runs LiveKit's own audio
    recognition instead, which costs more than either model does."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=llm.RealtimeCapabilities(
                message_truncation=False,
                turn_detection=True,
                user_transcription=False,
                auto_tool_reply_generation=True,
                audio_output=True,
                manual_function_calls=False,
            )
        )

    def session(self, *, turn_detection_disabled: bool = False) -> llm.RealtimeSession:
        return NullRealtimeSession(self)

    async def aclose(self) -> None:
        pass


class NullRealtimeSession(llm.RealtimeSession):
    def __init__(self, model: NullRealtimeModel) -> None:
        super().__init__(model)
        self._chat_ctx, self._tools = llm.ChatContext.empty(), llm.ToolContext.empty()

    @property
    def chat_ctx(self) -> llm.ChatContext:
        return self._chat_ctx

    @property
    def tools(self) -> llm.ToolContext:
        return self._tools

    async def update_instructions(self, instructions: str) -> None:
        pass

    async def update_chat_ctx(self, chat_ctx: llm.ChatContext) -> None:
        self._chat_ctx = chat_ctx

    async def update_tools(self, tools: list[llm.Tool]) -> None:
        pass

    def update_options(self, *, tool_choice: Any = None) -> None:
        pass

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        pass

    def push_video(self, frame: rtc.VideoFrame) -> None:
        pass

    def generate_reply(self, **_: Any) -> asyncio.Future[llm.GenerationCreatedEvent]:
        return asyncio.get_running_loop().create_future()

    def commit_audio(self) -> None:
        pass

    def clear_audio(self) -> None:
        pass

    def interrupt(self) -> None:
        pass

    def truncate(self, **_: Any) -> None:
        pass

    async def aclose(self) -> None:
        pass


def make_realtime_model(name: str, url: str, tls: LoopbackTls) -> Any:
    """The LiveKit realtime model ``name`` for the emulator at ``url``."""
    if name == "framework":
        return NullRealtimeModel()
    if name == "livekit":
        http = HttpOptions(base_url=f"https://{urlsplit(url).netloc}/", async_client_args={"ssl": tls.client()})
        return GoogleRealtimeModel(api_key=KEY, model=MODEL, http_options=http)
    chunk_ms = int(os.environ.get(CHUNK_ENV, "20"))  # (the series run in processes of their own)
    steady_ms = int(os.environ.get(STEADY_CHUNK_ENV, "100"))
    return RealtimeModel(endpoint=url, api_key=KEY, model=MODEL, connect_options={"reconnect": RECONNECT},
                         input_chunk_ms=chunk_ms, steady_input_chunk_ms=max(chunk_ms, steady_ms))  # fmt: skip


async def start_agent_session(name: str, url: str, tls: LoopbackTls, stack: Any) -> Any:
    s = await stack.enter_async_context(agent_session(make_realtime_model(name, url, tls), Agent(instructions="Hi.")))
    await asyncio.sleep(0.3)
    return s


class Stream:
    """Numbered speech-like chunks at real-time pace into one pipeline or agent session (at
    ``rate``: 16 kHz chunks held to 48 kHz for a room's rate, in a room's 10 ms frames); turn
    ends noted."""

    def __init__(self, p: Any, seed: int, rate: int = 16000) -> None:
        self.p, self.rng, self.rate = p, np.random.default_rng(seed), rate
        self.sent = 0
        self.late = 0
        self.speech_ends: list[float] = []

    async def run(self, seconds: float) -> None:
        start = time.monotonic()
        for n in range(int(seconds / CHUNK_S)):
            due = start + n * CHUNK_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > CHUNK_S:
                self.late += 1
            chunk = numbered_chunk(n, self.rng)
            if self.rate != 16000:  # a room's microphone: 10 ms frames at its rate
                chunk = np.repeat(np.frombuffer(chunk, "<i2"), self.rate // 16000).tobytes()
                await self.p.send_audio([chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]], rate=self.rate, pace_s=0)
            else:
                await self.p.send_audio([chunk], rate=self.rate, pace_s=0)
            self.sent += 1
            if n % 100 == 59:  # the last loud chunk of a turn (fault_drill's pattern)
                self.speech_ends.append(time.monotonic())


def first_audio_latencies_ms(arrivals: list[float], speech_ends: list[float]) -> list[float]:
    """For each turn, its end of speech to the first reply audio at the sink."""
    out = []
    for end in speech_ends:
        later = [t for t in arrivals if t > end]
        if later and later[0] - end < 1.9:  # before the next turn's speech ends
            out.append((later[0] - end) * 1000)
    return out


# --- 1. loss across faults --------------------------------------------------------------------


def fault_plan(count: int, spacing_s: float) -> list[Faults | None]:
    """A 1011 close, a silent drop, a goAway (and its 1011), in turn, each ``spacing_s`` after
    its connection opened (client messages come at 50 a second)."""
    messages = int(spacing_s / CHUNK_S)
    kinds = [
        Faults(close_after_client_messages=messages, close_code=1011),
        Faults(drop_after_client_messages=messages),
        Faults(go_away_after_s=spacing_s, go_away_time_left_s=0.5),
    ]
    return [kinds[i % 3] for i in range(count)]


async def loss_run(framework: str, name: str, faults: int, spacing_s: float, tls: LoopbackTls) -> dict[str, Any]:
    plan = fault_plan(faults, spacing_s)
    emu = LiveEmulator(model="echo", ssl=tls.server(), record_input=True, realtime_playback=False, faults=plan)
    async with emu, contextlib.AsyncExitStack() as stack:
        start = start_pipeline if framework == "pipecat" else start_agent_session
        p = await start(name, emu.url, tls, stack)
        stream = Stream(p, seed=1)
        await stream.run(spacing_s * (faults + 1) + 2)
        await asyncio.sleep(1.0)
        numbers = chunk_numbers(emu.input_audio(every_session=True))
        connections = len(emu.connections)
        errors = len(p.frames(ErrorFrame, direction="up")) if framework == "pipecat" else len(p.errors)
    seen = set(numbers)
    lost = sum(1 for n in range(stream.sent) if n not in seen)
    return {
        "sent": stream.sent,
        "lost_chunks": lost,
        "lost_s": lost * CHUNK_S,
        "duplicated": len(numbers) - len(seen),
        "connections": connections,
        "errors": errors,
    }


# --- 3. CPU -----------------------------------------------------------------------------------


def emulator_process(tls: LoopbackTls, urls: Any) -> None:
    async def main() -> None:
        emu = LiveEmulator(model="echo", certfile=tls.chain, keyfile=tls.key, realtime_playback=False)
        await emu.start()
        urls.put(emu.url)
        await asyncio.Event().wait()

    asyncio.run(main())


async def cpu_run(framework: str, name: str, count: int, seconds: float, url: str, tls: LoopbackTls) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        if framework == "pipecat":
            pipes = [await start_pipeline(name, url, tls, stack) for _ in range(count)]
            streams = [Stream(p, seed=i) for i, p in enumerate(pipes)]
        else:
            pipes = [await start_agent_session(name, url, tls, stack) for _ in range(count)]
            streams = [Stream(p, seed=i, rate=ROOM_RATE) for i, p in enumerate(pipes)]
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(s.run(seconds) for s in streams))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        first = pipes[0]
        arrivals = first.arrival_times(TTSAudioRawFrame) if framework == "pipecat" else first.speaker.arrived
        latencies = first_audio_latencies_ms(arrivals, streams[0].speech_ends)
    sent = sum(s.sent for s in streams)
    return {
        "cpu_ms_per_session_s": cpu * 1000 / (count * wall),
        "late_frames_pct": 100 * sum(s.late for s in streams) / max(sent, 1),
        "latencies_ms": latencies,
    }


def cpu_run_child(framework: str, name: str, count: int, seconds: float, url: str, tls: LoopbackTls, out: Any) -> None:
    logger.remove()
    logging.getLogger("livekit").setLevel(logging.CRITICAL)
    out.put(asyncio.run(cpu_run(framework, name, count, seconds, url, tls)))


async def cpu_run_apart(framework: str, name: str, count: int, seconds: float, url: str, tls: LoopbackTls) -> Any:
    """``cpu_run`` in a process of its own: nothing a run leaves behind (tasks, sockets,
    garbage, a closed session's retries) is billed to the next."""
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    child = spawn.Process(target=cpu_run_child, args=(framework, name, count, seconds, url, tls, out))
    child.start()
    try:
        return await asyncio.to_thread(out.get, timeout=seconds + 120)
    finally:
        child.join(timeout=30)
        child.kill()


# --- 4. resampling delay ----------------------------------------------------------------------


async def delay_ms(resample: Callable[[bytes], Any], rate: int = 24000) -> float:
    """Input that had gone in (ms) when an impulse at 100 ms came out, fed 1 ms at a time."""
    chunk = rate // 1000
    impulse_at = rate // 10
    x = np.zeros(rate, "<i2")
    x[impulse_at] = 30000
    emitted = []
    for start in range(0, len(x), chunk):
        out = await resample(x[start : start + chunk].tobytes())
        emitted.append(np.frombuffer(out, "<i2"))
        if emitted[-1].size and np.abs(np.concatenate(emitted)).max() > 5000:
            return (start + chunk - impulse_at) / chunk
    return float("nan")


def in_rust(resampler: Resampler) -> Callable[[bytes], Any]:
    """geminilive's resampler on 16-bit PCM, as the delay probe calls it."""

    async def resample(pcm: bytes) -> bytes:
        return (resampler.process(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768) * 32768).astype("<i2").tobytes()

    return resample


async def resampling_delays() -> dict[str, float]:
    soxr_stream = create_stream_resampler(clear_after_secs=None)
    ours = Resampler(24000, OUT_RATE)

    async def pipecat_path(pcm: bytes) -> bytes:
        return await soxr_stream.resample(pcm, 24000, OUT_RATE)

    return {"pipecat": await delay_ms(pipecat_path), "geminilive": await delay_ms(in_rust(ours))}


async def livekit_input_delays() -> dict[str, float]:
    """A room's 48 kHz microphone to the model's 16 kHz: LiveKit's model resamples with
    ``rtc.AudioResampler`` (as its Google plugin does), geminilive's session in Rust."""
    theirs = rtc.AudioResampler(input_rate=ROOM_RATE, output_rate=16000, num_channels=1)
    ours = Resampler(ROOM_RATE, 16000)

    async def livekit_path(pcm: bytes) -> bytes:
        frames = theirs.push(rtc.AudioFrame(pcm, ROOM_RATE, 1, len(pcm) // 2))
        return b"".join(bytes(f.data) for f in frames)

    return {
        "livekit": await delay_ms(livekit_path, ROOM_RATE),
        "geminilive": await delay_ms(in_rust(ours), ROOM_RATE),
    }


# --- report -----------------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


async def loss_table(framework: str, names: tuple[str, ...], args: argparse.Namespace, tls: LoopbackTls) -> None:
    print(f"\nUser audio lost across {args.faults} faults ({args.spacing_s:.0f} s apart, real-time pace):")
    print(f"  {'service':11s} {'sent s':>7s} {'lost s':>7s} {'dup':>4s} {'conns':>5s} {'errors':>6s}")
    for name in names:
        r = await loss_run(framework, name, args.faults, args.spacing_s, tls)
        print(
            f"  {name:11s} {r['sent'] * CHUNK_S:7.1f} {r['lost_s']:7.2f} {r['duplicated']:4d}"
            f" {r['connections']:5d} {r['errors']:6d}"
        )


async def cpu_table(
    framework: str, names: tuple[str, ...], args: argparse.Namespace, url: str, tls: LoopbackTls
) -> None:
    theirs, ours = names
    print(f"\nCPU per session-second (ms), {args.seconds:.0f} s at real-time pace (emulator in another process),")
    print(f"  the median of {args.repeat} interleaved runs (late %: the worst of them);")
    print(f"  'above': what the service costs above the {framework} session alone ('framework': none in its place)")
    print(
        f"  {'sessions':>8s} {'framework':>9s} {theirs:>8s} {ours:>10s} {'ratio':>6s}"
        f" {theirs + ' above':>13s} {ours + ' above':>16s} {'ratio':>6s} {'late % (t/g)':>12s}"
    )
    latency: dict[str, list[float]] = {}
    for count in args.steps:
        series = ("framework", *names)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in series}
        for _ in range(args.repeat):  # interleaved: a slow spell of the machine hits every series
            for name in series:
                runs[name].append(await cpu_run_apart(framework, name, count, args.seconds, url, tls))
        if count == args.steps[0]:
            for name in names:
                latency[name] = [x for r in runs[name] for x in r["latencies_ms"]]
        cpu = {name: statistics.median(r["cpu_ms_per_session_s"] for r in runs[name]) for name in series}
        late = {name: max(r["late_frames_pct"] for r in runs[name]) for name in series}
        base, tc, gl = cpu["framework"], cpu[theirs], cpu[ours]
        # A series that fell behind is out of CPU: its figure is a ceiling (a core over the
        # sessions), not a cost. Theirs alone behind: the ratio is a floor (>=); ours or the
        # framework's own behind: no ratio.
        behind = {name for name in series if late[name] > MAX_LATE_PCT}
        floor = ">" if behind == {theirs} else " "
        ratio = f"{floor}{tc / gl:4.1f}x" if ours not in behind else "    -"
        above = f"{floor}{(tc - base) / max(gl - base, 1e-9):4.1f}x" if behind <= {theirs} else "    -"
        note = f"  (out of CPU: {', '.join(sorted(behind))})" if behind else ""
        print(
            f"  {count:8d} {base:9.1f} {tc:8.1f} {gl:10.1f} {ratio}"
            f" {tc - base:13.1f} {gl - base:16.1f} {above}"
            f" {late[theirs]:6.1f}/{late[ours]:.1f}{note}"
        )
    print(f"\nEnd of user speech -> first bot audio frame at the sink ({args.steps[0]} session; ms):")
    for name in names:
        values = latency[name] or [float("nan")]
        print(f"  {name:11s} median {statistics.median(values):6.1f}  p95 {p95(values):6.1f}  (turns: {len(values)})")


def print_delays(title: str, delays: dict[str, float]) -> None:
    theirs, ours = delays
    print(f"\n{title}, delay (ms):")
    for name, value in delays.items():
        print(f"  {name:11s} {value:6.2f}")
    print(f"  ratio {theirs}/{ours}: {delays[theirs] / delays[ours]:.1f}x")


async def main(args: argparse.Namespace) -> None:
    logger.remove()  # Pipecat logs every frame at DEBUG
    logger.add(sys.stderr, level="ERROR")
    logging.getLogger("livekit").setLevel(logging.CRITICAL)  # its plugin logs each fault's traceback
    tls = loopback_tls(tempfile.mkdtemp(prefix="bench-frameworks-"))
    os.environ["SSL_CERT_FILE"] = str(tls.ca)  # geminilive's TLS (Rust) trusts the system's CAs
    print(
        f"Pipecat {version('pipecat-ai')}, LiveKit Agents {version('livekit-agents')}"
        f" (livekit-plugins-google {version('livekit-plugins-google')}), geminilive {geminilive.__version__}"
    )
    frameworks = ("pipecat", "livekit") if args.framework == "all" else (args.framework,)
    spawn = multiprocessing.get_context("spawn")
    urls = spawn.Queue()
    emulator = spawn.Process(target=emulator_process, args=(tls, urls), daemon=True)
    emulator.start()
    url = urls.get(timeout=30)
    try:
        for framework in frameworks:
            names = SERVICES if framework == "pipecat" else LIVEKIT_MODELS
            print(f"\n=== {'Pipecat pipeline' if framework == 'pipecat' else 'LiveKit AgentSession'} ===")
            if framework == "pipecat":
                print_delays("Output resampling 24 -> 48 kHz", await resampling_delays())
            else:
                print_delays("Input resampling 48 -> 16 kHz", await livekit_input_delays())
            await loss_table(framework, names, args, tls)
            await cpu_table(framework, names, args, url, tls)
    finally:
        emulator.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=("pipecat", "livekit", "all"), default="all")
    parser.add_argument("--faults", type=int, default=10)
    parser.add_argument("--spacing-s", type=float, default=11.0)
    parser.add_argument("--steps", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each CPU series per step (medians)")
    parser.add_argument("--quick", action="store_true", help="3 faults 3 s apart, steps 1,5, 4 s, 1 run each")
    parser.add_argument(
        "--input-chunk-ms",
        type=int,
        default=20,
        help="geminilive's LiveKit model's input_chunk_ms (its default 20; LiveKit's plugin sends 50)",
    )
    parser.add_argument(
        "--steady-input-chunk-ms",
        type=int,
        default=100,
        help="its steady_input_chunk_ms (default 100; equal to --input-chunk-ms for fixed chunks)",
    )
    args = parser.parse_args()
    os.environ[CHUNK_ENV] = str(args.input_chunk_ms)
    os.environ[STEADY_CHUNK_ENV] = str(args.steady_input_chunk_ms)
    if args.quick:
        args.faults, args.spacing_s, args.steps, args.seconds, args.repeat = 3, 3.0, "1,5", 4.0, 1
    args.steps = [int(s) for s in args.steps.split(",")]
    asyncio.run(main(args))
