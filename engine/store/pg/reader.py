"""PgTraceReader: TraceReader's reads on a Postgres trace store, with the same typed rows.

The reads are TraceQueries' (engine/store/trace_queries.py), shared with the SQLite reader; here is the plumbing
(a psycopg connection in autocommit mode, so no read transaction outlives a call, like the SQLite reader's) and the
reads whose SQL is Postgres's own. `query_rows` takes qmark (`?`) SQL, as TraceReader's does, and hands the driver
`%s` placeholders: the shared queries never put a literal `?` or `%` in their SQL text.

JSON columns are TEXT holding JSON (schema.py) and are parsed here as the SQLite reader parses them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar, cast

from engine.store.pg.connection import connect, store_error, to_driver_sql
from engine.store.pg.schema import check_version, schema_version
from engine.store.rows import TypedRow, column_list, row_builder
from engine.store.trace_queries import TraceQueries
from engine.store.trace_rows import (
    BreakerFleetRow,
    BreakerRow,
    DegradedCall,
    EngineQueueRow,
    QueueRow,
    ScheduleRow,
)
from engine.store.traces_schema import RUN_STATUSES

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation

RowT = TypeVar("RowT", bound=TypedRow)

_JSON_COLUMNS = frozenset({"input", "output", "attributes", "data"})


def _loads(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


class PgTraceReader(TraceQueries):
    """Reads of a Postgres trace store. Thread-safe (one lock around the connection), like TraceReader."""

    def __init__(self, location: PostgresLocation, conn: psycopg.Connection[Any]) -> None:
        self.location = location
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, location: PostgresLocation) -> PgTraceReader:
        """Connect and check the trace schema: StoreError when unreachable or holding no (or an older) trace store,
        StoreTooNew when a newer Flightdeck wrote it."""
        reader = cls.connect_if_present(location, missing_ok=False)
        assert reader is not None
        return reader

    @classmethod
    def connect_if_present(cls, location: PostgresLocation, *, missing_ok: bool = True) -> PgTraceReader | None:
        """As connect(), but None when the database has no trace store yet (nothing has written traces there: the
        Postgres store's equivalent of a directory without traces.db)."""
        conn = connect(location, autocommit=True)
        try:
            # A reader never writes: the database refuses it (as traces.db opened mode=ro does).
            conn.execute("SET default_transaction_read_only = on")
            if missing_ok and schema_version(conn) == 0:
                conn.close()
                return None
            check_version(conn, location)
        except BaseException:
            conn.close()
            raise
        return cls(location, conn)

    # -- plumbing ----------------------------------------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...] | list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        import psycopg

        with self._lock:
            try:
                cursor = self._conn.execute(to_driver_sql(sql), list(params))
                names = [column.name for column in cursor.description or ()]
                return names, cursor.fetchall()
            except psycopg.Error as exc:
                raise store_error(self.location, exc, "read") from None

    def _rows(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        names, raw = self._execute(sql, params)
        return [{name: (_loads(value) if name in _JSON_COLUMNS else value) for name, value in zip(names, values)}
                for values in raw]

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        """A short read-only SELECT of your own (qmark parameters), rows as dicts with JSON columns parsed."""
        return self._rows(sql, params)

    def query_rows(self, row_type: type[RowT], sql: str,
                   params: tuple[Any, ...] | list[Any] = ()) -> list[RowT]:
        """As TraceReader.query_rows: the SELECT must name `row_type`'s fields in order (TypeError otherwise)."""
        names = tuple(f.name for f in fields(cast(Any, row_type)))
        selected, raw = self._execute(sql, params)
        if tuple(selected) != names:
            raise TypeError(f"query selects {', '.join(selected)}; {row_type.__name__} needs {', '.join(names)}")
        build = row_builder(row_type)
        json_at = [i for i, name in enumerate(names) if name in _JSON_COLUMNS]
        if not json_at:
            return [build(values) for values in raw]
        rows = []
        for values in raw:
            parsed = list(values)
            for i in json_at:
                parsed[i] = _loads(parsed[i])
            rows.append(build(parsed))
        return rows

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        _, raw = self._execute(sql, params)
        return raw[0][0] if raw else None

    def _has_table(self, name: str) -> bool:
        return self._scalar("SELECT to_regclass(?) IS NOT NULL", (name,)) is True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> PgTraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads in Postgres's own SQL -----------------------------------------------------------------------------

    def data_version(self) -> int:
        """Changes whenever a trace writer commits (Postgres has no PRAGMA data_version): the last event number
        handed out and every engine's trace-writer batch counter (`trace_writers`, bumped in each batch's
        transaction, so a batch with only run progress or current-state rows counts too). Two tiny reads in one
        statement, cheap enough for the console's poll. A batch written without a marker (PgBatchWriter.flush, used
        by tests and tools) shows only through its events."""
        row = self._execute("SELECT (SELECT last FROM event_seq WHERE id = 1), "
                            "(SELECT coalesce(sum(batch_no), 0) + count(*) FROM trace_writers)", ())[1]
        last, batches = (int(value or 0) for value in row[0]) if row else (0, 0)
        return (last << 32) ^ batches

    def count_runs(self, since: float) -> dict[str, int]:
        """As TraceReader.count_runs."""
        counts = {status: 0 for status in RUN_STATUSES if status != "running"}
        counts["active"] = int(self._scalar("SELECT count(*) FROM runs WHERE status = 'running'"))
        counts["started"] = int(self._scalar("SELECT count(*) FROM runs WHERE started >= ?", (since,)))
        for row in self._rows("SELECT status, count(*) AS n FROM runs WHERE ended IS NOT NULL AND ended >= ? "
                              "GROUP BY status", (since,)):
            if row["status"] != "running":
                counts[row["status"]] = row["n"]
        return counts

    def degraded_calls(self, run_ids: list[str]) -> list[DegradedCall]:
        """As TraceReader.degraded_calls. The attributes are parsed here rather than cast to jsonb in SQL (a cast
        would fail the whole read on one payload jsonb refuses); the denied tool spans are few."""
        out: list[DegradedCall] = []
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start:start + 500]
            for row in self._rows("SELECT run_id, name, attributes FROM spans WHERE run_id = ANY(?) AND kind = 'tool' "
                                  "AND status = 'denied' ORDER BY run_id, started, id", (chunk,)):
                attrs = row["attributes"]
                kind = attrs.get("error_kind") if isinstance(attrs, dict) else None
                if kind is None:
                    continue
                reason = attrs.get("error")
                out.append(DegradedCall(row["run_id"], row["name"], kind, "" if reason is None else reason))
        return out

    # -- the fleet: current-state rows of several engines (schema v4 keys them by engine) ------------------------

    def breakers(self, hierarchy: str | None = None) -> list[BreakerRow]:
        """One row per hierarchy and breaker key, as on a store directory: of the engines publishing it, the row
        of one that sees it worst (open, then half-open), preferring engines not stopped, then the freshest.
        `breaker_fleet()` says how many engines see it so."""
        where, params = ("WHERE b.hierarchy = ?", (hierarchy,)) if hierarchy is not None else ("", ())
        order = "ORDER BY key" if hierarchy is not None else "ORDER BY state != 'closed' DESC, hierarchy, key"
        return self.query_rows(BreakerRow, (
            f"SELECT {column_list(BreakerRow)} FROM (SELECT DISTINCT ON (b.hierarchy, b.key) b.* FROM breakers b "
            f"LEFT JOIN engines e ON e.id = b.engine_id {where} ORDER BY b.hierarchy, b.key, e.stopped IS NOT NULL, "
            f"{_STATE_RANK}, b.updated DESC) b {order}"), params)

    def breaker_fleet(self) -> list[BreakerFleetRow]:
        """Per breaker: how many engines publish it (every engine not known to have stopped, a stale one with its
        last view) and how many of them see it open or forced open."""
        return self.query_rows(BreakerFleetRow, (
            "SELECT b.hierarchy, b.key, count(*) AS engines, "
            "count(*) FILTER (WHERE b.state IN ('open', 'forced_open')) AS open FROM breakers b "
            "LEFT JOIN engines e ON e.id = b.engine_id WHERE e.stopped IS NULL GROUP BY b.hierarchy, b.key "
            "ORDER BY b.hierarchy, b.key"))

    def engine_queues(self) -> list[EngineQueueRow]:
        return self.query_rows(EngineQueueRow, "SELECT engine_id, queue FROM queues WHERE tenant = '' "
                                               "ORDER BY engine_id, queue")

    def queues(self) -> list[QueueRow]:
        """As on a store directory, one row per queue and tenant: the freshest engine's figures. The queues are the
        fleet's (every serving engine publishes the same queue's depth), so the newest publication is the one to
        show; per engine, see engine_queues()."""
        return self.query_rows(QueueRow, (
            f"SELECT {column_list(QueueRow)} FROM (SELECT DISTINCT ON (queue, tenant) * FROM queues "
            "ORDER BY queue, tenant, updated DESC) q ORDER BY queue, tenant != '', depth DESC, tenant"))

    def schedules(self) -> list[ScheduleRow]:
        """As on a store directory, one row per schedule: the freshest engine's."""
        return self.query_rows(ScheduleRow, (
            f"SELECT {column_list(ScheduleRow)} FROM (SELECT DISTINCT ON (name) * FROM schedules "
            "ORDER BY name, updated DESC) s ORDER BY next_fire IS NULL, next_fire, name"))


# Worst first: what an engine that sees a breaker open knows matters more than a peer that has not noticed yet.
_STATE_RANK = ("CASE b.state WHEN 'open' THEN 0 WHEN 'forced_open' THEN 0 WHEN 'half_open' THEN 1 "
               "WHEN 'disabled' THEN 2 ELSE 3 END")
