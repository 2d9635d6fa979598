"""A fresh session that remembers: when the service refuses to resume, the new session gets
the conversation so far as text before anything else."""

from __future__ import annotations

import geminilive
from audio_util import TEXT_MODEL, run
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.emulator import Faults, LiveEmulator
from geminilive.transcript import Transcript

FAST = {"speed": float("inf"), "realtime_playback": False}


def test_the_transcript_keeps_the_newest_turns_within_its_budget() -> None:
    transcript = Transcript(max_chars=30)
    for n in range(4):
        transcript.user(f"question {n}")
        transcript.model("answer ")  # streamed in pieces
        transcript.model(f" {n}")
        transcript.end_turn()
    kept = [(t.role, t.parts[0].text) for t in transcript.turns()]
    assert kept == [("model", "answer 2"), ("user", "question 3"), ("model", "answer 3")]  # 26 of 30 chars


async def conversation_then_refused_resume(remember_chars: int):
    # Connection 0: two turns, then a 1011 close; connection 1: the resume is refused with 1008
    # (the handle forgotten); connection 2: a fresh session.
    faults = [Faults(close_after_turns=2), Faults(refuse_setup_code=1008, close_reason="session not found"), None]
    async with LiveEmulator(model="echo", faults=faults, **FAST) as emu:
        config = LiveConfig(response_modalities=["TEXT"], transparent_resumption=True)
        async with geminilive.connect(
            endpoint=emu.url, model=TEXT_MODEL, config=config, remember_chars=remember_chars
        ) as session:
            seen = []
            for text in ("my name is Ada", "I live in Oslo", "what is my name"):
                await session.send_client_content(text)
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ev.TurnComplete):
                        break
        return seen, [list(c.received) for c in emu.connections]


def test_a_fresh_session_after_a_refused_resume_is_told_the_conversation_so_far() -> None:
    seen, received = run(conversation_then_refused_resume(8000))
    [failed] = [e for e in seen if isinstance(e, ev.ResumptionFailed)]
    assert failed.seeded_turns == 4
    first = received[2][0].client_content
    assert first is not None and first.turn_complete is False, "context, not a question"
    said = [(t.role, t.parts[0].text) for t in first.turns]
    assert [role for role, _ in said] == ["user", "model", "user", "model"]
    assert said[0][1] == "my name is Ada" and said[2][1] == "I live in Oslo"
    assert all(text for _, text in said), "the model's replies are in too"
    last = received[2][1].client_content
    assert last is not None and last.turns[0].parts[0].text == "what is my name", "then the new question"


def test_remember_chars_0_starts_a_fresh_session_with_nothing() -> None:
    seen, received = run(conversation_then_refused_resume(0))
    [failed] = [e for e in seen if isinstance(e, ev.ResumptionFailed)]
    assert failed.seeded_turns == 0
    assert received[2][0].client_content.turns[0].parts[0].text == "what is my name"


def test_past_the_session_time_limit_the_refused_handle_starts_a_session_that_remembers() -> None:
    """The service closes a session at its age limit (1011) and refuses its handles after
    (1007): the client starts afresh, seeded with the conversation, and goes on."""

    async def scenario():
        async with LiveEmulator(model="echo", session_time_limit_s=1.0, **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"], transparent_resumption=True)
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                seen = []
                await session.send_client_content("my name is Ada")
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ev.ResumptionFailed):
                        break
                await session.send_client_content("what is my name")
                async for event in session:
                    seen.append(event)
                    if isinstance(event, ev.TurnComplete):
                        break
                return seen, [(c.ws.close_code, list(c.received)) for c in emu.connections], session.stats

    seen, connections, stats = run(scenario())
    codes = [code for code, _ in connections]
    assert codes[:2] == [1011, 1007], codes
    [failed] = [e for e in seen if isinstance(e, ev.ResumptionFailed)]
    assert "refused" in failed.reason and failed.seeded_turns == 2
    seeded = connections[2][1][0].client_content
    assert seeded.turns[0].parts[0].text == "my name is Ada"
    assert isinstance(seen[-1], ev.TurnComplete) and stats.fresh_starts == 1
