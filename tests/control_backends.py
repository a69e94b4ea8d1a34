"""The control plane on either backend, for tests that run the same ControlAPI checks against control.db and a
Postgres store (no tests here).

`ControlBackend.api()` is a ControlAPI on a fresh store directory (SQLite: tests/conftest.py's `store_dir`) or a
fresh Postgres database (`pg_url`). `sql()` runs qmark SQL outside Flightdeck (what a person with write access to the
database could do: tampering), `raw()` is such a connection for the concept modules' functions, and
`integrity_error` is the driver's exception for a constraint the database itself enforces.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from engine.controls.api import ControlAPI
from engine.store.dialect import SqlConnection
from engine.store.pg.connection import to_driver_sql
from engine.store.pg.control_db import PgSqlConnection

BACKENDS = ("sqlite", "postgres")


@dataclass
class ControlBackend:
    name: str
    store_dir: Path
    pg_url: str | None = None

    @property
    def store(self) -> str | Path:
        """What ControlAPI (and `--store`) takes for this store: the directory or the URL."""
        return self.store_dir if self.pg_url is None else self.pg_url

    @property
    def store_arg(self) -> str:
        return str(self.store)

    def api(self, operator: str = "alice", **kwargs: Any) -> ControlAPI:
        return ControlAPI(self.store, operator, **kwargs)

    @property
    def integrity_error(self) -> type[Exception]:
        return sqlite3.IntegrityError if self.pg_url is None else psycopg.IntegrityError

    @contextmanager
    def raw(self) -> Iterator[SqlConnection]:
        """An autocommit connection of its own (SQLite: to control.db), qmark SQL."""
        if self.pg_url is None:
            conn = sqlite3.connect(self.store_dir / "control.db", isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
            return
        with psycopg.connect(self.pg_url, autocommit=True) as pg:
            yield PgSqlConnection(pg)

    def sql(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside Flightdeck; its rows (if any)."""
        if self.pg_url is None:
            with self.raw() as conn:
                return list(conn.execute(sql, tuple(params)).fetchall())
        with psycopg.connect(self.pg_url, autocommit=True) as pg:
            cursor = pg.execute(to_driver_sql(sql), list(params))
            return list(cursor.fetchall()) if cursor.description else []
