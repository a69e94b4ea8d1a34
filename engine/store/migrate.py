"""Schema versions via PRAGMA user_version: a database at version N has had migrations[0:N] applied.

A migration is either an SQL script (several statements separated by ';') or a function taking the connection,
for data migrations that need Python. Every pending migration plus the version bump runs in ONE transaction
(BEGIN IMMEDIATE), so a crash or an error leaves the database exactly at its old version. The version is re-read
inside that transaction, so two processes migrating the same file at once apply each migration once.

Rules for whoever appends a migration: only ever append; never edit, reorder or remove a released entry (a store
written by that release already has it applied and would never see the change).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from engine.errors import StoreError, StoreTooNew
from engine.store.files import translate_sqlite_error

Migration = str | Callable[[sqlite3.Connection], None]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_not_too_new(version: int, known: int, path: Path) -> None:
    if version > known:
        from engine import __version__
        raise StoreTooNew(f"{path} has schema version {version}, but this Flightdeck ({__version__}) only knows "
                          f"versions up to {known}; upgrade Flightdeck to use this store")


def split_statements(script: str) -> Iterator[str]:
    """The complete SQL statements of a script, in order. Splits only where sqlite3 agrees a statement is
    complete, so ';' inside strings or trigger bodies is safe."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending.strip()[:80]!r}")


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], path: Path) -> int:
    """Bring the database to len(migrations); return the version it was at. The connection must be in
    autocommit mode (isolation_level=None). Raises StoreTooNew / StoreDamaged / StoreError naming `path`."""
    known = len(migrations)
    try:
        before = schema_version(conn)
        check_not_too_new(before, known, path)
        if before == known:
            return before
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            check_not_too_new(current, known, path)
            for step in migrations[current:]:
                if callable(step):
                    step(conn)
                else:
                    for statement in split_statements(step):
                        conn.execute(statement)
            # PRAGMA does not take bound parameters; `known` is an int we computed.
            conn.execute(f"PRAGMA user_version = {int(known)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return current
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "migrate") from exc
    except StoreError:
        raise
