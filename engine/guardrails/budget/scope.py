"""One budget scope (agent invocation, run, or a hierarchy's rolling day) and what is derived from its state alone:
its breaches, its soft warnings, its usage report. The ledger holds its lock around every call into this module.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import TYPE_CHECKING

from engine.guardrails.budget.limits import Dimension
from engine.guardrails.budget.records import Breach, BudgetEvent, DimensionUsage, ScopeUsage
from engine.guardrails.budget.vectors import SUMMED, WALL, CompiledLimits, N, external, field, unpack
from engine.guardrails.budget.windows import BURN_WINDOW_S, RollingDay

if TYPE_CHECKING:
    from engine.guardrails.budget.shared import SharedDaily

__all__ = [
    "ATTRIBUTION_KEYS",
    "Scope",
    "attribution_key",
    "attribution_report",
    "breach_event",
    "context_breach",
    "crossed_levels",
    "fire_warnings",
    "prune_daily",
    "sum_breach",
    "usage_of",
    "wall_breach",
]

ATTRIBUTION_KEYS: tuple[str, ...] = ("agent", "model", "tool", "run", "tenant", "hierarchy")
"""Label keys spend is attributed by. Other labels (a span id, say) travel on events but are not aggregated: their
cardinality is unbounded and the table lives as long as the engine."""


class Scope:
    __slots__ = (
        "_attr_key",
        "chain",
        "children",
        "compiled",
        "dailies",
        "free",
        "kind",
        "labels",
        "max_context",
        "opened_at",
        "parent",
        "recent",
        "reserved",
        "scope_id",
        "shared",
        "soft_pending",
        "spend",
        "token_capped",
        "used",
    )

    def __init__(self, scope_id: str, kind: str, compiled: CompiledLimits, parent: Scope | None,
                 labels: Mapping[str, str], opened_at: float) -> None:
        self.scope_id = scope_id
        self.kind = kind
        self.parent = parent
        self.children: set[str] = set()
        merged = dict(parent.labels) if parent is not None else {}
        merged.update(labels)  # a child's own labels win over inherited ones (agent in run in tenant)
        self.labels: Mapping[str, str] = MappingProxyType(merged)
        self._attr_key: tuple[tuple[str, str], ...] | None = None  # built on first use: the engine never needs it
        self.chain: tuple[Scope, ...] = (self,) + (parent.chain if parent is not None else ())
        self.compiled = compiled
        self.used = 0  # packed vectors
        self.reserved = 0
        self.opened_at = opened_at
        self.max_context = 0
        self.soft_pending: set[int] = set(compiled.soft_levels)  # dimension indices whose warning has not fired
        # A rolling 24 h scope remembers when its spend happened; its `used` is the sum still inside the window.
        self.spend: RollingDay | None = RollingDay() if kind == "hierarchy_daily" else None
        self.dailies: tuple[Scope, ...] = tuple(s for s in self.chain if s.spend is not None)
        # A daily cost cap shared with other engines (budget/shared.py): set by BudgetLedger.share_daily.
        self.shared: SharedDaily | None = None
        # Settles of the last minute (time, packed amounts), for the burn rate. Per scope, so reading one scope's
        # rate never scans the whole engine's traffic, and pruned on append so it stays bounded by one minute of
        # this scope's calls.
        self.recent: deque[tuple[float, int]] = deque()
        self.free = False
        self.token_capped = True
        self.derive_flags()

    def derive_flags(self) -> None:
        """Summaries of the whole chain's limits, for the fast paths. Derived from the parent's, so re-derive the
        subtree (parents first) whenever a limit in it changes (BudgetLedger.set_limits does).

        `free`: no scope up the chain limits anything, so nothing can be exceeded or warned about and reserve()
        only has to account. `token_capped`: some scope limits output or total tokens (step_output_cap's concern).
        """
        compiled, parent = self.compiled, self.parent
        self.free = not compiled.limited and (parent is None or parent.free)
        self.token_capped = compiled.token_capped or (parent is not None and parent.token_capped)

    @property
    def attr_key(self) -> tuple[tuple[str, str], ...]:
        key = self._attr_key
        if key is None:
            key = self._attr_key = attribution_key(self.labels)
        return key


def attribution_key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(labels[k])) for k in ATTRIBUTION_KEYS if k in labels)



# -- breaches: why a reserve()/check() refused, in the dimension's own units ------------------------------------------


def wall_breach(s: Scope, elapsed: float) -> Breach:
    wall = s.compiled.wall
    assert wall is not None
    return Breach(s.scope_id, s.kind, Dimension.wall_time_s, wall, elapsed, 0.0, 0.0,
                  f"{s.kind} budget '{s.scope_id}': wall time {elapsed:.1f}s reached the limit of {wall:g}s")


def context_breach(s: Scope, context: int) -> Breach:
    ceiling = s.compiled.context
    assert ceiling is not None
    return Breach(s.scope_id, s.kind, Dimension.max_context_tokens, float(ceiling), float(s.max_context), 0.0,
                  float(context), f"{s.kind} budget '{s.scope_id}': a context of {context} tokens exceeds the "
                                  f"per-call ceiling of {ceiling}")


def sum_breach(s: Scope, i: int, limit: int, requested: int) -> Breach:
    dim = SUMMED[i]
    lim, used, reserved, req = (external(i, x) for x in (limit, field(s.used, i), field(s.reserved, i), requested))
    return Breach(s.scope_id, s.kind, dim, lim, used, reserved, req,
                  f"{s.kind} budget '{s.scope_id}' exhausted on {dim.value}: used {used:g} + reserved "
                  f"{reserved:g} + requested {req:g} > limit {lim:g}")


def breach_event(breach: Breach, labels: Mapping[str, str]) -> BudgetEvent:
    """The store event for a refusal; `labels` are those of the refused scope (empty once it is closed)."""
    return BudgetEvent("budget.breach", breach.scope_id, breach.scope_kind, labels, breach.dimension,
                       {"limit": breach.limit, "used": breach.used, "reserved": breach.reserved,
                        "requested": breach.requested})


# -- soft warnings and the rolling window ------------------------------------------------------------------------------


def prune_daily(s: Scope, wall_now: float) -> None:
    """Drop spend older than 24 h from a rolling scope; re-arm soft warnings the window fell back under."""
    spend = s.spend
    assert spend is not None
    dropped = spend.expire(wall_now)
    if dropped is None:
        return
    s.used -= dropped
    total = s.used + s.reserved
    for i, _, level in s.compiled.checks:
        if field(total, i) < level:
            s.soft_pending.add(i)


def crossed_levels(s: Scope, crossed: list[tuple[Scope, int]] | None) -> list[tuple[Scope, int]] | None:
    """Add the soft levels of `s` that used+reserved now reaches and whose warning has not fired."""
    total = s.used + s.reserved
    for i, _, level in s.compiled.checks:
        value = field(total, i)
        if value >= level and value > 0 and i in s.soft_pending:
            crossed = (crossed or []) + [(s, i)]
    return crossed


def fire_warnings(crossed: list[tuple[Scope, int]], now: float) -> list[BudgetEvent]:
    """Mark soft warnings as fired (even with no listener, so a late listener is not flooded) and describe them."""
    events: list[BudgetEvent] = []
    for s, i in crossed:
        s.soft_pending.discard(i)
        compiled = s.compiled
        data: dict[str, float | int | str]
        if i == WALL:
            dim = Dimension.wall_time_s
            data = {"used": now - s.opened_at, "limit": compiled.wall or 0.0}
        else:
            dim = SUMMED[i]
            data = {"used": external(i, field(s.used, i)), "reserved": external(i, field(s.reserved, i)),
                    "limit": external(i, compiled.limits[i])}
        data["threshold"] = compiled.threshold
        events.append(BudgetEvent("budget.soft_threshold", s.scope_id, s.kind, s.labels, dim, data))
    return events


# -- the usage report --------------------------------------------------------------------------------------------------


def usage_of(s: Scope, now: float, wall_now: float) -> ScopeUsage:
    """The scope's usage, limits, burn rates and time to exhaustion at monotonic `now` (wall clock `wall_now`)."""
    if s.spend is not None:
        prune_daily(s, wall_now)
    elapsed = now - s.opened_at
    cutoff = now - BURN_WINDOW_S
    window = s.recent
    while window and window[0][0] <= cutoff:  # may empty it: nothing settled within the last minute
        window.popleft()
    recent = unpack(sum(map(itemgetter(1), window)))  # what is left is the window: summed in C
    used_all, reserved_all = unpack(s.used), unpack(s.reserved)
    # A scope younger than the window burns over its age (at least 1 s, so one early call is not infinite).
    minutes = min(BURN_WINDOW_S, max(elapsed, 1.0)) / 60.0
    limits = s.compiled.limits
    dims: dict[Dimension, DimensionUsage] = {}
    for i, dim in enumerate(SUMMED):
        used, reserved = external(i, used_all[i]), external(i, reserved_all[i])
        rate = external(i, recent[i]) / minutes
        raw_limit = limits.get(i)
        if raw_limit is None:
            dims[dim] = DimensionUsage(used, reserved, None, None, rate, None)
            continue
        limit = external(i, raw_limit)
        fraction = (used + reserved) / limit if limit > 0 else 1.0
        remaining = max(limit - used - reserved, 0.0)
        tte = remaining / rate * 60.0 if rate > 0 else None
        dims[dim] = DimensionUsage(used, reserved, limit, fraction, rate, tte)
    wall = s.compiled.wall
    dims[Dimension.wall_time_s] = DimensionUsage(
        elapsed, 0.0, wall, None if wall is None else (elapsed / wall if wall > 0 else 1.0), 60.0,
        None if wall is None else max(wall - elapsed, 0.0))
    context = s.compiled.context
    dims[Dimension.max_context_tokens] = DimensionUsage(
        float(s.max_context), 0.0, None if context is None else float(context),
        None if context is None else (s.max_context / context if context > 0 else 1.0), None, None)
    return ScopeUsage(s.scope_id, s.kind, s.labels, elapsed, dims)


def attribution_report(groups: list[tuple[tuple[tuple[str, str], ...], list[int]]]
                       ) -> dict[str, dict[str, dict[Dimension, float]]]:
    """Settled spend per label from (attribution key, unpacked totals) pairs, in external units."""
    sums: dict[str, dict[str, list[int]]] = {}
    for key, totals in groups:
        for label, value in key:
            bucket = sums.setdefault(label, {}).setdefault(value, [0] * N)
            for i in range(N):
                bucket[i] += totals[i]  # summed in internal units, converted once: cents stay exact
    return {label: {value: {dim: external(i, bucket[i]) for i, dim in enumerate(SUMMED)}
                    for value, bucket in values.items()}
            for label, values in sums.items()}
