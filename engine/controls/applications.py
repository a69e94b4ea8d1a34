"""Runbook applications in control.db: what a runbook changed (row ids, previous values), so it can be rolled back
exactly. Every function takes the caller's connection; engine.runbooks.actions writes an application in the same
transaction as the changes it records."""

from __future__ import annotations

from engine.store.control_rows import RunbookApplication
from engine.store.dialect import SqlConnection, insert_id
from engine.store.rows import fetch_one_typed, fetch_typed


def get(conn: SqlConnection, application_id: int) -> RunbookApplication | None:
    return fetch_one_typed(conn, RunbookApplication, "SELECT * FROM runbook_applications WHERE id = ?",
                           (application_id,))


def get_in_force(conn: SqlConnection, application_id: int) -> RunbookApplication | None:
    """The application, if it has not been rolled back."""
    return fetch_one_typed(conn, RunbookApplication, "SELECT * FROM runbook_applications WHERE id = ? AND "
                                                     "rolled_back IS NULL", (application_id,))


def in_force_for(conn: SqlConnection, runbook: str, scope: str) -> RunbookApplication | None:
    """The newest application of `runbook` to `scope` not rolled back, if any."""
    return fetch_one_typed(conn, RunbookApplication, "SELECT * FROM runbook_applications WHERE rolled_back IS NULL "
                                                     "AND runbook = ? AND scope = ? ORDER BY id DESC LIMIT 1",
                           (runbook, scope))


def in_force(conn: SqlConnection) -> list[RunbookApplication]:
    """Every application not rolled back, oldest first."""
    return fetch_typed(conn, RunbookApplication, "SELECT * FROM runbook_applications WHERE rolled_back IS NULL "
                                                 "ORDER BY id")


def for_incident(conn: SqlConnection, incident_id: str) -> list[RunbookApplication]:
    """The applications made for one incident, oldest first."""
    return fetch_typed(conn, RunbookApplication, "SELECT * FROM runbook_applications WHERE incident_id = ? "
                                                 "ORDER BY id", (incident_id,))


def insert(conn: SqlConnection, *, runbook: str, scope: str, incident_id: str | None, actor: str, reason: str,
           applied: float, actions_json: str, context_json: str, rollback_json: str,
           rollback_due: float | None) -> int:
    return insert_id(
        conn, "INSERT INTO runbook_applications (runbook, scope, incident_id, actor, reason, applied, actions, "
              "context, rollback, rollback_due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (runbook, scope, incident_id, actor, reason, applied, actions_json, context_json, rollback_json,
         rollback_due))


def set_actions(conn: SqlConnection, application_id: int, actions_json: str) -> None:
    conn.execute("UPDATE runbook_applications SET actions = ? WHERE id = ?", (actions_json, application_id))


def mark_rolled_back(conn: SqlConnection, application_id: int, *, actor: str, report_json: str,
                     actions_json: str, now: float) -> None:
    conn.execute("UPDATE runbook_applications SET rolled_back = ?, rolled_back_by = ?, rollback_report = ?, "
                 "actions = ? WHERE id = ?", (now, actor, report_json, actions_json, application_id))
