"""The approvals table (view 3) without the view: its columns, one cell, the sort values, the filter words and the
detail pane's text, for approval requests and RECONCILE rows alike (a RECONCILE row's own are
approvals_reconcile.py). Pure functions, called by VirtualTable when it paints or sorts (console/screens/approvals.py
is the view).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from console.screens.approval_alerts import time_left
from console.screens.approvals_reconcile import reconcile_cell, reconcile_detail, reconcile_words
from console.views_data.approvals_data import ListedApproval
from console.views_data.reconcile_data import ReconcileItem
from console.widgets.safe import compact_json, literal, pretty_json, printable
from console.widgets.virtual_table import Column

if TYPE_CHECKING:
    from engine.store.control_rows import Approval

URGENT_S = 30.0

COLUMNS = (
    Column("left", "LEFT", 7, align="right"),
    Column("risk", "RISK", 6),
    Column("level", "LEVEL", 9),
    Column("agent", "AGENT", 10, flex=1, max_width=20),
    Column("tool", "TOOL", 12, flex=1, max_width=24),
    Column("arguments", "ARGUMENTS", 16, flex=4),
    Column("reason", "MODEL'S REASON", 14, flex=3, drop=2),
    Column("run", "RUN", 12, drop=1),
    Column("id", "ID", 11, drop=3),
)


def left_text(row: Approval, now: float) -> Text:
    left = float(row.deadline) - now
    style = "bold white on red" if left < URGENT_S else ("bold yellow" if left < 120 else "")
    return Text(time_left(float(row.deadline), now), style=style, end="")


def level_text(row: Approval) -> Text:
    level = int(row.level or 0)
    if level:
        return Text(f"escalated{level if level > 1 else ''}", style="bold magenta", end="")
    return Text("first", style="dim", end="")


RISK_STYLE = {"high": "bold red", "critical": "bold white on red", "medium": "yellow", "low": "green"}


def approval_cell(row: Approval | ReconcileItem, column: str, now: float) -> Text | str:
    if isinstance(row, ReconcileItem):
        return reconcile_cell(row, column, now)
    if column == "left":
        return left_text(row, now)
    if column == "risk":
        risk = row.risk or "-"
        return literal(risk, RISK_STYLE.get(str(risk).lower(), ""), limit=10)
    if column == "level":
        return level_text(row)
    if column == "arguments":
        return Text(compact_json(row.arguments, limit=300), no_wrap=True, end="")
    if column == "run":
        return literal(row.run_id, limit=40)
    if column in ("agent", "tool", "reason", "id"):
        return literal(getattr(row, column) or "", limit=300)
    return ""


RISK_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def approval_sort(row: ListedApproval | ReconcileItem, column: str) -> Any:
    """By `column`, then soonest deadline first (LEFT, the default); equal deadlines keep the store's order.
    RECONCILE rows have no deadline and nothing happens to their run until someone decides: they come first (the
    run that has waited longest on top), as the most escalated and the riskiest."""
    if isinstance(row, ReconcileItem):
        due: tuple[Any, ...] = (0, row.since, row.pos)
        if column in ("risk", "level"):
            return (-1, *due)
        if column == "requested":
            return (row.since, row.pos)
        if column in ("agent", "tool", "run", "id"):
            value = {"run": row.run_id, "id": row.key}.get(column, getattr(row, column, None))
            return (str(value or "").lower(), *due)
        return due
    due = (1, float(row.deadline or 0), row.pos)
    if column == "risk":
        return (RISK_ORDER.get(str(row.risk or "").lower(), 9), *due)
    if column == "level":
        return (-int(row.level or 0), *due)
    if column == "requested":
        return (float(row.requested or 0), row.pos)
    if column in ("agent", "tool", "run", "id"):
        value = row.run_id if column == "run" else getattr(row, column)
        return (str(value or "").lower(), *due)
    return due


def approval_words(row: Approval | ReconcileItem) -> str:
    if isinstance(row, ReconcileItem):
        return reconcile_words(row)
    return " ".join(str(v or "") for v in (row.id, row.agent, row.tool, row.run_id, row.risk, row.reason)).lower()


def approval_detail(row: Approval | ReconcileItem | None, now: float) -> Text:
    if row is None:
        return Text("No approval selected.", style="dim", end="")
    if isinstance(row, ReconcileItem):
        return reconcile_detail(row, now)
    text = Text(end="")
    text.append(f"{printable(row.id)}  ", style="bold")
    text.append(f"{printable(row.agent, limit=40)} wants to call ")
    text.append(printable(row.tool, limit=60), style="bold")
    text.append("  ·  ")
    text.append_text(left_text(row, now))
    text.append(" left · on timeout: ")
    text.append(printable(row.on_timeout), style="bold")
    text.append(f" · risk {printable(row.risk or '-')} · ")
    text.append_text(level_text(row))
    text.append(f" · args hash {printable(row.args_hash)[:12]}\n")
    text.append("Model's reason: ", style="dim")
    text.append(printable(row.reason or "(none given)", limit=600) + "\n")
    text.append("Arguments:\n", style="dim")
    text.append(pretty_json(row.arguments, limit=4000))
    return text
