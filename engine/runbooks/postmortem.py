"""The postmortem draft of an incident, in Markdown: the facts Flightdeck recorded, laid out the way a postmortem is
written, with the analysis sections left for the people who handled it.

Facts come from the control plane (the incident, its time line, the runbook applications, the audit log: who did
what and why) and the trace store (the runs in the incident's window that match its scope, and what they cost), on
a store directory (control.db, traces.db) or a Postgres store alike. Everything is read; nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.store.rows import TypedRow
from engine.timefmt import clock, coarse_duration, timestamp

if TYPE_CHECKING:
    from engine.store.control_rows import AuditEntry, Incident, IncidentEvent, RunbookApplication
    from engine.store.reader_protocol import TraceReads

MAX_RUNS_LISTED = 50
_ENGINE_ACTORS = ("engine", "engine:", "runbook:", "timeout-policy")


def _usd(value: float) -> str:
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _is_person(actor: str | None) -> bool:
    return bool(actor) and not str(actor).startswith(_ENGINE_ACTORS)


def _signal_line(reading: Mapping[str, Any]) -> str:
    value = reading.get("value")
    shown = "no value" if value is None else f"{value:.4g}"
    extra = f", {reading['samples']} samples" if reading.get("samples") else ""
    peak = f"; peaked at {reading['peak']:.4g}" if reading.get("peak") is not None else ""
    return f"`{reading.get('condition', reading.get('signal'))}`: **{shown}**{extra}{peak}"


@dataclass(frozen=True, slots=True)
class AffectedRun(TypedRow):
    """A run active in an incident's window, as the draft lists it."""

    id: str
    hierarchy: str
    status: str
    started: float
    ended: float | None
    cost_usd: float
    tokens_in: int
    tokens_out: int
    model_calls: int
    tool_calls: int


@dataclass(frozen=True, slots=True)
class RunIdRow(TypedRow):
    run_id: str


@dataclass(frozen=True, slots=True)
class Total(TypedRow):
    total: float


def affected_runs(reader: TraceReads | None, incident: Incident, start: float,
                  end: float) -> list[dict[str, Any]]:
    """Runs active during [start, end] that match the incident's scope, plus those its detection named. `reader`
    reads the trace store, traces.db or Postgres (None: the store has no traces yet)."""
    if reader is None:
        return []
    scope = str(incident.scope)
    kind, _, target = scope.partition(":")
    # Runs that started before the window end and had not ended before it began (runs_started serves this).
    candidates = [row.as_dict() for row in reader.query_rows(
        AffectedRun, "SELECT id, hierarchy, status, started, ended, cost_usd, tokens_in, tokens_out, model_calls, "
                     "tool_calls FROM runs WHERE started <= ? AND (ended IS NULL OR ended >= ?) ORDER BY started",
        (end, start))]
    named = set((incident.context or {}).get("runs") or [])
    if kind == "hierarchy":
        matched = [r for r in candidates if r["hierarchy"] == target or r["id"] in named]
    elif kind in ("agent", "tool") and candidates:
        ids = [r["id"] for r in candidates]
        hits: set[str] = set()
        column = "agent" if kind == "agent" else "name"
        extra = "" if kind == "agent" else " AND kind = 'tool'"
        for offset in range(0, len(ids), 500):
            chunk = ids[offset:offset + 500]
            marks = ", ".join("?" * len(chunk))
            rows = reader.query_rows(RunIdRow, f"SELECT DISTINCT run_id FROM spans WHERE run_id IN ({marks}) "
                                               f"AND {column} = ?{extra}", (*chunk, target))
            hits.update(row.run_id for row in rows)
        matched = [r for r in candidates if r["id"] in hits or r["id"] in named]
    else:
        matched = candidates
    return matched


