"""Phone calls, side by side in one run: geminilive's Twilio bridge (the ``PhoneServer`` that
``geminilive phone`` serves) and Pipecat's Twilio pipeline (its WebSocket server transport
with ``TwilioFrameSerializer``, ``GeminiLiveLLMService``), with the same caller simulator
(tests/twilio_caller.py, Twilio's Media Streams as documented) and the same emulator.

1. **Calls at once** (``--steps``): each caller speaks 20 ms μ-law frames at a phone line's
   pace, a turn every 2 s (1.2 s of speech-like bursts; the calls' turns spread over those
   2 s), and the emulator echoes each turn.
   Each server runs in a process of its own (geminilive: one ``PhoneServer``; Pipecat: one
   pipeline per call, as its transport serves one client, on ports of their own, in one
   process); the emulator in another, the callers in this one (on geminilive's WebSocket
   client, so that they cost less than what they measure). Each process leaves what it has
   imported and set up out of the garbage collector's full passes (``gc.freeze``): spawn
   imports this bench, Pipecat and all, into every one of them. Per step: the server
   process's CPU per call-second (/proc), its memory per call (RSS above what it held before
   the calls), frames late both ways (caller audio that reached the Live API more than a
   frame later than the call's least-delayed audio did, by the emulator's clock; reply frames
   that came after their turn to play through a 60 ms jitter buffer), how many calls heard a
   reply, and whether the callers kept their own 20 ms pace (a run where they did not says
   nothing of the server). Each step is run ``--repeat`` times, the servers in turn: CPU and
   memory are the medians, late frames and calls answered the worst run.
2. **Calls per core**: the largest step each server kept up with (under 1% of frames late
   both ways), and one core's second over the CPU a call-second cost it there: a server
   that falls behind is out of CPU, so its CPU at that step is a ceiling, not a cost (one
   that sent over 10% of its frames late either way is not run at larger steps).
3. **24 kHz to 8 kHz μ-law**, the model's audio to the phone: the worst alias over a sweep of
   tones above 4 kHz and the audio held back, for geminilive's fused ``G711Encoder`` and for
   Pipecat's path (its output transport's stream resampler, soxr VHQ, then μ-law), with
   audioop's ``ratecv`` for reference.

Run in the frameworks' venv (``make test-frameworks`` makes it):

    .venv-frameworks/bin/python benches/bench_phone.py [--steps 1,5,10,25,50,100] [--seconds 10] [--repeat 3]
        [--servers pipecat,geminilive] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benches")]

from google.genai.types import HttpOptions  # noqa: E402
from loguru import logger  # noqa: E402
from pipecat.audio.utils import create_stream_resampler  # noqa: E402
from pipecat.frames.frames import LLMContextFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.serializers.twilio import TwilioFrameSerializer  # noqa: E402
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService  # noqa: E402
from pipecat.transports.websocket.server import (  # noqa: E402
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
)
from pipecat.workers.runner import WorkerRunner  # noqa: E402

import geminilive  # noqa: E402
from bench_frameworks import MAX_LATE_PCT  # noqa: E402
from bench_g711 import held_back_ms, to_phone_paths, worst_alias_db  # noqa: E402
from fault_drill import numbered_chunk  # noqa: E402
from geminilive import LiveConfig  # noqa: E402
from geminilive._loop import loop_name, run  # noqa: E402
from geminilive.emulator import LiveEmulator  # noqa: E402
from geminilive.telephony import encode  # noqa: E402
from geminilive.telephony.server import PhoneServer  # noqa: E402
from tls import LoopbackTls, loopback_tls  # noqa: E402
from twilio_caller import Caller  # noqa: E402

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
KEY = "bench-key"
SERVERS = ("pipecat", "geminilive")
JITTER_BUFFER_S = 0.06
FRAME_S = 0.02


class Emulator(NamedTuple):
    """The emulator's process: its URL, and the queues that ask it for its input timing."""

    url: str
    requests: Any
    replies: Any


