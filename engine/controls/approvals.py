"""Approvals in control.db: the engine records a tool call waiting for an operator, an operator decides it, the
engine applies its on_timeout policy when nobody did, a killed run's requests are cancelled. Every function takes the
caller's connection (writes: inside its transaction). Each state change is a conditional UPDATE (`... WHERE status =
'pending'`) so "exactly one decision wins" holds even without the write lock, and gets its bound audit row.

`decided_seq` orders decisions for the engine's watcher: a counter assigned inside the deciding transaction (writers
are serialized, so it is gap-free and monotonic across processes, which wall-clock times are not)."""

from __future__ import annotations

import re
import secrets
from typing import Any

from engine.controls import audit
from engine.controls.binding import TIMEOUT_POLICY_ACTOR, bind
from engine.controls.errors import ControlError
from engine.controls.validate import sha256_text
from engine.errors import InputError, StoreError
from engine.store.control_rows import Approval, ApprovalAlert, ApprovalDeadline, ApprovalExpiry
from engine.store.dialect import SqlConnection
from engine.store.rows import column_list, fetch_one_typed, fetch_typed
from engine.timefmt import clock_text

MIN_HASH_PREFIX = 8
_HEX = re.compile(r"[0-9a-f]+")

# Approval's columns by name, never `*`: a Postgres store's approvals table has one more, `rowid`
# (engine.store.dialect), which keeps "in the order they were requested" meaning the same on both backends.
_COLUMNS = column_list(Approval)
PENDING_SQL = f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' ORDER BY requested, rowid"
DECIDED_AFTER_SQL = f"SELECT {_COLUMNS} FROM approvals WHERE decided_seq > ? ORDER BY decided_seq"
LAST_DECIDED_SEQ_SQL = ("SELECT decided_seq FROM approvals WHERE decided_seq IS NOT NULL "
                        "ORDER BY decided_seq DESC LIMIT 1")


def get(conn: SqlConnection, approval_id: str) -> Approval | None:
    """The row (`arguments` and `edited_arguments` parsed)."""
    return fetch_one_typed(conn, Approval, f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (approval_id,))


def _get(conn: SqlConnection, approval_id: str) -> Approval:
    """The row this transaction just wrote."""
    row = get(conn, approval_id)
    assert row is not None
    return row


def pending(conn: SqlConnection) -> list[Approval]:
    """Oldest first: the one waiting longest is the one closest to its deadline policy."""
    return fetch_typed(conn, Approval, PENDING_SQL)


def newest(conn: SqlConnection, limit: int) -> list[Approval]:
    """All approvals, whatever their status, newest request first."""
    return fetch_typed(conn, Approval, f"SELECT {_COLUMNS} FROM approvals ORDER BY requested DESC, rowid DESC "
                                       "LIMIT ?",
                       (int(limit),))


def last_decided_seq(conn: SqlConnection) -> int:
    last = conn.execute(LAST_DECIDED_SEQ_SQL).fetchone()
    return int(last[0]) if last else 0


def checked_hash_prefix(value: str | None) -> str | None:
    """The expected sha256 of the arguments (or a prefix of at least MIN_HASH_PREFIX hex digits), lower-cased."""
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else ""
    if len(text) < MIN_HASH_PREFIX or len(text) > 64 or not _HEX.fullmatch(text):
        raise InputError(f"expected the sha256 of the arguments (at least {MIN_HASH_PREFIX} hex digits), got "
                         f"{value!r}", field="expected_args_hash")
    return text


def settled_message(row: Approval, now: float) -> str:
    when = clock_text(row.decided, now)
    status = row.status
    if status == "timed_out":
        return f"approval {row.id} expired at {when} and was denied by its timeout policy"
    if status == "cancelled":
        return f"approval {row.id} was cancelled at {when} ({row.decision_reason})"
    return f"approval {row.id} was already {status} by {row.decided_by} at {when}"


