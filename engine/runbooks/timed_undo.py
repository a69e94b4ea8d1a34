"""TimedUndo: the runbook engine's housekeeping after each burst of events (and each idle tick).

A mixin of RunbookEngine (engine/runbooks/runtime.py), run on its runbook thread: when control.db changed, the
applications in force are reread and pages follow incidents acknowledged or resolved since; actions whose time is up
expire and applications whose rollback is due are rolled back (postponed while the signal still fires, if the runbook
requires quiet), by the engine that opened the incident while it lives, else by any.
"""

from __future__ import annotations

from engine.clock import SYSTEM_CLOCK
from engine.controls.errors import ControlError
from engine.runbooks import actions
from engine.runbooks.pages import follow_up_pages
from engine.runbooks.runtime_base import RunbookBase
from engine.store.control_rows import RunbookApplication


class TimedUndo(RunbookBase):
    """Housekeeping: timed rollbacks, expiring actions, and pages that follow their incidents."""

    _version: int | None  # control.db's data version at the last housekeeping
    _postponed: set[int]  # applications whose rollback waits for a quiet signal (noted on the incident once)

    def _housekeeping(self) -> None:
        version = self._api(f"engine:{self.engine_id}").data_version()
        if version != self._version:
            self._version = version
            self._refresh_applications()
            self._sync_pages()
        now = self.clock.time()
        for application in list(self._applications):
            expiry = actions.next_expiry(application)
            runbook = self.runbooks.get(application.runbook)
            actor = runbook.actor if runbook else f"engine:{self.engine_id}"
            due = application.rollback_due
            if not ((expiry is not None and expiry <= now) or (due is not None and due <= now)) \
                    or not self._undoes(application):
                continue
            if expiry is not None and expiry <= now:
                done = actions.expire_actions(self._api(actor), application.id, source=actor if runbook else
                                              "engine")
                if done:
                    self._emit("runbook.action_expired", application.runbook,
                               {"application": application.id, "report": done})
                self._refresh_applications()
            if due is not None and due <= now:
                self._due_rollback(application, actor, runbook is not None)

    def _undoes(self, application: RunbookApplication) -> bool:
        """Whether this engine does the application's timed undo (expiries, rollback). Every engine on a store sees
        every application; the one that opened its incident does it while it lives (its own view of the signal
        decides `require_quiet`), else any: the first transaction wins, the others find it done."""
        assert self.incidents is not None
        if application.incident_id is None:
            return True
        opener = self.incidents.get(application.incident_id).engine_id
        if opener is None or opener == self.engine_id:
            return True
        from engine.store.control import STALE_AFTER_S

        # Heartbeats are the engines' wall-clock times: judged on the wall clock, not on this engine's `clock`.
        now = SYSTEM_CLOCK.time()
        return not any(e.id == opener and e.stopped is None and now - e.heartbeat <= STALE_AFTER_S
                       for e in self._api(f"engine:{self.engine_id}").engines())

    def _due_rollback(self, application: RunbookApplication, actor: str, is_runbook: bool) -> None:
        assert self.incidents is not None
        policy = application.rollback
        if policy.get("require_quiet") and self.watchdog.is_firing(application.runbook, application.scope):
            if application.id not in self._postponed:
                self._postponed.add(application.id)
                if application.incident_id:
                    self.incidents.add_event(application.incident_id, "rollback_postponed", actor,
                                             "automatic rollback is due but the signal is still firing; waiting "
                                             "for it to be quiet")
            return
        reason = (f"automatic rollback: {policy.get('after_s', 0) / 60:g} min after applying"
                  + (", and the signal is quiet" if policy.get("require_quiet") else ""))
        try:
            result = actions.rollback(self._api(actor), application.id, source=actor if is_runbook else "engine",
                                      reason=reason)
        except ControlError:  # another engine on the store rolled it back first (checked under the write lock)
            self._refresh_applications()
            return
        self._postponed.discard(application.id)
        self._refresh_applications()
        self._emit("runbook.rolled_back", application.runbook,
                   {"application": application.id, "scope": application.scope, "report": result.report})

    def _sync_pages(self) -> None:
        """Incidents acknowledged or resolved since their page: the page follows (PagerDuty acknowledge/resolve)."""
        assert self.incidents is not None
        for incident in self.incidents.unsynced_pages():
            for page in follow_up_pages(incident, self.source):
                self.pager.send(page)
            self.incidents.mark_synced(incident.id, incident.status)
