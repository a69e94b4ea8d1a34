"""The one row helper: SQLite result rows as dicts keyed by column name.

Every reader of control.db and traces.db that wants named columns goes through here instead of repeating
`dict(zip(names, values))`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any


def row_dicts(cursor: sqlite3.Cursor) -> Iterator[dict[str, Any]]:
    """The rest of `cursor`'s rows, lazily (callers that stop early read no more)."""
    names = [d[0] for d in cursor.description or ()]
    for values in cursor:
        yield dict(zip(names, values))


def fetch_rows(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """All rows of one query."""
    cursor = conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, values)) for values in cursor.fetchall()]


def fetch_one(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
    """The first row of one query, or None."""
    cursor = conn.execute(sql, tuple(params))
    values = cursor.fetchone()
    if values is None:
        return None
    return dict(zip([d[0] for d in cursor.description or ()], values))
