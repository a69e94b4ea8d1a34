"""The engine's reported breaker states (traces.db's `breakers` table), read without a TraceReader and without
writing anything: for `flightdeck breakers`, which must work before any engine has run on a store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.store.files import TRACES_DB, connect, translate_sqlite_error
from engine.store.rows import column_list, row_builder
from engine.store.trace_rows import BreakerRow


def reported_breakers(store_dir: Path) -> list[BreakerRow] | None:
    """Rows of traces.db's `breakers` table (in table order), or None until the store has one."""
    path = store_dir / TRACES_DB
    if not path.is_file():
        return None
    conn = connect(path, read_only=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'breakers'").fetchone() is None:
            return None
        build = row_builder(BreakerRow)
        return [build(values) for values in conn.execute(f"SELECT {column_list(BreakerRow)} FROM breakers")]
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "read") from exc
    finally:
        conn.close()
