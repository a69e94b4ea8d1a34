"""Budget changes an operator made while a run ran (`flightdeck budget`, applied by its engine) are carried to a
`flightdeck retry` of it and a `flightdeck resume` of it (issue 13; engine/controls/carried_limits.py): the preview
and the audit row say which limits apply and where they came from. A change never applied (made after the run
ended) is not carried."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.controls.api import ControlAPI
from tests.durable_support import Charging, flightdeck
from tests.engine_helpers import events, get_run, spans


def _audit_after(store: Path, action: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{store / 'control.db'}?mode=ro", uri=True)
    try:
        return [json.loads(row[0]) for row in conn.execute("SELECT after FROM audit WHERE action = ? ORDER BY id",
                                                           (action,))]
    finally:
        conn.close()


def _stopped_by_its_limit(charging: Charging, *extra: str) -> str:
    """The charging hierarchy (charge 5, charge 7, answer) stopped by `--budget calls=1` at its second model call,
    after which its engine applied an operator's budget change to calls=10 (as `flightdeck budget` does while a
    run runs: the row, then the engine marks it applied), and a later change to calls=1 that no engine applied."""
    done = flightdeck("run", str(charging.path), "--speed", "0", "--budget", "calls=1", "--json", "--store",
                      str(charging.store), *extra, env=charging.env)
    assert done.returncode == 4, done.stderr  # budget exceeded
    run_id = str(json.loads(done.stdout)[0]["id"])
    with ControlAPI(charging.store, "alice") as api:
        applied = api.budget_change(run_id, {"model_calls": 10}, "customer escalation: room to finish")
        api.mark_budget_overrides_applied([applied.id])
    with ControlAPI(charging.store, "bob") as api:
        api.budget_change(run_id, {"model_calls": 1}, "too late: the run had ended")
    return run_id


def test_a_retry_carries_the_budget_changes_its_original_ran_under(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = _stopped_by_its_limit(charging)
    span = next(s.id for s in spans(charging.store, run_id) if s.kind == "llm" and s.attributes["path"] == "clerk.0")
    retried = flightdeck("retry", run_id, "--from", span, "--reason", "finish it", "--yes", "--json", "--speed",
                         "0", "--store", str(charging.store), env=charging.env)
    # Without the change it would stop at the same limit again (exit 4).
    assert retried.returncode == 0, retried.stderr
    assert ("budget: model_calls=10 (the original's --budget model_calls=1; then budget change #1 by alice "
            "(customer escalation: room to finish): model_calls=10; --budget replaces them)") in retried.stderr
    result = json.loads(retried.stdout)
    assert result["status"] == "completed" and result["budget"] == {"model_calls": 10}
    (after,) = _audit_after(charging.store, "retry")
    assert (after["budget"], after["budget_source"]) == ({"model_calls": 10}, "original")
    assert [(c["id"], c["operator"], c["limits"]) for c in after["budget_changes"]] == [
        (1, "alice", {"model_calls": 10})]


def test_a_resume_carries_the_budget_changes_the_run_ran_under(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = _stopped_by_its_limit(charging, "--durable")
    resumed = flightdeck("resume", run_id, "--reason", "finish it", "--yes", "--json", "--speed", "0", "--store",
                         str(charging.store), env=charging.env)
    assert resumed.returncode == 0, resumed.stderr  # calls=1 again would stop it at once
    assert ("run limits: model_calls=10: model_calls=1 from the run's own --budget; then model_calls=10 from "
            "budget change #1 by alice (customer escalation: room to finish)") in resumed.stderr
    (after,) = _audit_after(charging.store, "resume")
    assert after["budget"]["limits"] == {"model_calls": 10} and after["budget"]["base"] == {"model_calls": 1}
    assert [c["id"] for c in after["budget"]["budget_changes"]] == [1]
    row = get_run(charging.store, run_id)
    assert row.status == "completed", row.error
    # The execution that carried them records the merge and the newest change folded in: a later resume folds in
    # only newer ones (and its preview says the run's own limits are now calls=10).
    assert (row.attributes["budget"], row.attributes["budget_through"]) == ({"model_calls": 10}, 1)
    assert [line["amount"] for line in charging.lines()] == [5, 7]  # the first charge replayed, not run again
    (carried,) = events(charging.store, run_id, ["budget.carried"])
    assert carried.data["limits"] == {"model_calls": 10} and [c["id"] for c in carried.data["budget_changes"]] == [1]


def test_budget_on_a_resume_replaces_the_runs_limits_and_its_changes(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = _stopped_by_its_limit(charging, "--durable")
    resumed = flightdeck("resume", run_id, "--budget", "calls=2", "--reason", "a little more", "--yes", "--json",
                         "--speed", "0", "--store", str(charging.store), env=charging.env)
    assert resumed.returncode == 4, resumed.stderr  # calls=2 (not the change's 10): over budget again
    assert "run limits: model_calls=2: model_calls=2 from --budget on this resume" in resumed.stderr
    (after,) = _audit_after(charging.store, "resume")
    assert (after["budget"]["limits"], after["budget"]["base_source"]) == ({"model_calls": 2}, "operator")
    row = get_run(charging.store, run_id)
    assert (row.attributes["budget"], row.attributes["budget_through"]) == ({"model_calls": 2}, 2)


HELD = """
name: held
entry: clerk
models:
  m: {model: m, tier: standard, latency: 0, latency_per_token: 0}
