"""Durable runs acted on from the console (issue 13): a side effect whose outcome is unknown is a RECONCILE row in the
approvals view, decided there (done / again / fail, a reason required) through ControlAPI.reconcile_side_effect
(the audit row `flightdeck reconcile` writes); the resume key (R) in the runs and run views shows the preview
`flightdeck resume` prints, requires a reason and records the resume (audit row `resume`); refusals are hints, not
errors. Real store files (tests/console_helpers.py durable_store), the real app under Pilot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from console.app import create_app
from console.widgets.modals import FormModal
from engine.controls.api import ControlAPI
from tests.console.test_console_actions import fill, modal, notified, submit
from tests.console.test_console_views_ops import request
from tests.console_helpers import (
    DURABLE_RUNS,
    add_durable_run,
    durable_store,
    fixed_store,
    register_engine,
    utc,  # noqa: F401 - an autouse fixture: pins TZ=UTC
    wait_for,
    write_durable_runs,
)
from tests.durable_support import TWICE

pytestmark = pytest.mark.anyio

WAITING = [r[0] for r in DURABLE_RUNS if r[2] == "needs_reconcile"]  # newest first
OLDEST_WAITING = WAITING[-1]
ABANDONED = "ab0ab0ab0ab0"  # a durable run its engine died under


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return durable_store(tmp_path / "store")


def app_for(store: Path, *, read_only: bool = False) -> Any:
    return create_app(store, operator="alice", read_only=read_only, clock=time.time, poll_interval=0.05)


def audit(store: Path) -> list[Any]:
    with ControlAPI(store, "reader") as api:
        return api.audit_log(limit=1000)


async def approvals_with_reconcile_rows(pilot: Any) -> Any:
    await pilot.press("3")
    view = pilot.app.main.view("approvals")
    await wait_for(pilot, lambda: view.is_mounted and view.table.total_count == len(WAITING), what="reconcile rows")
    return view


async def test_reconcile_row_decided_in_the_approvals_view(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await approvals_with_reconcile_rows(pilot)
        # The run that has waited longest on top, labelled RECONCILE, with tool, args, run and idempotency key.
        row = view.selected()
        assert (row.run_id, row.tool, row.key) == (OLDEST_WAITING, "price_quote",
                                                   f"{OLDEST_WAITING}:pricing/price_quote#0")
        from console.screens.approvals import approval_cell

        assert approval_cell(row, "level", 0.0).plain == "RECONCILE"
        assert approval_cell(row, "id", 0.0).plain == row.key
        assert '"seats":100' in approval_cell(row, "arguments", 0.0).plain
        assert "c done" in view.hint
        assert "none pending · 2 to RECONCILE" in view.query_one("#approvals-title").plain
        detail = view.query_one("#approval-detail").plain
        assert "RECONCILE" in detail and row.key in detail and OLDEST_WAITING in detail

        # Only RECONCILE rows listed: the footer offers c/r/f, not a/d/e (which decide nothing here).
        shown = {b.binding.id for b in app.main.active_bindings.values() if b.binding.show}
        assert {"reconcile_done", "reconcile_again", "reconcile_fail"} <= shown and "approve" not in shown
        await pilot.press("a")
        await pilot.pause()
        assert not isinstance(app.screen, FormModal)

        await pilot.press("c")
        form = await modal(pilot)
        assert "Reconcile price_quote: done" in form.form_title
        await submit(pilot)  # no reason: refused inside the form, nothing written
        assert isinstance(app.screen, FormModal)
        assert not [e for e in audit(store) if e.action == "reconcile"]
        await fill(pilot, reason="the quote reached the CRM (checked by its key)")
        await submit(pilot)
        await wait_for(pilot, lambda: view.table.total_count == len(WAITING) - 1, what="row decided")
        assert notified(app, "confirmed done, by alice")
        assert notified(app, f"flightdeck resume {OLDEST_WAITING}")

    [entry] = [e for e in audit(store) if e.action == "reconcile"]
    assert (entry.actor, entry.target, entry.reason) == ("alice", f"run:{OLDEST_WAITING}",
                                                         "the quote reached the CRM (checked by its key)")
    assert entry.after["decision"] == "done" and entry.after["key"] == f"{OLDEST_WAITING}:pricing/price_quote#0"
    with ControlAPI(store, "reader") as api:
        [call] = api.reconcile_calls(OLDEST_WAITING)
        assert call.decision is not None and (call.decision.decision, call.decision.operator) == ("done", "alice")
        assert api.reconcile_calls(WAITING[0])[0].decision is None  # the other run still waits


async def test_reconcile_rows_beside_approval_requests(store: Path) -> None:
    approval = request(store)  # an approval request, 5 minutes to decide
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        view = app.main.view("approvals")
        await wait_for(pilot, lambda: view.is_mounted and view.table.total_count == len(WAITING) + 1, what="rows")
        # No deadline and nothing happens to the run until someone decides: RECONCILE rows first (longest waiting
        # on top), then the requests by deadline; both sets of keys in the footer.
        assert list(view.table.visible_keys()) == [f"reconcile:{OLDEST_WAITING}:pricing/price_quote#0",
                                                   f"reconcile:{WAITING[0]}:pricing/price_quote#0", approval.id]
        assert "1 pending · 2 to RECONCILE" in view.query_one("#approvals-title").plain
        shown = {b.binding.id for b in app.main.active_bindings.values() if b.binding.show}
        assert {"approve", "deny", "reconcile_done", "reconcile_fail"} <= shown
        await pilot.press("a")  # approve on a RECONCILE row: explained, nothing opens
        await pilot.pause()
        assert not isinstance(app.screen, FormModal) and notified(app, "This is a RECONCILE row")
        await pilot.press("end")
        assert view.selected().id == approval.id
        await pilot.press("c")  # done on an approval: explained
        await pilot.pause()
        assert not isinstance(app.screen, FormModal) and notified(app, "c, r and f decide a RECONCILE row")
        await pilot.press("slash", *"reconcile")  # the filter finds them by the word
        await wait_for(pilot, lambda: view.table.row_count == len(WAITING), what="filtered")
    assert not [e for e in audit(store) if e.action in ("reconcile", "approve")]


async def test_reconcile_fail_and_escape_writes_nothing(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await approvals_with_reconcile_rows(pilot)
        await pilot.press("r")
        await modal(pilot)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, FormModal), what="closed")
        assert not [e for e in audit(store) if e.action == "reconcile"]
        await pilot.press("down")
        assert view.selected().run_id == WAITING[0]
        await pilot.press("f")
        await fill(pilot, reason="double quote risk: fail it")
        await submit(pilot)
        await wait_for(pilot, lambda: view.table.total_count == 1, what="row decided")
    [entry] = [e for e in audit(store) if e.action == "reconcile"]
    assert (entry.target, entry.after["decision"]) == (f"run:{WAITING[0]}", "fail")


async def test_reconcile_keys_refused_in_a_read_only_console(store: Path) -> None:
    app = app_for(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        view = await approvals_with_reconcile_rows(pilot)
        await pilot.press("c")
        await pilot.pause()
        assert not isinstance(app.screen, FormModal) and notified(app, "read-only console")
        assert "flightdeck reconcile" in view.hint
    assert not [e for e in audit(store) if e.action == "reconcile"]


async def test_reconcile_alarm_points_at_the_approvals_view(store: Path) -> None:
    app = app_for(store, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        hint = app.main.hint_line
        await wait_for(pilot, lambda: "wait for you to reconcile" in hint.sentence, what="alarm")
        assert "press 3" in hint.sentence and f"flightdeck reconcile {OLDEST_WAITING}" in hint.sentence
        await approvals_with_reconcile_rows(pilot)
        await wait_for(pilot, lambda: "select a RECONCILE row" in hint.sentence, what="alarm on view 3")
        assert "press 3" not in hint.sentence
        assert isinstance(app.screen.focused, Input) is False


# -- resume (R) ------------------------------------------------------------------------------------------------------

def resumable_store(store: Path) -> Path:
    """durable_store's runs plus an abandoned durable run, and no engine (each test registers the one it needs)."""
    fixed_store(store, engine=False)
    write_durable_runs(store)
    add_durable_run(store, ABANDONED, minutes_ago=6.0, status="abandoned", error="engine died (SIGKILL)")
    return store


