"""The trace-writer process's commit target on a Postgres store (engine/store/writer_target.py has traces.db's).

The commit loop (engine/store/writer_process.py) is the one the SQLite store uses; what differs here:

- Event numbers: the builder numbers each batch's events on from its own counter; the database hands out the stored
  ones at commit (`event_seq`, pg/batch_writer.py), and `commit` returns the offset between the two, which the loop
  applies to what it acknowledges (the last sequence number, the committed events on_commit callbacks see).
- Failures that may pass: the server restarting or shutting down, the connection terminated or refused, a lock or
  serialization conflict. The next attempt reconnects first (the old connection may be dead; reconnecting when it
  was not costs one connection).
- Exactly once: a connection can break after the server committed but before it said so, and the batch must then
  not be written again (spans would be duplicate keys, events would be stored twice under new numbers). Every
  batch's transaction records (writer id, batch number, its last event number) in `trace_writers`; after a broken
  connection the next attempt first reads that row: the batch is in (use the numbers it took) or not (commit it).
- Giving up: a SQLite store holds calls for as long as its disk is full; a Postgres store that stays unreachable
  longer than `give_up_after` seconds ends the writer (reported as "gave_up"), which the engine's store gate turns
  into "stop starting work" with the reason (engine/runtime/store_gate.py).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from engine.errors import StoreError
from engine.store.location import PostgresLocation
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.connection import store_error

if TYPE_CHECKING:
    from engine.store.batch import Batch
    from engine.store.redact import Redactor

# Seconds of failing commits after which the writer stops (the engine then stops starting work). Long enough for a
# Postgres restart or a failover; short enough that an engine does not hold its runs for ever.
DEFAULT_GIVE_UP_S = 60.0


class Unreachable(Exception):
    """Reconnecting failed (the server is down, refuses connections): may pass."""


class PgTarget:
    def __init__(self, writer: PgBatchWriter, *, give_up_after: float | None = DEFAULT_GIVE_UP_S) -> None:
        self.writer = writer
        self.location = writer.location
        self.name = writer.location.masked
        self.give_up_after = give_up_after
        self.last_seq = writer.last_seq()
        self.build_from = 0
        self.id = uuid.uuid4().hex  # this process's row in trace_writers
        self.batch_no = 0
        self._batch: Batch | None = None  # the batch numbered batch_no (retries keep its number)
        self._uncertain = False  # the last attempt failed in a way that may have broken the connection
        self.reconnects = 0
        self.recovered_commits = 0  # batches found committed after a broken connection (not written twice)

    def commit(self, batch: Batch) -> int:
        if batch is not self._batch:
            self._batch = batch
            self.batch_no += 1
        if self._uncertain:
            try:
                self.writer.reconnect()
            except StoreError as exc:
                raise Unreachable(str(exc)) from None
            self._uncertain = False
            self.reconnects += 1
            marker = self.writer.committed_marker(self.id)
            if marker is not None and marker[0] == self.batch_no:  # committed; the acknowledgement was lost
                self.recovered_commits += 1
                return marker[1] - batch.last_seq if batch.last_seq else 0
        offset, _ = self.writer.commit_batch(batch, (self.id, self.batch_no))
        return offset

    def transient(self, exc: Exception) -> str | None:
        import psycopg

        if isinstance(exc, Unreachable):
            return str(exc)
        # OperationalError: the connection broke or was refused, the server is shutting down (AdminShutdown), a
        # serialization or deadlock conflict (TransactionRollback). InterfaceError: the connection is closed.
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            self._uncertain = True
            return str(store_error(self.location, exc, "committing a trace batch"))
        return None

    def salvage(self, batch: Batch) -> tuple[int, list[str]]:
        return self.writer.salvage_batch(batch, (self.id, self.batch_no))

    def set_page_limit(self, pages: int | None) -> None:
        """A traces.db quota: nothing to do on Postgres."""

    def after_commit(self) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        self.writer.close()


def open_pg_target(postgres: tuple[str, str, str | None], redactor: Redactor, *,
                   give_up_after: float | None = None, engine_id: str | None = None) -> PgTarget:
    """Connect (creating or upgrading the schema): StoreError naming the store, password masked, if it cannot."""
    dsn, masked, password = postgres
    location = PostgresLocation(dsn=dsn, masked=masked, password=password)
    writer = PgBatchWriter(location, redactor=redactor, engine_id=engine_id)
    try:
        return PgTarget(writer, give_up_after=DEFAULT_GIVE_UP_S if give_up_after is None else give_up_after)
    except Exception as exc:
        writer.close()
        import psycopg

        if isinstance(exc, psycopg.Error):
            raise store_error(location, exc, "reading the event sequence") from None
        raise
