"""What the runbooks view works out from its snapshot (console/views_data/runbooks_feed.py) without touching a
widget: which applications are in force for a runbook, whether an incident's runbook is suggested, the STATE column,
what p and b act on, the runbook text to show, and how an operator's action reports a refusal. The view
(console/screens/runbooks.py) passes its selection in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from console.views_data.runbooks_feed import RunbooksSnapshot
    from engine.store.control_rows import Incident, RunbookApplication


@dataclass(frozen=True, slots=True)
class ActionRefused:
    reason: str


def refusing(work: Callable[[], str]) -> Callable[[], str | ActionRefused]:
    """`work` (an operator action, on a worker thread), with a refusal as asked (already acknowledged, already in
    force, empty reason...) returned as an ActionRefused that says why instead of raised."""
    def guarded() -> str | ActionRefused:
        from engine.controls.api import ControlError
        from engine.errors import InputError
        from engine.runbooks.incidents import IncidentError

        try:
            return work()
        except (IncidentError, ControlError, InputError) as exc:
            # Not a store problem (IncidentError is a StoreError, which the app's handler would show as "store
            # unreadable").
            return ActionRefused(str(exc))
    return guarded


def runbook_by_id(snapshot: RunbooksSnapshot | None, runbook_id: str | None) -> Any:
    runbooks = snapshot.runbooks if snapshot else []
    return next((r for r in runbooks if r.id == runbook_id), None)


def applications_for(snapshot: RunbooksSnapshot | None, runbook_id: str, scope: str | None = None,
                     incident_id: str | None = None) -> list[RunbookApplication]:
    """The runbook's applications in force (on `scope`); those linked to `incident_id` when there are any."""
    apps = snapshot.applications if snapshot else []
    out = [a for a in apps if a.runbook == runbook_id and (scope is None or a.scope == scope)]
    if incident_id is not None:
        linked = [a for a in apps if a.incident_id == incident_id]
        out = linked or out
    return out


def suggested(snapshot: RunbooksSnapshot | None, incident: Incident) -> bool:
    """A `suggest` runbook that fired and is not applied yet: the operator is expected to press p."""
    return (incident.apply_mode == "suggest" and incident.status != "resolved"
            and not applications_for(snapshot, incident.runbook, incident.scope))


def incident_state(snapshot: RunbooksSnapshot | None, incident: Incident) -> str:
    """firing, clearing (detection cleared, nothing of its runbook in force: resolved-pending), quiet or resolved;
    `firing?` when it was firing as the last engine saw it and no engine is alive to say whether it still is."""
    from engine.controls.incidents import incident_state as state_of

    state = state_of(incident, bool(applications_for(snapshot, incident.runbook, incident.scope)))
    return "firing?" if state == "firing" and snapshot is not None and not snapshot.watched else state


def detection_state(snapshot: RunbooksSnapshot | None, runbook_id: str) -> tuple[str, str]:
    """(words, style) for the runbooks table's STATE column."""
    mine = [i for i in (snapshot.incidents if snapshot else []) if i.runbook == runbook_id]
    applied = applications_for(snapshot, runbook_id)
    if any(i.firing for i in mine) and snapshot is not None and not snapshot.watched:
        return "FIRING? when last watched (no engine)", "bold yellow"
    if any(i.firing for i in mine):
        if any(suggested(snapshot, i) for i in mine):
            return "FIRING · suggested: press p", "bold red"
        return "FIRING" + (" · applied" if applied else ""), "bold red"
    if mine and not applied and any(incident_state(snapshot, i) == "clearing" for i in mine):
        return "clearing · resolve it", "bold yellow"
    if mine:
        return "open, quiet" + (" · applied" if applied else ""), "bold yellow"
    if applied:
        return "quiet · applied (b rolls back)", "yellow"
    return "quiet", "green"


def target(snapshot: RunbooksSnapshot | None, selected_incident: Incident | None,
           selected_runbook_id: str | None) -> tuple[Any, Incident | None, str | None]:
    """What p and b act on: (runbook, incident or None, scope or None). `selected_incident` is given when the
    incidents table was used last: its runbook and scope. Else the selected runbook, on the scope of its newest open
    incident (or of its application in force)."""
    if selected_incident is not None:
        return runbook_by_id(snapshot, selected_incident.runbook), selected_incident, selected_incident.scope
    runbook = runbook_by_id(snapshot, selected_runbook_id)
    if runbook is None:
        return None, None, None
    incident = next((i for i in (snapshot.incidents if snapshot else []) if i.runbook == runbook.id), None)
    if incident is not None:
        return runbook, incident, incident.scope
    applied = applications_for(snapshot, runbook.id)
    return runbook, None, applied[-1].scope if applied else None


def runbook_text(runbook: Any, incident: Incident | None) -> str:
    """The runbook's own text with the incident's placeholders filled in."""
    from console.runbook_scopes import fill_body

    context = {**(incident.context or {}), "scope": incident.scope} if incident else {}
    return fill_body(runbook.body, context).strip()


def applied_message(runbook_id: str, application: Any) -> str:
    changed = [s.description for s in application.steps if not s.noop]
    return (f"applied {runbook_id} to {application.scope} (application #{application.id}): "
            + ("; ".join(changed) or "nothing needed changing"))


def rolled_back_message(results: list[Any]) -> str:
    parts = []
    for result in results:
        left = len(result.left)
        parts.append(f"rolled back {result.runbook} on {result.scope} (#{result.application_id})"
                     + (f"; {left} item(s) changed since were left as they are" if left else ""))
    return "; ".join(parts)
