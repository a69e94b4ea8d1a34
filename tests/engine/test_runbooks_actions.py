"""Applying and rolling back runbook actions on a real control.db: one audited transaction each way, previous values
recorded and restored exactly, and nothing an operator changed since is ever overwritten (it is reported)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.controls.api import ControlAPI, ControlError
from engine.runbooks import actions
from engine.runbooks.loader import parse_runbook
from engine.runbooks.model import Runbook
from engine.store.control import ControlStore
from tests.control_backends import ControlBackend

BODY = "\n## What it means\nx\n## How to confirm\nx\n## First steps\nx\n## How to roll back\nx\n## When to escalate\nx\n"
FRONT = """
id: storm
title: Tool storm
severity: sev2
owner: [oncall]
detect:
  - {signal: breaker_opened, threshold: 1, for: 10m, scope: tool}
actions:
  - flag: {name: tools.side_effects, value: "off", scope: hierarchy}
  - flag: {name: "tool.{tool}", value: disabled, scope: hierarchy}
  - kill: {scope: agent, target: "{agent}", mode: pause}
  - breaker: {key: "tool:{tool}", action: force_open, for: 10m}
  - budget: {run_budget: {cost_usd: 0.25, model_calls: 5}}
  - page: {}
rollback: {after: 30m, require_quiet: true}
"""
CONTEXT = {"scope": "tool:crm", "target": "crm", "tool": "crm", "agent": "clerk", "hierarchy": "desk"}


def make_runbook(front: str = FRONT) -> Runbook:
    return parse_runbook(("---\n" + front.strip("\n") + "\n---\n" + BODY).encode(), Path("storm.md"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(control_backend: ControlBackend, clock: FakeClock) -> Any:
    """The control database on each backend in turn (control.db, then a Postgres store)."""
    with control_backend.api("setup", clock=clock) as api:
        yield api.db


def api_for(backend: ControlBackend, db: ControlStore, clock: FakeClock, actor: str) -> ControlAPI:
    return ControlAPI(backend.store, actor, clock=clock, db=db)


def runs_of(hierarchy: str | None) -> list[str]:
    return {"desk": ["r1", "r2"], None: ["r1", "r2", "r9"]}.get(hierarchy, [])


def rows(db: ControlStore, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return db.query(sql, params)


def test_apply_is_one_audited_change_recording_previous_values(control_backend: ControlBackend, db: ControlStore,
                                                               clock: FakeClock) -> None:
    alice = api_for(control_backend, db, clock, "alice")
    alice.set_flag("tools.side_effects", "on", "hierarchy", "desk", reason="normal operation")
    clock.advance(5)
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    application = actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor,
                                reason="breaker opened", running_runs=runs_of)
    flags = {r["name"]: r for r in rows(db, "SELECT * FROM flags WHERE cleared IS NULL")}
    assert (flags["tools.side_effects"]["value"], flags["tools.side_effects"]["previous_value"]) == ("off", "on")
    assert (flags["tool.crm"]["value"], flags["tool.crm"]["previous_value"]) == ("disabled", None)
    (switch,) = rows(db, "SELECT * FROM kill_switches")
    assert (switch["scope"], switch["target"], switch["mode"], switch["operator"]) == \
        ("agent", "clerk", "pause", "runbook:storm")
    (override,) = rows(db, "SELECT * FROM breaker_overrides")
    assert (override["key"], override["action"], override["source"]) == ("tool:crm", "force_open", "runbook:storm")
    budgets = rows(db, "SELECT run_id, limits, source FROM budget_overrides ORDER BY run_id")
    assert budgets == [{"run_id": r, "limits": '{"cost_usd":0.25,"model_calls":5}', "source": "runbook:storm"}
                       for r in ("r1", "r2")]
    audit = rows(db, "SELECT ts, actor, action, target FROM audit ORDER BY id")[1:]  # after alice's flag
    assert {a["ts"] for a in audit} == {clock.time()}  # one transaction, one moment
    assert [(a["actor"], a["action"], a["target"]) for a in audit] == [
        ("runbook:storm", "flag_set", "tools.side_effects@hierarchy:desk"),
        ("runbook:storm", "flag_set", "tool.crm@hierarchy:desk"),
        ("runbook:storm", "kill", "agent:clerk"),
        ("runbook:storm", "breaker_override", "tool:crm"),
        ("runbook:storm", "budget_change", "run:r1"),
        ("runbook:storm", "budget_change", "run:r2"),
        ("runbook:storm", "runbook_applied", "storm@tool:crm")]
    (stored,) = rows(db, "SELECT * FROM runbook_applications")
    assert stored["id"] == application.id and stored["rollback_due"] == clock.time() + 1800
    assert json.loads(stored["actions"])[0]["previous_value"] == "on"
    assert alice.verify_audit().ok


def test_rollback_restores_exactly_what_was_applied(control_backend: ControlBackend, db: ControlStore, clock: FakeClock) -> None:
    alice = api_for(control_backend, db, clock, "alice")
    alice.set_flag("tools.side_effects", "on", "hierarchy", "desk", reason="normal operation")
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    application = actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                                running_runs=runs_of)
    clock.advance(60)
    bob = api_for(control_backend, db, clock, "bob")
    result = actions.rollback(bob, application.id, source="operator", reason="crm is back")
    assert [(r["kind"], r["outcome"]) for r in result.report] == [
        ("flag", "restored"), ("flag", "restored"), ("kill", "restored"), ("breaker", "restored"),
        ("budget", "nothing")]
    active = {(r["name"], r["value"]) for r in rows(db, "SELECT * FROM flags WHERE cleared IS NULL")}
    assert active == {("tools.side_effects", "on")}  # alice's value is back; tool.crm (unset before) is cleared
    assert rows(db, "SELECT released_by FROM kill_switches")[0]["released_by"] == "bob"
    assert [r["action"] for r in rows(db, "SELECT action FROM breaker_overrides ORDER BY id")] == \
        ["force_open", "reset"]
    assert rows(db, "SELECT rolled_back_by FROM runbook_applications")[0]["rolled_back_by"] == "bob"
    last = rows(db, "SELECT actor, action FROM audit ORDER BY id DESC LIMIT 1")[0]
    assert (last["actor"], last["action"]) == ("bob", "runbook_rolled_back")
    with pytest.raises(ControlError, match="already rolled back by bob"):
        actions.rollback(bob, application.id, source="operator", reason="again")


def test_rollback_leaves_what_operators_changed_since_and_reports_it(control_backend: ControlBackend, db: ControlStore,
                                                                     clock: FakeClock) -> None:
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    application = actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                                running_runs=runs_of)
    carol = api_for(control_backend, db, clock, "carol")
    clock.advance(10)
    carol.set_flag("tools.side_effects", "off", "hierarchy", "desk", reason="keep it off, crm still flaky")
    carol.release(scope="agent", target="clerk", reason="clerk may continue")
    carol.override_breaker("tool:crm", "disable", "crm calls are fine now")
    before = rows(db, "SELECT * FROM flags ORDER BY id")
    result = actions.rollback(engine_side, application.id, source=runbook.actor, reason="automatic rollback")
    outcomes = [(r["kind"], r["outcome"]) for r in result.report]
    assert outcomes == [("flag", "left"), ("flag", "restored"), ("kill", "left"), ("breaker", "left"),
                        ("budget", "nothing")]
    texts = [r["text"] for r in result.left]
    assert "set to off by carol" in texts[0]
    assert "already released by carol" in texts[1]
    assert "disable by carol" in texts[2]
    carol_flag = next(r for r in before if r["operator"] == "carol")
    assert rows(db, "SELECT cleared FROM flags WHERE id = ?", (carol_flag["id"],))[0]["cleared"] is None
    assert rows(db, "SELECT action FROM breaker_overrides ORDER BY id DESC LIMIT 1")[0]["action"] == "disable"


def test_what_was_already_in_force_is_not_taken_over(control_backend: ControlBackend, db: ControlStore, clock: FakeClock) -> None:
    dave = api_for(control_backend, db, clock, "dave")
    dave.set_flag("tools.side_effects", "off", "hierarchy", "desk", reason="maintenance")
    dave.set_kill("agent", "clerk", "pause", "maintenance")
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    application = actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                                running_runs=runs_of)
    noop = [s.description for s in application.steps if s.noop]
    assert len(noop) == 2 and "already in force (flag #1 by dave)" in noop[0]
    assert len(rows(db, "SELECT * FROM kill_switches")) == 1
    result = actions.rollback(engine_side, application.id, source=runbook.actor, reason="done")
    assert (result.report[0]["outcome"], result.report[2]["outcome"]) == ("nothing", "nothing")
    assert rows(db, "SELECT released FROM kill_switches")[0]["released"] is None  # dave's switch stays
    assert rows(db, "SELECT cleared FROM flags WHERE id = 1")[0]["cleared"] is None


def test_apply_refuses_a_second_application_and_unresolvable_actions_write_nothing(
        control_backend: ControlBackend, db: ControlStore, clock: FakeClock) -> None:
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                  running_runs=runs_of)
    with pytest.raises(ControlError, match="already in force for tool:crm"):
        actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                      running_runs=runs_of)
    audit_rows = len(rows(db, "SELECT * FROM audit"))
    without_agent = {k: v for k, v in CONTEXT.items() if k != "agent"} | {"scope": "tool:mail", "tool": "mail"}
    with pytest.raises(ControlError, match=r"\{agent\} is not known here"):
        actions.apply(engine_side, runbook, "tool:mail", without_agent, source=runbook.actor, reason="storm",
                      running_runs=runs_of)
    assert len(rows(db, "SELECT * FROM audit")) == audit_rows  # nothing half-written
    assert rows(db, "SELECT count(*) AS n FROM runbook_applications")[0]["n"] == 1


def test_a_breaker_forced_open_for_a_while_is_reset_when_its_time_is_up(control_backend: ControlBackend, db: ControlStore,
                                                                       clock: FakeClock) -> None:
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    application = actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                                running_runs=runs_of)
    (stored,) = actions.active_applications(db)
    assert actions.next_expiry(stored) == clock.time() + 600
    clock.advance(599)
    assert actions.expire_actions(engine_side, application.id, source=runbook.actor) == []
    clock.advance(1)
    (done,) = actions.expire_actions(engine_side, application.id, source=runbook.actor)
    assert done["outcome"] == "restored"
    assert [r["action"] for r in rows(db, "SELECT action FROM breaker_overrides ORDER BY id")] == \
        ["force_open", "reset"]
    assert actions.next_expiry(actions.active_applications(db)[0]) is None
    result = actions.rollback(engine_side, application.id, source=runbook.actor, reason="later")
    assert result.report[3] == {"kind": "breaker", "outcome": "nothing",
                                "text": "breaker tool:crm was already reset when its time ran out"}


def test_runs_that_start_while_in_force_get_the_lowered_budget(control_backend: ControlBackend, db: ControlStore,
                                                               clock: FakeClock) -> None:
    runbook = make_runbook()
    engine_side = api_for(control_backend, db, clock, runbook.actor)
    application = actions.apply(engine_side, runbook, "tool:crm", CONTEXT, source=runbook.actor, reason="storm",
                                running_runs=runs_of)
    assert actions.extend_budget(engine_side, application.id, "r3", "other", source=runbook.actor) is None
    override = actions.extend_budget(engine_side, application.id, "r3", "desk", source=runbook.actor)
    assert override is not None
    assert actions.extend_budget(engine_side, application.id, "r3", "desk", source=runbook.actor) is None
    assert [r["run_id"] for r in rows(db, "SELECT run_id FROM budget_overrides ORDER BY id")] == ["r1", "r2", "r3"]
    actions.rollback(engine_side, application.id, source=runbook.actor, reason="over")
    assert actions.extend_budget(engine_side, application.id, "r4", "desk", source=runbook.actor) is None


def test_dry_run_plan_describes_current_state_without_writing(control_backend: ControlBackend, db: ControlStore,
                                                              clock: FakeClock) -> None:
    api_for(control_backend, db, clock, "erin").set_flag("tool.crm", "enabled", "hierarchy", "desk", reason="x")
    audit_before = rows(db, "SELECT count(*) AS n FROM audit")[0]["n"]
    steps = actions.plan(make_runbook(), CONTEXT, db.connection, runs_of)
    assert [s.description for s in steps] == [
        "set tools.side_effects=off at hierarchy:desk (now: unset)",
        "set tool.crm=disabled at hierarchy:desk (now: enabled, set by erin)",
        "set a pause kill switch on agent:clerk",
        "force breaker tool:crm open for 10m, then reset (now: no override)",
        "lower the run budget to cost_usd=0.25, model_calls=5 for 2 runs of desk in flight: r1, r2, and for runs of "
        "desk that start while this is in force",
        "page oncall (sev2)"]
    assert rows(db, "SELECT count(*) AS n FROM audit")[0]["n"] == audit_before


def test_the_database_itself_refuses_a_duplicate_open_incident(control_backend: ControlBackend,
                                                               db: ControlStore) -> None:
    insert = ("INSERT INTO incidents (id, runbook, title, severity, scope, apply_mode, opened, updated, signals, "
              "last_signals) VALUES (?, 'rb', 't', 'sev2', 'global', 'auto', 0, 0, '[]', '[]')")
    with control_backend.raw() as conn:
        conn.execute(insert, ("inc-1",))
        with pytest.raises(control_backend.integrity_error):
            conn.execute(insert, ("inc-2",))
        conn.execute("UPDATE incidents SET status = 'resolved' WHERE id = 'inc-1'")
        conn.execute(insert, ("inc-3",))  # a new incident once the old one is resolved