@pytest.fixture()
def resumable(tmp_path: Path) -> Path:
    store = resumable_store(tmp_path / "resumable")
    register_engine(store)
    return store


async def select_run(pilot: Any, run_id: str) -> Any:
    """The runs view with the cursor on `run_id` (filtered to it)."""
    runs = pilot.app.main.view("runs")
    await wait_for(pilot, lambda: runs.loaded and runs.table.get(run_id) is not None, what=f"run {run_id}")
    await pilot.press("slash", *run_id, "enter")
    await wait_for(pilot, lambda: runs.table.cursor_key == run_id, what="cursor on the run")
    return runs


@pytest.mark.parametrize("serving", [False, True], ids=["no-engine", "engine-serving"])
async def test_resume_key_on_an_abandoned_durable_run(tmp_path: Path, serving: bool) -> None:
    # An engine that said it stopped, or one whose heartbeat is fresh now: the console says which next step applies.
    resumable = resumable_store(tmp_path / "store")
    register_engine(resumable, heartbeat=time.time() + 60, stopped=not serving)
    app = app_for(resumable)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await select_run(pilot, ABANDONED)
        assert "R resumes it" in runs.hint
        await pilot.press("R")
        form = await modal(pilot)
        body = form.body.plain
        assert form.form_title == f"Resume run {ABANDONED}"
        assert f"resume run {ABANDONED} (deal-desk, abandoned" in body
        assert "already spent" in body and "will run again" in body
        await submit(pilot)  # no reason: refused inside the form
        assert isinstance(app.screen, FormModal)
        assert not [e for e in audit(resumable) if e.action == "resume"]
        await fill(pilot, reason="engine OOM-killed; retry on the new node")
        await submit(pilot)
        await wait_for(pilot, lambda: "recorded (audit row" in runs.hint, what="resume recorded")
        if serving:
            assert "A serving engine on this store (pid 4242 on ops-host) resumes it within seconds" in runs.hint
        else:
            assert f"No engine is serving this store: run `flightdeck resume {ABANDONED}`" in runs.hint
        assert notified(app, f"Resume of run {ABANDONED} recorded")
    [entry] = [e for e in audit(resumable) if e.action == "resume"]
    assert (entry.actor, entry.target, entry.reason) == ("alice", f"run:{ABANDONED}",
                                                         "engine OOM-killed; retry on the new node")
    assert entry.after["status"] == "abandoned"


