"""Operator actions from the console, against real store files: decisions, breaker overrides, kill switches, flags
reach control.db with the operator and the reason; errors become notifications; read-only refuses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, TextArea

from console.screens import actions
from console.widgets.modals import FormModal
from tests.console.test_console_views_ops import app_for, ops_store, request, show
from tests.console_helpers import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return ops_store(tmp_path / "store", fixed=False)


def api(store: Path, operator: str = "tester") -> Any:
    from engine.controls.api import ControlAPI

    return ControlAPI(store, operator)


def live_app(store: Path, **kwargs: Any) -> Any:
    return app_for(store, clock=time.time, **kwargs)


async def modal(pilot: Any) -> FormModal:
    # Mounted, not just pushed: its fields exist only once it is composed (a busy machine shows the difference).
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, FormModal) and pilot.app.screen.is_mounted,
                   what="a modal")
    return pilot.app.screen  # type: ignore[return-value]


async def fill(pilot: Any, **values: str) -> FormModal:
    form = await modal(pilot)
    for field, value in values.items():
        form.query_one(f"#field-{field}", Input).value = value
    return form


async def submit(pilot: Any) -> None:
    await pilot.press("ctrl+s")
    await pilot.pause()


def notified(app: Any, text: str) -> bool:
    return any(text in n.message for n in app._notifications)


async def test_approve_binds_to_the_hash_shown_and_records_operator(store: Path, monkeypatch: Any) -> None:
    from engine.controls.api import ControlAPI

    seen: list[dict[str, Any]] = []
    original = ControlAPI.approve

    def spy(self: Any, approval_id: str, reason: str, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return original(self, approval_id, reason, **kwargs)

    monkeypatch.setattr(ControlAPI, "approve", spy)
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        first = view.selected()
        await pilot.press("a")
        await modal(pilot)
        await pilot.press(*"looks right")  # typed, then Enter in the last field submits
        await pilot.press("enter")
        await wait_for(pilot, lambda: notified(app, "approved by alice"), what="approved")
    with api(store) as control:
        row = control.approval(first.id)
    assert (row.status, row.decided_by, row.decision_reason) == ("approved", "alice", "looks right")
    assert seen == [{"expected_args_hash": first.args_hash}]


async def test_deny_with_message(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        first = view.selected()
        await pilot.press("d")
        await fill(pilot, reason="18% needs VP sign-off; offer 10%")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "denied by alice"), what="denied")
        await wait_for(pilot, lambda: view.table.row_count == 1, what="row gone")
    with api(store) as control:
        row = control.approval(first.id)
    assert (row.status, row.decision_reason) == ("denied", "18% needs VP sign-off; offer 10%")


async def test_edit_arguments_validates_json_then_approves(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        first = view.selected()
        await pilot.press("e")
        form = await fill(pilot, reason="cap the discount")
        area = form.query_one("#field-arguments", TextArea)
        assert '"discount_pct": 18' in area.text
        area.text = "[1, 2]"
        await submit(pilot)
        assert "must be a JSON object" in str(form.query_one("#form-error").render())
        area.text = "{not json"
        await submit(pilot)
        assert "not valid JSON" in str(form.query_one("#form-error").render())
        area.text = '{"deal": "ACME-001", "discount_pct": 10}'
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "approved with edited arguments"), what="edited")
    with api(store) as control:
        row = control.approval(first.id)
    assert row.status == "approved" and row.edited_arguments == {"deal": "ACME-001", "discount_pct": 10}


async def test_late_decision_is_a_notification(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        first = view.selected()
        await pilot.press("a")
        await fill(pilot, reason="ok")
        with api(store, "bob") as control:  # someone else decides while the modal is open
            control.deny(first.id, "no")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "already") or notified(app, "denied by bob"),
                       what="error notification")
        assert any(n.title == "Cannot do that" for n in app._notifications)


async def test_expired_decision_is_a_notification(store: Path) -> None:
    short = request(store, tool="refund", deadline_s=0.3)
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "3", "approvals")
        await wait_for(pilot, lambda: view.table.get(short.id) is not None, what="row")
        view.table.select_key(short.id)
        await pilot.press("a")
        await fill(pilot, reason="ok")
        time.sleep(0.35)
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "too late to decide"), what="late")


@pytest.mark.parametrize("key,action", [("o", "force_open"), ("r", "reset"), ("x", "disable")])
async def test_breaker_actions_write_overrides(store: Path, key: str, action: str) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await show(pilot, "4", "breakers")
        await pilot.press(key)
        await fill(pilot, reason=f"{action} for the drill")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "Breaker override #"), what="override")
    with api(store) as control:
        (row,) = control.breaker_overrides()
    assert (row.key, row.action, row.operator, row.reason) == \
        ("tool:crm_lookup", action, "alice", f"{action} for the drill")


async def test_release_clear_and_set_flag(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "5", "controls")
        await pilot.press("r")
        await fill(pilot, reason="relay fixed")
        await submit(pilot)
        await wait_for(pilot, lambda: view.switches.row_count == 0, what="released")
        await pilot.press("c")
        await fill(pilot, reason="incident over")
        await submit(pilot)
        await wait_for(pilot, lambda: view.flags.row_count == 0, what="cleared")
        await pilot.press("f")
        form = await fill(pilot, name="tool.send_email", value="sometimes", scope="global", reason="drill")
        await submit(pilot)
        assert "expected one of disabled, enabled" in str(form.query_one("#form-error").render())
        await fill(pilot, value="disabled", scope="hierarchy:deal-desk")
        await submit(pilot)
        await wait_for(pilot, lambda: view.flags.row_count == 1, what="flag set")
    with api(store) as control:
        assert control.active_kill_switches() == []
        (flag,) = control.active_flags()
        log = control.audit_log()
    assert (flag.name, flag.value, flag.scope, flag.target, flag.operator) == \
        ("tool.send_email", "disabled", "hierarchy", "deal-desk", "alice")
    mine = [(r.action, r.reason) for r in log if r.actor == "alice"]
    assert sorted(mine) == [("flag_cleared", "incident over"), ("flag_set", "drill"), ("release", "relay fixed")]


async def test_kill_run_from_runs_view_shows_preview_and_waits_for_ack(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = app.main.view("runs")
        await wait_for(pilot, lambda: runs.table.total_count == 10, what="runs")
        runs.table.select_key("c3d4e5f6a1b2")  # the running one
        await pilot.press("k")
        form = await modal(pilot)
        body = str(form.query_one("#form-body Static").render())
        assert "run:c3d4e5f6a1b2 would stop: 1 run(s), 2 running agent(s)" in body
        await pilot.press("right", "enter")  # the mode radio set has the focus: kill -> drain
        assert form.values()["mode"] == "drain"
        await fill(pilot, reason="runaway discounting")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "kill switch #2 set: run:c3d4e5f6a1b2, mode drain, by alice"),
                       what="set")
        with api(store, "engine:x") as control:
            control.ack_kill_switches([2], "e0e0")
        await wait_for(pilot, lambda: notified(app, "acknowledged kill switch #2"), what="ack")
    with api(store) as control:
        row = control.kill_switch(2)
    assert (row.scope, row.target, row.mode, row.operator) == ("run", "c3d4e5f6a1b2", "drain", "alice")


async def test_no_ack_offers_to_terminate_the_engine(store: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(actions, "ACK_WAIT_S", 0.3)
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.main.view("runs")
        await pilot.press("H")
        await fill(pilot, reason="stop", confirm="HALT")
        await submit(pilot)
        await wait_for(pilot, lambda: isinstance(app.screen, FormModal) and "Terminate" in app.screen.form_title,
                       what="terminate offer")
        await fill(pilot, reason="wedged")
        await submit(pilot)
        # pid 4242 of the fixture is not this store's lock holder: refused, as a notification
        await wait_for(pilot, lambda: notified(app, "is not the engine of store"), what="refusal")


async def test_global_halt_needs_typed_halt(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("H")
        form = await fill(pilot, reason="everything is on fire", confirm="halt")
        await submit(pilot)
        assert "Type HALT exactly" in str(form.query_one("#form-error").render())
        with api(store) as control:
            assert [s.scope for s in control.active_kill_switches()] == ["tool"]
        await fill(pilot, confirm="HALT")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "set: global"), what="halt")
        await wait_for(pilot, lambda: app.main.query_one("#halt-banner").active, what="banner")
    with api(store) as control:
        assert sorted(s.scope for s in control.active_kill_switches()) == ["global", "tool"]


async def test_kill_agent_from_run_view_uses_selected_span() -> None:
    assert actions.kill_target_for_span({"kind": "agent", "agent": "pricing"}, "r1") == ("agent", "pricing", "r1")
    assert actions.kill_target_for_span({"kind": "tool", "name": "send_email"}, "r1") == ("tool", "send_email", None)
    assert actions.kill_target_for_span({"kind": "llm", "name": "gpt"}, "r1") == ("run", "r1", None)


async def test_read_only_refuses_kill_and_decisions(store: Path) -> None:
    app = live_app(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = app.main.view("runs")
        await wait_for(pilot, lambda: runs.table.total_count == 10, what="runs")
        shown = {b.binding.id for b in app.main.active_bindings.values() if b.binding.show}
        assert "kill_selected" not in shown
        await pilot.press("k")
        await pilot.press("H")
        await pilot.pause()
        assert not isinstance(app.screen, FormModal)
        assert notified(app, "read-only console")
        await show(pilot, "5", "controls")
        await pilot.press("r")
        await pilot.press("f")
        await pilot.pause()
        assert not isinstance(app.screen, FormModal)
    with api(store) as control:
        assert len(control.active_kill_switches()) == 1 and len(control.active_flags()) == 1


async def test_kill_from_run_view_targets_the_selected_agent(store: Path) -> None:
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        app.main.run_command(":run c3d4e5f6a1b2")
        run = app.main.view("run")  # built on first use: its widgets exist once it is mounted
        await wait_for(pilot, lambda: run.is_mounted and "c3d4e5f6a1b2-06" in run.tree.nodes, what="spans")
        run.tree.reveal(run.tree.nodes["c3d4e5f6a1b2-06"])  # the pricing agent
        await pilot.pause()
        await pilot.press("k")
        form = await modal(pilot)
        assert form.form_title == "Kill switch: agent:pricing in run:c3d4e5f6a1b2"
        assert "1 run(s), 1 running agent(s)" in str(form.query_one("#form-body Static").render())
        await fill(pilot, reason="pricing loops")
        await submit(pilot)
        await wait_for(pilot, lambda: notified(app, "set: agent:pricing in run:c3d4e5f6a1b2"), what="set")


async def test_the_controls_view_sorts_and_filters_like_every_table(store: Path) -> None:
    """k9s habits in view 5 too (issue 15): `/` filters both tables by any word, `s` sorts the focused table and
    says so in its title, `esc` clears the filter; setting a flag moved to `f`."""
    with api(store, "carol") as control:
        control.set_kill("agent", "pricing", "pause", "pricing loops on the Acme deal")
        control.set_flag("agent.pricing", "disabled", reason="pricing loops on the Acme deal")
    app = live_app(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await show(pilot, "5", "controls")
        await wait_for(pilot, lambda: view.switches.row_count == 2 and view.flags.row_count == 2, what="rows")
        await pilot.press("slash")
        await pilot.press(*"acme")
        await wait_for(pilot, lambda: view.switches.row_count == 1 and view.flags.row_count == 1, what="filtered")
        assert '"acme" (1 of 2)' in view.query_one("#switches-title").plain
        await pilot.press("enter", "escape")
        await wait_for(pilot, lambda: view.switches.row_count == 2 and view.flags.row_count == 2, what="cleared")
        assert "sorted by newest first" in view.query_one("#switches-title").plain
        await pilot.press("s")
        await wait_for(pilot, lambda: "sorted by scope" in view.query_one("#switches-title").plain,
                       what="sorted by scope")
        assert view.switches.sort_column == "scope" and view.flags.sort_column == "created"
