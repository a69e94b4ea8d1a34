"""The one row helper: SQLite result rows as typed rows (or, for ad-hoc queries, dicts keyed by column name).

Every reader of control.db and traces.db that wants named columns goes through here instead of repeating
`dict(zip(names, values))`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any, TypeVar, cast


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


class TypedRow:
    """Base of the store's typed rows: frozen dataclasses whose fields are a query's columns, in column order.

    Subclasses are `@dataclass(frozen=True, slots=True)`. `as_dict()` gives the JSON shape the CLI's `--json`
    prints (field order = column order, so output stays byte-identical to the old dict rows).
    """

    __slots__ = ()

    @classmethod
    def from_row(cls: type[RowT], names: Sequence[str], values: Sequence[Any]) -> RowT:
        """One row; a column the class does not declare is a programming error and raises TypeError."""
        return cls(**dict(zip(names, values)))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(cast(Any, self))}

    def replace(self: RowT, **changes: Any) -> RowT:
        replaced: RowT = dataclasses.replace(cast(Any, self), **changes)
        return replaced


RowT = TypeVar("RowT", bound=TypedRow)


def fetch_typed(conn: sqlite3.Connection, row_type: type[RowT], sql: str, params: Iterable[Any] = ()) -> list[RowT]:
    """All rows of one query as `row_type`."""
    cursor = conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description or ()]
    return [row_type.from_row(names, values) for values in cursor.fetchall()]


def fetch_one_typed(conn: sqlite3.Connection, row_type: type[RowT], sql: str,
                    params: Iterable[Any] = ()) -> RowT | None:
    """The first row of one query as `row_type`, or None."""
    cursor = conn.execute(sql, tuple(params))
    values = cursor.fetchone()
    if values is None:
        return None
    return row_type.from_row([d[0] for d in cursor.description or ()], values)
