"""The audit log: one row per operator or engine action, chained by hashes so tampering is detectable.

hash = sha256(prev_hash + canonical JSON of {id, ts, actor, action, target, before, after, reason}); the first row's
prev_hash is GENESIS. The row id is inside the hash, so swapping two rows (or renumbering one) breaks the row's own
hash; deleting a row leaves a gap in the ids (AUTOINCREMENT never reuses one) and breaks the next row's link;
deleting rows at the end leaves sqlite_sequence (on Postgres: `audit_seq`, engine.store.dialect) above the last id.
Someone with write access who recomputes every later hash *and* fixes that can still rewrite history: the chain
makes tampering evident, it is not a signature (copy the head hash elsewhere for that).

`append()` must run inside the caller's write transaction (BEGIN IMMEDIATE; on Postgres, a transaction holding the
control plane's advisory lock), so the action and its audit row commit together and concurrent writers cannot fork
the chain: the write lock serializes "read the head, insert" (on Postgres the high-water row is also read FOR UPDATE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.store.audit_rows import canonical_json, decode_row, row_hash
from engine.store.control_rows import AuditEntry

# The row format (how a row is hashed and decoded) is the store's, because schema v4's data step reads it too.
from engine.store.dialect import SqlConnection, dialect_of
from engine.store.rows import TypedRow, fetch_typed, row_dicts

__all__ = ["GENESIS", "AuditEntry", "AuditVerification", "append", "between", "canonical_json", "decode_row", "newest",
           "newest_id",
           "row_hash", "verify_chain"]

GENESIS = "0" * 64


def _json_or_none(value: Any) -> str | None:
    if isinstance(value, TypedRow):
        value = value.as_dict()
    if isinstance(value, dict) and "audit_hash" in value:
        # A control row's link to its audit row (engine.controls.binding) is about the log, not part of the action
        # recorded: left out, so a row's record does not carry the hash of the row that recorded it before.
        value = {k: v for k, v in value.items() if k != "audit_hash"}
    return None if value is None else canonical_json(value)


def append(conn: SqlConnection, *, ts: float, actor: str, action: str, target: str | None,
           before: Any = None, after: Any = None, reason: str | None = None) -> AuditEntry:
    """Insert the next chained row and return it. Call inside an open write transaction."""
    dialect = dialect_of(conn)
    # The high-water row first: on Postgres it is locked FOR UPDATE, so two writers can never read the same head.
    seq = conn.execute(dialect.audit_high_water_sql + dialect.lock).fetchone()
    head = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    # The id is chosen here (not left to SQLite) because it is part of the hash; it equals what AUTOINCREMENT
    # would pick, and the sequence row keeps ids from ever being reused after a deletion.
    next_id = max(head[0] if head else 0, seq[0] if seq else 0) + 1
    prev_hash = head[1] if head else GENESIS
    # float(): SQLite hands a REAL back as a float, and the hash must match what verify_chain() will read.
    fields = {"id": next_id, "ts": float(ts), "actor": actor, "action": action, "target": target,
              "before": _json_or_none(before), "after": _json_or_none(after), "reason": reason}
    digest = row_hash(prev_hash, fields)
    row = {**fields, "prev_hash": prev_hash, "hash": digest}
    conn.execute("INSERT INTO audit (id, ts, actor, action, target, before, after, reason, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(row.values()))
    return AuditEntry.from_row(list(row), list(row.values()))


def newest(conn: SqlConnection, limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
    """Decoded rows, newest first; page with before_id (the smallest id already seen)."""
    if before_id is None:
        return fetch_typed(conn, AuditEntry, "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),))
    return fetch_typed(conn, AuditEntry, "SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
                       (int(before_id), int(limit)))


def newest_id(conn: SqlConnection) -> int | None:
    """The id of the newest audit row, or None for an empty log."""
    row = conn.execute("SELECT MAX(id) FROM audit").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def between(conn: SqlConnection, start: float, end: float) -> list[AuditEntry]:
    """Decoded rows with start <= ts <= end, in id order (a postmortem's window)."""
    return fetch_typed(conn, AuditEntry, "SELECT * FROM audit WHERE ts >= ? AND ts <= ? ORDER BY id", (start, end))


@dataclass(frozen=True, slots=True)
class AuditVerification:
    ok: bool
    rows: int
    first_bad_id: int | None = None
    problem: str | None = None
    anchored_seq: int | None = None  # the audit row the engine's newest anchor in traces.db names (anchor.py)


def verify_chain(conn: SqlConnection) -> AuditVerification:
    """Walk the whole log in id order and report the first row where the chain does not hold."""
    cursor = conn.execute("SELECT id, ts, actor, action, target, before, after, reason, prev_hash, hash "
                          "FROM audit ORDER BY id")
    expected_prev = GENESIS
    last_id = 0
    rows = 0
    for row in row_dicts(cursor):
        rows += 1
        row_id = row["id"]
        if row_id != last_id + 1:
            missing = (f"row {last_id + 1} is missing" if row_id == last_id + 2
                       else f"rows {last_id + 1}..{row_id - 1} are missing")
            return AuditVerification(False, rows, last_id + 1, f"{missing}: ids jump from {last_id} to {row_id}")
        if row["prev_hash"] != expected_prev:
            return AuditVerification(False, rows, row_id,
                                     f"row {row_id} does not link to row {last_id}: its prev_hash "
                                     f"{str(row['prev_hash'])[:12]} differs from row {last_id}'s hash "
                                     f"{expected_prev[:12]} (row {last_id} was rewritten, or rows were moved)")
        if row_hash(row["prev_hash"], row) != row["hash"]:
            return AuditVerification(False, rows, row_id,
                                     f"row {row_id} was altered: its contents no longer match its hash")
        expected_prev = row["hash"]
        last_id = row_id
    seq_row = conn.execute(dialect_of(conn).audit_high_water_sql).fetchone()
    seq = seq_row[0] if seq_row else 0
    if seq > last_id:
        missing = f"row {seq}" if seq == last_id + 1 else f"rows {last_id + 1}..{seq}"
        return AuditVerification(False, rows, last_id + 1,
                                 f"{missing} missing at the end: the log once reached id {seq}")
    return AuditVerification(True, rows)
