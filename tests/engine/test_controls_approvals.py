"""Approvals: a decision binds to one exact request, exactly one decider wins (also across processes), and the
engine's timeout policies (deny, approve, escalate) are applied once and never over a human decision. Every test
runs on control.db and on a Postgres store (`control_backend`)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.controls.api import ControlAPI, ControlError
from engine.errors import InputError
from tests.control_backends import ControlBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(control_backend: ControlBackend, clock: FakeClock) -> Iterator[ControlAPI]:
    with control_backend.api("alice", clock=clock) as control:
        yield control


def _request(api: ControlAPI, *, on_timeout: str = "deny", deadline_s: float = 60.0, run_id: str = "r1",
             arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return api.request_approval(run_id, "span-1", "clerk", "issue_refund",
                                arguments if arguments is not None else {"order": "A-1", "amount": 120},
                                "high", "customer asked twice", deadline_s, on_timeout, "e1")


def test_request_approval_stores_canonical_arguments(api: ControlAPI, clock: FakeClock,
                                                     control_backend: ControlBackend) -> None:
    row = _request(api, arguments={"b": [1, 2], "a": {"y": 1, "x": "é"}})
    assert re.fullmatch(r"ap-[0-9a-f]{8}", row.id)
    canonical = '{"a":{"x":"é","y":1},"b":[1,2]}'
    assert row.args_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert row.arguments == {"a": {"x": "é", "y": 1}, "b": [1, 2]}
    assert (row.status, row.level, row.requested, row.deadline) == \
        ("pending", 0, clock.time(), clock.time() + 60)
    assert control_backend.sql("SELECT arguments FROM approvals") == [(canonical,)]
    (audit_row,) = api.audit_log()
    assert (audit_row.actor, audit_row.action, audit_row.target) == \
        ("engine:e1", "approval_requested", row.id)
    assert audit_row.after["args_hash"] == row.args_hash


def test_request_approval_validation(api: ControlAPI) -> None:
    for kwargs, field in (({"arguments": [1, 2]}, "arguments"), ({"deadline_s": 0}, "deadline_s"),
                          ({"on_timeout": "shrug"}, "on_timeout"), ({"run_id": ""}, "run_id")):
        call: dict[str, Any] = {"run_id": "r1", "span_id": "s", "agent": "a", "tool": "t", "arguments": {}, "risk": None,
                "reason": None, "deadline_s": 10, "on_timeout": "deny", "engine_id": "e1", **kwargs}
        with pytest.raises(InputError) as caught:
            api.request_approval(**call)
        assert caught.value.field == field


def test_approve_then_second_decision_is_refused(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api)
    clock.advance(5)
    approved = api.approve(row.id, "verified with the customer")
    assert (approved.status, approved.decided_by, approved.decided, approved.decision_reason) == \
        ("approved", "alice", clock.time(), "verified with the customer")
    decided_at = time.strftime("%H:%M:%S", time.localtime(clock.time()))
    with pytest.raises(ControlError, match=f"approval {row.id} was already approved by alice at {decided_at}"):
        api.deny(row.id, "second thoughts")
    with pytest.raises(ControlError, match="already approved"):
        api.approve(row.id, "again")
    assert [r.action for r in reversed(api.audit_log())] == ["approval_requested", "approve"]


def test_deny_is_final(api: ControlAPI) -> None:
    row = _request(api)
    denied = api.deny(row.id, "amount too high")
    assert denied.status == "denied"
    assert api.audit_log()[0].action == "deny"
    with pytest.raises(ControlError, match="was already denied by alice"):
        api.approve(row.id, "oops")


def test_decision_after_deadline_is_refused_before_the_engine_expires_it(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api, deadline_s=30)
    clock.advance(30)
    with pytest.raises(ControlError, match=rf"approval {row.id} expired at \d\d:\d\d:\d\d"):
        api.approve(row.id, "late")
    assert api.approval(row.id).status == "pending"  # the engine, not the late operator, applies the policy
    assert len(api.audit_log()) == 1


def test_expected_hash_binds_the_decision(api: ControlAPI) -> None:
    row = _request(api)
    other = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ControlError, match="arguments changed since you looked"):
        api.approve(row.id, "ok", expected_args_hash=other)
    with pytest.raises(InputError) as caught:
        api.approve(row.id, "ok", expected_args_hash="abc")
    assert caught.value.field == "expected_args_hash"
    assert api.approval(row.id).status == "pending"
    assert api.approve(row.id, "ok", expected_args_hash=row.args_hash[:10].upper()).status == "approved"


def test_edited_arguments_are_stored_and_audited(api: ControlAPI) -> None:
    row = _request(api)
    approved = api.approve(row.id, "cap the refund", edited_arguments={"order": "A-1", "amount": 50})
    assert approved.edited_arguments == {"amount": 50, "order": "A-1"}
    assert approved.arguments == {"amount": 120, "order": "A-1"}  # what was asked stays on record
    audit_row = api.audit_log()[0]
    assert audit_row.action == "edit_approve"
    assert audit_row.after["edited_arguments"] == {"amount": 50, "order": "A-1"}
    assert audit_row.after["edited_args_hash"] == hashlib.sha256(b'{"amount":50,"order":"A-1"}').hexdigest()


def test_edited_arguments_must_be_an_object(api: ControlAPI) -> None:
    row = _request(api)
    for bad in ([1, 2], "amount=5", {"x": float("nan")}):
        with pytest.raises(InputError) as caught:
            api.approve(row.id, "x", edited_arguments=bad)  # type: ignore[arg-type]
        assert caught.value.field == "edited_arguments"
    assert api.approval(row.id).status == "pending"


def test_unknown_approval_and_missing_reason(api: ControlAPI) -> None:
    with pytest.raises(ControlError, match="no approval ap-00000000"):
        api.approve("ap-00000000", "x")
    row = _request(api)
    with pytest.raises(InputError) as caught:
        api.deny(row.id, "  ")
    assert caught.value.field == "reason"


def test_pending_approvals_oldest_first(api: ControlAPI, clock: FakeClock) -> None:
    first = _request(api)
    clock.advance(1)
    second = _request(api)
    clock.advance(1)
    third = _request(api)
    api.deny(second.id, "no")
    assert [a.id for a in api.pending_approvals()] == [first.id, third.id]
    assert [a.id for a in api.list_approvals()] == [third.id, second.id, first.id]


# ---------------------------------------------------------------------------------------------- timeouts

def test_expire_with_deny_policy_is_a_timeout_not_a_denial(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api, on_timeout="deny", deadline_s=30)
    assert api.expire_approval(row.id, now=clock.time() + 29).outcome == "unchanged"
    expired = api.expire_approval(row.id, now=clock.time() + 30)
    assert (expired.outcome, expired.status, expired.decided_by) == ("timed_out", "timed_out",
                                                                              "timeout-policy")
    audit_row = api.audit_log()[0]
    assert (audit_row.action, audit_row.actor, audit_row.after["status"]) == \
        ("approval_timeout", "engine:e1", "timed_out")
    assert api.expire_approval(row.id, now=clock.time() + 31).outcome == "unchanged"  # idempotent
    clock.advance(10)
    with pytest.raises(ControlError, match="expired at .* and was denied by its timeout policy"):
        api.approve(row.id, "too late")
    assert len(api.audit_log()) == 2


def test_expire_with_approve_policy(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api, on_timeout="approve", deadline_s=10)
    expired = api.expire_approval(row.id, now=clock.time() + 10)
    assert (expired.outcome, expired.status, expired.decided_by) == ("approved", "approved",
                                                                              "timeout-policy")
    assert api.snapshot(0).decided_approvals[0].id == row.id


def test_expire_with_escalate_policy_doubles_the_window(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api, on_timeout="escalate", deadline_s=60)
    first_deadline = row.deadline
    clock.advance(60)
    escalated = api.expire_approval(row.id, now=clock.time())
    assert (escalated.outcome, escalated.status, escalated.level) == ("escalated", "pending", 1)
    assert escalated.deadline == first_deadline + 120
    assert (escalated.agent, escalated.tool, escalated.run_id, escalated.risk) == \
        ("clerk", "issue_refund", "r1", "high")  # enough to page someone
    audit_row = api.audit_log()[0]
    assert (audit_row.action, audit_row.after["level"]) == ("approval_escalated", 1)
    assert api.expire_approval(row.id, now=clock.time()).outcome == "unchanged"  # not due again yet

    clock.advance(119)
    assert api.approve(row.id, "the on-call manager agrees").status == "approved"  # new deadline honoured
    assert api.expire_approval(row.id, now=clock.time() + 500).outcome == "unchanged"


def test_escalation_repeats_each_window(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api, on_timeout="escalate", deadline_s=10)
    second = api.expire_approval(row.id, now=clock.time() + 10)
    third = api.expire_approval(row.id, now=second.deadline)
    assert (third.level, third.deadline) == (2, second.deadline + 20)


def test_human_decision_first_makes_expiry_a_no_op(api: ControlAPI, clock: FakeClock) -> None:
    row = _request(api, on_timeout="approve", deadline_s=10)
    api.deny(row.id, "no")
    result = api.expire_approval(row.id, now=clock.time() + 60)
    assert (result.outcome, result.status, result.decided_by) == ("unchanged", "denied", "alice")


def test_cancel_approvals_for_run(api: ControlAPI) -> None:
    a = _request(api, run_id="r1")
    b = _request(api, run_id="r1")
    other = _request(api, run_id="r2")
    api.approve(b.id, "fine")
    cancelled = api.cancel_approvals_for_run("r1", "run killed", actor="engine:e1")
    assert [c.id for c in cancelled] == [a.id]
    assert cancelled[0].status == "cancelled"
    assert [p.id for p in api.pending_approvals()] == [other.id]
    assert api.audit_log()[0].action == "approval_cancelled"
    assert api.audit_log()[0].actor == "engine:e1"
    with pytest.raises(ControlError, match="was cancelled at .* \\(run killed\\)"):
        api.approve(a.id, "too late")


# ---------------------------------------------------------------------------------------------- concurrency

DECIDER = r"""
import json, sys
from engine.controls.api import ControlAPI, ControlError
store, who, verb = sys.argv[1], sys.argv[2], sys.argv[3]
ids = json.loads(sys.argv[4])
if verb == "deny":
    ids.reverse()  # the deciders walk towards each other, so they collide on the requests in the middle
