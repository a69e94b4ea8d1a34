"""Admission: whether a submission may be queued, decided from memory (flags as the engine last applied them, the
queue's tally): 503 while the engine stops or admission is paused/draining (the hierarchy's `runs.admission`, the
queue's `queue.NAME`, the tenant's `tenant.NAME`, a kill or drain switch), 429 when the queue or the tenant's share
of it is at its bound, with Retry-After from the queue's recent drain rate. Nothing here queues or records: the
service counts and records every refusal."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from engine.serve.contracts import Refused

if TYPE_CHECKING:
    from engine.runtime.controls import RuntimeControls
    from engine.serve.fleet import QueueSpec
    from engine.serve.queue_state import QueueCounts


def flag_value(controls: RuntimeControls, name: str, hierarchy: str | None = None) -> tuple[str | None, str]:
    """The flag's value in force (the hierarchy's, else the global one) and who set it and why, as words."""
    for scope, target in (("hierarchy", hierarchy), ("global", None)):
        if scope == "hierarchy" and hierarchy is None:
            continue
        value = (controls.flags.get(name) or {}).get((scope, target))
        if value is not None:
            row = controls.flag_rows.get((name, scope, target))
            who = "" if row is None else f" (set by {row.operator}: {row.reason})"
            where = "" if scope == "global" else f" on hierarchy {hierarchy}"
            return value, f"flag {name}={value}{where}{who}"
    return None, ""


def queue_admission(controls: RuntimeControls, queue: str, hierarchy: str) -> str:
    """open, paused or draining: what the queue's row shows (runs.admission=paused counts as paused)."""
    value, _ = flag_value(controls, f"queue.{queue}")
    if value in ("paused", "draining"):
        return value
    admission, _ = flag_value(controls, "runs.admission", hierarchy)
    return "paused" if admission == "paused" else "open"


def holds_queued(controls: RuntimeControls, queue: str, hierarchy: str) -> str | None:
    """Why the queue's queued runs wait instead of starting (queue.NAME=paused, runs.admission=paused), or None."""
    value, words = flag_value(controls, f"queue.{queue}")
    if value == "paused":
        return words
    value, words = flag_value(controls, "runs.admission", hierarchy)
    return words if value == "paused" else None


def refusal(controls: RuntimeControls, counts: QueueCounts, spec: QueueSpec, tenant: str | None,
            stopping: str | None) -> Refused | None:
    """Why this submission is refused now (a Refused to raise), or None: admit it."""
    queue, hierarchy = counts.name, counts.hierarchy
    if stopping is not None:
        return Refused(503, f"queue {queue} takes no submissions: {stopping}")
    value, words = flag_value(controls, "runs.admission", hierarchy)
    if value == "paused":
        return Refused(503, f"queue {queue} takes no submissions: new runs are paused ({words})")
    value, words = flag_value(controls, f"queue.{queue}")
    if value in ("paused", "draining"):
        return Refused(503, f"queue {queue} takes no submissions: it is {value} ({words})")
    if tenant:
        value, words = flag_value(controls, f"tenant.{tenant}")
        if value == "paused":
            return Refused(503, f"tenant {tenant} is paused: its submissions are refused ({words})")
    other = controls.admission_refusal(hierarchy)  # kill/drain switches, the trace store failing
    if other is not None:
        return Refused(503, f"queue {queue} takes no submissions: {other.removeprefix('refused: ')}")
    depth = len(counts.queued)
    now = time.time()
    if depth >= spec.max_depth:
        return Refused(429, f"queue {queue} is full: {depth} runs queued, its bound is max_depth={spec.max_depth}",
                       retry_after_s=counts.retry_after_s(depth - spec.max_depth + 1, now))
    if spec.per_tenant_max_depth is not None:
        tenant_depth = counts.tenant_queued.get(tenant or "", 0)
        if tenant_depth >= spec.per_tenant_max_depth:
            return Refused(429, f"tenant {tenant or '(none)'} has {tenant_depth} runs queued on {queue}, its bound "
                                f"is per_tenant_max_depth={spec.per_tenant_max_depth}",
                           retry_after_s=counts.retry_after_s(tenant_depth - spec.per_tenant_max_depth + 1, now))
    return None
