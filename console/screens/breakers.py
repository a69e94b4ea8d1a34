"""View 4: Breakers. Every circuit breaker the engine reports (traces.db `breakers`, one row per hierarchy and key):
state as a word AND a colour, failure and slow-call rates, calls in the window, time to the next probe (live), the
hierarchy. o forces one open, r resets it to closed, x disables it (calls always pass): each asks for a reason and
writes a breaker_overrides row through ControlAPI.override_breaker, which the engine applies.

Under the table, the selected breaker's story: why it opened (the engine's words, the failure rate and call count
of the window that tripped it) and the last error of a call through it (console/views_data/breaker_why.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding

from console.polling import ReaderState
from console.screens.base import ConsoleContext, PaletteCommand
from console.screens.breakers_fleet import FleetCounts, fleet_cell, fleet_words, with_fleet_column
from console.screens.read_only import write_bindings
from console.screens.table_view import TableView
from console.views_data.breaker_why import BreakerWhy, breaker_why
from console.widgets.modals import REASON, FormModal, FormResult
from console.widgets.safe import literal, printable
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import Column, VirtualTable
from engine.timefmt import compact_age

if TYPE_CHECKING:
    from engine.store.control_rows import BreakerOverride
    from engine.store.trace_rows import BreakerRow

# state -> (word, style). Never colour alone: the word is always there.
STATES = {
    "open": ("OPEN", "bold white on red"),
    "forced_open": ("FORCED OPEN", "bold white on red"),
    "half_open": ("HALF-OPEN", "bold black on yellow"),
    "disabled": ("DISABLED", "bold magenta"),
    "closed": ("closed", "green"),
}
ACTIONS = {"force_open": "force open", "reset": "reset to closed", "disable": "disable"}

COLUMNS = (
    Column("state", "STATE", 11),
    Column("key", "BREAKER", 18, flex=3, max_width=40),
    Column("hierarchy", "HIERARCHY", 12, flex=2, max_width=28),
    Column("failure_rate", "FAIL%", 6, align="right"),
    Column("slow_call_rate", "SLOW%", 6, align="right"),
    Column("calls", "FAILED/CALLS", 12, align="right"),
    Column("probe", "NEXT PROBE", 10, align="right"),
    Column("since", "SINCE", 6, align="right", drop=1),
)


def state_text(state: str | None) -> Text:
    word, style = STATES.get(str(state), (printable(state or "unknown", limit=12).upper(), "bold"))
    return Text(word, style=style, end="")


def pct(value: Any) -> str:
    """Rates are published in percent, as resilience4j reports them; -1 means fewer calls than the minimum."""
    if value is None or float(value) < 0:
        return "-"
    return f"{float(value):.0f}%"


def probe_text(row: BreakerRow, now: float) -> Text:
    at = row.next_probe_at
    if at is None or row.state not in ("open", "forced_open"):
        return Text("-", style="dim", end="")
    left = float(at) - now
    if left <= 0:
        return Text("due", style="bold yellow", end="")
    return Text(f"in {int(left)}s" if left < 120 else f"in {int(left // 60)}m", end="")


def breaker_cell(row: BreakerRow, column: str, now: float) -> Text | str:
    if column == "state":
        return state_text(row.state)
    if column in ("key", "hierarchy"):
        return literal(getattr(row, column), limit=60)
    if column in ("failure_rate", "slow_call_rate"):
        value = getattr(row, column)
        style = "bold red" if value is not None and float(value) >= 50 else ""
        return Text(pct(value), style=style, end="")
    if column == "calls":
        calls = row.calls_in_window
        failed = row.failed_calls
        return "-" if calls is None else f"{failed or 0}/{calls}"
    if column == "probe":
        return probe_text(row, now)
    if column == "since":
        since = row.since
        return compact_age(now - float(since)) if since else "-"
    return ""


STATE_ORDER = {"open": 0, "forced_open": 0, "half_open": 1, "disabled": 2, "closed": 3}


def breaker_sort(row: BreakerRow, column: str) -> Any:
    """By `column`, then open first (STATE, the default), hierarchy and key."""
    base = (STATE_ORDER.get(str(row.state), 1), str(row.hierarchy), str(row.key))
    if column in ("failure_rate", "slow_call_rate"):
        value = getattr(row, column)
        return (-(float(value) if value is not None else -1.0), *base)
    if column == "calls":
        return (-(row.calls_in_window or 0), *base)
    if column == "probe":
        at = row.next_probe_at if row.state in ("open", "forced_open") else None
        return (float(at) if at is not None else float("inf"), *base)
    if column == "since":
        return (float(row.since) if row.since else float("inf"), *base)
    if column in ("key", "hierarchy"):
        return (str(getattr(row, column)).lower(), *base)
    return base


def breaker_words(row: BreakerRow) -> str:
    word = STATES.get(str(row.state), (str(row.state), ""))[0]
    return " ".join(str(v or "") for v in (row.key, row.hierarchy, row.kind, row.name, row.state, word)).lower()


@dataclass(frozen=True, slots=True)
class BreakersUpdate:
    rows: list[BreakerRow]
    why: dict[tuple[str, str], BreakerWhy] = field(default_factory=dict)  # open breakers: why they opened
    fleet: FleetCounts = field(default_factory=dict)  # a Postgres store: how many engines see each one open


def why_text(row: BreakerRow | None, why: BreakerWhy | None, now: float, fleet: str = "") -> Text:
    """The selected breaker's story: why it opened and the last error through it; `fleet`: on a Postgres store, who
    else sees it open (breakers_fleet.fleet_words), on the first line."""
    if row is None:
        return Text("No breaker selected.", style="dim", end="")
    text = Text(end="")
    text.append(f"{printable(row.key, limit=60)}", style="bold")
    text.append(f" in {printable(row.hierarchy, limit=40)} is ")
    text.append_text(state_text(row.state))
    text.append(fleet, style="bold")
    if row.state not in ("open", "forced_open"):
        text.append(f" · failures {pct(row.failure_rate)} of {row.calls_in_window or 0} calls in the window")
        return text
    if why is None:
        text.append(" · no opening of it among the store's recent events", style="dim")
        return text
    text.append(f" · opened {compact_age(max(0.0, now - why.opened))} ago\n")
    text.append("Why: ", style="dim")
    text.append(printable(why.reason or "(no reason recorded)", limit=200), style="bold")
    figures = []
    if why.failure_rate is not None and why.failure_rate >= 0 and "failure rate" not in why.reason:
        figures.append(f"failure rate {why.failure_rate:.0f}%")
    if why.calls is not None:
        figures.append(f"over {why.calls} calls")
    if figures:
        text.append(f" ({' '.join(figures)} in the window that tripped it)")
    text.append("\nLast error: ", style="dim")
    if why.last_error:
        if why.last_error_kind:
            text.append(f"({printable(why.last_error_kind, limit=40)}) ", style="red")
        text.append(printable(why.last_error, limit=300), style="red")
    else:
        text.append("none recorded before it opened", style="dim")
    return text


class BreakerFeed:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.state = ReaderState(ctx.source)
        self.last: Any = object()
        self.why: dict[tuple[str, str, float | None], BreakerWhy | None] = {}  # (hierarchy, key, since) -> opening

    def poll(self) -> BreakersUpdate | None:
        why: dict[tuple[str, str], BreakerWhy] = {}
        fleet: FleetCounts = {}
        if not self.state.source.has_traces():
            rows: list[BreakerRow] = []
        else:
            try:
                rows = self.state.reader.breakers()
                fleet = {(c.hierarchy, c.key): c for c in self.state.reader.breaker_fleet()}
                for row in rows:
                    if row.state in ("open", "forced_open"):
                        found = self._why(row)
                        if found is not None:
                            why[(row.hierarchy, row.key)] = found
            except Exception:
                self.state.reset()
                raise
        if (rows, why, fleet) == self.last:
            return None
        self.last = (rows, why, fleet)
        return BreakersUpdate(rows, why, fleet)

    def _why(self, row: BreakerRow) -> BreakerWhy | None:
        """Read once per opening (a breaker's `since` changes when it opens again)."""
        cache_key = (row.hierarchy, row.key, row.since)
        if cache_key not in self.why:
            if len(self.why) > 256:
                self.why.clear()
            self.why[cache_key] = breaker_why(self.state.reader, row.hierarchy, row.key, row.name)
        return self.why[cache_key]

    def invalidate(self) -> None:
        self.last = object()

    def close(self) -> None:
        self.state.close()


class BreakersView(TableView):
    DEFAULT_CSS = """
    BreakersView > #breakers-table {
        height: 1fr;
    }
    BreakersView > #breaker-why {
        height: 4;
        border-top: solid $panel-lighten-2;
        padding: 0 1;
    }
    """

    BINDINGS = [*write_bindings(
        Binding("o", "override('force_open')", "Force open", id="breaker_open",
                tooltip="Force the selected breaker open: every call through it fails fast (asks for a reason)"),
        Binding("r", "override('reset')", "Reset", id="breaker_reset",
                tooltip="Reset the selected breaker to closed with an empty window (asks for a reason)"),
        Binding("x", "override('disable')", "Disable", id="breaker_disable",
                tooltip="Disable the selected breaker: calls always pass, failures are not counted (asks for a "
                        "reason)"),
    )]

    SORTS = (
        ("state", False, "state, open first"),
        ("failure_rate", False, "failure rate, highest first"),
        ("slow_call_rate", False, "slow-call rate, highest first"),
        ("calls", False, "calls in the window, most first"),
        ("probe", False, "next probe, soonest first"),
        ("since", False, "since, longest first"),
        ("key", False, "breaker, A to Z"),
        ("hierarchy", False, "hierarchy, A to Z"),
    )

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="breakers")
        self.feed = BreakerFeed(ctx)  # type: ignore[assignment]
        self.poller._fetch = self.feed.poll  # type: ignore[assignment]
        self.hint = "Loading breakers…"
        self.why: dict[tuple[str, str], BreakerWhy] = {}
        self.fleet: FleetCounts = {}

    def _cell(self, row: BreakerRow, column: str, now: float) -> Text | str:
        if column == "engines":
            return fleet_cell(self.fleet.get((row.hierarchy, row.key)))
        return breaker_cell(row, column, now)

    def compose(self) -> ComposeResult:
        yield TextLines(id="breakers-title")
        yield self.filter_box()
        columns = with_fleet_column(COLUMNS) if self.ctx.postgres else COLUMNS
        yield VirtualTable(columns, cell=self._cell, sort_value=breaker_sort, matches=self.matches,
                           now=self.ctx.clock, sort_column="state",
                           empty_text="no breaker reported yet (the engine publishes them while it runs)",
                           id="breakers-table")
        yield TextLines(id="breaker-why")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#breakers-table", VirtualTable)

    def on_mount(self) -> None:
        self._title([])

    def filter_words(self, row: Any) -> str:
        return breaker_words(row)

    def refresh_title(self) -> None:
        self._title(list(self.table.values()))

    def on_unmount(self) -> None:
        super().on_unmount()
        self.feed.close()  # type: ignore[attr-defined]

    def apply(self, update: BreakersUpdate) -> None:
        self.loaded = True
        rows = update.rows
        self.why = update.why
        self.fleet = update.fleet
        table = self.table
        keyed = {(row.hierarchy, row.key): row for row in rows}
        table.remove([key for key in list(table.keys()) if key not in keyed])
        table.upsert(keyed.items())
        self._title(rows)
        self._update_hint()
        self._show_why()

    def _show_why(self) -> None:
        row = self.selected()
        why = self.why.get((row.hierarchy, row.key)) if row is not None else None
        fleet = fleet_words(self.fleet.get((row.hierarchy, row.key))) if row is not None else ""
        self.query_one("#breaker-why", TextLines).update(why_text(row, why, self.ctx.clock(), fleet))

    def tick(self) -> None:
        super().tick()
        self._show_why()

    def _title(self, rows: list[BreakerRow]) -> None:
        counts: dict[str, int] = {}
        for row in rows:
            counts[str(row.state)] = counts.get(str(row.state), 0) + 1
        text = Text(end="")
        text.append("BREAKERS ", style="bold")
        if not rows:
            text.append("none reported", style="dim")
        for state in ("open", "forced_open", "half_open", "disabled", "closed"):
            if counts.get(state):
                text.append(" ")
                text.append_text(state_text(state))
                text.append(f" {counts[state]}")
        text.append_text(self.title_suffix())
        if self.ctx.read_only:
            text.append("  · read-only: overrides are disabled", style="bold yellow")
        self.query_one("#breakers-title", TextLines).update(text)

    def selected(self) -> BreakerRow | None:
        key = self.table.cursor_key
        return self.table.get(key) if key is not None else None

    def _update_hint(self) -> None:
        rows = list(self.table.values())
        row = self.selected()
        opened = [r for r in rows if r.state in ("open", "forced_open")]
        if not self.loaded:
            self.hint = "Loading breakers…"
        elif not rows:
            self.hint = "No breakers reported yet: they appear when an engine runs a hierarchy with breakers."
        elif opened and not self.ctx.read_only:
            self.hint = (f"{len(opened)} breaker(s) open: calls through them fail fast. r resets the selected one "
                         f"once the dependency is healthy; o forces one open; x disables it.")
        elif opened:
            self.hint = f"{len(opened)} breaker(s) open: calls through them fail fast (read-only console)."
        elif row is not None:
            self.hint = "All breakers closed. o forces the selected one open · r resets · x disables."

    @on(VirtualTable.CursorMoved, "#breakers-table")
    def _moved(self, event: VirtualTable.CursorMoved) -> None:
        self._update_hint()
        self._show_why()

    def action_override(self, action: str) -> None:
        if self.ctx.read_only:
            self.client.run("breaker", lambda api: None)
            return
        row = self.selected()
        if row is None:
            self.notify("No breaker selected.", severity="warning", markup=False)
            return
        key = str(row.key)
        body = Text(end="")
        body.append(f"{printable(key, limit=60)} in {printable(row.hierarchy, limit=40)} is ")
        body.append_text(state_text(row.state))
        body.append(f" (failures {pct(row.failure_rate)}, slow {pct(row.slow_call_rate)}, "
                    f"{row.calls_in_window or 0} calls in the window).\n")
        body.append(f"Ask the engine to {ACTIONS[action]} it (applies to every hierarchy using this breaker key).",
                    style="bold")

        def done(result: FormResult | None) -> None:
            if result is None:
                return

            def written(override: BreakerOverride) -> None:
                self.notify(f"Breaker override #{override.id}: {ACTIONS[action]} {key}, by "
                            f"{override.operator}. The engine applies it within a second.",
                            title="Breaker", markup=False)
                self.refresh_now()

            self.client.run("breaker", lambda api: api.override_breaker(key, action, result.reason), written)

        self.app.push_screen(FormModal(f"{ACTIONS[action].capitalize()}: {printable(key, limit=60)}", body,
                                       fields=[REASON], danger=action != "reset",
                                       submit_label=f"Enter: {ACTIONS[action]}"), done)

    def palette_commands(self) -> list[PaletteCommand]:
        if self.ctx.read_only:
            return []
        return [PaletteCommand(f"Breaker: {ACTIONS[a]} the selected one", "Asks for a reason",
                               lambda a=a: self.action_override(a)) for a in ACTIONS]
