"""Views 3-5 (approvals, breakers, controls) and their header slots, on real store files: traces.db written by
TraceWriter, control.db rows written through ControlAPI exactly as the engine and the CLI write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console_helpers import EVIL, FIXED_NOW, FixedClock, _open_writer, fixed_clock, fixed_store, wait_for

pytestmark = pytest.mark.anyio

ENGINE = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0"


def write_breakers(store: Path, now: float = FIXED_NOW) -> None:
    writer = _open_writer(store)
    try:
        rows = [
            ("deal-desk", "tool:crm_lookup", "tool", "crm_lookup", "open", 62.0, 10.0, 13, 8, 1, 4, now + 25,
             now - 40, now - 1),
            ("deal-desk", "model:gpt-4o", "model", "gpt-4o", "half_open", 20.0, 0.0, 5, 1, 0, 0, None, now - 90,
             now - 1),
            ("support-triage", "tool:kb_search", "tool", "kb_search", "closed", 0.0, 5.0, 40, 0, 2, 0, None,
             now - 3600, now - 1),
        ]
        for row in rows:
            writer.state("breakers", row[:2], row)
        # How crm_lookup opened, as the engine records it: a failed call in a deal-desk run (b2c3d4e5f6a1), then
        # the breaker's transition event with the window that tripped it.
        span = "b2c3d4e5f6a1-crm"
        writer.span_started(span, "b2c3d4e5f6a1", None, "tool", "pricing", "crm_lookup", now - 42.0,
                            {"arguments": {"account": "ACME"}})
        writer.span_ended(span, "b2c3d4e5f6a1", "error", now - 41.5,
                          attrs={"error": "crm-api: 504 gateway timeout", "error_kind": "tool_error"})
        writer.event(None, None, "breaker.transition", name="tool:crm_lookup", ts=now - 40, data={
            "hierarchy": "deal-desk", "key": "tool:crm_lookup", "kind": "tool", "from": "closed", "to": "open",
            "reason": "failure rate 61.5% >= 50%", "failure_rate": 61.5, "calls_in_window": 13,
            "next_probe_at": now + 25})
        writer.flush()
    finally:
        writer.close()


def request(store: Path, *, tool: str = "apply_discount", args: dict[str, Any] | None = None,
            deadline_s: float = 300.0, clock: Any = None, reason: str = "The buyer asked for 18% off.",
            risk: str = "high", run_id: str = "c3d4e5f6a1b2", span_id: str | None = "c3d4e5f6a1b2-07") -> dict:
    from engine.controls.api import ControlAPI

    kwargs = {"clock": clock} if clock is not None else {}
    with ControlAPI(store, f"engine:{ENGINE}", **kwargs) as api:
        return api.request_approval(run_id, span_id, "pricing", tool,
                                    args if args is not None else {"deal": "ACME-001", "discount_pct": 18},
                                    risk, reason, deadline_s, "deny", ENGINE)


def ops_store(store: Path, *, fixed: bool = True) -> Path:
    """fixed_store + breakers + two pending approvals + a kill switch + a flag (times fixed when `fixed`)."""
    from engine.controls.api import ControlAPI

    fixed_store(store)
    write_breakers(store)
    clock = FixedClock(FIXED_NOW - 20) if fixed else None
    request(store, clock=clock, deadline_s=45)
    request(store, clock=clock, tool="send_email", deadline_s=600, risk="medium",
            args={"to": "cfo@acme.example", "body": EVIL}, reason=EVIL, span_id=None)
    kwargs = {"clock": clock} if clock is not None else {}
    with ControlAPI(store, "bob", **kwargs) as api:
        api.set_kill("tool", "send_email", "drain", "mail relay is spamming customers")
        api.set_flag("tools.side_effects", "off", reason="incident 42: stop writes")
    return store


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return ops_store(tmp_path / "store")


def app_for(store: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("operator", "alice")
    kwargs.setdefault("read_only", False)
    kwargs.setdefault("clock", fixed_clock)
    return create_app(store, poll_interval=0.05, **kwargs)


async def show(pilot: Any, key: str, view_id: str) -> Any:
    await pilot.press(key)
    view = pilot.app.main.view(view_id)
    await wait_for(pilot, lambda: view.loaded, what=f"{view_id} loaded")
    return view


async def test_approvals_view_renders_queue_oldest_first_with_countdown(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        rows = [view.table.get(k) for k in view.table.visible_keys()]
        assert [r.tool for r in rows] == ["apply_discount", "send_email"]
        assert view.table.cursor_key == rows[0].id
        from console.screens.approvals import approval_cell

        left = approval_cell(rows[0], "left", fixed_clock())
        assert left.plain == "25s" and "red" in str(left.style)  # 45 s window, requested 20 s before "now"
        assert approval_cell(rows[1], "left", fixed_clock()).plain == "9m40s"
        assert "apply_discount" in view.query_one("#approval-detail").plain
        assert "expires in 25s" in view.hint


async def test_markup_in_arguments_renders_literally(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        await pilot.press("down")
        detail = view.query_one("#approval-detail").plain
        assert "[bold red]x[/]" in detail and "[link=https://evil.example]" in detail
        assert "\\x1b[31m" in detail and "\x1b" not in detail


async def test_breakers_view_state_words_and_probe(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "4", "breakers")
        from console.screens.breakers import breaker_cell

        rows = [view.table.get(k) for k in view.table.visible_keys()]
        assert [r.state for r in rows] == ["open", "half_open", "closed"]
        assert breaker_cell(rows[0], "state", FIXED_NOW).plain == "OPEN"
        assert breaker_cell(rows[0], "probe", FIXED_NOW).plain == "in 25s"
        assert breaker_cell(rows[0], "failure_rate", FIXED_NOW).plain == "62%"
        await wait_for(pilot, lambda: app.main.header.snapshot is not None
                       and "OPEN" in app.main.header.slot_text("breakers"), what="breakers slot")


async def test_controls_view_lists_switches_and_flags(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "5", "controls")
        switch = next(iter(view.switches.values()))
        assert (switch.scope, switch.target, switch.mode, switch.operator) == \
            ("tool", "send_email", "drain", "bob")
        from console.screens.controls import switch_cell

        assert switch_cell(switch, "acked", FIXED_NOW).plain == "NOT ACKED"
        flag = next(iter(view.flags.values()))
        assert (flag.name, flag.value) == ("tools.side_effects", "off")


async def test_header_slots(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.main.header
        await wait_for(pilot, lambda: header.snapshot is not None and header.slot_text("approvals") != "",
                       what="header")
        assert header.slot_text("approvals") == "2 pending, next expires in 25s"
        assert header.snapshot.values["approvals"].level == "crit"
        assert header.slot_text("kill_switches") == "1 active (1 NOT ACKED)"
        assert "tools.side_effects=off" in header.slot_text("safe_mode")
        assert not app.main.query_one("#halt-banner").active


async def test_global_halt_shows_banner(store: Path) -> None:
    from engine.controls.api import ControlAPI

    with ControlAPI(store, "carol") as api:
        api.set_kill("global", None, "kill", "everything is on fire")
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        banner = app.main.query_one("#halt-banner")
        await wait_for(pilot, lambda: banner.active, what="halt banner")
        assert "GLOBAL KILL" in str(banner.render())


async def test_new_approval_notifies_on_every_view(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        alerts = app.main.view("approvals").alerts
        await wait_for(pilot, lambda: alerts.seen is not None, what="first look")
        before = alerts.notified
        request(store, tool="wire_transfer", deadline_s=120)
        await wait_for(pilot, lambda: alerts.notified > before, timeout=5, what="notification")
        assert any("wire_transfer" in n.message for n in app._notifications)


async def test_read_only_hides_actions(store: Path) -> None:
    app = app_for(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        shown = {b.binding.id for b in app.main.active_bindings.values() if b.binding.show}
        assert not shown & {"approve", "deny", "edit_approve"}
        await pilot.press("a")
        await pilot.pause()
        assert any("read-only console" in n.message for n in app._notifications)
        assert len(app.screen_stack) == 2  # no modal opened
        assert view.table.row_count == 2


async def test_enter_opens_the_request_in_the_trace(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await show(pilot, "3", "approvals")
        await pilot.press("enter")
        run = app.main.view("run")
        await wait_for(pilot, lambda: app.main.active_id == "run" and run.tree.cursor_node is not None
                       and (run.tree.cursor_node.data or {}).get("id") == "c3d4e5f6a1b2-07", what="span selected")


async def test_palette_offers_kill_and_halt_on_the_runs_view(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        titles = [c.title for c in app.main.view("runs").palette_commands()]
        assert "Kill switch on the selected run" in titles and "GLOBAL HALT: stop everything" in titles
        titles = [c.title for c in app.main.view("controls").palette_commands()]
        assert "Set a safe-mode flag" in titles
    app = app_for(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        assert app.main.view("runs").palette_commands() == [c for c in app.main.view("runs").palette_commands()
                                                            if "HALT" not in c.title and "Kill" not in c.title]
