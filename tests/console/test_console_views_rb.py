"""Views 6 (runbooks and incidents) and 7 (audit), the budget gauges of view 2, the incidents header slot and
the runs table's INCIDENTS column, and App.set_hint: Pilot tests on real store files.

Incidents are written through the runbooks' own IncidentStore and actions APIs (as the engine's runbook runtime
writes them), with a fixed clock and fixed incident ids, so `incident_store` is also the snapshot fixture."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.app import create_app
from tests.console_helpers import FIXED_NOW, FixedClock, _open_writer, fixed_clock, fixed_store, wait_for

pytestmark = pytest.mark.anyio

SIZE = (160, 48)
RUN_WITH_BUDGETS = "b2c3d4e5f6a1"


def _fixed_ids(monkeypatch: Any) -> None:
    from engine.runbooks.incidents import IncidentStore

    counter = iter(range(1, 1000))
    monkeypatch.setattr(IncidentStore, "_new_id", staticmethod(lambda conn: f"inc-{next(counter):08d}"))


def write_incidents(store_dir: Path) -> None:
    """Three open incidents (one suggested and firing, one applied by its runbook and firing, one acknowledged and
    quiet), the runbook application in force, and budget gauges for one run. Call with _fixed_ids in force."""
    from engine.controls.api import ControlAPI
    from engine.runbooks import actions
    from engine.runbooks.incidents import IncidentStore
    from engine.runbooks.loader import load_runbooks
    from engine.store.control import ControlDB

    clock = FixedClock(FIXED_NOW - 300)
    db = ControlDB.open(store_dir, clock=clock)  # type: ignore[arg-type]
    try:
        store = IncidentStore(db, clock=clock)  # type: ignore[arg-type]
        runbooks = {r.id: r for r in load_runbooks(store_dir)}

        def reading(signal: str, value: float, threshold: float) -> list[dict[str, Any]]:
            return [{"signal": signal, "value": value, "op": ">=", "threshold": threshold, "fired": True}]

        clock.now = FIXED_NOW - 600
        quiet, _ = store.open_or_update(
            runbook="cost-spike", title=runbooks["cost-spike"].spec.title, severity="sev2", apply_mode="auto",
            scope="hierarchy:support-triage", readings=reading("spend_rate_per_min", 2.4, 2.0),
            context={"hierarchy": "support-triage"}, summary="spend 2.4/min", actor="runbook:cost-spike",
            engine_id=None)
        store.cleared(quiet.id, [{"signal": "spend_rate_per_min", "value": 0.3, "peak": 2.4}],
                      "runbook:cost-spike")
        clock.now = FIXED_NOW - 500
        store.acknowledge(quiet.id, "bob", "looking at the spend")
        clock.now = FIXED_NOW - 240
        looping, _ = store.open_or_update(
            runbook="looping-agent", title=runbooks["looping-agent"].spec.title, severity="sev2", apply_mode="auto",
            scope="agent:pricing", readings=reading("loop_detected", 3, 3),
            context={"agent": "pricing", "hierarchy": "deal-desk"}, summary="3 loops", actor="runbook:looping-agent",
            engine_id=None)
        api = ControlAPI(store_dir, "runbook:looping-agent", clock=clock, db=db)  # type: ignore[arg-type]
        actions.apply(api, runbooks["looping-agent"], "agent:pricing", {"agent": "pricing", "scope": "agent:pricing",
                                                                         "hierarchy": "deal-desk"},
                      source="runbook:looping-agent", reason="runbook looping-agent fired", running_runs=lambda h: [],
                      incident_id=looping.id)
        clock.now = FIXED_NOW - 120
        store.open_or_update(
            runbook="latency-spike", title=runbooks["latency-spike"].spec.title, severity="sev3",
            apply_mode="suggest", scope="hierarchy:deal-desk", readings=reading("latency_p95", 31.5, 20),
            context={"hierarchy": "deal-desk"}, summary="p95 31.5s", actor="runbook:latency-spike", engine_id=None)
    finally:
        db.close()
    writer = _open_writer(store_dir)
    try:
        data = {"cost_usd": {"used": 0.425, "reserved": 0.02, "limit": 0.5, "fraction": 0.89,
                             "burn_rate_per_min": 0.05, "time_to_exhaustion_s": 66.0},
                "total_tokens": {"used": 12_000, "reserved": 0, "limit": 10_000, "fraction": 1.2,
                                 "burn_rate_per_min": 900, "time_to_exhaustion_s": 0},
                "model_calls": {"used": 3, "reserved": 1, "limit": 50, "fraction": 0.08,
                                "burn_rate_per_min": 2, "time_to_exhaustion_s": 1380}}
        writer.state("budgets", (RUN_WITH_BUDGETS, "run"),
                     (RUN_WITH_BUDGETS, "run", None, json.dumps(data), FIXED_NOW - 60))
        agent = {"total_tokens": {"used": 2700, "reserved": 0, "limit": 4000, "fraction": 0.675,
                                  "burn_rate_per_min": 300, "time_to_exhaustion_s": 260}}
        writer.state("budgets", (RUN_WITH_BUDGETS, f"agent:{RUN_WITH_BUDGETS}-06"),
                     (RUN_WITH_BUDGETS, f"agent:{RUN_WITH_BUDGETS}-06", "pricing", json.dumps(agent),
                      FIXED_NOW - 60))
        writer.flush()
    finally:
        writer.close()


def incident_store(store_dir: Path, monkeypatch: Any) -> Path:
    fixed_store(store_dir)
    _fixed_ids(monkeypatch)
    write_incidents(store_dir)
    return store_dir


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield incident_store(tmp_path / "store", monkeypatch)


def app_for(store: Path, *, read_only: bool = False) -> Any:
    return create_app(store, operator="alice", read_only=read_only, clock=fixed_clock, poll_interval=0.05)


def audit_rows(store: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(store / "control.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        conn.close()


async def open_runbooks(pilot: Any) -> Any:
    await pilot.press("6")
    view = pilot.app.main.view("runbooks")
    await wait_for(pilot, lambda: view.snapshot is not None and view.incidents_table.row_count == 3,
                   what="incidents")
    return view


async def answer(pilot: Any, text: str) -> None:
    from console.screens.text_prompt import TextPrompt

    # Mounted, not just pushed: its input exists only once it is composed.
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, TextPrompt) and pilot.app.screen.is_mounted,
                   what="the prompt")
    pilot.app.screen.query_one("#prompt-input").value = text
    await pilot.press("enter")


# -- view 6 -----------------------------------------------------------------------------------------------------

async def test_runbooks_view_shows_incidents_runbooks_and_the_suggestion(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        # What is on fire first: firing sev2, firing sev3, then the quiet acknowledged one.
        assert [i.id for i in view.incidents] == ["inc-00000002", "inc-00000003", "inc-00000001"]
        assert view.runbooks_table.row_count >= 6
        # Firing suggested runbook: obvious, in the state column, the detail and the hint.
        assert view.detection_state("latency-spike") == ("FIRING · suggested: press p", "bold red")
        assert view.detection_state("looping-agent")[0] == "FIRING · applied"
        # Cleared and nothing of it in force (acknowledged, never applied): it waits for a resolve (issue 15).
        assert view.detection_state("cost-spike") == ("clearing · resolve it", "bold yellow")
        assert view.detection_state("approval-backlog") == ("quiet", "green")
        await wait_for(pilot, lambda: "press p to see the dry run" in app.main.view("runbooks").hint
                       or "not acknowledged" in view.hint, what="hint")
        await pilot.press("down")  # the suggested latency-spike incident
        await wait_for(pilot, lambda: "suggested: press p to apply" in str(view.query_one("#rb-detail").render()),
                       what="suggestion")
        assert "latency_p95=31.5 (>= 20)" in str(view.query_one("#rb-detail").render())
        # The dry run of the selected incident's runbook.
        await wait_for(pilot, lambda: "concurrency.max" in str(view.query_one("#rb-detail").render()),
                       what="dry run")
        # Header: sev2 looping-agent is firing -> an alarm on the hint line.
        await wait_for(pilot, lambda: app.main.header.slot_text("incidents").startswith("3 open"), what="slot")
        assert "3 open · 2 firing · 2 unacked" == app.main.header.slot_text("incidents")
        value = app.main.header.snapshot.values["incidents"]
        assert value.level == "crit"  # an alarm: on the hint line unless a more urgent slot speaks first
        assert value.alarm.startswith("sev2 looping-agent firing on ") and "press 6" in value.alarm
        assert "(incident inc-00000002)" in value.alarm


async def test_ack_note_resolve_reach_control_db_with_the_operator(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        assert view.selected_incident.id == "inc-00000002"  # looping-agent, firing, not acknowledged
        await pilot.press("a")
        await answer(pilot, "on it")
        await wait_for(pilot, lambda: any(r["action"] == "incident_ack" and r["actor"] == "alice"
                                          for r in audit_rows(store)), what="ack in the audit log")
        await wait_for(pilot, lambda: view.selected_incident and view.selected_incident.acknowledged_by == "alice",
                       what="acknowledged on screen")
        # The incident's time line (newest first) in the detail says who did it.
        await wait_for(pilot, lambda: "alice: acknowledged by alice: on it" in str(view.query_one("#rb-detail").render()),
                       what="time line")
        await pilot.press("n")
        await answer(pilot, "pricing agent restarted")
        await wait_for(pilot, lambda: any(r["action"] == "incident_note" and r["reason"] == "pricing agent restarted"
                                          for r in audit_rows(store)), what="note")
        # Resolve needs a reason: an empty answer keeps the prompt open.
        await pilot.press("R")
        await answer(pilot, "")
        from console.screens.text_prompt import TextPrompt

        assert isinstance(app.screen, TextPrompt)
        await answer(pilot, "loop fixed upstream")
        await wait_for(pilot, lambda: view.incidents_table.row_count == 2, what="resolved incident leaves")
    rows = [r for r in audit_rows(store) if r["actor"] == "alice"]
    assert [r["action"] for r in rows] == ["incident_ack", "incident_note", "incident_resolve"]
    assert rows[-1]["target"] == "inc-00000002" and rows[-1]["reason"] == "loop fixed upstream"


async def test_apply_shows_the_dry_run_then_rollback(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        await pilot.press("down")
        await wait_for(pilot, lambda: view.selected_incident.id == "inc-00000003", what="latency-spike")
        await pilot.press("p")
        from console.screens.text_prompt import TextPrompt

        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="confirmation")
        body = str(app.screen.body)
        assert "Dry run: applying latency-spike to hierarchy:deal-desk would:" in body
        assert "concurrency.max" in body and "models.max_tier" in body
        await answer(pilot, "p95 at 31s, shed load")
        await wait_for(pilot, lambda: any(r["action"] == "runbook_applied" and r["actor"] == "alice"
                                          for r in audit_rows(store)), what="applied")
        await wait_for(pilot, lambda: view.detection_state("latency-spike")[0] == "FIRING · applied",
                       what="applied on screen")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="rollback confirmation")
        assert "concurrency.max" in str(app.screen.body)
        await answer(pilot, "latency back to normal")
        await wait_for(pilot, lambda: any(r["action"] == "runbook_rolled_back" and r["actor"] == "alice"
                                          for r in audit_rows(store)), what="rolled back")
        await wait_for(pilot, lambda: view.detection_state("latency-spike")[0] == "FIRING · suggested: press p",
                       what="suggested again after the roll back")
    conn = sqlite3.connect(store / "control.db")
    try:
        rows = conn.execute("SELECT actor, rolled_back_by, reason FROM runbook_applications WHERE runbook = "
                            "'latency-spike'").fetchall()
    finally:
        conn.close()
    assert rows == [("alice", "alice", "p95 at 31s, shed load")]


async def test_rollback_from_the_runbooks_table(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        await pilot.press("tab")
        row = [r.id for r in view.runbooks].index("looping-agent")
        view.runbooks_table.move_cursor(row=row)
        await wait_for(pilot, lambda: view.target()[0] is not None and view.target()[0].id == "looping-agent",
                       what="runbook selected")
        assert view.last_table == "runbooks"
        assert view.target()[2] == "agent:pricing"
        await pilot.press("b")
        from console.screens.text_prompt import TextPrompt

        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="rollback confirmation")
        assert "kill switch (pause) on agent:pricing -> released" in str(app.screen.body)
        await answer(pilot, "loop fixed, resume pricing")
        await wait_for(pilot, lambda: view.detection_state("looping-agent")[0] == "FIRING", what="rolled back")
    rows = [r for r in audit_rows(store) if r["actor"] == "alice"]
    assert "runbook_rolled_back" in [r["action"] for r in rows]


async def test_apply_a_runbook_without_an_incident_asks_for_the_scope(store: Path) -> None:
    from console.screens.text_prompt import TextPrompt

    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        await pilot.press("tab")
        view.runbooks_table.move_cursor(row=[r.id for r in view.runbooks].index("approval-backlog"))
        await wait_for(pilot, lambda: view.target()[0].id == "approval-backlog", what="runbook selected")
        assert view.target()[2] is None
        await pilot.press("p")
        await answer(pilot, "nonsense")  # not a scope: says why, changes nothing
        await wait_for(pilot, lambda: app.screen is app.main, what="refused")
        await pilot.press("p")
        await answer(pilot, "global")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt) and "Dry run" in str(app.screen.body),
                       what="the dry run")
        assert "runs.admission" in str(app.screen.body)
        await answer(pilot, "drill")
        await wait_for(pilot, lambda: any(r["action"] == "runbook_applied" and r["target"] == "approval-backlog@global"
                                          for r in audit_rows(store)), what="applied")


async def test_read_only_console_refuses_actions(store: Path) -> None:
    app = app_for(store, read_only=True)
    before = len(audit_rows(store))
    async with app.run_test(size=SIZE) as pilot:
        await open_runbooks(pilot)
        for key in ("a", "R", "n", "p", "b"):
            await pilot.press(key)
            await pilot.pause()
            assert app.screen is app.main
    assert len(audit_rows(store)) == before


async def test_a_refused_action_says_why_without_a_store_alarm(store: Path) -> None:
    from engine.runbooks.incidents import IncidentStore
    from engine.store.control import ControlDB

    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_runbooks(pilot)
        assert view.selected_incident.id == "inc-00000002"
        # Someone else acknowledges it from the CLI while the prompt is open.
        await pilot.press("a")
        db = ControlDB.open(store)
        try:
            IncidentStore(db).acknowledge("inc-00000002", "bob")
        finally:
            db.close()
        seen: list[str] = []
        app.notify = lambda message, **kw: seen.append(message)  # type: ignore[method-assign]
        await answer(pilot, "me too")
        await wait_for(pilot, lambda: any("already acknowledged (by bob)" in m for m in seen), what="refusal")
        assert app.notifier.store_problem is None


async def test_escape_cancels_a_prompt_without_writing(store: Path) -> None:
    app = app_for(store)
    before = len(audit_rows(store))
    async with app.run_test(size=SIZE) as pilot:
        await open_runbooks(pilot)
        from console.screens.text_prompt import TextPrompt

        for key in ("a", "p"):
            await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, TextPrompt), what="prompt")
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.main, what="back on the main screen")
    assert len(audit_rows(store)) == before


# -- view 7 -----------------------------------------------------------------------------------------------------

async def test_audit_view_shows_rows_newest_first_and_the_chain(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        view = app.main.view("audit")
        await wait_for(pilot, lambda: view.verification is not None and view.page is not None, what="audit")
        total = len(audit_rows(store))
        assert view.table.row_count == total
        assert view.page.rows[0].id == total  # newest first
        title = view.query_one("#audit-title").plain
        assert f"chain intact ({total} rows)" in title


async def test_audit_view_shows_a_tampered_row(store: Path) -> None:
    conn = sqlite3.connect(store / "control.db")
    try:
        conn.execute("UPDATE audit SET reason = 'nothing to see here' WHERE id = 2")
        conn.commit()
    finally:
        conn.close()
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        view = app.main.view("audit")
        await wait_for(pilot, lambda: view.verification is not None, what="verification")
        title = view.query_one("#audit-title").plain
        assert "TAMPERED at row 2" in title
        assert "altered at row 2" in view.hint


async def test_audit_paging(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import console.views_data.audit_feed as audit_screen

    monkeypatch.setattr(audit_screen, "PAGE", 3)
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        view = app.main.view("audit")
        await wait_for(pilot, lambda: view.page is not None and view.table.row_count == 3, what="first page")
        newest = view.page.rows[0].id
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: view.page.rows and view.page.rows[0].id == newest - 3, what="older page")
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: view.page.rows[0].id == newest, what="newer page")


# -- gauges, runs column, set_hint --------------------------------------------------------------------------------

async def test_run_view_shows_budget_gauges(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        app.main.run_command(":run " + RUN_WITH_BUDGETS)
        view = app.main.view("run")
        await wait_for(pilot, lambda: view.is_mounted, what="the run view built")  # on first use
        gauges = view.query_one("#run-budgets")
        await wait_for(pilot, lambda: "cost_usd" in gauges.plain, what="gauges")
        text = gauges.plain
        # This run has failed: final spend against each limit (not the engine's last "fraction" with reservations,
        # no burn rate, no "out in"), the bars in the failed status's red.
        assert "final spend: the run ✖ failed" in text
        assert "85% of $0.5000 · final $0.4250" in text and "near the limit" not in text
        assert "120% of 12.0k" not in text and "120% of 10.0k · final 12.0k · OVER the limit" in text
        assert "6% of 50 · final 3" in text
        assert "out in" not in text and "/min" not in text and "reserved" not in text
        # The failed run opens on its root cause, a span of the pricing agent: its gauge shows too.
        await wait_for(pilot, lambda: "pricing" in gauges.plain, what="agent gauge")
        view.tree.move_cursor(view.tree.nodes[f"{RUN_WITH_BUDGETS}-01"])  # the run span: no agent
        await wait_for(pilot, lambda: "pricing" not in gauges.plain, what="run gauges only")
        view.tree.move_cursor(view.tree.nodes[f"{RUN_WITH_BUDGETS}-06"])  # the pricing agent's span
        await wait_for(pilot, lambda: "pricing" in gauges.plain, what="agent gauge again")
        assert "68% of 4,000 · final 2,700" in gauges.plain


async def test_runs_table_incidents_column(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        runs = app.main.view("runs")
        await wait_for(pilot, lambda: runs.table.total_count == 10 and app.main.header.snapshot is not None,
                       what="runs")
        from console.incident_slots import incidents_cell

        # looping-agent (agent:pricing in deal-desk) and latency-spike (hierarchy:deal-desk); cost-spike on
        # support-triage.
        assert incidents_cell("deal-desk").plain == "2 open"
        assert incidents_cell("support-triage").plain == "1 open"
        assert incidents_cell("other").plain == "-"


async def test_set_hint_drives_the_hint_line(store: Path) -> None:
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.set_hint("The demo: a spend spike starts now. Press 6.")
        await pilot.pause()
        line = app.main.hint_line
        # This store has an unacknowledged kill switch: its alarm outranks any hint, as it should.
        assert line.alarm and line.sentence == line.alarm
        line.set_alarm(None)
        assert line.sentence == "The demo: a spend spike starts now. Press 6."
        line.set_view_hint("a view's own hint")  # the views keep updating theirs...
        assert line.sentence == "The demo: a spend spike starts now. Press 6."  # ...the guide's hint stays
        app.set_hint("")
        assert line.sentence == "a view's own hint"


async def test_set_hint_from_another_thread(store: Path) -> None:
    import threading

    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # As `flightdeck demo` does: app.call_from_thread(app.set_hint, text) from the engine's thread.
        worker = threading.Thread(target=lambda: app.call_from_thread(app.set_hint, "from the demo thread"))
        worker.start()
        while worker.is_alive():
            await pilot.pause(0.01)
        await pilot.pause()
        assert app.main.hint_line.guide_hint == "from the demo thread"


# -- pure helpers -------------------------------------------------------------------------------------------------

def test_gauge_line_levels_and_words() -> None:
    from console.widgets.gauges import gauge_line

    ok = gauge_line("run", "cost_usd", {"used": 0.1, "limit": 1.0, "burn_rate_per_min": 0.01,
                                        "time_to_exhaustion_s": 5400})
    assert ok is not None and "10% of $1.00 " in ok.plain and "out in 90.0m" in ok.plain
    warn = gauge_line("run", "total_tokens", {"used": 800, "limit": 1000})
    assert warn is not None and "80% of 1,000 near the limit" in warn.plain
    crit = gauge_line("run", "total_tokens", {"used": 1000, "limit": 1000})
    assert crit is not None and "100% of 1,000 OVER the limit" in crit.plain
    assert gauge_line("run", "model_calls", {"used": 0, "reserved": 0, "limit": None}) is None
    unlimited = gauge_line("run", "model_calls", {"used": 4})
    assert unlimited is not None and "no limit" in unlimited.plain
    from console.widgets.gauges import gauges_text
    from engine.store.trace_rows import BudgetRow

    text = gauges_text([BudgetRow(run_id="r", scope="run", agent=None, updated=0.0, data=json.dumps({
        "cost_usd": {"used": 0.0073, "reserved": 0.0054, "burn_rate_per_min": 0.44},
        "model_calls": {"used": 1}, "total_tokens": {"used": 0}}))]).plain
    assert text.splitlines()[1] == "run        no limit     cost_usd $0.0073 +$0.0054 res $0.4400/min · model_calls 1"


def test_readings_and_entries_in_words() -> None:
    from console.screens.runbooks_detail import entry_text, readings_text

    assert readings_text([{"signal": "a", "value": 1.0, "fired": False},
                          {"signal": "b", "value": 2.5, "op": ">=", "threshold": 2, "fired": True}]) == \
        "b=2.5 (>= 2), a=1"
    assert entry_text({"kind": "flag", "name": "models.max_tier", "value": "economy", "scope": "hierarchy",
                       "target": "deal-desk", "previous_value": None}) == \
        'flag models.max_tier = economy on hierarchy:deal-desk -> cleared'
    assert "released" in entry_text({"kind": "kill", "scope": "agent", "target": "pricing", "mode": "pause",
                                     "created": True})


async def test_a_hint_set_before_the_app_runs_is_shown_once_it_does(store: Path) -> None:
    app = app_for(store)
    app.set_hint("Deals are arriving: press 1 for runs.")  # `flightdeck demo` may narrate before the UI is up
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.pause()
        assert app.main.hint_line.guide_hint == "Deals are arriving: press 1 for runs."
