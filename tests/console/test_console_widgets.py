"""Console building blocks on their own: safe text, the virtual table, the poller, the header slots, the registry."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult

from console.polling import ErrorNotifier, Poller
from console.widgets.safe import compact_json, literal, printable
from console.widgets.virtual_table import Column, VirtualTable
from tests.console_helpers import EVIL, wait_for

pytestmark = pytest.mark.anyio


# -- untrusted text -------------------------------------------------------------------------------------------

def test_printable_escapes_controls_and_keeps_markup_literal() -> None:
    text = printable("a\x1b[2Jb\x07c\u202ed\x9be\nf\tg")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\x9b" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text and "⏎ " in text and "    g" in text
    assert printable("x" * 50, limit=10) == "x" * 9 + "…"
    assert "\n" in printable("a\nb", single_line=False)
    t = literal(EVIL)
    assert isinstance(t, Text) and "[bold red]x[/]" in t.plain and not t.spans
    assert compact_json({"k": "[/]"}) == '{"k":"[/]"}'


# -- the virtual table ----------------------------------------------------------------------------------------

COLUMNS = [Column("n", "N", 8, align="right"), Column("name", "NAME", 10, flex=1)]


def _cell(row: dict[str, Any], column: str, now: float) -> Text | str:
    return Text(str(row[column]), end="")


class TableApp(App[None]):
    def __init__(self, reverse: bool = True) -> None:
        super().__init__()
        self.reverse = reverse

    def compose(self) -> ComposeResult:
        yield VirtualTable(COLUMNS, cell=_cell, sort_value=lambda r, c: r[c], now=time.time,
                           matches=lambda r, f: f in r["name"], sort_column="n", reverse=self.reverse)


def rows(start: int, count: int) -> list[tuple[int, dict[str, Any]]]:
    return [(i, {"n": i, "name": f"row{i}"}) for i in range(start, start + count)]


async def test_table_sort_filter_and_cursor_identity() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(VirtualTable)
        table.upsert(rows(0, 50))
        assert table.visible_keys()[:3] == [49, 48, 47]
        table.focus()
        await pilot.press("down", "down", "down")
        assert table.cursor_key == 46
        table.upsert(rows(50, 5))  # newer rows above: the cursor stays on 46
        assert table.cursor_key == 46 and table.cursor == 8
        table.upsert([(46, {"n": 46, "name": "renamed"})])  # an update in place keeps position
        assert table.cursor_key == 46
        table.set_filter("row4")
        assert set(table.visible_keys()) == {4} | set(range(40, 50)) - {46}
        table.set_filter(None)
        table.set_sort("name", False)
        assert table.visible_keys()[0] == 46  # "renamed" < "row..."
        table.remove([46])
        assert 46 not in table and table.row_count == 54
        await pilot.press("end")
        assert table.cursor == table.row_count - 1
        lines = [table.render_line(y).text for y in range(3)]
        assert "NAME▲" in lines[0] and lines[1].strip()


async def test_table_100_new_rows_under_50ms_at_any_size() -> None:
    app = TableApp()
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.query_one(VirtualTable)
        table.focus()
        for size in (0, 1_000, 20_000):
            table.clear()
            table.upsert(rows(0, size))
            await pilot.pause()
            table.move_cursor(5)
            best = float("inf")
            for attempt in range(3):
                new = rows(1_000_000 + attempt * 1000, 100)
                started = time.perf_counter()
                table.upsert(new)
                for y in range(table.size.height):  # what the next paint does: every visible line
                    table.render_line(y)
                best = min(best, time.perf_counter() - started)
            assert best < 0.05, f"100 rows into {size:,} took {best * 1000:.1f} ms"


async def test_table_empty_text() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 10)):
        table = app.query_one(VirtualTable)
        table.empty_text = "no runs yet: start one"
        assert "no runs yet" in table.render_line(2).text


# -- the poller ------------------------------------------------------------------------------------------------

class PollApp(App[None]):
    pass


async def test_poller_never_overlaps_and_stops() -> None:
    app = PollApp()
    active = [0]
    peak = [0]
    rendered: list[int] = []
    errors: list[BaseException] = []

    def fetch() -> int:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        active[0] -= 1
        return len(rendered)

    async with app.run_test() as pilot:
        poller: Poller[int] = Poller(app, name="t", fetch=fetch, render=rendered.append, interval=0.0,
                                     report_error=lambda e, w: errors.append(e))
        poller.start()
        await wait_for(pilot, lambda: len(rendered) >= 5)
        poller.poke()
        poller.stop()
        count = len(rendered)
        await pilot.pause(0.1)
        assert len(rendered) <= count + 1
        assert peak[0] == 1 and not errors


async def test_poller_reports_errors_and_backs_off() -> None:
    app = PollApp()
    calls = [0]
    errors: list[tuple[BaseException, str]] = []

    def fetch() -> None:
        calls[0] += 1
        raise RuntimeError("boom [bold]x[/]")

    async with app.run_test() as pilot:
        poller: Poller[None] = Poller(app, name="t", fetch=fetch, render=lambda r: None, interval=0.0,
                                      report_error=lambda e, w: errors.append((e, w)))
        poller.start()
        await wait_for(pilot, lambda: errors)
        await pilot.pause(0.3)
        assert calls[0] == 1  # backed off (1 s) instead of spinning
        assert str(errors[0][0]) == "boom [bold]x[/]" and errors[0][1] == "t"
        poller.stop()


def _running_loops(app: App[Any], name: str) -> list[Any]:
    return [w for w in app.workers if w.name == f"poll:{name}" and not w.is_finished]


async def test_poller_stopped_before_its_loop_ran_leaves_no_coroutine_behind() -> None:
    """A view shown and hidden within one turn of the event loop (keys typed fast): start() then stop() before the
    poller's task ever ran. The loop's coroutine must not exist yet (else: "coroutine 'Poller._loop' was never
    awaited", an unraisable exception under -W error, several of them an ExceptionGroup)."""
    import gc
    import warnings

    app = PollApp()
    fetched = [0]

    def fetch() -> int:
        fetched[0] += 1
        return fetched[0]

    async with app.run_test() as pilot:
        poller: Poller[int] = Poller(app, name="t", fetch=fetch, render=lambda r: None, interval=10.0,
                                     busy_interval=10.0, report_error=lambda e, w: None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                poller.start()
                poller.stop()
            await pilot.pause(0.05)
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]
        assert fetched[0] == 0 and not _running_loops(app, "t")
        poller.start()  # and it still works
        await wait_for(pilot, lambda: poller.polls == 1)
        assert len(_running_loops(app, "t")) == 1
        poller.stop()


async def test_poller_restarted_as_its_wait_ends_runs_one_loop() -> None:
    """poke() (the wait ends), stop() and start() in one turn: the old loop must end. On Python 3.11,
    asyncio.wait_for returned normally when cancelled in that turn, and a loop that checked a shared `active` flag
    went on polling next to the new one, and after every later stop() (a hidden view that polls)."""
    app = PollApp()
    fetched = [0]

    def fetch() -> int:
        fetched[0] += 1
        return fetched[0]

    async with app.run_test() as pilot:
        poller: Poller[int] = Poller(app, name="t", fetch=fetch, render=lambda r: None, interval=10.0,
                                     busy_interval=10.0, report_error=lambda e, w: None)
        poller.start()
        await wait_for(pilot, lambda: poller.polls == 1)  # the loop now waits (10 s)
        poller.poke()
        poller.stop()
        poller.start()
        await wait_for(pilot, lambda: poller.polls >= 2)
        await pilot.pause(0.2)
        assert fetched[0] == 2 and len(_running_loops(app, "t")) == 1  # one poll, by the new loop only
        poller.stop()
        await pilot.pause(0.05)
        assert not _running_loops(app, "t")


def test_error_notifier_dedupes_and_tracks_store_problems() -> None:
    from engine.errors import InputError, StoreError

    shown: list[tuple[str, dict[str, Any]]] = []
    problems: list[str | None] = []
    notifier = ErrorNotifier(lambda m, **k: shown.append((m, k)), problems.append)
    notifier(StoreError("cannot read /x"), "runs")
    notifier(StoreError("cannot read /x"), "header")  # the same message again: not repeated
    assert len(shown) == 1 and shown[0][1]["markup"] is False and shown[0][1]["severity"] == "error"
    assert notifier.store_problem == "cannot read /x" and problems == ["cannot read /x"]
    notifier(InputError("ambiguous"), "run")
    notifier(ValueError("[/] bad"), "run")
    assert shown[1][1]["severity"] == "warning" and "ValueError: [/] bad" in shown[2][0]
    notifier.recovered()
    assert notifier.store_problem is None and problems[-1] is None


# -- header slots and the view registry ------------------------------------------------------------------------

def test_header_slot_registry_and_isolation(tmp_path: Path) -> None:
    from console.widgets import header
    from engine.store import open_reader
    from tests.console_helpers import FIXED_NOW, fixed_store

    store = fixed_store(tmp_path / "store")
    saved = list(header.HEADER_SLOTS)
    try:
        def broken(ctx: header.HeaderContext) -> header.SlotValue:
            raise RuntimeError("approvals table missing")

        header.register_header_slot(header.HeaderSlot("approvals", "approvals", broken, row=2))
        header.register_header_slot(header.HeaderSlot(
            "halt", "halt", lambda ctx: header.SlotValue("ON", "crit", alarm="Global halt: press 5", halt="all runs "
                                                                                                     "stopped"),
            row=2), before="incidents")
        assert [s.id for s in header.HEADER_SLOTS].index("halt") == [s.id for s in header.HEADER_SLOTS].index(
            "incidents") - 1
        reader = open_reader(store)
        try:
            snap = header.collect(reader, None, FIXED_NOW, store)
        finally:
            reader.close()
        assert snap.values["approvals"].text == "error" and "approvals table missing" in (snap.error or "")
        assert snap.values["runs"].text.startswith("1 active · 3 completed · 4 failed")
        assert snap.halt == "all runs stopped"
        assert snap.alarm is not None
        assert snap.values["spend"].text.endswith("/min · cap n/a")
    finally:
        header.HEADER_SLOTS[:] = saved


def test_view_registry_commands() -> None:
    from console.screens import registry

    assert [v.key for v in registry.VIEWS] == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]
    assert registry.find_command(":run").id == "run"  # type: ignore[union-attr]
    assert registry.find_command("ap").id == "approvals"  # type: ignore[union-attr]
    assert registry.find_command("nope") is None
    saved = list(registry.VIEWS)
    try:
        spec = registry.view_by_id("audit")
        assert spec is not None
        from dataclasses import replace

        registry.register_view(replace(spec, title="Audit log", commands=("audit", "log")))
        assert registry.VIEWS[6].title == "Audit log" and registry.find_command("log") is not None
        assert ":run ID" in registry.command_words()
    finally:
        registry.VIEWS[:] = saved


