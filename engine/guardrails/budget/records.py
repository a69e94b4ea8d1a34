"""What the budget ledger hands out: refusals (Breach), events for the store, and usage reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from engine.guardrails.budget.limits import Dimension

__all__ = ["Breach", "BudgetEvent", "DimensionUsage", "ScopeUsage"]


@dataclass(frozen=True, slots=True)
class Breach:
    """Why a reserve()/check() refused: the first scope (innermost first) and dimension that would be exceeded.

    Amounts are in the dimension's own units (USD for cost, seconds for wall time). For wall time `used` is the
    elapsed time; for max_context_tokens `requested` is the context the call wanted to send.
    """

    scope_id: str
    scope_kind: str
    dimension: Dimension
    limit: float
    used: float
    reserved: float
    requested: float
    message: str

    ok = False  # a class attribute, not a field: callers test `.ok` after every reserve()


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """Small payload the engine turns into a store event. `labels` are the scope's labels merged with its ancestors'."""

    kind: Literal["budget.reserved", "budget.settled", "budget.released", "budget.breach", "budget.soft_threshold"]
    scope_id: str
    scope_kind: str
    labels: Mapping[str, str]
    dimension: Dimension | None
    data: dict[str, float | int | str]


@dataclass(frozen=True, slots=True)
class DimensionUsage:
    used: float
    reserved: float
    limit: float | None
    fraction: float | None  # (used + reserved) / limit; None when unlimited
    burn_rate_per_min: float | None  # settled over the last 60 s (or since opening, if younger), per minute
    time_to_exhaustion_s: float | None  # remaining headroom at that burn rate; None when unlimited or not burning


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    scope_id: str
    kind: str
    labels: Mapping[str, str]
    elapsed_s: float
    dimensions: dict[Dimension, DimensionUsage]

    def __getitem__(self, dimension: Dimension | str) -> DimensionUsage:
        return self.dimensions[Dimension(dimension)]


# --------------------------------------------------------------------------------------------------------------------
