"""The runbooks view's two tables (view 6; console/screens/runbooks.py is the view): their columns, and the sorts and
filter words of each (the incidents table and the runbooks table, each with its own sort; the filter applies to both).
Rows are keyed by incident and runbook id, so the view keeps its selection across a sort or a refresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.widgets import DataTable

from console.screens.arranged import Arrangement, Sort, words_of
from console.views_data.runbooks_feed import SEVERITY_ORDER, urgency

if TYPE_CHECKING:
    from engine.store.control_rows import Incident

# The runbooks table's STATE words, most urgent first (its "state" sort).
STATE_RANK = ("FIRING", "clearing", "open", "quiet · applied", "quiet")
INCIDENT_COLUMNS = (("INCIDENT", "id", 12), ("SEV", "sev", 4), ("STATUS", "status", 13), ("STATE", "firing", 8),
                    ("RUNBOOK", "runbook", 18), ("SCOPE", "scope", 20), ("SIGNALS", "signals", 28),
                    ("OPENED", "opened", 6), ("ACK BY", "ack", 10))
RUNBOOK_COLUMNS = (("RUNBOOK", "id", 20), ("SEV", "sev", 4), ("APPLY", "apply", 7), ("STATE", "state", 28),
                   ("DETECTS", "detects", 40))


def state_rank(words: str) -> int:
    return next((n for n, start in enumerate(STATE_RANK) if words.startswith(start)), len(STATE_RANK))


def new_table(table_id: str, columns: tuple[tuple[str, str, int], ...]) -> DataTable[Any]:
    """An empty table with these (label, key, width) columns, a row cursor."""
    table: DataTable[Any] = DataTable(id=table_id, cursor_type="row")
    for label, key, width in columns:
        table.add_column(label, key=key, width=width)
    return table


def incident_arrangement(state: Callable[[Incident], str]) -> Arrangement:
    """The incidents table's sorts (most urgent first by default) and filter words; `state`: its STATE column."""
    return Arrangement((
        Sort("urgency", urgency),
        Sort("severity", lambda i: (SEVERITY_ORDER.get(i.severity, 9), -(i.opened or 0))),
        Sort("newest first", lambda i: i.opened or 0, descending=True),
        Sort("runbook", lambda i: (str(i.runbook).lower(), -(i.opened or 0))),
        Sort("scope", lambda i: (str(i.scope).lower(), -(i.opened or 0))),
    ), lambda i: words_of(i.id, i.severity, i.status, state(i), i.runbook, i.scope, i.acknowledged_by))


def runbook_arrangement(configured: Callable[[str], int],
                        detection_state: Callable[[str], tuple[str, str]]) -> Arrangement:
    """The runbooks table's sorts (as configured by default) and filter words. `configured`: a runbook's place in
    the files (asked at each sort: the files are re-read), `detection_state`: its STATE column (words, style)."""
    return Arrangement((
        Sort("as configured", lambda rb: configured(rb.id)),
        Sort("state", lambda rb: (state_rank(detection_state(rb.id)[0]), rb.id)),
        Sort("severity", lambda rb: (SEVERITY_ORDER.get(rb.spec.severity, 9), rb.id)),
        Sort("name", lambda rb: str(rb.id).lower()),
    ), lambda rb: words_of(rb.id, rb.spec.severity, rb.spec.apply, detection_state(rb.id)[0],
                           ", ".join(c.describe() for c in rb.spec.detect)))
