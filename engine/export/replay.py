"""Stored runs to an OTLP backend (`flightdeck export otlp --run ID | --since 24h`): the same spans, ids and attributes
the live exporter sends, read from the trace store (traces.db or a Postgres store) after the fact. A replay of a run
that was exported live carries the same trace and span ids, so backends that deduplicate on them show it once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import InputError
from engine.export.pipeline import MAX_SPANS_PER_REQUEST
from engine.export.records import EventRecord, ended_run_ids, run_events, run_roots, run_spans, runs_by_id
from engine.export.settings import ExportSettings
from engine.store.redact import Redactor

if TYPE_CHECKING:
    from engine.store.location import StoreLocation
    from engine.store.sql_reads import SqlReads


@dataclass(slots=True)
class ReplayReport:
    runs: int = 0
    spans: int = 0
    requests: int = 0
    failed_spans: int = 0
    errors: list[str] = field(default_factory=list)


def select_runs(store: Path | StoreLocation, *, run_prefix: str | None = None, since: float | None = None) -> list[str]:
    """The ended runs to export: one run by id or unique prefix (InputError when unknown, ambiguous or still
    running), or every run started since `since`."""
    conn = _connect(store)
    try:
        if run_prefix is None:
            return ended_run_ids(conn, since=since)
        matches = ended_run_ids(conn, run_prefix=run_prefix)
        if not matches:
            raise InputError(f"no run {run_prefix!r} in this store", field="--run")
        if len(matches) > 1:
            raise InputError(f"{run_prefix!r} matches {len(matches)} runs; give more of the id", field="--run")
        [run] = runs_by_id(conn, matches)
        if run.ended is None:
            raise InputError(f"run {run.id} is still running; export it when it has ended (a live engine with "
                             f"[otel] on exports it as it goes)", field="--run")
        return matches
    finally:
        conn.close()


def replay(store: Path | StoreLocation, run_ids: list[str], settings: ExportSettings, redactor: Redactor, *,
           version: str = "", progress: Callable[[str, int], None] | None = None) -> ReplayReport:
    from engine.export.encoding import encode
    from engine.export.mapping import MappingOptions, SpanMapper
    from engine.export.sender import Sender

    mapper = SpanMapper(MappingOptions(service_name=settings.service_name,
                                       resource_attributes=settings.resource_attributes, content=settings.content,
                                       version=version), redactor)
    sender = Sender(settings, wait=threading.Event().wait)
    report = ReplayReport()
    conn = _connect(store)
    try:
        for run_id in run_ids:
            spans = run_spans(conn, run_id)
            roots = {root.run_id: root.id for root in run_roots(conn, [run_id])}
            events: dict[str, list[EventRecord]] = {}
            for event in run_events(conn, run_id):
                owner = event.span_id or roots.get(run_id)
                if owner is not None:
                    events.setdefault(owner, []).append(event)
            runs = {run.id: run for run in runs_by_id(conn, [run_id])}
            report.runs += 1
            for start in range(0, len(spans), MAX_SPANS_PER_REQUEST):
                part = spans[start:start + MAX_SPANS_PER_REQUEST]
                outcome = sender.send(encode(mapper.request(part, events, runs), settings.protocol))
                report.requests += 1
                if outcome.sent:
                    report.spans += len(part)
                else:
                    report.failed_spans += len(part)
                    report.errors.append(f"run {run_id}: {outcome.error}")
            if progress is not None:
                progress(run_id, len(spans))
    finally:
        conn.close()
        sender.close()
    return report


def _connect(store: Path | StoreLocation) -> SqlReads:
    """traces.db opened read-only, or a read-only session on a Postgres store (StoreError when there is none)."""
    from engine.store.location import StoreDirectory
    from engine.store.sql_reads import open_sql_reads

    return open_sql_reads(StoreDirectory(Path(store)) if isinstance(store, Path) else store)