def test_labels_and_event_lines() -> None:
    from console.widgets.span_detail import event_line, span_detail
    from console.widgets.span_tree import span_label
    from engine.store.trace_rows import EventRow

    span = {"id": "s1", "kind": "tool", "name": EVIL, "status": "denied", "started": 10.0, "ended": 10.5,
            "attributes": {"args": {"a": 1}, "reason": "because", "error": "not allowed"}}
    label = span_label(span)
    assert "⊘ denied" in label.plain and "[bold red]x[/]" in label.plain and "500ms" in label.plain
    detail = span_detail(span, raw=False, now=11.0).plain
    assert "TOOL CALL" in detail and "REASON" in detail and "ERROR" in detail and "not allowed" in detail
    line = event_line(EventRow(seq=1, ts=0.0, run_id=None, span_id=None, kind="span.ended", agent="a", name="n",
                               data={"kind": "llm", "status": "ok", "tokens_in": 5, "tokens_out": 2, "cost_usd": 0.5}))
    assert "llm  n  ✔ ok  5→2 tok  $0.5000" in line
    assert threading.current_thread() is threading.main_thread()


# -- the event tail and the span tree: what changes is what gets repainted ----------------------------------

def _screen_text(app: App[None]) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


class TailApp(App[None]):
    def compose(self) -> ComposeResult:
        from console.widgets.span_detail import EventTail

        yield EventTail(id="tail")