def spend_between(reader: TraceReads | None, start: float, end: float) -> float:
    """What every run active in the window cost (whole runs: a run's cost is not split by time)."""
    if reader is None:
        return 0.0
    rows = reader.query_rows(Total, "SELECT coalesce(sum(cost_usd), 0) AS total FROM runs WHERE started <= ? AND "
                                    "(ended IS NULL OR ended >= ?)", (end, start))
    return float(rows[0].total or 0.0) if rows else 0.0


def render(incident: Incident, timeline: Sequence[IncidentEvent],
           applications: Sequence[RunbookApplication], audit_rows: Sequence[AuditEntry],
           runs: Sequence[Mapping[str, Any]], *, window_start: float,
           window_end: float, spend_in_window: float, runbook_path: str | None, now: float) -> str:
    opened, resolved = incident.opened, incident.resolved
    end_text = f"resolved at {timestamp(resolved)}" if resolved else "still open"
    signals = incident.signals or []
    fired = [s for s in signals if s.get("fired")] or signals
    lines: list[str] = []
    add = lines.append

    add(f"# Postmortem draft: {incident.title}")
    add("")
    add(f"_Draft generated by Flightdeck on {timestamp(now)} from incident `{incident.id}`. The facts below were "
        f"recorded by the engine and the audit log; the sections under **Analysis** are for the people who handled "
        f"the incident to write. Edit freely._")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| Incident | `{incident.id}` |")
    add(f"| Severity | {incident.severity} |")
    add(f"| Status | {incident.status}" + (f" (resolved by {incident.resolved_by}: "
                                                 f"{_cell(incident.resolution)})" if resolved else "") + " |")
    add(f"| Runbook | `{incident.runbook}`" + (f" ({runbook_path})" if runbook_path else "") + " |")
    add(f"| Scope | `{incident.scope}` |")
    add(f"| Detected | {timestamp(opened)} |")
    ack = incident.acknowledged
    add("| Acknowledged | " + (f"{timestamp(ack)} by {incident.acknowledged_by} "
                                f"({coarse_duration(ack - opened)} after detection)" if ack else "never") + " |")
    add("| Resolved | " + (f"{timestamp(resolved)} ({coarse_duration(resolved - opened)} after detection)" if resolved
                           else "not yet") + " |")
    add(f"| Detection fired | {incident.fired} time(s); "
        + ("signal back to normal at " + timestamp(incident.cleared) if incident.cleared and not
           incident.firing else "the signal had not cleared when this draft was generated") + " |")
    add("")

    # Summary -------------------------------------------------------------------------------------------------
    add("## Summary")
    add("")
    cost_runs = sum(float(r.get("cost_usd") or 0.0) for r in runs)
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[run["status"]] = statuses.get(run["status"], 0) + 1
    status_text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda kv: -kv[1]))
    applied = [a for a in applications]
    if applied:
        first = applied[0]
        how = "automatically by the runbook" if str(first.actor).startswith("runbook:") else f"by {first.actor}"
        back = [a for a in applied if a.rolled_back]
        action_text = (f" The runbook's actions were applied {how} at {clock(first.applied)}"
                       + (f" and rolled back at {clock(back[-1].rolled_back)} by {back[-1].rolled_back_by}."
                          if len(back) == len(applied) else "; they are still in force."))
    elif incident.apply_mode == "suggest":
        action_text = " The runbook only suggests its actions, and nobody applied them."
    else:
        action_text = ""
    add(f"At {timestamp(opened)} the `{incident.runbook}` detection fired for `{incident.scope}`: "
        + "; ".join(_signal_line(s) for s in fired) + f". The incident is {end_text}.{action_text} "
        + (f"{len(runs)} run(s) in scope were active during the incident ({status_text}), costing {_usd(cost_runs)}; "
           f"all runs together spent {_usd(spend_in_window)} in the window." if runs else
           f"No runs in scope were recorded during the incident; all runs together spent {_usd(spend_in_window)} "
           f"in the window."))
    add("")

    # Detection ---------------------------------------------------------------------------------------------------
    add("## Detection")
    add("")
    add(f"What fired first (at {timestamp(opened)}):")
    add("")
    for reading in signals:
        add(f"- {_signal_line(reading)}" + (" (fired)" if reading.get("fired") else ""))
    last = incident.last_signals or []
    if last and last != signals:
        add("")
        add(f"Most recent values ({timestamp(incident.updated)}):")
        add("")
        for reading in last:
            add(f"- {_signal_line(reading)}")
    context = incident.context or {}
    named = [f"{k} `{v}`" for k, v in context.items() if k in ("hierarchy", "agent", "tool") and v]
    if named:
        add("")
        add("Seen in the events behind it: " + ", ".join(named) + ".")
    add("")

    # Time line -----------------------------------------------------------------------------------------------------
    add("## Time line")
    add("")
    add("| Time | What | Who | Details |")
    add("|---|---|---|---|")
    for ts, what, who, details in _merged_timeline(timeline, audit_rows):
        add(f"| {clock(ts)} | {_cell(what)} | {_cell(who)} | {_cell(details)} |")
    add("")

    # Actions -------------------------------------------------------------------------------------------------------
    add("## Actions applied and rolled back")
    add("")
    if not applications:
        suggested = incident.suggested or []
        if suggested:
            add("Nothing was applied. The runbook suggested:")
            add("")
            for step in suggested:
                add(f"- {step['description']}")
        else:
            add("The runbook changed nothing (it has no control actions, or they were never applied).")
        add("")
    for application in applications:
        add(f"### Application #{application.id}: {application.runbook} on `{application.scope}`")
        add("")
        reason = _cell(application.reason)
        add(f"Applied {timestamp(application.applied)} by **{application.actor}** (\"{reason}\"):")
        add("")
        for entry in application.actions:
            add(f"- {_entry_text(entry)}")
        add("")
        if application.rolled_back:
            add(f"Rolled back {timestamp(application.rolled_back)} by **{application.rolled_back_by}**:")
            add("")
            for item in application.rollback_report or []:
                mark = "left as an operator changed it" if item["outcome"] == "left" else item["outcome"]
                add(f"- {item['text']} ({mark})")
        else:
            add("**Still in force.** Roll back with `flightdeck runbooks rollback "
                f"{application.runbook} --scope {application.scope} --reason ...`.")
        add("")

    # Operator actions ----------------------------------------------------------------------------------------------
    add("## Operator actions (from the audit log)")
    add("")
    people = [r for r in audit_rows if _is_person(r.actor)]
    if people:
        add("| Time | Who | Action | Target | Why |")
        add("|---|---|---|---|---|")
        for row in sorted(people, key=lambda r: r.id):
            add(f"| {clock(row.ts)} | {_cell(row.actor)} | {_cell(row.action)} | {_cell(row.target)} | "
                f"{_cell(row.reason or '-')} |")
    else:
        add("No operator acted during the incident window.")
    add("")

    # Impact --------------------------------------------------------------------------------------------------------
    add("## Impact: runs affected")
    add("")
    add(f"Window: {timestamp(window_start)} to {timestamp(window_end)} (from the start of the detection window to "
        f"{'the resolution' if resolved else 'now'}).")
    add("")
    if runs:
        add(f"{len(runs)} run(s) in scope: {status_text}. Their cost: {_usd(cost_runs)} "
            f"({sum(int(r.get('model_calls') or 0) for r in runs)} model calls, "
            f"{sum(int(r.get('tool_calls') or 0) for r in runs)} tool calls).")
        add("")
        add("| Run | Hierarchy | Status | Started | Duration | Cost |")
        add("|---|---|---|---|---|---|")
        for run in runs[:MAX_RUNS_LISTED]:
            duration = (run["ended"] or window_end) - run["started"]
            add(f"| `{run['id']}` | {_cell(run['hierarchy'])} | {run['status']} | {clock(run['started'])} | "
                f"{coarse_duration(duration)} | {_usd(float(run.get('cost_usd') or 0.0))} |")
        if len(runs) > MAX_RUNS_LISTED:
            add(f"| ... | | | | | {len(runs) - MAX_RUNS_LISTED} more |")
    else:
        add("No runs in scope were recorded in the window.")
    add("")
    add("## Cost during the incident")
    add("")
    add(f"- Runs in scope: {_usd(cost_runs)}")
    add(f"- All runs active in the window: {_usd(spend_in_window)}")
    add("")

    # Analysis ------------------------------------------------------------------------------------------------------
    add("## Analysis")
    add("")
    add("### What happened and why")
    add("")
    add("_TODO: the root cause, in plain words. What made the signal fire? Why then?_")
    add("")
    add("### What went well")
    add("")
    add("_TODO: e.g. detection time, the runbook's actions, the page reaching the right person._")
    add("")
    add("### What went badly")
    add("")
    add("_TODO: e.g. time to acknowledge, actions that did not help, missing information in the runbook._")
    add("")
    add("### Where we got lucky")
    add("")
    add("_TODO_")
    add("")
    add("### Action items")
    add("")
    add("| Action | Owner | Due |")
    add("|---|---|---|")
    add("| _TODO: fix the cause_ | | |")
    add(f"| _TODO: does the `{incident.runbook}` runbook need a different threshold or action?_ | | |")
    add("")
    return "\n".join(lines)


