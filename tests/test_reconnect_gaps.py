"""Nothing is lost in the gaps between connections: what the old connection still delivers
after ``goAway``, and what the caller sends while a resume attempt fails or hangs.

The goAway tests run against a server written here with plain ``websockets`` (its own
framing, handles and timing, nothing of the emulator's), so they check the client against an
independent peer; the failed-resume tests use the emulator's setup faults and its record of
the audio every session consumed.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

import geminilive
from audio_util import run
from fault_drill import FAILED_RESUMES, drill, mixed_faults
from geminilive import events as ev
from geminilive.emulator import Faults
from geminilive.messages import FunctionResponse

AUDIO = base64.b64encode(np.arange(480, dtype="<i2").tobytes()).decode()
# Server messages sent in one burst right behind goAway, and the event each must come out as.
BEHIND_GO_AWAY: dict[str, tuple[dict[str, Any], type]] = {
    "toolCall": ({"toolCall": {"functionCalls": [{"id": "c1", "name": "lookup", "args": {}}]}}, ev.ToolCall),
    "audio": (
        {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": AUDIO}}]}
            }
        },
        ev.AudioChunk,
    ),
    "outputTranscription": ({"serverContent": {"outputTranscription": {"text": "behind"}}}, ev.OutputTranscription),
    "inputTranscription": ({"serverContent": {"inputTranscription": {"text": "heard"}}}, ev.InputTranscription),
    "text": ({"serverContent": {"modelTurn": {"parts": [{"text": "late words"}]}}}, ev.TextChunk),
    "interrupted": ({"serverContent": {"interrupted": True}}, ev.Interrupted),
    "generationComplete": ({"serverContent": {"generationComplete": True}}, ev.GenerationComplete),
    "turnComplete": ({"serverContent": {"turnComplete": True}}, ev.TurnComplete),
    "usageMetadata": ({"usageMetadata": {"totalTokenCount": 7}}, ev.Usage),
    "sessionResumptionUpdate": (
        {"sessionResumptionUpdate": {"newHandle": "h2", "resumable": True}},
        ev.SessionResumptionUpdate,
    ),
    "voiceActivity": ({"voiceActivity": {"voiceActivityType": "ACTIVITY_START"}}, ev.VoiceActivity),
}


def burst_frames(ws: ServerConnection, messages: list[dict[str, Any]]) -> bytes:
    """The frames of ``messages``, for one write (they reach the client in the same read)."""
    out = []
    for message in messages:
        ws.protocol.send_binary(json.dumps(message).encode())
        out.extend(ws.protocol.data_to_send())
    return b"".join(out)


class GoAwayServer:
    """Connection 0: setupComplete, a resumable handle "h1", then ``goAway`` and ``behind``
    in one write; later connections: setupComplete. Every connection's setup and messages
    are kept."""

    def __init__(self, behind: list[dict[str, Any]]) -> None:
        self.behind = behind
        self.setups: list[dict[str, Any]] = []
        self.received: list[list[dict[str, Any]]] = []

    async def handler(self, ws: ServerConnection) -> None:
        setup = json.loads(await ws.recv())["setup"]
        n = len(self.setups)
        self.setups.append(setup)
        self.received.append([])
        await ws.send(json.dumps({"setupComplete": {}}).encode())
        if n == 0:
            await ws.send(json.dumps({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}}).encode())
            ws.transport.write(burst_frames(ws, [{"goAway": {"timeLeft": "5s"}}, *self.behind]))
        async for message in ws:
            self.received[n].append(json.loads(message))


async def go_away_session(behind: list[dict[str, Any]], *, answer_calls: bool = False):
    server = GoAwayServer(behind)
    async with serve(server.handler, "127.0.0.1", 0) as listening:
        port = listening.sockets[0].getsockname()[1]
        events: list[ev.Event] = []
        async with geminilive.connect(endpoint=f"ws://127.0.0.1:{port}/live", model="gemini-live-test") as session:
            async with asyncio.timeout(10):
                async for event in session:
                    events.append(event)
                    if isinstance(event, ev.ToolCall) and answer_calls:
                        await session.send_tool_response(
                            [
                                FunctionResponse(id=c.id, name=c.name, response={"ok": True})
                                for c in event.function_calls
                            ]
                        )
                    if isinstance(event, ev.Resumed):
                        break
            await session.send_text("on the new connection")
            async with asyncio.timeout(10):
                while not any("realtimeInput" in m for m in server.received[-1]):
                    await asyncio.sleep(0.01)
        return events, server


def kinds(events: list[ev.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.mark.parametrize("kind", sorted(BEHIND_GO_AWAY))
def test_every_message_behind_a_go_away_comes_out_before_the_new_connection(kind: str) -> None:
    message, event_type = BEHIND_GO_AWAY[kind]
    events, server = run(go_away_session([message], answer_calls=True))
    names = kinds(events)
    assert names[:3] == ["SetupComplete", "SessionResumptionUpdate", "GoAway"], names
    assert isinstance(events[3], event_type), names
    assert names[4:] == ["SetupComplete", "Resumed"], names
    assert len(server.setups) == 2
    newest = "h2" if kind == "sessionResumptionUpdate" else "h1"
    assert server.setups[1]["sessionResumption"]["handle"] == newest, "resumed with the newest handle"


def test_a_tool_call_behind_a_go_away_is_answered_on_the_new_connection() -> None:
    message, _ = BEHIND_GO_AWAY["toolCall"]
    events, server = run(go_away_session([message], answer_calls=True))
    [call] = [e for e in events if isinstance(e, ev.ToolCall)]
    assert call.function_calls[0].id == "c1"
    answers = [m for m in server.received[1] if "toolResponse" in m]
    assert [r["id"] for a in answers for r in a["toolResponse"]["functionResponses"]] == ["c1"]
    assert not any("toolResponse" in m for m in server.received[0])


def test_a_whole_turn_behind_a_go_away_comes_out_in_order() -> None:
    turn = [{"serverContent": {"modelTurn": {"parts": [{"text": f"part {i}"}]}}} for i in range(20)] + [
        {"serverContent": {"outputTranscription": {"text": "done"}}},
        {"serverContent": {"turnComplete": True}},
    ]
    events, _ = run(go_away_session(turn))
    names = kinds(events)
    assert names.index("GoAway") < names.index("TurnComplete") < names.index("Resumed")
    assert [e.text for e in events if isinstance(e, ev.TextChunk)] == [f"part {i}" for i in range(20)]
    assert names.count("SetupComplete") == 2 and names[-2:] == ["SetupComplete", "Resumed"]


def planned(faults: list[Faults | None]):
    return lambda n: faults[n] if n < len(faults) else None


@pytest.mark.parametrize("failure", range(len(FAILED_RESUMES)))
def test_sending_through_a_resume_attempt_that_fails_loses_nothing(failure: int) -> None:
    # A 1011 close, then a resume attempt that is refused (1011 or 1008), dropped, or hangs
    # past the setup timeout (the hung server reads no close frame either: the client's
    # close waits its timeout, the widest gap), then one that works; audio streams all along
    # (a chunk every 0.8 ms), and send_audio must never raise.
    faults = [Faults(close_after_client_messages=40), FAILED_RESUMES[failure], None]
    report, emu = run(drill(chunks=1200, faults=planned(faults), seed=failure))
    assert len(emu.connections) == 3
    assert report.identical and (report.lost, report.duplicated, report.reordered) == (0, 0, False), report
    fresh = FAILED_RESUMES[failure].refuse_setup_code == 1008
    assert (report.reconnects, report.fresh_starts, report.resumed) == (1, int(fresh), int(not fresh)), report
    assert report.events.get("ResumptionFailed", 0) == int(fresh) and report.events["Reconnecting"] == 2
    assert report.dropped_audio_frames == 0


def test_sending_through_every_kind_of_failed_resume_in_a_row() -> None:
    faults = [Faults(close_after_client_messages=40), *FAILED_RESUMES, Faults(close_after_client_messages=200), None]
    report, emu = run(drill(chunks=2500, faults=planned(faults)))
    assert len(emu.connections) == len(faults)
    assert report.identical and (report.lost, report.duplicated, report.reordered) == (0, 0, False), report
    assert (report.reconnects, report.fresh_starts) == (2, 1), report


def test_without_transparent_resumption_a_resumed_connections_replay_is_kept_until_covered() -> None:
    """A handle without an index covers what the server had read when it sent it: the one
    right behind setupComplete covers none of the replay that follows. Taking it to cover all
    that had been sent lost each resumed connection's replay (no turn ends in quiet audio, so
    no later handle comes)."""
    faults = [Faults(drop_after_client_messages=40), Faults(close_after_client_messages=60), None]
    report, emu = run(drill(chunks=400, faults=planned(faults), transparent=False, speech=False))
    assert len(emu.connections) == 3 and emu.connections[0].setup.session_resumption.transparent is None
    assert report.identical and (report.lost, report.duplicated, report.reordered) == (0, 0, False), report
    assert report.resumed == 2, report


@pytest.mark.parametrize("margin_s", [None, 0.0], ids=["default-margin", "no-margin"])
def test_without_an_index_what_was_still_on_its_way_to_the_service_is_sent_again(margin_s: float | None) -> None:
    """The emulator takes each message in 60 ms after it arrives (a long uplink) and, as the
    service does, sends a handle right after turnComplete, which then leaves out the last
    60 ms of what the client had sent when that message reached it. The session's default
    margin sends that again on a resume, and repeats no more than a margin's worth; with no
    margin it is lost."""
    uplink = Faults(read_latency_s=0.06, close_after_client_messages=300)
    faults = [uplink, uplink, Faults(read_latency_s=0.06)]
    speedup = 5.0  # a 20 ms chunk every 4 ms
    report, _ = run(
        drill(chunks=1000, faults=planned(faults), transparent=False, speedup=speedup, replay_margin_s=margin_s)
    )
    assert report.resumed == 2 and report.events.get("SessionResumptionUpdate", 0) > 6, report
    if margin_s == 0.0:
        assert report.lost > 0, "the handles left out what was in flight, and nothing sent it again"
        return
    assert report.lost == 0 and report.first_in_order, report
    margin_chunks = 0.25 / (0.02 / speedup)
    assert len(report.resent) == 2 and max(report.resent) <= 2 * margin_chunks, report


@pytest.mark.parametrize("seed", range(8))
def test_randomized_drill_with_failed_and_stalled_resumes_loses_nothing(seed: int) -> None:
    """Seeded mixes of every fault kind: 1011 closes, silent drops, goAways with reply audio
    behind them, jitter, and resume attempts refused (1011, 1008), dropped and stalled."""
    faults = mixed_faults(16, 100 + seed, messages=(15, 90), failed_resumes=True)
    report, emu = run(drill(chunks=2500, faults=faults, seed=seed))
    assert len(emu.connections) > 16, "every planned fault happened"
    assert report.identical, report
    assert (report.lost, report.duplicated, report.reordered) == (0, 0, False), report
    assert report.fresh_starts >= 1 and report.resumed >= 3, report
    assert report.dropped_audio_frames == 0, report
