"""View 2: Run. The span tree growing live, the selected span's detail, usage so far, and the event tail.

Data path: RunFeed (console/views_data/run_feed.py: thread side) reads the run row, the events after the last seq
it saw (for the tail), and -- only when span events arrived -- the run's spans, diffed by (last_seq, status) so the
UI thread receives only new or changed spans. The tree adds/relabels by id (never rebuilt), the log appends.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import Tree
from textual.worker import Worker, WorkerState

from console.polling import Poller
from console.screens.actions import KILL_RUN
from console.screens.base import ConsoleContext, PaletteCommand, ShowView, View, focus_now
from console.screens.read_only import ReadOnlyGuard, write_bindings
from console.screens.resume import RESUME_RUN, start_resume
from console.screens.retry import RETRY_FROM, start_retry_from
from console.screens.run_actions import events_title, kill_selected, palette, retry_started, run_hint
from console.screens.run_spans import SpanBatch
from console.views_data.run_feed import RunFeed, RunUpdate
from console.widgets.gauges import BudgetGauges
from console.widgets.safe import printable
from console.widgets.span_detail import EventTail, SpanDetail, UsagePanel, run_summary, span_crumb
from console.widgets.span_tree import SpanTree, span_label
from console.widgets.status import PROBLEM_RUN_STATUSES
from console.widgets.text_pane import TextLines
from engine.store.trace_rows import BudgetRow, DegradedCall, RunRow

# While a run streams, its title, usage and budget gauges repaint at most this often (the tail: every poll). They sit
# at the top of the view and the tail at the bottom: a frame that repaints both re-composes everything between them
# (Textual renders the bounding box of what changed), which doubled the cost of the frames a key press waits for.
SUMMARY_INTERVAL_S = 0.5


class RunView(ReadOnlyGuard, View):
    DEFAULT_CSS = """
    RunView > #run-title {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    RunView > #run-body {
        height: 1fr;
    }
    RunView #span-tree {
        width: 1fr;
        min-width: 30;
        border-right: vkey $panel-lighten-2;
    }
    RunView #run-side {
        width: 1fr;
    }
    RunView #span-detail {
        height: 1fr;
    }
    RunView > #events-title {
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    RunView > #run-events {
        height: 30%;
        min-height: 4;
    }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", id="back_to_runs", tooltip="Back to the runs table"),
        Binding("n", "next_problem", "Next problem", id="next_problem",
                tooltip="Jump to the next span that failed, timed out, was denied or looped"),
        Binding("j", "toggle_raw", "Raw JSON", id="toggle_raw",
                tooltip="Show the selected span as raw JSON (everything recorded), or back to the summary"),
        Binding("e", "focus_events", "Events", id="focus_events",
                tooltip="Move the focus to the event tail (scroll it with the arrows; t goes back to the tree)"),
        Binding("t", "focus_tree", "Tree", id="focus_tree", show=False, tooltip="Move the focus to the span tree"),
        Binding("f", "toggle_follow", "Follow", id="follow_events",
                tooltip="Follow new events at the bottom of the tail, or stop following to read"),
        # R and y are not in the footer here (at 100 columns they would push the global keys off): the hint offers
        # them on a run that ended, and ? and ctrl+p list them.
        *write_bindings(KILL_RUN, dataclasses.replace(RESUME_RUN, show=False),
                        dataclasses.replace(RETRY_FROM, show=False)),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="run")
        self.feed: RunFeed | None = None
        self.run: RunRow | None = None
        self.problem: str | None = None
        self._detail_pending: str | None = None
        self.spans = SpanBatch()  # span changes waiting for the next tree update
        self._tree_timer: Timer | None = None
        self._opening = False  # the first spans of a newly opened run are going into the tree
        self._summary_shown = 0.0  # monotonic time the title, usage and gauges were last painted
        self._summary_timer: Timer | None = None
        self._pending_budgets: list[BudgetRow] | None = None  # gauges read but not painted yet
        self.resume_note: tuple[str, str, str] | None = None  # (run id, its status, what R said): its hint
        self.degraded: list[DegradedCall] = []  # a completed run's withheld or denied tool calls (the title says)
        self.poller: Poller[RunUpdate] = Poller(self, name="run", fetch=self._fetch, render=self.apply_update,
                                                interval=ctx.poll_interval, report_error=ctx.report_error)
        self.hint = "No run selected: press 1 and pick one with Enter, or type :run ID."

    def compose(self) -> ComposeResult:
        yield TextLines(Text("No run selected: press 1 and pick one with Enter, or type :run ID", style="dim"),
                        id="run-title")
        yield BudgetGauges(id="run-budgets")
        with Horizontal(id="run-body"):
            yield SpanTree(id="span-tree")
            with Vertical(id="run-side"):
                yield UsagePanel(id="run-usage")
                yield SpanDetail(id="span-detail")
        yield TextLines(id="events-title")
        yield EventTail(id="run-events")

    def widgets_ready(self) -> bool:
        return bool(self.query("#span-tree")) and bool(self.query("#span-detail"))

    @property
    def tree(self) -> SpanTree:
        return self.query_one("#span-tree", SpanTree)

    @property
    def detail(self) -> SpanDetail:
        return self.query_one("#span-detail", SpanDetail)

    @property
    def events(self) -> EventTail:
        return self.query_one("#run-events", EventTail)

    @property
    def run_id(self) -> str | None:
        return self.feed.run_id or self.feed.run_ref if self.feed else None

    def on_mount(self) -> None:
        self._update_events_title()

    def on_unmount(self) -> None:
        self.poller.stop()
        if self.feed is not None:
            self.feed.close()

    # -- activation ---------------------------------------------------------------------------------------------

    def on_activate(self, arg: str | None) -> None:
        if arg and (self.feed is None or arg not in (self.feed.run_ref, self.feed.run_id)):
            self.open_run(arg)
        if self.feed is not None:
            self.poller.start()

    def on_deactivate(self) -> None:
        self.poller.stop()

    def open_run(self, run_ref: str) -> None:
        self.poller.stop()
        if self.feed is not None:
            self.feed.close()
        self.feed = RunFeed(self.ctx.source, run_ref.strip())
        self.spans.clear()
        self._opening = False
        if self._tree_timer is not None:
            self._tree_timer.stop()
            self._tree_timer = None
        if self._summary_timer is not None:
            self._summary_timer.stop()
            self._summary_timer = None
        self._summary_shown = 0.0
        self._pending_budgets = None
        self.run = None
        self.problem = None
        self.tree.reset(Text(f"run {printable(run_ref, limit=40)}: loading…", style="dim"))
        self.events.clear()
        self.events.count = 0
        self.detail.raw = False
        self.detail.show(None, self.ctx.clock())
        self.query_one("#run-usage", UsagePanel).show(None)
        budgets = self.query_one("#run-budgets", BudgetGauges)
        budgets.status = None  # a new run: its own status decides (live or final figures)
        budgets.show([])
        self.query_one("#run-title", TextLines).update(run_summary(None, run_ref, self.ctx.clock()))
        self._update_events_title()
        self.hint = "Loading the run…"
        if self.active:
            self.poller.start()

    def focus_default(self) -> None:
        focus_now(self.tree)

    def _fetch(self) -> RunUpdate | None:
        feed = self.feed
        return feed.poll() if feed is not None else None

    # -- rendering ----------------------------------------------------------------------------------------------

    def apply_update(self, update: RunUpdate) -> None:
        if update.feed is not self.feed:
            return  # a poll for the run shown before
        if update.problem:
            self.problem = update.problem
            self.query_one("#run-title", TextLines).update(
                Text.assemble(("Runs › ", "dim"), ("RUN ", "bold"), (printable(update.feed.run_ref, limit=40), "bold"),
                              "\n", (update.problem, "bold yellow")))
            self.tree.reset(Text(update.problem, style="yellow"))
            self.hint = update.problem[0].upper() + update.problem[1:] + "."
            return
        urgent = self.problem is not None or self.run is None or \
            (update.run.status if update.run is not None else None) != self.run.status
        self.problem = None
        self.run = update.run
        self.degraded = update.degraded
        if update.budgets is not None:
            self._pending_budgets = update.budgets
        self._show_summary(urgent)
        if update.spans:
            self.spans.add(update.spans)
            self._apply_spans()
        if update.events or update.skipped:
            self.events.add_events(update.events, update.skipped)
            self._update_events_title()
        if update.more:
            self.poller.poke()
        self._update_hint()

    def _show_summary(self, urgent: bool) -> None:
        """Paint the run's title, usage and budget gauges: at once when `urgent` (a new run, a new status), else
        at most every SUMMARY_INTERVAL_S (a timer paints the latest figures when the interval is over)."""
        now = time.monotonic()
        if not urgent and now - self._summary_shown < SUMMARY_INTERVAL_S:
            if self._summary_timer is None:
                self._summary_timer = self.set_timer(SUMMARY_INTERVAL_S - (now - self._summary_shown),
                                                     self._summary_due)
            return
        if self._summary_timer is not None:
            self._summary_timer.stop()
            self._summary_timer = None
        self._summary_shown = now
        if self.feed is None or self.run is None:
            return
        self.query_one("#run-title", TextLines).update(run_summary(self.run, self.feed.run_ref, self.ctx.clock(),
                                                                self.size.width or 160, self.degraded,
                                                                span_crumb(self.detail.span)))
        self.query_one("#run-usage", UsagePanel).show(self.run)
        gauges = self.query_one("#run-budgets", BudgetGauges)
        if self._pending_budgets is not None or gauges.status != self.run.status:  # an ended run: final figures
            gauges.show(self._pending_budgets, keep_selection=True, status=self.run.status)
            self._pending_budgets = None

    def _summary_due(self) -> None:
        self._summary_timer = None
        if self.problem is None:
            self._show_summary(urgent=True)

    def _apply_spans(self) -> None:
        """Move waiting span changes into the tree when SpanBatch says they are due (run_spans.py), else set a
        timer for when they are."""
        first = self.tree.root.data is None
        spans, again = self.spans.take(time.monotonic(), first)
        if again is not None and self._tree_timer is None:
            self._tree_timer = self.set_timer(again, self._tree_due)
        if not spans:
            return
        self.tree.apply(spans)
        if first:
            self._opening = True
            if self.tree.cursor_line < 0:
                self.tree.move_cursor(self.tree.root)
        if self._opening and not self.spans:
            # Opening a run that went wrong: start on the span where it started failing (what the operator came
            # for), once the whole tree is in.
            self._opening = False
            status = self.run.status if self.run else None
            problem = self.tree.root_cause() if status in PROBLEM_RUN_STATUSES else None
            if problem is not None:
                self.tree.reveal(problem)
        current = self.tree.cursor_node
        if current is not None and current.data is not None and (
                self.detail.span is None or self.detail.span.get("id") == current.data.get("id")) and \
                current.data is not self.detail.span:
            self.show_detail(current.data)
        self._update_hint()

    def _tree_due(self) -> None:
        self._tree_timer = None
        if self.feed is not None:
            self._apply_spans()

    def _update_events_title(self) -> None:
        self.query_one("#events-title", TextLines).update(events_title(self.events))

    def _update_hint(self) -> None:
        if self.run is not None:
            self.hint = run_hint(self, self.run)

    # -- events from widgets ------------------------------------------------------------------------------------

    @on(Tree.NodeHighlighted, "#span-tree")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        self.show_detail(event.node.data)

    @on(Tree.NodeSelected, "#span-tree")
    def _selected(self, event: Tree.NodeSelected) -> None:
        self.show_detail(event.node.data)

    def show_detail(self, span: dict[str, Any] | None) -> None:
        """Show a span now with what is known; if it came from events only, read its full row (attributes) off
        the UI thread and show that when it arrives."""
        crumb_changed = span_crumb(span) != span_crumb(self.detail.span)
        self.detail.show(span, self.ctx.clock())
        if crumb_changed:
            self._show_summary(urgent=True)  # the breadcrumb follows the selection
        if span is not None:  # the budget gauges follow the selected agent (its own span, or the span's agent)
            self.query_one("#run-budgets", BudgetGauges).show(
                selected_span=span.get("id") if span.get("kind") == "agent" else None,
                selected_agent=span.get("agent"))
        if span and span.get("_partial") and self.feed is not None and self._detail_pending != span["id"]:
            self._detail_pending = span["id"]
            self.run_worker(partial(self.feed.span_detail, span["id"]), name="span-detail",
                            group="flightdeck-read", thread=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "span-detail" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        self._detail_pending = None
        full = event.worker.result if event.state == WorkerState.SUCCESS else None
        if not full:
            return
        node = self.tree.nodes.get(full["id"])
        if node is None or node.data is None:
            return
        if (full.get("last_seq") or 0) >= (node.data.get("last_seq") or 0):
            node.data = full
            node.set_label(span_label(full))
        if self.detail.span is not None and self.detail.span.get("id") == full["id"]:
            self.detail.show(node.data, self.ctx.clock())

    # -- actions ------------------------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.post_message(ShowView("runs"))

    def action_next_problem(self) -> None:
        node = self.tree.next_problem()
        if node is None:
            self.notify("No failed, timed-out, denied or looping span in this run.", markup=False)
            return
        self.tree.reveal(node)
        focus_now(self.tree)
        self.detail.show(node.data, self.ctx.clock())

    def action_toggle_raw(self) -> None:
        self.detail.raw = not self.detail.raw
        self.detail.show(self.detail.span, self.ctx.clock())

    def action_focus_events(self) -> None:
        focus_now(self.events)

    def action_focus_tree(self) -> None:
        focus_now(self.tree)

    def action_toggle_follow(self) -> None:
        log = self.events
        log.auto_scroll = not log.auto_scroll
        if log.auto_scroll:
            log.scroll_end(animate=False)
        self._update_events_title()

    def palette_commands(self) -> list[PaletteCommand]:
        return palette(self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        state = self.read_only_state(action)
        return True if state is None else state

    def action_kill_selected(self) -> None:
        kill_selected(self)

    def action_resume_run(self) -> None:
        run_id = (self.run.id if self.run is not None else None) or self.run_id
        start_resume(self, self.ctx, run_id, self._resume_said)

    def action_retry_from(self) -> None:
        node = self.tree.cursor_node
        run_id = (self.run.id if self.run is not None else None) or self.run_id
        start_retry_from(self, self.ctx, run_id, node.data if node is not None else None, self._resume_said,
                         partial(retry_started, self))

    def _resume_said(self, text: str) -> None:
        run = self.run
        self.resume_note = (run.id, run.status, text) if run is not None else None
        self.hint = text