def caller_audio(seconds: float, seed: int, phase: float = 0.0) -> bytes:
    """Speech-like bursts (fault_drill's pattern: 1.2 s on, 0.8 s off) as 8 kHz μ-law, from
    ``phase`` (0-1) into the pattern's 2 s: calls that are not in step, as independent calls
    are not (in step, every turn would end in the same 20 ms)."""
    rng = np.random.default_rng(seed)
    first = round(phase * 100)
    pcm16k = b"".join(numbered_chunk(n, rng) for n in range(first, first + int(seconds * 50)))
    return encode(np.frombuffer(pcm16k, "<i2")[::2].tobytes())  # (the bursts are band-limited noise)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# --- the Live API ----------------------------------------------------------------------------------


def timed_emulator(tls: LoopbackTls, urls: Any, requests: Any, replies: Any) -> None:
    """The emulator (echo, noting when each audio message came); for each request, the
    ``input_timing`` of every connection made since the last."""

    async def main() -> None:
        emu = LiveEmulator(model="echo", certfile=tls.chain, keyfile=tls.key, realtime_playback=False, time_input=True)
        await emu.start()
        settled()
        urls.put(emu.url)
        last = -1  # the number of the last connection reported
        while True:
            await asyncio.to_thread(requests.get)
            new = [c for c in emu.connections if c.number > last]
            last = max((c.number for c in new), default=last)
            replies.put([c.input_timing for c in new])

    asyncio.run(main())


def late_frames(timing: list[tuple[float, float]]) -> tuple[int, int]:
    """(Frames late, frames) of one connection's caller audio at the Live API: a 20 ms frame is
    late when it came more than a frame later than the least-delayed audio of the call implies
    (a caller speaks without pause, so when each frame ends is a fixed offset from when it
    should arrive). A frame in a message that held several is as late as the message: what
    the server held back to batch counts."""
    if not timing:
        return 0, 0
    arrived, upto = np.array(timing).T
    starts = np.concatenate([[0.0], upto[:-1]])
    counts = np.maximum(1, np.round((upto - starts) / FRAME_S)).astype(int)
    # Each frame's end in the stream, and when its message came.
    ends = np.concatenate([np.linspace(a, b, n + 1)[1:] for a, b, n in zip(starts, upto, counts, strict=True)])
    came = np.repeat(arrived, counts)
    delay = came - ends
    return int(np.count_nonzero(delay - delay.min() > FRAME_S + 1e-6)), len(delay)  # (1e-6: rounding)


# --- the servers, each in a process of its own ---------------------------------------------------


def settled() -> None:
    """What the process imported and set up out of the collector's full passes: 250k objects
    (Pipecat and its dependencies, in every process spawn starts from this bench), each full
    pass over them a 150 ms pause on this machine, in the emulator and either server alike."""
    gc.freeze()


def geminilive_server(url: str, calls: int, loop: str, out: Any) -> None:
    async def main() -> None:
        config = LiveConfig(input_audio_transcription=True, output_audio_transcription=True)
        phone = PhoneServer(lambda: geminilive.connect(endpoint=url, api_key=KEY, model=MODEL, config=config))
        phone.max_calls = calls + 1
        await phone.start()
        settled()
        out.put([phone.stream_url] * calls)
        await asyncio.Event().wait()

    run(main(), loop=loop)  # type: ignore[arg-type]


