"""What the runbook engine's pages say: the Page objects for an incident's owners, an escalated approval and its
decision, an incident's acknowledge/resolve follow-up, and the time line text of a delivery attempt. Pure functions;
RunbookEngine (runtime.py) decides when to send them and records the outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.runbooks.loader import page_targets
from engine.runbooks.model import Runbook
from engine.runbooks.notify import Page
from engine.runbooks.pager import Attempt
from engine.runbooks.watchdog import Transition
from engine.store.control_rows import Incident

__all__ = ["approval_decided_page", "attempt_text", "escalation_details", "escalation_pages", "follow_up_pages",
           "owner_pages", "public_context"]


def public_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """A detection's context without its empty placeholders (what incidents and pages carry)."""
    return {k: v for k, v in context.items() if v not in (None, "", [])}


def owner_pages(runbook: Runbook, t: Transition, incident: Incident, summary: str, applied: list[str],
                source: str) -> list[Page]:
    """A trigger page to each of the runbook's page targets, for the incident `t` opened or updated."""
    context = public_context(t.context)
    details = {"runbook": runbook.id, "incident": incident.id, "scope": t.scope, "signals": t.readings,
               "context": context, "apply": runbook.spec.apply, "actions": applied,
               "runbook_file": str(runbook.path), "acknowledge": f"flightdeck incident ack {incident.id}"}
    signal = next((r["signal"] for r in t.readings if r.get("fired")), "")
    return [Page(target, "trigger", incident.id, f"{runbook.spec.title} ({t.scope}): {summary}",
                 severity, source, details, incident_id=incident.id,
                 title=runbook.spec.title, scope=t.scope, group=runbook.id, signal=signal)
            for targets, severity in page_targets(runbook) for target in targets]


def escalation_details(approval: Mapping[str, Any]) -> dict[str, Any]:
    approval_id = str(approval.get("id"))
    # Not the arguments nor the model's stated reason: they may hold customer data, and pages leave the company.
    details = {k: approval.get(k) for k in ("id", "run_id", "agent", "tool", "risk", "level", "deadline",
                                            "requested", "args_hash")}
    details["decide"] = (f"flightdeck approve {approval_id} --reason ... | "
                         f"flightdeck deny {approval_id} --reason ...")
    return details


def escalation_pages(approval: Mapping[str, Any], targets: list[str], source: str) -> list[Page]:
    """A trigger page to each escalation target for an approval that waited past its deadline."""
    approval_id = str(approval.get("id"))
    level = approval.get("level")
    summary = (f"approval {approval_id} escalated to level {level}: {approval.get('tool')} for agent "
               f"{approval.get('agent')} in run {approval.get('run_id')} has waited past its deadline")
    severity = "sev2" if approval.get("risk") == "high" else "sev3"
    details = escalation_details(approval)
    return [Page(target, "trigger", approval_id, summary, severity, source, details,
                 kind="approval", title=f"Approval waiting: {approval.get('tool')}",
                 scope=f"agent:{approval.get('agent')}", group=str(approval.get("tool") or ""))
            for target in targets]


def approval_decided_page(target: str, approval_id: str, status: Any, source: str) -> Page:
    """Resolves an escalated approval's page once it is decided."""
    return Page(target, "resolve", approval_id, f"approval {approval_id} was decided: {status}", "sev3", source,
                kind="approval")


def follow_up_pages(incident: Incident, source: str) -> list[Page]:
    """An incident acknowledged or resolved since its page: the page follows (PagerDuty acknowledge/resolve) to
    every target it went to. None for any other status."""
    status = incident.status
    action = {"acknowledged": "acknowledge", "resolved": "resolve"}.get(status)
    if action is None:
        return []
    who = incident.acknowledged_by if status == "acknowledged" else incident.resolved_by
    return [Page(target, action, incident.id, f"{incident.title} ({incident.scope}) {status} by {who}",
                 incident.severity, source, {"incident": incident.id, "status": status, "by": who},
                 incident_id=incident.id, title=incident.title, scope=incident.scope,
                 group=incident.runbook)
            for target in incident.paged_targets or []]


def attempt_text(attempt: Attempt) -> str:
    """The incident time line's line for a final delivery attempt."""
    page = attempt.page
    verb = {"trigger": "paged", "acknowledge": "acknowledged the page of", "resolve": "resolved the page of"}[
        page.action]
    if attempt.outcome == "sent":
        return f"{verb} {page.target} ({attempt.notifier_type}, {page.severity}) after {attempt.attempt} attempt(s)"
    return f"could not page {page.target} ({page.action}): {attempt.error}"
