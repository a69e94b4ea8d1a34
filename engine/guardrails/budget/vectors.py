"""Packed vectors: every summed budget dimension in one int, so adding two amounts is one int addition.

Also what is packed (Demand, Actual) and limits flattened for the hot path (CompiledLimits). Cost is kept in integer
nano-dollars so that sums are exact: with floats, ten reservations of $0.10 can add up to $1.0000000000000002 and
spuriously breach a $1 cap (or, worse, an epsilon fudge lets real overshoot through).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from engine.guardrails.budget.limits import BudgetLimits, Dimension

__all__ = [
    "COST",
    "MASK",
    "NANO",
    "OUT",
    "SHIFT",
    "SUMMED",
    "TOTAL",
    "WALL",
    "Actual",
    "CompiledLimits",
    "Demand",
    "N",
    "amounts",
    "cost_to_nano",
    "exceeds",
    "external",
    "field",
    "unpack",
]

# Internal vector layout: the dimensions that accumulate. wall_time_s and max_context_tokens are not sums.
SUMMED: tuple[Dimension, ...] = (
    Dimension.input_tokens,
    Dimension.output_tokens,
    Dimension.total_tokens,
    Dimension.cost_usd,
    Dimension.model_calls,
    Dimension.tool_calls,
    Dimension.retries,
)
N = len(SUMMED)
OUT, TOTAL, COST = 1, 2, 3
WALL = N  # index used only for soft-threshold bookkeeping of wall time
NANO = 1_000_000_000


# Packed vectors: field i of a vector `v` is `(v >> SHIFT[i]) & MASK[i]`. Every field is a non-negative sum (a
# hold is only ever taken off the total it was added to), so fields never borrow from each other; each int amount is
# below 2**64 (Demand checks; a total is below 2**65) and a field has 96 bits, so a scope could sum 2**30 maximal
# demands before a field carried into the next.
# Cost sits in the top field: nano-dollars are unbounded, and the top field has nothing above it to carry into.
FIELD_BITS = 96
MAX_AMOUNT = 1 << 64
SHIFT: tuple[int, ...] = tuple(FIELD_BITS * position for position in (0, 1, 2, 6, 3, 4, 5))
MASK: tuple[int, ...] = tuple(-1 if i == 3 else (1 << FIELD_BITS) - 1 for i in range(7))  # -1: cost, unmasked


def cost_to_nano(cost: float) -> int:
    return round(cost * NANO)


def field(packed: int, index: int) -> int:
    return (packed >> SHIFT[index]) & MASK[index]


def unpack(packed: int) -> list[int]:
    return [(packed >> shift) & mask for shift, mask in zip(SHIFT, MASK)]


def external(index: int, value: float) -> float:
    """Internal units (nano-dollars for cost) back to what operators read."""
    return value / NANO if index == COST else float(value)


class CompiledLimits:
    """BudgetLimits flattened for the hot path: only limited dimensions, in internal units, with soft levels."""

    __slots__ = (
        "checks",
        "context",
        "limited",
        "limits",
        "soft_levels",
        "threshold",
        "token_capped",
        "wall",
        "wall_level",
    )

    def __init__(self, limits: BudgetLimits) -> None:
        threshold = limits.soft_threshold
        checks: list[tuple[int, int, float]] = []
        for index, dim in enumerate(SUMMED):
            value = getattr(limits, dim.value)
            if value is not None:
                internal = cost_to_nano(value) if index == COST else int(value)
                checks.append((index, internal, threshold * internal))
        # (index, limit, soft level): the hot loop compares against the soft level first, which is <= the limit, so
        # the common "far from both" case costs one comparison per limited dimension.
        self.checks: tuple[tuple[int, int, float], ...] = tuple(checks)
        self.limits: dict[int, int] = {i: limit for i, limit, _ in checks}
        self.wall: float | None = limits.wall_time_s
        self.wall_level: float = threshold * self.wall if self.wall is not None else math.inf
        self.context: int | None = limits.max_context_tokens
        self.threshold = threshold
        self.soft_levels: dict[int, float] = {i: level for i, _, level in checks}
        if self.wall is not None:
            self.soft_levels[WALL] = self.wall_level
        # Whether anything at all is limited: most agent scopes are not, and a chain of such scopes takes the
        # ledger's fast paths (see Scope.free).
        self.limited = bool(checks) or self.wall is not None or self.context is not None
        # Whether step_output_cap() has anything to compute here: only output and total tokens bound max_tokens.
        self.token_capped = any(i in (OUT, TOTAL) for i, _, _ in checks)


S1, S2, S3, S4, S5, S6 = SHIFT[1:]
BELOW_COST = (1 << S3) - 1  # every field but cost, which is on top
GUARDS = sum(1 << (shift + FIELD_BITS - 1) for i, shift in enumerate(SHIFT) if i != 3)


class Demand:
    """The worst case a call may consume, reserved before it starts. `context_tokens` is checked, not summed."""

    __slots__ = (
        "context_tokens",
        "cost_usd",
        "input_tokens",
        "model_calls",
        "output_tokens",
        "packed",
        "retries",
        "tool_calls",
    )

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0, model_calls: int = 0,
                 tool_calls: int = 0, retries: int = 0, context_tokens: int = 0) -> None:
        # Validated here, not in reserve(): a negative demand would silently hand budget back, and an absurdly
        # large one could overflow its field of a packed vector.
        if not (0 <= input_tokens < MAX_AMOUNT and 0 <= output_tokens < MAX_AMOUNT and 0 <= model_calls < MAX_AMOUNT
                and 0 <= tool_calls < MAX_AMOUNT and 0 <= retries < MAX_AMOUNT and context_tokens >= 0
                and 0 <= cost_usd < math.inf):
            raise ValueError(f"a budget demand must be non-negative and finite (and amounts below 2**64): "
                             f"{self._fields(locals())}")
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cost_usd = cost_usd
        self.model_calls = model_calls
        self.tool_calls = tool_calls
        self.retries = retries
        self.context_tokens = context_tokens
        # The ledger's packed vector (internal units: nano-dollars), computed once here so reserve()/settle() read
        # one int instead of seven attributes. Demands are values: do not mutate one after construction. Unrolled:
        # this runs on every model call.
        self.packed: int = (input_tokens | output_tokens << S1 | (input_tokens + output_tokens) << S2
                          | round(cost_usd * NANO) << S3 | model_calls << S4 | tool_calls << S5 | retries << S6)

    @staticmethod
    def _fields(values: Mapping[str, Any]) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in values.items() if k != "self")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields({k: getattr(self, k) for k in Demand.__slots__[:-1]})})"


class Actual(Demand):
    """What a call really consumed, reported by the provider (or counted by the runtime for tool calls)."""

    __slots__ = ()

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0, model_calls: int = 0,
                 tool_calls: int = 0, retries: int = 0) -> None:
        super().__init__(input_tokens, output_tokens, cost_usd, model_calls, tool_calls, retries, 0)

    def __repr__(self) -> str:
        fields = {k: getattr(self, k) for k in Demand.__slots__ if k not in ("context_tokens", "packed")}
        return f"Actual({self._fields(fields)})"


def amounts(packed: int) -> dict[str, float | int]:
    """Non-zero amounts of a packed vector, in external units: events stay small."""
    return {SUMMED[i].value: (v / NANO if i == COST else v) for i, v in enumerate(unpack(packed)) if v}


def exceeds(act: int, hold: int) -> bool:
    """Whether any dimension of the packed `act` is above the same dimension of `hold`, without unpacking.

    Below the cost field every amount of one Demand is under 2**66, so setting each field's top bit (a guard) in
    `hold` and subtracting `act` borrows from no neighbour, and leaves a field's guard set exactly when h >= a."""
    if act >> S3 > hold >> S3:  # cost, the unbounded top field, compared directly
        return True
    return (((hold & BELOW_COST) | GUARDS) - (act & BELOW_COST)) & GUARDS != GUARDS

