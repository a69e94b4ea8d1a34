"""The runs table (view 1) without the view: its columns, one cell, the sort values and the filter. Pure functions
over RunItem rows, called by VirtualTable when it paints or sorts (console/screens/runs.py is the view)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rich.text import Text

from console.output import tokens
from console.views_data.runs_feed import RunItem
from console.widgets.fmt import cost_bar
from console.widgets.safe import printable
from console.widgets.status import PROBLEM_RUN_STATUSES, run_look, run_status_text
from console.widgets.virtual_table import Column
from engine.store.trace_rows import RunRow
from engine.timefmt import compact_age

COLUMNS = (
    Column("status", "STATUS", 13),
    Column("id", "RUN", 12),
    Column("hierarchy", "HIERARCHY", 14, flex=3, max_width=32),
    Column("tenant", "TENANT", 8, flex=2, max_width=24),
    Column("age", "AGE", 4, align="right"),
    Column("agents", "AGENTS", 6, align="right"),
    Column("model_calls", "MODEL", 5, align="right"),
    Column("tool_calls", "TOOLS", 5, align="right"),
    Column("tokens", "TOKENS", 7, align="right"),
    Column("cost", "COST", 9, flex=1, max_width=14, align="right"),
    Column("incidents", "INCIDENTS", 9, align="right", drop=1),
)
# Once a loaded run resumed after its engine died (durable runs), the table also shows RESUMED ("1× (3)": resumed
# once, 3 recorded steps replayed). It stays on screen at 100 columns: INCIDENTS goes first, then AGENTS (which only
# says something while a run is running).
COLUMNS_RESUMED = (
    *(Column("agents", "AGENTS", 6, align="right", drop=1) if c.key == "agents" else c for c in COLUMNS[:-1]),
    Column("resumed", "RESUMED", 8, align="right"),
    Column("incidents", "INCIDENTS", 9, align="right", drop=2),
)

# On a Postgres store the console shows the whole fleet: ENGINE says which engine ran each run. Narrow, and the first
# column to go on a narrow terminal (at 100 columns it is hidden; the engine filter, `e`, still works and the title
# names the engine it shows).
ENGINE_ARG = "engine="  # `ShowView("runs", "engine=ID")`: open the runs view on one engine's runs (engines view)
ENGINE_COLUMN = Column("engine", "ENGINE", 10, flex=1, max_width=20, drop=9)

# Once a loaded run is `completed (degraded)`, STATUS widens to say so in full (it never cuts the word); the flex
# columns narrow and droppable ones go first, AGENTS among them (it says something only while a run is running), so
# COST still fits at 100 columns.
DEGRADED_STATUS = Column("status", "STATUS", 22)


def run_columns(resumed: bool, degraded: bool, fleet: bool = False) -> tuple[Column, ...]:
    columns = COLUMNS_RESUMED if resumed else COLUMNS
    if fleet:  # after RUN: which engine, next to which run
        at = next(i for i, c in enumerate(columns) if c.key == "id") + 1
        columns = (*columns[:at], ENGINE_COLUMN, *columns[at:])
    # Narrow first what says least at 3 a.m.: AGENTS (only while a run runs); with RESUMED on screen as well, the
    # MODEL and TOOLS counts too (the run view has them), so COST and the run's id never leave a 100-column screen.
    droppable = {"agents", "model_calls", "tool_calls"} if degraded and resumed else {"agents"} if degraded else set()
    columns = tuple(replace(c, drop=c.drop or 1) if c.key in droppable else c for c in columns)
    return tuple(DEGRADED_STATUS if degraded and c.key == "status" else c for c in columns)


# Sort cycle: (column, reverse, words for the title). Reverse means descending on the column's sort value.
SORTS: tuple[tuple[str, bool, str], ...] = (
    ("age", True, "age, newest first"),
    ("status", False, "status, problems first"),
    ("cost", True, "cost, highest first"),
    ("tokens", True, "tokens, most first"),
    ("model_calls", True, "model calls, most first"),
    ("tool_calls", True, "tool calls, most first"),
    ("agents", True, "agents active, most first"),
    ("resumed", True, "resumes, most first"),
    ("hierarchy", False, "hierarchy, A to Z"),
    ("tenant", False, "tenant, A to Z"),
    ("engine", False, "engine, A to Z"),
    ("id", False, "run id"),
)


def budget_of(run: RunRow) -> float | None:
    """The run's cost budget, when the budgets feature records one in the run's attributes."""
    attrs = run.attributes
    if not isinstance(attrs, dict):
        return None
    budget = attrs.get("budget")
    value = budget.get("cost_usd") if isinstance(budget, dict) else attrs.get("budget_usd")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def run_cell(item: RunItem, column: str, now: float) -> Text | str:
    run = item.run
    if column == "status":
        return run_status_text(run.status, bool(item.degraded))
    if column == "id":
        return Text(printable(run.id), style="bold", end="")
    if column == "hierarchy":
        return Text(printable(run.hierarchy, limit=80), end="")
    if column == "tenant":
        tenant = run.tenant
        return Text(printable(tenant, limit=60), end="") if tenant else Text("-", style="dim", end="")
    if column == "age":
        return compact_age(now - (run.started or now))
    if column == "agents":
        return str(run.agents_active or 0) if run.status == "running" else Text("-", style="dim")
    if column == "model_calls":
        return str(run.model_calls or 0)
    if column == "tool_calls":
        return str(run.tool_calls or 0)
    if column == "tokens":
        return tokens((run.tokens_in or 0) + (run.tokens_out or 0))
    if column == "cost":
        return cost_bar(run.cost_usd or 0.0, budget_of(run))
    if column == "resumed":
        return resumed_cell(run)
    if column == "engine":
        return engine_cell(run.engine_id)
    if column == "incidents":
        from console.incident_slots import incidents_cell  # kept current by the header's incidents slot

        return incidents_cell(run.hierarchy)
    return ""


def engine_cell(engine_id: str | None) -> Text:
    """An engine id as the fleet's columns show it (cut with … by the table when wider than the column)."""
    if not engine_id:
        return Text("-", style="dim", end="")
    return Text(printable(engine_id, limit=60), end="")


