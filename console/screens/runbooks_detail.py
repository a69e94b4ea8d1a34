"""What the runbooks view writes about an incident, a runbook and its dry run (the side pane and table cells):
pure functions from rows to rich Text, tested directly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.widgets.fmt import clock_time, compact_age
from console.widgets.safe import compact_json, printable

if TYPE_CHECKING:
    from console.views_data.runbooks_feed import Plan

SEVERITY_STYLE = {"sev1": "bold white on red", "sev2": "bold red", "sev3": "bold yellow", "sev4": ""}


def readings_text(readings: Any, limit: int = 80) -> str:
    """`signal=value` for each reading (the fired ones first), e.g. `error_rate=0.42 (> 0.2)`."""
    if not isinstance(readings, list):
        return ""
    out = []
    for reading in sorted((r for r in readings if isinstance(r, dict)), key=lambda r: not r.get("fired")):
        value = reading.get("value")
        if value is None:
            continue
        shown = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
        text = f"{reading.get('signal')}={shown}"
        if reading.get("threshold") is not None and reading.get("op"):
            text += f" ({reading.get('op')} {reading.get('threshold')})"
        out.append(text)
    return printable(", ".join(out), limit=limit)



def entry_text(entry: dict[str, Any]) -> str:
    """One thing a runbook application changed, in words (for the roll-back confirmation)."""
    kind = entry.get("kind")
    if kind == "flag":
        where = entry.get("scope") if not entry.get("target") else f"{entry.get('scope')}:{entry.get('target')}"
        was = entry.get("previous_value")
        text = f"flag {entry.get('name')} = {compact_json(entry.get('value'), limit=40)} on {where}"
        if entry.get("noop"):
            return text + " (was already set: nothing to restore)"
        return text + (f" -> back to {compact_json(was, limit=40)}" if was is not None else " -> cleared")
    if kind == "kill":
        where = entry.get("scope") if not entry.get("target") else f"{entry.get('scope')}:{entry.get('target')}"
        return f"kill switch ({entry.get('mode')}) on {where} -> " + (
            "released" if entry.get("created") else "left (it existed before)")
    if kind == "breaker":
        return f"breaker {entry.get('key')} forced open -> override removed"
    if kind == "budget":
        runs = entry.get("runs") or []
        return f"budget {compact_json(entry.get('limits'), limit=60)} on {len(runs)} run(s) -> overrides removed"
    return compact_json(entry, limit=120)


def incident_detail(text: Text, incident: dict[str, Any], plan: Plan | None, now: float, *, suggested: bool) -> None:
    """The selected incident: severity, state, what fired, who acknowledged it, and its newest time line entries
    (carried by the dry run `plan` when it is this incident's)."""
    sev = str(incident.get("severity"))
    text.append(f"{printable(incident['id'])} ", style="bold")
    text.append(f" {sev} ", style=SEVERITY_STYLE.get(sev, "bold"))
    text.append(f" {printable(incident.get('status'))}  ")
    text.append("FIRING" if incident.get("firing") else "signal quiet",
                style="bold red" if incident.get("firing") else "green")
    text.append(f"\n{printable(incident.get('title'), limit=200)}\n")
    text.append(f"runbook {printable(incident.get('runbook'))} on {printable(incident.get('scope'))}\n")
    opened = incident.get("opened") or now
    text.append(f"opened {clock_time(opened)} ({compact_age(now - opened)} ago) · fired "
                f"{incident.get('fired') or 1} time(s)\n")
    fired = readings_text(incident.get("signals"), limit=300)
    last = readings_text(incident.get("last_signals"), limit=300)
    if fired:
        text.append(f"fired on: {fired}\n")
    if last and last != fired:
        text.append(f"now: {last}\n")
    if incident.get("acknowledged_by"):
        text.append(f"acknowledged by {printable(incident.get('acknowledged_by'), limit=40)} at "
                    f"{clock_time(incident.get('acknowledged'))}\n")
    else:
        text.append("not acknowledged: press a\n", style="bold yellow")
    if suggested:
        text.append("suggested: press p to apply (you see the dry run first)\n", style="bold magenta")
    if plan is not None and plan.incident_id == incident["id"] and plan.timeline:
        text.append("time line (newest first):\n", style="bold")
        for entry in plan.timeline:
            text.append(f"  {clock_time(entry.get('ts'))} ", style="dim")
            text.append(f"{printable(entry.get('kind'), limit=14):<13}")
            text.append(f"{printable(entry.get('actor'), limit=24)}: ", style="bold")
            text.append(printable(entry.get("text"), limit=90) + "\n")
    text.append("\n")


def runbook_detail(text: Text, runbook: Any, scope: str | None, state: tuple[str, str],
                   applied: list[dict[str, Any]], plan: Plan | None, now: float) -> None:
    """The selected runbook: what it detects, its applications in force, and the dry run of applying it to
    `scope` (`plan`, computed on a worker; "computing…" until it is this runbook's)."""
    spec = runbook.spec
    words, style = state
    text.append(f"{printable(runbook.id)}: {printable(spec.title, limit=120)}\n", style="bold")
    text.append(f"severity {spec.severity} · apply {spec.apply} · owner {', '.join(spec.owner) or '-'}\n")
    text.append("detection: ")
    text.append(words, style=style)
    text.append("\n")
    for condition in spec.detect:
        text.append(f"  - {printable(condition.describe(), limit=120)}\n")
    for app in applied:
        text.append(f"in force: application #{app['id']} by {printable(app.get('actor'), limit=30)} "
                    f"({compact_age(now - (app.get('applied') or now))} ago): b rolls it back\n",
                    style="bold yellow")
    text.append("\n")
    text.append(f"dry run on {printable(scope) if scope else '(no scope)'}:\n", style="bold")
    if plan is None or plan.runbook != runbook.id or (scope is not None and plan.scope != scope):
        text.append("  computing…\n", style="dim")
    elif plan.error:
        text.append(f"  {printable(plan.error, limit=200)}\n", style="yellow")
    else:
        for step in plan.steps:
            note = " (a page: not sent from the console)" if step.kind == "page" else \
                " (no change)" if step.noop else ""
            style = "bold red" if step.error else "dim" if step.noop or step.kind == "page" else ""
            text.append(f"  - {printable(step.description, limit=200)}{note}\n", style=style)
        if not plan.steps:
            text.append("  nothing to change\n", style="dim")
