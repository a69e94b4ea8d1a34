"""IncidentStore: incidents and their time lines in control.db.

An incident is one problem: a runbook's detection firing for one scope. Firing again while the incident is not
resolved updates it (the `incidents_open` unique index makes a duplicate impossible, even between processes); after
it is resolved, the next firing opens a new one. Operators acknowledge, resolve and annotate; each of those writes
its change, its time line entry and its audit row in ONE transaction, so the audit log and the incident can never
disagree. The engine's own entries (detected, applied, paged, cleared, ...) go to the time line only.

Incidents are a control-plane concept (they live in control.db); engine.runbooks drives them through IncidentStore
and, inside a transaction it shares with other actions (a runbook's apply), through add_event().
"""

from __future__ import annotations

import builtins
import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.controls import audit
from engine.controls.validate import optional_text, required_text
from engine.errors import StoreError
from engine.store.control import ControlStore
from engine.store.control_rows import Incident, IncidentEvent, IncidentNote, IncidentSummary
from engine.store.dialect import SqlConnection
from engine.store.files import translate_sqlite_error
from engine.store.rows import fetch_one_typed, fetch_rows, fetch_typed

ACTIVE = ("open", "acknowledged")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def incident_state(incident: Incident, actions_in_force: bool) -> str:
    """What an incident's detection and actions say now, one word: `resolved`; `firing` (the detection is on);
    `clearing` (resolved-pending: the detection has cleared and none of its runbook's actions is in force any more,
    rolled back or never applied: an operator resolves it); `quiet` (cleared, actions still in force)."""
    if incident.status == "resolved":
        return "resolved"
    if incident.firing:
        return "firing"
    if incident.cleared is not None and not actions_in_force:
        return "clearing"
    return "quiet"


def add_event(conn: SqlConnection, incident_id: str, ts: float, kind: str, actor: str, text: str,
              data: Any = None) -> None:
    """One time line entry, written in the caller's transaction (data stored as JSON with sorted keys)."""
    add_event_json(conn, incident_id, ts, kind, actor, text, _dumps(data))


def add_event_json(conn: SqlConnection, incident_id: str, ts: float, kind: str, actor: str, text: str,
                   data_json: str | None) -> None:
    """add_event with the data already encoded (runbook actions keep their entries in the order they were made)."""
    conn.execute("INSERT INTO incident_events (incident_id, ts, kind, actor, text, data) VALUES (?, ?, ?, ?, ?, ?)",
                 (incident_id, ts, kind, actor, text, data_json))


def active_summaries(conn: SqlConnection, limit: int = 500) -> list[IncidentSummary]:
    """What the console's incident header slot shows of incidents not resolved, newest first (JSON left as text)."""
    return fetch_typed(conn, IncidentSummary, "SELECT id, severity, status, firing, runbook, scope, context, opened "
                                              "FROM incidents WHERE status != 'resolved' ORDER BY opened DESC LIMIT ?",
                       (int(limit),))


def recent_events(conn: SqlConnection, incident_id: str, limit: int) -> list[IncidentNote]:
    """The newest `limit` time line entries (ts, kind, actor, text), newest first."""
    return fetch_typed(conn, IncidentNote, "SELECT ts, kind, actor, text FROM incident_events WHERE incident_id = ? "
                            "ORDER BY id DESC LIMIT ?", (incident_id, limit))


class IncidentError(StoreError):
    """An incident action that cannot be done as asked (unknown id, already resolved)."""

    exit_code = 2


