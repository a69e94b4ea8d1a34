"""TraceReader: read-only access to traces.db for the CLI and the console (other processes than the engine).

Opened with mode=ro and in autocommit mode: every method is a few short statements, each fully stepped before it
returns, so no read transaction outlives a call and the engine's WAL can always checkpoint. Methods return typed rows
(engine.store.trace_rows: RunRow, SpanRow, EventRow, ...) built positionally from the cursor's tuples; JSON columns
(input, output, attributes, data) come back parsed. `query()` is the one dict-shaped escape hatch, for ad-hoc reads;
`query_rows()` is its typed form. The reads themselves are trace_queries.py's TraceQueries, shared with the
Postgres reader; here are the SQLite plumbing and the reads whose SQL is SQLite's own.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar, cast

from engine.errors import StoreError
from engine.store.files import connect, translate_sqlite_error
from engine.store.migrate import check_not_too_new, schema_version
from engine.store.rows import TypedRow, row_builder
from engine.store.trace_queries import TraceQueries, run_filters
from engine.store.trace_rows import DegradedCall
from engine.store.traces_schema import RUN_STATUSES, TRACES_MIGRATIONS

__all__ = ["TraceReader", "run_filters"]

RowT = TypeVar("RowT", bound=TypedRow)

_JSON_COLUMNS = frozenset({"input", "output", "attributes", "data"})
_JSON_AT: dict[type[Any], tuple[tuple[str, ...], tuple[int, ...]]] = {}


def _layout(row_type: type[TypedRow]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """`row_type`'s field names and the positions of its JSON columns (cached)."""
    layout = _JSON_AT.get(row_type)
    if layout is None:
        names = tuple(f.name for f in fields(cast(Any, row_type)))
        layout = _JSON_AT[row_type] = (names, tuple(i for i, name in enumerate(names) if name in _JSON_COLUMNS))
    return layout


def _loads(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


class TraceReader(TraceQueries):
    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._lock = threading.Lock()
        self._conn = connect(db_path, read_only=True, check_same_thread=False)
        try:
            version = schema_version(self._conn)
        except sqlite3.Error as exc:
            self._conn.close()
            raise translate_sqlite_error(exc, db_path, "read") from exc
        known = len(TRACES_MIGRATIONS)
        try:
            check_not_too_new(version, known, db_path)
            if version < known:
                raise StoreError(f"{db_path} has schema version {version} (this Flightdeck uses {known}); start the "
                                 f"engine on this store once (flightdeck run) to upgrade it")
        except StoreError:
            self._conn.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
                names = [column[0] for column in cursor.description or ()]
                raw = cursor.fetchall()  # steps to the end: the implicit read transaction ends here
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc
        json_at = [i for i, name in enumerate(names) if name in _JSON_COLUMNS]
        rows = []
        for values in raw:
            row = dict(zip(names, values))
            for i in json_at:
                row[names[i]] = _loads(values[i])
            rows.append(row)
        return rows

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        """A short read-only SELECT of your own, rows as dicts with JSON columns parsed (ad-hoc reads, tests). Keep
        it indexed: it runs against the live store. Code that keeps its rows uses `query_rows`."""
        return self._rows(sql, params)

    def query_rows(self, row_type: type[RowT], sql: str,
                   params: tuple[Any, ...] | list[Any] = ()) -> list[RowT]:
        """A short read-only SELECT of your own as typed rows: it must select `row_type`'s fields, in field order
        (TypeError otherwise); JSON columns come back parsed. For reports such as usage_queries."""
        names, json_at = _layout(row_type)
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
                selected = tuple(column[0] for column in cursor.description or ())
                raw = cursor.fetchall()  # steps to the end: the implicit read transaction ends here
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc
        if selected != names:
            raise TypeError(f"query selects {', '.join(selected)}; {row_type.__name__} needs {', '.join(names)}")
        build = row_builder(row_type)
        if not json_at:
            return [build(values) for values in raw]
        rows = []
        for values in raw:
            parsed = list(values)
            for i in json_at:
                if parsed[i] is not None:
                    parsed[i] = _loads(parsed[i])
            rows.append(build(parsed))
        return rows

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            try:
                row = self._conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc
        return None if row is None else row[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- change detection --------------------------------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "is there anything new" check for polling."""
        return int(self._scalar("PRAGMA data_version"))

    def count_runs(self, since: float) -> dict[str, int]:
        """For the header: `active` = running now; `started` = started since `since`; and for every final
        status, how many runs ended with it since `since`."""
        counts = {status: 0 for status in RUN_STATUSES if status != "running"}
        counts["active"] = int(self._scalar("SELECT count(*) FROM runs WHERE status = 'running'"))
        counts["started"] = int(self._scalar("SELECT count(*) FROM runs WHERE started >= ?", (since,)))
        # INDEXED BY: without statistics the planner would rather walk the whole status index to skip a sort.
        for row in self._rows("SELECT status, count(*) AS n FROM runs INDEXED BY runs_ended WHERE ended >= ? "
                              "GROUP BY status", (since,)):
            if row["status"] != "running":
                counts[row["status"]] = row["n"]
        return counts

    def degraded_calls(self, run_ids: list[str]) -> list[DegradedCall]:
        """Tool calls of these runs that the engine withheld (safe mode, an open breaker, a disabled tool), a kill
        switch on the tool stopped, or an approval denied or let expire: the spans with status `denied` and an
        error_kind, in start order. Derived from the spans at read time (nothing extra on the writer's hot path,
        and runs recorded before this reader existed say it too); indexed by spans (run_id, started)."""
        out: list[DegradedCall] = []
        for start in range(0, len(run_ids), 500):  # bound the number of SQL variables
            chunk = run_ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            out += self.query_rows(DegradedCall, (
                "SELECT run_id, name AS tool, json_extract(attributes, '$.error_kind') AS kind, "
                "coalesce(json_extract(attributes, '$.error'), '') AS reason FROM spans "
                f"WHERE run_id IN ({marks}) AND kind = 'tool' AND status = 'denied' "
                "AND json_extract(attributes, '$.error_kind') IS NOT NULL ORDER BY run_id, started, id"), chunk)
        return out

    def _has_table(self, name: str) -> bool:
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))
