"""Snapshots of the fleet on a Postgres store (issue 16) at 160x48 and 100x30: the runs view with its ENGINE column
(gone at 100 columns, as the first column to drop), the engines view (alive, STALE, stopped) and the breakers view's
fleet-wide ENGINES count. Fixed data (tests/console_fleet_support.py) and a fixed clock, on a real PostgreSQL.

Update after an intended change with `pytest tests/console/test_console_snapshots_fleet.py --snapshot-update`, then
look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.app import create_app
from console.incident_slots import incidents_cell
from engine.store.location import PostgresLocation
from tests.console_fleet_support import FLEET_RUNS, fleet_store
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    fixed_clock,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)
from tests.pg_support import EmbeddedPostgres

SIZES = SNAPSHOT_SIZES


@pytest.fixture(scope="module")
def fleet(postgres_server: EmbeddedPostgres) -> Iterator[PostgresLocation]:
    url = postgres_server.create_database()
    try:
        yield fleet_store(url)
    finally:
        postgres_server.drop_database(url)


def app_for(location: PostgresLocation) -> Any:
    return create_app(location, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _runs_ready(pilot: Any) -> None:
    app = pilot.app
    runs = app.main.view("runs")
    await wait_for(pilot, lambda: runs.table.total_count == len(FLEET_RUNS) and app.main.header.snapshot is not None
                   and incidents_cell("deal-desk").plain != "n/a", what="runs, header and the incidents count")
    # Rows painted before the header's first incidents read keep `n/a` under a fixed clock (a row's line is cached
    # by its data and the whole second): repaint them from what is known now.
    runs.table.set_columns(runs.table.columns)
    await pilot.pause()


def _view_ready(key: str, view_id: str, rows: int) -> Any:
    async def run_before(pilot: Any) -> None:
        await _runs_ready(pilot)
        app = pilot.app
        await pilot.press(key)
        view = app.main.view(view_id)
        await wait_for(pilot, lambda: view.loaded and view.table.total_count == rows, what=f"{view_id} ready")
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fleet_runs_view_snapshot(snap_compare: Any, fleet: PostgresLocation, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(fleet), terminal_size=size, run_before=_runs_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fleet_engines_view_snapshot(snap_compare: Any, fleet: PostgresLocation, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(fleet), terminal_size=size, run_before=_view_ready("0", "engines", 3))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fleet_breakers_view_snapshot(snap_compare: Any, fleet: PostgresLocation, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(fleet), terminal_size=size, run_before=_view_ready("4", "breakers", 2))
