"""The console against real store files: views, actions, live updates, errors. Pilot tests (App.run_test) that wait
on conditions, never on fixed sleeps."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from textual import events

from console.app import FlightdeckApp, create_app
from console.screens.registry import VIEWS
from tests.console_helpers import (
    FIXED_NOW,
    engine_store,
    evil_store,
    fixed_clock,
    fixed_store,
    wait_for,
    write_deal_run,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fixed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixed_store(tmp_path_factory.mktemp("fixed") / "store")


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    store = tmp_path_factory.mktemp("real") / "store"
    results = engine_store(store, runs=6, concurrency=3)
    return store, results


def make_app(store: Path, **kwargs: Any) -> FlightdeckApp:
    kwargs.setdefault("operator", "alice")
    kwargs.setdefault("read_only", False)
    kwargs.setdefault("poll_interval", 0.05)
    return create_app(store, **kwargs)


def plain(widget: Any) -> str:
    """The text a Static (its content as given: a rich Text here) or a TextPane shows."""
    if isinstance(getattr(widget, "plain", None), str):
        return widget.plain  # type: ignore[no-any-return]
    content = widget.content
    return content.plain if hasattr(content, "plain") else str(content)


def runs_view(app: FlightdeckApp) -> Any:
    return app.main.view("runs")


def run_view(app: FlightdeckApp) -> Any:
    return app.main.view("run")


async def loaded(pilot: Any, app: FlightdeckApp, count: int) -> None:
    await wait_for(pilot, lambda: runs_view(app).table.total_count >= count, what=f"{count} runs in the table")


# -- view 1: runs -----------------------------------------------------------------------------------------------

async def test_runs_view_shows_engine_runs_with_words(real_dir: tuple[Path, list[Any]]) -> None:
    store, results = real_dir
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, len(results))
        table = runs_view(app).table
        assert set(table.keys()) == {r.run_id for r in results}
        # Newest first: the default sort is by start time, descending.
        starts = [table.get(k).run.started for k in table.visible_keys()]
        assert starts == sorted(starts, reverse=True)
        # Status is a word as well as a colour.
        first = table.get(table.visible_keys()[0])
        cell = table._cell(first, "status", time.time())
        assert "completed" in cell.plain and cell.style
        await wait_for(pilot, lambda: app.main.header.snapshot is not None, what="header")
        assert app.main.header.slot_text("runs").startswith("0 active · 6 completed")
        assert app.main.header.slot_text("approvals") == "none pending"
        # The view's hint reaches the hint line as a message (HintChanged): it may land a turn after the rows.
        await wait_for(pilot, lambda: "Enter opens" in app.main.hint_line.sentence, what="hint")


async def test_runs_filter_sort_and_problems(fixed_dir: Path) -> None:
    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        view = runs_view(app)
        table = view.table
        await pilot.press("slash")
        assert app.focused is view.query_one("#runs-filter")
        await pilot.press(*"globex")
        await wait_for(pilot, lambda: table.row_count == 2)
        assert {table.get(k).run.tenant for k in table.visible_keys()} == {"globex"}
        assert "2 of 10 shown" in plain(view.query_one("#runs-title"))
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.focused is table and table.row_count == 2
        await pilot.press("escape")
        assert table.row_count == 10
        await pilot.press("p")  # problems only
        assert {table.get(k).run.status for k in table.visible_keys()} == {"failed", "budget_exceeded",
                                                                          "loop_detected", "killed"}
        await pilot.press("p")
        assert table.row_count == 10
        # Substring over the status word too ("over budget" for budget_exceeded).
        await pilot.press("slash", *"over budget", "enter")
        assert table.visible_keys() == ["d4e5f6a1b2c3"]
        await pilot.press("escape")
        await pilot.press("s")  # status, problems first
        assert table.sort_column == "status"
        assert "sorted by status, problems first" in plain(view.query_one("#runs-title"))
        assert table.get(table.visible_keys()[0]).run.status == "failed"
        await pilot.press("s")  # cost, highest first
        assert table.sort_column == "cost" and table.reverse
        await pilot.press("S")
        assert not table.reverse and "reversed" in plain(view.query_one("#runs-title"))


async def test_empty_store_says_how_to_start(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store", runs=())
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: runs_view(app).loaded)
        table = runs_view(app).table
        assert table.empty_text == "no runs yet: start one with `flightdeck run deal-desk`"
        await wait_for(pilot, lambda: "flightdeck run deal-desk" in app.main.hint_line.sentence, what="hint")


async def test_live_rows_update_by_key_cursor_stays(tmp_path: Path) -> None:
    from tests.console_helpers import _open_writer

    store = fixed_store(tmp_path / "store")
    writer = _open_writer(store)
    try:
        for i in range(60):  # older history below, so the table can keep the cursor where it is on screen
            write_deal_run(writer, f"old{i:09d}", started=FIXED_NOW - 86400 - i)
    finally:
        writer.close()
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 70)
        table = runs_view(app).table
        await pilot.press("down", "down")
        chosen = table.cursor_key
        screen_line = table.cursor - int(table.scroll_offset.y)
        writer = _open_writer(store)
        try:
            for i in range(80):  # more than a screen: the table must scroll to keep the cursor in place
                write_deal_run(writer, f"new{i:09d}", started=FIXED_NOW - 1 + i / 100)
            writer.run_ended("c3d4e5f6a1b2", "completed", FIXED_NOW, {"ok": True}, None)  # the running one ends
        finally:
            writer.close()
        await wait_for(pilot, lambda: table.total_count == 150, what="80 new runs")
        await wait_for(pilot, lambda: table.get("c3d4e5f6a1b2").run.status == "completed", what="run ended")
        assert table.cursor_key == chosen  # the cursor stayed on its run...
        assert table.cursor - int(table.scroll_offset.y) == screen_line  # ...at the same place on screen
        await pilot.press("home")  # parked on the first row, the table follows new runs
        assert table.cursor == 0


async def test_table_follows_new_rows_when_cursor_on_top(tmp_path: Path) -> None:
    from tests.console_helpers import _open_writer

    store = fixed_store(tmp_path / "store")
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        table = runs_view(app).table
        assert table.cursor == 0
        writer = _open_writer(store)
        try:
            write_deal_run(writer, "aaaaaaaa0000", started=FIXED_NOW)
        finally:
            writer.close()
        await wait_for(pilot, lambda: table.total_count == 11)
        assert table.cursor_key == "aaaaaaaa0000"


async def test_older_runs_page_in_from_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import console.views_data.runs_feed as runs_module
    from tests.console_helpers import _open_writer

    monkeypatch.setattr(runs_module, "PAGE", 20)
    store = tmp_path / "store"
    writer = _open_writer(store)
    try:
        for i in range(50):
            write_deal_run(writer, f"page{i:08d}", started=FIXED_NOW - 1000 + i)
    finally:
        writer.close()
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: runs_view(app).loaded)
        table = runs_view(app).table
        assert table.total_count == 20 and "older runs load as you scroll" in plain(
            runs_view(app).query_one("#runs-title"))
        for _ in range(3):
            await pilot.press("end")
            await wait_for(pilot, lambda: not runs_view(app).paging)
        await wait_for(pilot, lambda: table.total_count == 50, what="every page")
        assert runs_view(app).exhausted
        assert table.visible_keys()[-1] == "page00000000"  # the oldest, at the bottom


# -- view 2: run ------------------------------------------------------------------------------------------------

async def test_enter_opens_run_tree_detail_events(real_dir: tuple[Path, list[Any]]) -> None:
    store, results = real_dir
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, len(results))
        table = runs_view(app).table
        run_id = table.cursor_key
        await pilot.press("enter")
        view = run_view(app)
        assert app.main.active_id == "run"
        await wait_for(pilot, lambda: view.tree.root.data is not None and view.events.count > 0, what="run loaded")
        from tests.engine_helpers import spans

        recorded = spans(store, run_id)
        await wait_for(pilot, lambda: len(view.tree.nodes) == len(recorded), what="all spans in the tree")
        kinds = {node.data["kind"] for node in view.tree.nodes.values()}
        assert {"run", "agent", "llm", "tool", "delegation"} <= kinds
        assert view.tree.root.data["kind"] == "run"
        # Detail of a selected llm span: tokens, cost, latency.
        llm = next(n for n in view.tree.nodes.values() if n.data["kind"] == "llm")
        view.tree.reveal(llm)
        await pilot.pause()
        text = plain(view.detail)
        assert "MODEL CALL" in text and "latency" in text and " in → " in text
        await pilot.press("j")
        assert view.detail.raw
        raw = plain(view.detail)
        assert '"kind": "llm"' in raw
        await pilot.press("j")
        assert not view.detail.raw
        # The usage panel shows the run's totals so far and points at the budget gauges.
        usage = plain(view.query_one("#run-usage"))
        assert "used" in usage and "tokens" in usage and "budget gauges above" in usage
        assert view.events.line_count > 0
        await pilot.press("escape")
        assert app.main.active_id == "runs"


async def test_run_command_before_the_run_view_was_ever_built(real_dir: tuple[Path, list[Any]]) -> None:
    """`:run ID` as the very first action: the run view is built on first use, and its nested widgets (the span
    tree inside its panes) must exist before it opens the run."""
    store, results = real_dir
    app = make_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.main.run_command(f":run {results[0].run_id}")
        view = run_view(app)
        await wait_for(pilot, lambda: view.active and view.tree.root.data is not None, what="the run's tree")
        assert app.main.active_id == "run" and app.return_code is None


async def test_failed_run_opens_on_root_cause_and_n_cycles(fixed_dir: Path) -> None:
    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        await pilot.press("colon", *"run b2c3", "enter")  # a unique prefix is enough
        view = run_view(app)
        await wait_for(pilot, lambda: view.tree.root.data is not None)
        node = view.tree.cursor_node
        assert node is not None and node.data["name"] == "price_quote" and node.data["status"] == "error"
        detail = plain(view.detail)
        assert "ERROR" in detail and "upstream 503" in detail and "REASON" in detail
        assert "n jumps" in app.main.hint_line.sentence
        seen = set()
        for _ in range(5):
            await pilot.press("n")
            seen.add(view.tree.cursor_node.data["id"])
        assert len(seen) >= 3  # the tool, its agent, the delegation, the supervisor, the run: all problems
        assert "upstream 503" in plain(view.query_one("#run-title"))


async def test_run_tree_grows_live_keeps_expansion_and_cursor(tmp_path: Path) -> None:
    from tests.console_helpers import _open_writer

    store = tmp_path / "store"
    writer = _open_writer(store)
    run_id = "1ive1ive1ive"
    t = FIXED_NOW - 10
    writer.run_started(run_id, "deal-desk", None, None, "test", {"task": "x"}, 0, None, t, None)
    writer.span_started("s-root", run_id, None, "run", None, "deal-desk", t, {})
    writer.span_started("s-a", run_id, "s-root", "agent", "alpha", "alpha", t + 0.1, {})
    writer.span_started("s-b", run_id, "s-root", "agent", "beta", "beta", t + 0.2, {})
    writer.span_started("s-b1", run_id, "s-b", "llm", "beta", "m", t + 0.3, {})
    writer.flush()
    app = make_app(store, clock=fixed_clock)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("colon", *f"run {run_id}", "enter")
            view = run_view(app)
            tree = view.tree
            await wait_for(pilot, lambda: len(tree.nodes) == 4)
            tree.nodes["s-a"].collapse()  # the operator collapsed alpha...
            tree.reveal(tree.nodes["s-b1"])  # ...and sits on beta's llm call
            await pilot.pause()
            line_before = tree.cursor_line - int(tree.scroll_offset.y)
            for i in range(20):  # alpha gets busy above the cursor
                writer.span_started(f"s-a{i}", run_id, "s-a", "tool", "alpha", f"tool{i}", t + 0.4 + i / 100,
                                    {"args": {"i": i}})
                writer.span_ended(f"s-a{i}", run_id, "ok", t + 0.45 + i / 100, 0, 0, 0.0, None, {"result": i})
            writer.span_ended("s-b1", run_id, "ok", t + 1, 10, 5, 0.001, "m", {"content": "done"})
            writer.flush()
            await wait_for(pilot, lambda: len(tree.nodes) == 24, what="new spans in the tree")
            await wait_for(pilot, lambda: tree.nodes["s-b1"].data["status"] == "ok", what="span update")
            assert not tree.nodes["s-a"].is_expanded  # still collapsed
            assert tree.cursor_node is tree.nodes["s-b1"]  # cursor on the same span
            assert tree.cursor_line - int(tree.scroll_offset.y) == line_before
            assert "✔ ok" in tree.nodes["s-b1"].label.plain  # relabelled in place
            # The events tail grew too (Log, not RichLog).
            from tests.engine_helpers import events

            recorded = len(events(store, run_id))
            await wait_for(pilot, lambda: view.events.count == recorded, what=f"{recorded} events in the tail")
    finally:
        writer.close()


async def test_unknown_run_id_is_a_message_not_an_error(fixed_dir: Path) -> None:
    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("colon", *"run zzzz", "enter")
        view = run_view(app)
        await wait_for(pilot, lambda: view.problem is not None)
        assert "no run" in view.problem and "zzzz" in view.problem
        assert app.notifier.count == 0


# -- navigation, commands, help, palette, keymap ------------------------------------------------------------

async def test_number_keys_and_colon_commands_switch_views(fixed_dir: Path) -> None:
    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app, 10)
        for spec in VIEWS:
            await pilot.press(spec.key)
            assert app.main.active_id == spec.id
            assert app.main.header.active_view == spec.id
        await pilot.press("colon", *"ap", "enter")  # typed, with an alias
        assert app.main.active_id == "approvals"
        for view_id in ("approvals", "breakers", "controls", "runbooks", "audit"):
            app.main.run_command(f":{view_id}")
            assert app.main.active_id == view_id
            assert not app.main.view(view_id).query(".placeholder-box")  # every view is built
        app.main.run_command(":runs")
        assert app.main.active_id == "runs"
        await pilot.press("colon", *"bogus", "enter")
        assert app.main.active_id == "runs"
        await pilot.pause()
        assert any("Unknown command :bogus" in n.message for n in app._notifications)
        await pilot.press("colon", "escape")
        assert not app.main.query_one("#command-line").display


async def test_hidden_views_do_not_poll(fixed_dir: Path) -> None:
    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, app, 10)
        runs = runs_view(app)
        assert runs.poller.active and not run_view(app).poller.active
        await pilot.press("3")
        assert not runs.poller.active
        polls = runs.poller.polls
        await pilot.pause(0.3)
        assert runs.poller.polls <= polls + 1  # at most the one in flight when it was hidden
        # Views switched within one turn of the event loop (keys typed fast, or pasted): pollers start and stop
        # before their loops ever ran, one view is shown while it is still being built. Nothing may be left
        # behind: no loop polling a hidden view, no never-awaited coroutine (an unraisable exception under
        # -W error; several made this test fail with an ExceptionGroup).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for view_id in ("runs", "breakers", "runs", "approvals", "runs", "breakers"):
                app.main.show_view(view_id)
            await wait_for(pilot, lambda: app.main.view("breakers").active, what="breakers shown")
            await pilot.pause(0.3)
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
        assert not runs.poller.active and runs.poller.polls <= polls + 1
        loops = sorted(w.name for w in app.workers if w.name.startswith("poll:") and not w.is_finished)
        assert loops == ["poll:approval-alerts", "poll:breakers", "poll:header"]
        await pilot.press("1")
        assert runs.poller.active


async def test_help_lists_keys_with_ids_and_help(fixed_dir: Path) -> None:
    from console.screens.help import HelpScreen

    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.plain
        for binding_id in ("open_run", "filter_runs", "sort_runs", "problems_only", "command_line", "show_help",
                           "quit", "table_down"):
            assert f"[{binding_id}]" in text
        assert "view_runs … view_engines" in text
        groups = {row.group for row in app.screen.rows}
        assert groups == {"this view", "moving around", "everywhere"}
        assert "Filter by run id, hierarchy, status or tenant" in text
        assert ":run ID" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_every_binding_has_id_description_and_help() -> None:
    from console.app import FlightdeckApp
    from console.screens.help import HelpScreen
    from console.screens.main import MainScreen
    from console.screens.run import RunView
    from console.screens.runs import RunsView
    from console.widgets.command_line import CommandLine

    for cls in (FlightdeckApp, MainScreen, RunsView, RunView, HelpScreen, CommandLine):
        for binding in cls.BINDINGS:
            assert binding.id, (cls, binding)  # type: ignore[union-attr]
            assert binding.description, (cls, binding)  # type: ignore[union-attr]
            assert binding.tooltip, (cls, binding)  # type: ignore[union-attr]


async def test_palette_offers_view_commands(fixed_dir: Path) -> None:
    from console.widgets.palette import ConsoleCommands

    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        provider = ConsoleCommands(app.main)
        titles = [hit.text async for hit in provider.discover()]
        assert "Runs: filter…" in titles and "Runs: show only problems" in titles
        assert any(t.startswith("Go to Approvals") for t in titles)
        hits = [hit async for hit in provider.search("problems")]
        assert hits and hits[0].text == "Runs: show only problems"
        hits[0].command()
        assert runs_view(app).filter.problems_only
        await pilot.press("enter")
        await wait_for(pilot, lambda: run_view(app).tree.root.data is not None)
        titles = [hit.text async for hit in ConsoleCommands(app.main).discover()]
        assert "Run: next problem span" in titles and "Runs: filter…" not in titles
        await pilot.press("ctrl+p")  # the palette opens (Textual's CommandPalette with our provider)
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"


async def test_keymap_from_config(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store")
    (store / "config.toml").write_text('[console.keys]\nfilter_runs = "f"\nproblems_only = "x"\nno_such = "z"\n')
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        assert app.keymap_problems == ["no_such"]
        await pilot.press("x")
        assert runs_view(app).filter.problems_only
        await pilot.press("f")
        assert app.focused is runs_view(app).query_one("#runs-filter")


async def test_header_slot_registry_drives_alarm_and_halt_banner(fixed_dir: Path) -> None:
    from console.widgets import header

    saved = list(header.HEADER_SLOTS)
    header.register_header_slot(header.HeaderSlot(
        "kill_switches", "kill switches",
        lambda ctx: header.SlotValue("GLOBAL ON", "crit", alarm="Everything is halted: press 5 to review.",
                                     halt="global kill switch set by alice: [bold]maintenance[/]"), row=2))
    try:
        app = make_app(fixed_dir, clock=fixed_clock)
        async with app.run_test(size=(100, 30)) as pilot:
            banner = app.main.query_one("#halt-banner")
            await wait_for(pilot, lambda: banner.has_class("-active"), what="halt banner")
            assert "[bold]maintenance[/]" in plain(banner)  # shown literally too
            assert app.main.hint_line.sentence == "Everything is halted: press 5 to review."
            assert "GLOBAL ON" in app.main.header.render().plain
    finally:
        header.HEADER_SLOTS[:] = saved


# -- untrusted text, errors, responsiveness -------------------------------------------------------------------

async def test_untrusted_markup_is_shown_literally(tmp_path: Path) -> None:
    store = evil_store(tmp_path / "store")
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 1)
        table = runs_view(app).table
        run = table.get("badbadbadbad")
        tenant_cell = table._cell(run, "tenant", FIXED_NOW)
        assert "[bold red]x[/]" in tenant_cell.plain and "[link=https://evil.example]" in tenant_cell.plain
        assert "\x1b" not in tenant_cell.plain
        app.save_screenshot(str(tmp_path / "runs.svg"))  # renders the whole screen: no markup error
        await pilot.press("enter")
        view = run_view(app)
        await wait_for(pilot, lambda: len(view.tree.nodes) == 5 and view.events.count > 0)
        labels = [node.label.plain for node in view.tree.nodes.values()]
        assert any("[bold red]x[/]" in label for label in labels)
        assert all("\x1b" not in label for label in labels)
        for node in view.tree.nodes.values():
            view.tree.reveal(node)
            await pilot.pause()
            for raw in (False, True):
                view.detail.raw = raw
                view.detail.show(node.data, FIXED_NOW)
                text = plain(view.detail)
                assert "[/]" in text and "\x1b" not in text
                if not raw and node.data["kind"] == "tool":
                    assert "\\x1b[31mred" in text  # control sequences are shown escaped, never sent
        tool = next(n for n in view.tree.nodes.values() if n.data["kind"] == "tool")
        view.detail.raw = False
        view.detail.show(tool.data, FIXED_NOW)
        text = plain(view.detail)
        assert "[link=https://evil.example]click me[/link]" in text
        lines = list(view.events.lines)
        assert any("[bold red]x[/]" in line for line in lines) and all("\x1b" not in line for line in lines)
        assert "[bold red]x[/]" in plain(view.query_one("#run-title"))
        app.save_screenshot(str(tmp_path / "run.svg"))
        assert app.notifier.count == 0  # nothing raised anywhere


async def test_missing_store_in_ui_is_a_message_and_exit_3(tmp_path: Path) -> None:
    app = make_app(tmp_path / "nowhere")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.notifier.store_problem is not None)
        assert "no store at" in app.notifier.store_problem
        await pilot.pause()
        header = app.main.header.render().plain
        assert "STORE UNREADABLE" in header
        assert "store cannot be read" in app.main.hint_line.sentence
        await pilot.press("q")
    assert app.return_code == 3


async def test_damaged_store_in_ui_is_a_message_and_exit_3(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "traces.db").write_bytes(b"this is not a database" * 100)
    app = make_app(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.notifier.store_problem is not None)
        assert "damaged" in app.notifier.store_problem
        await pilot.press("q")
    assert app.return_code == 3


async def test_console_recovers_when_the_store_appears(tmp_path: Path) -> None:
    store = tmp_path / "store"
    app = make_app(store, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.notifier.store_problem is not None, what="store problem")
        fixed_store(store)  # the engine starts and writes
        await wait_for(pilot, lambda: app.notifier.store_problem is None, timeout=20, what="recovery")
        await wait_for(pilot, lambda: runs_view(app).table.total_count == 10, timeout=20, what="runs")
        assert "STORE UNREADABLE" not in app.main.header.render().plain
        await pilot.press("q")
    assert app.return_code == 0


async def test_console_stays_responsive_while_store_is_flooded(tmp_path: Path) -> None:
    from tests.console_helpers import _open_writer

    store = fixed_store(tmp_path / "store")
    writer = _open_writer(store, flush_interval=0.05)  # commits as the engine does
    stop = threading.Event()
    written = [0]

    def flood() -> None:
        i = 0
        while not stop.is_set():
            run_id = f"flood{i:07d}"
            write_deal_run(writer, run_id, started=FIXED_NOW + i / 1000)
            i += 1
            written[0] = i
            if i % 20 == 0:  # ~400 runs/s, ~8,000 events/s: a heavy engine, leaving the GIL some air
                writer.wait_for_space_blocking(1.0)
                time.sleep(0.05)

    thread = threading.Thread(target=flood, daemon=True)
    app = make_app(store, clock=fixed_clock)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(pilot, app, 10)
            thread.start()
            await wait_for(pilot, lambda: runs_view(app).table.total_count > 200, what="flood rows")
            table = runs_view(app).table
            worst = 0.0
            for _ in range(6):
                # Not pilot.press: it waits for the whole process to go idle, which a flood never lets happen.
                column = table.sort_column
                started = time.perf_counter()
                app._driver.send_message(events.Key("s", "s"))  # type: ignore[union-attr]
                while table.sort_column == column:
                    assert time.perf_counter() - started < 2.0, "key press not handled within 2 s"
                    await asyncio.sleep(0.002)
                worst = max(worst, time.perf_counter() - started)
            assert worst < 1.0, f"a key press took {worst:.3f}s while the store was flooded"
            await pilot.press("1")
            assert written[0] > 200
    finally:
        stop.set()
        thread.join(5)
        writer.close()


async def test_readers_never_hold_a_transaction(fixed_dir: Path) -> None:
    app = make_app(fixed_dir, clock=fixed_clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app, 10)
        await pilot.press("enter")
        await wait_for(pilot, lambda: run_view(app).tree.root.data is not None)
        await pilot.pause(0.2)
        for reader in list(app.ctx.source._readers):
            assert not reader._conn.in_transaction
