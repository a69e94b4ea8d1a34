"""`completed (degraded)` in the console: the runs table's status word and colour, the problems filter (`p`), the
hint, and the run view's title with what was withheld."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console_helpers import wait_for
from tests.engine.test_degraded_runs import clean_and_degraded_runs

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def degraded_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    base = tmp_path_factory.mktemp("degraded")
    clean, withheld = clean_and_degraded_runs(base, base / "store")
    return base / "store", clean, withheld


async def test_degraded_run_is_a_word_a_problem_and_says_what_was_withheld(
        degraded_dir: tuple[Path, Any, Any]) -> None:
    store, clean, withheld = degraded_dir
    app = create_app(store, operator="alice", read_only=False, poll_interval=0.05)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.main.view("runs")
        table = view.table
        await wait_for(pilot, lambda: table.total_count == 2, what="both runs")
        cell = table._cell(table.get(withheld.run_id), "status", 0.0)
        assert cell.plain == "◐ completed (degraded)" and "yellow" in str(cell.style)
        assert table._cell(table.get(clean.run_id), "status", 0.0).plain == "✔ completed"
        # The whole word fits at 100 columns: STATUS widened once a degraded run was loaded.
        await pilot.pause()
        widths = {column.key: width for column, width in table.column_layout()}
        assert widths["status"] >= len("◐ completed (degraded)") and "id" in widths
        await pilot.press("p")  # problems only: the degraded run, not the clean one
        await wait_for(pilot, lambda: table.visible_keys() == [withheld.run_id], what="only the degraded run")
        await wait_for(pilot, lambda: "completed (degraded)" in app.main.hint_line.sentence
                       and "disabled by safe mode" in app.main.hint_line.sentence, what="the hint says why")
        await pilot.press("enter")
        run_view = app.main.view("run")
        title = run_view.query_one("#run-title")
        await wait_for(pilot, lambda: "completed (degraded)" in title.plain, what="the run view's title")
        assert "withheld: add is disabled by safe mode" in title.plain
