"""geminilive's Pipecat service in a real Pipecat pipeline, against the emulator over real
sockets: audio both ways, interruptions, transcripts, tools through Pipecat's function API,
and every sample of user audio reaching the service across faults."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from framework_util import FAULTS, SLOW_RECONNECT, speech_chunks
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    MetricsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import LLMUsageMetricsData
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import FunctionCallParams
from pipecat_harness import pipeline

from audio_util import run
from fault_drill import delivered_at_least_once, last_chunk_in
from geminilive.emulator import Faults, LiveEmulator
from geminilive.emulator.models import ScriptModel, ScriptTurn, ToneModel
from geminilive.errors import GeminiLiveError, SessionError
from geminilive.integrations.pipecat import GeminiLiveService
from geminilive.messages import FunctionCall


def audio_s(frames: list[TTSAudioRawFrame]) -> float:
    return sum(len(f.audio) // 2 for f in frames) / frames[0].sample_rate if frames else 0.0


@pytest.mark.parametrize("out_rate", [24000, 48000])
def test_a_pipeline_speaks_to_the_emulator_and_gets_audio_at_its_output_rate(out_rate: int) -> None:
    async def scenario() -> None:
        async with LiveEmulator(model="echo", record_input=True, realtime_playback=False) as emu:
            service = GeminiLiveService(endpoint=emu.url)
            async with pipeline(service, audio_out_rate=out_rate) as p:
                chunks = speech_chunks(100)  # one turn: 1.2 s of speech, then 0.8 s quiet
                await p.send_audio(chunks)
                await p.until(lambda: p.frames(LLMFullResponseEndFrame), "the reply's end")
                audio = p.frames(TTSAudioRawFrame)
                marks = (TTSStartedFrame, TTSStoppedFrame, LLMFullResponseStartFrame, LLMFullResponseEndFrame)
                kinds = [type(f) for f in p.frames(marks)]
                assert emu.input_audio() == b"".join(chunks), "the service got every sample, in order"
        assert {f.sample_rate for f in audio} == {out_rate}
        assert kinds[:2] == [TTSStartedFrame, LLMFullResponseStartFrame]
        assert kinds[-2:] == [TTSStoppedFrame, LLMFullResponseEndFrame]
        # The echo model says back the turn it heard (the speech and the silence that ended it).
        assert 1.2 <= audio_s(audio) <= 2.0

    run(scenario())


def test_user_and_model_transcripts_come_out_as_pipecat_frames() -> None:
    script = [ScriptTurn(input_transcript="What is the weather like?", text="It is sunny.", tone_s=0.4)]

    async def scenario() -> None:
        async with LiveEmulator(model=ScriptModel(script), realtime_playback=False) as emu:
            async with pipeline(GeminiLiveService(endpoint=emu.url)) as p:
                await p.send_audio(speech_chunks(100))
                await p.until(lambda: p.frames(LLMFullResponseEndFrame), "the reply's end")
                heard = [f.text for f in p.frames(TranscriptionFrame, direction="up")]
                said = "".join(f.text for f in p.frames(TTSTextFrame))
        assert heard == ["What is the weather like?"]
        assert said == "It is sunny."

    run(scenario())


def test_a_barge_in_interrupts_the_reply_and_the_pipeline_is_told() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model=ToneModel(duration_s=4.0), speed=1.0) as emu:
            async with pipeline(GeminiLiveService(endpoint=emu.url)) as p:
                await p.send_audio(speech_chunks(100))
                await p.until(lambda: p.frames(TTSAudioRawFrame), "the reply's first audio")
                await p.send_audio(speech_chunks(30, seed=1)[:30])  # the user talks over it
                await p.until(lambda: p.frames(InterruptionFrame), "the interruption")
                await asyncio.sleep(0.3)
                frames = p.frames((InterruptionFrame, TTSAudioRawFrame, TTSStoppedFrame))
                up = p.frames(InterruptionFrame, direction="up")
        cut = next(i for i, f in enumerate(frames) if isinstance(f, InterruptionFrame))
        assert isinstance(frames[cut + 1], TTSStoppedFrame), "the response ends at the interruption"
        assert not any(isinstance(f, TTSAudioRawFrame) for f in frames[cut:]), "nothing of the cut reply after it"
        assert audio_s([f for f in frames[:cut] if isinstance(f, TTSAudioRawFrame)]) < 3.0
        assert up, "the interruption goes upstream too (to the user aggregator)"

    run(scenario())


def test_an_end_frame_during_a_reply_waits_for_the_reply_to_end() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model=ToneModel(duration_s=1.5), speed=1.0, realtime_playback=False) as emu:
            async with pipeline(GeminiLiveService(endpoint=emu.url)) as p:
                await p.send_audio(speech_chunks(100))
                await p.until(lambda: p.frames(TTSAudioRawFrame), "the reply's first audio")
                await p.send(EndFrame())
                await p.until(lambda: p.frames(EndFrame), "the end of the pipeline")
                frames = p.frames((TTSAudioRawFrame, LLMFullResponseEndFrame, EndFrame))
        assert isinstance(frames[-1], EndFrame) and isinstance(frames[-2], LLMFullResponseEndFrame)
        assert audio_s([f for f in frames if isinstance(f, TTSAudioRawFrame)]) == pytest.approx(1.5, abs=0.01)

    run(scenario())


def test_a_tool_call_runs_through_pipecats_function_api_and_the_result_goes_back() -> None:
    calls: list[dict] = []

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        await params.result_callback({"sky": "clear", "celsius": 21})

    weather = FunctionSchema(
        name="get_weather",
        description="The weather in a city.",
        properties={"city": {"type": "string"}},
        required=["city"],
        handler=get_weather,
    )
    model = ScriptModel(
        [ScriptTurn(tool_calls=[FunctionCall(name="get_weather", args={"city": "Paris"})], text="Clear.", tone_s=0.3)]
    )

    async def scenario() -> None:
        async with LiveEmulator(model=model, realtime_playback=False) as emu:
            async with pipeline(GeminiLiveService(endpoint=emu.url, tools=[weather])) as p:
                await p.send_audio(speech_chunks(100))
                await p.until(lambda: p.frames(LLMFullResponseEndFrame), "the reply after the result")
                setup = emu.connections[-1].setup
                conversation = emu.connections[-1].record.conversation
        assert calls == [{"city": "Paris"}]
        declared = setup.tools[0].function_declarations[0]
        assert declared.name == "get_weather" and declared.parameters["required"] == ["city"]
        [[response]] = conversation.state["tool_responses"]
        assert response.name == "get_weather" and response.response == {"sky": "clear", "celsius": 21}

    run(scenario())


def test_the_first_context_seeds_the_conversation_and_its_tools_go_in_the_setup() -> None:
    """As with GeminiLiveLLMService: tools the context brings go into the setup (a new
    session: the Live API takes them only there), its messages are sent as turns, and the
    model answers them at once."""
    lookup = FunctionSchema(name="lookup", description="Look a word up.", properties={}, required=[])
    context = LLMContext(messages=[{"role": "user", "content": "Say hello."}], tools=ToolsSchema([lookup]))

    async def scenario() -> None:
        async with LiveEmulator(model="echo", realtime_playback=False) as emu:
            service = GeminiLiveService(endpoint=emu.url, system_instruction="You are terse.")
            async with pipeline(service) as p:
                await p.send(LLMContextFrame(context))
                await p.until(lambda: p.frames(LLMFullResponseEndFrame), "the reply to the context")
                said = "".join(f.text for f in p.frames(TTSTextFrame))
                setups = [c.setup for c in emu.connections]
        assert said == "Say hello."  # the echo model answers a text turn with its text
        assert [s.tools is not None for s in setups] == [False, True]
        assert setups[-1].tools[0].function_declarations[0].name == "lookup"
        assert setups[-1].system_instruction.parts[0].text == "You are terse."

    run(scenario())


def test_token_usage_is_reported_as_pipecat_usage_metrics() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model="echo", realtime_playback=False) as emu:
            async with pipeline(GeminiLiveService(endpoint=emu.url), enable_metrics=True) as p:
                await p.send_audio(speech_chunks(100))
                await p.until(lambda: p.frames(LLMFullResponseEndFrame), "the reply's end")
                await asyncio.sleep(0.1)
                usage = [d for f in p.frames(MetricsFrame) for d in f.data if isinstance(d, LLMUsageMetricsData)]
        assert usage and usage[-1].value.prompt_tokens > 0 and usage[-1].value.completion_tokens > 0

    run(scenario())


def test_the_models_silent_failures_are_pipecat_events() -> None:
    """The first reply is rejected, the second near-silent: each an ``on_model_failure``
    event, counted by the session; the pipeline goes on to the next reply."""
    plan = {0: "rejected", 1: "near_silent"}

    async def scenario() -> None:
        emulator = LiveEmulator(model="echo", realtime_playback=False, silent_failures=lambda n, _: plan.get(n))
        async with emulator as emu:
            service = GeminiLiveService(endpoint=emu.url)
            failures: list = []

            @service.event_handler("on_model_failure")
            async def on_model_failure(_service: object, failure: object) -> None:
                failures.append(failure)

            async with pipeline(service) as p:
                await p.send_audio(speech_chunks(200))
                await p.until(lambda: len(failures) == 2, "two failures")
                await p.send_audio(speech_chunks(100, seed=2))
                await p.until(lambda: audio_s(p.frames(TTSAudioRawFrame)) > 1.0, "a good reply after them")
                stats = service.session.stats
                errors = p.frames(ErrorFrame, direction="up")
        assert [f.kind for f in failures] == ["rejected", "near_silent"]
        assert stats.model_failures == 2 and not errors

    run(scenario())


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_every_user_sample_reaches_the_service_across_a_fault_mid_conversation(fault: Faults) -> None:
    async def scenario() -> None:
        emulator = LiveEmulator(model="echo", record_input=True, realtime_playback=False, faults=[fault])
        async with emulator as emu:
            service = GeminiLiveService(endpoint=emu.url, connect_options=SLOW_RECONNECT)
            async with pipeline(service) as p:
                chunks = speech_chunks(250)  # 5 s: replies come and go while the fault hits
                await p.send_audio(chunks, pace_s=0.004)
                await p.until(lambda: last_chunk_in(emu.input_audio(), len(chunks)), "all the audio at the service")
                received = emu.input_audio()
                stats = service.session.stats
                reconnects = service.session.stats.reconnects
                errors = p.frames(ErrorFrame, direction="up")
        assert reconnects >= 1
        assert not errors
        # At least once: audio in the replay margin (0.25 s, a chunk every 4 ms) before a
        # handle may be sent again, with what the resume replayed at once.
        resent = delivered_at_least_once(received, chunks)
        assert all(n <= 0.25 / 0.004 + stats.replayed_messages for n in resent), resent

    run(scenario())


def test_a_refused_connection_is_a_pipecat_error_with_the_typed_geminilive_error() -> None:
    async def scenario() -> None:
        async with LiveEmulator(api_key="right-key") as emu:
            service = GeminiLiveService(endpoint=emu.url, api_key="wrong-key")
            async with pipeline(service) as p:
                await p.until(lambda: p.frames(ErrorFrame, direction="up"), "the error")
                [error] = p.frames(ErrorFrame, direction="up")
        assert isinstance(error.exception, GeminiLiveError)
        assert "wrong-key" not in error.error

    run(scenario())


def test_importing_geminilive_imports_no_framework() -> None:
    code = (
        "import sys, geminilive, geminilive.integrations; "
        "print(sorted(m for m in sys.modules if m.startswith(('pipecat', 'livekit'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "pipecat" in sys.modules  # here they are installed, and imported by the test


def test_a_session_the_service_ends_for_good_is_a_permanent_pipecat_error() -> None:
    """A normal close (1000) is not resumed: the pipeline hears of it, as of any other end."""

    async def scenario() -> None:
        async with LiveEmulator(model="echo", faults=[Faults(close_after_client_messages=20, close_code=1000)]) as emu:
            async with pipeline(GeminiLiveService(endpoint=emu.url)) as p:
                await p.send_audio(speech_chunks(40))
                await p.until(lambda: p.frames(ErrorFrame, direction="up"), "the error")
                [error] = p.frames(ErrorFrame, direction="up")
        assert isinstance(error.exception, SessionError) and error.exception.code == 1000
        assert "the Live session ended (1000" in error.error

    run(scenario())
