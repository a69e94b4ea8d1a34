"""IncidentResponse: what the runbook engine does when a runbook's detection fires or clears.

A mixin of RunbookEngine (engine/runbooks/runtime.py), run on its runbook thread: a firing opens or updates the
incident, applies the runbook's actions (apply: auto) or suggests them, and pages the owners when the incident opened;
a clearing is noted on the incident.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.runbooks import actions
from engine.runbooks.pages import owner_pages, public_context
from engine.runbooks.runtime_base import RunbookBase

if TYPE_CHECKING:
    from engine.runbooks.model import Runbook
    from engine.runbooks.watchdog import Transition
    from engine.store.control_rows import Incident


class IncidentResponse(RunbookBase):
    """Detections: the watchdog's transitions turned into incidents, applications, suggestions and pages."""

    def _evaluate(self) -> None:
        for transition in self.watchdog.evaluate(self.clock.time()):
            if transition.kind == "clear":
                self._cleared(transition)
            else:
                self._fired(transition)

    def _fired(self, t: Transition) -> None:
        assert self.incidents is not None
        runbook = t.runbook
        spec = runbook.spec
        summary = t.summary()
        incident, opened = self.incidents.open_or_update(
            runbook=runbook.id, title=spec.title, severity=spec.severity, apply_mode=spec.apply, scope=t.scope,
            readings=t.readings, context=public_context(t.context), summary=summary, actor=runbook.actor,
            engine_id=self.engine_id)
        self._emit("runbook.detected", runbook.id, {"runbook": runbook.id, "scope": t.scope,
                                                    "incident": incident.id, "opened": opened,
                                                    "transition": t.kind, "signals": t.readings})
        applied: list[str] = []
        if spec.apply == "auto":
            applied = self._auto_apply(runbook, t, incident, summary)
        elif opened:
            applied = self._suggest(runbook, t, incident)
        if opened:
            self._page_owners(runbook, t, incident, summary, applied)

    def _auto_apply(self, runbook: Runbook, t: Transition, incident: Incident, summary: str) -> list[str]:
        from engine.errors import FlightdeckError

        assert self.incidents is not None
        if not runbook.spec.control_actions:
            return []
        current = actions.active_application(self._db, runbook.id, t.scope)
        if current is not None:
            if current.incident_id != incident.id or incident.fired == 1:
                self.incidents.add_event(incident.id, "applied", runbook.actor,
                                         f"actions already in force (application #{current.id} by "
                                         f"{current.actor}); nothing more applied")
            return []
        try:
            application = actions.apply(self._api(runbook.actor), runbook, t.scope, t.context, source=runbook.actor,
                                        reason=f"{runbook.spec.title}: {summary}", running_runs=self._running_runs,
                                        incident_id=incident.id)
        except FlightdeckError as exc:
            current = actions.active_application(self._db, runbook.id, t.scope)
            if current is not None:  # another engine on the same store applied it first (apply checks under lock)
                self.incidents.add_event(incident.id, "applied", runbook.actor,
                                         f"actions already in force (application #{current.id} by "
                                         f"{current.actor}); nothing more applied")
                return []
            self.incidents.add_event(incident.id, "apply_failed", runbook.actor, f"could not apply: {exc}")
            self._emit("runbook.apply_failed", runbook.id, {"incident": incident.id, "error": str(exc)})
            return []
        self._refresh_applications()
        described = [s.description for s in application.steps]
        self._emit("runbook.applied", runbook.id, {"incident": incident.id, "application": application.id,
                                                   "scope": t.scope, "actions": described})
        return described

    def _suggest(self, runbook: Runbook, t: Transition, incident: Incident) -> list[str]:
        assert self.incidents is not None
        if not runbook.spec.control_actions:
            return []
        with self.incidents.transaction() as conn:  # a consistent view of what is in force now
            steps = actions.plan(runbook, t.context, conn, self._running_runs, include_pages=False)
        suggested = [s.as_dict() for s in steps]
        command = (f"flightdeck runbooks apply {runbook.id} --scope {t.scope} --incident {incident.id} "
                   f"--reason \"...\"")
        self.incidents.set_suggested(incident.id, suggested, command, runbook.actor)
        self._emit("runbook.suggested", runbook.id, {"incident": incident.id, "actions": suggested})
        return [f"suggested: {s.description}" for s in steps]

    def _cleared(self, t: Transition) -> None:
        assert self.incidents is not None
        incident = self.incidents.open_incident(t.runbook.id, t.scope)
        if incident is not None:
            self.incidents.cleared(incident.id, t.readings, t.runbook.actor)
        self._emit("runbook.cleared", t.runbook.id, {"runbook": t.runbook.id, "scope": t.scope,
                                                     "incident": incident.id if incident else None,
                                                     "signals": t.readings})

    def _page_owners(self, runbook: Runbook, t: Transition, incident: Incident, summary: str,
                     applied: list[str]) -> None:
        assert self.incidents is not None
        for page in owner_pages(runbook, t, incident, summary, applied, self.source):
            self.pager.send(page)
