"""The web page in a real browser: Debian's chromium, headless, driven by Playwright, with a
fake microphone that plays generated speech (a WAV Chrome loops), against the emulator over
real sockets. What the page did is read from the page itself (``window.geminilive``, the
playout worklet's own count of what it played) and from the emulator (what it heard)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import wave
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright

import geminilive
from audio_util import speak
from geminilive import LiveConfig, Resampler
from geminilive.emulator import Faults, LiveEmulator
from geminilive.emulator.models import ScriptModel, ScriptTurn
from geminilive.pcm import f32_to_s16le, s16le_to_f32
from geminilive.web import WebServer
from geminilive.web.tokens import TokenMinter

FAKE_RATE = 48000
SCREENSHOT = os.environ.get("GEMINILIVE_SCREENSHOT")  # where to keep the page's picture (the README's)


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("Debian's chromium is needed (make test installs it)")
    return path


def fake_microphone(path: Path, text: str, *, lead_s: float, tail_s: float) -> np.ndarray:
    """A WAV the fake microphone loops: silence, the spoken text, silence. Returns the speech
    at 16 kHz (what the model should hear)."""
    spoken = speak(text, path.with_suffix(".speech.wav"), rate=FAKE_RATE)
    audio = np.concatenate([np.zeros(int(lead_s * FAKE_RATE), np.float32), spoken,
                            np.zeros(int(tail_s * FAKE_RATE), np.float32)])  # fmt: skip
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(FAKE_RATE)
        w.writeframes(f32_to_s16le(audio))
    r = Resampler(FAKE_RATE, 16000)
    return np.concatenate([r.process(spoken), r.flush()])


def run(scenario: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 120))


async def launch(playwright: Any, microphone: Path | None) -> Browser:
    args = ["--use-fake-device-for-media-stream"]
    if microphone is not None:  # else the page asks for the microphone, and headless says no
        args += ["--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={microphone}"]
    return await playwright.chromium.launch(executable_path=chromium(), args=args)


@contextlib.asynccontextmanager
async def served(
    emulator: LiveEmulator, microphone: Path | None, **options: Any
) -> AsyncIterator[tuple[WebServer, Browser]]:
    """The web server (``options``) in front of a running emulator, and a browser whose fake
    microphone plays ``microphone``."""
    opener = lambda: geminilive.connect(endpoint=emulator.url, config=config())  # noqa: E731
    async with WebServer(opener, **options) as web, async_playwright() as playwright:
        browser = await launch(playwright, microphone)
        try:
            yield web, browser
        finally:
            await browser.close()


async def open_page(browser: Browser, web: WebServer, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    await page.goto(web.url)
    await page.click("#start")  # a user's click: the AudioContext may start
    return page


async def live(page: Page, expression: str) -> Any:
    return await page.evaluate(f"(() => {{ const g = window.geminilive; return {expression}; }})()")


async def wait_for(page: Page, condition: str, timeout_s: float = 20) -> None:
    """Poll from here: the page's policy forbids eval, which Playwright's own waiting uses."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await live(page, condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {condition}: {await live(page, 'g')}")
        await asyncio.sleep(0.05)


def config() -> LiveConfig:
    return LiveConfig(input_audio_transcription=True, output_audio_transcription=True)


def best_match(heard: np.ndarray, speech: np.ndarray) -> float:
    """The highest normalised correlation of ``speech`` against any stretch of ``heard``."""
    n = len(speech)
    size = 1 << int(np.ceil(np.log2(len(heard) + n)))
    correlation = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(speech, size)), size)[: len(heard) - n]
    energy = np.convolve(heard**2, np.ones(n), "valid")[: len(heard) - n]
    return float(np.max(correlation / np.sqrt(energy * np.sum(speech**2) + 1e-12)))


