"""The runbook engine's two reads of the trace store, through `TraceReads` so they work on traces.db and on a
Postgres store alike (issue 16): exact span durations for latency detections, and the hierarchy of runs closed out
as abandoned before the engine started. Both are fallbacks: a store that cannot be read yet (no traces.db, the
database unreachable) gives nothing, and the detection goes without, as it did before either existed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import StoreError
from engine.store.rows import TypedRow

if TYPE_CHECKING:
    from engine.store.location import StoreLocation
    from engine.store.reader_protocol import TraceReads

log = logging.getLogger(__name__)
CHUNK = 500


@dataclass(frozen=True, slots=True)
class SpanTimes(TypedRow):
    id: str
    started: float
    ended: float


@dataclass(frozen=True, slots=True)
class RunHierarchy(TypedRow):
    id: str
    hierarchy: str


def _placeholders(n: int) -> str:
    return ", ".join("?" * n)


class SpanDurations:
    """Exact durations (ended - started) of spans, read by primary key. The writer puts `duration_s` into
    span.ended events; this is the fallback for an end event without it (a span the writer never saw start), since
    the arrival times of start and end events are only as precise as the writer's batches. Used only when a latency
    detection exists, and only for such llm/tool spans. Called on the runbook thread only; the reader opens lazily
    (the trace store may not exist yet when the runbook engine starts) and is closed by close()."""

    def __init__(self, location: StoreLocation) -> None:
        self.location = location
        self._reader: TraceReads | None = None

    def __call__(self, span_ids: list[str]) -> dict[str, float]:
        reader = self._open()
        if reader is None:
            return {}
        out: dict[str, float] = {}
        try:
            for start in range(0, len(span_ids), CHUNK):
                chunk = span_ids[start:start + CHUNK]
                rows = reader.query_rows(SpanTimes, f"SELECT id, started, ended FROM spans WHERE id IN "
                                                    f"({_placeholders(len(chunk))}) AND ended IS NOT NULL", chunk)
                out.update({row.id: max(0.0, row.ended - row.started) for row in rows})
        except StoreError as exc:  # a dropped connection: reopen next time, go without now
            log.warning("runbook engine: span durations unavailable: %s", exc)
            self.close()
        return out

    def _open(self) -> TraceReads | None:
        if self._reader is None:
            from engine.store import open_trace_reads

            try:
                self._reader = open_trace_reads(self.location)
            except StoreError:
                return None
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                reader.close()
            except StoreError:
                pass


def run_hierarchies(location: StoreLocation, run_ids: list[str]) -> dict[str, str]:
    """The hierarchy of each of these runs ({} when the trace store cannot be read)."""
    from engine.store import open_trace_reads

    if not run_ids:
        return {}
    try:
        reader = open_trace_reads(location)
    except StoreError:
        return {}
    out: dict[str, str] = {}
    try:
        for start in range(0, len(run_ids), CHUNK):
            chunk = run_ids[start:start + CHUNK]
            rows = reader.query_rows(RunHierarchy, f"SELECT id, hierarchy FROM runs WHERE id IN "
                                                   f"({_placeholders(len(chunk))})", chunk)
            out.update({row.id: row.hierarchy for row in rows})
    except StoreError as exc:
        log.warning("runbook engine: hierarchies of abandoned runs unavailable: %s", exc)
    finally:
        reader.close()
    return out
