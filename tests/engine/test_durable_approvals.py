"""A pending approval keeps its meaning across a resume (issue 13): a durable run waiting on an approval is SIGKILLed
(a real `flightdeck run --durable` subprocess); the next durable engine on the store carries the run on with THAT
request: decided while no engine ran, the decision is obeyed at once (the side effect runs once, or not at all);
still pending, the run waits on the same id and deadline; a deadline that passed meanwhile applies its policy at
once. No second request is ever written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.store.control_rows import Approval
from tests.durable_support import APPROVING, Charging, flightdeck
from tests.engine_helpers import events, get_run
from tests.store_support import wait_until

pytestmark = pytest.mark.slow


def _charging(tmp_path: Path, deadline: str = "300", on_timeout: str = "deny") -> Charging:
    return Charging(tmp_path, APPROVING.replace("DEADLINE", deadline).replace("ON_TIMEOUT", on_timeout))


def _all_approvals(store: Path) -> list[Approval]:
    with ControlAPI(store, "reader") as api:
        return api.list_approvals(limit=1000)


def _pending(store: Path) -> list[Approval]:
    if not (store / "control.db").exists():
        return []
    with ControlAPI(store, "reader") as api:
        return api.pending_approvals()


def _crash_while_waiting(charging: Charging) -> Approval:
    """Start the run, wait until its charge waits on an approval, SIGKILL the engine. Returns the request."""
    child = charging.start()
    try:
        found = wait_until(lambda: child.poll() is not None or _pending(charging.store), timeout=120,
                           what="the run to ask for an approval")
        assert child.poll() is None, (charging.store.parent / "engine.log").read_text()[-2000:]
    finally:
        if child.poll() is None:
            charging.kill_engine(child)
    assert isinstance(found, list) and len(found) == 1, found
    row: Approval = found[0]
    assert row.call_key == f"{row.run_id}:clerk.0.0"  # keyed by the call's structural path
    assert charging.lines() == []  # nothing ran before the engine died
    return row


@pytest.mark.parametrize(("decision", "charged"), [("approve", [5]), ("deny", [])])
def test_a_decision_made_while_the_engine_was_down_is_obeyed_on_resume(tmp_path: Path, decision: str,
                                                                      charged: list[int]) -> None:
    charging = _charging(tmp_path)
    asked = _crash_while_waiting(charging)
    with ControlAPI(charging.store, "alice") as api:
        getattr(api, decision)(asked.id, "checked with the customer")
    assert charging.restart() == [asked.run_id]
    run = get_run(charging.store, asked.run_id)
    assert run.status == "completed", run.error
    assert [line["amount"] for line in charging.lines()] == charged  # once, or not at all
    rows = _all_approvals(charging.store)
    assert [(r.id, r.decided_by) for r in rows] == [(asked.id, "alice")]  # no second request
    decided = events(charging.store, asked.run_id, kinds=["approval.decided"])
    assert [(e.data["id"], e.data["decided_by"]) for e in decided] == [(asked.id, "alice")]


def test_a_still_pending_approval_is_waited_on_with_its_id_and_deadline(tmp_path: Path) -> None:
    charging = _charging(tmp_path)
    asked = _crash_while_waiting(charging)
    resumed: list[str] = []
    engine = threading.Thread(target=lambda: resumed.extend(charging.restart()), daemon=True)
    engine.start()
    try:
        waiting = wait_until(lambda: [e for e in events(charging.store, asked.run_id, kinds=["approval.requested"])
                                      if e.data.get("resumed")], timeout=120, what="the resumed run to wait")
        assert waiting[0].data["id"] == asked.id and waiting[0].data["deadline"] == asked.deadline
        listed = flightdeck("approvals", "--json", "--store", str(charging.store))
        assert listed.returncode == 0, listed.stderr
        assert [(r["id"], r["deadline"]) for r in json.loads(listed.stdout)] == [(asked.id, asked.deadline)]
        approved = flightdeck("approve", asked.id, "--reason", "go ahead", "--operator", "bob", "--store",
                              str(charging.store))
        assert approved.returncode == 0, approved.stderr
    finally:
        engine.join(timeout=120)
    assert not engine.is_alive() and resumed == [asked.run_id]
    assert get_run(charging.store, asked.run_id).status == "completed"
    assert [line["amount"] for line in charging.lines()] == [5]
    assert [(r.id, r.status, r.decided_by) for r in _all_approvals(charging.store)] == [(asked.id, "approved", "bob")]


@pytest.mark.parametrize(("policy", "status", "charged"), [("deny", "timed_out", []), ("approve", "approved", [5])])
def test_a_deadline_that_passed_while_the_engine_was_down_applies_its_policy_at_once(
        tmp_path: Path, policy: str, status: str, charged: list[int]) -> None:
    charging = _charging(tmp_path, deadline="3", on_timeout=policy)
    asked = _crash_while_waiting(charging)
    wait_until(lambda: time.time() > asked.deadline, timeout=30, what="the deadline to pass")
    started = time.time()
    assert charging.restart() == [asked.run_id]
    assert get_run(charging.store, asked.run_id).status == "completed"
    assert [line["amount"] for line in charging.lines()] == charged
    rows = _all_approvals(charging.store)
    assert [(r.id, r.status, r.decided_by) for r in rows] == [(asked.id, status, "timeout-policy")]
    assert rows[0].decided is not None and rows[0].decided >= started  # decided by the resumed run, not before
