"""View 8: Queues (serve mode). Per queue, and per tenant under it, what the engine publishes (traces.db `queues`):
admission as a word AND a colour, depth against max_depth, the oldest item's age, admissions per minute, rejections,
runs in flight and the limits (concurrency, rate, max depth); the deepest queue first, its tenants under it,
deepest first. Below, the schedules (traces.db `schedules`) with their next fire time ("in 4m 10s") and last fire
and run. Rows no engine refreshes any more say "as of <time> (no engine)" in the title, never pretend to be live.

p pauses, d drains, o opens the selected queue (flag `queue.NAME`) or tenant (flag `tenant.NAME`): each shows what
the change does to that queue now (a preview), asks for a reason and sets the flag through ControlAPI (audited),
as the kill switches and flags of view 5 do. The engine applies it within a second.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding

from console.polling import Poller
from console.queue_status import SERVE_HINT, QueuesSnapshot, admission_word, backed_up, flag_name, span
from console.screens.base import ConsoleContext, PaletteCommand
from console.screens.queues_table import (
    COLUMNS,
    REVERSED,
    SCHEDULE_COLUMNS,
    lines_of,
    queue_cell,
    queue_sort,
    queue_words,
    schedule_cell,
    schedule_sort,
)
from console.screens.read_only import write_bindings
from console.screens.table_view import TableView
from console.views_data.queues_feed import QueuesFeed
from console.widgets.modals import REASON, FormModal, FormResult
from console.widgets.safe import printable
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import VirtualTable
from engine.timefmt import clock

if TYPE_CHECKING:
    from engine.store.control_rows import FlagSetting
    from engine.store.trace_rows import QueueRow

# key -> (flag value, verb, what it does)
ACTIONS = {
    "pause": ("paused", "pause", "submissions are refused (HTTP 503 with the reason) and queued runs wait; runs in "
                                 "flight continue"),
    "drain": ("draining", "drain", "submissions are refused; queued runs still start until the queue is empty"),
    "open": ("open", "open", "submissions are admitted again (within the queue's limits); queued runs start"),
}
TENANT_ACTIONS = {
    "pause": "that tenant's submissions are refused (HTTP 503) on every queue; its queued and running runs continue",
    "open": "that tenant's submissions are admitted again on every queue",
}

class QueuesView(TableView):
    DEFAULT_CSS = """
    QueuesView > #queues-table {
        height: 2fr;
        min-height: 5;
    }
    QueuesView > #schedules-table {
        height: 1fr;
        min-height: 4;
    }
    """

    BINDINGS = [*write_bindings(
        Binding("p", "queue_flag('pause')", "Pause", id="queue_pause",
                tooltip="Pause the selected queue or tenant: submissions refused, queued runs wait (preview, "
                        "reason, audited)"),
        Binding("d", "queue_flag('drain')", "Drain", id="queue_drain",
                tooltip="Drain the selected queue: submissions refused, queued runs still start (preview, reason, "
                        "audited)"),
        Binding("o", "queue_flag('open')", "Open", id="queue_open",
                tooltip="Open (resume) the selected queue or tenant: submissions admitted again (preview, reason, "
                        "audited)"),
    )]

    SORTS = (
        ("depth", False, "depth, deepest first"),
        ("oldest", False, "oldest item, oldest first"),
        ("rejected", False, "rejections, most first"),
        ("name", False, "queue, A to Z"),
    )

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="queues")
        self.queues_feed = QueuesFeed(ctx)
        self.poller = Poller(self, name="queues", fetch=self.queues_feed.poll, render=self.apply,
                             interval=max(0.25, ctx.poll_interval), report_error=ctx.report_error)
        self.snapshot: QueuesSnapshot | None = None
        self.hint = "Loading queues…"

    def compose(self) -> ComposeResult:
        yield TextLines(id="queues-title")
        yield self.filter_box()
        yield VirtualTable(COLUMNS, cell=queue_cell, sort_value=queue_sort, matches=self.matches,
                           now=self.ctx.clock, sort_column="depth",
                           empty_text=f"no queue published: {SERVE_HINT}", id="queues-table")
        yield TextLines(id="schedules-title")
        yield VirtualTable(SCHEDULE_COLUMNS, cell=schedule_cell, sort_value=schedule_sort,
                           matches=lambda d, f: True, now=self.ctx.clock, sort_column="next",
                           empty_text="no schedule published (fleet.yaml `schedules:`)", id="schedules-table")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#queues-table", VirtualTable)

    @property
    def schedules(self) -> VirtualTable:
        return self.query_one("#schedules-table", VirtualTable)

    def on_mount(self) -> None:
        self._titles()

    def on_activate(self, arg: str | None) -> None:
        self.queues_feed.invalidate()  # shown again: repaint from a fresh read
        super().on_activate(arg)

    def refresh_now(self) -> None:
        self.queues_feed.invalidate()
        super().refresh_now()

    def on_unmount(self) -> None:
        super().on_unmount()
        self.queues_feed.close()

    def filter_words(self, row: Any) -> str:
        return queue_words(row)

    def refresh_title(self) -> None:
        self._titles()

    def action_reverse_sort(self) -> None:
        """S: the reverse order, each queue's tenants still under it (a plain reverse would put them above)."""
        column = self.table.sort_column
        column = column[:-len(REVERSED)] if column.endswith(REVERSED) else column + REVERSED
        self.table.set_sort(column, False)
        self.refresh_title()

    def sort_words(self) -> str:
        words = self.SORTS[self.sort_index][2]
        return words.split(",")[0] + ", reversed" if self.table.sort_column.endswith(REVERSED) else words

    def apply(self, snapshot: QueuesSnapshot) -> None:
        self.loaded = True
        self.snapshot = snapshot
        lines = lines_of(snapshot)
        table = self.table
        table.remove([key for key in list(table.keys()) if key not in lines])
        table.upsert(lines.items())
        schedules = {row.name: row for row in snapshot.schedules}
        self.schedules.remove([key for key in list(self.schedules.keys()) if key not in schedules])
        self.schedules.upsert(schedules.items())
        self._titles()
        self._update_hint()

    def tick(self) -> None:
        super().tick()
        self._titles()

    def _titles(self) -> None:
        snapshot = self.snapshot
        rows = snapshot.rows if snapshot else []
        queues = [r for r in rows if not r.tenant]
        text = Text(end="")
        text.append("QUEUES ", style="bold")
        if not queues:
            text.append("none published", style="dim")
        else:
            text.append(f"{len(queues)} · {sum(r.depth for r in queues)} queued · "
                        f"{sum(r.running for r in queues)} running")
            backed = [r for r in queues if backed_up(r)]
            if backed:
                text.append(f" · {len(backed)} BACKED UP", style="bold white on red")
        if snapshot is not None and snapshot.stale and snapshot.as_of is not None:
            who = "no engine" if not snapshot.engine_alive else "not updated"
            text.append(f"  as of {clock(snapshot.as_of)} ({who})", style="bold yellow")
        text.append_text(self.title_suffix())
        if self.ctx.read_only:
            text.append("  · read-only: p/d/o are disabled", style="bold yellow")
        self.query_one("#queues-title", TextLines).update(text)
        sched = Text(end="")
        sched.append("SCHEDULES ", style="bold")
        count = len(snapshot.schedules) if snapshot else 0
        sched.append(f"{count}, the next to fire first" if count else "none published", style="" if count else "dim")
        self.query_one("#schedules-title", TextLines).update(sched)

    def selected(self) -> QueueRow | None:
        key = self.table.cursor_key
        line = self.table.get(key) if key is not None else None
        return line.row if line is not None else None

    def _update_hint(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            self.hint = "Loading queues…"
            return
        if not snapshot.rows:
            self.hint = f"No queue published yet: {SERVE_HINT}."
            return
        if snapshot.stale:
            when = clock(snapshot.as_of)
            self.hint = (f"These figures are as of {when}: no engine publishes them now"
                         f"{'' if snapshot.engine_alive else ' (no engine is running)'}. p/d/o still set the flags "
                         f"the next engine applies.")
            return
        backed = [r for r in snapshot.rows if not r.tenant and backed_up(r)]
        if backed and not self.ctx.read_only:
            worst = backed[0]
            self.hint = (f"Queue {printable(worst.queue, limit=30)} is backed up ({backed_up(worst)}): select its "
                         f"noisiest tenant and press p to pause it, or d drains the queue, o opens it again.")
        elif backed:
            self.hint = f"Queue {printable(backed[0].queue, limit=30)} is backed up (read-only console)."
        else:
            self.hint = "Queues healthy. p pauses the selected queue or tenant · d drains a queue · o opens it."

    @on(VirtualTable.CursorMoved, "#queues-table")
    def _moved(self, event: VirtualTable.CursorMoved) -> None:
        self._update_hint()

    # -- p / d / o ------------------------------------------------------------------------------------------------

    def action_queue_flag(self, action: str) -> None:
        if self.ctx.read_only:
            self.client.run("queue", lambda api: None)
            return
        row = self.selected()
        if row is None:
            self.notify(f"No queue selected: {SERVE_HINT}.", severity="warning", markup=False)
            return
        if row.tenant and action == "drain":
            self.notify("A tenant cannot be drained (tenant.NAME is open or paused): p pauses it; d drains the "
                        "whole queue from its own row.", severity="warning", markup=False)
            return
        value, verb, _ = ACTIONS[action]
        name = flag_name(row.queue, row.tenant)
        current = (self.snapshot.flags.get(name) if self.snapshot else None)
        if action == "open" and current is None and row.admission == "open":
            self.notify(f"{name} is already open: nothing to do.", markup=False)
            return
        body = self._preview(row, action, current)
        what = f"tenant {row.tenant}" if row.tenant else f"queue {row.queue}"

        def done(result: FormResult | None) -> None:
            if result is None:
                self.notify("Nothing was changed.", title="Queues", markup=False)
                return

            def written(flag: FlagSetting) -> None:
                self.notify(f"{flag.name}={value} by {self.ctx.operator} (audited). The engine applies it within "
                            f"a second.", title="Queues", markup=False)
                self.refresh_now()

            if action == "open" and current is not None:
                # Back to the default (open): the flag is cleared, not left in force as "=open" forever.
                self.client.run("queue-flag", lambda api: api.clear_flag(name, "global", reason=result.reason),
                                written)
            else:
                self.client.run("queue-flag", lambda api: api.set_flag(name, value, "global",
                                                                       reason=result.reason), written)

        self.app.push_screen(FormModal(f"{verb.capitalize()} {printable(what, limit=60)}", body, fields=[REASON],
                                       danger=action != "open", submit_label=f"Enter: {verb} {what}"), done)

    def _preview(self, row: QueueRow, action: str, current: str | None) -> Text:
        """What the change does to this queue (or tenant) now: the preview of the confirmation."""
        value, verb, does = ACTIONS[action]
        name = flag_name(row.queue, row.tenant)
        body = Text(end="")
        who = f"Tenant {printable(row.tenant, limit=40)} of queue " if row.tenant else "Queue "
        body.append(f"{who}{printable(row.queue, limit=40)} ({printable(row.hierarchy, limit=40)}) is ")
        word, style = admission_word(row.admission)
        body.append(word, style=style)
        body.append(f": {row.depth} queued, {row.running} running, oldest waiting "
                    f"{span(float(row.oldest_age_s)) if row.oldest_age_s is not None else '-'}, "
                    f"{float(row.admitted_per_min):.0f} admitted/min, {row.rejected_total} rejected.\n")
        if current is not None:
            body.append(f"In force now: {name}={current}" + (" (o clears it)" if action == "open" else "") + ".\n",
                        style="dim")
        body.append(f"{name}={value}: ", style="bold")
        body.append((TENANT_ACTIONS[action] if row.tenant else does) + ".\n")
        if self.snapshot is not None and self.snapshot.flags.get("runs.admission") == "paused" and action == "open":
            body.append("runs.admission=paused is in force globally: no run is admitted until it is cleared "
                        "(view 5, c).\n", style="bold yellow")
        body.append("The flag is audited and stays until changed (view 5 lists it).", style="dim")
        return body

    def palette_commands(self) -> list[PaletteCommand]:
        if self.ctx.read_only:
            return []
        return [PaletteCommand(f"Queue: {verb} the selected queue or tenant", "Preview, then a reason",
                               partial(self.action_queue_flag, action))
                for action, (_, verb, _) in ACTIONS.items()]
