"""What the runbooks view writes about an incident, a runbook and its dry run (the side pane and table cells):
pure functions from rows to rich Text, tested directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.widgets.safe import compact_json, printable
from engine.timefmt import clock_ms, compact_age

if TYPE_CHECKING:
    from console.views_data.runbooks_feed import Plan
    from engine.store.control_rows import Incident, RunbookApplication

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


def incident_detail(text: Text, incident: Incident, plan: Plan | None, now: float, *, suggested: bool,
                    state: str = "") -> None:
    """The selected incident: severity, state, what fired, who acknowledged it, and its newest time line entries
    (carried by the dry run `plan` when it is this incident's)."""
    sev = str(incident.severity)
    text.append(f"{printable(incident.id)} ", style="bold")
    text.append(f" {sev} ", style=SEVERITY_STYLE.get(sev, "bold"))
    text.append(f" {printable(incident.status)}  ")
    state = state or ("firing" if incident.firing else "quiet")
    text.append_text(state_text("signal quiet" if state == "quiet" else state))
    if state == "clearing":
        text.append(" (detection cleared, actions rolled back: resolve it)", style="yellow")
    elif state == "firing?":
        text.append(" (when the last engine watched; no engine is running now)", style="yellow")
    text.append(f"\n{printable(incident.title, limit=200)}\n")
    text.append(f"runbook {printable(incident.runbook)} on {printable(incident.scope)}\n")
    opened = incident.opened or now
    text.append(f"opened {clock_ms(opened)} ({compact_age(now - opened)} ago) · fired "
                f"{incident.fired or 1} time(s)\n")
    fired = readings_text(incident.signals, limit=300)
    last = readings_text(incident.last_signals, limit=300)
    if fired:
        text.append(f"fired on: {fired}\n")
    if last and last != fired:
        text.append(f"now: {last}\n")
    if incident.acknowledged_by:
        text.append(f"acknowledged by {printable(incident.acknowledged_by, limit=40)} at "
                    f"{clock_ms(incident.acknowledged)}\n")
    else:
        text.append("not acknowledged: press a\n", style="bold yellow")
    if suggested:
        text.append("suggested: press p to apply (you see the dry run first)\n", style="bold magenta")
    if plan is not None and plan.incident_id == incident.id and plan.timeline:
        text.append("time line (newest first):\n", style="bold")
        for entry in plan.timeline:
            text.append(f"  {clock_ms(entry.ts)} ", style="dim")
            text.append(f"{printable(entry.kind, limit=14):<13}")
            text.append(f"{printable(entry.actor, limit=24)}: ", style="bold")
            text.append(printable(entry.text, limit=90) + "\n")
    text.append("\n")


def runbook_detail(text: Text, runbook: Any, scope: str | None, state: tuple[str, str],
                   applied: list[RunbookApplication], plan: Plan | None, now: float) -> None:
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
        text.append(f"in force: application #{app.id} by {printable(app.actor, limit=30)} "
                    f"({compact_age(now - (app.applied or now))} ago): b rolls it back\n",
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


def state_text(state: str) -> Text:
    """An incident's state (engine.controls.incidents.incident_state) as a word and a colour."""
    if state == "firing":
        return Text("FIRING", style="bold red")
    if state == "firing?":  # firing when the last engine looked; no engine is alive to say whether it still is
        return Text("FIRING?", style="bold yellow")
    if state == "clearing":  # detection cleared, actions rolled back: waits for an operator to resolve it
        return Text("clearing", style="bold yellow")
    return Text(state or "quiet", style="green")


def incident_row(incident: Incident, now: float, *, suggested: bool, state: str = "") -> tuple[Any, ...]:
    """The incidents table's cells for one incident (columns INCIDENT ... ACK BY)."""
    sev = str(incident.severity or "")
    firing = bool(incident.firing)
    status = str(incident.status or "")
    status_text = Text(status, style="bold yellow" if status == "open" else "")
    if suggested:
        status_text = Text(("acked" if status == "acknowledged" else status) + "·suggest", style="bold magenta")
    return (
        Text(printable(incident.id, limit=16), style="bold"),
        Text(printable(sev, limit=6), style=SEVERITY_STYLE.get(sev, "")),
        status_text,
        state_text(state or ("firing" if firing else "quiet")),
        printable(incident.runbook, limit=40),
        printable(incident.scope, limit=60),
        readings_text(incident.signals or incident.last_signals),
        compact_age(now - (incident.opened or now)),
        printable(incident.acknowledged_by, limit=30) if incident.acknowledged_by
        else Text("-", style="dim"))


def runbook_row(runbook: Any, state: tuple[str, str]) -> tuple[Any, ...]:
    """The runbooks table's cells for one runbook (columns RUNBOOK, SEV, APPLY, STATE, DETECTS)."""
    spec = runbook.spec
    words, style = state
    return (Text(printable(runbook.id, limit=40), style="bold"),
            Text(spec.severity, style=SEVERITY_STYLE.get(spec.severity, "")),
            spec.apply, Text(words, style=style),
            printable(", ".join(c.describe() for c in spec.detect), limit=120))


# What view 6 cannot do on a Postgres store (issue 16), said on its hint line: as `flightdeck runbooks list` there,
# the shipped runbooks are in force, plus those of $FLIGHTDECK_CONFIG's [runbooks] dir (STORE/runbooks/*.md needs a
# store directory).
POSTGRES_HINT = "Postgres store: the shipped runbooks only (no STORE/runbooks)."
POSTGRES_CONFIG_HINT = ("Postgres store: the shipped runbooks and $FLIGHTDECK_CONFIG's [runbooks] dir "
                        "(no STORE/runbooks).")


def from_config(runbooks: list[Any]) -> bool:
    """Whether any runbook in force came from the config's [runbooks] dir (loader origin `config`)."""
    return any(getattr(r, "origin", None) == "config" for r in runbooks)


def postgres_hint(runbooks: list[Any]) -> str:
    return POSTGRES_CONFIG_HINT if from_config(runbooks) else POSTGRES_HINT


def title_text(incidents: list[Incident], runbook_count: int, *, read_only: bool,
               problem: str | None, watched: bool = True, shipped_only: bool = False) -> Text:
    """The view's two title lines: counts (open, firing, not acknowledged), then the problem or the keys.
    shipped_only: a Postgres store, whose runbooks are the shipped ones only."""
    firing = [i for i in incidents if i.firing]
    unacked = [i for i in incidents if i.status == "open"]
    title = Text(end="")
    title.append("RUNBOOKS & INCIDENTS ", style="bold")
    if not incidents:
        title.append("no open incidents", style="green")
    else:
        title.append(f"{len(incidents)} open", style="bold")
        title.append(" · ")
        if firing and not watched:
            title.append(f"{len(firing)} firing when last watched (no engine)", style="bold yellow")
        else:
            title.append(f"{len(firing)} firing", style="bold red" if firing else "green")
        if unacked:
            title.append(" · ")
            title.append(f"{len(unacked)} not acknowledged", style="bold yellow")
    title.append(f" · {runbook_count} {'shipped ' if shipped_only else ''}runbooks")
    if read_only:
        title.append(" · read-only: actions disabled", style="bold yellow")
    title.append("\n")
    if problem:
        title.append(printable(problem, limit=200), style="bold red")
    else:
        title.append("a ack · R resolve · n note (incident)   p apply · b roll back (runbook)   "
                     "tab switches tables", style="dim")
    return title


# -- the prompts' bodies ----------------------------------------------------------------------------------------

def incident_prompt_body(incident: Incident, operator: str) -> Text:
    body = Text(end="")
    body.append(f"{incident.id} · {incident.severity} · {incident.status} · "
                f"{printable(incident.title, limit=120)}\n")
    body.append(f"runbook {printable(incident.runbook)} on {printable(incident.scope)}\n")
    body.append(f"You act as {printable(operator, limit=30)}; this is written to the audit log.", style="dim")
    return body


def scope_prompt_body(runbook_id: str) -> Text:
    body = Text(end="")
    body.append(f"{runbook_id} has no open incident to take a scope from.\n")
    body.append("Type the scope: global, hierarchy:NAME, agent:NAME or tool:NAME. The dry run comes next; "
                "nothing changes before you confirm it.", style="dim")
    return body


def apply_prompt_body(runbook_id: str, scope: str, plan: Plan, operator: str) -> Text:
    """The dry run shown before applying: every step, and whether applying would be refused."""
    body = Text(end="")
    body.append(f"Dry run: applying {runbook_id} to {scope} would:\n", style="bold")
    for step in plan.steps:
        note = " (a page: not sent from the console)" if step.kind == "page" else \
            " (no change)" if step.noop else ""
        body.append(f"  - {printable(step.description, limit=200)}{note}\n",
                    style="bold red" if step.error else "")
    if plan.error:
        body.append(f"  {plan.error}\n", style="yellow")
    if any(s.error for s in plan.steps):
        body.append("Some actions cannot be resolved: applying will be refused.\n", style="bold red")
    body.append(f"\nYou act as {printable(operator, limit=30)}; one audited change, rolled back "
                f"with b.", style="dim")
    return body


def rollback_prompt_body(runbook_id: str, applied: list[RunbookApplication], operator: str) -> Text:
    """What rolling back restores, per application in force."""
    body = Text(end="")
    body.append(f"Rolling back {runbook_id} restores exactly what it replaced:\n", style="bold")
    for app in applied:
        body.append(f"application #{app.id} on {printable(app.scope)} by "
                    f"{printable(app.actor, limit=30)}:\n")
        for entry in app.actions or []:
            if isinstance(entry, dict):
                body.append(f"  - {printable(entry_text(entry), limit=200)}\n")
    body.append("\nAnything changed by someone since is left as it is (and reported).\n", style="dim")
    body.append(f"You act as {printable(operator, limit=30)}; written to the audit log.", style="dim")
    return body


def hint_text(incidents: list[Incident], suggested: Callable[[Incident], bool],
              selected: Incident | None) -> str:
    """The status bar's hint: the most urgent thing to do (an unacknowledged sev1/sev2 that is firing, a suggested
    runbook), else what the keys do for the selected incident (`selected`: None when the runbooks table is used)."""
    urgent = [i for i in incidents if i.firing and i.status == "open"
              and i.severity in ("sev1", "sev2")]
    if urgent:
        i = urgent[0]
        return (f"{i.severity} {i.id} ({i.runbook} on {i.scope}) is firing and not acknowledged: "
                f"select it and press a.")
    suggestions = [i for i in incidents if suggested(i)]
    if suggestions:
        i = suggestions[0]
        return f"Runbook {i.runbook} is suggested for {i.scope}: press p to see the dry run and apply it."
    if selected is not None:
        if selected.status == "open":
            return f"{selected.id}: a acknowledges · n adds a note · R resolves · p applies its runbook."
        return f"{selected.id}: R resolves it when it is over · n adds a note · b rolls back its runbook."
    if not incidents:
        return "Nothing is on fire. Select a runbook to read it and see what applying it would change."
    return "Select an incident (tab) for its runbook; p applies, b rolls back."