def decide(conn: SqlConnection, approval_id: str, status: str, *, reason: str, edited_json: str | None,
           expected_hash: str | None, operator: str, now: float) -> Approval:
    """A decision binds to exactly one request: it must still be pending, before its deadline (the engine may not
    have expired it yet, so `now` is compared here), and, with expected_hash, for the arguments the operator saw."""
    row = get(conn, approval_id)
    if row is None:
        raise ControlError(f"no approval {approval_id} (see `flightdeck approvals --all`)")
    if row.status != "pending":
        raise ControlError(settled_message(row, now))
    if now >= row.deadline:
        raise ControlError(f"approval {approval_id} expired at {clock_text(row.deadline, now)}; it is "
                           f"too late to decide (on timeout the engine will {row.on_timeout})")
    if expected_hash is not None and not row.args_hash.startswith(expected_hash):
        raise ControlError(f"approval {approval_id}: arguments changed since you looked (hash "
                           f"{row.args_hash[:12]}, you expected {expected_hash[:12]}); review it again "
                           f"with `flightdeck approvals`")
    seq = last_decided_seq(conn) + 1
    cursor = conn.execute(
        "UPDATE approvals SET status = ?, decided = ?, decided_by = ?, decision_reason = ?, "
        "edited_arguments = ?, decided_seq = ? WHERE id = ? AND status = 'pending'",
        (status, now, operator, reason, edited_json, seq, approval_id))
    if cursor.rowcount != 1:  # cannot happen under the write lock; kept so the rule never depends on it
        raise ControlError(settled_message(get(conn, approval_id) or row, now))
    after = _get(conn, approval_id)
    action = "edit_approve" if edited_json is not None else ("approve" if status == "approved" else "deny")
    audit_after: dict[str, Any] = {"status": status, "args_hash": row.args_hash}
    if edited_json is not None:
        audit_after["edited_arguments"] = after.edited_arguments
        audit_after["edited_args_hash"] = sha256_text(edited_json)
    bind(conn, "approvals", approval_id,
         audit.append(conn, ts=now, actor=operator, action=action, target=approval_id,
                      before={"status": "pending", "run_id": row.run_id, "agent": row.agent,
                              "tool": row.tool, "args_hash": row.args_hash, "level": row.level},
                      after=audit_after, reason=reason))
    return after


def _new_id(conn: SqlConnection) -> str:
    # 32 random bits keep ids typeable; a collision is checked for under the write lock, not assumed away.
    for _ in range(20):
        candidate = "ap-" + secrets.token_hex(4)
        if conn.execute("SELECT 1 FROM approvals WHERE id = ?", (candidate,)).fetchone() is None:
            return candidate
    raise StoreError("could not find a free approval id after 20 tries; is control.db full of approvals?")


def request(conn: SqlConnection, *, run_id: str, span_id: str | None, agent: str, tool: str, args_json: str,
            risk: str | None, reason: str | None, deadline_s: float, on_timeout: str, engine_id: str, actor: str,
            now: float, call_key: str | None = None) -> Approval:
    """Record a validated request (id 'ap-' + 8 hex digits) with its bound audit row; returns the row. `call_key`:
    the durable call it gates (a resumed run finds the request by it, `for_call`)."""
    args_hash = sha256_text(args_json)
    approval_id = _new_id(conn)
    conn.execute(
        "INSERT INTO approvals (id, run_id, span_id, agent, tool, arguments, args_hash, risk, reason, "
        "requested, deadline, window_s, level, on_timeout, status, engine_id, call_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, 'pending', ?, ?)",
        (approval_id, run_id, span_id, agent, tool, args_json, args_hash, risk, reason, now,
         now + float(deadline_s), float(deadline_s), on_timeout, engine_id, call_key))
    row = _get(conn, approval_id)
    after: dict[str, Any] = {"run_id": run_id, "span_id": span_id, "agent": agent, "tool": tool,
                             "args_hash": args_hash, "risk": risk, "deadline": row.deadline, "on_timeout": on_timeout}
    if call_key is not None:
        after["call"] = call_key
    bind(conn, "approvals", approval_id,
         audit.append(conn, ts=now, actor=actor, action="approval_requested", target=approval_id, after=after,
                      reason=reason))
    return row


def for_call(conn: SqlConnection, call_key: str) -> Approval | None:
    """The newest request for the durable call `call_key` (a resumed run's: asked before its engine died)."""
    return fetch_one_typed(conn, Approval, f"SELECT {_COLUMNS} FROM approvals WHERE call_key = ? "
                                           "ORDER BY requested DESC, rowid DESC LIMIT 1", (call_key,))


