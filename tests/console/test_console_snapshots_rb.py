"""Snapshots of views 6 (runbooks and incidents) and 7 (audit) at 160x48 and 100x30, with fixed data (incidents
written through the runbooks' APIs with a fixed clock and fixed ids, see tests/console/test_console_views_rb.py) and a
fixed clock.

Update after an intended change with `pytest tests/console/test_console_snapshots_rb.py --snapshot-update`, then look at
the SVGs under tests/console/__snapshots__/ before committing them. The header's row 2 shows the other views' slots too:
a change there changes these snapshots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console.test_console_views_rb import incident_store
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    fixed_clock,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)

SIZES = SNAPSHOT_SIZES




@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield incident_store(tmp_path_factory.mktemp("snap_rb") / "store", monkeypatch)


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=True, clock=fixed_clock, poll_interval=0.05)


async def _header_ready(pilot: Any) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.main.header.snapshot is not None
                   and app.main.header.slot_text("incidents").startswith("3 open"), what="header")


async def _runbooks_ready(pilot: Any) -> None:
    await _header_ready(pilot)
    await pilot.press("6")
    view = pilot.app.main.view("runbooks")
    await wait_for(pilot, lambda: view.snapshot is not None and view.incidents_table.row_count == 3,
                   what="incidents")
    await pilot.press("down")  # the suggested latency-spike incident: its dry run and runbook text
    await wait_for(pilot, lambda: view.plan is not None and "concurrency.max" in
                   str(view.query_one("#rb-detail").render()), what="dry run")
    await pilot.pause(0.3)  # the Markdown body lays out


async def _audit_ready(pilot: Any) -> None:
    await _header_ready(pilot)
    await pilot.press("7")
    view = pilot.app.main.view("audit")
    await wait_for(pilot, lambda: view.verification is not None and view.page is not None and not view.verifying,
                   what="audit")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runbooks_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_runbooks_ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_audit_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=_audit_ready)
