"""Moved to engine.controls.incidents (incidents are a control-plane concept). These names stay importable from here
during the issue-12 transition; new code imports engine.controls.incidents."""

from __future__ import annotations

from engine.controls.incidents import (
                                       ACTIVE,
                                       IncidentError,
                                       IncidentStore,
                                       add_event,
                                       add_event_json,
                                       list_incidents,
                                       recent_events,
)

__all__ = ["ACTIVE", "IncidentError", "IncidentStore", "add_event", "add_event_json", "list_incidents",
           "recent_events"]
