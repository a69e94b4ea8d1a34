"""Snapshots of view 6 (runbooks and incidents) on a Postgres store (issue 16) at 160x48 and 100x30: the Postgres
control plane's incidents (one firing, one acknowledged and quiet; tests/console_fleet_support.py fleet_incidents),
the shipped runbooks, the dry run of the selected incident's runbook, and the hint line saying what is not there on
Postgres. Fixed data and a fixed clock, on a real PostgreSQL.

Update after an intended change with `pytest tests/console/test_console_snapshots_fleet_rb.py --snapshot-update`,
then look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from console.app import create_app
from engine.store.location import PostgresLocation
from tests.console_fleet_support import FLEET_INCIDENTS, FLEET_RUNS, fleet_incidents, fleet_store
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
        yield fleet_incidents(fleet_store(url))
    finally:
        postgres_server.drop_database(url)


def app_for(location: PostgresLocation) -> Any:
    return create_app(location, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _runbooks_ready(pilot: Any) -> None:
    app = pilot.app
    runs = app.main.view("runs")
    await wait_for(pilot, lambda: runs.table.total_count == len(FLEET_RUNS) and app.main.header.snapshot is not None
                   and app.main.header.slot_text("incidents").startswith("2 open"), what="runs and header")
    await pilot.press("6")
    view = app.main.view("runbooks")
    await wait_for(pilot, lambda: view.snapshot is not None and view.incidents_table.row_count == 2,
                   what="incidents")
    await wait_for(pilot, lambda: view.plan is not None and view.plan.incident_id == FLEET_INCIDENTS[0]
                   and "3 loops" in str(view.query_one("#rb-detail").render()), what="dry run")
    await pilot.pause(0.3)  # the Markdown body lays out


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fleet_runbooks_view_snapshot(snap_compare: Any, fleet: PostgresLocation, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(fleet), terminal_size=size, run_before=_runbooks_ready)
