"""Snapshots of views 3 (approvals), 4 (breakers) and 5 (controls) at 160x48 and 100x30, with fixed data (fixed
approval ids, times and hashes) and a fixed clock.

Update after an intended change with `pytest tests/console/test_console_snapshots_ops.py --snapshot-update`, then look at
the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from console.app import create_app
from tests.console.test_console_views_ops import ops_store
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    fixed_clock,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)

SIZES = SNAPSHOT_SIZES




@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    counter = itertools.count(1)
    with mock.patch("engine.controls.approvals.secrets.token_hex", lambda n: f"{next(counter):0{n * 2}x}"):
        return ops_store(tmp_path_factory.mktemp("snap-ops") / "store")


def app_for(store: Path) -> Any:
    return create_app(store, operator="alice", read_only=False, clock=fixed_clock, poll_interval=0.05)


def ready(key: str, view_id: str) -> Any:
    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await pilot.press(key)
        view = app.main.view(view_id)
        alerts = app.main.view("approvals").alerts
        await wait_for(pilot, lambda: view.loaded and app.main.header.snapshot is not None
                       and app.main.header.slot_text("approvals") != "" and alerts.seen is not None,
                       what=f"{view_id} ready")
        app.clear_notifications()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_approvals_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=ready("3", "approvals"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_breakers_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=ready("4", "breakers"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_controls_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(store), terminal_size=size, run_before=ready("5", "controls"))
