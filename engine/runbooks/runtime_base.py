"""RunbookBase: what the runbook engine's parts share (engine/runbooks/runtime.py).

RunbookEngine (runtime.py: its thread, hooks and pages) is built of mixins on this base: incident_response.py
(detections: open or update the incident, apply or suggest, page the owners) and timed_undo.py (housekeeping: timed
rollbacks, expiring actions, pages that follow incidents). Here: the state they read, set up by RunbookEngine, and
the plumbing they call (the control API per actor, trace events, the applications in force, the running runs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.runbooks import actions

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.controls.api import ControlAPI
    from engine.controls.incidents import IncidentStore
    from engine.runbooks.model import Runbook
    from engine.runbooks.pager import Pager
    from engine.runbooks.watchdog import Watchdog
    from engine.store.control_rows import RunbookApplication
    from engine.store.location import StoreLocation

log = logging.getLogger(__name__)
TracerEvent = Callable[..., None]  # Tracer.event(run_id, span_id, kind, *, agent=None, name=None, data=None)


class RunbookBase:
    """The shared state (set in RunbookEngine.__init__ and start()) and plumbing of the runbook engine's parts."""

    engine_id: str
    control_at: StoreLocation
    runbooks: dict[str, Runbook]
    clock: Clock
    watchdog: Watchdog
    pager: Pager
    source: str  # who the pages say sent them
    incidents: IncidentStore | None  # None until start()
    _tracer_event: TracerEvent
    _db: Any  # the connection every ControlAPI here shares (the engine's own API owns it)
    _apis: dict[str, ControlAPI]
    _applications: list[RunbookApplication]  # the runbook applications in force, as of the last refresh

    def _refresh_applications(self) -> None:
        self._applications = actions.active_applications(self._db)

    def _running_runs(self, hierarchy: str | None) -> list[str]:
        runs = self.watchdog.facts.run_hierarchy
        return sorted(r for r, h in runs.items() if hierarchy is None or h == hierarchy)

    def _api(self, actor: str) -> ControlAPI:
        api = self._apis.get(actor)
        if api is None:
            from engine.controls.api import ControlAPI

            api = self._apis[actor] = ControlAPI(self.control_at, actor, clock=self.clock, db=self._db)
        return api

    def _emit(self, kind: str, name: str | None, data: dict[str, Any]) -> None:
        try:
            self._tracer_event(None, None, kind, name=name, data=data)
        except Exception:  # the trace writer refusing an event must not stop runbooks
            log.exception("runbook engine could not record %s", kind)