api = ControlAPI(store, who)
print("ready", flush=True)
sys.stdin.readline()  # the go signal: both deciders start at the same moment
won = []
for approval_id in ids:
    try:
        getattr(api, verb)(approval_id, f"{who} decides")
        won.append(approval_id)
    except ControlError as exc:
        assert "already" in str(exc), exc
print(json.dumps(won), flush=True)
"""


def test_two_processes_deciding_at_once_exactly_one_wins_each(control_backend: ControlBackend) -> None:
    with control_backend.api("engine:e1") as api:
        ids = [_request(api).id for _ in range(40)]
    procs = [subprocess.Popen([sys.executable, "-c", DECIDER, control_backend.store_arg, who, verb, json.dumps(ids)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who, verb in (("alice", "approve"), ("bob", "deny"))]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    alice_won, bob_won = (set(json.loads(out.strip().splitlines()[-1])) for out, _ in outputs)
    assert alice_won.isdisjoint(bob_won)
    assert alice_won | bob_won == set(ids)
    with control_backend.api("checker") as api:
        for approval_id in ids:
            row = api.approval(approval_id)
            expected = ("approved", "alice") if approval_id in alice_won else ("denied", "bob")
            assert (row.status, row.decided_by) == expected
        decisions = [r for r in api.audit_log(limit=1000) if r.action in ("approve", "deny")]
        assert len(decisions) == len(ids)
        assert api.verify_audit().ok
