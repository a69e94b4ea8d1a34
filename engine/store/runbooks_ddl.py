"""control.db DDL of the runbook engine: incidents, their time lines, and runbook applications. It is
engine.store.control_schema.CONTROL_MIGRATIONS' third entry (v3); the value tuples its CHECK constraints name are
re-exported as the runbook engine's vocabulary by engine.runbooks.schema.

- incidents: one row per (runbook, scope) problem. `incidents_open`, a UNIQUE partial index over the rows not yet
  resolved, makes "a detection that fires again updates the open incident instead of opening a duplicate" a rule
  SQLite enforces, not only the code. The id ('inc-' + 8 hex digits) is also the PagerDuty dedup_key, so it must
  not repeat across stores the way a row number would. `page_synced` is the incident status last mirrored to the
  pagers (NULL until a page went out); `incidents_page_unsynced` serves the engine's "which acknowledgements and
  resolutions still have to be sent" read.
- incident_events: the time line (detected, applied, suggested, paged, page_failed, acknowledged, annotated,
  rolled_back, cleared, resolved, ...), read per incident in id order.
- runbook_applications: one row per application of a runbook's actions, with exactly what was done (row ids and
  the previous values) so a rollback can restore those and nothing else. Active ones (not rolled back) are read by
  the engine whenever control.db changes, through `runbook_applications_active`.
"""

from __future__ import annotations

__all__ = ["APPLY_MODES", "INCIDENT_STATUSES", "RUNBOOKS_V3", "SEVERITIES"]

SEVERITIES: tuple[str, ...] = ("sev1", "sev2", "sev3", "sev4")
INCIDENT_STATUSES: tuple[str, ...] = ("open", "acknowledged", "resolved")
APPLY_MODES: tuple[str, ...] = ("auto", "suggest")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


RUNBOOKS_V3 = f"""
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    runbook TEXT NOT NULL,
    title TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN {_in(SEVERITIES)}),
    scope TEXT NOT NULL,
    apply_mode TEXT NOT NULL CHECK (apply_mode IN {_in(APPLY_MODES)}),
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN {_in(INCIDENT_STATUSES)}),
    firing INTEGER NOT NULL DEFAULT 1,
    fired INTEGER NOT NULL DEFAULT 1,
    opened REAL NOT NULL,
    updated REAL NOT NULL,
    cleared REAL,
    signals TEXT NOT NULL,
    last_signals TEXT NOT NULL,
    context TEXT,
    suggested TEXT,
    acknowledged REAL,
    acknowledged_by TEXT,
    resolved REAL,
    resolved_by TEXT,
    resolution TEXT,
    paged_targets TEXT,
    page_synced TEXT,
    engine_id TEXT
);
CREATE UNIQUE INDEX incidents_open ON incidents (runbook, scope) WHERE status != 'resolved';
CREATE INDEX incidents_opened ON incidents (opened);
CREATE INDEX incidents_page_unsynced ON incidents (id) WHERE page_synced IS NOT NULL AND page_synced != status;

CREATE TABLE incident_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL,
    data TEXT
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

CREATE TABLE runbook_applications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    runbook TEXT NOT NULL,
    scope TEXT NOT NULL,
    incident_id TEXT REFERENCES incidents (id),
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    applied REAL NOT NULL,
    actions TEXT NOT NULL,
    context TEXT,
    rollback TEXT NOT NULL,
    rollback_due REAL,
    rolled_back REAL,
    rolled_back_by TEXT,
    rollback_report TEXT
);
CREATE INDEX runbook_applications_active ON runbook_applications (id) WHERE rolled_back IS NULL;
CREATE INDEX runbook_applications_incident ON runbook_applications (incident_id);
"""
