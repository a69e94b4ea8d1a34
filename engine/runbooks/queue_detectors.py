"""The serve-mode queue signal (`queue_backlog`): a gauge over the queue rows the engine publishes.

The engine upserts one row per queue (tenant "") and per tenant into traces.db `queues` every second; the writer
hands each upsert to on_commit callbacks as a `queue.state` event (engine/store/batch.py STATE_EVENTS), which the
watchdog keeps in `Facts.queues` (the latest row per (queue, tenant)). This detector reads those rows: per
hierarchy, its worst queue; global, the worst of all. The key's context names the queue and its noisiest tenant
(the most items queued, then the most admitted per minute), which a runbook's actions use as {queue} and {tenant}:

    actions:
      - flag: {name: "tenant.{tenant}", value: paused, scope: global}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.runbooks.detector_base import Detector, Dims, Event, Facts, Reading
from engine.store.trace_rows import QueueRow

FRESH_S = 60.0  # a row not published for this long (no engine publishes it) has no value


def queue_row(data: Mapping[str, Any] | None) -> QueueRow | None:
    """The QueueRow a `queue.state` event carries (None when it is not one)."""
    row = (data or {}).get("row")
    if not isinstance(row, (list, tuple)) or len(row) != len(QueueRow.__dataclass_fields__):
        return None
    return QueueRow(*row)


def measure_of(row: QueueRow, measure: str) -> float | None:
    if measure == "depth":
        return float(row.depth)
    if measure == "oldest_age_s":
        return float(row.oldest_age_s) if row.oldest_age_s is not None else 0.0
    if not row.max_depth:
        return None
    return 100.0 * float(row.depth) / float(row.max_depth)


def noisiest_tenant(facts: Facts, queue: str) -> str | None:
    tenants = [r for (q, t), r in facts.queues.items() if q == queue and t]
    if not tenants:
        return None
    return max(tenants, key=lambda r: (r.depth, r.admitted_per_min, r.tenant)).tenant


class QueueBacklogDetector(Detector):
    """A gauge over Facts.queues; events only matter through Facts."""

    def __init__(self, condition: Any) -> None:
        super().__init__(condition)
        self._values: dict[str, tuple[float, QueueRow]] = {}
        self._tenants: dict[str, str | None] = {}

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        return []

    def add(self, t: float, key: str, values: tuple[float, ...]) -> None:
        return None

    def keys(self) -> set[str]:
        return set(self._values)

    def expire(self, now: float, facts: Facts) -> None:
        """The worst queue per key, from the rows published in the last FRESH_S."""
        worst: dict[str, tuple[float, QueueRow]] = {}
        for (_, tenant), row in facts.queues.items():
            if tenant or now - float(row.updated) > FRESH_S:
                continue
            value = measure_of(row, self.params["measure"])
            key = Dims(hierarchy=row.hierarchy).key(self.scope)
            if value is None or key is None or (self.condition.target is not None and key != self.condition.target):
                continue
            if key not in worst or value > worst[key][0]:
                worst[key] = (value, row)
        self._values = worst
        self._tenants = {key: noisiest_tenant(facts, row.queue) for key, (_, row) in worst.items()}

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        found = self._values.get(key)
        if found is None:
            return Reading(None, False, 0)
        return Reading(found[0], self.holds(found[0]), 1)


    def context(self, key: str) -> dict[str, Any]:
        """What a queue detection fills in actions: {hierarchy}, {queue}, {tenant}."""
        found = self._values.get(key)
        if found is None:
            return {}
        row = found[1]
        return {"hierarchy": row.hierarchy, "queue": row.queue, "tenant": self._tenants.get(key), "agent": None,
                "tool": None, "run": None, "runs": []}
