"""Durable runs in the console and in `flightdeck runs` (issue 13): the needs_reconcile status (word and colour), the
header's reconcile alarm with the command to act, the RESUMED column and the run view's "resumed N× · M steps
replayed". Real store files written by TraceWriter (tests/console_helpers.py durable_store).

Update the snapshots after an intended change with `pytest tests/console/test_console_durable.py --snapshot-update`,
then look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console.test_cli_core import flightdeck
from tests.console_helpers import (
    DURABLE_RUNS,
    SNAPSHOT_SIZES,
    durable_store,
    event_count,
    fixed_clock,
    fixed_store,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)

WAITING = [r[0] for r in DURABLE_RUNS if r[2] == "needs_reconcile"]  # newest first
OLDEST_WAITING = WAITING[-1]
RECONCILE_RUN = WAITING[0]
RESUMED_TWICE = "8e7d6c5b4a9f"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return durable_store(tmp_path_factory.mktemp("durable") / "store")


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _runs_ready(pilot: Any) -> None:
    app = pilot.app
    runs = app.main.view("runs")
    await wait_for(pilot, lambda: runs.table.total_count == 13 and app.main.header.snapshot is not None,
                   what="runs and header")
    await wait_for(pilot, lambda: "wait for you to reconcile" in app.main.hint_line.sentence, what="alarm")


async def _reconcile_run_ready(pilot: Any) -> None:
    await _runs_ready(pilot)
    app = pilot.app
    await pilot.press("down")  # the newest run waiting in needs_reconcile
    assert app.main.view("runs").table.cursor_key == RECONCILE_RUN
    await pilot.press("enter")
    view = app.main.view("run")
    recorded = event_count(app.ctx.store_dir, RECONCILE_RUN)
    await wait_for(pilot, lambda: view.tree.root.data is not None and view.events.count == recorded,
                   what="run view")


@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_view_durable_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_runs_ready)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_run_view_needs_reconcile_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_reconcile_run_ready)


@pytest.mark.anyio
@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_reconcile_alarm_leads_the_header_with_the_command(store: Path, size: tuple[int, int]) -> None:
    app = app_for(store)
    async with app.run_test(size=size) as pilot:
        await _runs_ready(pilot)
        header = app.main.header
        value = header.snapshot.values["reconcile"]
        assert value.level == "crit"
        assert header.slot_text("reconcile") == f"2 runs · flightdeck reconcile {OLDEST_WAITING}"
        # First on the alarm row, whole, with the command to act; and the hint line says the same.
        row = header.render().plain.splitlines()[2]
        assert row.startswith(" needs reconcile 2")
        assert f"flightdeck reconcile {OLDEST_WAITING}" in row
        assert f"`flightdeck reconcile {OLDEST_WAITING}`" in app.main.hint_line.sentence


@pytest.mark.anyio
async def test_no_reconcile_slot_when_no_run_waits(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store")
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.main.header
        await wait_for(pilot, lambda: header.snapshot is not None, what="header")
        assert header.snapshot.values["reconcile"].level == "ok"
        assert "reconcile" not in header.render().plain
        runs = app.main.view("runs")
        await wait_for(pilot, lambda: runs.table.total_count == 10, what="runs")
        # No run resumed: the table keeps its columns (no RESUMED).
        assert "resumed" not in [c.key for c, _ in runs.table.column_layout()]


@pytest.mark.anyio
@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_runs_view_status_word_resumed_column_and_problems_filter(store: Path, size: tuple[int, int]) -> None:
    from console.screens.runs_table import run_cell
    from console.widgets.status import run_status_text

    app = app_for(store)
    async with app.run_test(size=size) as pilot:
        await _runs_ready(pilot)
        runs = app.main.view("runs")
        table = runs.table
        # RESUMED stays on screen at 100 columns (INCIDENTS and AGENTS give way), and so do RUN and STATUS.
        keys = [c.key for c, _ in table.column_layout()]
        assert {"status", "id", "resumed"} <= set(keys)
        item = table.get(RESUMED_TWICE)
        assert run_cell(item, "resumed", fixed_clock()).plain == "2× (3)"
        assert run_cell(table.get("a1b2c3d4e5f6"), "resumed", fixed_clock()).plain == "-"
        status = run_status_text("needs_reconcile")
        assert status.plain == "⚠ reconcile" and status.style  # a word and a colour, never colour alone
        await pilot.press("p")
        shown = list(table.visible_keys())
        assert set(WAITING) <= set(shown) and "a1b2c3d4e5f6" not in shown
        # The hint on a waiting run says what to run.
        await wait_for(pilot, lambda: table.cursor_key is not None, what="cursor")
        await pilot.press("home")
        assert table.cursor_key == RECONCILE_RUN
        await wait_for(pilot, lambda: f"flightdeck reconcile {RECONCILE_RUN}" in runs.hint, what="row hint")
        await pilot.press("escape")
        await pilot.press("slash")
        await pilot.press(*"resumed")
        await wait_for(pilot, lambda: set(table.visible_keys()) == {r[0] for r in DURABLE_RUNS}, what="filter")


@pytest.mark.anyio
async def test_run_view_header_says_resumed_and_steps_replayed(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await _runs_ready(pilot)
        await pilot.press("colon")
        await pilot.press(*f"run {RESUMED_TWICE}", "enter")
        view = app.main.view("run")
        await wait_for(pilot, lambda: view.run is not None and view.run.id == RESUMED_TWICE, what="run view")
        from console.widgets.text_pane import TextLines

        title = view.query_one("#run-title", TextLines).plain
        assert "resumed 2× · 3 steps replayed" in title


def test_runs_json_keys_and_table(store: Path) -> None:
    proc = flightdeck("runs", "--store", str(store), "--json")
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    # The documented keys, in their order (scripts read them), then the durable ones, then `degraded` (issue 15).
    assert [list(r) for r in runs] == [["id", "hierarchy", "status", "tenant", "started", "ended", "tokens_in",
                                        "tokens_out", "cost_usd", "model_calls", "tool_calls", "error",
                                        "duration_s", "resumed", "replayed_steps", "degraded"]] * len(runs)
    by_id = {r["id"]: r for r in runs}
    assert (by_id[RESUMED_TWICE]["resumed"], by_id[RESUMED_TWICE]["replayed_steps"]) == (2, 3)
    assert (by_id["a1b2c3d4e5f6"]["resumed"], by_id["a1b2c3d4e5f6"]["replayed_steps"]) == (0, 0)
    assert by_id[RECONCILE_RUN]["status"] == "needs_reconcile"

    table = flightdeck("runs", "--store", str(store))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[-1] == "RESUMED"
    assert any(line.startswith(RESUMED_TWICE) and line.endswith("2x, 3 replayed") for line in lines)
    assert lines[-1].endswith(f"flightdeck reconcile {OLDEST_WAITING}")
    waiting = flightdeck("runs", "--store", str(store), "--status", "needs_reconcile", "--json")
    assert [r["id"] for r in json.loads(waiting.stdout)] == WAITING


def test_runs_table_without_durable_runs_is_unchanged(tmp_path: Path) -> None:
    store = fixed_store(tmp_path / "store")
    lines = flightdeck("runs", "--store", str(store)).stdout.splitlines()
    assert lines[0].split() == ["RUN", "STATUS", "HIERARCHY", "TENANT", "STARTED", "DURATION", "TOKENS", "COST",
                                "MODEL", "TOOLS"]
    assert "reconcile" not in "\n".join(lines)
