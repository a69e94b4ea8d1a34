"""Reconcile (issue 13): a side effect whose engine died during it ends its run needs_reconcile; an operator decides
done / again / fail through ControlAPI (audited), and the next durable engine on the store carries the run on with
that decision. Real stores, a real SIGKILLed engine subprocess (tests/durable_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.controls.errors import ControlError
from engine.errors import InputError
from tests.durable_support import Charging
from tests.engine_helpers import get_run, spans

pytestmark = pytest.mark.slow


def _audit_rows(store: Path) -> int:
    with ControlAPI(store, "reader") as api:
        return len(api.audit_log(limit=10_000))


def test_done_records_the_outcome_and_never_runs_it_again(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    with ControlAPI(charging.store, "alice") as api:
        waiting = api.reconcile_calls(run_id)
        assert [(c.tool, c.key, c.decision) for c in waiting] == [("charge", f"{run_id}:clerk.0.0", None)]
        decision = api.reconcile_side_effect(run_id, None, "done", "the PSP shows the charge")
        assert (decision.decision, decision.operator, decision.key) == ("done", "alice", f"{run_id}:clerk.0.0")
        assert api.verify_audit().ok
        entry = api.audit_log(limit=1)[0]
        assert (entry.action, entry.target, entry.reason) == ("reconcile", f"run:{run_id}", "the PSP shows the charge")
    assert charging.restart() == [run_id]
    run = get_run(charging.store, run_id)
    assert run.status == "completed", run.error
    assert [line["amount"] for line in charging.lines()] == [5, 7]  # the first charge did not run again
    done = [s for s in spans(charging.store, run_id) if s.kind == "tool" and s.attributes.get("reconciled")]
    assert len(done) == 1 and done[0].status == "ok"
    assert done[0].attributes["result"] == {"status": "confirmed done by the operator", "operator": "alice",
                                            "note": "the PSP shows the charge"}


def test_again_runs_it_with_the_same_idempotency_key(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    with ControlAPI(charging.store, "bob") as api:
        api.reconcile_side_effect(run_id, f"{run_id}:clerk.0.0", "again", "no charge at the PSP")
    charging.restart()
    assert get_run(charging.store, run_id).status == "completed"
    first = [line for line in charging.lines() if line["amount"] == 5]
    assert [(line["idempotency_key"], line["attempt"]) for line in first] == [
        (f"{run_id}:clerk.0.0", 0), (f"{run_id}:clerk.0.0", 1)]


def test_fail_ends_the_run_failed_with_the_note(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    with ControlAPI(charging.store, "carol") as api:
        api.reconcile_side_effect(run_id, "clerk.0.0", "fail", "customer cancelled; refund by hand")
    charging.restart()
    run = get_run(charging.store, run_id)
    assert (run.status, run.error) == ("failed", "customer cancelled; refund by hand")
    assert len(charging.lines()) == 1  # nothing ran again


def test_an_undecided_run_does_not_go_on(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    assert charging.restart() == []
    assert get_run(charging.store, run_id).status == "needs_reconcile"
    assert len(charging.lines()) == 1


def test_bad_reconcile_input_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    completed = charging.run()
    assert completed.returncode == 0, completed.stderr
    other = [line["idempotency_key"] for line in charging.lines()][-1].split(":")[0]
    before = _audit_rows(charging.store)
    with ControlAPI(charging.store, "dave") as api:
        with pytest.raises(InputError, match="no run 'nosuchrun'"):
            api.reconcile_side_effect("nosuchrun", None, "done", "x")
        with pytest.raises(ControlError, match="is completed, not needs_reconcile"):
            api.reconcile_side_effect(other, None, "done", "x")
        with pytest.raises(ControlError, match="is not a side effect of run .* whose outcome is unknown"):
            api.reconcile_side_effect(run_id, "clerk.1.0", "done", "x")
        with pytest.raises(InputError):
            api.reconcile_side_effect(run_id, None, "done", "  ")
        with pytest.raises(InputError):
            api.reconcile_side_effect(run_id, None, "maybe", "x")
        assert _audit_rows(charging.store) == before
        api.reconcile_side_effect(run_id, None, "done", "checked")
        with pytest.raises(ControlError, match="already reconciled"):
            api.reconcile_side_effect(run_id, None, "again", "changed my mind")
    assert _audit_rows(charging.store) == before + 1


def test_an_altered_decision_is_not_obeyed(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    with ControlAPI(charging.store, "erin") as api:
        api.reconcile_side_effect(run_id, None, "fail", "stop it")
    from tests.store_support import raw_conn

    conn = raw_conn(charging.store / "control.db")
    try:  # someone edits the decision in control.db directly: fail becomes again
        conn.execute("UPDATE audit SET after = replace(after, '\"fail\"', '\"again\"') WHERE action = 'reconcile'")
    finally:
        conn.close()
    with ControlAPI(charging.store, "erin") as api:
        assert api.reconcile_decisions(run_id) == {}
        assert not api.verify_audit().ok
    charging.restart()
    assert get_run(charging.store, run_id).status == "needs_reconcile"
    assert len(charging.lines()) == 1
