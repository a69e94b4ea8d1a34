"""Runs and queues as serve mode reports them: a run queued exists only in DBOS and the engine's tally until it
starts; once started, its traces.db row is the truth. QueueRows are built from the tally."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any, cast

from engine.serve.contracts import RunState, RunView
from engine.store.trace_rows import QueueRow

if TYPE_CHECKING:
    from engine.runtime.controls import RuntimeControls
    from engine.serve.members import Member
    from engine.serve.queue_state import QueueCounts, Waiting
    from engine.store.trace_rows import RunRow

_STATES = {"queued", "running", "completed", "failed", "killed", "cancelled", "needs_reconcile", "refused"}


def state_tuple(row: Any) -> tuple[Any, ...]:
    """A typed row as writer.state() takes it: every column, in field order."""
    return tuple(getattr(row, f.name) for f in fields(row))


def state_of(status: str) -> RunState:
    """A runs row's status as a RunState (budget_exceeded and loop_detected are failures with their reason)."""
    if status in _STATES:
        return cast(RunState, status)
    return "failed" if status in ("budget_exceeded", "loop_detected") else "unknown"


def view_of_row(row: RunRow, queue: str | None = None, source: str | None = None) -> RunView:
    attrs: Any = row.attributes if isinstance(row.attributes, dict) else {}
    return RunView(run_id=row.id, hierarchy=row.hierarchy, state=state_of(row.status),
                   queue=queue or attrs.get("queue"), tenant=row.tenant, source=source or attrs.get("source"),
                   submitted=attrs.get("submitted"), started=row.started, ended=row.ended, output=row.output,
                   error=row.error if row.error is not None else (
                       None if row.status in _STATES else row.status), cost_usd=row.cost_usd)


def view_of_waiting(run_id: str, hierarchy: str, waiting: Waiting) -> RunView:
    return RunView(run_id=run_id, hierarchy=hierarchy, state="queued", queue=waiting.queue,
                   tenant=waiting.tenant or None, source=waiting.source, submitted=waiting.submitted)


def queue_rows(member: Member, counts: QueueCounts, controls: RuntimeControls, tenants: set[str]) -> list[QueueRow]:
    """The queue's row (tenant "") and one per tenant in `tenants` (those active now or just gone idle)."""
    from engine.serve.admission import flag_value, queue_admission

    now = time.time()
    spec = member.queue
    hierarchy = member.hierarchy.name
    rows = [QueueRow(queue=member.name, tenant="", hierarchy=hierarchy, depth=len(counts.queued),
                     running=len(counts.running), oldest_age_s=counts.oldest_age_s(now),
                     admitted_per_min=float(counts.admitted.total(now)), rejected_total=counts.rejected_total,
                     max_depth=spec.max_depth, concurrency=spec.concurrency, rate_limit=spec.rate_limit,
                     admission=queue_admission(controls, member.name, hierarchy), updated=now)]
    oldest = counts.oldest_by_tenant(now, tenants)
    for tenant in sorted(tenants):
        paused, _ = flag_value(controls, f"tenant.{tenant}")
        rows.append(QueueRow(queue=member.name, tenant=tenant, hierarchy=hierarchy,
                             depth=counts.tenant_queued.get(tenant, 0), running=counts.tenant_running.get(tenant, 0),
                             oldest_age_s=oldest.get(tenant),
                             admitted_per_min=counts.tenant_admitted_per_min(tenant, now),
                             rejected_total=counts.tenant_rejected.get(tenant, 0),
                             max_depth=spec.per_tenant_max_depth, concurrency=spec.per_tenant_concurrency,
                             rate_limit=None, admission="paused" if paused == "paused" else "open", updated=now))
    return rows
