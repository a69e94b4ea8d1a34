"""View 1: Runs. A live table of runs, newest first, updated by row key (no rebuild: cursor and scroll stay put).

Data path: RunsFeed (console/views_data/runs_feed.py: thread side, owned by the view's Poller) asks the store only
for what can have changed -- the newest page, the runs still running, and runs that stopped running since the last
poll -- and hands the rows whose figures changed to the UI thread, which upserts them into a VirtualTable (see
widgets/virtual_table.py for why not DataTable). Older runs are paged in from SQLite when the cursor nears the end
of what is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from console.output import tokens
from console.polling import Poller
from console.screens.actions import KILL_RUN, kill_palette_commands, start_kill
from console.screens.base import ConsoleContext, PaletteCommand, ShowView, View, focus_now
from console.screens.read_only import ReadOnlyGuard, write_bindings
from console.views_data.runs_feed import MAX_LOADED, RunItem, RunsFeed, RunsUpdate
from console.widgets.fmt import cost_bar
from console.widgets.safe import printable
from console.widgets.status import PROBLEM_RUN_STATUSES, run_look, run_status_text
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import Column, VirtualTable
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
        return run_status_text(run.status)
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
    if column == "incidents":
        from console.incident_slots import incidents_cell  # kept current by the header's incidents slot

        return incidents_cell(run.hierarchy)
    return ""


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
        return run_look(run.status).severity
    if column == "cost":
        return run.cost_usd or 0.0
    if column == "tokens":
        return (run.tokens_in or 0) + (run.tokens_out or 0)
    if column in ("model_calls", "tool_calls", "agents"):
        key = "agents_active" if column == "agents" else column
        return getattr(run, key) or 0
    if column in ("hierarchy", "tenant", "id"):
        return str(getattr(run, column) or "").lower()
    return 0


@dataclass(frozen=True, slots=True)
class RunFilter:
    text: str = ""
    problems_only: bool = False

    @property
    def empty(self) -> bool:
        return not self.text and not self.problems_only


def run_matches(item: RunItem, flt: RunFilter) -> bool:
    if flt.problems_only and item.run.status not in PROBLEM_RUN_STATUSES:
        return False
    if flt.text:
        return flt.text in item.search
    return True


class RunsView(ReadOnlyGuard, View):
    DEFAULT_CSS = """
    RunsView > #runs-title {
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    RunsView > #runs-filter {
        height: 1;
        border: none;
        padding: 0 1;
        background: $boost;
    }
    RunsView > #runs-filter:focus {
        border: none;
        background-tint: $foreground 5%;
    }
    """

    BINDINGS = [
        Binding("enter", "open_run", "Open", id="open_run",
                tooltip="Open the selected run: its span tree, the selected span's detail and its events"),
        Binding("slash", "start_filter", "Filter", id="filter_runs", priority=True,
                tooltip="Filter by run id, hierarchy, status or tenant (substring); Enter keeps it, Esc clears it"),
        Binding("p", "toggle_problems", "Problems", id="problems_only",
                tooltip="Show only runs that need attention (needs reconcile, failed, killed, over budget, "
                        "loop, abandoned, refused); press again for all runs"),
        Binding("s", "next_sort", "Sort", id="sort_runs",
                tooltip="Sort by the next column (age, status, cost, tokens, calls, resumes, hierarchy, tenant, id)"),
        Binding("S", "reverse_sort", "Reverse", id="reverse_sort", show=False,
                tooltip="Reverse the current sort order"),
        Binding("escape", "clear_filter", "Clear filter", id="clear_filter", show=False,
                tooltip="Clear the filter and the problems-only toggle"),
        *write_bindings(KILL_RUN),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="runs")
        self.feed = RunsFeed(ctx.source)
        self.filter = RunFilter()
        self.sort_index = 0
        self.loaded = False
        self.problem_ids: set[str] = set()  # loaded runs that need attention (kept up to date on every upsert)
        self.any_resumed = False  # a loaded run resumed after its engine died: the RESUMED column is shown
        self.paging = False
        self.exhausted = False
        self.poller: Poller[RunsUpdate] = Poller(self, name="runs", fetch=self.feed.poll, render=self.apply_update,
                                                 interval=ctx.poll_interval, report_error=ctx.report_error)
        self.hint = "Loading runs…"

    def compose(self) -> ComposeResult:
        yield TextLines(id="runs-title")
        box = Input(placeholder="filter: run id, hierarchy, status or tenant (Enter keeps, Esc clears)",
                    id="runs-filter", compact=True)
        box.display = False
        yield box
        yield VirtualTable(COLUMNS, cell=run_cell, sort_value=run_sort_value, matches=run_matches,
                           now=self.ctx.clock, sort_column=SORTS[0][0], reverse=SORTS[0][1],
                           empty_text="loading runs…", id="runs-table")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#runs-table", VirtualTable)

    def on_mount(self) -> None:
        self._update_title()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start_filter" and isinstance(self.screen.focused, Input):
            return False  # "/" typed into a text box is a character (priority binding: see MainScreen.BINDINGS)
        state = self.read_only_state(action)
        return True if state is None else state

    def on_unmount(self) -> None:
        self.poller.stop()
        self.feed.close()

    # -- activation ---------------------------------------------------------------------------------------------

    def on_activate(self, arg: str | None) -> None:
        self.poller.start()
        self.resume_clock(self._tick)

    def on_deactivate(self) -> None:
        self.poller.stop()
        self.pause_clock()

    def _tick(self) -> None:
        self.table.refresh()  # ages move with the clock; only the visible lines repaint

    def focus_default(self) -> None:
        focus_now(self.table)

    # -- data ---------------------------------------------------------------------------------------------------

    def _upsert(self, rows: list[RunItem]) -> None:
        for item in rows:
            if item.run.status in PROBLEM_RUN_STATUSES:
                self.problem_ids.add(item.run.id)
            else:
                self.problem_ids.discard(item.run.id)
            if item.run.resumed and not self.any_resumed:
                self.any_resumed = True
                self.table.set_columns(COLUMNS_RESUMED)
        self.table.upsert([(item.run.id, item) for item in rows])

    def apply_update(self, update: RunsUpdate) -> None:
        if update.rows:
            self._upsert(update.rows)
        if update.first:
            self.loaded = True
            self.exhausted = update.exhausted
        self._update_title()
        self._update_hint()

    def _load_older(self) -> None:
        if self.paging or self.exhausted or not self.loaded:
            return
        self.paging = True
        self.run_worker(self.feed.older, name="runs-older", group="flightdeck-read", thread=True,
                        exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "runs-older":
            return
        if event.state == WorkerState.SUCCESS:
            update: RunsUpdate = event.worker.result  # type: ignore[assignment]
            self.paging = False
            self.exhausted = update.exhausted
            if update.rows:
                self._upsert(update.rows)
            self._update_title()
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.paging = False  # the error itself reaches the app's handler

    @on(VirtualTable.NearEnd, "#runs-table")
    def _near_end(self) -> None:
        self._load_older()

    @on(VirtualTable.CursorMoved, "#runs-table")
    def _cursor_moved(self) -> None:
        self._update_hint()

    @on(VirtualTable.RowSelected, "#runs-table")
    def _row_selected(self, event: VirtualTable.RowSelected) -> None:
        self.post_message(ShowView("run", str(event.key)))

    # -- title, empty state, hint -------------------------------------------------------------------------------

    def _update_title(self) -> None:
        table = self.table
        _, _, sort_words = SORTS[self.sort_index]
        if table.reverse != SORTS[self.sort_index][1]:
            sort_words = sort_words.split(",")[0] + ", reversed"
        title = Text(end="")
        title.append("RUNS ", style="bold")
        loaded = table.total_count
        if self.filter.empty:
            title.append(f"{loaded:,} loaded")
        else:
            title.append(f"{table.row_count:,} of {loaded:,} shown", style="bold")
            if self.filter.problems_only:
                title.append(" · problems only", style="bold yellow")
            if self.filter.text:
                title.append(" · filter ")
                title.append(f'"{printable(self.filter.text, limit=40)}"', style="bold")
        title.append(f" · sorted by {sort_words}")
        if not self.exhausted and self.loaded:
            title.append(" · older runs load as you scroll", style="dim")
        elif loaded >= MAX_LOADED:
            title.append(f" · newest {MAX_LOADED:,} kept: `flightdeck runs` for older", style="dim")
        self.query_one("#runs-title", TextLines).update(title)
        if not self.loaded:
            table.empty_text = "loading runs…"
        elif loaded == 0:
            table.empty_text = "no runs yet: start one with `flightdeck run deal-desk`"
        else:
            what = []
            if self.filter.problems_only:
                what.append("need attention")
            if self.filter.text:
                what.append(f'match "{printable(self.filter.text, limit=40)}"')
            table.empty_text = (f"no loaded runs {' and '.join(what)} (of {loaded:,}): press Esc to clear the "
                                f"filter")
        table.refresh()

    def _update_hint(self) -> None:
        table = self.table
        if not self.loaded:
            self.hint = "Loading runs…"
            return
        if table.total_count == 0:
            self.hint = "No runs yet: start one with `flightdeck run deal-desk`; they appear here as they run."
            return
        if table.row_count == 0:
            self.hint = "Nothing matches the filter: press Esc to show every run."
            return
        key = table.cursor_key
        item = table.get(key) if key is not None else None
        run = item.run if item is not None else None
        if run is not None and run.status == "needs_reconcile":
            self.hint = (f"Run {key} waits: a side effect's outcome is unknown. Check it, then "
                         f"`flightdeck reconcile {key}`; Enter shows the run.")
            return
        if run is not None and run.status in PROBLEM_RUN_STATUSES:
            word = run_look(run.status).word
            self.hint = f"Run {key} ended {word}: press Enter to see which span failed and why."
            return
        problems = len(self.problem_ids)
        if problems and not self.filter.problems_only:
            self.hint = f"{problems} runs need attention: press p to list only them, Enter to open one."
            return
        if run is not None and run.status == "running":
            self.hint = f"Run {key} is running: press Enter to watch it live."
            return
        if run is not None and run.resumed:
            self.hint = (f"Run {key} resumed {run.resumed}× after its engine died; {run.replayed_steps} recorded "
                         f"steps replayed, not run again: Enter shows them.")
            return
        self.hint = "Enter opens the selected run · / filters · p shows only problems · s changes the sort."

    # -- actions ------------------------------------------------------------------------------------------------

    def action_open_run(self) -> None:
        key = self.table.cursor_key
        if key is None:
            self.notify("No run selected: the table is empty.", severity="warning", markup=False)
            return
        self.post_message(ShowView("run", str(key)))

    def action_start_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.display = True  # inline, not a CSS class: focusable before the next key arrives
        box.value = self.filter.text
        focus_now(box)

    def action_clear_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        box.value = ""
        box.display = False
        self._set_filter(RunFilter())
        focus_now(self.table)

    def action_toggle_problems(self) -> None:
        self._set_filter(RunFilter(self.filter.text, not self.filter.problems_only))

    def action_next_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        if SORTS[self.sort_index][0] == "resumed" and not self.any_resumed:  # no such column on screen
            self.sort_index = (self.sort_index + 1) % len(SORTS)
        column, reverse, _ = SORTS[self.sort_index]
        self.table.set_sort(column, reverse)
        self._update_title()

    def action_reverse_sort(self) -> None:
        self.table.set_sort(self.table.sort_column, not self.table.reverse)
        self._update_title()

    def _set_filter(self, flt: RunFilter) -> None:
        self.filter = flt
        self.table.set_filter(None if flt.empty else flt)
        self._update_title()
        self._update_hint()

    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._set_filter(RunFilter(event.value.strip().lower(), self.filter.problems_only))

    @on(Input.Submitted, "#runs-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.query_one("#runs-filter", Input).display = False
        focus_now(self.table)

    def palette_commands(self) -> list[PaletteCommand]:
        commands = [
            PaletteCommand("Runs: filter…", "Filter runs by id, hierarchy, status or tenant", self.action_start_filter),
            PaletteCommand("Runs: show only problems" if not self.filter.problems_only else "Runs: show all runs",
                           "Needs reconcile, failed, killed, over budget, loop, abandoned and refused runs",
                           self.action_toggle_problems),
            PaletteCommand("Runs: next sort column", "Cycle age, status, cost, tokens, calls, hierarchy, tenant",
                           self.action_next_sort),
            PaletteCommand("Runs: reverse sort", "Reverse the current sort order", self.action_reverse_sort),
        ]
        if not self.filter.empty:
            commands.append(PaletteCommand("Runs: clear filter", "Show every loaded run", self.action_clear_filter))
        key = self.table.cursor_key
        if key is not None:
            commands.insert(0, PaletteCommand(f"Runs: open run {key}", "Span tree, detail and events of the "
                                              "selected run", self.action_open_run))
        return commands + kill_palette_commands(self, self.ctx, "Kill switch on the selected run",
                                                "Preview, mode, reason", self.action_kill_selected)

    def action_kill_selected(self) -> None:
        key = self.table.cursor_key
        if key is None:
            self.notify("No run selected: nothing to kill.", severity="warning", markup=False)
            return
        item = self.table.get(key)
        status = item.run.status if item is not None else None
        if status != "running":
            self.notify(f"Run {printable(key, limit=30)} is not running (status {printable(status)}); "
                        f"there is nothing to stop.", title="Kill switch", severity="warning", markup=False)
            return
        start_kill(self, self.ctx, "run", str(key))
