"""The voice conversation: microphone -> session -> speaker, with barge-in and metrics.

    async with geminilive.connect(config=LiveConfig(...)) as session:
        conversation = await session.start_audio_conversation()
        ...
        await conversation.stop()

Sources and sinks are pluggable (:mod:`geminilive.audio_io`), so the same loop serves a desktop
app, a test feeding a WAV file, or a telephony bridge with its own audio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
import numpy as np

from geminilive import events as ev
from geminilive._native import Resampler, VoiceActivityDetector, f32_to_s16le, s16le_to_f32
from geminilive.audio_io import AudioSink, AudioSource, DuckableSink, MicrophoneSource, SpeakerSink
from geminilive.errors import LocalProtocolError, SessionError
from geminilive.messages import FunctionResponse
from geminilive.tools import ToolRegistry
from geminilive.watchdog import ModelWatchdog, WatchdogConfig

if TYPE_CHECKING:
    from geminilive.session import Session

__all__ = ["Conversation", "TurnMetrics", "cut_off_note"]

_log = logging.getLogger("geminilive.conversation")

INPUT_RATE_HZ = 16000
EVENTS_KEPT = 1000


def cut_off_note(heard: str) -> str:
    """What the model is told when the user interrupted it: it knows only what it generated,
    and picks up where the user stopped listening."""
    return f'(The user interrupted you. Of your last reply they heard only: "{heard.strip()}")'


class TurnMetrics(msgspec.Struct, kw_only=True):
    """Latency of one model turn, in milliseconds (None where it did not happen)."""

    turn: int
    speech_end_to_first_audio_ms: float | None = None
    interrupted_to_silence_ms: float | None = None
    capture_to_send_ms: float | None = None
    receive_to_play_ms: float | None = None
    audio_received_s: float = 0.0
    underruns: int = 0
    interrupted: bool = False
    input_transcript: str = ""
    output_transcript: str = ""
    # On an interrupted turn: the output transcript split where playback stopped.
    heard_transcript: str = ""
    unheard_transcript: str = ""

    def row(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        return (
            f"{self.turn:>4} {ms(self.speech_end_to_first_audio_ms):>10} {ms(self.interrupted_to_silence_ms):>10} "
            f"{ms(self.capture_to_send_ms):>10} {ms(self.receive_to_play_ms):>10} {self.audio_received_s:>7.2f} "
            f"{self.underruns:>5} {'yes' if self.interrupted else '':>5}"
        )

    @staticmethod
    def header() -> str:
        return (
            f"{'turn':>4} {'end->play':>10} {'intr->sil':>10} {'capt->send':>10} {'recv->play':>10} "
            f"{'audio s':>7} {'under':>5} {'intr':>5}"
        )


class Conversation:
    """Joins an audio source, a live session and an audio sink.

    Args:
        session: an open :class:`geminilive.Session`.
        source: where the user's audio comes from (default: the microphone).
        sink: where the model's audio goes (default: the speaker).
        tools: functions the model may call; their results are sent back automatically.
        on_event: called with every event (sync or async).
        on_transcript: called with ("user" | "model", text, finished).
        local_barge_in: what the client does as soon as its own voice activity detector hears
            the user over the model (before the server's ``interrupted``): "off"; "stop" clears
            playback; "duck" turns it down to ``duck_gain`` until the server interrupts (then
            it is cleared) or the user stops (a cough, a "mm-hm": it comes back up, nothing
            lost). Needs headphones or echo cancellation: without them the model's own voice
            triggers it. "duck" needs a sink with ``set_gain`` (every sink here has it).
        duck_gain: the level ducked playback goes to (0.25: -12 dB).
        echo_cancellation: cancel what the speaker plays from what the microphone hears
            (AEC3 in the capture thread), so that on open speakers the model does not hear,
            and interrupt, itself. Needs the device source and sink (``MicrophoneSource``,
            ``SpeakerSink``); with it, ``local_barge_in`` works without headphones too.
        watchdog: how the model's silent failures are noticed (:mod:`geminilive.watchdog`;
            ``None``: not watched). Each is an ``events.ModelFailure`` to ``on_event``, kept
            in ``failures`` and counted in ``session.stats.model_failures``.
        tell_model_cut_off: when the user interrupts, tell the model (as context, no turn)
            which part of its reply was heard: it knows only what it generated, and picks up
            where the user stopped listening. What was heard is worked out anyway (the output
            transcript against the sink's playout position): ``events.HeardBeforeInterruption``
            and the turn's ``heard_transcript``/``unheard_transcript``.
    """

    def __init__(
        self,
        session: Session,
        *,
        source: AudioSource | None = None,
        sink: AudioSink | None = None,
        tools: ToolRegistry | None = None,
        on_event: Callable[[ev.Event], Awaitable[None] | None] | None = None,
        on_transcript: Callable[[str, str, bool], Awaitable[None] | None] | None = None,
        local_barge_in: Literal["off", "stop", "duck"] = "off",
        duck_gain: float = 0.25,
        echo_cancellation: bool = False,
        watchdog: WatchdogConfig | None = WatchdogConfig(),  # noqa: B008 (frozen: one is fine)
        tell_model_cut_off: bool = False,
    ) -> None:
        if local_barge_in not in ("off", "stop", "duck"):
            raise ValueError(f"local_barge_in is 'off', 'stop' or 'duck', not {local_barge_in!r}")
        if not 0.0 <= duck_gain <= 1.0:
            raise ValueError(f"duck_gain must be within 0..1, got {duck_gain}")
        self.session = session
        self.source = source if source is not None else MicrophoneSource()
        self.sink = sink if sink is not None else SpeakerSink()
        self.tools = tools
        self.on_event = on_event
        self.on_transcript = on_transcript
        if local_barge_in == "duck" and not callable(getattr(self.sink, "set_gain", None)):
            raise TypeError("local_barge_in='duck' needs a sink with set_gain(gain) (a DuckableSink)")
        if echo_cancellation and not (isinstance(self.source, MicrophoneSource) and isinstance(self.sink, SpeakerSink)):
            raise TypeError("echo_cancellation needs the devices: a MicrophoneSource and a SpeakerSink")
        self.echo_cancellation = echo_cancellation
        self.local_barge_in = local_barge_in
        self.duck_gain = duck_gain
        self._ducked = False
        realtime = session.protocol.setup.realtime_input_config
        detection = realtime.automatic_activity_detection if realtime else None
        manual = bool(detection and detection.disabled)
        self.watchdog = ModelWatchdog(watchdog, manual_activity=manual) if watchdog is not None else None
        self.failures: list[ev.ModelFailure] = []
        self._restarting = False  # a recovery restarted the session; the old connection ends
        self._activity_ends = session.protocol.activity_ends  # as the watchdog last saw them
        self.tell_model_cut_off = tell_model_cut_off
        # This turn's output transcript, each piece with how much audio had come with it.
        self._said: list[tuple[int, str]] = []
        self.metrics: list[TurnMetrics] = []
        # The latest events (bounded: audio chunks would otherwise pile up for the whole call).
        self.events: collections.deque[ev.Event] = collections.deque(maxlen=EVENTS_KEPT)
        self.input_level = 0.0
        self._vad = VoiceActivityDetector(INPUT_RATE_HZ, silence_duration_ms=300)
        self._vad_resampler: Resampler | None = None
        self._output_resamplers: dict[int, Resampler] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._finished = asyncio.Event()
        # What ended the conversation, if it failed (a device that vanished, a lost session).
        self.error: BaseException | None = None
        self._source_done = asyncio.Event()
        self._current = TurnMetrics(turn=0)
        self._speech_end_at: float | None = None
        self._first_audio_index: int | None = None
        self._pushed = 0
        self._pending_plays: list[tuple[int, float, TurnMetrics]] = []
        self._awaiting_first_play: tuple[TurnMetrics, int, float | None] | None = None
        # A turn whose first audio played before this side's VAD had heard the user stop (the
        # server's VAD can be the quicker): (the turn, when that audio played).
        self._played_before_speech_end: tuple[TurnMetrics, float] | None = None
        self._send_delays: list[float] = []
        self._play_delays: dict[int, list[float]] = {}
        self._underruns_at_start = 0
        self._heard_samples = 0

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Conversation:
        await self.sink.start()
        if self.echo_cancellation:  # before the microphone opens (in the send loop)
            source, sink = cast(MicrophoneSource, self.source), cast(SpeakerSink, self.sink)
            source.capture.echo_reference = sink.echo_reference()
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="geminilive-send"),
            asyncio.create_task(self._receive_loop(), name="geminilive-receive"),
            asyncio.create_task(self._play_monitor(), name="geminilive-play-monitor"),
        ]
        if self.watchdog is not None:
            self._tasks.append(asyncio.create_task(self._watch(), name="geminilive-watchdog"))
        for task in self._tasks:
            task.add_done_callback(self._on_task_done)
        return self

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A loop that fails ends the conversation, and :meth:`wait` raises its error: without
        the microphone, the speaker or the session there is no conversation to go on with."""
        if task.cancelled() or task.exception() is None or self._finished.is_set():
            return  # (a send that fails after the session ended is not news)
        self.error = task.exception()
        self._finished.set()

    async def stop(self) -> None:
        """Stop capturing and playing (the session stays open)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.tools is not None:
            self.tools.cancel_all()
        await self.sink.close()
        self._finished.set()

    async def wait(self, *, turns: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``turns`` model turns completed (or the conversation ends); raises what
        ended it if it failed (an ``AudioDeviceError``, a ``SessionError``)."""

        async def done() -> None:
            while not self._finished.is_set():
                if turns is not None and len(self.metrics) >= turns:
                    return
                await asyncio.sleep(0.01)

        async with asyncio.timeout(timeout):  # (asyncio.wait_for can swallow a cancel on 3.11)
            await done()
        if self.error is not None:
            raise self.error

    async def __aenter__(self) -> Conversation:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- user audio ----------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        async for frame in self.source:
            samples = frame.samples
            if samples.dtype != np.float32:
                samples = samples.astype(np.float32)
            await self.session.send_audio(samples, frame.sample_rate_hz)
            self._send_delays.append(time.monotonic() - frame.timestamp)
            self.input_level = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
            self._detect_speech(samples, frame.sample_rate_hz, frame.timestamp)
        self._source_done.set()
        with contextlib.suppress(Exception):
            await self.session.audio_stream_end()

    def _detect_speech(self, samples: np.ndarray, rate: int, timestamp: float) -> None:
        if rate != INPUT_RATE_HZ:
            if self._vad_resampler is None:
                self._vad_resampler = Resampler(rate, INPUT_RATE_HZ)
            samples = self._vad_resampler.process(samples)
        self._heard_samples += len(samples)
        for kind, at in self._vad.process(samples):
            when = timestamp - (self._heard_samples - at) / INPUT_RATE_HZ
            if kind == "end":
                self._speech_end_at = when
                self._late_speech_end(when)
                if self.watchdog is not None and not self.watchdog.manual_activity:
                    self.watchdog.user_turn_ended(when)  # (pushed to talk, activityEnd says it)
                self._duck(False)  # the user stopped and the server did not cut the model off
            elif kind == "start" and self.sink.stats.depth > 0:
                if self.local_barge_in == "stop":
                    self.sink.clear()
                elif self.local_barge_in == "duck":
                    self._duck(True)

    def _late_speech_end(self, when: float) -> None:
        """The user's speech ended (``when``: as the audio says, not as it was detected) and
        this side's VAD told it after the reply's first audio came: the turn's latency is
        still from that end (an end after the reply played is a later utterance's)."""
        if self._awaiting_first_play is not None and self._awaiting_first_play[2] is None:
            turn, index, _ = self._awaiting_first_play
            self._awaiting_first_play = (turn, index, when)
        elif self._played_before_speech_end is not None:
            turn, played_at = self._played_before_speech_end
            self._played_before_speech_end = None
            if when < played_at and turn.speech_end_to_first_audio_ms is None:
                turn.speech_end_to_first_audio_ms = (played_at - when) * 1000

    def _duck(self, down: bool) -> None:
        if down != self._ducked:
            self._ducked = down
            cast(DuckableSink, self.sink).set_gain(self.duck_gain if down else 1.0)

    # --- model audio and events ----------------------------------------------------------------

    async def _receive_loop(self) -> None:
        async for event in self.session:
            await self._handle(event)
        self._finished.set()

    async def _handle(self, event: ev.Event) -> None:
        self.events.append(event)
        now = time.monotonic()
        if self._restarting and isinstance(event, ev.Reconnecting):
            self._restarting = False
            if self.watchdog is not None:
                self.watchdog.restarted()
                self.watchdog.user_turn_ended(now)  # the reprompt is owed an answer
        if self._restarting:  # what the connection being left still delivers: the failed reply
            if not isinstance(event, ev.AudioChunk):
                await self._dispatch(event, now)
            return
        if self.watchdog is not None:
            self._note_activity_ends()
            if isinstance(event, ev.InputTranscription) and event.finished:
                self.watchdog.user_turn_ended(now)
            for failure in self.watchdog.on_event(
                event, now, user_turns_started=self.session.protocol.user_turns_started
            ):
                await self._failed(failure)
        await self._dispatch(event, now)

    async def _dispatch(self, event: ev.Event, now: float) -> None:
        if isinstance(event, ev.AudioChunk):
            if self._first_audio_index is None:
                self._first_audio_index = self._pushed
                self._underruns_at_start = self.sink.stats.underruns
                self._awaiting_first_play = (self._current, self._pushed, self._speech_end_at)
            self.sink.push(event.data if event.sample_rate_hz == self.sink.sample_rate_hz else self._convert(event))
            self._pending_plays.append((self._pushed, now, self._current))
            self._pushed += len(event.data) // 2
            self._current.audio_received_s += event.duration_s
        elif isinstance(event, ev.Interrupted):
            await self._split_what_was_heard(self.sink.played_time()[0])
            self.sink.clear()
            self._duck(False)  # what was ducked is gone; the next reply plays at full level
            self._current.interrupted = True
            self._pending_plays.clear()
            self._tasks.append(asyncio.create_task(self._measure_silence(now, self._current)))
        elif isinstance(event, ev.GenerationComplete):
            # All of the turn's audio is here (turnComplete waits until it would have played
            # out): play the tail, and a buffer running dry is the end, not an underrun.
            self.sink.end_of_turn()
        elif isinstance(event, ev.TurnComplete):
            self.sink.end_of_turn()
            self._duck(False)
            self._finish_turn()
            if self.tools is not None:
                self.tools.new_turn()
        elif isinstance(event, ev.InputTranscription):
            self._current.input_transcript += event.text
            await self._call(self.on_transcript, "user", event.text, event.finished)
        elif isinstance(event, ev.OutputTranscription):
            self._current.output_transcript += event.text
            self._said.append((self._pushed, event.text))
            await self._call(self.on_transcript, "model", event.text, event.finished)
        elif isinstance(event, ev.ToolCall) and self.tools is not None:
            self.tools.start(event.function_calls, self._respond)
        elif isinstance(event, ev.ToolCallCancellation) and self.tools is not None:
            self.tools.cancel(event.ids)
        await self._call(self.on_event, event)

    def _convert(self, event: ev.AudioChunk) -> bytes:
        """Model audio at another rate than the sink's, through one streaming resampler per
        rate (state carries across chunks, so there are no seams)."""
        resampler = self._output_resamplers.get(event.sample_rate_hz)
        if resampler is None:
            resampler = Resampler(event.sample_rate_hz, self.sink.sample_rate_hz)
            self._output_resamplers[event.sample_rate_hz] = resampler
        return f32_to_s16le(resampler.process(s16le_to_f32(event.data)))

    async def _respond(self, response: FunctionResponse) -> None:
        await self.session.send_tool_response(response)

    async def _split_what_was_heard(self, played: int) -> None:
        """At an interruption: which words of the reply played (their audio had all played
        before the sink stopped) and which did not."""
        heard = "".join(text for pushed, text in self._said if pushed <= played)
        unheard = "".join(text for pushed, text in self._said if pushed > played)
        self._said.clear()
        turn = self._current
        turn.heard_transcript, turn.unheard_transcript = heard, unheard
        event = ev.HeardBeforeInterruption(heard=heard, not_heard=unheard)
        self.events.append(event)
        await self._call(self.on_event, event)
        if self.tell_model_cut_off and unheard.strip():
            await self.session.send_client_content(cut_off_note(heard), turn_complete=False)

    async def _watch(self) -> None:
        assert self.watchdog is not None
        poll_s = min(0.25, self.watchdog.config.reply_timeout_s / 4)  # late by a quarter at most
        while True:
            await asyncio.sleep(poll_s)
            self._note_activity_ends()
            for failure in self.watchdog.check(time.monotonic()):
                await self._failed(failure)

    def _note_activity_ends(self) -> None:
        """Pushed to talk (``activityEnd``): the user's turn ended. Checked before each event
        too, so that a reply coming faster than the watchdog's poll is seen after it."""
        ends = self.session.protocol.activity_ends
        if ends != self._activity_ends:
            self._activity_ends = ends
            assert self.watchdog is not None
            self.watchdog.user_turn_ended(time.monotonic())

    async def _failed(self, failure: ev.ModelFailure) -> None:
        """Report a failure of the model's, and recover as the watchdog's ladder says: a
        restart first (the failed reply's audio is dropped), then the reprompt, which waits
        for the new connection if there is one."""
        watchdog = self.watchdog
        assert watchdog is not None
        step = watchdog.next_recovery(failure)
        if step in ("reconnect", "fresh"):
            try:
                closing = self.session.restart(fresh=step == "fresh", reason=f"the model failed: {failure.kind}")
            except (LocalProtocolError, SessionError) as exc:  # no resumption, or the session is over
                _log.warning("could not %s after %s: %s; reprompting", step, failure.kind, exc)
                step, closing = "reprompt", False
            if closing:
                self._restarting = True
                self.sink.clear()
                self._pending_plays.clear()
        failure = msgspec.structs.replace(failure, recovery=step)
        _log.warning("the model failed silently: %s (%s); recovery: %s", failure.kind, failure.detail, step)
        self.failures.append(failure)
        self.session.count_model_failure()
        self.events.append(failure)
        await self._call(self.on_event, failure)
        if step is not None:
            await self.session.send_client_content(watchdog.config.reprompt_text)
            if not self._restarting:
                watchdog.reprompted(time.monotonic())

    @staticmethod
    async def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
        if callback is not None:
            result = callback(*args)
            if result is not None:
                await result

    async def _play_monitor(self) -> None:
        """Watch the sink's played count: when did the first audio of the turn, and each
        received chunk, actually play."""
        while True:
            await asyncio.sleep(0.002)
            played, at = self.sink.played_time()
            if self._awaiting_first_play is not None and played > self._awaiting_first_play[1]:
                turn, _, speech_end = self._awaiting_first_play
                self._awaiting_first_play = None
                if speech_end is not None:
                    turn.speech_end_to_first_audio_ms = (at - speech_end) * 1000
                else:
                    self._played_before_speech_end = (turn, at)
            while self._pending_plays and played > self._pending_plays[0][0]:
                _, received, turn = self._pending_plays.pop(0)
                delays = self._play_delays.setdefault(turn.turn, [])
                delays.append(at - received)
                turn.receive_to_play_ms = float(np.median(delays)) * 1000

    async def _measure_silence(self, interrupted_at: float, turn: TurnMetrics) -> None:
        """Time from ``interrupted`` until the sink plays nothing that was queued."""
        start_played, _ = self.sink.played_time()
        for _ in range(500):
            await asyncio.sleep(0.001)
            stats = self.sink.stats
            played, at = self.sink.played_time()
            if stats.depth == 0 and at > interrupted_at and played >= start_played:
                turn.interrupted_to_silence_ms = max(0.0, (at - interrupted_at) * 1000)
                return

    def _finish_turn(self) -> None:
        turn = self._current
        turn.underruns = self.sink.stats.underruns - self._underruns_at_start
        if self._send_delays:
            turn.capture_to_send_ms = float(np.median(self._send_delays)) * 1000
        self.metrics.append(turn)
        # Chunks of the turn before last have all played or been dropped by now.
        self._play_delays.pop(turn.turn - 1, None)
        self._current = TurnMetrics(turn=len(self.metrics))
        self._first_audio_index = None
        self._speech_end_at = None
        self._send_delays = []
        self._said.clear()

    def latency_table(self) -> str:
        return "\n".join([TurnMetrics.header(), *(m.row() for m in self.metrics)])
