"""Scale: concurrent full-duplex sessions on one core, geminilive against google-genai.

Each session streams 16 kHz audio up in 20 ms frames at real-time pace and takes the model's
24 kHz audio down (40 ms chunks, paced by the server) into an in-memory sink; no devices. The
clients run in this process, pinned to one core; the emulator runs in another process, pinned
to the other core, over wss:// (google-genai only speaks TLS, so all do: geminilive on its
default, TLS in Rust trusting the system's CAs, which ``SSL_CERT_FILE`` points at the test CA;
google-genai on Python's ``ssl``; the emulator serves TLS in Rust). Sessions are added
in steps; a frame is late when it is sent more than 20 ms after it was due, or a received
chunk lags the server's real-time pace by more than 40 ms more than the session's best. The
table gives, per step, late frames, the client's CPU per session-second, its memory per
session at the end of the step (about 12 s in: geminilive's includes the audio kept for a
lossless resume during the model's never-ending turn, 45 KB per second up to
``max_buffered_audio_s``), and the emulator's CPU per session-second (its capacity: 1 core /
that).

Both clients and the emulator run on the same event loop: uvloop when installed (as
geminilive's own programs do), or the one ``--loop`` names. A third series, ``transport``, is
geminilive's WebSocket connection alone sending one pre-built message per frame: what the
session costs above its transport.

With ``--repeat N`` every step runs N times (each in a fresh process) and a step is sustained
when its median run keeps under 1% late; the summary says in how many runs each step passed, as
a busy core's margin shows in how often it passes, not in one run.

    python benches/bench_scale.py [--seconds 8] [--steps 25,50,100,150,200,300] [--repeat 1] [--loop auto] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import platform
import resource
import ssl
import sys
import tempfile
from pathlib import Path

import geminilive
from geminilive import events as ev
from geminilive._loop import loop_name, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tls import LoopbackTls, loopback_tls

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
KEY = "bench-key"
FRAME_S = 0.020
SILENCE = bytes(640)  # 20 ms of 16 kHz 16-bit silence (the server VAD stays quiet)


class LongTalkModel:
    """Talks for as long as the benchmark runs: one second of tone at a time (shared bytes)."""

    name = "long-talk"

    def __init__(self, seconds: int) -> None:
        from geminilive.emulator.models import tone_pcm

        self.seconds = seconds
        self.second = tone_pcm(300.0, 1.0)

    def reply(self, turn, conversation):
        from geminilive.emulator.models import ReplyAudio

        for _ in range(self.seconds):
            yield ReplyAudio(pcm=self.second)


def emulator_process(tls: LoopbackTls, seconds: int, cpu: int, ports, loop: str) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    from geminilive.emulator import LiveEmulator

    async def main() -> None:
        model = LongTalkModel(seconds)
        emu = LiveEmulator(
            model=model, certfile=tls.chain, keyfile=tls.key, api_key=KEY, speed=1.0, realtime_playback=False
        )
        await emu.start()
        ports.put(emu.port)
        await asyncio.Event().wait()

    run(main(), loop=loop)


def process_cpu_s(pid: int | None = None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class Tally:
    def __init__(self) -> None:
        self.up = self.up_late = self.down = self.down_late = 0
        self.measuring = False

    def sent(self, lateness_s: float) -> None:
        if self.measuring:
            self.up += 1
            self.up_late += lateness_s > FRAME_S

    def received(self, lag_s: float, best_lag_s: float) -> None:
        if self.measuring:
            self.down += 1
            self.down_late += lag_s - best_lag_s > 0.040


async def paced_upload(send, tally: Tally, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    k = 0
    while not stop.is_set():
        due = start + k * FRAME_S
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.sent(loop.time() - due)
        await send(SILENCE)
        k += 1


class DownloadClock:
    """Lag of received audio behind real-time pace since the first chunk."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.audio_s = 0.0
        self.best = float("inf")

    def chunk(self, now: float, seconds: float, tally: Tally) -> None:
        if self.first is None:
            self.first = now
        lag = now - self.first - self.audio_s
        self.best = min(self.best, lag)
        tally.received(lag, self.best)
        self.audio_s += seconds


