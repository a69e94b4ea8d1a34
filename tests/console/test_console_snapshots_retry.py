"""Snapshot of the retry confirmation (issue 13: y in the run view) at 160x48 and 100x30: the side effects that will
be done AGAIN first, in bold red, then the budget, what replays and what runs again. Fixed data and clock
(tests/console_helpers.py retry_store).

Update after an intended change with `pytest tests/console/test_console_snapshots_retry.py --snapshot-update`,
then look at the SVGs under tests/console/__snapshots__/ before committing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from console.widgets.modals import FormModal
from tests.console.test_console_retry import TO_PRICING
from tests.console_helpers import (
    RETRY_RUN,
    SNAPSHOT_SIZES,
    fixed_clock,
    retry_store,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield retry_store(tmp_path_factory.mktemp("snap_retry") / "store")


async def _confirm_open(pilot: Any) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.main.header.snapshot is not None, what="header")
    app.main.run_command(f":run {RETRY_RUN}")
    view = app.main.view("run")
    await wait_for(pilot, lambda: view.is_mounted and view.run is not None and TO_PRICING in view.tree.nodes
                   and not view.spans and "This run failed" in view.hint, what="the run's tree")
    view.tree.reveal(view.tree.nodes[TO_PRICING])
    view.tree.focus()
    await wait_for(pilot, lambda: view.detail.span is not None and view.detail.span.get("id") == TO_PRICING,
                   what="the span selected")
    await pilot.press("y")
    await wait_for(pilot, lambda: isinstance(app.screen, FormModal) and app.screen.is_mounted, what="the modal")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SNAPSHOT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_retry_confirmation_snapshot(snap_compare: Any, store: Path, size: tuple[int, int]) -> None:
    app = create_app(store, operator="alice", read_only=False, clock=fixed_clock, poll_interval=0.05)
    assert snap_compare(app, terminal_size=size, run_before=_confirm_open)
