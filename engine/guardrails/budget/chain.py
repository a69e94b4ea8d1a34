"""What the ledger works out over a chain of scopes (a scope and every enclosing one) off the reserve/settle hot path:
the check between steps, the output-token cap, the wall time left, due soft warnings, the rolling day's pruning and
seeding, and the per-call events. Plain functions over Scope; the ledger holds its lock around every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from engine.guardrails.budget.records import Breach, BudgetEvent
from engine.guardrails.budget.scope import Scope, crossed_levels, fire_warnings, prune_daily, sum_breach, wall_breach
from engine.guardrails.budget.vectors import OUT, TOTAL, WALL, amounts, field
from engine.guardrails.budget.windows import DAY_BUCKET_S, DAY_S, RollingDay

__all__ = [
    "check_chain",
    "output_cap",
    "prune_dailies",
    "released_event",
    "reserved_event",
    "seed_daily",
    "settled_event",
    "soft_sweep",
    "wall_left",
]


def check_chain(chain: tuple[Scope, ...], now: float, events: list[BudgetEvent]) -> Breach | None:
    """The first limit up the chain already reached (wall time, or a summed dimension with nothing more asked), or
    None; appends the soft warnings due on the scopes checked before it to `events`."""
    for s in chain:
        compiled = s.compiled
        if compiled.wall is not None and now - s.opened_at >= compiled.wall:
            return wall_breach(s, now - s.opened_at)
        total = s.used + s.reserved
        for i, limit, _ in compiled.checks:
            if field(total, i) > limit:
                return sum_breach(s, i, limit, 0)
        soft_sweep(s, now, events)
    return None


def output_cap(chain: tuple[Scope, ...], input_tokens: int) -> int | None:
    """The smallest output/total-token headroom up the chain (None: no token limit), before clamping at 0."""
    cap: int | None = None
    for s in chain:
        for i, limit, _ in s.compiled.checks:
            if i == OUT:
                room = limit - field(s.used + s.reserved, OUT)
            elif i == TOTAL:
                room = limit - field(s.used + s.reserved, TOTAL) - input_tokens
            else:
                continue
            cap = room if cap is None else min(cap, room)
    return cap


def wall_left(chain: tuple[Scope, ...], now: float) -> float | None:
    """Seconds until the first wall_time_s limit up the chain runs out (0 once one has); None = no wall limit."""
    left: float | None = None
    for s in chain:
        wall = s.compiled.wall
        if wall is not None:
            remaining = max(wall - (now - s.opened_at), 0.0)
            left = remaining if left is None else min(left, remaining)
    return left


def soft_sweep(s: Scope, now: float, events: list[BudgetEvent]) -> None:
    """Fire every due soft warning of one scope (off the hot path: check() and seeding)."""
    due: list[tuple[Scope, int]] = crossed_levels(s, None) or []
    elapsed = now - s.opened_at
    if WALL in s.soft_pending and elapsed >= s.compiled.wall_level and elapsed > 0:
        due.append((s, WALL))
    if due:
        events.extend(fire_warnings(due, now))


def prune_dailies(dailies: tuple[Scope, ...], wall_now: float) -> None:
    """Expire what left the rolling day of each hierarchy_daily scope in a chain."""
    cutoff = wall_now - DAY_S - DAY_BUCKET_S
    for s in dailies:
        buckets = s.spend.buckets  # type: ignore[union-attr]  # dailies all have one
        if buckets and buckets[0][0] <= cutoff:  # the usual answer is "nothing expired": skip the call
            prune_daily(s, wall_now)


def seed_daily(scope: Scope, seeded: list[tuple[float, int]], wall_now: float) -> None:
    """Merge past spend, as time-ordered (wall-clock ts, packed amounts), into a hierarchy_daily scope's window."""
    assert scope.spend is not None
    # Rebuild in time order: seeding normally happens at open, but may follow live spend.
    merged = [(start, totals) for start, totals in scope.spend.buckets] + seeded
    merged.sort(key=lambda entry: entry[0])
    scope.spend = RollingDay()
    for ts, packed in merged:
        scope.spend.add(ts, packed)
    for _, packed in seeded:
        scope.used += packed
    prune_daily(scope, wall_now)


# -- the per-call events (only built when someone listens) ----------------------------------------------------------


def reserved_event(scope: Scope, reservation_id: int, vec: int, context: int) -> BudgetEvent:
    data: dict[str, float | int | str] = {"reservation": reservation_id}
    data.update(amounts(vec))
    if context:
        data["context_tokens"] = context
    return BudgetEvent("budget.reserved", scope.scope_id, scope.kind, scope.labels, None, data)


def settled_event(scope: Scope, scope_id: str, reservation_id: int, act: int,
                  labels: Mapping[str, str] | None) -> BudgetEvent:
    """`scope` is the reservation's own (the chain's first); `labels` those settle() was given, on top of its own."""
    data: dict[str, float | int | str] = {"reservation": reservation_id}
    data.update(amounts(act))
    event_labels = scope.labels if not labels else MappingProxyType({**scope.labels, **labels})
    return BudgetEvent("budget.settled", scope_id, scope.kind, event_labels, None, data)


def released_event(scope: Scope, scope_id: str, reservation_id: int) -> BudgetEvent:
    return BudgetEvent("budget.released", scope_id, scope.kind, scope.labels, None, {"reservation": reservation_id})
