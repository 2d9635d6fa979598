"""The ``geminilive`` command: talk, demo, devices, serve, phone, web, bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import geminilive
from geminilive import events as ev
from geminilive._loop import run
from geminilive.audio_io import ArraySource, AudioSink, MicrophoneSource, SpeakerSink, WavSink, WavSource
from geminilive.config import DEFAULT_MODEL
from geminilive.conversation import Conversation
from geminilive.emulator import LiveEmulator
from geminilive.errors import AudioDeviceError, GeminiLiveError
from geminilive.watchdog import RECOVERIES, WatchdogConfig

__all__ = ["main"]


def _speech(text: str, rate: int = 16000) -> np.ndarray:
    """Real speech from espeak-ng when installed, else a voiced-like synthetic sweep."""
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as d:
            raw = Path(d) / "speech.wav"
            subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
            samples, source_rate = geminilive.audio_io.read_wav(raw)
        r = geminilive.Resampler(source_rate, rate)
        return np.concatenate([r.process(samples), r.flush()])
    t = np.arange(int(rate * 1.5)) / rate
    return (0.3 * np.sin(2 * np.pi * (150 * t + 400 * t * t))).astype(np.float32)


class _Printer:
    """Transcripts as they come, and a one-line input level meter."""

    def __init__(self, meter: bool) -> None:
        self.meter = meter
        self.line_open = False

    def transcript(self, who: str, text: str, finished: bool) -> None:
        if not self.line_open:
            sys.stdout.write(f"\n{who:>5}: ")
            self.line_open = True
        sys.stdout.write(text)
        if finished:
            sys.stdout.write("\n")
            self.line_open = False
        sys.stdout.flush()

    def event(self, event: ev.Event) -> None:
        if isinstance(event, (ev.TurnComplete, ev.Interrupted)):
            self.line_open = False
            sys.stdout.write(f"\n  [{type(event).__name__}]\n")
        elif isinstance(event, ev.ModelFailure):
            self.line_open = False
            sys.stdout.write(f"\n  [the model failed: {event.kind}; recovery: {event.recovery or 'none'}]\n")

    async def level_meter(self, conversation: Conversation) -> None:
        while self.meter:
            level = conversation.input_level
            bars = int(min(1.0, level * 8) * 30)
            sys.stderr.write(f"\r  mic {'#' * bars:<30} {20 * np.log10(level + 1e-9):6.1f} dBFS")
            sys.stderr.flush()
            await asyncio.sleep(0.1)


def _connect_kwargs(args: argparse.Namespace, emulator: LiveEmulator | None) -> dict:
    config = geminilive.LiveConfig(
        voice=args.voice,
        system_instruction=args.system,
        input_audio_transcription=True,
        output_audio_transcription=True,
    )
    kwargs: dict = {"config": config}
    if args.model:
        kwargs["model"] = args.model
    if emulator is not None:
        kwargs["endpoint"] = emulator.url
    return kwargs


async def _emulator_unless_key(
    args: argparse.Namespace, model: str, who: str, *, token_port: int | None = None
) -> LiveEmulator | None:
    """The local emulator, started, when no API key is set or ``--emulator`` asks for it."""
    if (os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")) and not args.emulator:
        return None
    print(f"No GEMINI_API_KEY: {who} the local emulator (model '{model}').", flush=True)
    return await LiveEmulator(model=model, token_port=token_port).start()


def _recovery_ladder(text: str) -> tuple[str, ...]:
    steps = tuple(step.strip() for step in text.split(",") if step.strip())
    wrong = [step for step in steps if step not in RECOVERIES]
    if wrong:
        raise argparse.ArgumentTypeError(f"{', '.join(wrong)}: the steps are {', '.join(RECOVERIES)}")
    return steps


async def _talk(args: argparse.Namespace) -> int:
    if args.echo_cancellation and (args.input_wav or args.output_wav):
        print("--echo-cancellation works between the microphone and the speaker, not WAV files", file=sys.stderr)
        return 2
    emulator = await _emulator_unless_key(args, args.emulator_model, "talking to")
    try:
        async with geminilive.connect(**_connect_kwargs(args, emulator)) as session:
            source = WavSource(args.input_wav) if args.input_wav else MicrophoneSource(args.input_device)
            sink: AudioSink = WavSink(args.output_wav) if args.output_wav else SpeakerSink(args.output_device)
            printer = _Printer(meter=not args.input_wav)
            conversation = Conversation(
                session,
                source=source,
                sink=sink,
                on_transcript=printer.transcript,
                on_event=printer.event,
                local_barge_in=args.barge_in,
                echo_cancellation=args.echo_cancellation,
                watchdog=WatchdogConfig(recovery=args.recovery),
            )
            meter = asyncio.create_task(printer.level_meter(conversation))
            print("Listening. Ctrl-C to stop.")
            async with conversation:
                try:
                    if args.input_wav:
                        await conversation.wait(turns=args.turns, timeout=args.timeout)
                    else:
                        await conversation.wait(timeout=args.timeout)
                except (TimeoutError, KeyboardInterrupt, asyncio.CancelledError):
                    pass
            meter.cancel()
            print("\n" + conversation.latency_table())
    finally:
        if emulator is not None:
            await emulator.stop()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    """The main job on its embedded default: no key, no microphone, no network."""
    out = Path(args.output_wav)
    print("geminilive demo: local emulator (echo model), generated speech in, reply to", out)
    speech = _speech("Hello Gemini. This is the geminilive demo, speaking through the whole pipeline.")
    rate_in = 48000
    r = geminilive.Resampler(16000, rate_in)
    speech_48k = np.concatenate([r.process(speech), r.flush()])  # as a 48 kHz microphone would give it
    async with LiveEmulator(model="echo", speed=4.0) as emu:
        config = geminilive.LiveConfig(silence_duration_ms=500, output_audio_transcription=True)
        async with geminilive.connect(endpoint=emu.url, config=config) as session:
            sink = WavSink(out)
            events: list[ev.Event] = []
            conversation = Conversation(
                session,
                source=ArraySource(speech_48k, rate_in, trailing_silence_s=2.0),
                sink=sink,
                on_event=events.append,
            )
            start = time.monotonic()
            async with conversation:
                await conversation.wait(turns=1, timeout=60)
                await asyncio.sleep(0.2)
            print(f"\nEvents ({time.monotonic() - start:.1f} s):")
            counts: dict[str, int] = {}
            for e in events:
                counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
            for name, n in counts.items():
                print(f"  {name:<26} x{n}")
            print("\nLatency per turn (ms):")
            print(conversation.latency_table())
    print(f"\nReply written to {out} ({sink.written_s:.2f} s at 24 kHz).")
    if not args.no_play:
        try:
            with geminilive.devices.Playback() as speaker:
                speaker.push(geminilive.pcm.f32_to_s16le(np.ascontiguousarray(sink.audio)))
                speaker.end_of_turn()
                await asyncio.sleep(len(sink.audio) / 24000 + 0.3)
            print("Played the reply on the default output device.")
        except (AudioDeviceError, GeminiLiveError) as exc:
            print(f"No output device to play it on ({exc}).")
    return 0 if conversation.metrics and conversation.metrics[0].audio_received_s > 0 else 1


def _devices(args: argparse.Namespace) -> int:
    from geminilive.devices import list_devices

    for d in list_devices(backend_messages=args.backend_messages):
        if not (d.input_channels or d.output_channels):
            continue
        marks = ("in*" if d.is_default_input else "") + (" out*" if d.is_default_output else "")
        print(
            f"{d.id:<28} in {d.input_channels:>2} ch  out {d.output_channels:>2} ch  "
            f"default rate {d.default_output_rate or d.default_input_rate} Hz  {marks:<8} {d.name}"
        )
    return 0


async def _until_sigterm() -> None:
    """Until the process is asked to stop (SIGTERM; Ctrl-C raises KeyboardInterrupt as ever)."""
    stopping = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()


_LISTENING = "media streams on"  # in the line a phone server prints once it listens


async def _phone_workers(args: argparse.Namespace) -> int:
    """``--workers N``: N processes serving the same ports (SO_REUSEPORT: the kernel spreads
    the calls over them); SIGTERM goes to each, which drains, and this returns when all have."""
    if not hasattr(socket, "SO_REUSEPORT"):
        print("--workers needs SO_REUSEPORT (Linux, macOS, BSD); run one process per port instead", file=sys.stderr)
        return 2
    if args.port == 0 or args.webhook_port == 0:
        print("--workers shares fixed ports: give --port (and --webhook-port) a number, not 0", file=sys.stderr)
        return 2
    argv, value_next = [], False
    for arg in args.argv:  # the same command, one worker each
        if not value_next and arg != "--workers" and not arg.startswith("--workers="):
            argv.append(arg)
        value_next = arg == "--workers"
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "geminilive", *argv, "--reuse-port", stdout=asyncio.subprocess.PIPE
        )
        for _ in range(args.workers)
    ]
    loop = asyncio.get_running_loop()

    def forward(signum: int) -> None:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, forward, signum)
    # Ready once every worker listens (it prints where): until then the kernel would give
    # every call to the workers already listening.
    started = [await _until_listening(worker.stdout) for worker in workers if worker.stdout is not None]
    listening = all(lines and _LISTENING in lines[-1] for lines in started)
    if listening:
        print(f"{args.workers} workers on port {args.port}: pids {', '.join(str(w.pid) for w in workers)}", flush=True)
    else:
        print("a worker ended before it listened; stopping the others", file=sys.stderr, flush=True)
        forward(signal.SIGTERM)
    sys.stdout.write("".join(line for lines in started for line in lines))
    sys.stdout.flush()
    echoes = [asyncio.create_task(_echo_lines(worker.stdout)) for worker in workers if worker.stdout is not None]
    codes = [await worker.wait() for worker in workers]
    await asyncio.gather(*echoes)
    return max(codes, key=abs) if listening else max(1, *codes)


async def _until_listening(stream: asyncio.StreamReader) -> list[str]:
    """A worker's lines up to the one that says it listens (all of them if it ends first)."""
    lines: list[str] = []
    while line := (await stream.readline()).decode():
        lines.append(line)
        if _LISTENING in line:
            break
    return lines


