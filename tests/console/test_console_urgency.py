"""Issue 15, urgency first: the approvals queue in deadline order, countdowns that keep counting in the decision
prompts. Real store files (control.db rows written through ControlAPI as the engine writes them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.app import create_app
from tests.console.test_console_views_ops import ops_store, request, show
from tests.console_helpers import FIXED_NOW, FixedClock, wait_for

pytestmark = pytest.mark.anyio


class MovingClock:
    """The console's clock, moved by the test."""

    def __init__(self, now: float = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    store = ops_store(tmp_path / "store")
    # Requested last (the newest) but due first: 12 s left at FIXED_NOW.
    request(store, clock=FixedClock(FIXED_NOW - 3), tool="refund", deadline_s=15, run_id="d4e5f6a1b2c3",
            span_id=None)
    return store


async def test_approvals_sorted_by_time_left_not_age(store: Path) -> None:
    app = create_app(store, operator="alice", read_only=False, clock=MovingClock(), poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        await wait_for(pilot, lambda: view.table.row_count == 3, what="three requests")
        rows = [view.table.get(k) for k in view.table.visible_keys()]
        assert [r.tool for r in rows] == ["refund", "apply_discount", "send_email"]  # 12 s, 25 s, 9m40s left
        deadlines = [float(r.deadline) for r in rows]
        assert deadlines == sorted(deadlines)
        assert "soonest deadline first" in view.query_one("#approvals-title").plain


@pytest.mark.parametrize("key", ["a", "d", "e"])
async def test_decision_prompt_countdown_keeps_counting(store: Path, key: str) -> None:
    from console.widgets.modals import FormModal

    clock = MovingClock()
    app = create_app(store, operator="alice", read_only=False, clock=clock, poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        await wait_for(pilot, lambda: view.table.row_count == 3, what="three requests")
        await pilot.press(key)
        await wait_for(pilot, lambda: isinstance(app.screen, FormModal), what="the prompt")
        body = app.screen.query_one("#form-body-text")

        def shown() -> str:
            return str(body.render().plain if hasattr(body.render(), "plain") else body.render())

        assert "12s" in shown()
        clock.now += 5
        await wait_for(pilot, lambda: "7s" in shown() and "12s" not in shown(), what="the countdown moving",
                       timeout=5)
        await pilot.press("escape")


def test_gauges_of_an_ended_run_show_final_spend_in_the_status_colour() -> None:
    import json

    from console.widgets.gauges import gauges_text
    from engine.store.trace_rows import BudgetRow

    data = {"cost_usd": {"used": 0.16, "reserved": 0.0, "limit": 0.5, "fraction": 0.32, "burn_rate_per_min": 0.6,
                         "time_to_exhaustion_s": 14.4}}
    rows = [BudgetRow(run_id="r", scope="run", agent=None, updated=0.0, data=json.dumps(data))]
    live = gauges_text(rows, status="running")
    assert "32% of $0.5000" in live.plain and "out in 14.4s" in live.plain
    for status, style in (("failed", "bold red"), ("completed", "green"), ("killed", "bold red")):
        text = gauges_text(rows, status=status)
        assert "out in" not in text.plain and "/min" not in text.plain
        assert "32% of $0.5000 · final $0.1600" in text.plain
        pct = text.plain.index("32%")
        assert any(span.style == style and span.start <= pct < span.end for span in text.spans), status
        assert "green" not in {str(span.style) for span in text.spans} or status == "completed"
    over = gauges_text([BudgetRow(run_id="r", scope="run", agent=None, updated=0.0, data=json.dumps(
        {"cost_usd": {"used": 0.66, "limit": 0.5, "fraction": 1.32}}))], status="budget_exceeded")
    assert "132% of $0.5000 · final $0.6600 · OVER the limit" in over.plain
    assert "a limit was exceeded" in over.plain


async def test_breakers_view_shows_why_it_opened(store: Path) -> None:
    app = create_app(store, operator="alice", read_only=False, clock=MovingClock(), poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "4", "breakers")
        why = view.query_one("#breaker-why")
        await wait_for(pilot, lambda: "Why:" in why.plain, what="the opening's story")
        text = why.plain
        assert "tool:crm_lookup in deal-desk is OPEN · opened 40s ago" in text
        assert "Why: failure rate 61.5% >= 50% (over 13 calls in the window that tripped it)" in text
        assert "Last error: (tool_error) crm-api: 504 gateway timeout" in text
        await pilot.press("down")  # half-open model breaker: no opening recorded in the store, its figures
        await wait_for(pilot, lambda: "model:gpt-4o" in why.plain, what="the next breaker")
        assert "HALF-OPEN" in why.plain and "Why:" not in why.plain