def resumed_cell(run: RunRow) -> Text:
    """RESUMED: how often a durable run resumed after its engine died, and (in brackets) how many recorded steps
    it replayed instead of running them again."""
    if not run.resumed:
        return Text("-", style="dim", end="")
    return Text(f"{run.resumed}× ({run.replayed_steps})", style="bold cyan", end="")


def run_sort_value(item: RunItem, column: str) -> Any:
    run = item.run
    if column == "resumed":
        return (run.resumed or 0, run.replayed_steps or 0)
    if column == "age":
        return run.started or 0.0
    if column == "status":
        return run_look(run.status, bool(item.degraded)).severity
    if column == "cost":
        return run.cost_usd or 0.0
    if column == "tokens":
        return (run.tokens_in or 0) + (run.tokens_out or 0)
    if column in ("model_calls", "tool_calls", "agents"):
        key = "agents_active" if column == "agents" else column
        return getattr(run, key) or 0
    if column in ("hierarchy", "tenant", "id"):
        return str(getattr(run, column) or "").lower()
    if column == "engine":
        return str(run.engine_id or "").lower()
    return 0


@dataclass(frozen=True, slots=True)
class RunFilter:
    text: str = ""
    problems_only: bool = False
    engine: str | None = None  # only this engine's runs (a fleet on a Postgres store: `e` cycles through them)

    @property
    def empty(self) -> bool:
        return not self.text and not self.problems_only and self.engine is None


def run_matches(item: RunItem, flt: RunFilter) -> bool:
    if flt.problems_only and item.run.status not in PROBLEM_RUN_STATUSES and not item.degraded:
        return False
    if flt.engine is not None and item.run.engine_id != flt.engine:
        return False
    if flt.text:
        return flt.text in item.search
    return True


def next_engine(current: str | None, engines: list[str]) -> str | None:
    """The engine filter's next step: every engine (None), then each engine in order, then every engine again. An
    engine no longer among `engines` starts the cycle over."""
    ordered = sorted(set(engines))
    if not ordered:
        return None
    if current is None or current not in ordered:
        return ordered[0] if current is None else None
    at = ordered.index(current) + 1
    return ordered[at] if at < len(ordered) else None
