"""The unmodified official client (google-genai) against the emulator over wss: it cannot tell
the emulator from the service for setup, audio in and out, transcriptions, a tool call, an
interruption and a resumption."""

from __future__ import annotations

import ssl

import numpy as np
import pytest
from google import genai
from google.genai import types

from audio_util import chirp, run, silence, xcorr_peak
from geminilive import Resampler, pcm
from geminilive.emulator import LiveEmulator, ReplyAudio, ReplyToolCall, ToneModel
from geminilive.emulator.models import EchoModel
from geminilive.messages import FunctionCall
from tls import LoopbackTls, loopback_tls

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> LoopbackTls:
    """A 127.0.0.1 certificate from a test CA (google-genai gets a context trusting it)."""
    return loopback_tls(tmp_path_factory.mktemp("tls"))


class ScenarioModel:
    """Echoes speech; calls get_weather when asked about weather; talks long when asked to."""

    name = "scenario"

    def reply(self, turn, conversation):
        text = (turn.text or "").lower()
        if "weather" in text:
            [responses] = [(yield ReplyToolCall([FunctionCall(name="get_weather", args={"city": "Oslo"})]))]
            conversation.state["weather"] = responses[0].response
            yield from ToneModel(duration_s=0.3, transcript="It is sunny in Oslo").reply(turn, conversation)
        elif "long" in text:
            yield from ToneModel(duration_s=6.0, transcript="a long story").reply(turn, conversation)
        elif turn.audio:
            yield from EchoModel().reply(turn, conversation)
        else:
            yield ReplyAudio(pcm=b"\x00\x00" * 2400, transcript="ok")


def client(emu: LiveEmulator, client_ssl: ssl.SSLContext) -> genai.Client:
    return genai.Client(
        api_key="test-key",
        http_options=types.HttpOptions(
            base_url=f"https://127.0.0.1:{emu.port}/", async_client_args={"ssl": client_ssl}
        ),
    )


CONFIG = types.LiveConnectConfig(
    response_modalities=["AUDIO"],
    output_audio_transcription=types.AudioTranscriptionConfig(),
    session_resumption=types.SessionResumptionConfig(),
    realtime_input_config=types.RealtimeInputConfig(
        automatic_activity_detection=types.AutomaticActivityDetection(silence_duration_ms=200)
    ),
    tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", description="weather")])],
)


async def turn_messages(session) -> list:
    return [m async for m in session.receive()]


def test_google_genai_session_against_the_emulator(tls) -> None:
    """The emulator serving TLS in Rust (as `geminilive serve --tls-cert` does), google-genai on
    Python's ssl."""
    client_ssl = tls.client()

    async def scenario():
        emulator = LiveEmulator(
            model=ScenarioModel(), certfile=tls.chain, keyfile=tls.key, api_key="test-key", speed=3.0
        )
        async with emulator as emu:
            results = {}
            async with client(emu, client_ssl).aio.live.connect(model=MODEL, config=CONFIG) as session:
                # Audio in, audio out.
                speech = chirp(0.8, 16000)
                audio = np.concatenate([silence(0.2, 16000), speech, silence(0.5, 16000)])
                data = pcm.f32_to_s16le(audio)
                for i in range(0, len(data), 640):
                    await session.send_realtime_input(
                        audio=types.Blob(data=data[i : i + 640], mime_type="audio/pcm;rate=16000")
                    )
                messages = await turn_messages(session)
                results["echo"] = (speech, b"".join(m.data for m in messages if m.data))
                handles = [m.session_resumption_update.new_handle for m in messages if m.session_resumption_update]
                # A tool call and its response.
                await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="weather?")]))
                messages, calls = [], []
                async for m in session.receive():  # answer the call inside the turn, as apps do
                    messages.append(m)
                    if m.tool_call:
                        calls = m.tool_call.function_calls
                        response = types.FunctionResponse(id=calls[0].id, name=calls[0].name, response={"sky": "clear"})
                        await session.send_tool_response(function_responses=[response])
                results["tool"] = (calls, messages, dict(emu.connections[0].record.conversation.state))
                # receive() stops at turnComplete, so each update lands in the next turn's list.
                handles += [m.session_resumption_update.new_handle for m in messages if m.session_resumption_update]
                # An interruption: speak over a long reply.
                await session.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text="long story")])
                )
                async for m in session.receive():
                    if m.data:
                        break
                for i in range(0, len(data), 640):
                    await session.send_realtime_input(
                        audio=types.Blob(data=data[i : i + 640], mime_type="audio/pcm;rate=16000")
                    )
                results["interrupt"] = await turn_messages(session)
                handles += [
                    m.session_resumption_update.new_handle for m in results["interrupt"] if m.session_resumption_update
                ]
            # Resume on a new connection with the latest handle.
            resume = CONFIG.model_copy(update={"session_resumption": types.SessionResumptionConfig(handle=handles[-1])})
            async with client(emu, client_ssl).aio.live.connect(model=MODEL, config=resume) as session:
                await session.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text="still there?")])
                )
                results["resumed"] = await turn_messages(session)
            results["connections"] = emu.connections
            return results

    r = run(scenario())
    speech, reply = r["echo"]
    reply_f = pcm.s16le_to_f32(reply)
    assert xcorr_peak(reply_f, Resampler(16000, 24000).process(speech))[0] > 0.95
    calls, messages, state = r["tool"]
    assert calls[0].name == "get_weather" and calls[0].args == {"city": "Oslo"} and calls[0].id
    said = "".join(
        m.server_content.output_transcription.text
        for m in messages
        if m.server_content and m.server_content.output_transcription
    )
    assert said == "It is sunny in Oslo"
    assert state["weather"] == {"sky": "clear"}
    assert any(m.server_content and m.server_content.interrupted for m in r["interrupt"])
    assert any(m.server_content and m.server_content.turn_complete for m in r["resumed"])
    first, second = r["connections"]
    assert second.record is first.record, "resumed the same conversation"
    assert [t.text for t in second.record.conversation.turns][-1] == "still there?"
    # What google-genai put on the wire was accepted in its mixed spelling.
    assert first.received[0].realtime_input.audio.mime_type == "audio/pcm;rate=16000"


def test_google_genai_reads_the_3_8_shape_audio_and_transcript_in_one_message(tls) -> None:
    """3.x bundles the output transcript with its audio: the official client, asking for a 3.8
    model, gets both from the same messages (the emulator on Python's TLS here)."""
    server_ssl, client_ssl = tls.server(), tls.client()
    config = types.LiveConnectConfig(
        response_modalities=["AUDIO"], output_audio_transcription=types.AudioTranscriptionConfig()
    )

    async def scenario():
        model = ToneModel(duration_s=0.5, transcript="three point eight speaks in bundles")
        async with LiveEmulator(model=model, ssl=server_ssl, api_key="test-key", speed=4.0) as emu:
            async with client(emu, client_ssl).aio.live.connect(model="gemini-3.8-live", config=config) as session:
                await session.send_realtime_input(text="talk")
                return await turn_messages(session)

    messages = run(scenario())
    bundled = [m for m in messages if m.data and m.server_content.output_transcription]
    assert bundled, "audio and its transcript arrive together"
    assert not [m for m in messages if m.server_content and m.server_content.output_transcription and not m.data], (
        "no transcript travels alone"
    )
    words = "".join(m.server_content.output_transcription.text for m in bundled)
    assert words.split() == "three point eight speaks in bundles".split()
    assert len(b"".join(m.data for m in messages if m.data)) == 2 * 12000