class IncidentStore:
    def __init__(self, db: ControlStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    def now(self) -> float:
        return self.clock.time()

    @contextmanager
    def transaction(self) -> Iterator[SqlConnection]:
        try:
            with self.db.transaction() as conn:
                yield conn
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self.db.path, "write to") from exc

    # -- reading ------------------------------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Incident]:
        with self.db.reading() as conn:
            return fetch_typed(conn, Incident, sql, params)

    def get(self, incident_id: str) -> Incident:
        """The incident with this id, or the one whose id starts with it (`inc-3f2` or just `3f2`)."""
        ref = required_text(incident_id, "incident")
        candidates = [ref] if ref.startswith("inc-") else [ref, "inc-" + ref]
        for candidate in candidates:
            rows = self._read("SELECT * FROM incidents WHERE id = ?", (candidate,))
            if rows:
                return rows[0]
        prefix = ref if ref.startswith("inc-") else "inc-" + ref
        rows = self._read("SELECT * FROM incidents WHERE id >= ? AND id < ? ORDER BY id LIMIT 6",
                          (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))
        if len(rows) == 1:
            return rows[0]
        if rows:
            raise IncidentError(f"incident id {ref!r} is ambiguous: it matches {', '.join(r.id for r in rows)}")
        raise IncidentError(f"no incident {ref} (see `flightdeck incidents --all`)")

    def list(self, *, active_only: bool = True, limit: int = 100) -> builtins.list[Incident]:
        """Newest first. active_only: open and acknowledged incidents."""
        if active_only:
            return self._read("SELECT * FROM incidents WHERE status != 'resolved' ORDER BY opened DESC LIMIT ?",
                              (int(limit),))
        return self._read("SELECT * FROM incidents ORDER BY opened DESC LIMIT ?", (int(limit),))

    def open_incident(self, runbook: str, scope: str) -> Incident | None:
        rows = self._read("SELECT * FROM incidents WHERE runbook = ? AND scope = ? AND status != 'resolved'",
                          (runbook, scope))
        return rows[0] if rows else None

    def timeline(self, incident_id: str) -> builtins.list[IncidentEvent]:
        with self.db.reading() as conn:
            return fetch_typed(conn, IncidentEvent, "SELECT * FROM incident_events WHERE incident_id = ? ORDER BY id",
                               (incident_id,))

    # -- the engine's side --------------------------------------------------------------------------------------

    def open_or_update(self, *, runbook: str, title: str, severity: str, apply_mode: str, scope: str,
                       readings: builtins.list[dict[str, Any]], context: Mapping[str, Any], summary: str, actor: str,
                       engine_id: str | None) -> tuple[Incident, bool]:
        """Open an incident for (runbook, scope), or update the one not yet resolved. Returns (row, opened)."""
        now = self.now()
        with self.transaction() as conn:
            existing = fetch_one_typed(conn, Incident, "SELECT * FROM incidents WHERE runbook = ? AND scope = ? AND "
                                                       "status != 'resolved'", (runbook, scope))
            if existing is not None:
                conn.execute("UPDATE incidents SET fired = fired + 1, firing = 1, updated = ?, last_signals = ?, "
                             "context = ? WHERE id = ?", (now, _dumps(readings), _dumps(dict(context)), existing.id))
                add_event(conn, existing.id, now, "detected", actor, f"fired again: {summary}",
                          {"signals": readings})
                opened = False
                incident_id = existing.id
            else:
                incident_id = self._new_id(conn)
                conn.execute(
                    "INSERT INTO incidents (id, runbook, title, severity, scope, apply_mode, status, firing, fired, "
                    "opened, updated, signals, last_signals, context, engine_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'open', 1, 1, ?, ?, ?, ?, ?, ?)",
                    (incident_id, runbook, title, severity, scope, apply_mode, now, now, _dumps(readings),
                     _dumps(readings), _dumps(dict(context)), engine_id))
                add_event(conn, incident_id, now, "detected", actor, summary, {"signals": readings,
                                                                                "context": dict(context)})
                audit.append(conn, ts=now, actor=actor, action="incident_opened", target=incident_id,
                             after={"runbook": runbook, "scope": scope, "severity": severity}, reason=summary)
                opened = True
            row = fetch_one_typed(conn, Incident, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
        assert row is not None
        return row, opened

    def cleared(self, incident_id: str, readings: builtins.list[dict[str, Any]], actor: str) -> None:
        now = self.now()
        peaks = ", ".join(f"{r['signal']} peaked at {r['peak']:.4g}" for r in readings if r.get("peak") is not None)
        with self.transaction() as conn:
            conn.execute("UPDATE incidents SET firing = 0, cleared = ?, updated = ? WHERE id = ?",
                         (now, now, incident_id))
            add_event(conn, incident_id, now, "cleared", actor,
                        "signal back to normal" + (f" ({peaks})" if peaks else ""), {"signals": readings})

    def set_suggested(self, incident_id: str, suggested: builtins.list[dict[str, Any]], command: str,
                      actor: str) -> None:
        now = self.now()
        with self.transaction() as conn:
            conn.execute("UPDATE incidents SET suggested = ?, updated = ? WHERE id = ?",
                         (_dumps(suggested), now, incident_id))
            lines = "; ".join(s["description"] for s in suggested)
            add_event(conn, incident_id, now, "suggested", actor, f"suggested: {lines}. Apply with: {command}",
                        {"actions": suggested, "command": command})

    def add_event(self, incident_id: str, kind: str, actor: str, text: str, data: Any = None,
                  conn: SqlConnection | None = None) -> None:
        now = self.now()
        if conn is not None:
            add_event(conn, incident_id, now, kind, actor, text, data)
            return
        with self.transaction() as tx:
            add_event(tx, incident_id, now, kind, actor, text, data)

    @staticmethod
    def _new_id(conn: SqlConnection) -> str:
        # Random, not a row number: it is the PagerDuty dedup_key, which must not repeat across stores.
        for _ in range(20):
            candidate = "inc-" + secrets.token_hex(4)
            if conn.execute("SELECT 1 FROM incidents WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate
        raise StoreError("could not find a free incident id after 20 tries")

    # -- pages ----------------------------------------------------------------------------------------------------

    def record_page(self, incident_id: str, *, target: str, action: str, ok: bool, text: str,
                    data: Mapping[str, Any], actor: str) -> None:
        """A page's final outcome on the time line; a delivered trigger makes the target follow the incident."""
        now = self.now()
        with self.transaction() as conn:
            row = fetch_rows(conn, "SELECT paged_targets, page_synced, status FROM incidents WHERE id = ?",
                         (incident_id,))
            if not row:
                return
            add_event(conn, incident_id, now, "paged" if ok else "page_failed", actor, text, dict(data))
            if ok and action == "trigger":
                targets = json.loads(row[0]["paged_targets"] or "[]")
                if target not in targets:
                    targets.append(target)
                conn.execute("UPDATE incidents SET paged_targets = ?, page_synced = coalesce(page_synced, 'open') "
                             "WHERE id = ?", (json.dumps(targets), incident_id))

    def unsynced_pages(self) -> builtins.list[Incident]:
        """Paged incidents whose status changed since the pagers were last told (served by a partial index)."""
        return self._read("SELECT * FROM incidents WHERE page_synced IS NOT NULL AND page_synced != status ORDER BY id")

    def mark_synced(self, incident_id: str, status: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE incidents SET page_synced = ? WHERE id = ?", (status, incident_id))

    # -- operators ------------------------------------------------------------------------------------------------

    def acknowledge(self, incident_id: str, operator: str, reason: str | None = None) -> Incident:
        incident = self.get(incident_id)
        reason = optional_text(reason, "reason")
        operator = _operator(operator)
        now = self.now()
        with self.transaction() as conn:
            cursor = conn.execute("UPDATE incidents SET status = 'acknowledged', acknowledged = ?, "
                                  "acknowledged_by = ?, updated = ? WHERE id = ? AND status = 'open'",
                                  (now, operator, now, incident.id))
            if cursor.rowcount != 1:
                current = fetch_rows(conn, "SELECT status, acknowledged_by, resolved_by FROM incidents WHERE id = ?",
                                 (incident.id,))[0]
                who = current["acknowledged_by"] if current["status"] == "acknowledged" else current["resolved_by"]
                raise IncidentError(f"incident {incident.id} is already {current['status']} (by {who})")
            add_event(conn, incident.id, now, "acknowledged", operator,
                        f"acknowledged by {operator}" + (f": {reason}" if reason else ""))
            audit.append(conn, ts=now, actor=operator, action="incident_ack", target=incident.id,
                         before={"status": "open"}, after={"status": "acknowledged"}, reason=reason)
        return self.get(incident.id)

    def resolve(self, incident_id: str, operator: str, reason: str) -> Incident:
        incident = self.get(incident_id)
        reason_text = required_text(reason, "reason")
        operator = _operator(operator)
        now = self.now()
        with self.transaction() as conn:
            before = fetch_rows(conn, "SELECT status, resolved_by FROM incidents WHERE id = ?", (incident.id,))[0]
            if before["status"] == "resolved":
                raise IncidentError(f"incident {incident.id} is already resolved (by {before['resolved_by']})")
            conn.execute("UPDATE incidents SET status = 'resolved', resolved = ?, resolved_by = ?, resolution = ?, "
                         "updated = ? WHERE id = ? AND status != 'resolved'",
                         (now, operator, reason_text, now, incident.id))
            add_event(conn, incident.id, now, "resolved", operator, f"resolved by {operator}: {reason_text}")
            audit.append(conn, ts=now, actor=operator, action="incident_resolve", target=incident.id,
                         before={"status": before["status"]}, after={"status": "resolved"}, reason=reason_text)
        return self.get(incident.id)

    def annotate(self, incident_id: str, operator: str, text: str) -> Incident:
        incident = self.get(incident_id)
        note = required_text(text, "text")
        operator = _operator(operator)
        now = self.now()
        with self.transaction() as conn:
            add_event(conn, incident.id, now, "annotated", operator, str(note))
            conn.execute("UPDATE incidents SET updated = ? WHERE id = ?", (now, incident.id))
            audit.append(conn, ts=now, actor=operator, action="incident_note", target=incident.id, reason=note)
        return self.get(incident.id)


def _operator(name: str) -> str:
    return required_text(name, "operator")


def list_incidents(store_dir: Path | str, *, active_only: bool = False, limit: int = 1000) -> list[Incident]:
    """Incidents of a store, newest first, read without writing anything (no migration, no store creation): for
    readers in other processes (the demo's checks, the console). [] when the store has no incidents table yet."""
    from engine.store.files import CONTROL_DB, connect

    path = Path(store_dir) / CONTROL_DB
    if not path.is_file():
        return []
    conn = connect(path, read_only=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'incidents'").fetchone() is None:
            return []
        where = "WHERE status != 'resolved' " if active_only else ""
        return fetch_typed(conn, Incident, f"SELECT * FROM incidents {where}ORDER BY opened DESC LIMIT ?",
                           (int(limit),))
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "read") from exc
    finally:
        conn.close()
