"""`flightdeck reconcile` and `flightdeck resume` as operators run them: real subprocesses on real stores, exit codes,
refusals that write nothing (tests/durable_support.py makes the durable runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.durable.keys import run_id_for_key
from tests.durable_support import Charging, flightdeck
from tests.engine_helpers import get_run

pytestmark = pytest.mark.slow


def _audit(store: Path) -> list[str]:
    with ControlAPI(store, "reader") as api:
        return [entry.action for entry in api.audit_log(limit=10_000)]


def test_reconcile_lists_decides_and_refuses(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    store = ("--store", str(charging.store))

    listed = flightdeck("reconcile", "--json", *store)
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["run_id"] == run_id
    assert [(c["tool"], c["key"], c["decision"]) for c in entry["calls"]] == [("charge", f"{run_id}:clerk.0.0", None)]
    shown = flightdeck("reconcile", run_id[:6], *store)
    assert shown.returncode == 0 and "1 side effect(s) awaiting a decision" in shown.stdout, shown.stdout

    before = _audit(charging.store)
    for args, message in (
            (("nosuch", "--done", "--reason", "x"), "no run 'nosuch'"),
            ((run_id, "--done"), "--reason"),
            ((run_id, "--call", "clerk.9.9", "--again", "--reason", "x"), "is not a side effect of run"),
    ):
        refused = flightdeck("reconcile", *args, *store)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert _audit(charging.store) == before

    decided = flightdeck("reconcile", run_id, "--done", "--reason", "seen at the PSP", "--operator", "alice",
                         "--json", *store)
    assert decided.returncode == 0, decided.stderr
    assert json.loads(decided.stdout)["decision"] == "done"
    again = flightdeck("reconcile", run_id, "--again", "--reason", "x", *store)
    assert again.returncode == 2 and "already reconciled" in again.stderr

    resumed = flightdeck("resume", run_id, "--yes", "--speed", "0", *store, env=charging.env)
    assert resumed.returncode == 0, resumed.stderr
    assert get_run(charging.store, run_id).status == "completed"
    assert [line["amount"] for line in charging.lines()] == [5, 7]


def test_resume_a_budget_exceeded_run_with_new_limits(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    stopped = charging.run("--budget", "tool_calls=1", "--json")
    assert stopped.returncode == 4, stopped.stderr
    run_id = json.loads(stopped.stdout)[0]["id"]
    store = ("--store", str(charging.store))

    no_yes = flightdeck("resume", run_id, *store)  # stdin is not a terminal: no consent, nothing written
    assert no_yes.returncode == 2 and "--yes" in no_yes.stderr
    assert "resume" not in _audit(charging.store)

    resumed = flightdeck("resume", run_id, "--budget", "tool_calls=5", "--reason", "limit raised by finance",
                         "--yes", "--speed", "0", "--json", *store, env=charging.env)
    assert resumed.returncode == 0, resumed.stderr
    assert "will NOT run again" in resumed.stderr and "charge" in resumed.stderr
    assert "already spent" in resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
    assert [line["amount"] for line in charging.lines()] == [5, 7]  # the recorded charge did not run again
    run = get_run(charging.store, run_id)
    # Replayed, not run again: the charge and the two model calls recorded before the budget stopped the run.
    assert (run.status, run.resumed, run.replayed_steps) == ("completed", 1, 3)
    with ControlAPI(charging.store, "reader") as api:
        taken, entry = api.audit_log(limit=2)
    assert (entry.action, entry.target, entry.reason) == ("resume", f"run:{run_id}", "limit raised by finance")
    assert entry.after["limits"] == {"tool_calls": 5}
    # Taken by the command's own engine in the same transaction: no engine starting later takes it again.
    assert (taken.action, taken.target, taken.after["request"]) == ("resume_taken", f"run:{run_id}", entry.id)


def test_a_run_killed_by_an_operator_resumes_only_through_resume(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = run_id_for_key("order-1")
    with ControlAPI(charging.store, "alice") as api:
        api.set_kill("run", run_id, "kill", "suspicious order")
    killed = charging.run("--idempotency-key", "order-1")
    assert killed.returncode == 6, killed.stderr
    assert charging.restart() == []  # a new engine does not bring it back
    resumed = flightdeck("resume", run_id, "--yes", "--reason", "order verified", "--speed", "0",
                         "--store", str(charging.store), env=charging.env)
    assert resumed.returncode == 0, resumed.stderr
    assert "releases kill switch" in resumed.stderr
    assert get_run(charging.store, run_id).status == "completed"
    with ControlAPI(charging.store, "reader") as api:
        assert not [s for s in api.active_kill_switches() if s.target == run_id]
        assert api.verify_audit().ok


def test_resume_an_abandoned_run_stops_again_on_its_unknown_side_effect(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    crashed = charging.run(crash=True)
    assert crashed.returncode == -9
    assert charging.restart(auto_resume=False) == []
    [run_id] = [line["idempotency_key"].split(":")[0] for line in charging.lines()]
    assert get_run(charging.store, run_id).status == "abandoned"
    resumed = flightdeck("resume", run_id, "--yes", "--speed", "0", "--store", str(charging.store),
                         env=charging.env)
    assert resumed.returncode == 8, resumed.stderr  # needs reconcile: its charge's outcome is unknown
    assert charging.restart() == []  # the abandoned execution was cancelled: it does not resume a second time
    assert len(charging.lines()) == 1


def test_resume_refuses_what_cannot_resume(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    done = charging.run("--json")
    assert done.returncode == 0, done.stderr
    completed = json.loads(done.stdout)[0]["id"]
    plain = flightdeck("run", str(charging.path), "--speed", "0", "--budget", "tool_calls=1", "--json",
                       "--store", str(charging.store), env=charging.env)
    assert plain.returncode == 4, plain.stderr
    not_durable = json.loads(plain.stdout)[0]["id"]
    for run_id, message in ((completed, "completed: there is nothing to resume"),
                            (not_durable, "is not a durable run"),
                            ("nosuch", "no run 'nosuch'")):
        refused = flightdeck("resume", run_id, "--yes", "--store", str(charging.store))
        assert refused.returncode == 2, (run_id, refused.stderr)
        assert message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert "resume" not in _audit(charging.store)


def test_resume_while_another_engine_holds_the_store_says_what_to_run(tmp_path: Path) -> None:
    from engine.store import open_engine_store

    charging = Charging(tmp_path)
    stopped = charging.run("--budget", "tool_calls=1", "--json")
    assert stopped.returncode == 4, stopped.stderr
    run_id = json.loads(stopped.stdout)[0]["id"]
    with open_engine_store(charging.store):  # a live engine (this process) holds the store
        refused = flightdeck("resume", run_id, "--yes", "--reason", "retry", "--store", str(charging.store))
    assert refused.returncode == 2, refused.stderr
    assert "is in use by engine pid" in refused.stderr and "nothing was written" in refused.stderr
    assert f"flightdeck resume {run_id} --store {charging.store} --reason 'retry' --yes" in refused.stderr
    assert "resume" not in _audit(charging.store)
    assert get_run(charging.store, run_id).status == "budget_exceeded"
