"""View 9: Evals. Per hierarchy: the score trend of online sampling, the latest dataset eval and the latest drill
run, from STORE/evals.db (on a Postgres store: the database's evals tables); it answers "is quality dropping, and
since when?".

Data path: EvalsFeed (console/views_data/evals_feed.py) reads evals.db read-only on the view's poll, only when the
file changed (on Postgres: a read-only session, re-read when `PgEvalsDB.changes()` does). One row per hierarchy:
SAMPLED (the newest window's mean score and how many runs it scored), TREND (the last windows as a sparkline, oldest
left, its blocks spread over scores 0.5..1), QUALITY (dropping since WHEN, or steady), EVAL (the latest dataset
eval: mean score, passed/cases, age), DRILLS (held/ran and the failed ones). The pane under the table shows, for a
dropping hierarchy, where the drop is (the agents and routes whose score fell since the best window before it, from
the sampled runs' paths), then the selected hierarchy's windows, newest first, with the hierarchy hash of each (a
deploy shows as a new hash; a window that saw two files splits its score by file), and the latest eval's dataset and
models. Sort and filter: console/screens/arranged.py.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable

from console.polling import Poller
from console.screens.arranged import ARRANGE_BINDINGS, Arrangement, OneTableView, Sort, refill, selected_key, words_of
from console.screens.base import ConsoleContext, PaletteCommand, focus_now
from console.views_data.evals_feed import (
    BAR,
    DROP,
    TREND,
    EvalsFeed,
    EvalsSnapshot,
    HierarchyQuality,
    Window,
    models_words,
)
from console.views_data.evals_where import GroupMove
from console.widgets.safe import printable
from console.widgets.text_pane import TextLines
from engine.timefmt import clock, compact_age, timestamp

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_FLOOR = 0.5  # the lowest block is this score or less: the blocks spread 0.5..1, where a drop matters
NEVER = float("inf")


def sparkline(scores: list[float]) -> str:
    span = 1.0 - SPARK_FLOOR
    return "".join(BLOCKS[min(len(BLOCKS) - 1, max(0, int((score - SPARK_FLOOR) / span * len(BLOCKS))))]
                   for score in scores)


def move_words(move: GroupMove) -> str:
    """`agent general_specialist 1.00→0.33 n=30`."""
    before = f"{move.before:.2f}→" if move.before is not None else ""
    return f"{move.dimension} {printable(move.key, limit=60)} {before}{move.now:.2f} n={move.cases}"


def window_words(window: Window, *, split: bool) -> str:
    """`00:15 0.39 n=33 #7992cf1d`; with `split`, a window that saw several files says each one's score."""
    head = f"{clock(window.started, with_seconds=False)} {window.score:.2f} n={window.cases}"
    if len(window.rows) == 1:
        return f"{head} #{window.hierarchy_hash[:8]}"
    if split:
        return head + " (" + ", ".join(f"#{r.hierarchy_hash[:8]} {r.score:.2f} n={r.cases}" for r in window.rows) + ")"
    return f"{head} #{window.hierarchy_hash[:8]} (+{len(window.rows) - 1} more)"


def quality_words(row: HierarchyQuality, now: float) -> tuple[str, str]:
    """(words, style) of the QUALITY cell."""
    if row.dropping_since is not None:
        return f"DROPPING since {clock(row.dropping_since, with_seconds=False)}", "bold red"
    if not row.windows:
        return "no sampled runs", "dim"
    return "steady", "green"


# Dropping first (the longest-dropping on top): the view's question. Ties by name, so the order is stable.
EVALS_SORTS = (
    Sort("dropping first", lambda r: (r.dropping_since if r.dropping_since is not None else NEVER, r.hierarchy)),
    Sort("most recent", lambda r: (-r.newest, r.hierarchy)),
    Sort("worst sampled score", lambda r: (r.latest.score if r.latest else NEVER, r.hierarchy)),
    Sort("hierarchy", lambda r: r.hierarchy.lower()),
)


def evals_words(row: HierarchyQuality) -> str:
    return words_of(row.hierarchy, "dropping" if row.dropping_since is not None else "steady",
                    row.eval.dataset if row.eval else None, *row.failed_drills)


