"""Fault injection for the emulator, per connection."""

from __future__ import annotations

import msgspec

__all__ = ["SILENT_FAILURES", "Faults"]

# What Faults.failure can be.
SILENT_FAILURES = (
    "no_reply",
    "rejected",
    "near_silent",
    "cut_off",
    "tone",
    "spurious_interruption",
    "duplicate_calls",
)


class Faults(msgspec.Struct, kw_only=True):
    """What goes wrong on one connection. All off by default.

    Attributes:
        close_after_client_messages: close (with ``close_code``/``close_reason``) once this many
            client messages after setup have been read.
        close_after_turns: close once this many model turns have completed on the connection.
        drop_after_client_messages: cut the TCP connection without a close frame instead.
        send_delay_s: extra latency before every server message.
        audio_jitter_s: a random extra delay up to this long before each audio chunk.
        audio_burst_chunks: send audio in bursts of this many chunks, then pause for as long
            as they last (network bunching).
        slow_reader_s: pause this long before reading each client message.
        read_latency_s: take each client message in this long after it arrived, however many
            follow it (the uplink's delay on a long network path, or a busy service): a
            resumption handle then leaves out what was still on its way.
        go_away_after_s: send ``goAway`` after this long, then close 1011 after ``go_away_time_left_s``.
        refuse_setup_code: answer the setup by closing with this code (``close_reason``) instead
            of ``setupComplete``: a refused resume. 1008 also forgets the handle the setup
            names, as the service does for an expired one (the client then starts afresh).
        drop_at_setup: cut the TCP connection right after reading the setup.
        stall_setup_s: read the setup, then read and answer nothing for this long (a close
            frame neither), then close 1011: a resume that hangs, for the client's setup
            timeout to fire first.

    The model's own silent failures (the most reported problems with the service), on the
    first ``silent_failure_turns`` user turns of the connection:
        failure: ``"no_reply"`` (nothing at all comes back), ``"rejected"`` (an empty turn,
            ``turnCompleteReason: RESPONSE_REJECTED``), ``"near_silent"`` (the reply's audio
            at about -60 dBFS, RMS ~30 where speech is thousands), ``"cut_off"``
            (``turnComplete`` after half the reply, no ``generationComplete``), ``"tone"``
            (a 440 Hz tone instead of the reply's audio), ``"spurious_interruption"``
            (``interrupted`` after half the reply with no user activity behind it, as reported
            with automatic activity detection off), ``"duplicate_calls"`` (every function
            call of a reply comes twice in its toolCall, the same name and arguments under a
            new id, and the next reply starts by calling the last turn's functions again).
    """

    close_after_client_messages: int | None = None
    close_after_turns: int | None = None
    close_code: int = 1011
    close_reason: str = "Internal error encountered."
    drop_after_client_messages: int | None = None
    send_delay_s: float = 0.0
    audio_jitter_s: float = 0.0
    audio_burst_chunks: int = 0
    slow_reader_s: float = 0.0
    read_latency_s: float = 0.0
    go_away_after_s: float | None = None
    go_away_time_left_s: float = 1.0
    refuse_setup_code: int | None = None
    drop_at_setup: bool = False
    stall_setup_s: float = 0.0
    failure: str | None = None
    silent_failure_turns: int = 1