def pipecat_server(url: str, calls: int, tls: LoopbackTls, loop: str, out: Any) -> None:
    """One pipeline per call (Pipecat's WebSocket server transport serves one client), as a
    Twilio bot is built: transport in, Gemini Live, transport out, 8 kHz both ways."""
    logger.remove()

    async def main() -> None:
        runner = WorkerRunner(handle_sigint=False)
        ports = free_ports(calls)
        http = HttpOptions(base_url=f"https://{urlsplit(url).netloc}/", async_client_args={"ssl": tls.client()})
        for port in ports:
            serializer = TwilioFrameSerializer(
                stream_sid="MZtest", params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
            )
            params = SingleClientWebsocketServerParams(
                serializer=serializer, audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False
            )
            transport = SingleClientWebsocketServerTransport(params=params, host="127.0.0.1", port=port)
            llm = GeminiLiveLLMService(
                api_key=KEY,
                http_options=http,
                inference_on_context_initialization=False,
                settings=GeminiLiveLLMService.Settings(model=f"models/{MODEL}"),
            )
            worker = PipelineWorker(
                Pipeline([transport.input(), llm, transport.output()]),
                cancel_on_idle_timeout=False,
                params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
            )
            await worker.queue_frame(LLMContextFrame(LLMContext()))  # its service takes audio once it has one
            await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        await asyncio.sleep(2.0)  # the transports listen
        settled()
        out.put([f"ws://127.0.0.1:{port}" for port in ports])
        await running

    run(main(), loop=loop)  # type: ignore[arg-type]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def step(name: str, calls: int, seconds: float, emulator: Emulator, tls: LoopbackTls, loop: str) -> dict:
    url = emulator.url
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    args = (url, calls, tls, loop, out) if name == "pipecat" else (url, calls, loop, out)
    server = spawn.Process(target=pipecat_server if name == "pipecat" else geminilive_server, args=args, daemon=True)
    server.start()
    try:
        urls = await asyncio.to_thread(out.get, timeout=120)
        idle_mib = rss_mib(server.pid)
        audio = [caller_audio(seconds, seed=i, phase=i / calls) for i in range(calls)]
        async with contextlib.AsyncExitStack() as stack:
            callers = [
                await stack.enter_async_context(Caller(u, playout_delay_s=JITTER_BUFFER_S, light=True)) for u in urls
            ]
            for caller in callers:
                await caller.start()
            await asyncio.sleep(0.5)
            cpu0, wall0 = cpu_s(server.pid), time.monotonic()
            await asyncio.gather(*(c.speak(a) for c, a in zip(callers, audio, strict=True)))
            await asyncio.sleep(1.0)  # the last reply
            cpu, wall = cpu_s(server.pid) - cpu0, time.monotonic() - wall0
            peak_mib = rss_mib(server.pid)
    finally:
        server.kill()
    emulator.requests.put(None)
    late_in, frames_in = np.sum([late_frames(t) for t in await asyncio.to_thread(emulator.replies.get)], axis=0)
    sent = sum(c.frames_sent for c in callers)
    received = sum(c.frames_received for c in callers)
    return {
        "cpu_ms_per_call_s": cpu * 1000 / (calls * wall),
        "mib_per_call": (peak_mib - idle_mib) / calls,
        "late_in_pct": 100 * late_in / max(frames_in, 1),
        "callers_late_pct": 100 * sum(c.frames_sent_late for c in callers) / max(sent, 1),
        "late_out_pct": 100 * sum(c.frames_late for c in callers) / max(received, 1),
        "answered": sum(1 for c in callers if len(c.heard) > 8000),
    }


# --- 3. to the phone ----------------------------------------------------------------------------


def pipecat_to_phone() -> Any:
    """Pipecat's path for the model's 24 kHz audio to a Twilio call: the output transport's
    stream resampler (``create_stream_resampler``: soxr VHQ) to the pipeline's 8 kHz, then
    μ-law (the serializer's ``pcm_to_ulaw``, which does not resample at equal rates)."""
    resampler = create_stream_resampler()
    loop = asyncio.new_event_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    def run(pcm: bytes) -> bytes:
        return audioop.lin2ulaw(loop.run_until_complete(resampler.resample(pcm, 24000, 8000)), 2)

    return run


def to_phone_table() -> None:
    paths = to_phone_paths()
    rows = {
        "geminilive": paths["geminilive"],
        "pipecat": pipecat_to_phone,
        "audioop.ratecv": paths["audioop.ratecv"],
    }
    print("\n24 kHz -> 8 kHz mu-law (to the phone): worst alias over 4.2-11.5 kHz tones, audio held back")
    for name, make in rows.items():
        print(f"  {name:15s} {worst_alias_db(make):8.1f} dB  {held_back_ms(make, 24000, 8000, False):6.1f} ms")


