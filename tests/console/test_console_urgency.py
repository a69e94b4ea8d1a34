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


async def test_approvals_and_breakers_sort_filter_and_esc(store: Path) -> None:
    from textual.widgets import Input

    app = create_app(store, operator="alice", read_only=False, clock=MovingClock(), poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        await wait_for(pilot, lambda: view.table.row_count == 3, what="three requests")

        def tools() -> list[str]:
            return [view.table.get(k).tool for k in view.table.visible_keys()]

        await pilot.press("s")  # risk, highest first (high, high, medium), then soonest deadline
        assert tools() == ["refund", "apply_discount", "send_email"]
        assert "sorted by risk, highest first" in view.query_one("#approvals-title").plain
        await pilot.press("S")
        assert tools() == ["send_email", "apply_discount", "refund"]
        assert "risk, reversed" in view.query_one("#approvals-title").plain
        await pilot.press("slash")
        assert isinstance(app.screen.focused, Input)
        await pilot.press(*"email")
        await wait_for(pilot, lambda: tools() == ["send_email"], what="the filter")
        assert '"email" (1 of 3)' in view.query_one("#approvals-title").plain
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.screen.focused is view.table and tools() == ["send_email"]
        await pilot.press("escape")  # one level back: the filter goes
        assert tools() == ["send_email", "apply_discount", "refund"]
        assert app.main.active_view is view
        await pilot.press("escape")  # and once more: back to the runs view
        await wait_for(pilot, lambda: app.main.active_view is app.main.view("runs"), what="back to runs")

        breakers = await show(pilot, "4", "breakers")
        await wait_for(pilot, lambda: breakers.table.row_count == 3, what="breakers")

        def keys() -> list[str]:
            return [breakers.table.get(k).key for k in breakers.table.visible_keys()]

        await pilot.press("s")  # failure rate, highest first
        assert keys() == ["tool:crm_lookup", "model:gpt-4o", "tool:kb_search"]
        await pilot.press("S")
        assert keys() == ["tool:kb_search", "model:gpt-4o", "tool:crm_lookup"]
        await pilot.press("slash", *"half")
        await wait_for(pilot, lambda: keys() == ["model:gpt-4o"], what="the breakers filter")
        await pilot.press("escape")
        assert len(keys()) == 3


@pytest.mark.parametrize(("configured", "env", "rings"), [("true", None, True), ("true", "0", False),
                                                         ("false", None, False), ("false", "1", True)])
async def test_the_approval_bell_is_a_config_setting_and_the_variable_wins(
        store: Path, monkeypatch: pytest.MonkeyPatch, configured: str, env: str | None, rings: bool) -> None:
    from console.screens.approvals import BELL_ENV

    (store / "config.toml").write_text(f"[console]\nbell = {configured}\n")
    if env is None:
        monkeypatch.delenv(BELL_ENV, raising=False)
    else:
        monkeypatch.setenv(BELL_ENV, env)
    app = create_app(store, operator="alice", read_only=False, clock=MovingClock(), poll_interval=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        await wait_for(pilot, lambda: view.alerts.notified >= 1, what="the pending requests announced")
        assert view.alerts.bell is rings
