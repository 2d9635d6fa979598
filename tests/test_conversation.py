"""The conversation loop against the emulator: sources, sinks, tools, barge-in, metrics."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest

import geminilive
from audio_util import LOOPS, chirp, run, silence, speak, until, xcorr_peak
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.audio_io import ArraySource, BufferedSink, CallbackSink, IteratorSource, WavSink, WavSource
from geminilive.conversation import Conversation
from geminilive.emulator import Faults, LiveEmulator, ScriptModel, ScriptTurn, ToneModel
from geminilive.emulator.server import INVALID_ARGUMENT
from geminilive.errors import AudioDeviceError, InvalidArgumentError
from geminilive.messages import FunctionCall
from geminilive.tools import ToolRegistry
from pulse import doomed_pulse_server


def test_wav_in_wav_out_echo_with_real_speech(tmp_path) -> None:
    speech = speak("Hello there, this is a test of the voice pipeline.", tmp_path / "speech.wav", rate=22050)

    async def scenario():
        async with LiveEmulator(model="echo", speed=4.0) as emu:
            config = LiveConfig(silence_duration_ms=500, output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                sink = WavSink(tmp_path / "reply.wav")
                conversation = await session.start_audio_conversation(
                    source=WavSource(tmp_path / "speech.wav", trailing_silence_s=2.5), sink=sink
                )
                await conversation.wait(turns=1, timeout=20)
                await asyncio.sleep(0.3)
                await conversation.stop()
                return conversation

    conversation = run(scenario())
    with wave.open(str(tmp_path / "reply.wav")) as w:
        assert w.getframerate() == 24000
        reply = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    expected = geminilive.Resampler(22050, 24000).process(speech)
    # The reply is the speech as the server's VAD cut it: find it inside what was said.
    score, _ = xcorr_peak(expected, reply)
    assert score > 0.9, score
    assert len(reply) > 0.8 * len(expected), (len(reply), len(expected))
    [metrics] = conversation.metrics
    assert metrics.audio_received_s > 1.0
    assert metrics.speech_end_to_first_audio_ms is not None and metrics.speech_end_to_first_audio_ms > 0
    assert metrics.capture_to_send_ms is not None and metrics.receive_to_play_ms is not None
    assert "end->play" in conversation.latency_table()


async def talk_over_the_reply(session, played: list[np.ndarray], *, after_s: float):
    """Microphone frames: silence while the model is asked for a long story and ``after_s`` of
    its reply plays (into ``played``), then speech over it, then silence."""
    speech = np.concatenate([silence(0.2, 16000), chirp(0.4, 16000)])
    await session.send_text("tell me a long story")
    while sum(np.count_nonzero(p) for p in played) < after_s * 24000:
        yield np.zeros(320, np.float32)
        await asyncio.sleep(0.02)
    for i in range(0, len(speech), 320):
        yield speech[i : i + 320]
        await asyncio.sleep(0.02)
    for _ in range(50):
        yield np.zeros(320, np.float32)
        await asyncio.sleep(0.02)


def test_interruption_clears_the_sink() -> None:
    played = []

    async def scenario():
        async with LiveEmulator(model=ToneModel(duration_s=4.0), speed=1.5) as emu:
            config = LiveConfig(silence_duration_ms=200)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                sink = BufferedSink(played.append)
                frames = talk_over_the_reply(session, played, after_s=0.5)
                conversation = Conversation(session, source=IteratorSource(frames, 16000), sink=sink)
                async with conversation:
                    await conversation.wait(turns=1, timeout=20)
                    await asyncio.sleep(0.2)
                return conversation, sink.stats

    conversation, stats = run(scenario())
    [turn] = conversation.metrics[:1]
    assert turn.interrupted
    assert stats.discarded > 0, "queued model audio was dropped"
    assert turn.interrupted_to_silence_ms is not None
    audio = np.concatenate(played)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    assert (loud[-1] - loud[0]) / 24000 < 3.0, "the 4 s reply was cut short"


def test_tools_are_answered_from_the_registry() -> None:
    tools = ToolRegistry()

    @tools.register
    async def get_weather(city: str, unit: str = "celsius") -> dict:
        """The weather in a city."""
        return {"city": city, "sky": "clear", "unit": unit}

    script = ScriptModel(
        [ScriptTurn(text="sunny", tool_calls=[FunctionCall(name="get_weather", args={"city": "Oslo"})])]
    )

    async def scenario():
        async with LiveEmulator(model=script, speed=float("inf"), realtime_playback=False) as emu:
            async with geminilive.connect(endpoint=emu.url, config=LiveConfig(tools=tools.tools)) as session:
                conversation = Conversation(
                    session,
                    source=ArraySource(np.zeros(0, np.float32), 16000),
                    sink=CallbackSink(lambda x: None),
                    tools=tools,
                )
                async with conversation:
                    await session.send_text("weather?")
                    await conversation.wait(turns=1, timeout=10)
                return emu.connections[0]

    connection = run(scenario())
    declaration = connection.setup.tools[0].function_declarations[0]
    assert declaration.parameters == {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}, "unit": {"type": "STRING"}},
        "required": ["city"],
    }
    [[response]] = connection.record.conversation.state["tool_responses"]
    assert response.response == {"city": "Oslo", "sky": "clear", "unit": "celsius"}


def test_events_and_transcripts_reach_the_hooks() -> None:
    seen, transcripts = [], []

    async def scenario():
        async with LiveEmulator(model="echo", speed=float("inf"), realtime_playback=False) as emu:
            config = LiveConfig(output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                conversation = Conversation(
                    session,
                    source=ArraySource(np.zeros(0, np.float32), 16000),
                    sink=CallbackSink(lambda x: None, output_rate_hz=8000),
                    on_event=seen.append,
                    on_transcript=lambda who, text, done: transcripts.append((who, text)),
                )
                async with conversation:
                    await session.send_text("hi there")
                    await conversation.wait(turns=1, timeout=10)

    run(scenario())
    assert any(isinstance(e, ev.TurnComplete) for e in seen)
    assert "".join(t for who, t in transcripts if who == "model") == "hi there"


def talk_over_the_model(local_barge_in: str, speech_s: float):
    """The model talks for 4 s with NO_INTERRUPTION, so the server never cuts it off; half a
    second into its reply the user speaks for ``speech_s``. Returns the sink's stats, what
    played, and how many samples had played when the user began."""
    played: list[np.ndarray] = []
    speech_at: list[int] = []

    async def scenario():
        async with LiveEmulator(model=ToneModel(duration_s=4.0), speed=4.0) as emu:
            config = LiveConfig(activity_handling="NO_INTERRUPTION", silence_duration_ms=200)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                sink = BufferedSink(played.append)
                speech = chirp(speech_s, 16000)

                async def frames():
                    await session.send_text("tell me a long story")
                    while sum(np.count_nonzero(p) for p in played) < 24000 // 2:
                        yield np.zeros(320, np.float32)
                        await asyncio.sleep(0.02)
                    speech_at.append(sum(len(p) for p in played))
                    for i in range(0, len(speech), 320):
                        yield speech[i : i + 320]
                        await asyncio.sleep(0.02)
                    for _ in range(150):
                        yield np.zeros(320, np.float32)
                        await asyncio.sleep(0.02)

                conversation = Conversation(
                    session, source=IteratorSource(frames(), 16000), sink=sink, local_barge_in=local_barge_in
                )
                async with conversation:
                    await conversation.wait(turns=1, timeout=20)
                return conversation, sink.stats

    conversation, stats = run(scenario())
    assert not any(isinstance(e, ev.Interrupted) for e in conversation.events), "the server did not interrupt"
    return stats, np.concatenate(played), speech_at[0]


def test_local_barge_in_stops_playback_before_the_server_does() -> None:
    stats, audio, _ = talk_over_the_model("stop", 0.4)
    assert stats.discarded > 24000, "the client cleared the queued reply itself"
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    assert (loud[-1] - loud[0]) / 24000 < 3.0


def test_local_barge_in_ducks_the_model_while_the_user_speaks_and_restores_it_after() -> None:
    """A "duck" barge-in comes back up when the user stops (the server let the model talk on),
    having dropped nothing."""
    stats, audio, start = talk_over_the_model("duck", 0.6)

    def level(from_s: float, to_s: float) -> float:
        """RMS of what played from ``from_s`` to ``to_s`` after the user started speaking."""
        return float(np.sqrt(np.mean(audio[start + int(from_s * 24000) : start + int(to_s * 24000)] ** 2)))

    before, during, after = level(-0.4, -0.1), level(0.25, 0.55), level(1.3, 1.6)
    assert during / before == pytest.approx(0.25, abs=0.05), (before, during, after)
    assert after / before == pytest.approx(1.0, abs=0.05), "back to full level once the user stopped"
    assert stats.discarded == 0 and stats.played == 4 * 24000, "ducking drops nothing"


def test_duck_needs_a_sink_that_can_turn_down(tmp_path) -> None:
    class PlainSink:
        sample_rate_hz = 24000

    with pytest.raises(TypeError, match="set_gain"):
        Conversation(None, source=IteratorSource([], 16000), sink=PlainSink(), local_barge_in="duck")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local_barge_in"):
        Conversation(None, source=IteratorSource([], 16000), sink=PlainSink(), local_barge_in="loud")  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_conversation_plays_on_through_a_reconnect(loop: str) -> None:
    """A 1011 close in the middle of a reply: what had arrived keeps playing while the session
    resumes, nothing queued is thrown away, and the next turn is answered and played."""
    played: list[np.ndarray] = []
    seen: list[ev.Event] = []

    async def scenario():
        faults = [Faults(close_after_client_messages=10), None]
        async with LiveEmulator(model=ToneModel(duration_s=2.0), speed=4.0, faults=faults) as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                sink = BufferedSink(played.append)

                async def frames():
                    for _ in range(400):
                        yield np.zeros(320, np.float32)
                        await asyncio.sleep(0.02)

                conversation = Conversation(
                    session, source=IteratorSource(frames(), 16000), sink=sink, on_event=seen.append
                )

                def turns_after_resume() -> int:
                    kinds = [type(e) for e in seen]
                    return kinds[kinds.index(ev.Resumed) :].count(ev.TurnComplete) if ev.Resumed in kinds else -1

                async with conversation:
                    await session.send_text("talk")
                    # The close comes before any handle covers "talk": the resumed connection
                    # sends it again, and its reply plays to the end before the next turn.
                    await until(lambda: turns_after_resume() >= 0, 5.0, "the resume")
                    await until(lambda: turns_after_resume() >= 1, 10.0, "a reply")
                    await session.send_text("again")
                    await until(lambda: turns_after_resume() >= 2, 10.0, "the next reply")
                    await asyncio.sleep(2.5)
                return sink.stats

    stats = run(scenario(), loop=loop)
    kinds = [type(e).__name__ for e in seen]
    assert "Reconnecting" in kinds and "Resumed" in kinds, kinds
    resumed_at = kinds.index("Resumed")
    assert kinds.index("Reconnecting") < resumed_at
    assert "AudioChunk" in kinds[:resumed_at], "the close came in the middle of the first reply"
    assert "AudioChunk" in kinds[resumed_at:], "the next turn was answered"
    assert stats.discarded == 0, "nothing queued was dropped"
    audio = np.concatenate(played)
    received = sum(len(e.data) // 2 for e in seen if isinstance(e, ev.AudioChunk))
    assert np.count_nonzero(np.abs(audio) > 0.01) > 0.9 * received, "what arrived was played"


def test_a_lost_session_ends_the_conversation_with_its_error() -> None:
    """A close the client may not reconnect after (1007): ``wait`` raises the typed error at
    once instead of waiting out its timeout, and ``error`` keeps it."""

    async def scenario():
        faults = [Faults(close_after_client_messages=10, close_code=1007, close_reason=INVALID_ARGUMENT)]
        async with LiveEmulator(model="echo", faults=faults) as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                conversation = Conversation(
                    session, source=ArraySource(silence(5.0, 16000), 16000), sink=BufferedSink(lambda _: None)
                )
                async with conversation:
                    with pytest.raises(InvalidArgumentError, match="invalid argument"):
                        await conversation.wait(timeout=10)
                    return conversation.error

    assert isinstance(run(scenario()), InvalidArgumentError)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_vanished_audio_server_ends_the_conversation_with_a_device_error(tmp_path, loop: str) -> None:
    """Kill the audio server under a microphone-and-speaker conversation: ``wait`` raises
    :class:`AudioDeviceError` (it used to return as if the conversation had ended well)."""

    async def scenario(kill_server):
        async with LiveEmulator(model="echo") as emu:
            async with geminilive.connect(endpoint=emu.url) as session:
                conversation = await session.start_audio_conversation()
                await asyncio.sleep(0.5)
                kill_server()
                with pytest.raises(AudioDeviceError):
                    await conversation.wait(timeout=15)
                await conversation.stop()

    with doomed_pulse_server(tmp_path / "runtime") as kill_server:
        run(scenario(kill_server), loop=loop)


@pytest.mark.parametrize("tell", [False, True])
def test_an_interruption_splits_the_reply_into_what_was_heard_and_what_was_not(tell: bool) -> None:
    words = " ".join(f"w{i}" for i in range(40))  # spread over 4 s of reply audio

    async def scenario():
        async with LiveEmulator(model=ToneModel(duration_s=4.0, transcript=words), speed=1.5) as emu:
            config = LiveConfig(silence_duration_ms=200, output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                played: list[np.ndarray] = []
                sink = BufferedSink(played.append)
                frames = talk_over_the_reply(session, played, after_s=1.0)
                seen: list[ev.Event] = []
                conversation = Conversation(session, source=IteratorSource(frames, 16000), sink=sink,
                                            on_event=seen.append, tell_model_cut_off=tell)  # fmt: skip
                async with conversation:
                    await conversation.wait(turns=1, timeout=20)
                    await asyncio.sleep(0.3)
                return conversation, seen, list(emu.connections[0].received)

    conversation, seen, received = run(scenario())
    [turn] = conversation.metrics[:1]
    assert turn.interrupted
    heard, unheard = turn.heard_transcript.split(), turn.unheard_transcript.split()
    assert heard and unheard, (heard, unheard)
    assert heard + unheard == turn.output_transcript.split(), "a split of what was transcribed, in order"
    assert heard == words.split()[: len(heard)], "what was heard is the start of the reply"
    assert 5 <= len(heard) <= 35
    [split] = [e for e in seen if isinstance(e, ev.HeardBeforeInterruption)]
    assert split.heard.split() == heard
    notes = [m.client_content for m in received if m.client_content is not None]
    if tell:
        [note] = notes
        assert note.turn_complete is False and f'heard only: "{" ".join(heard)}"' in note.turns[0].parts[0].text
    else:
        assert notes == []


def test_after_a_barge_in_the_next_turns_are_measured_and_split_where_they_were_heard() -> None:
    """Audio a clear dropped was pushed but never played: the positions the conversation
    compares (what played against what was pushed) must count it, or every turn after the
    first barge-in looks unplayed (no latency, nothing heard)."""
    words = " ".join(f"w{i}" for i in range(40))

    async def frames(session, played: list[np.ndarray]):
        speech = np.concatenate([silence(0.2, 16000), chirp(0.4, 16000)])
        await session.send_text("tell me a long story")
        for _ in range(2):  # talk over the reply to the text, then over the reply to that
            start = sum(np.count_nonzero(p) for p in played)
            while sum(np.count_nonzero(p) for p in played) < start + 24000:
                yield np.zeros(320, np.float32)
                await asyncio.sleep(0.02)
            for i in range(0, len(speech), 320):
                yield speech[i : i + 320]
                await asyncio.sleep(0.02)
        for _ in range(50):
            yield np.zeros(320, np.float32)
            await asyncio.sleep(0.02)

    async def scenario():
        async with LiveEmulator(model=ToneModel(duration_s=4.0, transcript=words), speed=1.5) as emu:
            config = LiveConfig(silence_duration_ms=200, output_audio_transcription=True)
            async with geminilive.connect(endpoint=emu.url, config=config) as session:
                played: list[np.ndarray] = []
                sink = BufferedSink(played.append)
                conversation = Conversation(session, source=IteratorSource(frames(session, played), 16000), sink=sink)
                async with conversation:
                    await conversation.wait(turns=2, timeout=25)
                    await asyncio.sleep(0.3)
                return conversation

    first, second = run(scenario()).metrics[:2]
    assert first.interrupted and second.interrupted
    assert second.speech_end_to_first_audio_ms is not None and second.speech_end_to_first_audio_ms > 0
    assert second.receive_to_play_ms is not None
    heard = second.heard_transcript.split()
    assert heard and heard == words.split()[: len(heard)] and second.unheard_transcript
