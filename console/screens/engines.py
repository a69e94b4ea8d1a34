"""View 9: Engines. Every engine on the store: on a Postgres store the whole fleet (each engine registered on the
database, on any host), on a store directory the engines that have run on it. Per engine its state as a word and a
colour (alive, STALE, stopped), host, pid, version, LOAD (runs running now), the serve-mode queues it publishes and
its last heartbeat. Enter opens the runs view on that engine's runs (the runs view's engine filter, `e` there).

Data: console/views_data/engines_feed.py. Sort and filter: the table views' keys (console/screens/table_view.py).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding

from console.screens.base import ConsoleContext, PaletteCommand, ShowView
from console.screens.runs_table import ENGINE_ARG
from console.screens.table_view import TableView
from console.views_data.engines_feed import EngineLine, EnginesFeed, engine_state
from console.widgets.safe import literal, printable
from console.widgets.text_pane import TextLines
from console.widgets.virtual_table import Column, VirtualTable
from engine.timefmt import compact_age

STATES = {"alive": "green", "STALE": "bold white on red", "stopped": "dim"}
STATE_ORDER = {"STALE": 0, "alive": 1, "stopped": 2}

COLUMNS = (
    Column("state", "STATE", 7),
    Column("id", "ENGINE", 12, flex=3, max_width=36),
    Column("host", "HOST", 10, flex=2, max_width=28),
    Column("pid", "PID", 7, align="right"),
    Column("version", "VERSION", 8, flex=1, max_width=12),
    Column("load", "LOAD", 5, align="right"),
    Column("queues", "QUEUES", 10, flex=2, max_width=40, drop=2),
    Column("heartbeat", "HEARTBEAT", 9, align="right"),
    Column("started", "STARTED", 7, align="right", drop=1),
)


def engine_cell(line: EngineLine, column: str, now: float) -> Text | str:
    if column == "state":
        state = engine_state(line, now)
        return Text(state, style=STATES[state], end="")
    if column in ("id", "host", "version"):
        return literal(getattr(line, column), limit=80)
    if column == "pid":
        return str(line.pid)
    if column == "load":
        return str(line.load) if line.stopped is None else Text("-", style="dim", end="")
    if column == "queues":
        return Text(printable(", ".join(line.queues), limit=120), end="") if line.queues else Text(
            "-", style="dim", end="")
    if column == "heartbeat":
        return f"{compact_age(max(0.0, now - line.heartbeat))} ago"
    if column == "started":
        return compact_age(max(0.0, now - line.started))
    return ""


def engine_sort(line: EngineLine, column: str) -> Any:
    """By `column`; STATE (the default) puts the running engines with the oldest heartbeat first: a STALE engine's
    heartbeat is older than any alive one's, so it leads without the sort seeing the clock; stopped ones last."""
    if column == "load":
        return (line.stopped is not None, -line.load, line.id)
    if column in ("id", "host", "version"):
        return (str(getattr(line, column)).lower(), line.id)
    return (line.stopped is not None, line.heartbeat, line.id)


def engine_words(line: EngineLine) -> str:
    return " ".join((line.id, line.host, str(line.pid), line.user, line.version, *line.queues,
                     "stopped" if line.stopped is not None else "running")).lower()


class EnginesView(TableView):
    DEFAULT_CSS = """
    EnginesView > #engines-table {
        height: 1fr;
    }
    """

    BINDINGS = [
        Binding("enter", "open_runs", "Runs", id="engine_runs",
                tooltip="Show the selected engine's runs (the runs view filtered to it; e there cycles engines)"),
    ]

    SORTS = (
        ("state", False, "state, STALE first"),
        ("load", False, "load, busiest first"),
        ("id", False, "engine, A to Z"),
        ("host", False, "host, A to Z"),
    )

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="engines")
        self.feed = EnginesFeed(ctx)  # type: ignore[assignment]
        self.poller._fetch = self.feed.poll  # type: ignore[assignment]
        self.hint = "Loading engines…"

    def compose(self) -> ComposeResult:
        yield TextLines(id="engines-title")
        yield self.filter_box()
        yield VirtualTable(COLUMNS, cell=engine_cell, sort_value=engine_sort, matches=self.matches,
                           now=self.ctx.clock, sort_column="state",
                           empty_text="no engine has run on this store yet", id="engines-table")

    @property
    def table(self) -> VirtualTable:
        return self.query_one("#engines-table", VirtualTable)

    def on_mount(self) -> None:
        self._title([])

    def filter_words(self, row: Any) -> str:
        return engine_words(row)

    def refresh_title(self) -> None:
        self._title(list(self.table.values()))

    def on_unmount(self) -> None:
        super().on_unmount()
        self.feed.close()  # type: ignore[attr-defined]

    def apply(self, lines: list[EngineLine]) -> None:
        self.loaded = True
        table = self.table
        keyed = {line.id: line for line in lines}
        table.remove([key for key in list(table.keys()) if key not in keyed])
        table.upsert(keyed.items())
        self._title(lines)
        self._update_hint()

    def tick(self) -> None:
        super().tick()  # heartbeat ages and states move with the clock
        self.refresh_title()
        self._update_hint()

    def _counts(self, lines: list[EngineLine]) -> dict[str, int]:
        now = self.ctx.clock()
        counts = {"alive": 0, "STALE": 0, "stopped": 0}
        for line in lines:
            counts[engine_state(line, now)] += 1
        return counts

    def _title(self, lines: list[EngineLine]) -> None:
        counts = self._counts(lines)
        text = Text(end="")
        text.append("ENGINES ", style="bold")
        if not lines:
            text.append("none yet", style="dim")
        else:
            text.append(f"{counts['alive']} alive", style="green")
            if counts["STALE"]:
                text.append(" · ")
                text.append(f"{counts['STALE']} STALE", style="bold white on red")
            text.append(f" · {counts['stopped']} stopped", style="dim")
            text.append(f" · {sum(line.load for line in lines if line.stopped is None)} runs running")
        text.append_text(self.title_suffix())
        self.query_one("#engines-title", TextLines).update(text)

    def _update_hint(self) -> None:
        lines = list(self.table.values())
        now = self.ctx.clock()
        stale = [line for line in lines if engine_state(line, now) == "STALE"]
        if not self.loaded:
            self.hint = "Loading engines…"
        elif not lines:
            self.hint = "No engine has run on this store yet: start one (flightdeck run, flightdeck serve)."
        elif stale:
            line = stale[0]
            self.hint = (f"Engine {printable(line.id, limit=30)} (pid {line.pid} on {printable(line.host, limit=30)}) "
                         f"has sent no heartbeat for {compact_age(max(0.0, now - line.heartbeat))}: check that "
                         f"process; its {line.load} running run(s) stay running until it comes back under its id.")
        else:
            self.hint = "Enter shows the selected engine's runs · / filters · s changes the sort."

    def action_open_runs(self) -> None:
        key = self.table.cursor_key
        if key is None:
            self.notify("No engine selected: the table is empty.", severity="warning", markup=False)
            return
        self.post_message(ShowView("runs", f"{ENGINE_ARG}{key}"))

    @on(VirtualTable.RowSelected, "#engines-table")
    def _row_selected(self, event: VirtualTable.RowSelected) -> None:  # a double click
        self.post_message(ShowView("runs", f"{ENGINE_ARG}{event.key}"))

    def palette_commands(self) -> list[PaletteCommand]:
        key = self.table.cursor_key
        if key is None:
            return []
        return [PaletteCommand(f"Engines: runs of {printable(str(key), limit=30)}",
                               "The runs view, filtered to this engine's runs", self.action_open_runs)]