async def geminilive_session(url: str, tally: Tally, stop: asyncio.Event) -> None:
    async with geminilive.connect(endpoint=url, api_key=KEY) as session:  # the default TLS
        await session.send_text("talk to me")
        uploader = asyncio.create_task(paced_upload(session.send_audio, tally, stop))
        clock = DownloadClock()
        loop = asyncio.get_running_loop()
        sink = bytearray()
        async for event in session:
            if isinstance(event, ev.AudioChunk):
                clock.chunk(loop.time(), event.duration_s, tally)
                sink += event.data
                del sink[:]
            if stop.is_set():
                break
        await uploader


async def transport_session(url: str, tally: Tally, stop: asyncio.Event) -> None:
    """geminilive's WebSocket connection alone, sending one pre-built audio message: what the
    transport under the session costs (a reference for the table, not a client to use)."""
    from geminilive._websocket import connect_websocket

    ws = await connect_websocket(url, headers={"x-goog-api-key": KEY})
    ws.send_now(b'{"setup":{"model":"models/%s","generationConfig":{"responseModalities":["AUDIO"]}}}' % MODEL.encode())
    await ws.recv()  # setupComplete
    ws.send_now(b'{"realtimeInput":{"text":"talk to me"}}')
    frame = b'{"realtimeInput":{"audio":{"mimeType":"audio/pcm;rate=16000","data":"%s"}}}' % base64.b64encode(SILENCE)

    async def send(pcm: bytes) -> None:
        ws.send_now(frame)

    uploader = asyncio.create_task(paced_upload(send, tally, stop))
    clock = DownloadClock()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if len(await ws.recv()) > 1000:  # an audio chunk (the emulator's are 40 ms)
            clock.chunk(loop.time(), 0.040, tally)
    await uploader
    await ws.close()


async def genai_session(port: int, context: ssl.SSLContext, tally: Tally, stop: asyncio.Event) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(base_url=f"https://127.0.0.1:{port}/", async_client_args={"ssl": context}),
    )
    config = types.LiveConnectConfig(response_modalities=[types.Modality.AUDIO])
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_realtime_input(text="talk to me")

        async def send(pcm: bytes) -> None:
            await session.send_realtime_input(audio=types.Blob(data=pcm, mime_type="audio/pcm;rate=16000"))

        uploader = asyncio.create_task(paced_upload(send, tally, stop))
        clock = DownloadClock()
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            async for message in session.receive():
                data = message.data
                if data:
                    clock.chunk(loop.time(), len(data) / 2 / 24000, tally)
                if stop.is_set():
                    break
        await uploader


async def run_step(kind: str, sessions: int, seconds: float, port: int, context: ssl.SSLContext, emulator_pid: int):
    url = f"wss://127.0.0.1:{port}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    tally = Tally()
    stop = asyncio.Event()
    rss0 = rss_mib()
    tasks = []
    for _ in range(sessions):
        if kind == "geminilive":
            tasks.append(asyncio.create_task(geminilive_session(url, tally, stop)))
        elif kind == "transport":
            tasks.append(asyncio.create_task(transport_session(url, tally, stop)))
        else:
            tasks.append(asyncio.create_task(genai_session(port, context, tally, stop)))
        await asyncio.sleep(0.005)  # a connection storm is not what this measures
    await asyncio.sleep(2.0)
    cpu0, emu0 = process_cpu_s(), process_cpu_s(emulator_pid)
    tally.measuring = True
    await asyncio.sleep(seconds)
    tally.measuring = False
    cpu1, emu1 = process_cpu_s(), process_cpu_s(emulator_pid)
    rss1 = rss_mib()  # at the end: what the sessions hold after running (replay buffers included)
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
    errors = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception()]
    late = (tally.up_late + tally.down_late) / max(tally.up + tally.down, 1)
    return {
        "late": late,
        "up_late": tally.up_late / max(tally.up, 1),
        "down_late": tally.down_late / max(tally.down, 1),
        "expected_up": sessions * seconds / FRAME_S,
        "up": tally.up,
        "cpu_ms": (cpu1 - cpu0) / (sessions * seconds) * 1000,
        "emu_cpu_ms": (emu1 - emu0) / (sessions * seconds) * 1000,
        "rss_kib": (rss1 - rss0) * 1024 / sessions,
        "errors": len(errors),
    }


def _kept_pace(r: dict) -> bool:
    """Under 1% late, no session failed, and the uploads kept up with the clock."""
    return r["late"] < 0.01 and not r["errors"] and r["up"] >= 0.95 * r["expected_up"]


