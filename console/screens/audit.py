"""View 7: Audit. Every operator and runbook action, newest first, paged, with the hash chain's verification.

Data path: AuditFeed (thread side) reads one page through ControlAPI.audit_log(limit, before_id) on the view's
poll (only when control.db changed: PRAGMA data_version), and ControlAPI.verify_audit() on a thread worker when
the newest row changes (or on v). The verdict is shown in words: "chain intact (N rows)" or, in red,
"TAMPERED at row N: problem".
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable
from textual.worker import Worker, WorkerState

from console.polling import Poller
from console.screens.arranged import ARRANGE_BINDINGS, Arrangement, OneTableView, Sort, refill, selected_key, words_of
from console.screens.base import ConsoleContext, PaletteCommand, focus_now
from console.views_data.audit_feed import AuditFeed, AuditPage
from console.widgets.safe import compact_json, printable
from console.widgets.text_pane import TextLines
from engine.timefmt import clock_ms


def change_text(before: Any, after: Any) -> str:
    if before is None and after is None:
        return "-"
    left = "-" if before is None else compact_json(before, limit=60)
    right = "-" if after is None else compact_json(after, limit=80)
    return f"{left} -> {right}"


def change_text_full(before: Any, after: Any) -> str:
    left = "-" if before is None else compact_json(before, limit=180)
    right = "-" if after is None else compact_json(after, limit=220)
    return f"{left} -> {right}"


def verification_text(result: Any, running: bool) -> Text:
    text = Text(end="")
    if result is None:
        text.append("chain: checking…" if running else "chain: not checked yet", style="dim")
        return text
    if result.ok:
        text.append(f"chain intact ({result.rows:,} rows)", style="bold green")
    else:
        text.append(f" TAMPERED at row {result.first_bad_id}: {printable(result.problem, limit=120)} ",
                    style="bold white on red")
    if running:
        text.append(" · re-checking…", style="dim")
    return text


# The page's rows, newest first by default; the others by their words, newest first among equals.
AUDIT_SORTS = (Sort("newest first", lambda e: int(e.id), descending=True),
               *(Sort(column, lambda e, column=column: (str(getattr(e, column) or "").lower(), -int(e.id)))
                 for column in ("actor", "action", "target")))


def audit_words(entry: Any) -> str:
    return words_of(entry.id, entry.actor, entry.action, entry.target, entry.reason,
                    change_text(entry.before, entry.after))


class AuditView(OneTableView):
    DEFAULT_CSS = """
    AuditView > #audit-title {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    AuditView > #audit-table {
        height: 1fr;
    }
    AuditView > #audit-detail {
        height: 3;
        padding: 0 1;
        background: $boost;
    }
    """

    BINDINGS = [
        Binding("right_square_bracket", "older", "Older", id="audit_older",
                tooltip="Show the next page of older audit rows"),
        Binding("left_square_bracket", "newer", "Newer", id="audit_newer",
                tooltip="Show the previous page of newer audit rows"),
        Binding("g", "newest", "Newest", id="audit_newest", tooltip="Back to the newest audit rows (first page)"),
        Binding("v", "verify", "Verify", id="audit_verify",
                tooltip="Verify the audit log's hash chain again (every row, on a background thread)"),
        *ARRANGE_BINDINGS,
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="audit")
        self.feed = AuditFeed(ctx)
        self.page: AuditPage | None = None
        self.pages: list[int | None] = []  # before_id of the newer pages (for "newer")
        self.verification: Any = None
        self.verifying = False
        self._verified_for: Any = "never"
        self.shown: list[Any] = []  # the page's rows as the table shows them (filtered, sorted)
        self.arrangement = Arrangement(AUDIT_SORTS, audit_words)
        self.poller: Poller[AuditPage] = Poller(self, name="audit", fetch=self.feed.poll, render=self.apply_page,
                                                interval=max(1.0, ctx.poll_interval), report_error=ctx.report_error)
        self.hint = "Loading the audit log…"

    def compose(self) -> ComposeResult:
        yield TextLines(Text("AUDIT loading…", style="dim"), id="audit-title")
        yield self.filter_box()
        table: DataTable[Any] = DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
        table.add_column("ID", key="id", width=5)
        table.add_column("WHEN", key="when", width=23)
        table.add_column("ACTOR", key="actor", width=22)
        table.add_column("ACTION", key="action", width=18)
        table.add_column("TARGET", key="target", width=28)
        table.add_column("BEFORE -> AFTER", key="change", width=38)
        table.add_column("REASON", key="reason", width=40)
        yield table
        yield TextLines(id="audit-detail")

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#audit-table", DataTable)

    def on_activate(self, arg: str | None) -> None:
        self.poller.start()

    def on_deactivate(self) -> None:
        self.poller.stop()

    def on_unmount(self) -> None:
        self.poller.stop()

    def focus_default(self) -> None:
        focus_now(self.table)

    # -- data ---------------------------------------------------------------------------------------------------

    def apply_page(self, page: AuditPage) -> None:
        self.page = page
        table = self.table
        keep = selected_key(table)
        self.shown = self.arrangement.arrange(page.rows)
        refill(table, [(str(entry.id), self._cells(entry)) for entry in self.shown], keep)
        self._show_selected()
        if page.newest_id != self._verified_for and not self.verifying:
            self.action_verify()
        self._update_title()

    def _cells(self, entry: Any) -> tuple[Any, ...]:
        bad = (self.verification is not None and not self.verification.ok
               and self.verification.first_bad_id == entry.id)
        style = "bold white on red" if bad else ""
        return (Text(str(entry.id), style=style or "dim"),
                clock_ms(entry.ts, with_date=True),
                Text(printable(entry.actor, limit=40), style="bold"),
                printable(entry.action, limit=40),
                printable(entry.target, limit=80) if entry.target else Text("-", style="dim"),
                change_text(entry.before, entry.after),
                printable(entry.reason, limit=200) if entry.reason else Text("-", style="dim"))

    @on(DataTable.RowHighlighted, "#audit-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        """The selected row in full under the table (the columns cut long values)."""
        key = selected_key(self.table)
        entry = next((e for e in self.shown if str(e.id) == key), None)
        text = Text(end="")
        if entry is not None:
            text.append(f"#{entry.id} {clock_ms(entry.ts, with_date=True)} ", style="dim")
            text.append(printable(entry.actor, limit=60), style="bold")
            text.append(f" {printable(entry.action, limit=40)} {printable(entry.target, limit=120)}")
            text.append("\n" + printable(change_text_full(entry.before, entry.after), limit=400))
            text.append("\nreason: ", style="dim")
            text.append(printable(entry.reason, limit=400) if entry.reason else "-")
        self.query_one("#audit-detail", TextLines).update(text)

    def _update_title(self) -> None:
        page = self.page
        title = Text(end="")
        title.append("AUDIT ", style="bold")
        if page is None:
            title.append("loading…", style="dim")
        elif page.no_store:
            title.append("no control.db yet: nothing has been done to this store", style="dim")
        else:
            shown = len(page.rows)
            if shown:
                first, last = page.rows[0].id, page.rows[-1].id
                title.append(f"rows {last}-{first} of {page.total:,} · newest first")
            else:
                title.append(f"no rows{' on this page' if page.total else ' yet'}", style="dim")
            title.append(" · page " + str(len(self.pages) + 1))
            title.append(" · " + self.arrangement.title_words(len(self.shown), len(page.rows)),
                         style="bold" if self.filter_text else "dim")
            title.append("  ] older  [ newer  g newest", style="dim")
        title.append("\n")
        title.append_text(verification_text(self.verification, self.verifying))
        self.query_one("#audit-title", TextLines).update(title)
        self._update_hint()

    def _update_hint(self) -> None:
        result = self.verification
        if result is not None and not result.ok:
            self.hint = (f"The audit log was altered at row {result.first_bad_id} ({result.problem}): treat the "
                         f"store as compromised and preserve a copy of control.db.")
        elif self.page is not None and not self.page.rows and not self.pages:
            self.hint = "No audited actions yet: operator and runbook actions appear here as they happen."
        else:
            self.hint = "Newest first · ] older page · [ newer page · v verifies the hash chain again."

    # -- verification -------------------------------------------------------------------------------------------

    def action_verify(self) -> None:
        if self.verifying:
            return
        self.verifying = True
        self._verified_for = self.page.newest_id if self.page else None
        self.run_worker(self.feed.verify, name="audit-verify", group="flightdeck-read", thread=True,
                        exit_on_error=False)
        self._update_title_safe()

    def _update_title_safe(self) -> None:
        if self.is_mounted:
            self._update_title()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "audit-verify":
            return
        if event.state == WorkerState.SUCCESS:
            self.verifying = False
            self.verification = event.worker.result
            if self.page is not None:
                self.feed.invalidate()
                self.apply_page(self.page)  # mark the tampered row
            else:
                self._update_title()
        elif event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self.verifying = False  # the error reaches the app's handler
            self._update_title()

    # -- paging -------------------------------------------------------------------------------------------------

    def action_older(self) -> None:
        page = self.page
        if page is None or not page.rows or len(page.rows) < page.page_size:
            self.notify("No older audit rows.", markup=False)
            return
        self.pages.append(self.feed.before_id)
        self.feed.before_id = int(page.rows[-1].id)
        self.feed.invalidate()
        self.poller.poke()

    def action_newer(self) -> None:
        if not self.pages:
            self.notify("Already on the newest page.", markup=False)
            return
        self.feed.before_id = self.pages.pop()
        self.feed.invalidate()
        self.poller.poke()

    def action_newest(self) -> None:
        self.pages = []
        self.feed.before_id = None
        self.feed.invalidate()
        self.poller.poke()

    def palette_commands(self) -> list[PaletteCommand]:
        return [
            PaletteCommand("Audit: verify the hash chain", "Walk every row and check the chain", self.action_verify),
            PaletteCommand("Audit: older page", "The next page of older rows", self.action_older),
            PaletteCommand("Audit: newest rows", "Back to the first page", self.action_newest),
        ]

    # -- sort and filter (the page shown; console/screens/arranged.py) -----------------------------------------

    def rearrange(self) -> None:
        if self.page is not None:
            self.apply_page(self.page)
        else:
            self._update_title()
