"""How each model generation behaves, so that clients can be tested against 2.5-, 3.1- and
3.8-shaped servers (``../shared/live-protocol.md`` §5.12).

The emulator picks a profile by the setup's model name: the first pattern of its table that
matches (``LiveEmulator(profiles=...)`` takes another table). Models no pattern names get
``LEGACY``: the half-cascade models of the recorded sessions, which also answer in TEXT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from geminilive.messages import Setup

__all__ = ["FLASH_3_1", "LEGACY", "LIVE_3_8", "NATIVE_AUDIO_2_5", "PROFILES", "ModelProfile", "profile_for"]

INVALID_ARGUMENT = "Request contains an invalid argument."


class ModelProfile(msgspec.Struct, frozen=True, kw_only=True):
    """One model generation's observable behaviour."""

    name: str
    # How a request for TEXT responses is refused, as (close code, reason); None: answered.
    text_refusal: tuple[int, str] | None = None
    # Output transcription rides in the message of the audio it transcribes (3.x bundles
    # fields); else it comes in messages of its own, as 2.5 sends.
    bundles_transcription: bool = False
    # Function calls without a declared behavior block the turn until they are answered.
    calls_block_by_default: bool = True
    # NON_BLOCKING is honoured (3.1 runs every call synchronously).
    non_blocking_calls: bool = True
    # Realtime input during a blocking call cancels it (3.8) instead of being taken.
    input_cancels_blocking_call: bool = False
    # The input transcription says ``finished`` (3.1 sets it on its one message; 2.5 never).
    input_transcription_finished: bool = False
    # Usage comes in an empty serverContent of its own before turnComplete (3.1), not with it.
    usage_alone: bool = False
    # Setup fields the generation refuses with 1007.
    refuses_thinking_config: bool = False
    refuses_affective_dialog: bool = False
    refuses_proactivity: bool = False  # any proactivity setting
    requires_proactive_audio: bool = False  # proactiveAudio false is an error (3.8: always on)

    def setup_refusal(self, setup: Setup) -> tuple[int, str] | None:
        """The close a setup gets from this generation, or None when it is taken."""
        generation = setup.generation_config
        if generation is not None:
            if self.text_refusal and generation.response_modalities == ["TEXT"]:
                return self.text_refusal
            if self.refuses_thinking_config and generation.thinking_config is not None:
                return 1007, INVALID_ARGUMENT
            if self.refuses_affective_dialog and generation.enable_affective_dialog is not None:
                return 1007, INVALID_ARGUMENT
        proactivity = setup.proactivity
        if proactivity is not None and (
            self.refuses_proactivity or (self.requires_proactive_audio and proactivity.proactive_audio is False)
        ):
            return 1007, INVALID_ARGUMENT
        return None


LEGACY = ModelProfile(name="legacy")
NATIVE_AUDIO_2_5 = ModelProfile(
    name="2.5 native audio", text_refusal=(1007, "Cannot extract voices from a non-audio request.")
)
FLASH_3_1 = ModelProfile(
    name="3.1 flash live",
    text_refusal=(1011, "Internal error encountered."),
    bundles_transcription=True,
    non_blocking_calls=False,
    input_transcription_finished=True,
    usage_alone=True,
    refuses_affective_dialog=True,
    refuses_proactivity=True,
)
LIVE_3_8 = ModelProfile(
    name="3.8 live",
    text_refusal=(1007, INVALID_ARGUMENT),
    bundles_transcription=True,
    calls_block_by_default=False,
    input_cancels_blocking_call=True,
    refuses_thinking_config=True,
    refuses_affective_dialog=True,
    requires_proactive_audio=True,
)

PROFILES: list[tuple[str, ModelProfile]] = [
    (r"gemini-3\.8", LIVE_3_8),
    (r"gemini-3\.1", FLASH_3_1),
    (r"native-audio", NATIVE_AUDIO_2_5),
]


def profile_for(model: str, table: Sequence[tuple[str, ModelProfile]] = PROFILES) -> ModelProfile:
    """The profile of the first pattern in ``table`` found in ``model``, else ``LEGACY``."""
    for pattern, profile in table:
        if re.search(pattern, model):
            return profile
    return LEGACY