@pytest.fixture(scope="module")
def greeting(tmp_path_factory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("mic") / "greeting.wav"
    return path, fake_microphone(path, "Hello there, how are you today?", lead_s=0.5, tail_s=2.5)


def test_the_page_is_heard_plays_the_reply_and_shows_the_transcripts(greeting) -> None:
    wav, speech = greeting
    model = ScriptModel([ScriptTurn(input_transcript="hello there", text="General Kenobi", tone_s=1.0)])

    async def scenario():
        errors: list[str] = []
        async with LiveEmulator(model=model, record_input=True) as emu, served(emu, wav) as (web, browser):
            page = await open_page(browser, web, errors)
            await wait_for(page, "g.turns.length >= 2")
            transcript = await page.inner_text("#transcript")
            backend = await page.inner_text("#backend")
            rows = await page.locator("#turns tbody tr").count()
            state = await live(page, "({ready: g.ready, playout: g.playout, relay: g.relay.state, "
                                     "mic: g.capture.settings})")  # fmt: skip
            return errors, transcript, backend, rows, state, emu.input_audio()

    errors, transcript, backend, rows, state, heard = run(scenario())
    assert errors == []
    # The model heard the speech the microphone played (through the browser's own echo
    # cancellation and noise suppression, then geminilive's resampler).
    assert best_match(s16le_to_f32(heard), speech) > 0.5
    # The reply reached the page's output: at least a second of audible sound out of the worklet.
    rate = state["ready"]["outputRate"]
    assert state["playout"]["audible"] > 0.9 * rate
    assert "you: hello there" in transcript and "model: General Kenobi" in transcript
    assert backend.startswith("emulator: ") and rows >= 2 and state["relay"] == "open"
    # The browser's own echo cancellation and noise suppression are on by default.
    assert state["mic"]["echoCancellation"] is True and state["mic"]["noiseSuppression"] is True


def test_a_barge_in_clears_the_page_at_once(tmp_path: Path) -> None:
    wav = tmp_path / "chatty.wav"
    fake_microphone(wav, "Tell me a long story please.", lead_s=0.3, tail_s=1.6)
    # A reply longer than the pause: the next loop of the microphone talks over it.
    model = ScriptModel([ScriptTurn(input_transcript="tell me a story", text="Once upon a time", tone_s=5.0)])

    async def scenario():
        errors: list[str] = []
        async with LiveEmulator(model=model) as emu, served(emu, wav) as (web, browser):
            page = await open_page(browser, web, errors)
            await wait_for(page, "g.atClear !== null && g.turns.some((t) => t.interrupted)")
            at_clear = await live(page, "g.atClear")
            await asyncio.sleep(0.3)
            after = await live(page, "({playout: g.playout, clears: g.clearToSilenceMs, rate: g.ready.outputRate})")
            rows = await page.inner_text("#turns")
            await wait_for(page, "g.turns.length >= 3", 30)
            await page.screenshot(path=str(tmp_path / "web-page.png"), full_page=True)
            return errors, at_clear, after, rows

    errors, at_clear, after, rows = run(scenario())
    assert errors == []
    rate = after["rate"]
    # The page dropped what it held at the clear, and played (nearly) nothing after it: at most
    # the server's fade-out frame, where seconds of the reply were still to come.
    assert at_clear["clears"] >= 1
    assert after["playout"]["audible"] - at_clear["audible"] < 0.03 * rate
    assert after["clears"] and "yes" in rows
    if SCREENSHOT:
        shutil.copy(tmp_path / "web-page.png", SCREENSHOT)


def test_a_dropped_relay_connection_comes_back_to_the_same_conversation(greeting) -> None:
    wav, _ = greeting

    async def scenario():
        errors: list[str] = []
        async with LiveEmulator(model="echo") as emu, served(emu, wav) as (web, browser):
            page = await open_page(browser, web, errors)
            await wait_for(page, "g.turns.length >= 1")
            tab = next(iter(web.tabs.values()))
            assert tab.ws is not None
            tab.ws.abort()  # the connection drops (no close frame), as a network would
            await wait_for(page, "g.relay.reconnects === 1")
            turns_then = await live(page, "g.turns.length")
            await wait_for(page, f"g.turns.length > {turns_then}")  # the conversation goes on
            state = await live(page, "({relay: g.relay, ready: g.ready})")
            return errors, state, len(emu.connections)

    errors, state, connections = run(scenario())
    assert errors == []
    assert state["relay"]["state"] == "open (same conversation)" and state["ready"]["reattached"] is True
    assert state["relay"]["closes"][0]["code"] == 1006
    assert connections == 1  # the same Live session: the drop was between the page and the relay


def test_a_second_tab_says_why_it_cannot_talk_and_the_first_goes_on(greeting) -> None:
    wav, _ = greeting

    async def scenario():
        errors: list[str] = []
        async with LiveEmulator(model="echo") as emu, served(emu, wav) as (web, browser):
            first = await open_page(browser, web, errors)
            await wait_for(first, "g.ready !== null")
            second = await open_page(browser, web, errors)
            await wait_for(second, "g.relay.state.startsWith('closed')")
            shown = await second.inner_text("#notices")
            second_state = await live(second, "g.relay.state")
            await wait_for(first, "g.turns.length >= 1")
            first_state = await live(first, "g.relay.state")
            return errors, shown, second_state, first_state, len(emu.connections)

    errors, shown, second_state, first_state, sessions = run(scenario())
    assert errors == []
    assert "another tab is already talking to the model" in shown and second_state == "closed (4409)"
    assert first_state == "open" and sessions == 1


def test_a_page_without_a_microphone_says_so(greeting) -> None:
    async def scenario():
        errors: list[str] = []
        async with LiveEmulator(model="echo") as emu, served(emu, None, no_audio_warning_s=1.0) as (web, browser):
            page = await open_page(browser, web, errors)
            await wait_for(page, "g.notices.some((n) => n.message.startsWith('no microphone audio'))")
            shown = await page.inner_text("#notices")
            return errors, shown

    errors, shown = run(scenario())
    assert errors == []
    assert "no microphone (NotAllowedError)" in shown  # the page's own message
    assert "no microphone audio for 1 s" in shown  # and the relay's


def test_direct_mode_talks_to_the_live_api_with_a_token_and_resumes_across_a_go_away(greeting) -> None:
    """``--direct``: the page gets a one-use token from the relay and connects to the Live
    API itself (here the emulator's, over real sockets); no audio passes through the server."""
    wav, speech = greeting
    model = ScriptModel([ScriptTurn(input_transcript="hello there", text="General Kenobi", tone_s=1.0)])

    async def scenario():
        errors: list[str] = []
        faults = [Faults(go_away_after_s=4.0, go_away_time_left_s=1.0), None]
        setup = config().to_setup("models/gemini-2.5-flash-native-audio-preview-12-2025")
        async with (
            LiveEmulator(model=model, record_input=True, token_port=0, faults=faults) as emu,
            served(emu, wav, tokens=TokenMinter(None, setup, rest_url=emu.tokens_url, live_url=emu.base_url)) as (
                web,
                browser,
            ),
        ):
            page = await open_page(browser, web, errors)
            await wait_for(page, "g.session.state === 'resumed' && g.turns.length >= 2", 30)
            transcript = await page.inner_text("#transcript")
            state = await live(page, "({playout: g.playout, mode: g.mode, session: g.session, turns: g.turns})")
            backend = await page.inner_text("#backend")
            return errors, transcript, state, backend, web.tokens_minted, web.ended, emu.input_audio(), emu

    errors, transcript, state, backend, minted, ended, heard, emu = run(scenario())
    assert errors == []
    assert state["mode"] == "direct" and backend.startswith("emulator, direct: ")
    assert minted == 1 and ended == []  # one token, and no conversation through the relay
    assert emu.connections[0].token is not None and emu.connections[0].token == emu.connections[1].token
    assert state["session"]["resumptions"] == 1  # across the goAway, on the same token
    # The service heard the microphone (at the page's own rate: the service resamples).
    assert best_match(s16le_to_f32(heard), speech) > 0.5
    assert state["playout"]["audible"] > 0.9 * 24000, (state["turns"], state["playout"])
    assert "you: hello there" in transcript and "model: General Kenobi" in transcript
