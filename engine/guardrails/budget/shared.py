"""A hierarchy's daily cost cap shared by several engines: each engine leases a slice of the day's remaining
allowance from a source they all see (a Postgres store: engine/store/pg/daily_allowance.py), reserves locally
against its slice, leases more when the slice runs low, and gives back what it did not spend once it goes idle.

The ledger calls into SharedDaily with its lock held, so no state here has a lock of its own. Amounts are cost in
nano-dollars (the ledger's internal unit). Only cost is shared: the other daily dimensions (tokens, calls) stay per
engine, as they always were across restarts (the store seeds a daily scope with cost alone).

Invariant, on the source's side: spend reported by every holder within the rolling day + every live lease <= cap.
A holder's lease still counts spend it settled but has not reported yet, so the sum only ever over-counts until the
next exchange moves that spend from the lease to the reported spend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from engine.guardrails.budget.limits import Dimension
from engine.guardrails.budget.records import Breach
from engine.guardrails.budget.vectors import NANO
from engine.guardrails.budget.vectors import S3 as COST_SHIFT

if TYPE_CHECKING:
    from engine.guardrails.budget.scope import Scope

__all__ = ["AllowanceSource", "Exchange", "LeaseRenewer", "SharedDaily", "cover_shared"]


class Exchange(Protocol):
    """What one exchange with the source left: this holder's lease, and the hierarchy's state it saw."""

    @property
    def held(self) -> int: ...  # the lease this holder now has (its unspent allowance)
    @property
    def spent(self) -> int: ...  # spend reported by every holder within the rolling day
    @property
    def others(self) -> int: ...  # what the other live holders lease


class AllowanceSource(Protocol):
    """Where engines sharing a daily cap lease it from. One short transaction per call."""

    ttl: float  # seconds a lease lives without an exchange; a dead holder's lease comes back after it

    def exchange(self, hierarchy: str, cap: int, *, report: int, keep: int, want: int, at_least: int) -> Exchange:
        """Record `report` (spend settled since the last exchange), keep `keep` of this holder's lease and add up to
        `want` more if at least `at_least` of it fits under `cap` (else add nothing). Renews the lease."""
        ...

    def close(self) -> None: ...


SLICE_FRACTION = 10  # a slice is a tenth of the cap (or what one call needs, if more): ~10 exchanges a day's budget


class SharedDaily:
    """This engine's slice of one hierarchy's shared daily cost cap (lock: the ledger's)."""

    __slots__ = ("cap", "error", "held", "hierarchy", "last", "renewed", "source", "time", "unreported")

    def __init__(self, source: AllowanceSource, hierarchy: str, cap: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.hierarchy = hierarchy
        self.cap = cap
        self.held = 0  # leased and not yet spent (settled spend comes off; may go below 0 if a call overspent)
        self.unreported = 0  # settled here since the last exchange
        self.last: Exchange | None = None
        self.error: str | None = None  # why the source could not be asked, for the refusal's message
        self.time = monotonic
        self.renewed = monotonic()

    def settled(self, cost: int) -> None:
        """Hot path (every settle of a call in this hierarchy): no round trip."""
        self.held -= cost
        self.unreported += cost

    def cover(self, need: int) -> bool:
        """Make the slice cover `need` (every reservation open here plus the new one), leasing more if it does not.
        False: the day's allowance cannot (or the source cannot be reached: refused, never overspent).

        A slice older than the lease's life is not trusted even when it covers `need`: the renewals failed (the
        database is unreachable), so the source may already have handed it to another engine."""
        if need <= self.held and self.time() - self.renewed < self.source.ttl:
            return True
        short = need - max(self.held, 0)
        want = max(short, self.cap // SLICE_FRACTION)
        return self._exchange(want, short) and need <= self.held

    def renew(self) -> None:
        """Keep the lease alive while this engine holds one (a call may outlast the lease's life)."""
        if self.held > 0 or self.unreported:
            self._exchange(0, 0)

    def renew_due(self) -> bool:
        return self.time() - self.renewed >= self.source.ttl / 3

    def give_back(self) -> None:
        """Report what was spent and return the rest: this engine is idle in the hierarchy, or stopping."""
        if self.held > 0 or self.unreported:
            self._exchange(0, 0, keep=0)

    def _exchange(self, want: int, at_least: int, keep: int | None = None) -> bool:
        started = self.time()  # the lease's life runs from before the round trip: never trusted past the source's
        try:
            result = self.source.exchange(self.hierarchy, self.cap, report=self.unreported,
                                          keep=max(self.held, 0) if keep is None else keep, want=want,
                                          at_least=at_least)
        except Exception as exc:  # the database is down: refuse new spend (fail closed), keep what is owed
            self.error = f"the shared daily allowance could not be leased: {exc}"
            return False
        self.error = None
        self.unreported = 0
        self.held = result.held
        self.last = result
        self.renewed = started
        return True

    def used_elsewhere(self) -> int:
        """Spend and leases this engine cannot use, as of the last exchange (for a refusal's message)."""
        last = self.last
        return 0 if last is None else last.spent + last.others


class LeaseRenewer:
    """A thread that keeps an engine's leases alive while it holds any (a model call may outlast a lease's life)
    and gives every unspent slice back when the engine stops. `renew(give_back)` is the ledger's renew_shared."""

    def __init__(self, renew: Callable[[bool], None], ttl: float) -> None:
        self._renew = renew
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(ttl / 3,), name="flightdeck-budget-leases",
                                        daemon=True)
        self._thread.start()

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self._renew(False)  # a failed renewal is remembered by its slice, which then refuses new spend

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._renew(True)


def cover_shared(dailies: tuple[Scope, ...], vec: int) -> Breach | None:
    """reserve()'s last check (ledger lock held): every shared daily scope's slice covers what is reserved there plus
    the cost of `vec`, or the refusal, worded like any daily cap's so the runtime treats it the same."""
    cost = vec >> COST_SHIFT
    for s in dailies:
        shared = s.shared
        if shared is None:
            continue
        reserved = s.reserved >> COST_SHIFT
        if shared.cover(reserved + cost):
            continue
        limit, used = shared.cap / NANO, shared.used_elsewhere() / NANO
        held, req = reserved / NANO, cost / NANO
        why = f" ({shared.error})" if shared.error else " (shared by every engine on the store)"
        return Breach(s.scope_id, s.kind, Dimension.cost_usd, limit, used, held, req,
                      f"{s.kind} budget '{s.scope_id}' exhausted on {Dimension.cost_usd.value}: used {used:g} + "
                      f"reserved {held:g} + requested {req:g} > limit {limit:g}{why}")
    return None