async def _echo_lines(stream: asyncio.StreamReader) -> None:
    """A worker's output, line by line, on this process's."""
    while line := await stream.readline():
        sys.stdout.write(line.decode())
        sys.stdout.flush()


async def _phone(args: argparse.Namespace) -> int:
    from geminilive.telephony.server import PhoneServer

    if args.workers > 1:
        return await _phone_workers(args)
    emulator = await _emulator_unless_key(args, "echo", "calls talk to")
    kwargs = _connect_kwargs(args, emulator)
    phone = PhoneServer(
        lambda: geminilive.connect(**kwargs),
        host=args.host,
        port=args.port,
        webhook_port=args.webhook_port,
        public_url=args.public_url,
        max_calls=args.max_calls,
        provider=args.provider,
        reuse_port=args.reuse_port,
    )
    await phone.start()
    print(f"{args.provider} {_LISTENING} ws://{args.host}:{phone.port} (stream url: {phone.stream_url})", flush=True)
    if phone.webhook_port is not None:
        answer = "TwiML <Connect><Stream>" if args.provider == "twilio" else "NCCO connect to the websocket"
        print(f"Voice webhook ({answer}) on http://{args.host}:{phone.webhook_port}/", flush=True)
    try:
        serving = asyncio.create_task(phone.serve_forever())
        await _until_sigterm()
        print(f"SIGTERM: draining {len(phone.active)} call(s), up to {args.drain_s:g} s", flush=True)
        await phone.drain(args.drain_s)
        serving.cancel()
    finally:
        await phone.stop()
        if emulator is not None:
            await emulator.stop()
    return 0


