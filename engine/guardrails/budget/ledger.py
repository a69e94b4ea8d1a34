"""The reservation ledger: reserve a call's worst case across a chain of scopes, settle or release it afterwards.

Hot path notes: reserve()/settle() run twice per model call, so amounts are packed vectors (see vectors), limits are
pre-compiled tuples that skip unlimited dimensions, there is one lock, and event objects are built only when someone
listens. A chain with no limit at all (the common case) skips every check and only accounts (see Scope.free).
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from engine.clock import Clock, SystemClock
from engine.guardrails.budget.chain import (
    prune_dailies,
    released_event,
    reserved_event,
    seed_daily,
    settled_event,
    soft_sweep,
)
from engine.guardrails.budget.ledger_queries import LedgerQueries
from engine.guardrails.budget.limits import SCOPE_KINDS, BudgetLimits, ScopeKind
from engine.guardrails.budget.records import Breach, BudgetEvent, ScopeUsage
from engine.guardrails.budget.scope import (
    Scope,
    attribution_key,
    context_breach,
    crossed_levels,
    fire_warnings,
    prune_daily,
    sum_breach,
    usage_of,
    wall_breach,
)
from engine.guardrails.budget.shared import SharedDaily, cover_shared
from engine.guardrails.budget.vectors import (
    MASK,
    SHIFT,
    WALL,
    Actual,
    CompiledLimits,
    Demand,
    cost_to_nano,
    exceeds,
    field,
)
from engine.guardrails.budget.vectors import S3 as COST_SHIFT
from engine.guardrails.budget.windows import BURN_WINDOW_S, DAY_BUCKET_S, prune_recent

__all__ = ["BudgetLedger", "Reservation"]


class Reservation:
    """Budget held for one in-flight call. Settle or release it exactly once."""

    __slots__ = ("_chain", "_ledger", "_state", "_vec", "demand", "id", "scope_id")

    def __init__(self, rid: int, scope_id: str, demand: Demand, vec: int, chain: tuple[Scope, ...],
                 ledger: BudgetLedger) -> None:
        self.id = rid
        self.scope_id = scope_id
        self.demand = demand
        self._vec = vec
        self._chain = chain
        self._state = "open"
        self._ledger = ledger

    ok = True  # a class attribute: cheaper than a property, and callers test it after every reserve()

    @property
    def state(self) -> Literal["open", "settled", "released"]:
        return self._state  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Reservation(id={self.id}, scope_id={self.scope_id!r}, state={self._state!r}, demand={self.demand!r})"



class BudgetLedger(LedgerQueries):
    """Thread-safe reservation ledger over nested scopes. All methods are O(depth of the scope chain).

    `on_event` is called outside the lock (so it may call back into the ledger). Set `call_events=False` to keep
    only breach and soft-threshold events and drop the per-call reserved/settled/released ones.
    """

    def __init__(self, clock: Clock, on_event: Callable[[BudgetEvent], None] | None = None, *,
                 call_events: bool = True, attribution: bool = True) -> None:
        self._clock = clock
        # Bound once: the hot path reads the clock on every settle. The system clock's methods only wrap these.
        self._monotonic: Callable[[], float] = time.monotonic if type(clock) is SystemClock else clock.monotonic
        self._wall_time: Callable[[], float] = time.time if type(clock) is SystemClock else clock.time
        self._on_event = on_event
        self.call_events = call_events
        # The engine turns this off: the store already attributes every span's spend (agent, model, tool, run,
        # tenant), and an in-memory table keyed by run would grow for as long as the engine lives.
        self.track_attribution = attribution
        self._lock = threading.Lock()
        self._compiled: dict[BudgetLimits | None, CompiledLimits] = {}
        self._scopes: dict[str, Scope] = {}
        self._ids = itertools.count(1)
        self._attribution: dict[tuple[tuple[str, str], ...], int] = {}  # packed totals
        self._shared: list[Scope] = []  # hierarchy_daily scopes whose cost cap other engines share

    # -- scopes ------------------------------------------------------------------------------------------------------

    def open_scope(self, scope_id: str, kind: ScopeKind, limits: BudgetLimits | None = None,
                   parent: str | None = None, labels: Mapping[str, str] | None = None) -> None:
        if kind not in SCOPE_KINDS:
            raise ValueError(f"budget scope '{scope_id}': kind must be one of {sorted(SCOPE_KINDS)}, got {kind!r}")
        compiled = self._compiled.get(limits)
        if compiled is None:  # limits are frozen and repeat (the same per-agent defaults every invocation)
            compiled = CompiledLimits(limits if limits is not None else BudgetLimits())
            if len(self._compiled) < 1024:
                self._compiled[limits] = compiled
        with self._lock:
            if scope_id in self._scopes:
                raise ValueError(f"budget scope '{scope_id}' is already open")
            parent_scope = self._get(parent) if parent is not None else None
            scope = Scope(scope_id, kind, compiled, parent_scope, labels or {}, self._clock.monotonic())
            self._scopes[scope_id] = scope
            if parent_scope is not None:
                parent_scope.children.add(scope_id)

    def close_scope(self, scope_id: str, *, report: bool = True) -> ScopeUsage | None:
        """Close a scope and, with it, every scope opened inside it. Returns the scope's final usage (None with
        report=False: the runtime closes a scope per agent invocation and does not need the report).

        Spend already settled stays counted in the ancestors. Reservations still open keep their hold on the
        ancestors until settled or released (the runtime does that in a `finally`).
        """
        with self._lock:
            scope = self._get(scope_id)
            final = usage_of(scope, self._monotonic(), self._wall_time()) if report else None
            stack = [scope]
            while stack:
                current = stack.pop()
                stack.extend(self._scopes[c] for c in current.children if c in self._scopes)
                del self._scopes[current.scope_id]
            parent = scope.parent
            if parent is not None:
                parent.children.discard(scope_id)
                if parent.shared is not None and not parent.children and not parent.reserved >> COST_SHIFT:
                    parent.shared.give_back()  # idle in this hierarchy: others may use the unspent slice
            return final

    def share_daily(self, scope_id: str, shared: SharedDaily) -> None:
        """Make a hierarchy_daily scope's cost cap one shared with other engines through `shared`'s source."""
        with self._lock:
            scope = self._get(scope_id)
            if scope.spend is None:
                raise ValueError(f"budget scope '{scope_id}' is a {scope.kind} scope; only hierarchy_daily is shared")
            scope.shared = shared
            self._shared.append(scope)

    def renew_shared(self, *, give_back: bool = False) -> None:
        """Renew the leases that are due (a timer calls this), or give every unspent slice back (the engine stops).
        An idle hierarchy's slice goes back here too: a run that ended with a call still open (settled after its
        scope closed) did not give it back at close_scope."""
        with self._lock:
            for scope in self._shared:
                shared = scope.shared
                assert shared is not None
                if give_back or (not scope.children and not scope.reserved >> COST_SHIFT):
                    shared.give_back()  # nothing to do (no round trip) when it holds nothing
                elif shared.renew_due():
                    shared.renew()

    def set_limits(self, scope_id: str, limits: BudgetLimits) -> None:
        """Replace a running scope's limits (operator action). Lowering below use makes the next reserve breach.

        A soft warning whose level changed is re-armed, so raising a budget warns again at the new threshold.
        A limit set on a scope whose chain had none takes it (and every scope inside it) off the fast paths from
        the next call on; reservations already held keep counting against it, since every path accounts them.
        """
        compiled = CompiledLimits(limits)
        with self._lock:
            scope = self._get(scope_id)
            old_levels = scope.compiled.soft_levels
            scope.soft_pending = {i for i, level in compiled.soft_levels.items()
                                  if i in scope.soft_pending or old_levels.get(i) != level}
            scope.compiled = compiled
            self._derive_subtree(scope)

    def _derive_subtree(self, scope: Scope) -> None:
        """Re-derive the chain summaries of `scope` and everything opened inside it, parents before children."""
        stack = [scope]
        while stack:
            current = stack.pop()
            current.derive_flags()
            stack.extend(self._scopes[c] for c in current.children if c in self._scopes)

    def seed_daily_spend(self, scope_id: str, entries: Iterable[tuple[float, float]]) -> None:
        """Load past spend, as (wall-clock ts, cost_usd) pairs, into a hierarchy_daily scope's rolling window."""
        seeded: list[tuple[float, int]] = []
        for ts, cost in entries:
            if not (math.isfinite(ts) and math.isfinite(cost) and cost >= 0):
                raise ValueError(f"budget scope '{scope_id}': bad daily spend entry ({ts!r}, {cost!r})")
            seeded.append((float(ts), cost_to_nano(cost) << COST_SHIFT))
        seeded.sort(key=lambda entry: entry[0])
        events: list[BudgetEvent] = []
        with self._lock:
            scope = self._get(scope_id)
            if scope.spend is None:
                raise ValueError(f"budget scope '{scope_id}' is a {scope.kind} scope; only hierarchy_daily is seeded")
            seed_daily(scope, seeded, self._clock.time())
            soft_sweep(scope, self._clock.monotonic(), events)
        self._emit(events)

    # -- the hot path ------------------------------------------------------------------------------------------------

    def reserve(self, scope_id: str, demand: Demand) -> Reservation | Breach:
        """Hold `demand` in the scope and every ancestor, or nothing at all if any of them would exceed a limit."""
        vec = demand.packed
        context = demand.context_tokens
        lock = self._lock
        lock.acquire()  # acquire/try/finally rather than `with`: measurably cheaper on this per-call path
        try:
            scope = self._scopes.get(scope_id)
            if scope is None:
                raise KeyError(f"no open budget scope '{scope_id}'")
            if scope.free and not (self.call_events and self._on_event is not None):
                # Fast path: nothing up the chain is limited, so nothing can breach or warn. Only account, so gauges
                # and a limit an operator sets later see every call in flight. Checked under the lock, so a
                # concurrent set_limits() either precedes this (slow path) or sees this reservation held.
                for s in scope.chain:
                    s.reserved += vec
                    if context > s.max_context:
                        s.max_context = context
                return Reservation(next(self._ids), scope_id, demand, vec, scope.chain, self)
            outcome, events = self._reserve_checked_locked(scope, demand, vec, context)
        finally:
            lock.release()
        if events:
            self._emit(events)  # outside the lock, so a listener may call back into the ledger
        return outcome

    def _reserve_checked_locked(self, scope: Scope, demand: Demand, vec: int, context: int
                                ) -> tuple[Reservation | Breach, list[BudgetEvent] | None]:
        """reserve() for a chain with limits (lock held): check every scope, then commit to all or none. Returns
        the outcome and the events to emit once the lock is released."""
        crossed: list[tuple[Scope, int]] | None = None
        breach: Breach | None = None
        chain = scope.chain
        now = self._monotonic()
        if scope.dailies:
            prune_dailies(scope.dailies, self._wall_time())
        # Pass 1: check every scope before touching any, so a refusal leaves nothing behind (atomicity).
        for s in chain:
            compiled = s.compiled
            if compiled.wall is not None:
                elapsed = now - s.opened_at
                if elapsed >= compiled.wall_level:
                    if elapsed >= compiled.wall:
                        breach = wall_breach(s, elapsed)
                        break
                    if WALL in s.soft_pending and elapsed > 0:
                        crossed = (crossed or []) + [(s, WALL)]
            if compiled.context is not None and context > compiled.context:
                breach = context_breach(s, context)
                break
            if compiled.checks:
                total = s.used + s.reserved + vec  # packed: every dimension's "after" in one addition
                for i, limit, level in compiled.checks:
                    after = (total >> SHIFT[i]) & MASK[i]
                    if after >= level:  # soft level <= limit, so this one comparison gates breach and warning
                        if after > limit:
                            breach = sum_breach(s, i, limit, field(vec, i))
                            break
                        if i in s.soft_pending and after > 0:
                            crossed = (crossed or []) + [(s, i)]
            if breach is not None:
                break
        else:
            if self._shared and scope.dailies:  # a daily cap shared with other engines: the slice must cover it
                breach = cover_shared(scope.dailies, vec)
            if breach is None:
                # Pass 2: commit.
                for s in chain:
                    s.reserved += vec
                    if context > s.max_context:
                        s.max_context = context
                result = Reservation(next(self._ids), scope.scope_id, demand, vec, chain, self)
        events: list[BudgetEvent] | None = None
        if breach is None and crossed:
            events = fire_warnings(crossed, now)  # marks them fired even when nobody listens
        if self._on_event is not None and (breach is not None or events or self.call_events):
            events = self._reserve_events(scope, breach, events, result if breach is None else None, vec, context)
        return (breach if breach is not None else result), events

    def settle(self, reservation: Reservation, actual: Actual, labels: Mapping[str, str] | None = None) -> None:
        """Replace the reservation with what was really used. Actual above the reservation is recorded as is."""
        act = actual.packed
        hold = reservation._vec
        crossed: list[tuple[Scope, int]] | None = None
        events: list[BudgetEvent] | None = None
        grew: bool | None = None  # whether actual exceeds the hold anywhere: computed once, if a scope asks
        lock = self._lock
        lock.acquire()  # acquire/try/finally rather than `with`: measurably cheaper on this per-call path
        try:
            if reservation._state != "open" or reservation._ledger is not self:
                self._close_reservation(reservation, "settled")  # raises, naming what is wrong
            reservation._state = "settled"
            chain = reservation._chain
            now = self._monotonic()
            cutoff = now - BURN_WINDOW_S
            entry = (now, act)  # one tuple shared by every scope's burn-rate window
            for s in chain:
                s.reserved -= hold
                s.used += act
                recent = s.recent
                recent.append(entry)
                if recent[0][0] <= cutoff:
                    prune_recent(recent, cutoff)
                # used+reserved only grows (and a soft level can only be newly crossed) where actual exceeds the
                # hold. A free chain has nothing pending, so it never gets past the first test.
                if s.soft_pending:
                    if grew is None:
                        grew = exceeds(act, hold)
                    if grew:
                        crossed = crossed_levels(s, crossed)
            dailies = chain[0].dailies
            if dailies:
                wall_now = self._wall_time()
                start = wall_now - wall_now % DAY_BUCKET_S
                for s in dailies:
                    if s.shared is not None:
                        s.shared.settled(act >> COST_SHIFT)
                    buckets = s.spend.buckets  # type: ignore[union-attr]  # dailies all have one
                    if buckets and start <= buckets[-1][0]:  # RollingDay.add(), inlined: it runs on every settle
                        buckets[-1][1] += act
                    else:
                        buckets.append([start, act])
                        # A new minute: expire what left the window here too, since a chain without limits
                        # never prunes on reserve() and the buckets must stay bounded at a day's worth.
                        prune_daily(s, wall_now)
            if self.track_attribution:
                self._attribute(chain[0], labels, act)
            if crossed:
                events = fire_warnings(crossed, now)
            if self.call_events and self._on_event is not None:
                events = events or []
                events.append(settled_event(chain[0], reservation.scope_id, reservation.id, act, labels))
        finally:
            lock.release()
        if events and self._on_event is not None:
            self._emit(events)

    def _attribute(self, scope: Scope, labels: Mapping[str, str] | None, act: int) -> None:
        """Add settled spend to the attribution table (lock held)."""
        key = scope.attr_key
        if labels:
            merged = dict(key)
            merged.update((k, str(v)) for k, v in labels.items())
            key = attribution_key(merged)
        self._attribution[key] = self._attribution.get(key, 0) + act

    @property
    def labels_used(self) -> bool:
        """Whether settle() looks at its `labels` at all. Callers on the hot path may test the cheaper
        `track_attribution or call_events` (true whenever this is) and skip building labels otherwise."""
        return self.track_attribution or (self.call_events and self._on_event is not None)

    def release(self, reservation: Reservation) -> None:
        """Give the whole reservation back: the call failed before using anything, or was cancelled."""
        hold = reservation._vec
        with self._lock:
            self._close_reservation(reservation, "released")
            for s in reservation._chain:
                s.reserved -= hold
        if self._on_event is not None and self.call_events:
            self._emit([released_event(reservation._chain[0], reservation.scope_id, reservation.id)])

    # -- internals (call with the lock held) -------------------------------------------------------------------------

    def _close_reservation(self, reservation: Reservation, state: str) -> None:
        if reservation._ledger is not self:
            raise ValueError(f"reservation {reservation.id} belongs to another ledger")
        if reservation._state != "open":
            raise RuntimeError(f"reservation {reservation.id} was already {reservation._state}")
        reservation._state = state

    def _reserve_events(self, scope: Scope, breach: Breach | None, fired: list[BudgetEvent] | None,
                        result: Reservation | None, vec: int, context: int) -> list[BudgetEvent]:
        if breach is not None:
            return [self._breach_event(breach)]  # nothing was reserved, so no soft warning either
        events = fired or []
        if self.call_events and result is not None:
            events.append(reserved_event(scope, result.id, vec, context))
        return events
