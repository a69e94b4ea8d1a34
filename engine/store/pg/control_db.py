"""PgControlDB: the control plane on a Postgres store, with ControlDB's interface (engine/store/control.py), so
ControlAPI and IncidentStore run unchanged on either backend.

The concept modules (engine.controls) run qmark SQL through what they use of sqlite3.Connection; `PgSqlConnection`
gives them that on a psycopg connection (`?` becomes `%s`; `dialect` tells engine.store.dialect which of the few
dialect-specific spellings to use). Transactions keep control.db's guarantees:

- Writers are serialized, as BEGIN IMMEDIATE serializes them on control.db: every write transaction first takes a
  transaction-level advisory lock (CONTROL_WRITE_LOCK), held to COMMIT or ROLLBACK. Everything that relied on one
  writer at a time holds across engines and operator processes: the audit chain's "read the head, insert the next
  row" (which on Postgres also locks the `audit_seq` row FOR UPDATE), the approvals' gap-free `decided_seq`, a kill
  switch's "is an identical one active" check, a flag's supersede. Readers never wait on it.
- Reads: autocommit statements (`reading()`), or one REPEATABLE READ, READ ONLY transaction (`read_transaction()`)
  when several reads must see one state (the engine's snapshot, `audit verify`'s walk and its high-water check).
- Driver errors come out as StoreError naming the store (password masked), never a traceback.

One connection, used under a lock (the engine's heartbeat thread and main loop may share one PgControlDB).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import StoreError
from engine.store.dialect import POSTGRES
from engine.store.location import PostgresLocation
from engine.store.pg.connection import connect, store_error, to_driver_sql
from engine.store.pg.control_schema import COMPONENT, PG_CONTROL_MIGRATIONS
from engine.store.pg.schema import check_version, migrate, schema_version
from engine.store.rows import fetch_rows

if TYPE_CHECKING:
    import psycopg

    from engine.store.control_rows import EngineStatus

# pg_advisory_xact_lock key of "writing the control plane" ('FDCT'), distinct from the migration lock ('FDSC').
CONTROL_WRITE_LOCK = 0x46_44_43_54


def control_plane_present(location: PostgresLocation) -> bool:
    """Whether anything has recorded a control plane in the database (what a directory's control.db file says by
    existing); StoreError (password masked) when it cannot be reached."""
    conn = connect(location)
    try:
        return schema_version(conn, COMPONENT) > 0
    except _driver_error() as exc:
        raise store_error(location, exc, "reading the control plane's version") from None
    finally:
        conn.close()


class PgSqlConnection:
    """What the control plane uses of sqlite3.Connection, on a psycopg connection: `execute(sql, params)` with qmark
    placeholders, returning the driver's cursor (fetchone, fetchall, description, rowcount, iteration)."""

    dialect = POSTGRES

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        # Always hand the driver a parameter list (even empty): then `%%` (a literal % in qmark SQL) is unescaped.
        return self._conn.execute(to_driver_sql(sql), list(parameters))

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE


class PgControlDB:
    """The control plane's tables on a Postgres store (created or upgraded on open; `read_only` checks the schema and
    changes nothing, in a read-only session)."""

    def __init__(self, location: PostgresLocation, *, clock: Clock = SYSTEM_CLOCK, create: bool = True,
                 read_only: bool = False) -> None:
        self.location = location
        self.read_only = read_only
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._conn: psycopg.Connection[Any] = self._connect()
        driver_error = _driver_error()
        try:
            # Nothing recorded yet is an error for readers and for commands that must not create a store (as
            # ControlAPI(create=False) on a directory without control.db); writers create or upgrade the schema.
            if read_only:
                check_version(self._conn, location, COMPONENT, PG_CONTROL_MIGRATIONS, what="control plane",
                              written_by="nothing has been recorded there yet")
            else:
                if not create:
                    self._refuse_missing()
                migrate(self._conn, location, COMPONENT, PG_CONTROL_MIGRATIONS)
        except driver_error as exc:
            self._conn.close()
            raise store_error(location, exc, "opening the control plane") from None
        except BaseException:
            self._conn.close()
            raise
        self._sql = PgSqlConnection(self._conn)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = connect(self.location, autocommit=True)
        if self.read_only:
            try:
                conn.execute("SET default_transaction_read_only = on")  # the server refuses any write in it
            except _driver_error() as exc:
                conn.close()
                raise store_error(self.location, exc, "opening the control plane") from None
        return conn

    def _refuse_missing(self) -> None:
        if schema_version(self._conn, COMPONENT) == 0:
            raise StoreError(f"no Flightdeck control plane in {self.location.masked} (nothing has been recorded "
                             f"there yet; pass --store or set FLIGHTDECK_STORE)")

    def _live(self) -> None:
        """Reconnect if the server dropped the connection (a restart, a failover, an idle timeout): the failed
        operation was a StoreError; the next one gets a new session instead of failing forever. Under the lock."""
        if self._conn.broken and not self._closed:
            self._conn.close()
            self._conn = self._connect()
            self._sql = PgSqlConnection(self._conn)

    @property
    def path(self) -> PostgresLocation:
        """Where the control plane is, for messages (control.db's path on the SQLite store)."""
        return self.location

    @property
    def connection(self) -> PgSqlConnection:
        return self._sql

    @contextmanager
    def transaction(self) -> Iterator[PgSqlConnection]:
        """One write transaction holding the control plane's write lock (see the module docstring); COMMIT, or
        ROLLBACK on any error. Keep the body short: other writers wait on it."""
        if self.read_only:
            raise StoreError(f"cannot write to {self.location.masked}: it was opened read-only (this is a read "
                             f"command)")
        driver_error = _driver_error()
        with self._lock:
            try:
                self._live()
                with self._conn.transaction():
                    self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (CONTROL_WRITE_LOCK,))
                    yield self._sql
            except driver_error as exc:
                raise store_error(self.location, exc, "writing to the control plane") from None

    @contextmanager
    def reading(self) -> Iterator[PgSqlConnection]:
        """The connection for autocommit reads, held under the lock; driver errors as StoreError."""
        driver_error = _driver_error()
        with self._lock:
            try:
                self._live()
                yield self._sql
            except driver_error as exc:
                raise store_error(self.location, exc, "reading the control plane") from None

    @contextmanager
    def read_transaction(self) -> Iterator[PgSqlConnection]:
        """One REPEATABLE READ, READ ONLY transaction: every read inside sees the same committed state."""
        from psycopg import IsolationLevel

        driver_error = _driver_error()
        with self._lock:
            try:
                self._live()
                # Set on the connection, psycopg's BEGIN carries them ("BEGIN ISOLATION LEVEL REPEATABLE READ READ
                # ONLY"): one round trip where BEGIN then SET TRANSACTION took two. The engine's control worker
                # runs these on every change it reads, a kill switch's included; under load each round trip waits.
                conn = self._conn
                conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
                try:
                    with conn.transaction():
                        yield self._sql
                finally:
                    conn.isolation_level, conn.read_only = None, None
            except driver_error as exc:
                raise store_error(self.location, exc, "reading the control plane") from None

    def data_version(self) -> int:
        """A counter every committed change to a control table bumps (control_schema.py's triggers)."""
        with self.reading() as conn:
            return int(conn.execute("SELECT version FROM control_version WHERE id = 1").fetchone()[0])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts (qmark SQL), read in autocommit mode."""
        with self.reading() as conn:
            return fetch_rows(conn, sql, params)

    # -- engine registration (pg/engine_registry.py: the trace schema's `engines` table) -------------------------

    def heartbeat(self, engine_id: str, published: str | None = None) -> None:
        """This engine is alive now: an autocommit UPDATE of its row (no control write lock, no NOTIFY); with
        `published`, also what it publishes about itself (trace schema v5; EngineStore sends it when it changed)."""
        from engine.store.pg import engine_registry

        with self.reading():
            engine_registry.heartbeat(self._conn, engine_id, self._clock.time(), published)

    def mark_stopped(self, engine_id: str, stopped: float | None = None) -> None:
        from engine.store.pg import engine_registry

        with self.reading():
            engine_registry.mark_stopped(self._conn, engine_id, self._clock.time() if stopped is None else stopped)

    def list_engines(self, limit: int = 50) -> list[EngineStatus]:
        """The engines registered on this store, newest first, `alive` / `stale` by heartbeat age as on control.db.
        None before any engine registered."""
        from engine.store.pg import engine_registry

        with self.reading():
            return engine_registry.list_engines(self._conn, self._clock.time(), limit)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()


def _driver_error() -> type[Exception]:
    import psycopg

    return psycopg.Error