async def test_event_tail_keeps_showing_new_lines_at_its_limit(monkeypatch: Any) -> None:
    from console.widgets.span_detail import EventTail

    monkeypatch.setattr(EventTail, "MAX_LINES", 20)
    app = TailApp()
    async with app.run_test(size=(60, 10)) as pilot:
        tail = app.query_one(EventTail)
        for i in range(30):  # Log (Textual 8.2) stopped repainting once it dropped lines at its limit
            tail.write_lines([f"line {i:03d}"])
            await pilot.pause()
        assert len(tail.lines) == 20 and "line 029" in _screen_text(app)
        # A reader who stopped following keeps their lines in place while older ones are dropped.
        tail.auto_scroll = False
        tail.scroll_to(y=5, animate=False, immediate=True)
        await pilot.pause()
        top = tail.lines[5]
        tail.write_lines(["line 030", "line 031"])
        await pilot.pause()
        assert tail.lines[int(tail.scroll_offset.y)] == top and top in _screen_text(app)
        assert "line 031" not in _screen_text(app)
        tail.auto_scroll = True
        tail.scroll_end(animate=False, immediate=True)
        tail.write_lines(["line 032"])
        await pilot.pause()
        assert "line 032" in _screen_text(app)


class TreeApp(App[None]):
    def compose(self) -> ComposeResult:
        from console.widgets.span_tree import SpanTree

        yield SpanTree(id="tree")


def _span(i: int, parent: str | None = "agent", **extra: Any) -> dict[str, Any]:
    kind = "run" if parent is None else "agent" if parent == "root" else "llm"
    return {"id": "root" if parent is None else "agent" if parent == "root" else f"s{i}", "parent_id": parent,
            "kind": kind, "name": f"step{i}", "status": "ok", "started": float(i), "ended": float(i) + 0.5,
            **extra}


