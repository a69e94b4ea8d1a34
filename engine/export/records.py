"""The rows an export reads from the trace store, as typed rows: spans, the events that become span events, runs.

Read after the trace writer committed them (live) or long after (replay), on a read-only connection to traces.db or
to a Postgres store (`engine.store.sql_reads.SqlReads`: the same qmark SQL on both). What is read
was redacted and cut by the trace writer when it was stored; the mapping redacts again with the exporting process's
redactor (engine/export/mapping.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.rows import TypedRow, fetch_typed

if TYPE_CHECKING:
    from engine.store.sql_reads import SqlReads

# Events that are the spans themselves, not facts about them.
SPAN_LIFECYCLE = frozenset({"span.started", "span.ended", "run.started", "run.ended"})
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class SpanRecord(TypedRow):
    id: str
    run_id: str
    parent_id: str | None
    kind: str
    agent: str | None
    name: str
    status: str
    started: float
    ended: float | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model: str | None
    attributes: str | None

    def attrs(self) -> dict[str, Any]:
        return _json_object(self.attributes)


@dataclass(frozen=True, slots=True)
class EventRecord(TypedRow):
    seq: int
    ts: float
    run_id: str | None
    span_id: str | None
    kind: str
    agent: str | None
    name: str | None
    data: str | None

    def payload(self) -> dict[str, Any]:
        return _json_object(self.data)


@dataclass(frozen=True, slots=True)
class RunRecord(TypedRow):
    id: str
    hierarchy: str
    status: str
    tenant: str | None
    engine_id: str | None
    engine_version: str | None
    started: float
    ended: float | None
    error: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    model_calls: int
    tool_calls: int


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


_SPAN_COLUMNS = ("id, run_id, parent_id, kind, agent, name, status, started, ended, tokens_in, tokens_out, cost_usd, "
                 "model, attributes")
_EVENT_COLUMNS = "seq, ts, run_id, span_id, kind, agent, name, data"
_RUN_COLUMNS = ("id, hierarchy, status, tenant, engine_id, engine_version, started, ended, error, tokens_in, "
                "tokens_out, cost_usd, model_calls, tool_calls")


def _chunked(conn: SqlReads, row_type: type[Any], sql: str, keys: Sequence[Any]) -> list[Any]:
    rows: list[Any] = []
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start:start + _CHUNK])
        rows += fetch_typed(conn, row_type, sql.format(marks=", ".join("?" * len(chunk))), chunk)
    return rows


def spans_by_id(conn: SqlReads, span_ids: Iterable[str]) -> list[SpanRecord]:
    return _chunked(conn, SpanRecord, f"SELECT {_SPAN_COLUMNS} FROM spans WHERE id IN ({{marks}})", list(span_ids))


def events_by_seq(conn: SqlReads, seqs: Iterable[int]) -> list[EventRecord]:
    return _chunked(conn, EventRecord, f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq IN ({{marks}}) ORDER BY seq",
                    list(seqs))


def runs_by_id(conn: SqlReads, run_ids: Iterable[str]) -> list[RunRecord]:
    return _chunked(conn, RunRecord, f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN ({{marks}})", list(run_ids))


def run_spans(conn: SqlReads, run_id: str) -> list[SpanRecord]:
    return fetch_typed(conn, SpanRecord, f"SELECT {_SPAN_COLUMNS} FROM spans WHERE run_id = ? ORDER BY started",
                       (run_id,))


def run_events(conn: SqlReads, run_id: str) -> list[EventRecord]:
    """The run's events other than span and run starts and ends (those are the spans themselves)."""
    marks = ", ".join("?" * len(SPAN_LIFECYCLE))
    return fetch_typed(conn, EventRecord, f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id = ? AND kind NOT IN "
                                          f"({marks}) ORDER BY seq", (run_id, *sorted(SPAN_LIFECYCLE)))


def ended_run_ids(conn: SqlReads, *, since: float | None = None, run_prefix: str | None = None
                  ) -> list[str]:
    """Ended runs, oldest first: those started at or after `since`, or the run(s) whose id starts with
    `run_prefix`."""
    if run_prefix is not None:
        rows = conn.execute("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY started, id",
                            (run_prefix, run_prefix + "\uffff"))
    else:
        rows = conn.execute("SELECT id FROM runs WHERE started >= ? AND ended IS NOT NULL ORDER BY started, id",
                            (since or 0.0,))
    return [row[0] for row in rows]


def run_roots(conn: SqlReads, run_ids: Iterable[str]) -> list[SpanRecord]:
    """The root span (kind run) of each run."""
    return _chunked(conn, SpanRecord, f"SELECT {_SPAN_COLUMNS} FROM spans WHERE kind = 'run' AND run_id IN "
                                      f"({{marks}})", list(run_ids))
