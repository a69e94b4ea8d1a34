"""The runbooks view's five operator flows (console/screens/runbooks.py): acknowledge, resolve and note an incident,
apply a runbook (after its dry run) and roll one back. Each is a prompt (text_prompt.py), then the action on a thread
worker through the view's feed (console/views_data/runbooks_feed.py, the same APIs the CLI uses), then a
notification (the view's on_worker_state_changed calls `finished`). The view declares the keys and actions
(BINDINGS, action_*) and calls these; the flows read its selection through its public attributes."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from console.runbook_scopes import parse_scope
from console.screens.runbooks_detail import (
    apply_prompt_body,
    incident_prompt_body,
    rollback_prompt_body,
    scope_prompt_body,
)
from console.screens.text_prompt import TextPrompt
from console.views_data import runbooks_selection as selection
from console.views_data.runbooks_selection import ActionRefused

if TYPE_CHECKING:
    from console.screens.runbooks import RunbooksView
    from console.views_data.runbooks_feed import Plan
    from engine.store.control_rows import Incident

ACTION_WORKER = "rb-action:"  # the prefix of the action workers' names

_INCIDENT_VERBS = {  # verb: (the prompt's words, its placeholder, the past tense in the notification)
    "ack": ("acknowledge", "reason (optional)", "acknowledged"),
    "resolve": ("resolve", "how it was resolved (required)", "resolved"),
    "note": ("add a note to", "the note (required)", "noted on"),
}


class RunbookFlows:
    def __init__(self, view: RunbooksView) -> None:
        self.view = view

    def writable(self, what: str) -> bool:
        if self.view.ctx.read_only:
            self.view.notify(f"Read-only console: cannot {what}. Restart without --read-only to act.",
                             severity="warning", markup=False)
            return False
        return True

    def act(self, label: str, work: Callable[[], str]) -> None:
        self.view.run_worker(selection.refusing(work), name=f"{ACTION_WORKER}{label}", group="flightdeck-write",
                             thread=True, exit_on_error=False)

    def finished(self, message: str | ActionRefused) -> None:
        """An action's worker succeeded (errors reach the app's one handler, Worker.StateChanged: a notification
        saying why): say what was done, or why it was refused."""
        if isinstance(message, ActionRefused):
            self.view.notify(message.reason, title="Cannot do that", severity="warning", markup=False)
        else:
            self.view.notify(str(message), title="Done", markup=False)

    def incident(self, verb: str) -> None:
        view = self.view
        words, placeholder, past = _INCIDENT_VERBS[verb]
        if not self.writable(f"{words} incidents"):
            return
        incident = view.selected_incident
        if incident is None:
            view.notify("No open incident to act on.", severity="warning", markup=False)
            return
        body = incident_prompt_body(incident, view.ctx.operator)

        def done(text: str | None) -> None:
            if text is None:
                return

            def work() -> str:
                row = view.feed.incident_action(verb, incident.id, text or None)
                message = f"{past} {row.id} as {view.ctx.operator}"
                if verb == "resolve":
                    still = view.applications_for(row.runbook, incident_id=row.id)
                    if still:
                        message += "; its runbook's actions are still in force: press b to roll them back"
                return message

            self.act(verb, work)

        view.app.push_screen(TextPrompt(f"{words.capitalize()} {incident.id}", body, placeholder=placeholder,
                                        required=verb != "ack", confirm=words), done)

    def apply(self) -> None:
        if not self.writable("apply runbooks"):
            return
        runbook, incident, scope = self.view.target()
        if runbook is None:
            self.view.notify("No runbook selected.", severity="warning", markup=False)
            return
        if scope is None:
            self.ask_scope(runbook)
            return
        self.confirm_apply(runbook, incident, scope)

    def ask_scope(self, runbook: Any) -> None:
        """A runbook with no open incident: ask where to apply it (as `runbooks apply ID --scope S`)."""
        body = scope_prompt_body(runbook.id)

        def done(text: str | None) -> None:
            if not text:
                return
            from engine.errors import InputError

            try:
                kind, target = parse_scope(text, field="scope")
            except InputError as exc:
                self.view.notify(str(exc), title="Cannot do that", severity="warning", markup=False)
                return
            self.confirm_apply(runbook, None, "global" if kind == "global" else f"{kind}:{target}")

        self.view.app.push_screen(TextPrompt(f"Apply runbook {runbook.id}: to which scope?", body,
                                             placeholder="e.g. hierarchy:deal-desk", required=True,
                                             confirm="shows the dry run"), done)

    def confirm_apply(self, runbook: Any, incident: Incident | None, scope: str) -> None:
        view = self.view

        async def go() -> None:
            plan = await self.plan_now(runbook, scope, incident)
            body = apply_prompt_body(runbook.id, scope, plan, view.ctx.operator)

            def done(reason: str | None) -> None:
                if not reason:
                    return

                def work() -> str:
                    return selection.applied_message(runbook.id, view.feed.apply(runbook, scope, incident, reason))

                self.act("apply", work)

            view.app.push_screen(TextPrompt(f"Apply runbook {runbook.id} to {scope}?", body,
                                            placeholder="reason (required, goes to the audit log)", required=True,
                                            confirm="applies"), done)

        view.run_worker(go(), name="runbook-apply-confirm", group="runbook-confirm", exclusive=True,
                        exit_on_error=False)

    async def plan_now(self, runbook: Any, scope: str, incident: Incident | None) -> Plan:
        worker = self.view.run_worker(partial(self.view.feed.plan, runbook, scope, incident),
                                      name="runbook-confirm-plan", group="flightdeck-read", thread=True,
                                      exit_on_error=False)
        return await worker.wait()

    def rollback(self) -> None:
        view = self.view
        if not self.writable("roll back runbooks"):
            return
        runbook, incident, scope = view.target()
        if runbook is None and incident is None:
            view.notify("No runbook selected.", severity="warning", markup=False)
            return
        runbook_id = runbook.id if runbook is not None else incident.runbook  # type: ignore[union-attr]
        applied = view.applications_for(runbook_id, scope, incident.id if incident else None)
        if not applied:
            view.notify(f"Runbook {runbook_id} is not in force" + (f" on {scope}" if scope else "") +
                        ": nothing to roll back.", severity="warning", markup=False)
            return
        body = rollback_prompt_body(runbook_id, applied, view.ctx.operator)
        ids = [int(a.id) for a in applied]

        def done(reason: str | None) -> None:
            if not reason:
                return

            def work() -> str:
                return selection.rolled_back_message(view.feed.rollback(ids, reason))

            self.act("rollback", work)

        view.app.push_screen(TextPrompt(f"Roll back {runbook_id}?", body,
                                        placeholder="reason (required, goes to the audit log)", required=True,
                                        confirm="rolls back"), done)
