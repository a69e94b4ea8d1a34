"""View 3: Approvals. Tool calls waiting for a person, across all runs, soonest deadline first (the one that times
out next is on top, whatever its age), each with a live countdown to its deadline (red under 30 s); the countdown
keeps counting in the approve/deny/edit prompts. a approves, d denies (the reason is the message), e edits the
arguments and approves; every decision passes the args_hash the operator saw (expected_args_hash), so it binds to
what was on screen. Enter (or g) opens the request's place in the trace (view 2 on its run, the span selected).
The table's columns, cells, sorts and the detail text are console/screens/approvals_table.py.

Beside the requests, RECONCILE rows: durable runs' side effects whose outcome is unknown after a crash, decided
here with c (done), r (again) or f (fail) (console/screens/approvals_reconcile.py).

New requests anywhere raise a notification on every view (ApprovalAlerts, console/screens/approval_alerts.py,
started when this view mounts) and ring the terminal bell when configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding

from console.screens.approval_alerts import BELL_ENV, ApprovalAlerts, time_left
from console.screens.approvals_reconcile import (
    KEYS_WORDS,
    RECONCILE_BINDINGS,
    decided_message,
    is_reconcile,
    start_reconcile,
)
from console.screens.approvals_table import (
    COLUMNS,
    URGENT_S,
    approval_cell,
    approval_detail,
    approval_sort,
    approval_words,
    left_text,
)
from console.screens.base import ConsoleContext, PaletteCommand, ShowView
from console.screens.read_only import write_bindings
from console.screens.table_view import TableView
from console.views_data.approvals_data import ListedApproval
from console.views_data.reconcile_data import ReconcileFeed, ReconcileItem
from console.widgets.modals import REASON, Field, FormModal, FormResult
from console.widgets.safe import printable
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import VirtualTable

if TYPE_CHECKING:
    from engine.store.control_rows import Approval

__all__ = ["BELL_ENV", "ApprovalAlerts", "ApprovalsView", "approval_cell", "time_left"]


class ApprovalsView(TableView):
    DEFAULT_CSS = """
    ApprovalsView > #approvals-table {
        height: 1fr;
    }
    ApprovalsView > #approval-detail {
        height: 12;
        border-top: solid $panel-lighten-2;
        padding: 0 1;
    }
    """

    BINDINGS = [
        *write_bindings(
            Binding("a", "approve", "Approve", id="approve",
                    tooltip="Approve the selected request (asks for a reason; binds to the arguments shown)"),
            Binding("d", "deny", "Deny", id="deny",
                    tooltip="Deny the selected request with a message (the model sees it as a tool error)"),
            Binding("e", "edit_approve", "Edit+approve", id="edit_approve",
                    tooltip="Edit the arguments (a JSON object; the engine re-validates it) and approve"),
            *RECONCILE_BINDINGS),
        Binding("enter", "open_trace", "Open in trace", id="approval_open", show=False,
                tooltip="Open the request's run in view 2 with its span selected"),
        Binding("g", "open_trace", "Trace", id="approval_trace",
                tooltip="Open the request's run in view 2 with its span selected (Enter does the same)"),
    ]

    SORTS = (
        ("left", False, "time left, soonest deadline first"),
        ("risk", False, "risk, highest first"),
        ("level", False, "escalation, most escalated first"),
        ("requested", False, "age, oldest first"),
        ("agent", False, "agent, A to Z"),
        ("tool", False, "tool, A to Z"),
        ("run", False, "run id"),
    )

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="approvals")
        self.alerts = ApprovalAlerts(self, ctx)
        self.reconcile_feed = ReconcileFeed(ctx.source)
        self.reconciles = 0  # RECONCILE rows listed
        self.approvals = 0  # approval requests listed
        self.hint = "Loading approvals…"

    def compose(self) -> ComposeResult:
        yield TextLines(id="approvals-title")
        yield self.filter_box()
        yield VirtualTable(COLUMNS, cell=approval_cell, sort_value=approval_sort, matches=self.matches,
                           now=self.ctx.clock, sort_column="left", empty_text="no tool call is waiting for approval",
                           id="approvals-table")
        yield TextLines(id="approval-detail")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#approvals-table", VirtualTable)

    def on_mount(self) -> None:
        self.alerts.start()
        self._title(0)

    def filter_words(self, row: Any) -> str:
        return approval_words(row)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The footer offers the keys of the rows listed (at 100 columns it cannot hold both sets): c/r/f only while
        # a RECONCILE row is listed; a/d/e unless every row listed is a RECONCILE row.
        if action == "reconcile" and not self.reconciles:
            return False
        if action in ("approve", "deny", "edit_approve") and self.reconciles and not self.approvals:
            return False
        return super().check_action(action, parameters)

    def refresh_title(self) -> None:
        self._title(self.approvals)

    def on_unmount(self) -> None:
        super().on_unmount()
        self.alerts.stop()
        self.reconcile_feed.close()

    def read(self, api: Any) -> tuple[list[Approval], list[ReconcileItem]]:
        """Pending approvals (control.db) and the side effects durable runs wait on (traces.db, decided ones left
        out through control.db)."""
        return (api.pending_approvals() if api is not None else []), self.reconcile_feed.read(api)

    def apply(self, rows: tuple[list[Approval], list[ReconcileItem]]) -> None:
        self.loaded = True
        table = self.table
        approvals, reconciles = rows
        listed: list[ListedApproval | ReconcileItem] = [
            ListedApproval(**row.as_dict(), pos=pos) for pos, row in enumerate(approvals)]  # store order: ties
        listed += reconciles
        keep = {row.id for row in listed}
        table.remove([key for key in list(table.keys()) if key not in keep])
        table.upsert((row.id, row) for row in listed)
        if (len(reconciles), len(approvals)) != (self.reconciles, self.approvals):
            self.reconciles, self.approvals = len(reconciles), len(approvals)
            self.refresh_bindings()  # the footer shows the keys of the kinds of rows listed (check_action)
        self._title(len(approvals))
        self._show_detail()

    def tick(self) -> None:
        super().tick()
        self._show_detail()
        self._update_hint()

    def _title(self, count: int) -> None:
        text = Text(end="")
        text.append("APPROVALS ", style="bold")
        text.append(f"{count} pending" if count else "none pending", style="bold yellow" if count else "green")
        if self.reconciles:
            text.append(" · ")
            text.append(f"{self.reconciles} to RECONCILE", style="bold black on yellow")
        text.append_text(self.title_suffix())
        text.append(" · LEFT turns red under 30 s", style="dim")
        if self.ctx.read_only:
            text.append("  · read-only: decisions are disabled", style="bold yellow")
        self.query_one("#approvals-title", TextLines).update(text)

    def selected(self) -> Approval | ReconcileItem | None:
        key = self.table.cursor_key
        return self.table.get(key) if key is not None else None

    def _show_detail(self) -> None:
        self.query_one("#approval-detail", TextLines).update(approval_detail(self.selected(), self.ctx.clock()))
        self._update_hint()

    def _update_hint(self) -> None:
        row = self.selected()
        if not self.loaded:
            self.hint = "Loading approvals…"
        elif row is None:
            self.hint = "Nothing waits for approval. New requests raise a notification on every view."
        elif isinstance(row, ReconcileItem):
            self.hint = (f"Run {row.run_id} waits: {printable(row.tool, limit=30)}'s outcome is unknown. Check it by "
                         f"its key, then {KEYS_WORDS} (each asks for a reason)." if not self.ctx.read_only else
                         f"Read-only console: decide with `flightdeck reconcile {row.run_id}` or a read-write "
                         f"console.")
        elif self.ctx.read_only:
            self.hint = "Read-only console: review here, decide with `flightdeck approve/deny` or a read-write console."
        elif float(row.deadline) - self.ctx.clock() < URGENT_S:
            self.hint = (f"{row.id} expires in {time_left(float(row.deadline), self.ctx.clock())} (then: "
                         f"{row.on_timeout}): a approves, d denies, e edits.")
        else:
            self.hint = "a approves · d denies with a message · e edits the arguments · Enter opens it in the trace."

    @on(VirtualTable.CursorMoved, "#approvals-table")
    def _moved(self, event: VirtualTable.CursorMoved) -> None:
        self._show_detail()

    @on(VirtualTable.RowSelected, "#approvals-table")
    def _chosen(self, event: VirtualTable.RowSelected) -> None:
        self.action_open_trace()

    # -- actions ------------------------------------------------------------------------------------------------

    def _need_row(self) -> Approval | ReconcileItem | None:
        row = self.selected()
        if row is None:
            self.notify("No approval selected: nothing is waiting.", severity="warning", markup=False)
        return row

    def _decided(self, verb: str) -> Any:
        def done(row: Approval) -> None:
            self.notify(f"{row.id} {verb} by {row.decided_by}: {printable(row.tool, limit=40)} "
                        f"for {printable(row.agent, limit=40)}.", title="Approval", markup=False)
            self.refresh_now()
        return done

    def _decision_body(self, row: Approval) -> Callable[[], Text]:
        """The prompt's body, redrawn every second: its countdown keeps counting while the operator types."""
        return lambda: approval_detail(row, self.ctx.clock())

    def _decidable(self, verb: str) -> Approval | None:
        """The selected request, if this console may decide it (read-only refuses with its message). A decision
        carries the arguments hash shown here, so it binds to exactly what the operator saw."""
        if self.ctx.read_only:
            self.client.run(verb, lambda api: None)
            return None
        row = self._need_row()
        if isinstance(row, ReconcileItem):
            self.notify(f"This is a RECONCILE row (a side effect whose outcome is unknown), not an approval: "
                        f"{KEYS_WORDS}.", severity="warning", markup=False)
            return None
        return row

    def action_reconcile(self, decision: str) -> None:
        """c / r / f on a RECONCILE row: done, again or fail (a confirmation with a required reason)."""
        if self.ctx.read_only:
            self.client.run("reconcile", lambda api: None)
            return
        row = self._need_row()
        if row is None:
            return
        if not is_reconcile(row):
            self.notify("c, r and f decide a RECONCILE row (a durable run's side effect whose outcome is unknown); "
                        "for an approval: a approves, d denies, e edits.", severity="warning", markup=False)
            return
        assert isinstance(row, ReconcileItem)

        def decided(made: Any, waiting: int) -> None:
            self.notify(decided_message(made, waiting), title="Reconciled", markup=False, timeout=10)
            self.refresh_now()

        start_reconcile(self, self.ctx, self.client, row, decision, decided)

    def action_approve(self) -> None:
        row = self._decidable("approve")
        if row is None:
            return
        approval_id, expected = row.id, row.args_hash

        def done(result: FormResult | None) -> None:
            if result is not None:
                self.client.run("approve", lambda api: api.approve(approval_id, result.reason,
                                                                   expected_args_hash=expected),
                                self._decided("approved"))

        self.app.push_screen(FormModal(f"Approve {approval_id}: {printable(row.tool, limit=60)}",
                                       live_body=self._decision_body(row), fields=[REASON],
                                       submit_label="Enter: approve"), done)

    def action_deny(self) -> None:
        row = self._decidable("deny")
        if row is None:
            return
        approval_id, expected = row.id, row.args_hash

        def done(result: FormResult | None) -> None:
            if result is not None:
                self.client.run("deny", lambda api: api.deny(approval_id, result.reason,
                                                             expected_args_hash=expected),
                                self._decided("denied"))

        self.app.push_screen(FormModal(
            f"Deny {approval_id}: {printable(row.tool, limit=60)}", live_body=self._decision_body(row),
            fields=[Field("reason", "Message (the model sees it; goes to the audit log)",
                          placeholder="why not, and what to do instead")],
            danger=True, submit_label="Enter: deny"), done)

    def action_edit_approve(self) -> None:
        row = self._decidable("edit")
        if row is None:
            return
        approval_id, expected = row.id, row.args_hash
        import json

        original = json.dumps(row.arguments, indent=2, ensure_ascii=False, default=str)

        def done(result: FormResult | None) -> None:
            if result is not None:
                edited = result["arguments"]
                self.client.run("edit-approve", lambda api: api.approve(
                    approval_id, result.reason, edited_arguments=edited, expected_args_hash=expected),
                    self._decided("approved with edited arguments"))

        def body() -> Text:
            text = Text(end="")
            text.append(f"{printable(row.agent, limit=40)} → {printable(row.tool, limit=60)}; ")
            text.append_text(left_text(row, self.ctx.clock()))
            text.append(" left. Edit the arguments (a JSON object); the engine validates them against the tool's "
                        "schema.")
            return text

        self.app.push_screen(FormModal(f"Edit and approve {approval_id}", live_body=body,
                                       fields=[Field("arguments", "Arguments (JSON object)", kind="json",
                                                     value=original), REASON],
                                       submit_label="ctrl+s or Enter in Reason: approve with these arguments"), done)

    def action_open_trace(self) -> None:
        row = self._need_row()
        if row is None:
            return
        self.post_message(ShowView("run", str(row.run_id)))
        span_id = row.span_id
        if span_id:
            self._select_span(str(span_id), tries=50)

    def _select_span(self, span_id: str, tries: int) -> None:
        try:
            run_view = self.screen.query_one("#view-run")
            node = run_view.tree.nodes.get(span_id)  # type: ignore[attr-defined]
        except Exception:
            node = None
        if node is not None:
            run_view.tree.reveal(node)  # type: ignore[attr-defined]
            return
        if tries > 0:
            self.set_timer(0.1, lambda: self._select_span(span_id, tries - 1))

    def palette_commands(self) -> list[PaletteCommand]:
        commands = [PaletteCommand("Open the selected approval in the trace", "View 2 on its run and span",
                                   self.action_open_trace)]
        if not self.ctx.read_only:
            commands += [
                PaletteCommand("Approve the selected request", "Asks for a reason", self.action_approve),
                PaletteCommand("Deny the selected request", "Asks for a message", self.action_deny),
                PaletteCommand("Edit the arguments and approve", "JSON editor", self.action_edit_approve),
                PaletteCommand("Reconcile: the side effect happened (done)", "RECONCILE row; asks for a reason",
                               lambda: self.action_reconcile("done")),
                PaletteCommand("Reconcile: run the side effect again", "RECONCILE row; same idempotency key",
                               lambda: self.action_reconcile("again")),
                PaletteCommand("Reconcile: fail the run", "RECONCILE row; your reason is its error",
                               lambda: self.action_reconcile("fail")),
            ]
        return commands
