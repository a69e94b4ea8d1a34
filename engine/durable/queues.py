"""Serve mode's queues on DBOS (the only other module that imports DBOS, beside host.py): one DBOS queue per
hierarchy, persisted in durable.db, which DBOS's queue threads dequeue from into the run workflow (host.py).

What DBOS owns here: the order runs wait in (priority, then submission), how many of a queue run at once on this
engine (`worker_concurrency`) and per tenant (`partition_worker_concurrency`, each tenant its own partition), how
many start per period (`limiter`), and a queued run's inputs until it starts. What it does not do, the service does
(engine/serve/): admission (depth bounds, paused queues and tenants), counting, holding a paused queue's runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetEnqueueOptions, SetWorkflowID, error

from engine.durable.host import RUN_WORKFLOW, detached, run_workflow

NO_TENANT = "-"  # the partition of runs submitted with no tenant (a partitioned queue needs a key on every run)
POLL_S = 0.1  # how often DBOS looks for runs to start on each queue (a SELECT on durable.db)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    concurrency: int | None = None
    per_tenant_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period_s: float | None = None

    @property
    def partitioned(self) -> bool:
        return self.per_tenant_concurrency is not None


@dataclass(frozen=True, slots=True)
class WaitingRun:
    """A run DBOS holds as not finished for a serve-mode queue: ENQUEUED (not started) or PENDING (started)."""

    run_id: str
    status: str
    created: float
    spec: dict[str, Any]


def check_config(config: QueueConfig) -> str | None:
    """Why DBOS would refuse this queue's bounds, or None."""
    if (config.per_tenant_concurrency is not None and config.concurrency is not None
            and config.per_tenant_concurrency > config.concurrency):
        return (f"per_tenant_concurrency ({config.per_tenant_concurrency}) must not exceed concurrency "
                f"({config.concurrency})")
    return None


async def register_queue(config: QueueConfig) -> None:
    """Create or update the queue in durable.db (this fleet's bounds win over what an earlier serve stored)."""
    limiter: Any = None if config.rate_limit is None else {"limit": config.rate_limit,
                                                           "period": config.rate_period_s}
    await DBOS.register_queue_async(config.name, worker_concurrency=config.concurrency,
                                    partition_worker_concurrency=config.per_tenant_concurrency, limiter=limiter,
                                    polling_interval_sec=POLL_S, on_conflict="always_update")


async def enqueue(config: QueueConfig, run_id: str, spec: dict[str, Any], *, priority: int,
                  tenant: str | None, dedup_key: str | None) -> None:
    """Queue the run workflow `run_id` (returns at once; DBOS starts it when the queue's bounds allow). `priority`:
    0 first. A workflow id that exists already starts nothing (the same idempotency key names the same run id);
    DBOS's deduplication id (not available on a partitioned queue) is the backstop for a key still queued."""

    async def go() -> None:
        options = SetEnqueueOptions(priority=priority + 1,  # DBOS: 1 is the first of the priorities one sets
                                    queue_partition_key=(tenant or NO_TENANT) if config.partitioned else None,
                                    deduplication_id=None if config.partitioned else dedup_key)
        with SetWorkflowID(run_id), options:
            await DBOS.enqueue_workflow_async(config.name, run_workflow, run_id, spec)

    try:
        await detached(go())
    except error.DBOSQueueDeduplicatedError:
        pass  # the run this key names is queued already


async def waiting_runs(queues: list[str]) -> list[WaitingRun]:
    """Runs of these queues that have not finished, oldest first (what an engine counts as queued at start). Found
    by their spec's `queue`, not DBOS's queue column: a resumed run sits on DBOS's internal queue."""
    rows = await detached(DBOS.list_workflows_async(status=["ENQUEUED", "PENDING"], name=RUN_WORKFLOW,
                                                    load_output=False))
    found = []
    for row in rows:
        args: Any = (row.input or {}).get("args") or ()
        spec = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        if spec.get("queue") in queues:
            found.append(WaitingRun(str(args[0]), str(row.status), (row.created_at or 0) / 1000, spec))
    return sorted(found, key=lambda run: run.created)


async def cancel(run_id: str) -> None:
    """Cancel the run's workflow: a queued run never starts; one started stops being DBOS's to resume."""
    await detached(DBOS.cancel_workflow_async(run_id))


async def statuses(run_ids: list[str]) -> dict[str, str]:
    """DBOS's status of each of these run workflows (ENQUEUED, PENDING, SUCCESS, ...); ids it does not know are
    left out."""
    if not run_ids:
        return {}
    rows = await detached(DBOS.list_workflows_async(workflow_ids=list(run_ids), load_input=False, load_output=False))
    return {str(row.workflow_id): str(row.status) for row in rows}


async def enqueued_at_least(queue: str, n: int) -> bool:
    """Whether DBOS holds at least `n` runs ENQUEUED on `queue`, every engine's (on a Postgres store the fleet's).
    One query asking for the n-th such row (offset n - 1, limit 1): Postgres walks the queue's in-flight index up to
    it and returns at most one row, so the cost grows with min(depth, n), never with rows sent back."""
    if n <= 0:
        return True
    rows = await detached(DBOS.list_queued_workflows_async(queue_name=queue, status="ENQUEUED", limit=1, offset=n - 1,
                                                           load_input=False, load_output=False))
    return bool(rows)