def step_process(
    kind: str, n: int, seconds: float, port: int, tls: LoopbackTls, emulator_pid: int, cpu: int, results, loop: str
):
    """One step in a fresh process, so that its memory per session is its own."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    # geminilive connects as by default (TLS in Rust, the system's CAs): the system's CA file
    # is the test CA here, as OpenSSL's variable says. google-genai gets a Python ssl context.
    os.environ["SSL_CERT_FILE"] = str(tls.ca)
    context = tls.client()
    results.put(run(run_step(kind, n, seconds, port, context, emulator_pid), loop=loop))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per step")
    parser.add_argument("--steps", default="25,50,100,150,200,300")
    parser.add_argument(
        "--clients",
        default="geminilive,transport,google-genai",
        help="of geminilive, google-genai, transport (geminilive's WebSocket alone, pre-built messages)",
    )
    parser.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop of the clients and the emulator alike (auto: uvloop if installed)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per step (a step passes on its median run)")
    parser.add_argument("--quick", action="store_true", help="one short step of 20 sessions each")
    args = parser.parse_args()
    loop = loop_name(args.loop)
    steps = [20] if args.quick else [int(s) for s in args.steps.split(",")]
    seconds = 2.0 if args.quick else args.seconds
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    client_cpu, emulator_cpu = cpus[0], cpus[-1]
    with tempfile.TemporaryDirectory() as tmp:
        tls = loopback_tls(tmp)
        spawn = multiprocessing.get_context("spawn")
        ports = spawn.Queue()
        talk_s = int((seconds + 15) * len(steps) * 2 + 60)
        emulator = spawn.Process(target=emulator_process, args=(tls, talk_s, emulator_cpu, ports, loop), daemon=True)
        emulator.start()
        port = ports.get(timeout=30)
        results = spawn.Queue()
        print(
            f"# {platform.machine()}, {os.cpu_count()} CPUs: clients on CPU {client_cpu}, emulator on CPU "
            f"{emulator_cpu}; Python {platform.python_version()}, geminilive {geminilive.__version__}; "
            f"{loop} event loop (clients and emulator); {seconds:g} s measured per step"
        )
        print(
            f"{'client':>12} {'sessions':>8} {'late %':>7} {'up %':>6} {'down %':>7} {'cpu ms/s':>9} "
            f"{'KiB/sess':>9} {'emu ms/s':>9} {'errors':>6}"
        )
        best: dict[str, tuple[int, int]] = {}
        emulator_ms: list[float] = []
        for kind in args.clients.split(","):
            for n in steps:
                runs = []
                for _ in range(args.repeat):
                    step = spawn.Process(
                        target=step_process,
                        args=(kind, n, seconds, port, tls, emulator.pid, client_cpu, results, loop),
                    )
                    step.start()
                    r = results.get(timeout=seconds + 120)
                    step.join()
                    print(
                        f"{kind:>12} {n:>8} {r['late'] * 100:>7.2f} {r['up_late'] * 100:>6.2f} "
                        f"{r['down_late'] * 100:>7.2f} {r['cpu_ms']:>9.2f} {r['rss_kib']:>9.0f} "
                        f"{r['emu_cpu_ms']:>9.2f} {r['errors']:>6}",
                        flush=True,
                    )
                    runs.append(r)
                passed = [r for r in runs if _kept_pace(r)]
                if len(runs) > 1:
                    print(f"{'':>12} {n:>8} passed in {len(passed)} of {len(runs)} runs", flush=True)
                if 2 * len(passed) > len(runs):  # the median run kept pace
                    best[kind] = (n, len(passed))
                    emulator_ms.extend(r["emu_cpu_ms"] for r in passed)  # only where the emulator kept pace
                else:
                    break
        emulator.terminate()
    for kind, (n, passed) in best.items():
        runs = f" in {passed} of {args.repeat} runs" if args.repeat > 1 else ""
        print(f"{kind}: sustains {n} sessions on one core with under 1% late frames{runs} (of the steps tried)")
    if emulator_ms:
        lowest = min(emulator_ms)
        print(
            f"emulator: {lowest:.1f} ms of CPU per session-second at best, so about {1000 / lowest:.0f} "
            "sessions per core at real-time pace"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
