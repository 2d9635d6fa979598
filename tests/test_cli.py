"""The command line: the demo end to end, serve's help, devices."""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import wave
from pathlib import Path

import pytest


def geminilive(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geminilive", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_demo_runs_the_whole_pipeline_offline(tmp_path) -> None:
    out = tmp_path / "reply.wav"
    result = geminilive("demo", "--no-play", "--output-wav", str(out))
    assert result.returncode == 0, result.stderr
    assert "AudioChunk" in result.stdout and "TurnComplete" in result.stdout
    assert "end->play" in result.stdout
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000 and w.getnframes() > 24000


def test_serve_help_documents_the_emulator() -> None:
    result = geminilive("serve", "--help")
    assert result.returncode == 0
    for option in ("--port", "--model", "--tls-cert", "--tls-key", "--api-key", "loopback"):
        assert option in result.stdout


@pytest.mark.usefixtures("pulseaudio")
def test_devices_lists_the_default_devices() -> None:
    result = geminilive("devices")
    assert result.returncode == 0
    assert "in*" in result.stdout and "out*" in result.stdout
    assert result.stderr == "", "probing noise from the C libraries is hidden"
    noisy = geminilive("devices", "--backend-messages")
    assert noisy.returncode == 0 and noisy.stdout == result.stdout
    assert "ALSA lib" in noisy.stderr, "the noise this hides is there to hide (else the test above proves nothing)"


def test_version_is_cargo_tomls() -> None:
    cargo = (Path(__file__).parents[1] / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    result = geminilive("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"geminilive {version}"
    assert importlib.metadata.version("geminilive") == version


def test_talk_with_a_wav_file_uses_the_emulator_without_a_key(tmp_path) -> None:
    import numpy as np

    from geminilive.pcm import f32_to_s16le

    t = np.arange(16000) / 16000
    x = np.concatenate([np.zeros(3200), 0.3 * np.sin(2 * np.pi * (200 * t + 600 * t * t)), np.zeros(3200)])
    with wave.open(str(tmp_path / "in.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(f32_to_s16le(x.astype(np.float32)))
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    result = geminilive(
        "talk", "--input-wav", str(tmp_path / "in.wav"), "--output-wav", str(tmp_path / "out.wav"), "--timeout", "30",
        "--barge-in", "duck", "--recovery", "reprompt,reconnect", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "local emulator" in result.stdout
    with wave.open(str(tmp_path / "out.wav")) as w:
        assert w.getnframes() > 20000


def test_echo_cancellation_is_refused_with_wav_files(tmp_path) -> None:
    result = geminilive("talk", "--input-wav", str(tmp_path / "none.wav"), "--echo-cancellation")
    assert result.returncode == 2
    assert "--echo-cancellation works between the microphone and the speaker" in result.stderr


def test_phone_serves_the_webhook_and_media_streams_with_the_emulator_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    command = [sys.executable, "-m", "geminilive", "phone", "--port", "0", "--webhook-port", "0",
               "--public-url", "wss://example.org/media"]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        _talk_to_the_phone_server(server)


def _talk_to_the_phone_server(server: subprocess.Popen) -> None:
    try:
        assert server.stdout is not None
        lines = [server.stdout.readline() for _ in range(3)]
        assert "local emulator" in lines[0]
        media_port = int(re.search(r"ws://127.0.0.1:(\d+)", lines[1]).group(1))
        webhook_port = int(re.search(r"http://127.0.0.1:(\d+)", lines[2]).group(1))
        with socket.create_connection(("127.0.0.1", webhook_port), timeout=10) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            answer = b"".join(iter(lambda: conn.recv(4096), b""))
        assert b'<Stream url="wss://example.org/media" />' in answer
        with socket.create_connection(("127.0.0.1", media_port), timeout=10):
            pass  # the media port listens
    finally:
        server.send_signal(signal.SIGTERM)  # drains (no calls here), then exits
        assert server.wait(timeout=20) == 0
    assert server.stdout is not None and "draining 0 call(s)" in server.stdout.read()


def test_talk_refuses_an_unknown_recovery_step() -> None:
    result = geminilive("talk", "--recovery", "reprompt,reboot")
    assert result.returncode == 2 and "reboot: the steps are none, reprompt, reconnect, fresh" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_phone_workers_share_the_ports_spread_the_calls_and_drain_on_sigterm() -> None:
    import asyncio
    import json

    from websockets.asyncio.client import connect as ws_connect

    from audio_util import run

    media, webhook = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    command = [sys.executable, "-m", "geminilive", "phone", "--workers", "2", "--port", str(media),
               "--webhook-port", str(webhook), "--drain-s", "1"]  # fmt: skip

    async def calls(pids: set[int]) -> dict[int, int]:
        async def metrics() -> tuple[int, int]:
            reader, writer = await asyncio.open_connection("127.0.0.1", webhook)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            body = (await reader.read()).decode()
            writer.close()
            pid = int(re.search(r'geminilive_phone_worker\{pid="(\d+)"\} 1\.0', body).group(1))
            return pid, int(float(re.search(r"^geminilive_phone_active_calls (\S+)$", body, re.M).group(1)))

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", media)
            except OSError:
                return False
            writer.close()
            return True

        for _ in range(200):
            if await listening():
                break
            await asyncio.sleep(0.1)
        streams = []
        for n in range(16):
            ws = await ws_connect(f"ws://127.0.0.1:{media}/media")
            start = {"streamSid": f"MZ{n}", "callSid": f"CA{n}", "tracks": ["inbound"], "customParameters": {}}
            await ws.send(json.dumps({"event": "start", "start": start, "streamSid": f"MZ{n}"}))
            streams.append(ws)
        seen: dict[int, int] = {}

        async def both_seen() -> bool:
            pid, active = await metrics()
            seen[pid] = active
            return set(seen) == pids and sum(seen.values()) == 16

        for _ in range(300):
            if await both_seen():
                break
            await asyncio.sleep(0.02)
        for ws in streams:
            await ws.close()
        return seen

    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as parent:
        try:
            assert parent.stdout is not None
            first = parent.stdout.readline()
            pids = {int(p) for p in re.search(r"pids ([\d, ]+)", first).group(1).split(", ")}
            assert len(pids) == 2, first
            seen = run(calls(pids))
            assert set(seen) == pids and sum(seen.values()) == 16, seen
            assert all(seen.values()), f"the kernel gave every call to one worker: {seen}"
        finally:
            parent.send_signal(signal.SIGTERM)
            assert parent.wait(timeout=30) == 0
        assert parent.stdout.read().count("SIGTERM: draining") == 2, "each worker drained"


def test_phone_workers_that_cannot_listen_end_the_command_with_an_error() -> None:
    """A port another program holds (without SO_REUSEPORT): no worker listens, the parent
    says so and ends with an error rather than claiming to serve."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = geminilive("phone", "--workers", "2", "--port", str(port), "--webhook-port", str(_free_port()))
    assert result.returncode != 0
    assert "pids" not in result.stdout and "a worker ended before it listened" in result.stderr


def test_phone_workers_need_fixed_ports() -> None:
    result = geminilive("phone", "--workers", "2", "--port", "0")
    assert result.returncode == 2 and "give --port" in result.stderr


def test_web_serves_the_page_and_its_relay_with_the_emulator_by_default() -> None:
    import json
    import urllib.request

    from websockets.asyncio.client import connect as ws_connect

    from audio_util import run

    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    command = [sys.executable, "-m", "geminilive", "web", "--port", "0"]

    async def hello(port: int) -> dict:
        async with ws_connect(f"ws://127.0.0.1:{port}/relay", origin=f"http://127.0.0.1:{port}") as relay:  # type: ignore[arg-type]
            await relay.send(json.dumps({"type": "hello", "client": "cli-test-tab", "sampleRate": 48000}))
            return json.loads(await relay.recv())

    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            lines = [server.stdout.readline() for _ in range(2)]
            assert "local emulator" in lines[0]
            port = int(re.search(r"open http://localhost:(\d+)/", lines[1]).group(1))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
                assert b"/static/app.js" in page.read()
            ready = run(hello(port))
            assert ready["type"] == "ready" and ready["backend"] == "emulator" and ready["outputRate"] == 48000
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=20) == 0


def test_web_direct_hands_the_page_a_token_for_the_emulator() -> None:
    import json
    import urllib.request

    from websockets.asyncio.client import connect as ws_connect

    from audio_util import run

    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}

    async def token(port: int) -> dict:
        async with ws_connect(f"ws://127.0.0.1:{port}/relay", origin=f"http://127.0.0.1:{port}") as relay:  # type: ignore[arg-type]
            await relay.send(json.dumps({"type": "token"}))
            return json.loads(await relay.recv())

    command = [sys.executable, "-m", "geminilive", "web", "--direct", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            lines = [server.stdout.readline() for _ in range(2)]
            port = int(re.search(r"open http://localhost:(\d+)/", lines[1]).group(1))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config.json", timeout=10) as answer:
                assert json.loads(answer.read())["mode"] == "direct"
                policy = answer.headers["Content-Security-Policy"]
            grant = run(token(port))
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=20) == 0
    assert grant["type"] == "token" and grant["token"].startswith("auth_tokens/")
    assert grant["url"].startswith("ws://127.0.0.1:") and grant["url"].endswith("BidiGenerateContentConstrained")
    assert grant["url"].split("/ws/")[0] in policy  # the page may connect there, and only there
    assert grant["setup"]["model"].startswith("models/")
