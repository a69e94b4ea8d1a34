"""Snapshots of views 1 and 2 at 160x48 and 100x30, with fixed data and a fixed clock.

Update after an intended change with `pytest tests/console/test_console_snapshots.py --snapshot-update`, then look at the
SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    event_count,
    fixed_clock,
    fixed_store,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)

SIZES = SNAPSHOT_SIZES




@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fixed_store(tmp_path_factory.mktemp("snap") / "store")


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _runs_ready(pilot: Any) -> None:
    app = pilot.app
    runs = app.main.view("runs")
    await wait_for(pilot, lambda: runs.table.total_count == 10 and app.main.header.snapshot is not None,
                   what="runs and header")
    await wait_for(pilot, lambda: "need attention" in app.main.hint_line.sentence, what="hint")


async def _run_ready(pilot: Any) -> None:
    await _runs_ready(pilot)
    app = pilot.app
    await pilot.press("down")  # the failed run
    await pilot.press("enter")
    view = app.main.view("run")
    recorded = event_count(app.ctx.store_dir, "b2c3d4e5f6a1")
    await wait_for(pilot, lambda: view.tree.root.data is not None and view.events.count == recorded,
                   what="run view")
    await wait_for(pilot, lambda: "This run failed" in app.main.hint_line.sentence, what="hint")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_runs_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_run_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_run_ready)