async def test_span_tree_repaints_only_the_lines_that_changed(monkeypatch: Any) -> None:
    from textual.widgets import Tree

    from console.widgets.span_tree import SpanTree

    app = TreeApp()
    async with app.run_test(size=(60, 12)) as pilot:
        tree = app.query_one(SpanTree)
        tree.apply([_span(0, None), _span(0, "root")] + [_span(i) for i in range(1, 40)])
        await pilot.pause()
        assert "step1" in _screen_text(app)
        rendered: list[int] = []  # lines Tree itself renders (SpanTree's cache answers the others)
        original = Tree._render_line

        def counting(self: Any, y: int, x1: int, x2: int, style: Any) -> Any:
            rendered.append(y)
            return original(self, y, x1, x2, style)

        monkeypatch.setattr(Tree, "_render_line", counting)
        tree.apply([_span(i) for i in range(40, 60)])  # below the window: nothing on screen changes
        await pilot.pause()
        assert rendered == []
        tree.apply([{**_span(2), "status": "error", "last_seq": 99, "_partial": True}])  # one line on screen
        await pilot.pause()
        assert rendered and set(rendered) == {tree.nodes["s2"].line}
        assert tree.nodes["s2"].label.plain.split("  ")[1] in _screen_text(app)  # its new status word
        assert "step59" not in _screen_text(app)


async def test_event_tail_clear_repaints() -> None:
    from console.widgets.span_detail import EventTail

    app = TailApp()
    async with app.run_test(size=(60, 10)) as pilot:
        tail = app.query_one(EventTail)
        tail.write_lines(["first run's event"])
        await pilot.pause()
        assert "first run's event" in _screen_text(app)
        tail.clear()  # opening another run
        await pilot.pause()
        assert "first run's event" not in _screen_text(app)


def test_the_run_title_is_a_breadcrumb_down_to_the_selected_span() -> None:
    """Runs › RUN id › the selected span (issue 15: where you are, view > run > span); the status after it is
    labelled the run's, so a completed run with a failed tool selected does not read as a completed tool."""
    from console.widgets.span_detail import run_summary, span_crumb
    from engine.store.trace_rows import RunRow

    run = RunRow(id="r1", hierarchy="deal-desk", hierarchy_hash="h", engine_id="e", engine_version="1",
                 status="completed", tenant=None, seed=0, input=None, output=None, error=None, started=100.0,
                 ended=102.0, tokens_in=0, tokens_out=0, cost_usd=0.0, model_calls=0, tool_calls=0,
                 agents_active=0, attributes=None, last_seq=0, resumed=0, replayed_steps=0)
    crumb = span_crumb({"id": "s1", "kind": "tool", "name": "price_quote"})
    assert crumb == "tool price_quote"
    assert span_crumb({"id": "s0", "kind": "run", "name": "deal-desk"}) is None and span_crumb(None) is None
    title = run_summary(run, "r1", 103.0, 160, (), crumb).plain
    assert title.startswith("Runs › RUN r1 › tool price_quote   run  ✔ completed  deal-desk"), title
    assert run_summary(run, "r1", 103.0).plain.startswith("Runs › RUN r1  ")


def test_a_degraded_runs_wide_status_leaves_room_for_cost_at_100_columns() -> None:
    # `completed (degraded)` widens STATUS to 22 cells; AGENTS (which says something only while a run runs) goes
    # before COST is cut at the right edge.
    from console.screens.runs_table import run_columns
    from console.widgets.table_lines import column_widths

    shown = [column.key for column, _ in column_widths(run_columns(False, degraded=True), 100)]
    assert {"status", "id", "hierarchy", "cost"} <= set(shown) and "agents" not in shown, shown
    assert "agents" in [column.key for column, _ in column_widths(run_columns(False, degraded=True), 160)]


@pytest.mark.parametrize("fleet", [False, True])
def test_resumed_and_degraded_runs_keep_cost_and_the_run_id_at_100_columns(fleet: bool) -> None:
    # Both wide extras at once (RESUMED and a 22-cell STATUS): the counts the run view repeats go first, never COST.
    from console.screens.runs_table import run_columns
    from console.widgets.table_lines import GAP, column_widths

    for width in (96, 98, 100):
        layout = column_widths(run_columns(True, degraded=True, fleet=fleet), width)
        shown = [column.key for column, _ in layout]
        assert {"status", "id", "hierarchy", "tenant", "cost", "resumed", "tokens"} <= set(shown), (width, shown)
        assert sum(w for _c, w in layout) + GAP * (len(layout) + 1) <= width, (width, layout)  # nothing cut
    wide = [column.key for column, _ in column_widths(run_columns(True, degraded=True, fleet=fleet), 160)]
    assert {"agents", "model_calls", "tool_calls", "incidents"} <= set(wide), wide
