"""Token accounting from usageMetadata: per turn and in total, by modality, across
reconnects, priced; and the warning before the context window's compression trigger."""

from __future__ import annotations

import asyncio

import pytest

import geminilive
from audio_util import TEXT_MODEL, run
from geminilive import LiveConfig
from geminilive import events as ev
from geminilive.emulator import Faults, LiveEmulator
from geminilive.messages import ModalityTokenCount, UsageMetadata
from geminilive.usage import Prices, UsageTracker, counts_of

FAST = {"speed": float("inf"), "realtime_playback": False}


def test_vertex_and_developer_counts_read_the_same() -> None:
    details = [ModalityTokenCount(modality="AUDIO", token_count=30), ModalityTokenCount(modality="TEXT", token_count=5)]
    developer = UsageMetadata(prompt_token_count=100, response_token_count=35, total_token_count=135,
                              response_tokens_details=details)  # fmt: skip
    vertex = UsageMetadata(prompt_token_count=100, candidates_token_count=35, total_token_count=135,
                           candidates_tokens_details=details)  # fmt: skip
    assert counts_of(developer) == counts_of(vertex)
    assert counts_of(developer).response_by_modality == {"AUDIO": 30, "TEXT": 5}


def test_prices_by_modality_and_for_counts_without_details() -> None:
    tracker = UsageTracker()
    audio_in = [ModalityTokenCount(modality="AUDIO", token_count=600_000)]
    audio_out = [ModalityTokenCount(modality="AUDIO", token_count=2_000_000)]
    tracker.add(UsageMetadata(prompt_token_count=1_000_000, response_token_count=2_000_000,
                              prompt_tokens_details=audio_in, response_tokens_details=audio_out))  # fmt: skip
    prices = Prices(prompt={"AUDIO": 3.0}, response={"AUDIO": 12.0}, default_prompt=0.5)
    # 0.6 M audio prompt at 3, 0.4 M without details at 0.5, 2 M audio response at 12.
    assert tracker.cost(prices) == pytest.approx(0.6 * 3 + 0.4 * 0.5 + 2 * 12)


def test_a_session_counts_every_turn_across_a_reconnect_and_warns_before_the_trigger() -> None:
    async def scenario():
        faults = [Faults(close_after_turns=2), None]
        async with LiveEmulator(model="echo", faults=faults, **FAST) as emu:
            # Transparent resumption: a turn sent as the connection closed is replayed exactly.
            config = LiveConfig(response_modalities=["TEXT"], context_window_compression=True,
                                compression_trigger_tokens=40, transparent_resumption=True)  # fmt: skip
            async with geminilive.connect(endpoint=emu.url, model=TEXT_MODEL, config=config) as session:
                usages, warnings = [], []
                for n in range(4):
                    await session.send_client_content("word " * (40 * (n + 1)))  # 50, 100, 150, 200 tokens
                    async for event in session:
                        if isinstance(event, ev.Usage):
                            usages.append(event.usage)
                        elif isinstance(event, ev.ContextWindowWarning):
                            warnings.append(event)
                        elif isinstance(event, ev.TurnComplete):
                            break
                return usages, warnings, session.usage, session.stats

    usages, warnings, usage, stats = run(scenario())
    assert stats.reconnects == 1 and len(usages) == 4 == len(usage.turns)
    assert usage.total.prompt == sum(u.prompt_token_count for u in usages) > 0
    assert usage.total.response == sum(u.response_token_count or 0 for u in usages) > 0
    assert usage.total.prompt_by_modality == {"TEXT": usage.total.prompt}
    assert len(warnings) == 1, "once, when the context first reached 90% of the trigger"
    assert warnings[0].trigger_tokens == 40 and warnings[0].prompt_tokens >= 36


def test_the_session_says_once_when_it_is_getting_old() -> None:
    async def scenario():
        async with LiveEmulator(model="echo", **FAST) as emu:
            config = LiveConfig(response_modalities=["TEXT"])
            async with geminilive.connect(
                endpoint=emu.url, model=TEXT_MODEL, config=config, session_age_warning_s=0.3
            ) as session:
                warnings = []
                for n in range(3):
                    if n == 1:
                        await asyncio.sleep(0.4)
                    await session.send_client_content(f"turn {n}")
                    async for event in session:
                        if isinstance(event, ev.SessionAgeWarning):
                            warnings.append((n, event.age_s))
                        if isinstance(event, ev.TurnComplete):
                            break
                return warnings, session.age_s

    warnings, age = run(scenario())
    assert len(warnings) == 1 and warnings[0][0] == 1 and 0.3 <= warnings[0][1] <= age
