"""ControlAPI against real control.db files and a real Postgres store (`control_backend`: every test that takes `api`
runs on both): kill switches, flags, breaker and budget overrides, acks, the engine's snapshot and data_version,
engines. Approvals have their own file (test_controls_approvals.py). Tests of what only control.db has (query plans,
schema versions, engine registration) take `sqlite_api` or `store_dir`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.controls.api import BREAKER_KINDS, BUDGET_DIMENSIONS, SNAPSHOT_QUERIES, ControlAPI, ControlError
from engine.errors import InputError, StoreError
from engine.store.control import ControlDB
from tests.control_backends import ControlBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(control_backend: ControlBackend, clock: FakeClock) -> Iterator[ControlAPI]:
    with control_backend.api("alice", clock=clock) as control:
        yield control


@pytest.fixture
def sqlite_api(store_dir: Path, clock: FakeClock) -> Iterator[ControlAPI]:
    with ControlAPI(store_dir, "alice", clock=clock) as control:
        yield control


def _actions(api: ControlAPI) -> list[str]:
    return [row.action for row in reversed(api.audit_log())]


# ---------------------------------------------------------------------------------------------- kill switches

def test_set_kill_records_switch_and_audit_row(api: ControlAPI, clock: FakeClock) -> None:
    switch = api.set_kill("run", "r1", "kill", "  runaway spend  ")
    assert switch.already_active is False
    assert (switch.scope, switch.target, switch.mode, switch.reason, switch.operator) == \
        ("run", "r1", "kill", "runaway spend", "alice")
    assert switch.created == clock.time() and switch.released is None and switch.acked is None
    (row,) = api.audit_log()
    assert (row.actor, row.action, row.target, row.reason) == ("alice", "kill", "run:r1", "runaway spend")
    assert row.before is None and row.after["id"] == switch.id


def test_identical_active_switch_is_returned_not_duplicated(api: ControlAPI) -> None:
    first = api.set_kill("agent", "planner", "pause", "looping", run_id="r1")
    again = api.set_kill("agent", "planner", "pause", "still looping", run_id="r1")
    assert again.already_active is True and again.id == first.id and again.reason == "looping"
    other_mode = api.set_kill("agent", "planner", "kill", "enough", run_id="r1")
    other_run = api.set_kill("agent", "planner", "pause", "looping", run_id="r2")
    assert len({first.id, other_mode.id, other_run.id}) == 3
    assert len(api.active_kill_switches()) == 3
    assert _actions(api) == ["kill", "kill", "kill"]


@pytest.mark.parametrize(("args", "field"), [
    (("run", None, "kill", "why"), "target"),
    (("agent", "  ", "kill", "why"), "target"),
    (("global", "x", "kill", "why"), "target"),
    (("run", "r1", "kill", ""), "reason"),
    (("run", "r1", "kill", "   "), "reason"),
    (("run", "r1", "explode", "why"), "mode"),
    (("tenant", "t1", "kill", "why"), "scope"),
])
def test_set_kill_validation_names_the_field(api: ControlAPI, args: tuple[str, str | None, str, str],
                                             field: str) -> None:
    with pytest.raises(InputError) as caught:
        api.set_kill(*args)
    assert caught.value.field == field
    assert api.active_kill_switches() == [] and api.audit_log() == []


def test_run_id_only_limits_agent_switches(api: ControlAPI) -> None:
    with pytest.raises(InputError) as caught:
        api.set_kill("tool", "crm", "kill", "why", run_id="r1")
    assert caught.value.field == "run_id"


def test_kill_switch_stays_active_across_reopen(control_backend: ControlBackend) -> None:
    with control_backend.api("alice") as api:
        switch = api.set_kill("global", None, "drain", "deploy freeze")
    with control_backend.api("bob") as api:
        assert [s.id for s in api.active_kill_switches()] == [switch.id]
        assert api.kill_switch(switch.id).mode == "drain"
        assert api.snapshot().kill_switches[0].id == switch.id


def test_release_by_id_is_audited_and_only_once(api: ControlAPI, clock: FakeClock) -> None:
    switch = api.set_kill("tool", "crm_lookup", "kill", "bad vendor")
    clock.advance(30)
    (released,) = api.release(switch.id, reason="vendor fixed")
    assert (released.released, released.released_by, released.release_reason) == \
        (clock.time(), "alice", "vendor fixed")
    assert api.active_kill_switches() == []
    row = api.audit_log()[0]
    assert (row.action, row.target, row.reason) == ("release", "tool:crm_lookup", "vendor fixed")
    assert row.before["released"] is None and row.after["released"] == clock.time()
    with pytest.raises(ControlError, match=r"kill switch #\d+ was already released by alice at \d\d:\d\d:\d\d"):
        api.release(switch.id, reason="again")
    with pytest.raises(ControlError, match="no kill switch #999"):
        api.release(999, reason="typo")
    assert _actions(api) == ["kill", "release"]


def test_release_by_scope_releases_every_mode_in_one_transaction(api: ControlAPI) -> None:
    api.set_kill("hierarchy", "deal-desk", "drain", "a")
    api.set_kill("hierarchy", "deal-desk", "kill", "b")
    keep = api.set_kill("hierarchy", "support", "kill", "c")
    released = api.release(scope="hierarchy", target="deal-desk", reason="over")
    assert sorted(r.mode for r in released) == ["drain", "kill"]
    assert [s.id for s in api.active_kill_switches()] == [keep.id]
    assert _actions(api) == ["kill", "kill", "kill", "release", "release"]
    with pytest.raises(ControlError, match="no active kill switch for hierarchy:deal-desk"):
        api.release(scope="hierarchy", target="deal-desk", reason="again")


def test_release_agent_with_and_without_run(api: ControlAPI) -> None:
    in_r1 = api.set_kill("agent", "planner", "kill", "a", run_id="r1")
    in_r2 = api.set_kill("agent", "planner", "kill", "b", run_id="r2")
    everywhere = api.set_kill("agent", "planner", "kill", "c")
    assert [r.id for r in api.release(scope="agent", target="planner", run_id="r1", reason="x")] == [in_r1.id]
    assert sorted(r.id for r in api.release(scope="agent", target="planner", reason="y")) == \
        sorted([in_r2.id, everywhere.id])


def test_release_needs_exactly_one_selector(api: ControlAPI) -> None:
    with pytest.raises(InputError):
        api.release(reason="x")
    with pytest.raises(InputError):
        api.release(1, scope="global", reason="x")
    with pytest.raises(InputError) as caught:
        api.release(1, reason="")
    assert caught.value.field == "reason"


def test_ack_kill_switches_is_bookkeeping_not_an_action(api: ControlAPI, clock: FakeClock) -> None:
    a = api.set_kill("run", "r1", "kill", "x")
    b = api.set_kill("run", "r2", "kill", "y")
    clock.advance(1)
    first = clock.time()
    assert api.ack_kill_switches([a.id, b.id], "engine-1") == 2
    assert api.ack_kill_switches([a.id], "engine-1") == 0  # an engine acknowledges a switch once
    clock.advance(1)
    assert api.ack_kill_switches([a.id], "engine-2") == 1  # every engine of a fleet records its own
    assert api.kill_switch(a.id).acked_by == "engine-1"  # the switch's own columns keep the first
    assert api.kill_switch(a.id).acked == first
    assert [(ack.engine_id, ack.acked) for ack in api.kill_switch_acks([a.id])] == [
        ("engine-1", first), ("engine-2", clock.time())]
    assert [ack.switch_id for ack in api.kill_switch_acks([a.id, b.id])] == [a.id, b.id, a.id]
    assert api.ack_kill_switches([], "engine-1") == 0
    assert _actions(api) == ["kill", "kill"]


# ---------------------------------------------------------------------------------------------- flags

def test_set_flag_supersedes_and_keeps_previous_value(api: ControlAPI, control_backend: ControlBackend) -> None:
    first = api.set_flag("tools.side_effects", "OFF", reason="incident")
    assert (first.value, first.previous_value, first.source) == ("off", None, "operator")
    second = api.set_flag("tools.side_effects", "on", reason="fixed")
    assert second.previous_value == "off"
    (active,) = api.active_flags()
    assert active.id == second.id
    (old,) = control_backend.sql("SELECT cleared_by, cleared FROM flags WHERE id = ?", (first.id,))
    assert old[0] == "superseded" and old[1] is not None
    rows = api.audit_log()
    assert [r.action for r in rows] == ["flag_set", "flag_set"]
    assert rows[0].before == {"id": first.id, "value": "off"}
    assert rows[0].target == "tools.side_effects@global"


def test_flags_are_independent_per_scope_and_target(api: ControlAPI) -> None:
    api.set_flag("agent.planner", "paused", reason="a")
    api.set_flag("agent.planner", "disabled", "run", "r1", reason="b")
    api.set_flag("agent.planner", "enabled", "hierarchy", "deal-desk", reason="c")
    api.set_flag("agent.planner", "paused", "run", "r2", reason="d")
    assert len(api.active_flags()) == 4
    assert api.set_flag("agent.planner", "enabled", "run", "r1", reason="e").previous_value == "disabled"
    assert len(api.active_flags()) == 4


def test_only_one_active_row_per_flag_even_for_raw_writers(api: ControlAPI, control_backend: ControlBackend) -> None:
    api.set_flag("approvals", "all", reason="x")
    with pytest.raises(control_backend.integrity_error):
        control_backend.sql("INSERT INTO flags (name, value, scope, target, source, reason, operator, created) "
                     "VALUES ('approvals', 'default', 'global', NULL, 'operator', 'y', 'z', 0)")


def test_clear_flag_records_the_value_it_had(api: ControlAPI) -> None:
    api.set_flag("models.max_tier", "standard", "hierarchy", "deal-desk", reason="slow down")
    cleared = api.clear_flag("models.max_tier", "hierarchy", "deal-desk", reason="normal again")
    assert (cleared.value, cleared.cleared_by, cleared.clear_reason) == ("standard", "alice",
                                                                                  "normal again")
    assert api.active_flags() == []
    row = api.audit_log()[0]
    assert (row.action, row.before["value"], row.after) == ("flag_cleared", "standard",
                                                                     {"id": cleared.id, "value": None})
    with pytest.raises(ControlError, match="flag models.max_tier is not set at hierarchy:deal-desk"):
        api.clear_flag("models.max_tier", "hierarchy", "deal-desk", reason="again")


def test_flag_validation_errors_name_the_field(api: ControlAPI) -> None:
    with pytest.raises(InputError) as caught:
        api.set_flag("tools.sideeffects", "off", reason="x")
    assert caught.value.field == "tools.sideeffects"
    with pytest.raises(InputError) as caught:
        api.set_flag("approvals", "all", "run", None, reason="x")
    assert caught.value.field == "target"
    with pytest.raises(InputError) as caught:
        api.set_flag("approvals", "all", "global", "r1", reason="x")
    assert caught.value.field == "target"
    with pytest.raises(InputError) as caught:
        api.set_flag("approvals", "all", reason="x", source="cron")
    assert caught.value.field == "source"
    assert api.active_flags() == [] and api.audit_log() == []


def test_runbook_source_is_the_audit_actor(api: ControlAPI) -> None:
    row = api.set_flag("runs.admission", "paused", reason="cost spike", source="runbook:cost-spike")
    assert row.source == "runbook:cost-spike" and row.operator == "alice"
    assert api.audit_log()[0].actor == "runbook:cost-spike"


def test_rollback_flag_restores_exactly(api: ControlAPI) -> None:
    api.set_flag("models.max_tier", "standard", reason="operator cap")
    by_runbook = api.set_flag("models.max_tier", "economy", reason="spike", source="runbook:rb1")
    restored = api.rollback_flag(by_runbook.id, reason="spike over", source="runbook:rb1")
    assert restored is not None and restored.value == "standard"
    assert [f.value for f in api.active_flags()] == ["standard"]

    fresh = api.set_flag("tool.crm", "disabled", reason="spike", source="runbook:rb1")
    cleared = api.rollback_flag(fresh.id, reason="spike over", source="runbook:rb1")
    assert cleared is not None and cleared.cleared is not None
    assert [f.name for f in api.active_flags()] == ["models.max_tier"]


def test_rollback_leaves_a_newer_decision_alone(api: ControlAPI) -> None:
    by_runbook = api.set_flag("approvals", "all", reason="spike", source="runbook:rb1")
    api.set_flag("approvals", "default", reason="operator knows better")
    assert api.rollback_flag(by_runbook.id, reason="spike over") is None
    assert [f.value for f in api.active_flags()] == ["default"]
    with pytest.raises(ControlError):
        api.rollback_flag(12345, reason="x")


def test_ack_flags(api: ControlAPI) -> None:
    flag = api.set_flag("approvals", "all", reason="x")
    assert api.ack_flags([flag.id]) == 1
    assert api.active_flags()[0].acked is not None


# ---------------------------------------------------------------------------------------------- overrides

def test_override_breaker_is_audited_and_applied_once(api: ControlAPI) -> None:
    row = api.override_breaker("tool:crm_lookup", "force_open", "vendor outage")
    assert (row.key, row.action, row.applied) == ("tool:crm_lookup", "force_open", None)
    assert api.audit_log()[0].action == "breaker_override"
    assert [o.id for o in api.snapshot().breaker_overrides] == [row.id]
    assert api.mark_breaker_overrides_applied([row.id], "engine-1") == 1
    assert api.snapshot().breaker_overrides == ()
    assert api.breaker_overrides()[0].applied_by == "engine-1"


@pytest.mark.parametrize(("key", "action", "field"), [
    ("crm_lookup", "force_open", "key"),
    ("printer:x", "force_open", "key"),
    ("tool:", "reset", "key"),
    ("tool:crm", "explode", "action"),
])
def test_override_breaker_validation(api: ControlAPI, key: str, action: str, field: str) -> None:
    with pytest.raises(InputError) as caught:
        api.override_breaker(key, action, "why")
    assert caught.value.field == field


def test_budget_change_validates_and_is_audited(api: ControlAPI) -> None:
    row = api.budget_change("r1", {"cost_usd": 2.5, "tool_calls": 40.0, "wall_time_s": None}, "customer escalation")
    assert row.limits == {"cost_usd": 2.5, "tool_calls": 40, "wall_time_s": None}
    audit_row = api.audit_log()[0]
    assert (audit_row.action, audit_row.target) == ("budget_change", "run:r1")
    assert [b.id for b in api.snapshot().budget_overrides] == [row.id]
    assert api.mark_budget_overrides_applied([row.id]) == 1
    assert api.snapshot().budget_overrides == ()
    for limits, field in (({}, "limits"), ({"dollars": 1}, "limits.dollars"), ({"cost_usd": -1}, "limits.cost_usd"),
                          ({"tool_calls": 1.5}, "limits.tool_calls"), ({"cost_usd": "2"}, "limits.cost_usd"),
                          ({"retries": True}, "limits.retries")):
        with pytest.raises(InputError) as caught:
            api.budget_change("r1", limits, "x")
        assert caught.value.field == field


def test_mirrored_vocabularies_match_the_guardrails() -> None:
    from engine.controls.schema import BREAKER_ACTIONS
    from engine.guardrails.breaker import BREAKER_KINDS as kinds
    from engine.guardrails.breaker import OVERRIDE_ACTIONS
    from engine.guardrails.budget import Dimension

    assert set(BREAKER_KINDS) == set(kinds)
    assert set(BREAKER_ACTIONS) == set(OVERRIDE_ACTIONS)
    assert set(BUDGET_DIMENSIONS) == {d.value for d in Dimension}


# ---------------------------------------------------------------------------------------------- snapshot

def test_snapshot_reads_everything_the_engine_obeys(api: ControlAPI) -> None:
    switch = api.set_kill("global", None, "pause", "maintenance")
    released = api.set_kill("run", "r9", "kill", "x")
    api.release(released.id, reason="y")
    flag = api.set_flag("approvals", "all", reason="z")
    pending = api.request_approval("r1", "s1", "clerk", "refund", {"amount": 5}, "high", None, 60, "deny", "e1")
    decided = api.request_approval("r1", "s2", "clerk", "refund", {"amount": 6}, "high", None, 60, "deny", "e1")

    first = api.snapshot()
    assert [s.id for s in first.kill_switches] == [switch.id]
    assert [f.id for f in first.flags] == [flag.id]
    assert [a.id for a in first.pending_approvals] == [pending.id, decided.id]
    assert first.decided_approvals == () and first.decided_cursor == 0

    api.deny(decided.id, "too much")
    second = api.snapshot(first.decided_cursor)
    assert [a.id for a in second.decided_approvals] == [decided.id]
    assert second.decided_approvals[0].status == "denied"
    assert [a.id for a in second.pending_approvals] == [pending.id]
    third = api.snapshot(second.decided_cursor)
    assert third.decided_approvals == () and third.decided_cursor == second.decided_cursor


def test_snapshot_queries_use_indexes(sqlite_api: ControlAPI) -> None:
    with sqlite3.connect(sqlite_api.path) as conn:
        for name, sql in SNAPSHOT_QUERIES.items():
            plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (0,) * sql.count("?")))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (name, plan)


def test_data_version_changes_when_another_process_commits(api: ControlAPI,
                                                           control_backend: ControlBackend) -> None:
    before = api.data_version()
    assert api.data_version() == before
    code = ("import sys; from engine.controls.api import ControlAPI; "
            "ControlAPI(sys.argv[1], 'bob').set_flag('approvals', 'all', reason='from another process')")
    subprocess.run([sys.executable, "-c", code, control_backend.store_arg], check=True, timeout=60)
    assert api.data_version() != before
    assert api.snapshot().flags[0].operator == "bob"


def test_engine_can_share_its_control_db(store_dir: Path) -> None:
    store_dir.mkdir()
    db = ControlDB.open(store_dir)
    try:
        engine_api = ControlAPI(store_dir, "engine:e1", db=db)
        engine_api.set_flag("approvals", "all", reason="x", source="engine")
        engine_api.close()  # does not close the shared ControlDB
        assert db.query("SELECT count(*) AS n FROM flags")[0]["n"] == 1
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------- engines, store

def test_engines_alive_then_stale(store_dir: Path, clock: FakeClock) -> None:
    store_dir.mkdir()
    db = ControlDB.open(store_dir, clock=clock)
    try:
        db.register_engine(version="test", pid=4242)
        with ControlAPI(store_dir, "alice", clock=clock) as api:
            (engine,) = api.engines()
            assert (engine.pid, engine.alive, engine.stale) == (4242, True, False)
            clock.advance(6)
            (engine,) = api.engines()
            assert (engine.alive, engine.stale) == (False, True)
    finally:
        db.close()


def test_read_only_callers_do_not_create_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        ControlAPI(tmp_path / "typo", "alice", create=False)
    assert not (tmp_path / "typo").exists()


def test_operator_name_is_required(store_dir: Path) -> None:
    with pytest.raises(InputError) as caught:
        ControlAPI(store_dir, "  ")
    assert caught.value.field == "operator"


def test_schema_migrates_an_existing_v1_store(store_dir: Path) -> None:
    from engine.store.control_schema import CONTROL_MIGRATIONS

    store_dir.mkdir()
    old = ControlDB(store_dir / "control.db", migrations=CONTROL_MIGRATIONS[:1])
    old.register_engine(version="old")
    old.close()
    with ControlAPI(store_dir, "alice") as api:
        assert len(api.engines()) == 1
        api.set_kill("global", None, "kill", "works on an upgraded store")
    with sqlite3.connect(store_dir / "control.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(CONTROL_MIGRATIONS)


def test_a_switch_acknowledged_before_v6_keeps_its_ack_and_a_read_only_reader_of_v5_sees_it(store_dir: Path) -> None:
    from engine.store.control_schema import CONTROL_MIGRATIONS

    store_dir.mkdir()
    with ControlAPI(store_dir, "alice") as api:
        switch = api.set_kill("global", None, "kill", "before the upgrade")
    with sqlite3.connect(store_dir / "control.db") as conn:  # back to v5: no kill_switch_acks, the column holds it
        conn.execute("DROP TABLE kill_switch_acks")
        conn.execute("UPDATE kill_switches SET acked = 12.5, acked_by = 'engine-old' WHERE id = ?", (switch.id,))
        conn.execute("PRAGMA user_version = 5")
    with ControlAPI(store_dir, "alice", read_only=True) as reader:  # not migrated: reads v5 as it is
        assert [(a.engine_id, a.acked) for a in reader.kill_switch_acks([switch.id])] == [("engine-old", 12.5)]
    with ControlAPI(store_dir, "alice") as api:  # migrates to v6: the ack moves into kill_switch_acks
        assert [(a.engine_id, a.acked) for a in api.kill_switch_acks([switch.id])] == [("engine-old", 12.5)]
        assert api.ack_kill_switches([switch.id], "engine-old") == 0
    with sqlite3.connect(store_dir / "control.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(CONTROL_MIGRATIONS)


def test_kinds_are_literals_of_the_check_constraints() -> None:
    from engine.store import control_ddl as schema

    for values in (schema.KILL_SCOPES, schema.KILL_MODES, schema.FLAG_SCOPES, schema.APPROVAL_STATUSES):
        for value in values:
            assert f"'{value}'" in schema.CONTROLS_V2
