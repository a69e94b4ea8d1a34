"""Sort and filter on the runbooks view's two tables (issue 15: `s` / `S` / `/` in every table, as in the audit,
approvals and runs views). Rows are selected by key: the selection stays on the same incident or runbook across a
sort and a refresh, and the keys act on it. Real store files (test_console_views_rb.py's incidents), the real app
under Pilot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.test_console_views_rb import answer, app_for, audit_rows, incident_store, open_runbooks
from tests.console_helpers import wait_for

pytestmark = pytest.mark.anyio

SIZE = (160, 48)
# Urgency (the default): firing looping-agent sev2, firing latency-spike sev3, then the quiet acknowledged cost-spike.
URGENCY = ["inc-00000002", "inc-00000003", "inc-00000001"]


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield incident_store(tmp_path / "store", monkeypatch)


def shown(table: Any) -> list[str]:
    """The row keys in the order the table shows them."""
    return [str(table.coordinate_to_cell_key((n, 0)).row_key.value) for n in range(table.row_count)]


def label(view: Any, which: str) -> str:
    return view.query_one(f"#{which}-label").plain


async def test_selection_follows_the_incident_across_sorts_and_a_refresh(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        table = view.incidents_table
        assert shown(table) == URGENCY and "sorted by urgency" in label(view, "incidents")
        await pilot.press("down")
        assert view.selected_incident.id == "inc-00000003"
        await pilot.press("s")  # severity: sev2 (newest first), then sev3
        assert shown(table) == ["inc-00000002", "inc-00000001", "inc-00000003"]
        assert "sorted by severity" in label(view, "incidents")
        assert view.selected_incident.id == "inc-00000003" and table.cursor_row == 2
        await pilot.press("s")  # newest first
        assert shown(table) == ["inc-00000003", "inc-00000002", "inc-00000001"]
        await pilot.press("S")
        assert shown(table) == ["inc-00000001", "inc-00000002", "inc-00000003"]
        assert "sorted by newest first, reversed" in label(view, "incidents")
        assert view.selected_incident.id == "inc-00000003"
        assert "inc-00000003" in str(view.query_one("#rb-detail").render())
        # The key acts on the incident selected, wherever the sort put it; the refresh after it keeps both the sort
        # and the selection.
        await pilot.press("a")
        await answer(pilot, "on it")
        await wait_for(pilot, lambda: view.selected_incident is not None
                       and view.selected_incident.acknowledged_by == "alice", what="the refresh after the ack")
        assert shown(table) == ["inc-00000001", "inc-00000002", "inc-00000003"]
        assert view.selected_incident.id == "inc-00000003"
    [ack] = [r for r in audit_rows(store) if r["action"] == "incident_ack" and r["actor"] == "alice"]
    assert ack["target"] == "inc-00000003"


async def test_runbooks_table_sorts_by_state_and_keeps_its_selection(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        await pilot.press("tab")
        rb = view.runbooks_table
        configured = shown(rb)
        rb.move_cursor(row=configured.index("cost-spike"))
        await wait_for(pilot, lambda: view.selected_runbook_id == "cost-spike", what="cost-spike selected")
        await pilot.press("s")  # state: FIRING first, then clearing, then the quiet ones
        order = shown(rb)
        assert order != configured and "sorted by state" in label(view, "runbooks")
        assert sorted(order[:2]) == ["latency-spike", "looping-agent"] and order[2] == "cost-spike"
        assert view.selected_runbook_id == "cost-spike" and rb.cursor_row == 2
        assert shown(view.incidents_table) == URGENCY  # s sorted the table in use, not the other one


async def test_filter_narrows_both_tables_and_esc_clears_then_goes_back(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        total = view.runbooks_table.row_count
        await pilot.press("slash", *"latency")
        await wait_for(pilot, lambda: shown(view.incidents_table) == ["inc-00000003"], what="filtered")
        runbooks = shown(view.runbooks_table)
        assert "latency-spike" in runbooks and len(runbooks) < total
        assert 'filter "latency" (1 of 3)' in label(view, "incidents")
        assert f'filter "latency" ({len(runbooks)} of {total})' in label(view, "runbooks")
        await pilot.press("enter")  # keeps the filter; the keys act on what is shown
        assert view.selected_incident.id == "inc-00000003"
        await pilot.press("escape")
        await wait_for(pilot, lambda: view.incidents_table.row_count == 3, what="filter cleared")
        assert view.runbooks_table.row_count == total and "filter" not in label(view, "incidents")
        await pilot.press("escape")  # no filter: back one level, to the runs
        await wait_for(pilot, lambda: app.main.active_id == "runs", what="back to the runs view")
