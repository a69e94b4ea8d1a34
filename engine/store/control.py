"""ControlDB: the shared, many-writer control.db (see control_schema.py for what lives there and how to add tables).

Every writer (operator CLIs, consoles, the engine) takes short BEGIN IMMEDIATE transactions; busy_timeout makes
concurrent processes queue for the write lock instead of failing. One ControlDB may be shared by threads (the
engine's heartbeat thread and its main loop), so each operation holds a lock around the connection.
"""

from __future__ import annotations

import getpass
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import StoreError
from engine.store.control_rows import EngineRecord, EngineStatus
from engine.store.control_schema import CONTROL_MIGRATIONS
from engine.store.dialect import SqlConnection
from engine.store.files import CONTROL_DB, connect, ensure_private_file, translate_sqlite_error
from engine.store.migrate import Migration, check_not_too_new, migrate, schema_version
from engine.store.rows import fetch_rows, fetch_typed

STALE_AFTER_S = 5.0
BUSY_TIMEOUT_S = 5.0


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no USER variable (some containers)
        return str(os.getuid())


def _refuse_read_only(path: Path) -> None:
    """A clear error before SQLite's "unable to open" or "readonly database" when the store cannot be written."""
    if not path.parent.is_dir():
        return  # nothing to say yet: creating the file reports the missing directory
    where = path if path.exists() else path.parent
    # The directory too: a rollback journal is created next to control.db on every write.
    if not os.access(where, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StoreError(f"{where} is read-only: this command changes the store and needs write access to "
                         f"{path.parent} and its files (read commands such as runs, trace, audit verify and "
                         f"console --read-only work on a read-only store)")


class ControlDB:
    """control.db, opened (created and migrated if needed) for reading and writing; or, with read_only, opened
    with SQLite's mode=ro for readers that must not change anything (no creation, no migration, no chmod)."""

    def __init__(self, path: Path, *, clock: Clock = SYSTEM_CLOCK,
                 migrations: Sequence[Migration] = CONTROL_MIGRATIONS, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._clock = clock
        self._lock = threading.RLock()
        self._watch: sqlite3.Connection | None = None
        self._watch_lock = threading.Lock()
        if read_only:
            self._conn = self._open_read_only(path, len(migrations))
            return
        _refuse_read_only(path)
        ensure_private_file(path)
        conn = connect(path, busy_timeout_s=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            # journal_mode cannot change inside a transaction, so it is set before migrating.
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            migrate(conn, migrations, path)
        except sqlite3.Error as exc:
            conn.close()
            raise translate_sqlite_error(exc, path, "open") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @staticmethod
    def _open_read_only(path: Path, known: int) -> sqlite3.Connection:
        if not path.is_file():
            raise StoreError(f"no store at {path.parent} (there is no {path.name}; pass --store or set "
                             f"FLIGHTDECK_STORE)")
        conn = connect(path, read_only=True, busy_timeout_s=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            # Not migrated (that would be a write): an older store is read as it is; a newer one is refused.
            check_not_too_new(schema_version(conn), known, path)
        except sqlite3.Error as exc:
            conn.close()
            raise translate_sqlite_error(exc, path, "read") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def open(cls, store_dir: Path, *, clock: Clock = SYSTEM_CLOCK, read_only: bool = False) -> ControlDB:
        return cls(store_dir / CONTROL_DB, clock=clock, read_only=read_only)

    @property
    def connection(self) -> sqlite3.Connection:
        """The raw autocommit connection, for features that own control.db tables. Write through `transaction()`."""
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error). Keep the body short: other processes wait on it."""
        if self.read_only:
            raise StoreError(f"cannot write to {self.path}: it was opened read-only (this is a read command)")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "write to") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for autocommit reads (no transaction left open), held under the lock; SQLite errors
        come out as StoreError."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc

    def _watch_conn(self) -> sqlite3.Connection:
        """A second connection, kept open for reads that must not be the writing one: PRAGMA data_version only
        changes for commits made by OTHER connections."""
        if self._watch is None:
            self._watch = connect(self.path, busy_timeout_s=BUSY_TIMEOUT_S, check_same_thread=False,
                                  read_only=self.read_only)
        return self._watch

    @contextmanager
    def read_transaction(self) -> Iterator[sqlite3.Connection]:
        """One deferred read transaction (on the second connection): everything read inside sees the same
        committed state."""
        with self._watch_lock:
            conn = self._watch_conn()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc

    def data_version(self) -> int:
        """PRAGMA data_version on the second connection: changes whenever another connection commits."""
        with self._watch_lock:
            try:
                return int(self._watch_conn().execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path, "read") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts, read in autocommit mode (no transaction left open)."""
        with self.reading() as conn:
            return fetch_rows(conn, sql, params)

    # -- engine registration -----------------------------------------------------------------------------------

    def register_engine(self, *, version: str, pid: int | None = None, host: str | None = None,
                        user: str | None = None, started: float | None = None,
                        engine_id: str | None = None) -> str:
        now = self._clock.time()
        engine_id = engine_id or uuid.uuid4().hex
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO engines (id, pid, host, user, version, started, heartbeat, stopped) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (engine_id, os.getpid() if pid is None else pid, host or socket.gethostname(),
                 user or current_user(), version, now if started is None else started, now))
        return engine_id

    def heartbeat(self, engine_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE engines SET heartbeat = ? WHERE id = ?", (self._clock.time(), engine_id))

    def mark_stopped(self, engine_id: str, stopped: float | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE engines SET stopped = ? WHERE id = ? AND stopped IS NULL",
                         (self._clock.time() if stopped is None else stopped, engine_id))

    def mark_others_stopped(self, engine_id: str) -> list[EngineRecord]:
        """Called by the engine that holds the store lock: every other engine still marked running is dead.
        Their `stopped` becomes their last heartbeat (when they were last known alive). Returns them."""
        with self.reading() as conn:
            dead = fetch_typed(conn, EngineRecord, "SELECT * FROM engines WHERE stopped IS NULL AND id != ?",
                               (engine_id,))
        if dead:
            with self.transaction() as conn:
                conn.execute("UPDATE engines SET stopped = heartbeat WHERE stopped IS NULL AND id != ?",
                             (engine_id,))
        return dead

    def list_engines(self, limit: int = 50) -> list[EngineStatus]:
        """Newest first, each with `alive` (running and heartbeat fresh) and `stale` (not stopped, but no
        heartbeat for more than STALE_AFTER_S: hung or killed without cleanup)."""
        now = self._clock.time()
        with self.reading() as conn:
            rows = fetch_typed(conn, EngineRecord, "SELECT * FROM engines ORDER BY started DESC LIMIT ?", (limit,))
        out = []
        for row in rows:
            running = row.stopped is None
            fresh = now - row.heartbeat <= STALE_AFTER_S
            out.append(EngineStatus(**row.as_dict(), alive=running and fresh, stale=running and not fresh))
        return out

    def close(self) -> None:
        with self._watch_lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        with self._lock:
            self._conn.close()


class ControlStore(Protocol):
    """The control plane's database as ControlAPI and IncidentStore use it: ControlDB (control.db) or
    engine.store.pg.control_db.PgControlDB (a Postgres store). Connections are SqlConnections: the concept modules'
    qmark SQL runs on both (engine.store.dialect)."""

    read_only: bool

    @property
    def path(self) -> Any:
        """Where it is, for messages: control.db's Path, or the PostgresLocation (password masked)."""

    def transaction(self) -> AbstractContextManager[SqlConnection]: ...

    def reading(self) -> AbstractContextManager[SqlConnection]: ...

    def read_transaction(self) -> AbstractContextManager[SqlConnection]: ...

    def data_version(self) -> int: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def list_engines(self, limit: int = 50) -> list[EngineStatus]: ...

    def close(self) -> None: ...
