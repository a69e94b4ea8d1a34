"""PgBatchWriter: trace items committed to a Postgres store in batches, one transaction each.

The same items the SQLite trace-writer process commits (engine/store/batch.py's queue item tuples), built into rows
by the same BatchBuilder (coalescing, redaction, truncation, JSON), so both backends store the same rows. What
differs is the commit: spans and events go in by COPY, the rest by executemany (psycopg pipelines it: one round
trip per statement kind, not per row), and event numbers come from the database's `event_seq` row (schema.py) so
that several engines share one gap-free sequence that readers tail.

The engine's trace-writer process commits through `commit_batch` (pg/writer_target.py: batches it built itself,
with reconnection and exactly-once markers); tests and benchmarks use the emit methods, with TraceWriter's
signatures, which buffer items until `flush()` commits them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.batch import (
    EVENT_ITEM,
    RUN_ENDED_ITEM,
    RUN_PROGRESS_ITEM,
    RUN_STARTED_ITEM,
    SPAN_ENDED_ITEM,
    SPAN_STARTED_ITEM,
    STATE_ITEM,
    STATEMENTS,
    Batch,
    BatchBuilder,
)
from engine.store.pg.batch_sql import ENGINE_STATE, PG_STATEMENTS
from engine.store.pg.connection import WRITER_APPLICATION, connect, store_error
from engine.store.pg.schema import migrate
from engine.store.redact import Redactor

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation

_NAME_OF = {sql: name for name, sql in STATEMENTS.items()}
_RUN_ATTRIBUTES = 19  # position of `attributes` in an insert_run row
_MARK = ("INSERT INTO trace_writers (id, batch_no, last_seq, updated) VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO "
         "UPDATE SET batch_no = EXCLUDED.batch_no, last_seq = EXCLUDED.last_seq, updated = EXCLUDED.updated")


@dataclass(frozen=True, slots=True)
class CommittedBatch:
    """What one commit wrote: its event numbers (first_seq..last_seq; both 0 when it had no events) and rows."""

    first_seq: int
    last_seq: int
    rows: int


class PgBatchWriter:
    """One engine's writer to a Postgres trace store. Creates or upgrades the schema on open. Not thread-safe: one
    writer thread (the trace-writer process's) owns it."""

    def __init__(self, location: PostgresLocation, *, redactor: Redactor | None = None,
                 engine_id: str | None = None) -> None:
        self.location = location
        # Every current-state row this writer commits is its engine's: the fleet's console tells engines apart by
        # it, and engines on one database no longer overwrite each other's breakers (schema v4). '' when unknown
        # (tools and tests writing without an engine).
        self.engine_id = engine_id or ""
        self._conn: psycopg.Connection[Any] = connect(location, autocommit=True, application_name=WRITER_APPLICATION)
        try:
            migrate(self._conn, location)
        except Exception as exc:
            self._conn.close()
            if isinstance(exc, _driver_errors()):
                raise store_error(location, exc, "creating the trace schema") from None
            raise
        self._builder = BatchBuilder(redactor or Redactor())
        self._items: list[tuple[Any, ...]] = []

    # -- TraceWriter's emit methods: buffer until flush() ---------------------------------------------------------

    def run_started(self, run_id: str, hierarchy: str, hierarchy_hash: str | None, engine_id: str | None,
                    engine_version: str | None, input: Any, seed: int | None, tenant: str | None,
                    started: float, attrs: dict[str, Any] | None = None) -> None:
        self._items.append((RUN_STARTED_ITEM, run_id, hierarchy, hierarchy_hash, engine_id, engine_version, input,
                            seed, tenant, started, attrs))

    def run_progress(self, run_id: str, tokens_in: int, tokens_out: int, cost_usd: float, model_calls: int,
                     tool_calls: int, agents_active: int) -> None:
        self._items.append((RUN_PROGRESS_ITEM, run_id, tokens_in, tokens_out, cost_usd, model_calls, tool_calls,
                            agents_active))

    def run_ended(self, run_id: str, status: str, ended: float, output: Any = None, error: str | None = None) -> None:
        self._items.append((RUN_ENDED_ITEM, run_id, status, ended, output, error))

    def span_started(self, span_id: str, run_id: str, parent_id: str | None, kind: str, agent: str | None,
                     name: str, started: float, attrs: dict[str, Any] | None = None) -> None:
        self._items.append((SPAN_STARTED_ITEM, span_id, run_id, parent_id, kind, agent, name, started, attrs))

    def span_ended(self, span_id: str, run_id: str, status: str, ended: float, tokens_in: int = 0,
                   tokens_out: int = 0, cost_usd: float = 0.0, model: str | None = None,
                   attrs: dict[str, Any] | None = None) -> None:
        self._items.append((SPAN_ENDED_ITEM, span_id, run_id, status, ended, tokens_in, tokens_out, cost_usd, model,
                            attrs))

    def event(self, run_id: str | None, span_id: str | None, kind: str, agent: str | None = None,
              name: str | None = None, data: dict[str, Any] | None = None, ts: float | None = None) -> None:
        self._items.append((EVENT_ITEM, run_id, span_id, kind, agent, name, data, time.time() if ts is None else ts))

    def state(self, table: str, key: tuple[Any, ...], row: tuple[Any, ...]) -> None:
        self._items.append((STATE_ITEM, table, key, row))

    def pending(self) -> int:
        return len(self._items)

    def flush(self) -> CommittedBatch:
        """Commit everything buffered as one batch (nothing buffered: nothing written)."""
        items, self._items = self._items, []
        return self.write_items(items)

    # -- committing -------------------------------------------------------------------------------------------------

    def write_items(self, items: list[tuple[Any, ...]]) -> CommittedBatch:
        """Commit queue items as one transaction: all of it or, on any error, none (StoreError, password masked).
        Event numbers are taken from `event_seq` inside the transaction: gap-free and in commit order."""
        if not items:
            return CommittedBatch(0, 0, 0)
        batch = self._builder.build(items, 0, want_events=False)  # events numbered 1..n within the batch
        count = batch.last_seq
        try:
            offset, rows = self.commit_batch(batch)
        except _driver_errors() as exc:
            raise store_error(self.location, exc, "committing a trace batch") from None
        return CommittedBatch(offset + 1 if count else 0, offset + count if count else 0, rows)

    def commit_batch(self, batch: Batch, marker: tuple[str, int] | None = None) -> tuple[int, int]:
        """Commit a built batch in one transaction; returns (offset, rows): the batch's event numbers
        (first_seq..last_seq, numbered by the builder) plus `offset` are the global ones it took. `marker`
        (writer id, batch number) is recorded in `trace_writers` in the same transaction (committed_marker()).
        Raises the driver's error (the caller decides whether it can pass)."""
        rows = 0
        with self._conn.transaction(), self._conn.cursor() as cur:
            offset = _take_event_numbers(cur, batch)
            for sql, statement_rows in batch.statements:
                name = _NAME_OF[sql]
                statement = PG_STATEMENTS[name]
                prepared = _prepared(name, statement_rows, offset, self.engine_id)
                rows += len(prepared)
                if statement.copy is not None:
                    with cur.copy(f"COPY {statement.copy} FROM STDIN") as copy:
                        for row in prepared:
                            copy.write_row(row)
                else:
                    cur.executemany(statement.sql, prepared)
            if marker is not None:
                cur.execute(_MARK, (*marker, batch.last_seq + offset if batch.last_seq else 0, time.time()))
        return offset, rows

    def salvage_batch(self, batch: Batch, marker: tuple[str, int] | None = None) -> tuple[int, list[str]]:
        """Row by row in one transaction, each row in a savepoint, skipping rows that fail (a duplicate id): one
        bad row must not lose its neighbours. Returns (offset, a description of each skipped row); raises the
        driver's error if the transaction itself fails."""
        import psycopg

        failures: list[str] = []
        with self._conn.transaction(), self._conn.cursor() as cur:
            offset = _take_event_numbers(cur, batch)
            for sql, statement_rows in batch.statements:
                name = _NAME_OF[sql]
                for row in _prepared(name, statement_rows, offset, self.engine_id):
                    try:
                        with self._conn.transaction():  # a savepoint
                            cur.execute(PG_STATEMENTS[name].sql, row)
                    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                        failures.append(f"{name} {row[0]!r}: {self.location.scrub(str(exc).strip())}")
            if marker is not None:
                cur.execute(_MARK, (*marker, batch.last_seq + offset if batch.last_seq else 0, time.time()))
        return offset, failures

    def committed_marker(self, writer_id: str) -> tuple[int, int] | None:
        """(batch number, last event number) of `writer_id`'s last committed batch, or None if it committed none."""
        row = self._conn.execute("SELECT batch_no, last_seq FROM trace_writers WHERE id = %s", (writer_id,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def reconnect(self) -> None:
        """A new connection in place of a broken one (the server restarted, the connection was terminated)."""
        try:
            self._conn.close()
        except Exception:  # already broken: closing it can fail too
            pass
        self._conn = connect(self.location, autocommit=True, application_name=WRITER_APPLICATION)

    def last_seq(self) -> int:
        row = self._conn.execute("SELECT last FROM event_seq WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        """Commit what is buffered (as TraceWriter.close does), then disconnect."""
        try:
            if self._items and not self._conn.closed:
                self.flush()
        finally:
            self._conn.close()

    def __enter__(self) -> PgBatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepared(name: str, rows: list[Any], offset: int, engine_id: str) -> list[list[Any]]:
    """A statement's rows as the Postgres SQL takes them: global event numbers, a run row's resumed columns, and a
    current-state row's engine id."""
    prepared = _shift(rows, PG_STATEMENTS[name].seq_at, offset)
    if name == "insert_run":
        prepared = [row + _resumed(row[_RUN_ATTRIBUTES]) for row in prepared]
    elif name in ENGINE_STATE:
        prepared = [[*row, engine_id] for row in prepared]
    return prepared


def _shift(rows: list[Any], seq_at: tuple[int, ...], offset: int) -> list[list[Any]]:
    """Rows with the batch's event numbers made global (0, "no event", stays 0)."""
    if not seq_at or not offset:
        return [list(row) for row in rows]
    out = []
    for row in rows:
        values = list(row)
        for i in seq_at:
            if values[i]:
                values[i] += offset
        out.append(values)
    return out


def _resumed(attributes: str | None) -> list[int]:
    """resumed and replayed_steps of a run row, from its attributes JSON (generated columns on SQLite)."""
    if not attributes or ('"resumed"' not in attributes and '"replayed_steps"' not in attributes):
        return [0, 0]
    try:
        attrs = json.loads(attributes)
    except ValueError:
        return [0, 0]
    if not isinstance(attrs, dict):
        return [0, 0]
    return [_int(attrs.get("resumed")), _int(attrs.get("replayed_steps"))]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _driver_errors() -> type[Exception]:
    import psycopg

    return psycopg.Error


def _take_event_numbers(cur: Any, batch: Batch) -> int:
    """Take the batch's events' global numbers from `event_seq`; returns the offset from the builder's local ones
    (0 for a batch without events). The row lock taken here is held to COMMIT: the next writer's numbers follow
    ours and it commits after us, so a reader never sees seq N+1 before N."""
    if not batch.last_seq:
        return 0
    count = batch.last_seq - batch.first_seq + 1
    cur.execute("UPDATE event_seq SET last = last + %s WHERE id = 1 RETURNING last", (count,))
    fetched = cur.fetchone()
    assert fetched is not None
    return int(fetched[0]) - batch.last_seq
