"""The audit chain's anchor: the head (last row id and hash) the engine saw, recorded in traces.db.

The hash chain alone makes an edit evident, but not a rewrite: whoever can write control.db can recompute every hash
after the row they changed, or cut rows off the end (and lower sqlite_sequence), and the chain still verifies.
traces.db is written only by the engine's trace writer, never by operator tools, so the engine records the head it
saw as an `audit.head` event ({seq, hash}) at start and whenever the log grows (RuntimeControls). `audit verify`
compares the log with the newest anchor: a head row that is missing (log cut short or wiped) or whose hash differs
(chain rewritten) is reported. Rows appended after the newest anchor are protected by the chain only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StoreError
from engine.store.dialect import SqlConnection
from engine.store.files import TRACES_DB, connect, translate_sqlite_error
from engine.store.location import PostgresLocation, StoreDirectory, StoreLocation
from engine.store.trace_rows import EventRow
from engine.timefmt import timestamp

ANCHOR_EVENT = "audit.head"


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    seq: int
    hash: str
    ts: float



def latest_anchor(store: Path | StoreLocation) -> AuditAnchor | None:
    """The newest audit head recorded in the trace store (STORE/traces.db read-only, or a Postgres store's events),
    or None when none was ever recorded."""
    if isinstance(store, PostgresLocation):
        return _latest_pg_anchor(store)
    store_dir = store.path if isinstance(store, StoreDirectory) else store
    path = store_dir / TRACES_DB
    if not path.is_file():
        return None
    conn = connect(path, read_only=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is None:
            return None
        row = conn.execute("SELECT ts, json_extract(data, '$.seq'), json_extract(data, '$.hash') FROM events "
                           "WHERE kind = ? ORDER BY seq DESC LIMIT 1", (ANCHOR_EVENT,)).fetchone()
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "read") from exc
    finally:
        conn.close()
    if row is None or not isinstance(row[1], int) or not isinstance(row[2], str):
        return None
    return AuditAnchor(seq=row[1], hash=row[2], ts=float(row[0]))


def _latest_pg_anchor(location: PostgresLocation) -> AuditAnchor | None:
    from engine.store.pg.reader import PgTraceReader

    reader = PgTraceReader.connect_if_present(location)
    if reader is None:
        return None
    with reader:
        rows = reader.query_rows(EventRow, "SELECT seq, ts, run_id, span_id, kind, agent, name, data FROM events "
                                           "WHERE kind = ? ORDER BY seq DESC LIMIT 1", (ANCHOR_EVENT,))
    data = rows[0].data if rows else None
    if not isinstance(data, dict) or not isinstance(data.get("seq"), int) or not isinstance(data.get("hash"), str):
        return None
    return AuditAnchor(seq=data["seq"], hash=data["hash"], ts=float(rows[0].ts))


def anchor_problem(conn: SqlConnection | None, anchor: AuditAnchor) -> str | None:
    """What is wrong with the audit log (conn: control.db, None if the file is gone) given the engine's anchor."""
    seen = f"the engine recorded audit row {anchor.seq} (hash {anchor.hash[:12]}) at {timestamp(anchor.ts)}"
    if conn is None:
        return f"control.db is missing, but {seen}: the audit log was deleted"
    try:
        row = conn.execute("SELECT hash FROM audit WHERE id = ?", (anchor.seq,)).fetchone()
        last = conn.execute("SELECT max(id) FROM audit").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the audit log: {exc}") from exc
    if row is None:
        if last is None:
            return f"the audit log is empty, but {seen}: the log was wiped"
        if last < anchor.seq:
            return (f"the audit log ends at row {last}, but {seen}: rows {last + 1}..{anchor.seq} were cut off "
                    f"the end")
        return f"row {anchor.seq} is missing, but {seen}"
    if row[0] != anchor.hash:
        return (f"row {anchor.seq} has hash {str(row[0])[:12]}, but {seen}: the log was rewritten (hashes "
                f"recomputed)")
    return None
