"""Token accounting from the service's ``usageMetadata``: per turn, in total, by modality,
and, with a price table, what the session costs.

Each ``usageMetadata`` counts the turn it comes with (the Developer API's ``response*`` fields
or Vertex AI's ``candidates*``). The prompt of a turn is the whole context the model read for
it, so the newest prompt count is how full the context window is: that is what the context
window warning watches (``ContextWindowWarning`` at 90% of the compression trigger).
"""

from __future__ import annotations

import msgspec

from geminilive.messages import ModalityTokenCount, UsageMetadata

__all__ = ["Prices", "TokenCounts", "UsageTracker"]

# The warning comes when a prompt reaches this share of the compression trigger.
CONTEXT_WARNING_SHARE = 0.9


class TokenCounts(msgspec.Struct, kw_only=True):
    prompt: int = 0
    response: int = 0
    thoughts: int = 0
    total: int = 0
    prompt_by_modality: dict[str, int] = msgspec.field(default_factory=dict)
    response_by_modality: dict[str, int] = msgspec.field(default_factory=dict)

    def add(self, other: TokenCounts) -> None:
        self.prompt += other.prompt
        self.response += other.response
        self.thoughts += other.thoughts
        self.total += other.total
        for mine, theirs in ((self.prompt_by_modality, other.prompt_by_modality),
                             (self.response_by_modality, other.response_by_modality)):  # fmt: skip
            for modality, count in theirs.items():
                mine[modality] = mine.get(modality, 0) + count


class Prices(msgspec.Struct, frozen=True, kw_only=True):
    """US dollars per million tokens, by modality (``"TEXT"``, ``"AUDIO"``, ...); tokens of
    a modality without a price cost ``default_*``. Take the figures from the price list of
    your model: none are built in, since they change."""

    prompt: dict[str, float] = msgspec.field(default_factory=dict)
    response: dict[str, float] = msgspec.field(default_factory=dict)
    default_prompt: float = 0.0
    default_response: float = 0.0

    def cost(self, counts: TokenCounts) -> float:
        def side(by_modality: dict[str, int], total: int, table: dict[str, float], default: float) -> float:
            priced = sum(count * table.get(modality, default) for modality, count in by_modality.items())
            unattributed = max(0, total - sum(by_modality.values()))  # counts without details
            return priced + unattributed * default

        prompt = side(counts.prompt_by_modality, counts.prompt, self.prompt, self.default_prompt)
        response = side(counts.response_by_modality, counts.response + counts.thoughts, self.response,
                        self.default_response)  # fmt: skip
        return (prompt + response) / 1e6


def _by_modality(details: list[ModalityTokenCount] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for detail in details or ():
        modality = detail.modality or "UNSPECIFIED"
        out[modality] = out.get(modality, 0) + (detail.token_count or 0)
    return out


def counts_of(usage: UsageMetadata) -> TokenCounts:
    """One ``usageMetadata`` as counts (Vertex's ``candidates*`` read as the response)."""
    response = usage.response_token_count if usage.response_token_count is not None else usage.candidates_token_count
    details = (
        usage.response_tokens_details
        if usage.response_tokens_details is not None
        else (usage.candidates_tokens_details)
    )
    prompt = usage.prompt_token_count or 0
    return TokenCounts(
        prompt=prompt,
        response=response or 0,
        thoughts=usage.thoughts_token_count or 0,
        total=usage.total_token_count or prompt + (response or 0),
        prompt_by_modality=_by_modality(usage.prompt_tokens_details),
        response_by_modality=_by_modality(details),
    )


class UsageTracker:
    """Every ``usageMetadata`` of a session, across its connections."""

    def __init__(self, compression_trigger_tokens: int | None = None) -> None:
        self.turns: list[TokenCounts] = []
        self.total = TokenCounts()
        self.context_tokens = 0  # the newest prompt: how full the context window is
        self.compression_trigger_tokens = compression_trigger_tokens
        self._warned = False

    def add(self, usage: UsageMetadata) -> bool:
        """Count one ``usageMetadata``; True when the context has just reached the warning
        share of the compression trigger (once until it falls back under it)."""
        counts = counts_of(usage)
        self.turns.append(counts)
        self.total.add(counts)
        self.context_tokens = counts.prompt
        trigger = self.compression_trigger_tokens
        if trigger is None:
            return False
        over = counts.prompt >= CONTEXT_WARNING_SHARE * trigger
        warn, self._warned = over and not self._warned, over
        return warn

    def cost(self, prices: Prices) -> float:
        return prices.cost(self.total)
