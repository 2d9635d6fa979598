"""The tool registry's hygiene: duplicates within a turn answered once, structured errors,
cancellation; and a conversation whose model repeats a call."""

from __future__ import annotations

import asyncio

import numpy as np

import geminilive
from audio_util import run
from geminilive import LiveConfig
from geminilive.audio_io import ArraySource, CallbackSink
from geminilive.conversation import Conversation
from geminilive.emulator import LiveEmulator, ScriptModel, ScriptTurn
from geminilive.messages import FunctionCall, FunctionResponse
from geminilive.tools import ToolError, ToolRegistry


def registry() -> tuple[ToolRegistry, list[dict]]:
    tools = ToolRegistry()
    runs: list[dict] = []

    @tools.register
    async def book(table: int, party: int = 2) -> dict:
        """Book a table."""
        runs.append({"table": table, "party": party})
        await asyncio.sleep(0.05)
        return {"booked": table}

    @tools.register
    def flaky(kind: str) -> dict:
        """Fails."""
        if kind == "timeout":
            raise TimeoutError("the booking system did not answer")
        if kind == "told":
            raise ToolError("that table does not exist", retryable=False)
        raise KeyError(kind)

    return tools, runs


async def answers(tools: ToolRegistry, batches: list[list[FunctionCall]], *, turns: bool = False) -> list:
    out: list[FunctionResponse] = []

    async def respond(response: FunctionResponse) -> None:
        out.append(response)

    for batch in batches:
        tools.start(batch, respond)
        if turns:
            await asyncio.sleep(0.2)
            tools.new_turn()
    await asyncio.sleep(0.3)
    return out


def test_a_call_repeated_within_a_turn_runs_once_and_every_id_is_answered() -> None:
    tools, runs = registry()
    calls = [FunctionCall(id=f"c{i}", name="book", args={"table": 4, "party": 2}) for i in range(3)]
    other = FunctionCall(id="c9", name="book", args={"party": 2, "table": 5})
    out = run(answers(tools, [calls[:2], [calls[2], other]]))
    assert sorted(r.id for r in out) == ["c0", "c1", "c2", "c9"]
    assert {r.id: r.response for r in out}["c2"] == {"booked": 4}
    assert runs == [{"table": 4, "party": 2}, {"table": 5, "party": 2}], "the repeats did not run again"
    assert tools.duplicates_answered == 2


def test_across_turns_or_with_dedup_off_a_repeat_runs_again() -> None:
    tools, runs = registry()
    call = {"name": "book", "args": {"table": 1}}
    run(answers(tools, [[FunctionCall(id="a", **call)], [FunctionCall(id="b", **call)]], turns=True))
    assert len(runs) == 2
    tools, runs = registry()
    tools.answer_duplicates = False
    run(answers(tools, [[FunctionCall(id="a", **call), FunctionCall(id="b", **call)]]))
    assert len(runs) == 2


def test_a_function_that_raises_answers_with_a_structured_error() -> None:
    tools, _ = registry()
    out = run(answers(tools, [[FunctionCall(id=k, name="flaky", args={"kind": k}) for k in ("timeout", "told", "x")]]))
    errors = {r.id: r.response["error"] for r in out}
    timeout = {"type": "TimeoutError", "message": "the booking system did not answer", "retryable": True}
    assert errors["timeout"] == timeout
    assert errors["told"] == {"type": "ToolError", "message": "that table does not exist", "retryable": False}
    assert errors["x"]["type"] == "KeyError" and errors["x"]["retryable"] is False
    [unknown] = run(answers(tools, [[FunctionCall(id="u", name="nope", args={})]]))
    assert unknown.response["error"]["type"] == "UnknownFunction"


def test_cancelling_the_first_of_two_repeats_lets_the_second_run_itself() -> None:
    async def scenario():
        tools, runs = registry()
        out: list[FunctionResponse] = []

        async def respond(response: FunctionResponse) -> None:
            out.append(response)

        call = {"name": "book", "args": {"table": 7}}
        tools.start([FunctionCall(id="a", **call), FunctionCall(id="b", **call)], respond)
        await asyncio.sleep(0.01)
        tools.cancel(["a"])  # toolCallCancellation for the first
        await asyncio.sleep(0.3)
        return out, runs

    out, runs = run(scenario())
    assert [r.id for r in out] == ["b"] and out[0].response == {"booked": 7}
    assert len(runs) == 2, "the first started, was cancelled; the second ran itself"


def test_a_model_that_repeats_a_call_in_a_turn_gets_two_answers_from_one_run() -> None:
    tools, runs = registry()
    repeated = [FunctionCall(name="book", args={"table": 3}), FunctionCall(name="book", args={"table": 3})]
    script = ScriptModel([ScriptTurn(text="booked", tool_calls=repeated)])

    async def scenario():
        async with LiveEmulator(model=script, speed=float("inf"), realtime_playback=False) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=tools.tools)) as session:
                conversation = Conversation(
                    session, source=ArraySource(np.zeros(0, np.float32), 16000), sink=CallbackSink(lambda x: None),
                    tools=tools,
                )  # fmt: skip
                async with conversation:
                    await session.send_text("book table 3")
                    await conversation.wait(turns=1, timeout=10)
                return emu.connections[0]

    connection = run(scenario())
    [responses] = connection.record.conversation.state["tool_responses"]
    assert len(responses) == 2 and len({r.id for r in responses}) == 2
    assert all(r.response == {"booked": 3} for r in responses)
    assert len(runs) == 1