async def test_resume_key_in_the_run_view(resumable: Path) -> None:
    app = app_for(resumable)
    async with app.run_test(size=(100, 30)) as pilot:
        app.main.run_command(f":run {ABANDONED}")
        view = app.main.view("run")
        await wait_for(pilot, lambda: view.is_mounted and view.run is not None and view.run.id == ABANDONED,
                       what="run view")
        await wait_for(pilot, lambda: "R resumes it" in view.hint, what="hint")
        await pilot.press("R")
        form = await modal(pilot)
        assert f"resume run {ABANDONED}" in form.body.plain
        await fill(pilot, reason="resume from view 2")
        await submit(pilot)
        await wait_for(pilot, lambda: "recorded (audit row" in view.hint, what="resume recorded")
    assert [e.target for e in audit(resumable) if e.action == "resume"] == [f"run:{ABANDONED}"]


@pytest.mark.parametrize(("run_id", "why"), [
    ("a1b2c3d4e5f6", "completed: there is nothing to resume"),
    ("b2c3d4e5f6a1", "is not a durable run"),
    ("c3d4e5f6a1b2", "is running"),
    (OLDEST_WAITING, "waits for an operator to reconcile 1 side effect"),
])
async def test_resume_key_explains_a_run_that_cannot_resume(resumable: Path, run_id: str, why: str) -> None:
    app = app_for(resumable)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await select_run(pilot, run_id)
        await pilot.press("R")
        await wait_for(pilot, lambda: why in runs.hint, what="the refusal on the hint line")
        assert not isinstance(app.screen, FormModal)
        assert not any(n.severity == "error" for n in app._notifications)
    assert not [e for e in audit(resumable) if e.action == "resume"]