def _merged_timeline(timeline: Sequence[IncidentEvent],
                     audit_rows: Sequence[AuditEntry]) -> list[tuple[float, str, str, str]]:
    """The incident's own time line (in the order it was written) with what operators did elsewhere in the same
    window (a flag set by hand, an approval decided) slotted in by time. An audit row written by the same actor at
    the same moment as a time line entry is that entry (the audit half of one transaction): shown once."""
    entries = [(float(e.ts), e.kind, e.actor, e.text) for e in timeline]
    seen = {(ts, who) for ts, _, who, _ in entries}
    extra = []
    for row in audit_rows:
        actor, ts = str(row.actor), float(row.ts)
        if not _is_person(actor) or row.action.startswith("incident_") or (ts, actor) in seen:
            continue
        reason = f": {row.reason}" if row.reason else ""
        extra.append((ts, f"operator: {row.action}", actor, f"{row.target or ''}{reason}"))
    merged: list[tuple[float, str, str, str]] = []
    pending = sorted(extra, key=lambda e: e[0])
    for entry in entries:
        while pending and pending[0][0] < entry[0]:
            merged.append(pending.pop(0))
        merged.append(entry)
    return merged + pending


def _entry_text(entry: Mapping[str, Any]) -> str:
    kind = entry["kind"]
    if kind == "flag":
        where = "global" if entry["scope"] == "global" else f"{entry['scope']}:{entry['target']}"
        if entry.get("noop"):
            return f"flag `{entry['name']}={entry['value']}` at {where}: already in force, nothing changed"
        before = entry.get("previous_value") or "unset"
        return f"flag `{entry['name']}={entry['value']}` at {where} (was {before}; flag #{entry['flag_id']})"
    if kind == "kill":
        where = "global" if entry["scope"] == "global" else f"{entry['scope']}:{entry['target']}"
        state = "new" if entry.get("created") else "already in force"
        return f"{entry['mode']} kill switch on {where} (#{entry['switch_id']}, {state})"
    if kind == "breaker":
        expiry = (f", reset at {clock(entry['expired'])} when its time ran out" if entry.get("expired") else
                  f", until {clock(entry['expires'])}" if entry.get("expires") else "")
        return f"breaker `{entry['key']}` forced open (override #{entry['override_id']}{expiry})"
    if kind == "budget":
        limits = ", ".join(f"{k}={v}" for k, v in entry["limits"].items())
        return f"run budget lowered to {limits} for {len(entry.get('runs', []))} run(s)"
    return kind