tools:
  held: {function: "tests.fixture_tools:held"}
agents:
  clerk: {contract: Waits once., model: m, tools: [held], max_steps: 5}
scripts:
  clerk:
    - tool: {name: held, args: {note: waited}}
    - final: done
"""


@pytest.mark.anyio
async def test_a_budget_change_made_before_an_execution_started_is_not_applied_by_it(tmp_path: Path) -> None:
    """A change the resume did not carry (made while the run was not running: `budget_seen` at its start) stays out
    when the engine applies a later control snapshot mid-run; a change made during the execution still applies.
    Seen in a loaded full run: a resumed run stopped at the limit of a change made after it had ended."""
    import anyio

    from engine.guardrails.budget import BudgetLimits
    from engine.runtime.engine import Engine, RunRequest
    from engine.store import open_engine_store
    from tests import fixture_tools
    from tests.engine_helpers import write_hierarchy

    hierarchy = write_hierarchy(tmp_path, HELD)
    store = tmp_path / "store"
    release = anyio.Event()
    fixture_tools.HOLD[:] = [release]
    try:
        with open_engine_store(store) as opened:
            async with Engine(opened, latency_scale=0.0, runbooks=False) as engine:
                with ControlAPI(store, "bob") as api:  # made before the execution, not carried by it
                    stale = api.budget_change("r-held", {"model_calls": 1}, "the run had ended")
                request = RunRequest(input="go", budget=BudgetLimits(model_calls=5),
                                     attributes={"budget_seen": stale.id})
                async with anyio.create_task_group() as group:
                    results: list[Any] = []

                    async def run() -> None:
                        results.append(await engine.run_compiled(engine.compile(hierarchy), request,
                                                                 run_id="r-held"))

                    group.start_soon(run)
                    with anyio.fail_after(10):
                        while "r-held" not in engine.controls.runs:
                            await anyio.sleep(0.01)
                        with ControlAPI(store, "carol") as api:  # a snapshot while it runs: both changes in it
                            api.set_flag("tool.nothing", "disabled", "hierarchy", "other", reason="a change to apply")
                        while "tool.nothing" not in engine.controls.flags:
                            await anyio.sleep(0.01)
                    release.set()
        (result,) = results
        assert result.status == "completed", result.error  # model_calls=1 would have stopped its second call
    finally:
        fixture_tools.HOLD.clear()
    conn = sqlite3.connect(f"file:{store / 'control.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT applied FROM budget_overrides WHERE run_id = 'r-held'").fetchall() == [(None,)]
    finally:
        conn.close()  # the stale change stays unapplied: it never was the run's limits
