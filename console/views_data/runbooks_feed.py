"""The runbooks view's data: RunbooksFeed reads, on the view's Poller thread, the open incidents
(engine.controls.incidents.list_incidents: a read-only connection), the runbook applications in force and -- once
per showing -- the runbooks in force on the store (engine.runbooks.loader.load_runbooks); on worker threads it
computes the dry run of a runbook (engine.runbooks.actions.plan) and performs the operator's actions through the
same APIs the CLI uses. See console/screens/runbooks.py for the view.

On a Postgres store (issue 16) the same feed reads the Postgres control plane: incidents and applications through the
console's read-only PgControlDB (ctx.source.control()), the shipped runbooks and those of $FLIGHTDECK_CONFIG's
[runbooks] dir (there is no STORE/runbooks; as `flightdeck runbooks list` there), and every action goes through
ControlAPI(ctx.location), which writes its audit row in the same transaction as the change, as on a store
directory."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from console.runbook_scopes import running_runs, scope_context

if TYPE_CHECKING:
    from pathlib import Path

    from console.screens.base import ConsoleContext
    from engine.store.control_rows import Incident, IncidentNote, RunbookApplication
    from engine.store.dialect import SqlConnection
    from engine.store.location import StoreLocation

TIMELINE_LINES = 6  # newest time line entries shown with the selected incident

SEVERITY_ORDER = {"sev1": 0, "sev2": 1, "sev3": 2, "sev4": 3}


def urgency(incident: Incident) -> tuple[bool, bool, int, float]:
    """What is on fire first: firing before quiet, not acknowledged before acknowledged, then by severity, then
    newest first (the incidents table's default sort)."""
    return (not incident.firing, incident.status != "open", SEVERITY_ORDER.get(incident.severity, 9),
            -(incident.opened or 0))


def sort_incidents(incidents: list[Incident]) -> list[Incident]:
    return sorted(incidents, key=urgency)


@dataclass(slots=True)
class RunbooksSnapshot:
    incidents: list[Incident]
    runbooks: list[Any]
    applications: list[RunbookApplication]
    problem: str | None = None  # the runbooks could not be loaded (shown, the incidents still are)
    # False when no engine is alive: nothing evaluates the signals, so "firing" is only what the last engine saw.
    watched: bool = True


@dataclass(slots=True)
class Plan:
    runbook: str
    scope: str | None
    incident_id: str | None
    steps: list[Any]
    error: str | None = None
    timeline: list[IncidentNote] = field(default_factory=list)  # the incident's newest time line entries


@dataclass(slots=True)
class RunbooksFeed:
    ctx: ConsoleContext
    runbooks: list[Any] | None = None
    problem: str | None = None
    seen: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def store_dir(self) -> Path | None:
        """The store directory, or None on a Postgres store (no STORE/runbooks: the shipped runbooks only)."""
        return None if self.ctx.postgres else self.ctx.store_dir

    def project_dir(self) -> Path | None:
        """The config's [runbooks] dir: STORE/config.toml's, or on Postgres (no config.toml) $FLIGHTDECK_CONFIG's,
        as the engines there read it. InputError (shown as the view's problem) for a bad config."""
        import os

        from engine.store.config import load_config
        from engine.store.pg_engine_store import engine_config

        if self.store_dir is None:
            return engine_config(None, os.environ).runbooks_dir
        return load_config(self.store_dir).runbooks_dir

    @property
    def control_target(self) -> Path | StoreLocation:
        """What ControlAPI opens: the store directory's path, or the Postgres store."""
        return self.ctx.location if self.ctx.postgres else self.ctx.store_dir

    def poll(self) -> RunbooksSnapshot | None:
        from engine.controls.applications import in_force as applications_in_force
        from engine.controls.incidents import IncidentStore, list_incidents

        with self.lock:
            if self.runbooks is None:
                from engine.errors import FlightdeckError
                from engine.runbooks.loader import load_runbooks

                try:
                    self.runbooks = load_runbooks(self.store_dir, project_dir=self.project_dir())
                except FlightdeckError as exc:  # a broken runbook file: say so, keep showing incidents
                    self.runbooks, self.problem = [], f"runbooks could not be loaded: {exc}"
            db = self.ctx.source.control()
            incidents: list[Incident]
            if self.store_dir is not None:
                incidents = list_incidents(self.store_dir, active_only=True, limit=200)
            else:  # Postgres: through the console's read-only session (None: no control plane yet, no incidents)
                incidents = IncidentStore(db).list(active_only=True, limit=200) if db is not None else []
            applications: list[RunbookApplication] = []
            if db is not None:
                try:
                    with db.reading() as conn:
                        applications = applications_in_force(conn)
                except Exception as exc:  # a control.db from before runbooks: no applications
                    if "no such table" not in str(exc):
                        raise
            watched = True
            if db is not None:  # by the console's clock, as the header's engines slot counts them
                from engine.store.control import STALE_AFTER_S

                now = self.ctx.clock()
                watched = any(e.stopped is None and now - float(e.heartbeat or 0) <= STALE_AFTER_S
                              for e in db.list_engines())
            key = (tuple((i.id, i.updated, i.status, i.firing) for i in incidents),
                   tuple(a.id for a in applications), self.problem, watched)
            if key == self.seen:
                return None
            self.seen = key
            return RunbooksSnapshot(sort_incidents(incidents), list(self.runbooks), applications, self.problem,
                                    watched)

    def invalidate(self) -> None:
        self.seen = None

    # -- the dry run and the actions (worker threads) ---------------------------------------------------------

    def plan(self, runbook: Any, scope: str | None, incident: Incident | None) -> Plan:
        incident_id = incident.id if incident else None
        if scope is None:
            return Plan(runbook.id, None, incident_id, [],
                        error="no open incident to take a scope from: p asks for one")
        context = scope_context(incident, scope, field="scope")
        if self.store_dir is None:  # Postgres: the console's read-only session on the control plane
            db = self.ctx.source.control()
            if db is None:
                return Plan(runbook.id, scope, incident_id, [],
                            error="no control plane on this database yet: nothing to compare with")
            with db.reading() as pg_conn:
                return self._plan_on(pg_conn, runbook, context, incident_id)
        from engine.store.files import CONTROL_DB, connect

        path = self.store_dir / CONTROL_DB
        if not path.is_file():
            return Plan(runbook.id, scope, incident_id, [], error="no control.db yet: nothing to compare with")
        conn = connect(path, read_only=True)
        try:
            return self._plan_on(conn, runbook, context, incident_id)
        finally:
            conn.close()

    def _plan_on(self, conn: SqlConnection, runbook: Any, context: dict[str, Any], incident_id: str | None) -> Plan:
        from engine.controls.incidents import recent_events
        from engine.runbooks import actions

        steps = actions.plan(runbook, context, conn, running_runs(self.ctx.location))
        timeline = recent_events(conn, incident_id, TIMELINE_LINES) if incident_id is not None else []
        return Plan(runbook.id, context["scope"], incident_id, steps, timeline=timeline)

    def incident_action(self, verb: str, incident_id: str, text: str | None) -> Incident:
        from engine.controls.api import ControlAPI
        from engine.runbooks.incidents import IncidentStore

        # ControlAPI opens the control plane for writing (control.db, or a Postgres session of its own: the
        # console's shared one is read-only); IncidentStore writes the change and its audit row in one transaction.
        with ControlAPI(self.control_target, self.ctx.operator, create=False) as api:
            store = IncidentStore(api.db)
            if verb == "ack":
                return store.acknowledge(incident_id, self.ctx.operator, text)
            if verb == "resolve":
                return store.resolve(incident_id, self.ctx.operator, text or "")
            return store.annotate(incident_id, self.ctx.operator, text or "")

    def apply(self, runbook: Any, scope: str, incident: Incident | None, reason: str) -> Any:
        from engine.controls.api import ControlAPI
        from engine.runbooks import actions

        context = scope_context(incident, scope, field="scope")
        with ControlAPI(self.control_target, self.ctx.operator) as api:
            return actions.apply(api, runbook, context["scope"], context, source="operator", reason=reason,
                                 running_runs=running_runs(self.ctx.location),
                                 incident_id=incident.id if incident else None)

    def rollback(self, application_ids: list[int], reason: str) -> list[Any]:
        from engine.controls.api import ControlAPI
        from engine.runbooks import actions

        with ControlAPI(self.control_target, self.ctx.operator, create=False) as api:
            return [actions.rollback(api, app_id, source="operator", reason=reason) for app_id in application_ids]