class EvalsView(OneTableView):
    DEFAULT_CSS = """
    EvalsView > #evals-title {
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    EvalsView > #evals-table {
        height: 1fr;
    }
    EvalsView > #evals-detail {
        height: 7;
        padding: 0 1;
        background: $boost;
    }
    """

    BINDINGS = [*ARRANGE_BINDINGS]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx, view_id="evals")
        self.feed = EvalsFeed(ctx)
        self.snapshot: EvalsSnapshot | None = None
        self.shown: list[HierarchyQuality] = []
        self.arrangement = Arrangement(EVALS_SORTS, evals_words)
        self.poller: Poller[EvalsSnapshot] = Poller(self, name="evals", fetch=self.feed.poll, render=self.apply,
                                                    interval=max(1.0, ctx.poll_interval),
                                                    report_error=ctx.report_error)
        self.hint = "Loading eval results…"

    @property
    def loaded(self) -> bool:
        return self.snapshot is not None

    def compose(self) -> ComposeResult:
        yield TextLines(Text("EVALS loading…", style="dim"), id="evals-title")
        yield self.filter_box()
        table: DataTable[Any] = DataTable(id="evals-table", cursor_type="row", zebra_stripes=True)
        # Narrow enough that the verdict (QUALITY) and the first drill figures fit 100 columns; the pane below has
        # the rest in full.
        # At 100 columns the first five and DRILLS' figures ("15/15 held 20m") fit; the failed drills' names after
        # them are cut there (whole in the pane below). Fixed widths: an auto width follows the rows it measured.
        table.add_column("HIERARCHY", key="hierarchy", width=16)
        table.add_column("SAMPLED", key="sampled", width=10)  # "0.39 n=33"
        table.add_column("TREND", key="trend", width=TREND)
        table.add_column("QUALITY", key="quality", width=20)  # "DROPPING since 00:15"
        table.add_column("EVAL", key="eval", width=14)  # "1.00 11/11 20m": score, passed/cases, age
        table.add_column("DRILLS", key="drills", width=40)
        yield table
        yield TextLines(id="evals-detail")

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#evals-table", DataTable)

    def on_activate(self, arg: str | None) -> None:
        self.poller.start()

    def on_deactivate(self) -> None:
        self.poller.stop()
        self.feed.close()  # a Postgres store's session is not held while the view is not shown

    def on_unmount(self) -> None:
        self.poller.stop()
        self.feed.close()

    def focus_default(self) -> None:
        focus_now(self.table)

    # -- data ---------------------------------------------------------------------------------------------------

    def apply(self, snapshot: EvalsSnapshot) -> None:
        self.snapshot = snapshot
        table = self.table
        keep = selected_key(table)
        self.shown = self.arrangement.arrange(snapshot.rows)
        refill(table, [(row.hierarchy, self._cells(row)) for row in self.shown], keep)
        self._show_selected()
        self._update_title()

    def _cells(self, row: HierarchyQuality) -> tuple[Any, ...]:
        now = self.ctx.clock()
        latest = row.latest
        if latest is not None:
            style = "bold red" if latest.score < BAR else ""
            sampled = Text(f"{latest.score:.2f} n={latest.cases}", style=style)
            trend = Text(sparkline([w.score for w in row.windows[-TREND:]]), style="red" if row.dropping_since
                         is not None else "green")
        else:
            sampled, trend = Text("-", style="dim"), Text("-", style="dim")
        words, style = quality_words(row, now)
        if row.eval is not None:
            evaluated = Text(f"{row.eval.score:.2f} {row.eval.passed}/{row.eval.cases} "
                             f"{compact_age(now - row.eval.ended)}",
                             style="" if row.eval.passed == row.eval.cases else "yellow")
        else:
            evaluated = Text("-", style="dim")
        if row.drill is not None:
            drills = Text(f"{row.drill.passed}/{row.drill.cases} held {compact_age(now - row.drill.ended)}",
                          style="green" if not row.failed_drills else "bold red")
            if row.failed_drills:
                drills.append(" " + printable(", ".join(row.failed_drills), limit=60))
        else:
            drills = Text("-", style="dim")
        return (Text(printable(row.hierarchy, limit=60), style="bold"), sampled, trend, Text(words, style=style),
                evaluated, drills)

    @on(DataTable.RowHighlighted, "#evals-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        key = selected_key(self.table)
        row = next((r for r in self.shown if r.hierarchy == key), None)
        self.query_one("#evals-detail", TextLines).update(self._detail(row) if row is not None else Text(""))

    def _detail(self, row: HierarchyQuality) -> Text:
        text = Text(end="")
        text.append(printable(row.hierarchy, limit=60), style="bold")
        if row.dropping_since is not None and row.latest is not None:
            text.append(f" · quality DROPPING since {timestamp(row.dropping_since)}", style="bold red")
            if row.peak is not None:
                text.append(f" (from {row.peak:.2f} to {row.latest.score:.2f})")
            if row.peak_window is not None and row.where is not None:
                text.append("\ndropped in: ", style="dim")
                text.append(" · ".join(move_words(m) for m in row.where) if row.where else
                            f"no agent or route fell by more than {DROP:.2f} on its own", style="bold")
                text.append(f" (vs window {clock(row.peak_window.started, with_seconds=False)})", style="dim")
            elif row.where:
                text.append("\nlowest in the newest window: ", style="dim")
                text.append(" · ".join(move_words(m) for m in row.where), style="bold")
        elif row.windows:
            text.append(" · steady", style="green")
        text.append("\nsampled windows, newest first: ", style="dim")
        if row.windows:
            newest = list(reversed(row.windows[-4:]))  # four fit 160 columns; the trend has more
            text.append(" · ".join(window_words(w, split=n == 0) for n, w in enumerate(newest)))
        else:
            text.append("none (set `evals: {sample, checks}` in the hierarchy)", style="dim")
        text.append("\neval: ", style="dim")
        if row.eval is not None:
            e = row.eval
            text.append(f"{printable(e.id, limit=40)} on {printable(e.dataset, limit=60)}: {e.score:.2f}, "
                        f"{e.passed}/{e.cases} passed, {timestamp(e.ended)}, #{e.hierarchy_hash[:8]}")
            models = models_words(e)
            if models:
                text.append(f"\n  models: {printable(models, limit=160)}", style="dim")
        else:
            text.append("none (flightdeck eval HIERARCHY --dataset FILE)", style="dim")
        text.append("\ndrills: ", style="dim")
        if row.drill is not None:
            d = row.drill
            text.append(f"{d.passed}/{d.cases} held, {timestamp(d.ended)}, #{d.hierarchy_hash[:8]}")
            if row.failed_drills:
                text.append(f"; FAILED: {printable(', '.join(row.failed_drills), limit=160)}", style="bold red")
        else:
            text.append("none recorded (flightdeck drill HIERARCHY --store DIR)", style="dim")
        return text

    def _update_title(self) -> None:
        snapshot = self.snapshot
        title = Text(end="")
        title.append("EVALS ", style="bold")
        if snapshot is None:
            title.append("loading…", style="dim")
        elif snapshot.no_file:
            title.append(("no evals yet" if self.ctx.postgres else "no evals.db yet")
                         + ": no eval, drill or sampled run recorded in this store", style="dim")
        else:
            dropping = [r for r in snapshot.rows if r.dropping_since is not None]
            title.append(f"{len(snapshot.rows)} " + ("hierarchy" if len(snapshot.rows) == 1 else "hierarchies"))
            if dropping:
                title.append(f" · {len(dropping)} dropping", style="bold red")
            title.append(" · " + self.arrangement.title_words(len(self.shown), len(snapshot.rows), filter_first=True),
                         style="bold" if self.filter_text else "dim")
        self.query_one("#evals-title", TextLines).update(title)
        self._update_hint()

    def _update_hint(self) -> None:
        snapshot = self.snapshot
        dropping = sorted((r for r in snapshot.rows if r.dropping_since is not None),
                          key=lambda r: r.dropping_since or 0.0) if snapshot else []
        if dropping:
            first = dropping[0]
            # Short enough for 100 columns: the figures are in the pane, the incident in view 6.
            where = f", in {first.where[0].dimension} {first.where[0].key}" if first.where else ""
            self.hint = (f"{first.hierarchy}: quality dropping since {clock(first.dropping_since, with_seconds=False)}"
                         f"{where} · runbook quality-dropping: view 6")
        elif snapshot is not None and not snapshot.rows:
            self.hint = ("No results yet: `flightdeck eval`, `flightdeck drill --store` and a hierarchy's "
                         "`evals: {sample}` write them here.")
        else:
            self.hint = "Sampled scores per window, the latest eval and drills per hierarchy · s sort · / filter."

    def palette_commands(self) -> list[PaletteCommand]:
        def dropping_first() -> None:
            self.arrangement.index = 0
            self.arrangement.reverse = False
            self.rearrange()

        return [PaletteCommand("Evals: dropping first", "Sort the hierarchies whose quality is dropping first",
                               dropping_first)]

    # -- sort and filter (console/screens/arranged.py) ----------------------------------------------------------

    def rearrange(self) -> None:
        if self.snapshot is not None:
            self.apply(self.snapshot)
        else:
            self._update_title()
