"""Snapshots of issue 15's states at 160x48 and 100x30: a failed run's budget gauges (final spend against the
limit, in the failed status's red; no "out in"). Fixed data and clock (tests/console/test_console_views_rb.py).

Update after an intended change with `pytest tests/console/test_console_snapshots_urgency.py --snapshot-update`,
then look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console.test_console_views_rb import RUN_WITH_BUDGETS, incident_store
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    event_count,
    fixed_clock,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)

SIZES = SNAPSHOT_SIZES


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield incident_store(tmp_path_factory.mktemp("snap_urgency") / "store", monkeypatch)


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _failed_run_ready(pilot: Any) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.main.header.snapshot is not None
                   and app.main.header.slot_text("incidents").startswith("3 open"), what="header")
    app.main.run_command(":run " + RUN_WITH_BUDGETS)
    view = app.main.view("run")
    await wait_for(pilot, lambda: view.is_mounted, what="the run view built")
    recorded = event_count(app.ctx.store_dir, RUN_WITH_BUDGETS)
    await wait_for(pilot, lambda: view.tree.root.data is not None and view.events.count == recorded,
                   what="run view")
    gauges = view.query_one("#run-budgets")
    await wait_for(pilot, lambda: "final spend" in gauges.plain and "pricing" in gauges.plain, what="gauges")
    await wait_for(pilot, lambda: "This run failed" in view.hint, what="the view's hint")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_failed_run_gauges_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_failed_run_ready)
