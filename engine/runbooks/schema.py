"""The runbook engine's row vocabulary: incident severities and statuses, and apply modes (the values control.db's
CHECK constraints allow). The DDL of its tables (incidents, incident_events, runbook_applications) is the store's
(engine.store.runbooks_ddl, CONTROL_MIGRATIONS' v3); these names are defined there, next to the constraints that use
them, and re-exported here for the runbook engine and its callers."""

from __future__ import annotations

from engine.store.runbooks_ddl import APPLY_MODES, INCIDENT_STATUSES, RUNBOOKS_V3, SEVERITIES

__all__ = ["APPLY_MODES", "INCIDENT_STATUSES", "RUNBOOKS_V3", "SEVERITIES"]
