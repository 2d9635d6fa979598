"""Per-message cost of the protocol layer against google-genai, in the same run.

Send: a 20 ms, 16 kHz audio chunk (640 bytes of PCM) into the frame handed to the socket
(geminilive `Session.send_audio` vs google-genai `AsyncSession.send_realtime_input`).
Receive: a 40 ms, 24 kHz audio message as the service sends it (pretty-printed JSON, standard
base64) into PCM bytes (`async for event in session` vs google-genai's receive path,
`AsyncSession._receive`, which `receive()` iterates). Both run on the same fake socket that
records sends and replays one frame, so only the client code is measured. Target (issue 3):
at least 20x less time per message than google-genai.

    python benches/bench_protocol.py [--messages 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time

import google.genai
import numpy as np
from google import genai
from google.genai import types
from google.genai.live import AsyncSession

import geminilive
from geminilive import events as ev
from geminilive.messages import Blob, Content, Part, ServerContent, ServerMessage, encode_server
from geminilive.session import Endpoint, Session


class FakeSocket:
    """Accepts sends (websockets' coroutine, as google-genai calls it, and geminilive's
    connection's direct write); every recv returns the same frame. Neither side frames."""

    must_drain = False
    arrival_stamp = None  # (what geminilive's WebSocket notes as a message arrives: nothing here)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.sent = 0

    async def send(self, data, text=None) -> None:
        self.sent += len(data)

    def send_now(self, data, text=True) -> None:
        self.sent += len(data)

    async def recv(self, decode=None):
        return self.frame


def server_frame() -> tuple[bytes, bytes]:
    pcm = (np.sin(np.arange(960) / 5) * 8000).astype("<i2").tobytes()
    part = Part(inline_data=Blob(mime_type="audio/pcm;rate=24000", data=pcm))
    return encode_server(ServerMessage(server_content=ServerContent(model_turn=Content(parts=[part])))), pcm


def ours(frame: bytes) -> Session:
    session = Session(Endpoint("ws://127.0.0.1/unused", {}), geminilive.LiveConfig().to_setup("m"))
    session._protocol.receive_data(b'{"setupComplete": {}}')
    session._protocol.data_to_send()
    session._ws = FakeSocket(frame)  # type: ignore[assignment]
    return session


def theirs(frame: bytes) -> AsyncSession:
    client = genai.Client(api_key="bench")
    return AsyncSession(api_client=client._api_client, websocket=FakeSocket(frame))  # type: ignore[arg-type]


async def time_loop(n: int, step) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await step()
    return (time.perf_counter() - t0) / n


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 3000, 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    gc.collect()
    gc.freeze()
    frame, pcm_out = server_frame()
    chunk = (np.sin(np.arange(320) / 3) * 8000).astype("<i2").tobytes()
    chunk_f32 = (np.sin(np.arange(960) / 9) * 0.25).astype(np.float32)  # 20 ms from a 48 kHz microphone
    our_session, their_session = ours(frame), theirs(frame)
    blob = types.Blob(data=chunk, mime_type="audio/pcm;rate=16000")

    async def our_send() -> None:
        await our_session.send_audio(chunk, 16000)

    async def our_send_f32_48k() -> None:
        await our_session.send_audio(chunk_f32, 48000)

    async def their_send() -> None:
        await their_session.send_realtime_input(audio=blob)

    async def our_receive() -> None:
        event = await our_session.receive()
        assert isinstance(event, ev.AudioChunk) and event.data == pcm_out

    async def their_receive() -> None:
        message = await their_session._receive()
        assert message.data == pcm_out

    cases = {
        "send 20 ms (bytes, 16 kHz)": (our_send, their_send),
        "send 20 ms (float32, 48 kHz)": (our_send_f32_48k, their_send),
        "receive 40 ms audio": (our_receive, their_receive),
    }
    print(
        f"geminilive {geminilive.__version__}, google-genai {google.genai.__version__}; "
        f"{args.messages} messages x {args.rounds} rounds, medians (and the per-round ratio range)"
    )
    print(f"{'case':<30} {'geminilive us':>14} {'google-genai us':>16} {'ratio':>8} {'range':>9}")
    for name, (a, b) in cases.items():
        await time_loop(200, a)
        await time_loop(200, b)
        times_a, times_b = [], []
        for _ in range(args.rounds):
            times_a.append(await time_loop(args.messages, a))
            times_b.append(await time_loop(args.messages, b))
        mine, peer = statistics.median(times_a), statistics.median(times_b)
        ratios = [t / o for o, t in zip(times_a, times_b, strict=True)]
        print(
            f"{name:<30} {mine * 1e6:>14.2f} {peer * 1e6:>16.2f} {peer / mine:>7.1f}x "
            f"{min(ratios):>6.1f}-{max(ratios):.1f}"
        )
    print(
        "(the float32 row includes resampling 48k -> 16k and f32 -> s16 in Rust; google-genai is "
        "given ready 16 kHz bytes)"
    )


if __name__ == "__main__":
    asyncio.run(main())