async def test_resume_key_explains_a_run_recorded_with_ambiguous_call_paths(tmp_path: Path) -> None:
    # A run an older engine recorded (no `paths` attribute) of a hierarchy running one agent in two pipeline
    # stages: its side-effect keys cannot tell the stages apart (engine/runtime/call_paths.py).
    store = resumable_store(tmp_path / "store")
    register_engine(store)
    hierarchy = tmp_path / "twice.yaml"
    hierarchy.write_text(TWICE)
    add_durable_run(store, "0a0a0a0a0a0a", minutes_ago=5.0, status="abandoned", error="engine died",
                    attributes={"hierarchy_path": str(hierarchy)})
    app = app_for(store)
    async with app.run_test(size=(160, 48)) as pilot:
        runs = await select_run(pilot, "0a0a0a0a0a0a")
        await pilot.press("R")
        await wait_for(pilot, lambda: "before pipeline stages had call paths" in runs.hint,
                       what="the refusal on the hint line")
        assert not isinstance(app.screen, FormModal)
    assert not [e for e in audit(store) if e.action == "resume"]


async def test_resume_key_refused_in_a_read_only_console(resumable: Path) -> None:
    app = app_for(resumable, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await select_run(pilot, ABANDONED)
        await pilot.press("R")
        await pilot.pause()
        assert not isinstance(app.screen, FormModal) and notified(app, "read-only console")
    assert not [e for e in audit(resumable) if e.action == "resume"]


# -- issue 15: sort and filter on the audit view --------------------------------------------------------------------

async def test_audit_view_sorts_and_filters_the_page(store: Path) -> None:
    with ControlAPI(store, "zoe") as api:
        api.record_action("page_sent", "incident:inc-1", reason="sev2")
    with ControlAPI(store, "bob") as api:
        api.record_action("engine_terminated", "engine:42", reason="wedged")
    with ControlAPI(store, "carol") as api:
        api.record_action("page_sent", "incident:inc-2", reason="sev1")
    app = app_for(store, read_only=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("7")
        view = app.main.view("audit")
        await wait_for(pilot, lambda: view.is_mounted and len(view.shown) == 3, what="audit rows")
        actors = lambda: [e.actor for e in view.shown]
        assert actors() == ["carol", "bob", "zoe"]  # newest first
        await pilot.press("s")
        assert actors() == ["bob", "carol", "zoe"] and "sorted by actor" in view.query_one("#audit-title").plain
        await pilot.press("S")
        assert actors() == ["zoe", "carol", "bob"]
        await pilot.press("slash", *"page_sent")
        await wait_for(pilot, lambda: actors() == ["zoe", "carol"], what="filtered")
        assert view.table.row_count == 2 and '(2 of 3)' in view.query_one("#audit-title").plain
        await pilot.press("enter", "escape")
        await wait_for(pilot, lambda: len(view.shown) == 3, what="filter cleared")
        # The selection is a row key: a sort keeps the cursor on the same audit row.
        view.table.move_cursor(row=0)  # zoe's page (reversed by actor)
        selected = view.shown[0].id
        await pilot.press("s")  # by action: bob's engine_terminated, then the pages, newest first: zoe's moves down
        assert actors() == ["bob", "carol", "zoe"]
        assert view.table.cursor_row == 2 and view.shown[2].id == selected
        assert view.query_one("#audit-detail").plain.startswith(f"#{selected} ")
        await pilot.press("escape")  # no filter: back one level, to the runs (as in every table view)
        await wait_for(pilot, lambda: app.main.active_id == "runs", what="back to the runs")
