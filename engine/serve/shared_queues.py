"""Serve engines sharing DBOS's queues on one Postgres store (issue 16): a run one engine admitted may be dequeued
by another. The admitting engine counts it as queued until its gate sees it start, which on a shared store may be
never; so, once a second, each engine asks DBOS about the runs it counts as queued and no longer counts those that
left the queue (started elsewhere, cancelled, finished). Without this an engine's queue depth would only grow and
its admission would refuse submissions the fleet has long since run.

Only runs whose enqueue has returned are asked about (`Tracked.enqueued`): one still being enqueued is not in
DBOS yet and would look gone."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.durable import queues as durable_queues
from engine.serve.queue_state import FleetCounts


@dataclass
class Tracked:
    """Runs counted as queued here that are known to be on a DBOS queue (enqueued here, or found ENQUEUED at
    start). Dropped when this engine's gate takes one, or when DBOS says it left the queue."""

    enqueued: set[str] = field(default_factory=set)

    def add(self, run_id: str) -> None:
        self.enqueued.add(run_id)

    def taken_here(self, run_id: str) -> None:
        self.enqueued.discard(run_id)

    async def forget_dequeued_elsewhere(self, counts: FleetCounts) -> list[str]:
        """No longer count the runs that left DBOS's queue without reaching this engine's gate; returns them."""
        asked = [run_id for run_id in self.enqueued if counts.waiting(run_id) is not None]
        self.enqueued -= self.enqueued - set(asked)  # gone from the tally some other way (cancelled here)
        if not asked:
            return []
        found = await durable_queues.statuses(asked)
        gone = [run_id for run_id in asked if found.get(run_id, "ENQUEUED") != "ENQUEUED"
                and run_id in self.enqueued]  # (the gate may have taken it meanwhile)
        for run_id in gone:
            self.enqueued.discard(run_id)
            if counts.waiting(run_id) is not None:
                counts.gone(run_id)
        return gone
