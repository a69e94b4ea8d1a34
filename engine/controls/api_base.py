"""ControlBase: how a ControlAPI opens its control database and the transactions every action runs in.

The plumbing under the facade (engine/controls/api.py): the store's location (a directory's control.db, or a
Postgres store), the one write transaction per action, the read transaction and the shared connection for single
reads. The action classes (approval_actions.py, durable_actions.py, and ControlAPI itself) build on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from engine.clock import SYSTEM_CLOCK, Clock
from engine.controls.validate import actor_for, required_text
from engine.errors import StoreError
from engine.store.control import ControlDB, ControlStore
from engine.store.dialect import SqlConnection
from engine.store.files import CONTROL_DB, ensure_store_dir, translate_sqlite_error
from engine.store.location import (
    PostgresLocation,
    PostgresNotSupported,
    StoreDirectory,
    StoreLocation,
    parse_store_location,
)


def location_of(store: Path | str | StoreLocation) -> StoreLocation:
    """A directory (Path, or a str that is not a URL), or a Postgres store (a PostgresLocation or its URL)."""
    if isinstance(store, (StoreDirectory, PostgresLocation)):
        return store
    if isinstance(store, Path):
        return StoreDirectory(store)
    return parse_store_location(store)


class ControlBase:
    """An open control database and an actor (see ControlAPI for the arguments): the transactions actions run in."""

    def __init__(self, store: Path | str | StoreLocation, operator: str, *, clock: Clock = SYSTEM_CLOCK,
                 db: ControlStore | None = None, create: bool = True, read_only: bool = False) -> None:
        self.location = location_of(store)
        self.operator: str = required_text(operator, "operator")
        self._clock = clock
        self._owns_db = db is None
        self._db: ControlStore = db if db is not None else self._open(clock, create=create, read_only=read_only)

    def _open(self, clock: Clock, *, create: bool, read_only: bool) -> ControlStore:
        if isinstance(self.location, PostgresLocation):
            from engine.store.pg.control_db import PgControlDB

            return PgControlDB(self.location, clock=clock, create=create, read_only=read_only)
        store_dir = self.location.path
        if not create and not (store_dir / CONTROL_DB).is_file():
            raise StoreError(f"no store at {store_dir} (nothing has been recorded there yet; "
                             f"pass --store or set FLIGHTDECK_STORE)")
        if read_only:
            return ControlDB.open(store_dir, clock=clock, read_only=True)
        ensure_store_dir(store_dir)
        return ControlDB.open(store_dir, clock=clock)

    # -- plumbing ----------------------------------------------------------------------------------------------

    @property
    def store_dir(self) -> Path:
        """The store directory (SQLite); PostgresNotSupported on a Postgres store, for callers that need files."""
        if isinstance(self.location, PostgresLocation):
            raise PostgresNotSupported(self.location)
        return self.location.path

    @property
    def path(self) -> Any:
        """control.db's path, or the PostgresLocation of a Postgres store."""
        return self._db.path

    @property
    def db(self) -> ControlStore:
        """The control database this API writes through (for IncidentStore and other owners of control tables)."""
        return self._db

    def now(self) -> float:
        return self._clock.time()

    def actor_for(self, source: str) -> str:
        """Who an action from `source` is recorded as (a runbook is its own actor; anything else this operator)."""
        return actor_for(source, self.operator)

    @contextmanager
    def transaction(self) -> Iterator[SqlConnection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT on control.db; on Postgres, one holding the control
        plane's write lock) for several changes made through the concept modules (a runbook's apply, terminate.py's
        stop with its audit row); keep it short, other processes wait on it."""
        if self._db.read_only:
            raise StoreError(f"cannot write to {self._db.path}: it was opened read-only (this is a read command)")
        try:
            with self._db.transaction() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._db.path, "write to") from exc

    def read_transaction(self) -> AbstractContextManager[SqlConnection]:
        """One read transaction: everything read inside sees the same committed state."""
        return self._db.read_transaction()

    def read(self) -> AbstractContextManager[SqlConnection]:
        """The shared connection for a single autocommit read through the concept modules (held under the
        database's lock, so the engine's threads do not interleave on it)."""
        return self._db.reading()

    def close(self) -> None:
        if self._owns_db:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
