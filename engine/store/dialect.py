"""The few places where the control plane's SQL differs between control.db (SQLite) and a Postgres store.

The control plane's concept modules (engine.controls) are written once, in qmark SQL both databases speak, against
a connection with sqlite3.Connection's `execute` (a real one on control.db; engine.store.pg.control_db's adapter on
Postgres, which turns `?` into the driver's `%s`). What cannot be written once is named here, in ONE place, as a
field of a Dialect; a module asks `dialect_of(conn)` for it instead of testing which database it is talking to:

- `same`: null-safe equality (`target IS ?` on SQLite; Postgres spells it `IS NOT DISTINCT FROM`, which SQLite only
  learned in 3.39, newer than some supported systems ship).
- `audit_high_water_sql`: the highest audit id ever given out, which a deletion at the end of the log cannot lower
  (SQLite: AUTOINCREMENT's `sqlite_sequence` row; Postgres: the one-row `audit_seq` table a trigger keeps). An
  append reads it with `lock` appended: on Postgres `FOR UPDATE`, so the chain head is locked by row as well as by
  the writers' advisory lock (SQLite's BEGIN IMMEDIATE already holds the only write lock there is).
- `insert_id()`: the id of a row just inserted (SQLite: `lastrowid`; Postgres: `RETURNING id`).

Approvals' insertion order is `rowid` on both: Postgres's approvals table has a real `rowid` identity column, and the
approval reads select Approval's columns by name (never `*`), so it does not show up in rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class SqlCursor(Protocol):
    """What the control plane uses of a cursor (sqlite3.Cursor and psycopg's Cursor both have it)."""

    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Any: ...


class SqlConnection(Protocol):
    """What the control plane uses of a connection: `execute` with qmark parameters (sqlite3.Connection, or the
    Postgres adapter). The concept modules are typed against this."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    same: str
    audit_high_water_sql: str
    lock: str
    returning_ids: bool


SQLITE = Dialect(name="sqlite", same="IS",
                 audit_high_water_sql="SELECT seq FROM sqlite_sequence WHERE name = 'audit'", lock="",
                 returning_ids=False)
POSTGRES = Dialect(name="postgres", same="IS NOT DISTINCT FROM",
                   audit_high_water_sql="SELECT last FROM audit_seq WHERE id = 1", lock=" FOR UPDATE",
                   returning_ids=True)


def dialect_of(conn: object) -> Dialect:
    """The Postgres adapter carries `dialect`; a sqlite3.Connection does not, and is SQLite."""
    dialect = getattr(conn, "dialect", SQLITE)
    assert isinstance(dialect, Dialect)
    return dialect


def insert_id(conn: SqlConnection, sql: str, params: Sequence[Any]) -> int:
    """Run one `INSERT` into a table with an integer `id` and return the new row's id."""
    if dialect_of(conn).returning_ids:
        row = conn.execute(sql + " RETURNING id", params).fetchone()
        return int(row[0])
    return int(conn.execute(sql, params).lastrowid or 0)
