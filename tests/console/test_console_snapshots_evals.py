"""Snapshots of view 9 (evals) at 160x48 and 100x30: support-triage's quality dropping since 06:00 after a deploy
(a new hierarchy hash), deal-desk steady with a failed drill; fixed rows and a fixed clock.

Update after an intended change with `pytest tests/console/test_console_snapshots_evals.py --snapshot-update`, then
look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console.test_console_evals import evals_store
from tests.console_helpers import (
    SNAPSHOT_SIZES,
    fixed_clock,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return evals_store(tmp_path_factory.mktemp("snap-evals") / "store")


async def ready(pilot: Any) -> None:
    app = pilot.app
    await pilot.press("9")
    view = app.main.view("evals")
    await wait_for(pilot, lambda: view.loaded and app.main.header.snapshot is not None, what="evals ready")
    app.clear_notifications()
    await pilot.pause()


@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_evals_view_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    app = create_app(store, operator="alice", read_only=False, clock=fixed_clock, poll_interval=0.05)
    assert snap_compare(app, terminal_size=size, run_before=ready)
