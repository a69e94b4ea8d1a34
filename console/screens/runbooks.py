"""View 6: Runbooks and incidents. What is on fire (open incidents), what the runbook says to do about it, what
applying it would change (a dry run), and the keys to act: a acknowledge, R resolve, n note, p apply, b roll back.

Data path: RunbooksFeed (console/views_data/runbooks_feed.py, thread side, the view's Poller) reads the open
incidents (engine.controls.incidents.list_incidents: a read-only connection), the runbook applications in force,
and -- once -- the runbooks in force on the store (engine.runbooks.loader.load_runbooks). The dry run of the selected
runbook (engine.runbooks.actions.plan) runs on a thread worker whenever the selection changes. Every action goes
through the same APIs the CLI uses (console/commands/runbooks/): IncidentStore.acknowledge/resolve/annotate and
actions.apply/rollback, with the console's operator, so each writes its audit row in the same transaction as the
change. What the view writes (table cells, the side pane, the title, the hint, the prompts' bodies) is
runbooks_detail.py; the tables' columns, sorts and filter words are runbooks_tables.py; the prompt is text_prompt.py;
what it works out from its snapshot without a widget (applications in force, suggestions, the STATE column, what p and
b act on, refusals, action messages) is console/views_data/runbooks_selection.py; its five action flows (ack, resolve,
note, apply, roll back: a prompt, then a worker, then a notification) are runbooks_flows.py. This module is the view
class: its CSS, BINDINGS and actions, selection state and rendering. On a Postgres store: see the feed's docstring.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from console.polling import Poller
from console.screens.arranged import ARRANGE_BINDINGS, ArrangedView, Arrangement, refill, selected_key
from console.screens.base import ConsoleContext, PaletteCommand, focus_now
from console.screens.runbooks_detail import (
    from_config,
    hint_text,
    incident_detail,
    incident_row,
    postgres_hint,
    runbook_detail,
    runbook_row,
    title_text,
)
from console.screens.runbooks_flows import ACTION_WORKER, RunbookFlows
from console.screens.runbooks_tables import (
    INCIDENT_COLUMNS,
    RUNBOOK_COLUMNS,
    incident_arrangement,
    new_table,
    runbook_arrangement,
)
from console.views_data import runbooks_selection as selection
from console.views_data.runbooks_feed import Plan, RunbooksFeed, RunbooksSnapshot
from console.widgets.safe import printable
from console.widgets.text_pane import TextLines

if TYPE_CHECKING:
    from engine.store.control_rows import Incident, RunbookApplication


class RunbooksView(ArrangedView):
    DEFAULT_CSS = """
    RunbooksView > #rb-title {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    RunbooksView > #rb-body {
        height: 1fr;
    }
    RunbooksView #rb-left {
        width: 3fr;
        border-right: vkey $panel-lighten-2;
    }
    RunbooksView #rb-left > TextLines {
        padding: 0 1;
        background: $boost;
    }
    RunbooksView #incidents-table {
        height: 1fr;
        min-height: 4;
    }
    RunbooksView #runbooks-table {
        height: 1fr;
        min-height: 4;
    }
    RunbooksView #rb-side {
        width: 2fr;
        padding: 0 1;
    }
    RunbooksView #rb-detail {
        height: auto;
    }
    RunbooksView #rb-markdown {
        height: auto;
        margin: 0;
        padding: 0;
    }
    """

    BINDINGS = [
        Binding("a", "ack", "Ack", id="incident_ack",
                tooltip="Acknowledge the selected incident (someone is on it); asks for an optional reason"),
        Binding("R", "resolve", "Resolve", id="incident_resolve",
                tooltip="Resolve the selected incident (it is over); asks for the reason"),
        Binding("n", "note", "Note", id="incident_note", tooltip="Add a note to the selected incident's time line"),
        Binding("p", "apply", "Apply", id="runbook_apply",
                tooltip="Apply the selected runbook to its incident's scope (or one you type): shows the dry run, "
                        "asks for a reason"),
        Binding("b", "rollback", "Roll back", id="runbook_rollback",
                tooltip="Roll back what the selected runbook applied: shows what will be restored, asks for a reason"),
        Binding("tab", "switch_table", "Incidents/Runbooks", id="runbooks_switch", show=False,
                tooltip="Move between the incidents table and the runbooks table"),
        *ARRANGE_BINDINGS,
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="runbooks")
        self.feed = RunbooksFeed(ctx)
        self.flows = RunbookFlows(self)
        self.snapshot: RunbooksSnapshot | None = None
        self.plan: Plan | None = None
        self._plan_key: Any = None
        self._markdown_key: Any = None
        self.last_table = "incidents"
        # Sort and filter (s, S, /; console/screens/arranged.py). Rows are keyed by incident and runbook id: the
        # selection is looked up by key, so it stays on the same incident or runbook across a sort or a refresh.
        self.incident_order = incident_arrangement(self.incident_state)
        self.runbook_order = runbook_arrangement(lambda runbook_id: self._configured.get(runbook_id, 0),
                                                 self.detection_state)
        self._configured: dict[str, int] = {}  # runbook id -> its place in the files (the default order)
        self.poller: Poller[RunbooksSnapshot] = Poller(
            self, name="runbooks", fetch=self.feed.poll, render=self.apply_snapshot,
            interval=max(0.5, ctx.poll_interval), report_error=ctx.report_error)
        self.hint = "Loading incidents and runbooks…"

    def compose(self) -> ComposeResult:
        yield TextLines(Text("INCIDENTS loading…", style="dim"), id="rb-title")
        yield self.filter_box()
        with Horizontal(id="rb-body"):
            with Vertical(id="rb-left"):
                yield TextLines(Text("OPEN INCIDENTS", style="bold"), id="incidents-label")
                yield new_table("incidents-table", INCIDENT_COLUMNS)
                yield TextLines(Text("RUNBOOKS", style="bold"), id="runbooks-label")
                yield new_table("runbooks-table", RUNBOOK_COLUMNS)
            with VerticalScroll(id="rb-side"):
                yield Static(Text("Select an incident or a runbook.", style="dim"), id="rb-detail", markup=False)
                # The runbook's text (#rb-markdown) is mounted by _show_markdown, the first time there is one.

    def widgets_ready(self) -> bool:
        return bool(self.query("#runbooks-table")) and bool(self.query("#rb-detail"))

    @property
    def incidents_table(self) -> DataTable[Any]:
        return self.query_one("#incidents-table", DataTable)

    @property
    def runbooks_table(self) -> DataTable[Any]:
        return self.query_one("#runbooks-table", DataTable)

    def on_activate(self, arg: str | None) -> None:
        self.feed.runbooks = None  # re-read the runbook files each time the view is shown (STORE/runbooks edits)
        self.feed.invalidate()
        self.poller.start()

    def on_deactivate(self) -> None:
        self.poller.stop()

    def on_unmount(self) -> None:
        self.poller.stop()

    def focus_default(self) -> None:
        focus_now(self.incidents_table if self.last_table == "incidents" else self.runbooks_table)

    # -- state --------------------------------------------------------------------------------------------------

    @property
    def incidents(self) -> list[Incident]:
        return self.snapshot.incidents if self.snapshot else []

    @property
    def runbooks(self) -> list[Any]:
        return self.snapshot.runbooks if self.snapshot else []

    def applications_for(self, runbook_id: str, scope: str | None = None,
                         incident_id: str | None = None) -> list[RunbookApplication]:
        return selection.applications_for(self.snapshot, runbook_id, scope, incident_id)

    def suggested(self, incident: Incident) -> bool:
        return selection.suggested(self.snapshot, incident)

    def incident_state(self, incident: Incident) -> str:
        return selection.incident_state(self.snapshot, incident)

    def detection_state(self, runbook_id: str) -> tuple[str, str]:
        return selection.detection_state(self.snapshot, runbook_id)

    @property
    def selected_incident(self) -> Incident | None:
        key = selected_key(self.incidents_table)
        return next((i for i in self.incidents if i.id == key), None)

    @property
    def selected_runbook_id(self) -> str | None:
        key = selected_key(self.runbooks_table)
        return key if any(rb.id == key for rb in self.runbooks) else None

    def target(self) -> tuple[Any, Incident | None, str | None]:
        """What p and b act on: (runbook, incident or None, scope or None); see runbooks_selection.target."""
        return selection.target(self.snapshot, self.selected_incident if self.last_table == "incidents" else None,
                                self.selected_runbook_id)

    # -- rendering ----------------------------------------------------------------------------------------------

    def apply_snapshot(self, snapshot: RunbooksSnapshot) -> None:
        self.snapshot = snapshot
        self._configured = {rb.id: n for n, rb in enumerate(snapshot.runbooks)}
        self.rearrange()

    def rearrange(self) -> None:
        """Fill both tables from the snapshot, sorted and filtered, each cursor on the row (by key) it was on."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        now = self.ctx.clock()
        incidents = self.incident_order.arrange(snapshot.incidents)
        refill(self.incidents_table, [(i.id, incident_row(i, now, suggested=self.suggested(i),
                                                          state=self.incident_state(i))) for i in incidents],
               selected_key(self.incidents_table))
        runbooks = self.runbook_order.arrange(snapshot.runbooks)
        refill(self.runbooks_table, [(rb.id, runbook_row(rb, self.detection_state(rb.id))) for rb in runbooks],
               selected_key(self.runbooks_table))
        for label, name, order, shown, total in (
                ("#incidents-label", "OPEN INCIDENTS", self.incident_order, len(incidents), len(snapshot.incidents)),
                ("#runbooks-label", "RUNBOOKS", self.runbook_order, len(runbooks), len(snapshot.runbooks))):
            text = Text(name, style="bold", end="")
            text.append("  " + order.title_words(shown, total, filter_first=True),
                        style="bold" if self.filter_text else "dim")
            self.query_one(label, TextLines).update(text)
        self._update_title()
        self._selection_changed()

    # -- sort and filter: s sorts the table used last, the filter applies to both --------------------------------

    def arrangements(self) -> list[Arrangement]:
        return [self.incident_order, self.runbook_order]

    def sorted_arrangement(self) -> Arrangement:
        return self.incident_order if self.last_table == "incidents" else self.runbook_order

    def arranged_table(self) -> DataTable[Any]:
        return self.incidents_table if self.last_table == "incidents" else self.runbooks_table

    def _update_title(self) -> None:
        problem = self.snapshot.problem if self.snapshot else None
        watched = self.snapshot.watched if self.snapshot else True
        self.query_one("#rb-title", TextLines).update(
            title_text(self.incidents, len(self.runbooks), read_only=self.ctx.read_only, problem=problem,
                       watched=watched, shipped_only=self.ctx.postgres and not from_config(self.runbooks)))

    def _selection_changed(self) -> None:
        runbook, incident, scope = self.target()
        self._show_detail(runbook, incident, scope)
        key = (runbook.id if runbook else None, scope, incident.id if incident else None,
               incident.updated if incident else None,
               self.snapshot.applications and tuple(a.id for a in self.snapshot.applications) if self.snapshot
               else None)
        if runbook is not None and key != self._plan_key:
            self._plan_key = key  # the previous dry run stays until this one arrives (it is checked by target)
            self.run_worker(partial(self.feed.plan, runbook, scope, incident), name="runbook-plan",
                            group="runbook-plan", thread=True, exclusive=True, exit_on_error=False)
        self._update_hint()

    def _show_detail(self, runbook: Any, incident: Incident | None, scope: str | None) -> None:
        now = self.ctx.clock()
        text = Text(end="")
        if incident is not None:
            incident_detail(text, incident, self.plan, now, suggested=self.suggested(incident),
                            state=self.incident_state(incident))
        if runbook is None:
            if incident is not None:
                text.append(f"runbook {printable(incident.runbook)} is not in force on this store "
                            f"(removed or renamed?)\n", style="yellow")
            elif not self.runbooks:
                text.append("No runbooks on this store.", style="dim")
        else:
            runbook_detail(text, runbook, scope, self.detection_state(runbook.id),
                           self.applications_for(runbook.id, scope, incident.id if incident else None),
                           self.plan, now)
        self.query_one("#rb-detail", Static).update(text)
        body_key = (runbook.id if runbook else None, incident.id if incident else None)
        if body_key != self._markdown_key:
            self._markdown_key = body_key
            self._show_markdown(selection.runbook_text(runbook, incident) if runbook is not None else "")

    def _show_markdown(self, body: str) -> None:
        """The runbook's own text, rendered from its Markdown. The Markdown widget is created the first time there
        is a text to show, not with the view: it (and markdown-it, linkify, pygments) took a fifth of a second
        of the console's start, for a view that is not on its first screen."""
        from textual.widgets import Markdown

        shown = self.query("#rb-markdown")
        if shown:
            shown.first(Markdown).update(body)
        elif body:
            self.query_one("#rb-side", VerticalScroll).mount(Markdown(body, id="rb-markdown"))

    def _update_hint(self) -> None:
        if self.snapshot is None:
            self.hint = "Loading incidents and runbooks…"
            return
        # The suggestion before the selection: what is urgent is said whichever row the cursor is on.
        selected = self.selected_incident if self.last_table == "incidents" else None
        self.hint = hint_text(self.incidents, self.suggested, selected)
        if self.ctx.postgres:
            self.hint = f"{self.hint} {postgres_hint(self.runbooks)}"

    # -- widget events ------------------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#incidents-table")
    def _incident_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.incidents_table.has_focus:
            self.last_table = "incidents"
        self._selection_changed()

    @on(DataTable.RowHighlighted, "#runbooks-table")
    def _runbook_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.runbooks_table.has_focus:
            self.last_table = "runbooks"
        self._selection_changed()

    def on_descendant_focus(self, event: Any) -> None:
        widget = getattr(event, "widget", None)
        if widget is self.query_one("#incidents-table") and self.last_table != "incidents":
            self.last_table = "incidents"
            self._selection_changed()
        elif widget is self.query_one("#runbooks-table") and self.last_table != "runbooks":
            self.last_table = "runbooks"
            self._selection_changed()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        name = event.worker.name
        if name == "runbook-plan" and event.state == WorkerState.SUCCESS:
            self.plan = event.worker.result
            runbook, incident, scope = self.target()
            self._show_detail(runbook, incident, scope)
        elif name.startswith(ACTION_WORKER) and event.state == WorkerState.SUCCESS:
            self.flows.finished(event.worker.result)
            self._plan_key = None
            self.feed.invalidate()
            self.poller.poke()

    # -- actions ------------------------------------------------------------------------------------------------

    def action_switch_table(self) -> None:
        if self.last_table == "incidents":
            self.last_table = "runbooks"
            focus_now(self.runbooks_table)
        else:
            self.last_table = "incidents"
            focus_now(self.incidents_table)
        self._selection_changed()

    def action_ack(self) -> None:
        self.flows.incident("ack")

    def action_resolve(self) -> None:
        self.flows.incident("resolve")

    def action_note(self) -> None:
        self.flows.incident("note")

    def action_apply(self) -> None:
        self.flows.apply()

    def action_rollback(self) -> None:
        self.flows.rollback()

    def palette_commands(self) -> list[PaletteCommand]:
        return [
            PaletteCommand("Incident: acknowledge", "Acknowledge the selected incident", self.action_ack),
            PaletteCommand("Incident: resolve", "Resolve the selected incident", self.action_resolve),
            PaletteCommand("Incident: add a note", "Add a note to its time line", self.action_note),
            PaletteCommand("Runbook: apply (dry run first)", "Apply the selected runbook", self.action_apply),
            PaletteCommand("Runbook: roll back", "Roll back what the selected runbook applied", self.action_rollback),
        ]