def expire(conn: SqlConnection, approval_id: str, *, actor: str | None, operator: str,
           max_escalations: int | None, now: float) -> ApprovalExpiry:
    """Apply the request's on_timeout policy once its deadline has passed; the row plus `outcome` (see
    ControlAPI.expire_approval)."""
    row = get(conn, approval_id)
    if row is None:
        raise ControlError(f"no approval {approval_id}")
    if row.status != "pending" or now < row.deadline:
        return ApprovalExpiry(**row.as_dict(), outcome="unchanged")
    who = actor or (f"engine:{row.engine_id}" if row.engine_id else operator)
    guard = "WHERE id = ? AND status = 'pending' AND level = ? AND deadline <= ?"
    guard_params = (approval_id, row.level, now)
    policy = row.on_timeout
    if policy == "escalate" and max_escalations is not None and row.level >= max_escalations:
        policy = "deny"  # nobody answered at any level: a timeout, recorded as such
    if policy == "escalate":
        deadline = now + 2 * row.window_s
        cursor = conn.execute(f"UPDATE approvals SET level = level + 1, deadline = ? {guard}",
                              (deadline, *guard_params))
        outcome, action = "escalated", "approval_escalated"
        audit_after: dict[str, Any] = {"status": "pending", "level": row.level + 1, "deadline": deadline}
    else:
        status = "timed_out" if policy == "deny" else "approved"
        cursor = conn.execute(
            f"UPDATE approvals SET status = ?, decided = ?, decided_by = ?, decision_reason = ?, "
            f"decided_seq = ? {guard}",
            (status, now, TIMEOUT_POLICY_ACTOR,
             f"no decision within {row.deadline - row.requested:g}s (on_timeout: {policy})",
             last_decided_seq(conn) + 1, *guard_params))
        outcome, action = status, "approval_timeout"
        audit_after = {"status": status, "decided_by": TIMEOUT_POLICY_ACTOR, "policy": policy}
    if cursor.rowcount != 1:
        return ApprovalExpiry(**row.as_dict(), outcome="unchanged")
    bind(conn, "approvals", approval_id,
         audit.append(conn, ts=now, actor=who, action=action, target=approval_id,
                      before={"status": "pending", "level": row.level, "deadline": row.deadline},
                      after=audit_after, reason=f"deadline passed (on_timeout: {policy})"))
    return ApprovalExpiry(**_get(conn, approval_id).as_dict(), outcome=outcome)


def cancel_for_run(conn: SqlConnection, run_id: str, *, reason: str, actor: str,
                   now: float) -> list[Approval]:
    """A killed (or ended) run's pending requests become cancelled; returns them."""
    rows = fetch_typed(conn, Approval, f"SELECT {_COLUMNS} FROM approvals WHERE run_id = ? AND status = 'pending' "
                                       "ORDER BY requested, rowid", (run_id,))
    return [row for row in (cancel(conn, row, reason=reason, actor=actor, now=now) for row in rows)
            if row is not None]


def cancel(conn: SqlConnection, row: Approval, *, reason: str, actor: str, now: float) -> Approval | None:
    """One pending request becomes cancelled (with its bound audit row); None when it was no longer pending."""
    cursor = conn.execute(
        "UPDATE approvals SET status = 'cancelled', decided = ?, decided_by = ?, decision_reason = ?, "
        "decided_seq = ? WHERE id = ? AND status = 'pending'",
        (now, actor, reason, last_decided_seq(conn) + 1, row.id))
    if cursor.rowcount != 1:
        return None
    bind(conn, "approvals", row.id,
         audit.append(conn, ts=now, actor=actor, action="approval_cancelled", target=row.id,
                      before={"status": "pending", "run_id": row.run_id}, after={"status": "cancelled"},
                      reason=reason))
    return _get(conn, row.id)


def pending_by_deadline(conn: SqlConnection, limit: int = 1000) -> list[ApprovalDeadline]:
    """id, tool and deadline of pending requests, soonest deadline first (the console header's approvals slot)."""
    return fetch_typed(conn, ApprovalDeadline, "SELECT id, tool, deadline FROM approvals "
                                               "WHERE status = 'pending' ORDER BY deadline LIMIT ?", (int(limit),))


def pending_alerts(conn: SqlConnection) -> list[ApprovalAlert]:
    """id, agent, tool, deadline and risk of pending requests, oldest first (the console's approval alerts)."""
    return fetch_typed(conn, ApprovalAlert, "SELECT id, agent, tool, deadline, risk FROM approvals "
                                            "WHERE status = 'pending' ORDER BY requested, rowid")
