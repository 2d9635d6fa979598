"""geminilive's realtime model in a real LiveKit ``AgentSession``, against the emulator over
real sockets: audio both ways, interruptions, transcripts, tools declared the LiveKit way,
generate_reply, instructions changing with the agent, and every sample of user audio
reaching the service across faults. The session's audio I/O is LiveKit's own interface
(``livekit_harness``); no room and no LiveKit server are needed."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from framework_util import FAULTS, SLOW_RECONNECT, speech_chunks
from livekit import rtc
from livekit.agents import Agent, function_tool
from livekit.agents.metrics import RealtimeModelMetrics
from livekit_harness import agent_session
from PIL import Image

from audio_util import run
from fault_drill import delivered_at_least_once, last_chunk_in
from geminilive.emulator import Faults, LiveEmulator
from geminilive.emulator.models import ScriptModel, ScriptTurn, ToneModel
from geminilive.errors import GeminiLiveError, SessionError
from geminilive.integrations.livekit import ModelFailed, RealtimeModel
from geminilive.messages import FunctionCall
from geminilive.watchdog import WatchdogConfig


def test_an_agent_session_speaks_to_the_emulator_and_gets_the_reply_audio() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model="echo", record_input=True, realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Be terse.")) as s:
                chunks = speech_chunks(100)  # one turn: 1.2 s of speech, then 0.8 s quiet
                await s.send_audio(chunks)
                await s.until(lambda: s.speaker.seconds() >= 1.2, "the reply's audio")
                await asyncio.sleep(0.3)
                assert emu.input_audio() == b"".join(chunks), "the service got every sample, in order"
                setups = [c.setup for c in emu.connections]
        assert {f.sample_rate for f in s.speaker.frames} == {24000}
        # The echo model says back the turn it heard (the speech and the silence that ended it).
        assert 1.2 <= s.speaker.seconds() <= 2.0
        assert len(setups) == 1, "the agent's instructions went into the first setup: one connection"
        assert setups[0].system_instruction.parts[0].text == "Be terse."
        assert not s.errors

    run(scenario())


def test_a_participants_video_reaches_the_service_as_jpeg_frames() -> None:
    """LiveKit's video input goes to the session as realtimeInput video: a JPEG of the frame
    (the Live API takes images at about 1 per second; LiveKit's sampler sends the first)."""
    width, height = 64, 48
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[:, : width // 2] = (255, 0, 0, 255)  # red on the left, blue on the right
    rgba[:, width // 2 :] = (0, 0, 255, 255)

    async def scenario() -> list:
        async with LiveEmulator(model="echo", realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Look.")) as s:
                s.camera.put(rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes()))

                def videos() -> list:
                    received = [m for c in emu.connections for m in c.received]
                    return [m.realtime_input.video for m in received if m.realtime_input and m.realtime_input.video]

                await s.until(videos, "the frame at the service")
                assert not s.errors
                return videos()

    [video] = run(scenario())
    assert video.mime_type == "image/jpeg" and video.data[:2] == b"\xff\xd8", "a JPEG, as its type says"
    image = np.asarray(Image.open(io.BytesIO(video.data)).convert("RGB")).astype(int)
    assert image.shape == (height, width, 3)
    assert np.abs(image[:, :8] - (255, 0, 0)).max() < 40 and np.abs(image[:, -8:] - (0, 0, 255)).max() < 40


def test_microphone_audio_at_48_khz_reaches_the_service_at_16_khz() -> None:
    tone = (np.sin(2 * np.pi * 300 * np.arange(48000 * 2) / 48000) * 8000).astype("<i2").tobytes()
    frames = [tone[i : i + 1920] for i in range(0, len(tone), 1920)]  # 20 ms at 48 kHz

    async def scenario() -> None:
        async with LiveEmulator(model="echo", record_input=True, realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Hi.")) as s:
                await s.send_audio(frames, rate=48000, pace_s=0.002)
                await s.until(lambda: len(emu.input_audio()) >= 2 * 16000 * 2 - 2 * 160, "the audio")
                received = np.frombuffer(emu.input_audio(), "<i2").astype(float)
        spectrum = np.abs(np.fft.rfft(received[4000:-4000]))
        peak_hz = np.argmax(spectrum) * 16000 / (len(received) - 8000)
        assert abs(peak_hz - 300) < 5, "the tone, resampled (not played 3x slow)"

    run(scenario())


def test_transcripts_of_both_sides_reach_the_agent_session_and_its_chat() -> None:
    script = [ScriptTurn(input_transcript="What is the weather like?", text="It is sunny.", tone_s=0.4)]

    async def scenario() -> None:
        async with LiveEmulator(model=ScriptModel(script), realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Hi.")) as s:
                await s.send_audio(speech_chunks(100))
                await s.until(lambda: s.said("assistant") and s.said("user"), "both sides in the chat")
        final = [t.transcript for t in s.transcribed if t.is_final]
        assert final == ["What is the weather like?"]
        assert s.said("user") == ["What is the weather like?"]
        assert s.said("assistant") == ["It is sunny."]

    run(scenario())


def test_a_barge_in_stops_the_agent_and_clears_what_it_was_playing() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model=ToneModel(duration_s=4.0), speed=1.0) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Hi.")) as s:
                await s.send_audio(speech_chunks(100))
                await s.until(lambda: s.speaker.frames, "the reply's first audio")
                await s.send_audio(speech_chunks(30, seed=1))  # the user talks over it
                await s.until(lambda: s.speaker.cleared, "the output cleared")
                await s.until(lambda: s.said("assistant"), "the cut reply in the chat")
                [reply] = [item for item in s.items if getattr(item, "role", None) == "assistant"]
        assert reply.interrupted
        assert s.speaker.seconds() < 3.0, "not the whole reply"

    run(scenario())


def test_a_tool_declared_the_livekit_way_runs_and_its_result_goes_back() -> None:
    calls: list[str] = []

    @function_tool
    async def get_weather(city: str) -> dict:
        """The weather in a city."""
        calls.append(city)
        return {"sky": "clear", "celsius": 21}

    model = ScriptModel(
        [ScriptTurn(tool_calls=[FunctionCall(name="get_weather", args={"city": "Paris"})], text="Clear.", tone_s=0.3)]
    )

    async def scenario() -> None:
        async with LiveEmulator(model=model, realtime_playback=False) as emu:
            agent = Agent(instructions="Hi.", tools=[get_weather])
            async with agent_session(RealtimeModel(endpoint=emu.url), agent) as s:
                await s.send_audio(speech_chunks(100))
                await s.until(lambda: s.said("assistant"), "the reply after the result")
                setup = emu.connections[-1].setup
                conversation = emu.connections[-1].record.conversation
        assert calls == ["Paris"]
        declared = setup.tools[0].function_declarations[0]
        assert declared.name == "get_weather" and declared.parameters["required"] == ["city"]
        [[response]] = conversation.state["tool_responses"]
        assert response.name == "get_weather"
        assert "clear" in response.response["output"] and "21" in response.response["output"]
        assert s.said("assistant") == ["Clear."]
        assert len(emu.connections) == 1

    run(scenario())


def test_generate_reply_with_instructions_asks_the_model_for_a_reply() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model="echo", realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Hi.")) as s:
                handle = s.session.generate_reply(instructions="Greet the caller.")
                await handle
                await s.until(lambda: s.said("assistant"), "the reply")
        # The echo model answers a text turn with a tone as long as its text, transcribed as it.
        [said] = s.said("assistant")
        assert "Greet the caller." in said
        assert s.speaker.seconds() > 0.5

    run(scenario())


def test_a_new_agent_with_other_instructions_and_tools_resumes_the_session_with_them() -> None:
    """The Live API takes instructions and tools only in a setup: a handoff to another agent
    resumes the session on a new connection that asks for the new agent's, context kept."""
    script = [
        ScriptTurn(input_transcript="Book a table.", text="Let me pass you on.", tone_s=0.3),
        ScriptTurn(input_transcript="For two.", text="Booked.", tone_s=0.3),
    ]

    @function_tool
    async def book(people: int) -> str:
        """Book a table."""
        return "booked"

    async def scenario() -> None:
        async with LiveEmulator(model=ScriptModel(script), record_input=True, realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="You greet.")) as s:
                first = speech_chunks(100)
                await s.send_audio(first)
                await s.until(lambda: s.said("assistant"), "the first reply")
                s.session.update_agent(Agent(instructions="You book tables.", tools=[book]))
                await s.until(lambda: len(emu.connections) == 2 and emu.connections[1].setup, "a second connection")
                second = speech_chunks(100, seed=1)
                await s.send_audio(second)
                await s.until(lambda: len(s.said("assistant")) == 2, "the reply to the second turn")
                one, two = emu.connections
                received = emu.input_audio()
        assert two.setup.system_instruction.parts[0].text == "You book tables."
        assert two.setup.tools[0].function_declarations[0].name == "book"
        assert two.setup.session_resumption.handle, "a resumption, not a new session"
        assert two.record is one.record and len(two.record.conversation.turns) == 2
        assert s.said("assistant") == ["Let me pass you on.", "Booked."]
        assert received == b"".join(first + second)


def test_token_usage_is_reported_as_livekit_realtime_metrics() -> None:
    async def scenario() -> None:
        async with LiveEmulator(model="echo", realtime_playback=False) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Hi.")) as s:
                metrics: list = []

                def usage() -> list[RealtimeModelMetrics]:
                    return [m for m in metrics if isinstance(m, RealtimeModelMetrics) and m.output_tokens]

                s.session.on("metrics_collected", lambda e: metrics.append(e.metrics))
                await s.send_audio(speech_chunks(100))
                await s.until(lambda: usage(), "usage")
        first = usage()[0]
        assert first.input_tokens > 0 and first.ttft > 0

    run(scenario())


def test_the_models_silent_failures_are_recoverable_livekit_errors() -> None:
    """The first reply is rejected, the second near-silent: each is a recoverable error
    (LiveKit's session goes on) naming the failure, and the session counts them."""
    plan = {0: "rejected", 1: "near_silent"}

    async def scenario() -> None:
        emulator = LiveEmulator(model="echo", realtime_playback=False, silent_failures=lambda n, _: plan.get(n))
        async with emulator as emu:
            agent = Agent(instructions="Hi.")
            async with agent_session(RealtimeModel(endpoint=emu.url), agent) as s:
                await s.send_audio(speech_chunks(200))
                await s.until(lambda: len(s.errors) == 2, "two failures")
                await s.send_audio(speech_chunks(100, seed=2))
                await s.until(lambda: s.speaker.seconds() > 1.0, "a good reply after them")
                stats = agent.realtime_llm_session.session.stats
        assert [type(e.error.error) for e in s.errors] == [ModelFailed, ModelFailed]
        assert [e.error.error.failure.kind for e in s.errors] == ["rejected", "near_silent"]
        assert all(e.error.recoverable for e in s.errors)
        assert stats.model_failures == 2

    run(scenario())


def test_a_generate_reply_that_gets_no_reply_is_noticed() -> None:
    async def scenario() -> None:
        emulator = LiveEmulator(model="echo", realtime_playback=False, silent_failures=lambda n, _: "no_reply")
        async with emulator as emu:
            model = RealtimeModel(endpoint=emu.url, watchdog=WatchdogConfig(reply_timeout_s=1.0))
            async with agent_session(model, Agent(instructions="Hi.")) as s:
                s.session.generate_reply(instructions="Greet the caller.")
                await s.until(lambda: s.errors, "the failure", timeout_s=5)
        [error] = s.errors
        assert error.error.error.failure.kind == "no_reply" and error.error.recoverable

    run(scenario())


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_every_user_sample_reaches_the_service_across_a_fault_mid_conversation(fault: Faults) -> None:
    async def scenario() -> None:
        emulator = LiveEmulator(model="echo", record_input=True, realtime_playback=False, faults=[fault])
        async with emulator as emu:
            model = RealtimeModel(endpoint=emu.url, connect_options=SLOW_RECONNECT)
            agent = Agent(instructions="Hi.")
            async with agent_session(model, agent) as s:
                reconnected: list = []
                agent.realtime_llm_session.on("session_reconnected", reconnected.append)
                chunks = speech_chunks(250)  # 5 s: replies come and go while the fault hits
                await s.send_audio(chunks, pace_s=0.004)
                await s.until(lambda: last_chunk_in(emu.input_audio(), len(chunks)), "all the audio at the service")
                received = emu.input_audio()
                stats = agent.realtime_llm_session.session.stats
        assert reconnected
        assert not s.errors
        # At least once: audio in the replay margin (0.25 s, a chunk every 4 ms) before a
        # handle may be sent again, with what the resume replayed at once.
        resent = delivered_at_least_once(received, chunks)
        assert all(n <= 0.25 / 0.004 + stats.replayed_messages for n in resent), resent

    run(scenario())


def test_a_refused_connection_is_a_livekit_error_with_the_typed_geminilive_error() -> None:
    async def scenario() -> None:
        async with LiveEmulator(api_key="right-key") as emu:
            model = RealtimeModel(endpoint=emu.url, api_key="wrong-key")
            async with agent_session(model, Agent(instructions="Hi.")) as s:
                s.mic.put(speech_chunks(1)[0])
                await s.until(lambda: s.errors, "the error")
        [error] = s.errors
        assert isinstance(error.error.error, GeminiLiveError) and not error.error.recoverable
        assert "wrong-key" not in str(error.error.error)

    run(scenario())


def test_a_session_the_service_ends_for_good_is_a_livekit_error_that_closes_the_agent_session() -> None:
    """A normal close (1000) is not resumed: the framework hears of it, as of any other end."""

    async def scenario() -> None:
        async with LiveEmulator(model="echo", faults=[Faults(close_after_client_messages=20, close_code=1000)]) as emu:
            async with agent_session(RealtimeModel(endpoint=emu.url), Agent(instructions="Hi.")) as s:
                await s.send_audio(speech_chunks(40))
                await s.until(lambda: s.errors, "the error")
        [error] = s.errors
        assert isinstance(error.error.error, SessionError) and error.error.error.code == 1000
        assert not error.error.recoverable

    run(scenario())


async def message_sizes(model: RealtimeModel, emu: LiveEmulator, audio: bytes) -> tuple[bytes, list[int]]:
    """``audio`` into an agent session as a room's 10 ms frames (16 kHz); what the emulator
    received, and the size of each realtimeInput audio message, in order."""
    async with agent_session(model, Agent(instructions="Be terse.")) as s:
        frames = [audio[i : i + 320] for i in range(0, len(audio), 320)]
        await s.send_audio(frames, pace_s=0.002)
        await s.until(lambda: len(emu.input_audio()) >= len(audio), "all of it, the last part-chunk too")
        await asyncio.sleep(0.2)
        sizes = [len(m.realtime_input.audio.data) for c in emu.connections for m in c.received
                 if m.realtime_input and m.realtime_input.audio]  # fmt: skip
        return emu.input_audio(), sizes


@pytest.mark.parametrize("chunk_ms", [20, 50])
def test_a_rooms_10_ms_frames_go_to_the_service_in_whole_chunks_every_sample_in_order(chunk_ms: int) -> None:
    """``input_chunk_ms`` (fixed: ``steady_input_chunk_ms`` the same): fewer, longer
    realtimeInput messages (LiveKit's plugin sends 50 ms), the same audio, in order; a chunk
    the frames stop filling goes anyway."""
    audio = b"".join(speech_chunks(100))[:-320]  # 1.99 s: the last chunk is part of one

    async def scenario() -> tuple[bytes, list[int]]:
        async with LiveEmulator(model="echo", record_input=True, realtime_playback=False) as emu:
            model = RealtimeModel(endpoint=emu.url, input_chunk_ms=chunk_ms, steady_input_chunk_ms=chunk_ms)
            return await message_sizes(model, emu, audio)

    received, sizes = run(scenario())
    assert received == audio
    assert sizes and all(size == chunk_ms * 32 for size in sizes[:-1]), sorted(set(sizes))
    assert sizes[-1] == (len(audio) // 2 % (chunk_ms * 16) or chunk_ms * 16) * 2  # the part-chunk


def test_steady_speech_and_long_silences_go_in_longer_messages_and_turn_changes_at_once() -> None:
    """By default (``steady_input_chunk_ms=100``), a long silence and speech that has settled
    go in 100 ms messages; the first voiced frame after the silence, and the first quiet one
    after the speech, go at once; every sample arrives, in order."""
    rng = np.random.default_rng(3)
    pattern = [(30, 2.5), (6000, 1.0), (30, 0.6)]  # noise sd, seconds: silence, speech, silence
    audio = np.concatenate([rng.normal(0, sd, int(16000 * s)) for sd, s in pattern]).astype("<i2").tobytes()

    async def scenario() -> tuple[bytes, list[int]]:
        async with LiveEmulator(model="echo", record_input=True, realtime_playback=False) as emu:
            return await message_sizes(RealtimeModel(endpoint=emu.url), emu, audio)

    received, sizes = run(scenario())
    assert received == audio
    ends = np.cumsum(sizes) // 32  # where each message ends, in ms of audio
    durations = np.diff(ends, prepend=0)
    onset, speech_end = 2500, 3500
    assert set(durations[ends < 1980]) == {20} and 100 in durations[ends <= onset]
    assert onset + 10 in ends  # the speech's first frame, with the silence held before it
    assert 100 in durations[(ends > onset) & (ends <= speech_end)]
    assert ((ends > speech_end) & (ends <= speech_end + 20)).any()  # its end, at once
    assert set(durations[ends > speech_end + 20][:-1]) == {20}  # (the last: what was left)
    assert len(sizes) < 0.8 * len(audio) / 640
