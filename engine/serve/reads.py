"""Serve mode's reads of runs: a queued run exists only in DBOS and the service's tally until it starts; a started one
in the trace store (traces.db or Postgres). Merged here into RunViews (engine/serve/views.py builds them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from engine.serve.contracts import RunView
from engine.serve.views import view_of_row, view_of_waiting

if TYPE_CHECKING:
    from engine.serve.service import FleetEngine


async def get_run(service: FleetEngine, run_id: str) -> RunView | None:
    """Queued: from the tally; started: its traces.db row (or `running` for a moment before it is written);
    otherwise what DBOS knows (queued, cancelled), or None."""
    waiting = service.counts.waiting(run_id)
    if waiting is not None:
        return view_of_waiting(run_id, service.members[waiting.queue].hierarchy.name, waiting)
    row = await anyio.to_thread.run_sync(_read_row, service, run_id)
    if row is not None:
        return view_of_row(row)
    if service.counts.knows(run_id):  # started a moment ago: its row is on its way to traces.db
        return RunView(run_id=run_id, hierarchy=_hierarchy_of(service, run_id), state="running")
    durable = service.engine.durable
    assert durable is not None and durable.host is not None
    found = await durable.host.latest(run_id)
    if found is None:
        return None
    _workflow, status, spec = found
    state: Any = {"ENQUEUED": "queued", "CANCELLED": "cancelled", "PENDING": "running"}.get(status, "unknown")
    return RunView(run_id=run_id, hierarchy=str(spec.get("name")), state=state, queue=spec.get("queue"),
                   tenant=spec.get("tenant"), source=spec.get("source"), submitted=spec.get("submitted"))


def _hierarchy_of(service: FleetEngine, run_id: str) -> str:
    queue = service.counts.queue_of(run_id)
    return service.members[queue].hierarchy.name if queue in service.members else ""


def _read_row(service: FleetEngine, run_id: str) -> Any:
    from engine.errors import InputError
    from engine.store import open_trace_reads

    reader = open_trace_reads(service.engine.store.trace_location)
    try:
        row = reader.get_run(run_id)
    except InputError:
        return None
    finally:
        reader.close()
    return row if row is not None and row.id == run_id else None


async def list_runs(service: FleetEngine, *, state: str | None = None, hierarchy: str | None = None,
                    tenant: str | None = None, limit: int = 100) -> list[RunView]:
    """Queued runs (newest first, from the tally), then started ones from traces.db (newest first)."""
    views: list[RunView] = []
    if state in (None, "queued"):
        for name, counts in service.counts.queues.items():
            member = service.members[name]
            if hierarchy not in (None, name, member.hierarchy.name):
                continue
            for run_id, waiting in reversed(counts.queued.items()):
                if tenant is None or waiting.tenant == tenant:
                    views.append(view_of_waiting(run_id, member.hierarchy.name, waiting))
    views = views[:limit]
    if state != "queued" and len(views) < limit:
        from engine.store import open_trace_reads

        def read() -> list[Any]:
            reader = open_trace_reads(service.engine.store.trace_location)
            try:
                return reader.list_runs(limit=limit - len(views), status=state, hierarchy=hierarchy,
                                        tenant=tenant)
            finally:
                reader.close()

        views += [view_of_row(row) for row in await anyio.to_thread.run_sync(read)]
    return views