# --- report --------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    logger.remove()
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    settled()  # (the callers' process too)
    tls = loopback_tls(tempfile.mkdtemp(prefix="bench-phone-"))
    os.environ["SSL_CERT_FILE"] = str(tls.ca)  # geminilive's TLS (Rust) trusts the system's CAs
    spawn = multiprocessing.get_context("spawn")
    urls, requests, replies = spawn.Queue(), spawn.Queue(), spawn.Queue()
    process = spawn.Process(target=timed_emulator, args=(tls, urls, requests, replies), daemon=True)
    process.start()
    emulator = Emulator(urls.get(timeout=30), requests, replies)
    try:
        print(f"\nCalls at once, {args.seconds:.0f} s each at a phone line's pace (each server in a process of its")
        print(f"own, both on {args.loop}'s event loop; CPU and memory: the median of {args.repeat} interleaved")
        print("runs, late and answered: the worst of them):")
        print(
            f"  {'calls':>5s} {'server':11s} {'CPU ms/call-s':>13s} {'MiB/call':>8s}"
            f" {'late in %':>9s} {'late out %':>10s} {'answered':>8s} {'callers late %':>14s}"
        )
        results: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in SERVERS}
        for calls in args.steps:
            # A server far behind at a smaller step is out of CPU here too.
            servers = [name for name in args.servers if all(behind(r) <= MAX_LATE_PCT for r in results[name].values())]
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for _ in range(args.repeat):  # interleaved: a slow spell of the machine hits both
                for name in servers:
                    runs[name].append(await step(name, calls, args.seconds, emulator, tls, args.loop))
            for name in servers:
                r = results[name][calls] = combined(runs[name])
                print(
                    f"  {calls:5d} {name:11s} {r['cpu_ms_per_call_s']:13.1f} {r['mib_per_call']:8.2f}"
                    f" {r['late_in_pct']:9.1f} {r['late_out_pct']:10.1f} {r['answered']:5d}/{calls}"
                    f" {r['callers_late_pct']:14.1f}"
                )
    finally:
        process.kill()
    print("\nCalls per core: the largest step each kept up with (under 1% of frames late both ways, the")
    print("callers on pace), and one core's second over the CPU a call-second cost there:")
    capacity = {}
    for name in args.servers:
        kept_up = [n for n, r in results[name].items() if within(r) and r["answered"] == n]
        if not kept_up:
            print(f"  {name:11s} kept up with no step")
            continue
        n = max(kept_up)
        capacity[name] = 1000 / results[name][n]["cpu_ms_per_call_s"]
        print(f"  {name:11s} {n:4d} calls measured, {capacity[name]:5.0f} calls per core by CPU there")
    if len(capacity) == 2:
        print(f"  ratio geminilive/pipecat: {capacity['geminilive'] / capacity['pipecat']:.1f}x")
    # And the CPU ratio at each step both kept up with (the same load for both).
    for n in args.steps:
        theirs, ours = results["pipecat"].get(n), results["geminilive"].get(n)
        if theirs is not None and ours is not None and within(theirs) and within(ours):
            ratio = theirs["cpu_ms_per_call_s"] / ours["cpu_ms_per_call_s"]
            print(f"  CPU per call-second at {n} calls (both kept up): pipecat/geminilive {ratio:.1f}x")


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A step's runs as one: CPU and memory the median, late frames and calls answered the worst."""
    worst = {"answered": min, "late_in_pct": max, "late_out_pct": max, "callers_late_pct": max}
    return {key: worst.get(key, statistics.median)([r[key] for r in runs]) for key in runs[0]}


def behind(r: dict[str, Any]) -> float:
    """The larger share of frames late, either way (%)."""
    return max(r["late_in_pct"], r["late_out_pct"])


def within(r: dict[str, Any]) -> bool:
    """Under 1% of frames late both ways (and the callers kept their pace: where they did
    not, the machine was short of CPU without the server, and the step says nothing)."""
    return r["late_in_pct"] < 1 and r["late_out_pct"] < 1 and r["callers_late_pct"] < 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,5,10,25,50,100")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each server per step (medians, worst late)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="which servers to run (both: the ratios)")
    parser.add_argument("--quick", action="store_true", help="steps 1,3, 6 s, one run each")
    parser.add_argument(
        "--loop",
        default=loop_name(),
        choices=["asyncio", "uvloop"],
        help="both servers' event loop (default: what `geminilive phone` runs on here: uvloop if installed)",
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seconds, args.repeat = "1,3", 6.0, 1
    args.steps = [int(s) for s in args.steps.split(",")]
    args.servers = args.servers.split(",")
    print(f"Pipecat {version('pipecat-ai')}, geminilive {geminilive.__version__}; {os.cpu_count()} CPUs")
    to_phone_table()  # (Pipecat's resampler is driven by a loop of its own: before the bench's)
    asyncio.run(main(args))
