"""SqlReads: a read-only connection to a trace store that runs qmark SQL of its own, on either backend.

For readers whose reads are their own SQL over the trace tables rather than TraceReads' typed queries: the
OpenTelemetry exporter (engine/export/records.py, worker.py, replay.py) reads spans, events and runs by key, in
sequence order, and builds its own rows with `engine.store.rows.fetch_typed` (no JSON parsed up front: the exporter
parses only what it maps). On a store directory it is traces.db opened `mode=ro` (sqlite3.Connection); on a
Postgres store a read-only session (`pg/sql_reads.py`) with the same `execute(sql, params)` taking `?`
placeholders. The trace tables have the same names and columns on both (pg/schema.py), so the SQL is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import StoreError
from engine.store.dialect import SqlConnection

if TYPE_CHECKING:
    from engine.store.location import StoreLocation


class SqlReads(SqlConnection, Protocol):
    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def close(self) -> None: ...


def open_sql_reads(location: StoreLocation) -> SqlReads:
    """A read-only connection to the trace store; StoreError when there is none (no traces.db, or a database with no
    trace schema) or it cannot be reached (password masked)."""
    from engine.store.location import PostgresLocation

    if isinstance(location, PostgresLocation):
        from engine.store.pg.sql_reads import PgSqlReads

        return PgSqlReads(location)
    from engine.store.files import TRACES_DB, connect

    path = location.path / TRACES_DB
    if not path.is_file():
        raise StoreError(f"no store at {location.path} (run `flightdeck run` first or pass --store)")
    return connect(path, read_only=True)
