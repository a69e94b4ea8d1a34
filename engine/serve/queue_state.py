"""What serve mode counts in memory, per queue and per tenant, so admission stays a few dict operations at thousands
of submissions per second: runs queued (admitted, not started: DBOS holds them), running, when each was queued (the
oldest's age), starts and admissions per second over the last minute (the drain rate behind Retry-After), and
refusals. Initialised from DBOS when the engine opens (engine/durable/queues.waiting_runs); DBOS stays the truth
about what is queued, these are the engine's running tally of it."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

WINDOW_S = 60  # admissions and starts are counted per second over this many seconds
RETRY_MIN_S = 1.0
RETRY_MAX_S = 300.0
REJECTED_EVENT_EVERY_S = 1.0  # at most one `queue.rejected` trace event per queue per second (the rest counted)


class RateWindow:
    """Events per one-second bucket over the last WINDOW_S seconds: add() is O(1), total() O(WINDOW_S)."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}

    def add(self, now: float, n: int = 1) -> None:
        second = int(now)
        buckets = self._buckets
        buckets[second] = buckets.get(second, 0) + n
        if len(buckets) > WINDOW_S + 5:
            for old in [s for s in buckets if s <= second - WINDOW_S]:
                del buckets[old]

    def total(self, now: float) -> int:
        since = int(now) - WINDOW_S
        return sum(n for s, n in self._buckets.items() if s > since)


@dataclass(slots=True)
class Waiting:
    queue: str
    tenant: str
    submitted: float
    source: str | None = None


@dataclass(slots=True)
class QueueCounts:
    """One queue's tally. `queued` keeps submission order, so the oldest waiting run is its first entry."""

    name: str
    hierarchy: str
    queued: dict[str, Waiting] = field(default_factory=dict)
    running: dict[str, str] = field(default_factory=dict)  # run id -> tenant
    tenant_queued: Counter[str] = field(default_factory=Counter)
    tenant_running: Counter[str] = field(default_factory=Counter)
    admitted: RateWindow = field(default_factory=RateWindow)
    tenant_admitted: dict[str, RateWindow] = field(default_factory=dict)  # pruned when a tenant goes idle
    started: RateWindow = field(default_factory=RateWindow)
    rejected_total: int = 0
    tenant_rejected: Counter[str] = field(default_factory=Counter)
    last_rejected_event: float = -math.inf  # when the last `queue.rejected` trace event was written
    suppressed_events: int = 0  # refusals since then that wrote no event of their own

    def admit(self, tenant: str | None, now: float) -> None:
        self.admitted.add(now)
        window = self.tenant_admitted.get(tenant or "")
        if window is None:
            window = self.tenant_admitted[tenant or ""] = RateWindow()
        window.add(now)

    def tenant_admitted_per_min(self, tenant: str, now: float) -> float:
        window = self.tenant_admitted.get(tenant)
        if window is None:
            return 0.0
        total = window.total(now)
        if not total and not self.tenant_queued.get(tenant) and not self.tenant_running.get(tenant):
            del self.tenant_admitted[tenant]
        return float(total)

    def oldest_age_s(self, now: float) -> float | None:
        for waiting in self.queued.values():  # submission order: the first is the oldest
            return max(0.0, now - waiting.submitted)
        return None

    def oldest_by_tenant(self, now: float, tenants: set[str]) -> dict[str, float]:
        """Each of these tenants' oldest queued run's age, in one pass over the queue that stops once every tenant
        with runs queued has been seen (a publish per second, not per submission)."""
        wanted = {t for t in tenants if self.tenant_queued.get(t)}
        found: dict[str, float] = {}
        for waiting in self.queued.values():
            if not wanted:
                break
            if waiting.tenant in wanted:
                wanted.discard(waiting.tenant)
                found[waiting.tenant] = max(0.0, now - waiting.submitted)
        return found

    def retry_after_s(self, excess: int, now: float) -> float:
        """How long until `excess` more runs have left the queue at the rate runs started over the last minute
        (at least one a minute assumed), clamped to 1..300 s."""
        rate = max(self.started.total(now) / WINDOW_S, 1 / WINDOW_S)
        return min(RETRY_MAX_S, max(RETRY_MIN_S, math.ceil(excess / rate)))

    def rejected_event_due(self, now: float) -> tuple[bool, int]:
        """Whether this refusal writes a `queue.rejected` event (one per queue per second: a storm of refusals
        must not flood traces.db), and how many refusals since the last event wrote none (carried in the event)."""
        if now - self.last_rejected_event >= REJECTED_EVENT_EVERY_S:
            suppressed, self.suppressed_events = self.suppressed_events, 0
            self.last_rejected_event = now
            return True, suppressed
        self.suppressed_events += 1
        return False, 0


class FleetCounts:
    """Every queue's tally; the run ids it knows, to move a run from queued to running to gone."""

    def __init__(self, queues: dict[str, str]) -> None:
        """`queues`: queue name -> hierarchy name."""
        self.queues = {name: QueueCounts(name, hierarchy) for name, hierarchy in queues.items()}
        self._where: dict[str, str] = {}  # run id -> queue, for runs queued or running

    def knows(self, run_id: str) -> bool:
        return run_id in self._where

    def queued(self, queue: str, run_id: str, tenant: str | None, submitted: float | None = None,
               source: str | None = None) -> None:
        counts = self.queues.get(queue)
        if counts is None or run_id in self._where:
            return
        self._where[run_id] = queue
        tenant_key = tenant or ""
        counts.queued[run_id] = Waiting(queue, tenant_key, time.time() if submitted is None else submitted, source)
        counts.tenant_queued[tenant_key] += 1

    def started(self, queue: str, run_id: str, tenant: str | None) -> None:
        counts = self.queues.get(queue)
        if counts is None:
            return
        waiting = counts.queued.pop(run_id, None)
        tenant_key = tenant or ""
        if waiting is not None:
            _decrement(counts.tenant_queued, waiting.tenant)
        self._where[run_id] = queue
        counts.running[run_id] = tenant_key
        counts.tenant_running[tenant_key] += 1
        counts.started.add(time.time())

    def gone(self, run_id: str) -> None:
        """The run ended, was cancelled, or left this engine (handed back)."""
        queue = self._where.pop(run_id, None)
        counts = self.queues.get(queue or "")
        if counts is None:
            return
        waiting = counts.queued.pop(run_id, None)
        if waiting is not None:
            _decrement(counts.tenant_queued, waiting.tenant)
        tenant = counts.running.pop(run_id, None)
        if tenant is not None:
            _decrement(counts.tenant_running, tenant)

    def queue_of(self, run_id: str) -> str | None:
        return self._where.get(run_id)

    def waiting(self, run_id: str) -> Waiting | None:
        queue = self._where.get(run_id)
        counts = self.queues.get(queue or "")
        return None if counts is None else counts.queued.get(run_id)

    def total_queued(self) -> int:
        return sum(len(c.queued) for c in self.queues.values())

    def total_running(self) -> int:
        return sum(len(c.running) for c in self.queues.values())

    def in_flight(self) -> list[str]:
        return list(self._where)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
