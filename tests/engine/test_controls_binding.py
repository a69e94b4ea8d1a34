"""Control rows bound to their audit rows (engine.controls.binding): every row any ControlAPI path or runbook action
writes is bound and passes; a row edited or inserted with plain SQL does not; a store from before the binding is
bound on upgrade. Every test but the upgrade (control.db's schema v4) runs on control.db and on a Postgres store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.controls import binding
from engine.controls.api import ControlAPI
from engine.controls.schema import BOUND_TABLES
from engine.runbooks import actions
from engine.store.control_rows import BOUND_ROW_TYPES, ControlRow
from engine.store.rows import column_list, fetch_typed
from tests.control_backends import ControlBackend


@pytest.fixture
def api(control_backend: ControlBackend) -> Iterator[ControlAPI]:
    with control_backend.api("alice") as control:
        yield control


def _request(api: ControlAPI, **overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"run_id": "r1", "span_id": "s1", "agent": "clerk", "tool": "issue_refund",
                            "arguments": {"order": "A-1", "amount": 120}, "risk": "high", "reason": "asked twice",
                            "deadline_s": 600, "on_timeout": "deny", "engine_id": "e1", **overrides}
    return api.request_approval(**call)


def _all_rows(backend: ControlBackend) -> list[tuple[str, ControlRow]]:
    out: list[tuple[str, ControlRow]] = []
    with backend.raw() as conn:
        for table in BOUND_TABLES:
            row_type = BOUND_ROW_TYPES[table]
            out += [(table, row) for row in fetch_typed(conn, row_type, f"SELECT {column_list(row_type)} FROM {table}")]
    return out


def _problems(backend: ControlBackend) -> dict[tuple[str, Any], str | None]:
    with backend.raw() as conn:
        return {(table, row.id): binding.problem(conn, table, row) for table, row in _all_rows(backend)}


def _sql(backend: ControlBackend, sql: str, params: tuple[Any, ...] = ()) -> None:
    backend.sql(sql, params)


def _runbook() -> Any:
    from tests.engine.test_runbooks_actions import make_runbook

    return make_runbook()  # flags, a pause switch, a breaker and budget override: every kind of row a runbook writes


def _every_path(api: ControlAPI) -> None:
    """Every way a bound row is written or changed, by operators, the engine and runbooks."""
    api.set_kill("global", None, "pause", "freeze")
    switch = api.set_kill("tool", "crm", "kill", "leak")
    api.release(switch.id, reason="fixed")
    api.set_kill("agent", "planner", "drain", "slow down", run_id="r9")
    api.release(scope="agent", target="planner", reason="done")
    api.set_flag("approvals", "all", reason="incident")
    api.set_flag("approvals", "default", reason="over")  # supersedes the first
    api.set_flag("models.max_tier", "economy", "hierarchy", "deal-desk", reason="spend")
    api.clear_flag("models.max_tier", "hierarchy", "deal-desk", reason="ok")
    flag = api.set_flag("runs.admission", "paused", reason="deploy")
    api.rollback_flag(flag.id, reason="deploy done")
    api.approve(_request(api).id, "fine")
    api.approve(_request(api).id, "smaller", edited_arguments={"order": "A-1", "amount": 50})
    api.deny(_request(api).id, "no")
    expired = _request(api, deadline_s=0.001, on_timeout="approve")
    api.expire_approval(expired.id, now=api.now() + 10)
    timed_out = _request(api, deadline_s=0.001, on_timeout="deny")
    api.expire_approval(timed_out.id, now=api.now() + 10)
    escalated = _request(api, deadline_s=0.001, on_timeout="escalate")
    api.expire_approval(escalated.id, now=api.now() + 10)
    _request(api, run_id="r2")
    api.cancel_approvals_for_run("r2", "run killed")
    _request(api, run_id="r3")  # left pending
    api.override_breaker("tool:crm", "force_open", "flapping")
    api.budget_change("r1", {"cost_usd": 5, "model_calls": None}, "more room")
    context = {"scope": "tool:crm", "target": "crm", "tool": "crm", "agent": "clerk", "hierarchy": "desk"}
    applied = actions.apply(api, _runbook(), "tool:crm", context, source="runbook:storm", reason="failures",
                            running_runs=lambda hierarchy: ["r1"])
    actions.rollback(api, applied.id, source="operator", reason="recovered")


def test_every_row_any_path_writes_is_bound_to_its_audit_row(api: ControlAPI,
                                                             control_backend: ControlBackend) -> None:
    _every_path(api)
    problems = _problems(control_backend)
    assert {table for table, _ in problems} == set(BOUND_TABLES)
    assert {key: p for key, p in problems.items() if p is not None} == {}
    assert api.verify_audit().ok


@pytest.mark.parametrize("forgery, table, expected", [
    ("INSERT INTO kill_switches (scope, target, mode, reason, operator, created) "
     "VALUES ('global', NULL, 'kill', 'forged', 'mallory', 1)", "kill_switches", "has no audit entry"),
    ("UPDATE kill_switches SET mode = 'kill' WHERE id = 1", "kill_switches", "its mode ('kill') differs"),
    ("UPDATE kill_switches SET released = 5, released_by = 'mallory' WHERE id = 1", "kill_switches",
     "bound to an audit entry for 'kill', not 'release'"),
    ("UPDATE flags SET value = 'default' WHERE id = 1", "flags", "its value ('default') differs"),
    ("UPDATE approvals SET status = 'approved', decided = 1, decided_by = 'alice', decided_seq = 1, "
     "edited_arguments = '{\"amount\": 99999}'", "approvals", "not 'approve' or 'deny' or 'edit_approve'"),
    ("UPDATE breaker_overrides SET action = 'disable'", "breaker_overrides", "its action ('disable') differs"),
    ("UPDATE budget_overrides SET limits = '{\"cost_usd\": 1000}'", "budget_overrides", "its limits differ"),
    ("UPDATE kill_switches SET audit_hash = (SELECT hash FROM audit WHERE action = 'flag_set')", "kill_switches",
     "bound to an audit entry for 'flag_set'"),
    ("UPDATE audit SET after = replace(after, '\"pause\"', '\"kill\"') WHERE action = 'kill'", "kill_switches",
     "which was altered"),
])
def test_a_row_changed_outside_flightdeck_fails_its_binding(api: ControlAPI, control_backend: ControlBackend,
                                                            forgery: str,
                                                            table: str, expected: str) -> None:
    api.set_kill("global", None, "pause", "freeze")
    api.set_flag("approvals", "all", reason="incident")
    _request(api)
    api.override_breaker("tool:crm", "force_open", "flapping")
    api.budget_change("r1", {"cost_usd": 5}, "more room")
    assert all(p is None for p in _problems(control_backend).values())
    _sql(control_backend, forgery)
    bad = {key: p for key, p in _problems(control_backend).items() if p is not None}
    assert len(bad) == 1, bad
    ((bad_table, _), problem), = bad.items()
    assert bad_table == table and problem is not None and expected in problem, problem


def test_an_approval_with_edits_the_operator_did_not_make_fails(api: ControlAPI,
                                                                control_backend: ControlBackend) -> None:
    row = api.approve(_request(api).id, "smaller", edited_arguments={"order": "A-1", "amount": 50})
    _sql(control_backend, "UPDATE approvals SET edited_arguments = ? WHERE id = ?", ('{"order":"A-1","amount":5000}',
                                                                             row.id))
    (problem,) = [p for (t, _), p in _problems(control_backend).items() if t == "approvals"]
    assert problem == "has edited arguments other than those the audit log recorded"
    _sql(control_backend, "UPDATE approvals SET edited_arguments = ?, decided_by = 'bob' WHERE id = ?",
         ('{"amount":50,"order":"A-1"}', row.id))
    (problem,) = [p for (t, _), p in _problems(control_backend).items() if t == "approvals"]
    assert problem == "says decided by 'bob', but the audit log says 'alice'"


def test_upgrading_a_store_binds_the_rows_it_already_had(store_dir: Path) -> None:
    # Rows written by every path (with today's schema, since today's code writes them), then the binding taken
    # away (columns and index go, the rows stay) and its migration, v4, applied to that store as an upgrade does.
    store_dir.mkdir()
    with ControlAPI(store_dir, "alice") as api:
        _every_path(api)
    conn = sqlite3.connect(store_dir / "control.db", isolation_level=None)
    conn.execute("DROP INDEX audit_by_hash")
    for table in BOUND_TABLES:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN audit_hash")
    conn.execute("BEGIN IMMEDIATE")
    binding.bind_existing(conn)
    conn.execute("COMMIT")
    conn.close()
    problems = _problems(ControlBackend("sqlite", store_dir))
    assert len(problems) > 10 and all(p is None for p in problems.values()), problems
