"""Applying a runbook's actions, and rolling back exactly what was applied.

Apply = ONE control.db transaction: every flag, kill switch, breaker override and budget override with its own audit
row (the same rows ControlAPI writes), the application row recording what was done (row ids, previous values), a
`runbook_applied` audit row, and the incident's `applied` time line entry. A crash leaves all of it or none.

Rollback = one transaction too, and it touches only what is still as the runbook left it:
- a flag is restored to its previous value (or cleared) only while the runbook's flag row is still the active one;
- a kill switch the runbook created is released only if nobody released it yet; one that was already in force
  before the runbook is left alone;
- a forced-open breaker is reset only if no later override exists for that key;
- lowered run budgets are not raised again: they end with their runs (runs that start later are no longer lowered).
Everything not restored is reported, with who changed it, instead of being overwritten.

Every change goes through the control plane's public in-transaction functions (engine.controls.kill_switches,
flag_settings, overrides, applications, incidents, audit) inside one `ControlAPI.transaction()`, so superseding,
the previous_value column, the audit rows and their bindings are exactly what `flightdeck kill`, `safe-mode set`
and `breakers` do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.controls import applications, audit, flag_settings, incidents, kill_switches, overrides
from engine.controls.errors import ControlError
from engine.controls.flags import validate_flag
from engine.controls.labels import flag_scope_label, switch_label
from engine.errors import InputError
from engine.runbooks.model import Action, PlaceholderError, Runbook, render, short_duration
from engine.store.dialect import SqlConnection
from engine.timefmt import clock_text

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI
    from engine.store.control import ControlStore
    from engine.store.control_rows import BreakerOverride, FlagSetting, RunbookApplication

RunningRuns = Callable[[str | None], list[str]]  # hierarchy (None: every hierarchy) -> ids of runs in flight


@dataclass
class Step:
    """One action resolved for a scope and compared with what is in force now."""

    kind: str
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    noop: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "params": self.params, "noop": self.noop,
                "error": self.error}


@dataclass
class Application:
    id: int
    runbook: str
    scope: str
    actor: str
    applied: float
    entries: list[dict[str, Any]]
    steps: list[Step]
    incident_id: str | None = None


# ------------------------------------------------------------------------------------------------ planning

def plan(runbook: Runbook, context: Mapping[str, Any], conn: SqlConnection, running_runs: RunningRuns,
         *, include_pages: bool = True) -> list[Step]:
    """What applying the runbook in this context would do, against control.db as `conn` sees it now."""
    steps = []
    for action in runbook.spec.actions:
        if action.page is not None and not include_pages:
            continue
        try:
            steps.append(_plan_one(runbook, action, context, conn, running_runs))
        except (PlaceholderError, InputError) as exc:
            steps.append(Step(action.kind, f"{action.kind}: cannot be resolved: {exc}", error=str(exc)))
    return steps


def _plan_one(runbook: Runbook, action: Action, context: Mapping[str, Any], conn: SqlConnection,
              running_runs: RunningRuns) -> Step:
    if action.flag is not None:
        flag = action.flag
        name, value = validate_flag(render(flag.name, context), flag.value, flag.scope)
        target = render(flag.target_template, context) if flag.target_template else None
        where = flag_scope_label(flag.scope, target)
        current = flag_settings.find_active(conn, name, flag.scope, target)
        params: dict[str, Any] = {"name": name, "value": value, "scope": flag.scope, "target": target}
        if current is not None and current.value == value:
            return Step("flag", f"{name}={value} at {where}: already in force (flag #{current.id} by "
                                f"{_by(current)}), nothing to change", params, noop=True)
        now = "unset" if current is None else f"{current.value}, set by {_by(current)}"
        return Step("flag", f"set {name}={value} at {where} (now: {now})", params)
    if action.kill is not None:
        kill = action.kill
        target = render(kill.target_template, context) if kill.target_template else None
        label = switch_label(kill.scope, target)
        params = {"scope": kill.scope, "target": target, "mode": kill.mode}
        existing = kill_switches.find_active(conn, kill.scope, target, None, kill.mode)
        if existing is not None:
            return Step("kill", f"{kill.mode} switch on {label}: already active (#{existing.id} by "
                                f"{existing.operator}), nothing to change", params, noop=True)
        return Step("kill", f"set a {kill.mode} kill switch on {label}", params)
    if action.breaker is not None:
        breaker = action.breaker
        key = render(breaker.key, context)
        params = {"key": key, "action": breaker.action, "for_s": breaker.duration}
        last = overrides.latest_breaker_override(conn, key)
        now = "no override" if last is None else f"last override {last.action} by {last.operator}"
        until = f" for {short_duration(breaker.duration)}, then reset" if breaker.duration else ""
        return Step("breaker", f"force breaker {key} open{until} (now: {now})", params)
    if action.budget is not None:
        limits = {k: v for k, v in action.budget.run_budget.items()}
        hierarchy = context.get("hierarchy") if context.get("scope", "global") != "global" else None
        runs = running_runs(hierarchy)
        which = f"runs of {hierarchy}" if hierarchy else "runs"
        shown = ", ".join(f"{k}={v:g}" for k, v in limits.items() if v is not None)
        listed = (": " + ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")) if runs else ""
        return Step("budget", f"lower the run budget to {shown} for {len(runs)} {which} in flight{listed}, and for "
                              f"{which} that start while this is in force",
                    {"limits": limits, "hierarchy": hierarchy, "runs": runs})
    page = action.page
    assert page is not None
    targets = list(page.to if page.to is not None else runbook.spec.owner)
    severity = page.severity or runbook.spec.severity
    return Step("page", f"page {', '.join(targets)} ({severity})", {"targets": targets, "severity": severity,
                                                                   "message": page.message})


def _by(flag_row: FlagSetting) -> str:
    return flag_row.source if flag_row.source.startswith("runbook:") else flag_row.operator


# ------------------------------------------------------------------------------------------------ applying

def active_application(db: ControlStore, runbook: str, scope: str) -> RunbookApplication | None:
    with db.reading() as conn:
        return applications.in_force_for(conn, runbook, scope)


def active_applications(db: ControlStore) -> list[RunbookApplication]:
    with db.reading() as conn:
        return applications.in_force(conn)


def apply(api: ControlAPI, runbook: Runbook, scope: str, context: Mapping[str, Any], *, source: str, reason: str,
          running_runs: RunningRuns, incident_id: str | None = None) -> Application:
    """Apply the runbook's control actions (not its pages) as one audited change. ControlError if the runbook is
    already in force for this scope (roll that back first) or an action cannot be resolved; nothing is written then."""
    actor = api.actor_for(source)
    now = api.now()
    with api.transaction() as conn:
        current = applications.in_force_for(conn, runbook.id, scope)
        if current is not None:
            raise ControlError(f"runbook {runbook.id} is already in force for {scope} (application #{current.id} "
                               f"by {current.actor} at {clock_text(current.applied, now)}); roll it back first")
        steps = plan(runbook, context, conn, running_runs, include_pages=False)
        broken = [s for s in steps if s.error]
        if broken:
            raise ControlError(f"cannot apply {runbook.id} to {scope}: " + "; ".join(s.description for s in broken))
        entries = [_perform(conn, step, source, actor, reason, now, operator=api.operator) for step in steps]
        policy = runbook.spec.rollback
        rollback = policy.as_dict()
        due = now + policy.after if policy.after is not None else None
        application_id = applications.insert(
            conn, runbook=runbook.id, scope=scope, incident_id=incident_id, actor=actor, reason=reason, applied=now,
            actions_json=json.dumps(entries, default=str), context_json=json.dumps(_plain(context), default=str),
            rollback_json=json.dumps(rollback), rollback_due=due)
        audit.append(conn, ts=now, actor=actor, action="runbook_applied", target=f"{runbook.id}@{scope}",
                     after={"application": application_id, "actions": entries, "incident": incident_id},
                     reason=reason)
        if incident_id is not None:
            changed = [s.description for s in steps if not s.noop] or ["nothing needed changing"]
            incidents.add_event_json(conn, incident_id, now, "applied", actor,
                                     f"applied {runbook.id} (#{application_id}): " + "; ".join(changed),
                                     json.dumps({"application": application_id, "actions": entries}, default=str))
    return Application(application_id, runbook.id, scope, actor, now, entries, steps, incident_id)


def _plain(context: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in context.items() if v is not None}


def _perform(conn: SqlConnection, step: Step, source: str, actor: str, reason: str, now: float, *,
             operator: str) -> dict[str, Any]:
    p = step.params
    if step.kind == "flag":
        if step.noop:
            existing = flag_settings.find_active(conn, p["name"], p["scope"], p["target"])
            return {"kind": "flag", **p, "noop": True, "existing_id": existing.id if existing else None}
        flag = flag_settings.set_value(conn, p["name"], p["value"], p["scope"], p["target"], reason=reason,
                                       source=source, operator=operator, now=now)
        return {"kind": "flag", **p, "flag_id": flag.id, "previous_value": flag.previous_value}
    if step.kind == "kill":
        switch = kill_switches.find_active(conn, p["scope"], p["target"], None, p["mode"])
        if switch is not None:
            return {"kind": "kill", **p, "switch_id": switch.id, "created": False}
        switch = kill_switches.create(conn, scope=p["scope"], target=p["target"], run_id=None, mode=p["mode"],
                                      reason=reason, operator=actor, now=now)
        return {"kind": "kill", **p, "switch_id": switch.id, "created": True}
    if step.kind == "breaker":
        override = _breaker_override(conn, p["key"], "force_open", reason, actor, source, now)
        expires = now + p["for_s"] if p.get("for_s") else None
        return {"kind": "breaker", "key": p["key"], "action": "force_open", "override_id": override.id,
                "expires": expires, "expired": None}
    if step.kind == "budget":
        runs = [{"run_id": run_id, "override_id": _budget_override(conn, run_id, p["limits"], reason, actor,
                                                                   source, now)}
                for run_id in p["runs"]]
        return {"kind": "budget", "limits": p["limits"], "hierarchy": p["hierarchy"], "runs": runs}
    raise AssertionError(f"not a control action: {step.kind}")


def _breaker_override(conn: SqlConnection, key: str, action: str, reason: str, actor: str, source: str,
                      now: float) -> BreakerOverride:
    # The runbook is both the row's operator and the audit actor.
    return overrides.create_breaker_override(conn, key, action, reason=reason, operator=actor, source=source,
                                             actor=actor, now=now)


def _budget_override(conn: SqlConnection, run_id: str, limits: Mapping[str, Any], reason: str, actor: str,
                     source: str, now: float) -> int:
    # Lifted limits (None) are left out: a runbook only lowers budgets.
    row = overrides.create_budget_override(conn, run_id, {k: v for k, v in limits.items() if v is not None},
                                           reason=reason, operator=actor, source=source, actor=actor, now=now)
    return row.id


def extend_budget(api: ControlAPI, application_id: int, run_id: str, hierarchy: str | None, *,
                  source: str) -> int | None:
    """A run started while an application with a budget action is in force (for its hierarchy): lower its budget
    too. Returns the override id, or None when the application is no longer in force or has no budget action."""
    actor = api.actor_for(source)
    now = api.now()
    with api.transaction() as conn:
        row = applications.get_in_force(conn, application_id)
        if row is None:
            return None
        entries = row.actions  # parsed for this read: changed here and written back
        budget = next((e for e in entries if e["kind"] == "budget" and e.get("hierarchy") in (None, hierarchy)),
                      None)
        if budget is None or any(r["run_id"] == run_id for r in budget["runs"]):
            return None
        reason = f"{row.reason} (run started while {row.runbook} is in force)"
        override_id = _budget_override(conn, run_id, budget["limits"], reason, actor, source, now)
        budget["runs"].append({"run_id": run_id, "override_id": override_id})
        applications.set_actions(conn, application_id, json.dumps(entries, default=str))
    return override_id


# ------------------------------------------------------------------------------------------------ rolling back

@dataclass
class RollbackResult:
    application_id: int
    runbook: str
    scope: str
    report: list[dict[str, Any]]
    incident_id: str | None

    @property
    def left(self) -> list[dict[str, Any]]:
        """What was not restored because someone changed it since (or it was never the runbook's)."""
        return [r for r in self.report if r["outcome"] == "left"]


def rollback(api: ControlAPI, application_id: int, *, source: str, reason: str) -> RollbackResult:
    """Undo one application exactly (see the module docstring). ControlError if it is unknown or already undone."""
    actor = api.actor_for(source)
    now = api.now()
    with api.transaction() as conn:
        row = applications.get(conn, application_id)
        if row is None:
            raise ControlError(f"no runbook application #{application_id}")
        if row.rolled_back is not None:
            raise ControlError(f"runbook application #{application_id} ({row.runbook} on {row.scope}) was "
                               f"already rolled back by {row.rolled_back_by} at "
                               f"{clock_text(row.rolled_back, now)}")
        entries = row.actions
        report = [_undo(conn, entry, source, actor, reason, now, operator=api.operator) for entry in entries]
        applications.mark_rolled_back(conn, application_id, actor=actor, report_json=json.dumps(report),
                                      actions_json=json.dumps(entries, default=str), now=now)
        audit.append(conn, ts=now, actor=actor, action="runbook_rolled_back",
                     target=f"{row.runbook}@{row.scope}", before={"application": application_id},
                     after={"report": report}, reason=reason)
        if row.incident_id:
            restored = [r["text"] for r in report if r["outcome"] != "left"]
            left = [r["text"] for r in report if r["outcome"] == "left"]
            text = f"rolled back {row.runbook} (#{application_id}): " + ("; ".join(restored) or "nothing to undo")
            if left:
                text += ". Left as changed since: " + "; ".join(left)
            incidents.add_event_json(conn, row.incident_id, now, "rolled_back", actor, text,
                                     json.dumps({"application": application_id, "report": report, "reason": reason}))
    return RollbackResult(application_id, row.runbook, row.scope, report, row.incident_id)


def _undo(conn: SqlConnection, entry: dict[str, Any], source: str, actor: str, reason: str, now: float, *,
          operator: str) -> dict[str, Any]:
    kind = entry["kind"]
    if kind == "flag":
        where = f"{entry['name']} at {flag_scope_label(entry['scope'], entry['target'])}"
        if entry.get("noop"):
            return {"kind": kind, "outcome": "nothing", "text": f"{where} was already {entry['value']} before the "
                                                                f"runbook; left"}
        flag = flag_settings.get(conn, entry["flag_id"])
        if flag is None or flag.cleared is not None:
            now_row = flag_settings.find_active(conn, entry["name"], entry["scope"], entry["target"])
            if now_row is not None:
                change = f"set to {now_row.value} by {_by(now_row)} at {clock_text(now_row.created, now)}"
            elif flag is not None:
                change = f"cleared by {flag.cleared_by} at {clock_text(flag.cleared, now)}"
            else:
                change = "removed"
            return {"kind": kind, "outcome": "left", "text": f"{where} was {change} since; left as is"}
        if entry.get("previous_value") is None:
            flag_settings.clear(conn, flag, reason=reason, source=source, operator=operator, now=now)
            return {"kind": kind, "outcome": "restored", "text": f"cleared {where} (it was unset before)"}
        flag_settings.set_value(conn, entry["name"], entry["previous_value"], entry["scope"], entry["target"],
                                reason=reason, source=source, operator=operator, now=now)
        return {"kind": kind, "outcome": "restored", "text": f"restored {where} to {entry['previous_value']}"}
    if kind == "kill":
        label = switch_label(entry["scope"], entry["target"])
        if not entry.get("created"):
            return {"kind": kind, "outcome": "nothing", "text": f"the {entry['mode']} switch on {label} "
                                                                f"(#{entry['switch_id']}) was in force before the "
                                                                f"runbook; left"}
        switch = kill_switches.get(conn, entry["switch_id"])
        if switch is None or switch.released is not None:
            who = f" by {switch.released_by} at {clock_text(switch.released, now)}" if switch else ""
            return {"kind": kind, "outcome": "left", "text": f"{entry['mode']} switch #{entry['switch_id']} on "
                                                             f"{label} was already released{who}"}
        kill_switches.release(conn, switch, actor=actor, reason=reason, now=now)
        return {"kind": kind, "outcome": "restored", "text": f"released {entry['mode']} switch #{switch.id} on {label}"}
    if kind == "breaker":
        if entry.get("expired"):
            return {"kind": kind, "outcome": "nothing", "text": f"breaker {entry['key']} was already reset when its "
                                                                f"time ran out"}
        return _reset_breaker(conn, entry, source, actor, reason, now)
    if kind == "budget":
        runs = len(entry.get("runs", []))
        return {"kind": kind, "outcome": "nothing",
                "text": f"lowered budgets of {runs} run(s) stay until those runs end; new runs get their normal budget"}
    return {"kind": kind, "outcome": "nothing", "text": f"{kind}: nothing to undo"}


def _reset_breaker(conn: SqlConnection, entry: dict[str, Any], source: str, actor: str, reason: str,
                   now: float) -> dict[str, Any]:
    later = overrides.later_breaker_override(conn, entry["key"], entry["override_id"])
    if later is not None:
        return {"kind": "breaker", "outcome": "left",
                "text": f"breaker {entry['key']} was overridden since ({later.action} by {later.operator} at "
                        f"{clock_text(later.created, now)}); left as is"}
    _breaker_override(conn, entry["key"], "reset", reason, actor, source, now)
    return {"kind": "breaker", "outcome": "restored", "text": f"reset breaker {entry['key']}"}


def expire_actions(api: ControlAPI, application_id: int, *, source: str) -> list[dict[str, Any]]:
    """Undo the actions of an application whose own time ran out (a breaker forced open `for: 10m`). One
    transaction; returns what was done (empty when nothing was due)."""
    actor = api.actor_for(source)
    now = api.now()
    done: list[dict[str, Any]] = []
    with api.transaction() as conn:
        row = applications.get_in_force(conn, application_id)
        if row is None:
            return []
        entries = row.actions
        for entry in entries:
            if entry["kind"] == "breaker" and entry.get("expires") and not entry.get("expired") \
                    and entry["expires"] <= now:
                reason = f"{row.runbook}: forced open for {short_duration(entry['expires'] - row.applied)}, " \
                         f"time is up"
                result = _reset_breaker(conn, entry, source, actor, reason, now)
                entry["expired"] = now
                done.append(result)
        if not done:
            return []
        applications.set_actions(conn, application_id, json.dumps(entries, default=str))
        if row.incident_id:
            incidents.add_event_json(conn, row.incident_id, now, "action_expired", actor,
                                     "; ".join(r["text"] for r in done),
                                     json.dumps({"application": application_id, "report": done}))
    return done


def next_expiry(application: RunbookApplication) -> float | None:
    times = [e["expires"] for e in application.actions if e["kind"] == "breaker" and e.get("expires")
             and not e.get("expired")]
    return min(times) if times else None
