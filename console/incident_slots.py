"""The incidents header slot and the runs table's INCIDENTS column (views 6 and 7 are in console/screens/registry.py).

The slot reads the open incidents (status open or acknowledged: a handful of rows, one indexed query) once a second
in the header's poller thread. It also keeps `OPEN_BY_HIERARCHY` (hierarchy -> open incidents whose scope names
it), which the runs table's INCIDENTS column reads: no per-run query, no scan of the runs.

console/header_slots.py lists the slot with the others.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.widgets.header import HeaderContext, SlotValue
from console.widgets.safe import printable
from engine.controls.incidents import active_summaries
from engine.errors import StoreError

if TYPE_CHECKING:
    from engine.store.control_rows import IncidentSummary

URGENT = ("sev1", "sev2")
_lock = threading.Lock()
OPEN_BY_HIERARCHY: dict[str, int] = {}
_known = False  # the slot has read incidents at least once (else the column says n/a)


def incident_hierarchy(incident: IncidentSummary) -> str | None:
    """The hierarchy an incident's scope names: `hierarchy:NAME`, or the hierarchy in its context (an agent or tool
    scope detected inside one hierarchy)."""
    scope = str(incident.scope or "")
    if scope.startswith("hierarchy:"):
        return scope.partition(":")[2] or None
    context: Any = incident.context
    if isinstance(context, str):
        import json

        try:
            context = json.loads(context)
        except ValueError:
            context = None
    if isinstance(context, dict) and isinstance(context.get("hierarchy"), str):
        return context["hierarchy"]
    return None


def _set_counts(incidents: list[IncidentSummary]) -> None:
    global _known
    counts: dict[str, int] = {}
    for incident in incidents:
        hierarchy = incident_hierarchy(incident)
        if hierarchy:
            counts[hierarchy] = counts.get(hierarchy, 0) + 1
    with _lock:
        OPEN_BY_HIERARCHY.clear()
        OPEN_BY_HIERARCHY.update(counts)
        _known = True


def incidents_cell(hierarchy: str | None) -> Text:
    """The runs table's INCIDENTS cell: open incidents whose scope names the run's hierarchy."""
    with _lock:
        if not _known:
            return Text("n/a", style="dim", end="")
        count = OPEN_BY_HIERARCHY.get(hierarchy or "", 0)
    if not count:
        return Text("-", style="dim", end="")
    return Text(f"{count} open", style="bold red", end="")


def incidents_sort_value(hierarchy: str | None) -> int:
    with _lock:
        return OPEN_BY_HIERARCHY.get(hierarchy or "", 0)


def open_incidents(ctx: HeaderContext) -> list[IncidentSummary]:
    if ctx.control is None:
        return []
    try:
        with ctx.control.reading() as conn:
            rows = active_summaries(conn)
    except StoreError as exc:
        if "no such table" in str(exc):
            return []  # a control.db from before incidents existed
        raise
    return rows


def incidents_slot(ctx: HeaderContext) -> SlotValue:
    incidents = open_incidents(ctx)
    _set_counts(incidents)
    if not incidents:
        return SlotValue("none open", "ok")
    firing = [i for i in incidents if i.firing]
    unacked = [i for i in incidents if i.status == "open"]
    if firing and not ctx.cache.get("engines", {}).get("alive", 1):
        # Firing is what an engine's detection saw; with no engine alive nothing watches: not a live alarm.
        text = f"{len(incidents)} open · {len(firing)} firing when last watched (no engine)"
        return SlotValue(text, "warn", short=f"{len(incidents)} ({len(firing)} firing?)")
    urgent = [i for i in firing if i.severity in URGENT]
    text = f"{len(incidents)} open · {len(firing)} firing"
    if unacked:
        text += f" · {len(unacked)} unacked"
    short = f"{len(incidents)} ({len(firing)} firing)"
    if urgent:
        worst = sorted(urgent, key=lambda i: (i.severity, -(i.opened or 0)))[0]
        # What is firing first, the incident's id last: at 100 columns the hint line cuts the end of the description
        # (never the keys), and "sev2 tool-failure-storm firing on tool:…" still says what is on fire.
        what = (f"{worst.severity} {printable(worst.runbook, limit=40)} firing on {printable(worst.scope, limit=40)}"
                f" (incident {printable(worst.id, limit=20)})")
        return SlotValue(text, "crit", short=short, alarm=f"{what}: press 6 for its runbook, a to acknowledge it.",
                         view="runbooks", alarm_here=f"{what}: select it for its runbook, a acknowledges it.")
    return SlotValue(text, "warn" if firing or unacked else "info", short=short)


