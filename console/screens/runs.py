"""View 1: Runs. A live table of runs, newest first, updated by row key (no rebuild: cursor and scroll stay put).

Data path: RunsFeed (console/views_data/runs_feed.py: thread side, owned by the view's Poller) asks the store only
for what can have changed -- the newest page, the runs still running, and runs that stopped running since the last
poll -- and hands the rows whose figures changed to the UI thread, which upserts them into a VirtualTable (see
widgets/virtual_table.py for why not DataTable). Older runs are paged in from SQLite when the cursor nears the end
of what is loaded. The table's columns, cells, sort values and filter are console/screens/runs_table.py.
"""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from console.polling import Poller
from console.screens.actions import KILL_RUN, kill_palette_commands, start_kill
from console.screens.base import ConsoleContext, PaletteCommand, ShowView, View, focus_now
from console.screens.read_only import ReadOnlyGuard, write_bindings
from console.screens.resume import RESUME_RUN, may_resume, start_resume
from console.screens.runs_table import (
    COLUMNS,
    ENGINE_ARG,
    SORTS,
    RunFilter,
    next_engine,
    run_cell,
    run_columns,
    run_matches,
    run_sort_value,
)
from console.views_data.runs_feed import MAX_LOADED, RunItem, RunsFeed, RunsUpdate
from console.widgets.safe import printable
from console.widgets.status import PROBLEM_RUN_STATUSES, degraded_summary, run_look
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import VirtualTable

__all__ = ["COLUMNS", "RunsView", "run_cell", "run_matches", "run_sort_value"]


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
        Binding("e", "cycle_engine", "Engine", id="runs_engine",
                tooltip="A fleet on a Postgres store: show one engine's runs, the next engine's, then all again"),
        Binding("escape", "clear_filter", "Clear filter", id="clear_filter", show=False,
                tooltip="Clear the filter, the engine and the problems-only toggle"),
        *write_bindings(KILL_RUN, RESUME_RUN),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="runs")
        self.feed = RunsFeed(ctx.source)
        self.filter = RunFilter()
        self.sort_index = 0
        self.loaded = False
        self.problem_ids: set[str] = set()  # loaded runs that need attention (kept up to date on every upsert)
        self.any_resumed = False  # a loaded run resumed after its engine died: the RESUMED column is shown
        self.any_degraded = False  # a loaded run is completed (degraded): STATUS is wide enough to say so
        self.paging = False
        self.exhausted = False
        self.resume_note: tuple[str, str, str] | None = None  # (run id, its status, what R said): its hint
        self.poller: Poller[RunsUpdate] = Poller(self, name="runs", fetch=self.feed.poll, render=self.apply_update,
                                                 interval=ctx.poll_interval, report_error=ctx.report_error)
        self.hint = "Loading runs…"

    def compose(self) -> ComposeResult:
        yield TextLines(id="runs-title")
        box = Input(placeholder="filter: run id, hierarchy, status or tenant (Enter keeps, Esc clears)",
                    id="runs-filter", compact=True)
        box.display = False
        yield box
        yield VirtualTable(run_columns(False, False, self.ctx.postgres), cell=run_cell, sort_value=run_sort_value,
                           matches=run_matches,
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
        if action == "cycle_engine" and not self.ctx.postgres:
            return False  # a store directory has one engine at a time: nothing to choose between
        state = self.read_only_state(action)
        return True if state is None else state

    def on_unmount(self) -> None:
        self.poller.stop()
        self.feed.close()

    # -- activation ---------------------------------------------------------------------------------------------

    def on_activate(self, arg: str | None) -> None:
        if arg is not None and arg.startswith(ENGINE_ARG):  # Enter on an engine in the engines view
            self._set_filter(replace(self.filter, engine=arg[len(ENGINE_ARG):] or None))
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
            if item.degraded:
                self.problem_ids.add(item.run.id)
            if (item.run.resumed and not self.any_resumed) or (item.degraded and not self.any_degraded):
                self.any_resumed = self.any_resumed or bool(item.run.resumed)
                self.any_degraded = self.any_degraded or bool(item.degraded)
                self.table.set_columns(run_columns(self.any_resumed, self.any_degraded, self.ctx.postgres))
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
            if self.filter.engine is not None:
                title.append(" · engine ")
                title.append(printable(self.filter.engine, limit=40), style="bold")
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
            if self.filter.engine is not None:
                what.append(f"ran on engine {printable(self.filter.engine, limit=40)}")
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
        if self.resume_note is not None and run is not None and self.resume_note[:2] == (key, run.status):
            self.hint = self.resume_note[2]  # until the run's status changes (it resumed, or ended again)
            return
        if run is not None and run.status == "needs_reconcile":
            self.hint = (f"Run {key} waits: a side effect's outcome is unknown. Decide it in view 3 (or "
                         f"`flightdeck reconcile {key}`), then R resumes it.")
            return
        if run is not None and run.status in PROBLEM_RUN_STATUSES:
            word = run_look(run.status).word
            self.hint = f"Run {key} ended {word}: press Enter to see which span failed and why" + (
                "; R resumes it." if may_resume(run) else ".")
            return
        if item is not None and item.degraded:
            self.hint = (f"Run {key} completed (degraded): {degraded_summary(item.degraded)} · Enter shows the "
                         f"denied call.")
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
        self._set_filter(replace(self.filter, problems_only=not self.filter.problems_only))

    def action_cycle_engine(self) -> None:
        engines = [item.run.engine_id for item in self.table.values() if item.run.engine_id]
        self._set_filter(replace(self.filter, engine=next_engine(self.filter.engine, engines)))

    def action_next_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        # No such column on screen: RESUMED until a loaded run resumed, ENGINE on a store directory.
        while (SORTS[self.sort_index][0] == "resumed" and not self.any_resumed) or (
                SORTS[self.sort_index][0] == "engine" and not self.ctx.postgres):
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
        self._set_filter(replace(self.filter, text=event.value.strip().lower()))

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
        if not self.ctx.read_only:
            commands.append(PaletteCommand("Runs: resume the selected durable run", "What replays, what runs again; "
                                           "asks for a reason", self.action_resume_run))
        return commands + kill_palette_commands(self, self.ctx, "Kill switch on the selected run",
                                                "Preview, mode, reason", self.action_kill_selected)

    def action_resume_run(self) -> None:
        key = self.table.cursor_key
        start_resume(self, self.ctx, str(key) if key is not None else None, self._resume_said)

    def _resume_said(self, text: str) -> None:
        key = self.table.cursor_key
        item = self.table.get(key) if key is not None else None
        self.resume_note = (str(key), item.run.status, text) if item is not None else None
        self.hint = text

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