async def _web(args: argparse.Namespace) -> int:
    from geminilive.web import WebServer
    from geminilive.web.tokens import TokenMinter

    emulator = await _emulator_unless_key(
        args, args.emulator_model, "the page talks to", token_port=0 if args.direct else None
    )
    kwargs = _connect_kwargs(args, emulator)
    tokens = None
    if args.direct:  # the page connects to the Live API itself, with a token minted here
        setup = kwargs["config"].to_setup(args.model or DEFAULT_MODEL)
        if emulator is not None:
            tokens = TokenMinter(None, setup, rest_url=emulator.tokens_url, live_url=emulator.base_url)
        else:
            tokens = TokenMinter(os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY"), setup)
    web = WebServer(
        lambda: geminilive.connect(**kwargs),
        host=args.host,
        port=args.port,
        backend="emulator" if emulator is not None else "Gemini Live API",
        max_tabs=args.max_tabs,
        idle_timeout_s=args.idle_timeout_s,
        tokens=tokens,
    )
    await web.start()
    if args.host in ("0.0.0.0", "::", ""):
        print(f"--host {args.host}: anyone who can reach this machine can talk to the model through it", flush=True)
    url = f"http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{web.port}/"
    print(f"geminilive web: open {url} (the microphone needs localhost or https)", flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(url)
    try:
        await _until_sigterm()
    finally:
        await web.stop()
        if emulator is not None:
            await emulator.stop()
    return 0


async def _serve(args: argparse.Namespace) -> int:
    emulator = LiveEmulator(
        args.host,
        args.port,
        model=args.model,
        certfile=args.tls_cert,
        keyfile=args.tls_key,
        api_key=args.api_key,
        speed=args.speed,
        chunk_ms=args.chunk_ms,
    )
    await emulator.start()
    print(f"geminilive emulator ({args.model}) listening on {emulator.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
    return 0


def _bench(args: argparse.Namespace) -> int:
    benches = Path(__file__).resolve().parents[2] / "benches"
    if not benches.is_dir():
        print("benches/ is part of the source checkout; run `geminilive bench` from a clone.")
        return 1
    status = 0
    for script in sorted(benches.glob("bench_*.py")):
        if args.only and args.only not in script.name:
            continue
        print(f"\n== {script.name}", flush=True)
        python = sys.executable
        if script.name == "bench_frameworks.py":  # the frameworks live in a venv of their own
            python = str(benches.parent / ".venv-frameworks" / "bin" / "python")
            if not Path(python).exists():
                print("needs the frameworks' venv: run `make test-frameworks` first")
                continue
        status |= subprocess.run([python, str(script), *(["--quick"] if args.quick else [])]).returncode
    return status


def _session_arguments(parser: argparse.ArgumentParser) -> None:
    """What the sessions a server opens are: the model, its voice and instructions."""
    parser.add_argument("--emulator", action="store_true", help="use the local emulator even with an API key")
    parser.add_argument("--model", help="model name")
    parser.add_argument("--voice", help="prebuilt voice")
    parser.add_argument("--system", help="system instruction")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geminilive", description="Real-time voice with the Gemini Live API.")
    parser.add_argument("--version", action="version", version=f"geminilive {geminilive.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    talk = sub.add_parser("talk", help="a live voice conversation (the service with GEMINI_API_KEY, else the emulator)")
    talk.add_argument("--model", help="model name (default: the native-audio model)")
    talk.add_argument("--voice", help="prebuilt voice, e.g. Kore, Puck")
    talk.add_argument("--system", help="system instruction")
    talk.add_argument("--input-device", help="input device name or id (see `geminilive devices`)")
    talk.add_argument("--output-device", help="output device name or id")
    talk.add_argument("--input-wav", help="speak this 16-bit WAV file instead of using a microphone")
    talk.add_argument("--output-wav", help="write the reply to this WAV file instead of a speaker")
    talk.add_argument("--emulator", action="store_true", help="use the local emulator even with an API key")
    talk.add_argument("--emulator-model", default="echo", choices=["echo", "tone"], help="the emulator's model")
    talk.add_argument(
        "--barge-in",
        default="off",
        choices=["off", "stop", "duck"],
        help="act on your voice before the server does: stop or duck the reply (needs headphones)",
    )
    talk.add_argument(
        "--echo-cancellation",
        action="store_true",
        help="cancel the speaker's sound from the microphone (open speakers, no headphones)",
    )
    talk.add_argument(
        "--recovery",
        type=_recovery_ladder,
        default=(),
        help="when the model fails silently, what to try in turn: e.g. reprompt,reconnect,fresh (default: none)",
    )
    talk.add_argument("--turns", type=int, default=1, help="with --input-wav: turns to wait for")
    talk.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")

    demo = sub.add_parser("demo", help="the whole pipeline offline: emulator, generated speech, reply to a WAV")
    demo.add_argument("--output-wav", default="geminilive-demo-reply.wav")
    demo.add_argument("--no-play", action="store_true", help="do not play the reply on the output device")

    devices = sub.add_parser("devices", help="list audio devices")
    devices.add_argument(
        "--backend-messages", action="store_true", help="show what ALSA/JACK print while probing (hidden by default)"
    )

    serve = sub.add_parser(
        "serve",
        help="run the local Live API emulator",
        description="Run the local Live API emulator: the same WebSocket protocol as the service, "
        "for development and tests without a key or network. Point geminilive.connect(endpoint=...) "
        "or google-genai (with --tls-cert/--tls-key; it insists on wss) at it.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--model", default="echo", choices=["echo", "tone"], help="reply model")
    serve.add_argument("--tls-cert", help="PEM certificate chain (the certificate, then its issuers') to serve wss://")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--api-key", help="require this key (x-goog-api-key header or Authorization)")
    serve.add_argument("--speed", type=float, default=4.0, help="reply streaming speed vs real time")
    serve.add_argument("--chunk-ms", type=int, default=40, help="reply audio chunk length")

    phone = sub.add_parser(
        "phone",
        help="bridge phone calls to the model (Twilio media streams, Vonage WebSockets)",
        description="Serve a provider's media streams, each call bridged to its own Live session (the service "
        "with GEMINI_API_KEY, else the emulator), and the voice webhook that connects a call to them.",
    )
    phone.add_argument("--provider", default="twilio", choices=["twilio", "vonage"])
    phone.add_argument(
        "--workers", type=int, default=1, help="processes sharing the ports (SO_REUSEPORT); calls spread over them"
    )
    phone.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers
    phone.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback, behind a tunnel)")
    phone.add_argument("--port", type=int, default=8080, help="media stream WebSocket port")
    phone.add_argument("--webhook-port", type=int, default=None, help="also answer the provider's voice webhook here")
    phone.add_argument("--public-url", help="the wss:// URL the provider reaches the media port at (in the answer)")
    phone.add_argument("--max-calls", type=int, default=100, help="calls at once; more are refused")
    phone.add_argument("--drain-s", type=float, default=30.0, help="on SIGTERM, how long running calls may go on")
    _session_arguments(phone)

    web = sub.add_parser(
        "web",
        help="talk to the model from a browser page (the service with GEMINI_API_KEY, else the emulator)",
        description="Serve a page and its relay: the browser's microphone and speaker, geminilive's pipeline "
        "(resampling, playout, barge-in, reconnects) and the model's replies, with transcripts, level meters, "
        "the per-turn latency chart and the connection's state. The API key stays on this server.",
    )
    web.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--open", action="store_true", help="open the page in the default browser")
    web.add_argument(
        "--direct",
        action="store_true",
        help="the browser connects to the Live API itself, with a one-use ephemeral token minted here "
        "(locked to this setup; the key stays here) instead of through the relay",
    )
    web.add_argument("--max-tabs", type=int, default=1, help="conversations at once (one tab each)")
    web.add_argument(
        "--idle-timeout-s", type=float, default=600.0, help="close a conversation that sent no audio this long"
    )
    web.add_argument("--emulator-model", default="echo", choices=["echo", "tone"], help="the emulator's model")
    _session_arguments(web)

    bench = sub.add_parser("bench", help="run the benchmarks and print their tables")
    bench.add_argument("--only", help="run only benches whose name contains this")
    bench.add_argument("--quick", action="store_true", help="shorter runs")

    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.command == "serve" and bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    try:
        if args.command == "talk":
            return run(_talk(args))
        if args.command == "demo":
            return run(_demo(args))
        if args.command == "devices":
            return _devices(args)
        if args.command == "serve":
            return run(_serve(args))
        if args.command == "phone":
            return run(_phone(args))
        if args.command == "web":
            return run(_web(args))
        return _bench(args)
    except KeyboardInterrupt:
        return 130
    except GeminiLiveError as exc:
        print(f"geminilive: {exc}", file=sys.stderr)
        return 1
