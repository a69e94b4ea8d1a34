"""The audit log's hash chain: every kind of tampering is found and named, and actions never commit without
their audit row (nor the row without its action). Every test runs on control.db and on a Postgres store
(`control_backend`); tampering is done with plain SQL on a connection of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.clock import FakeClock
from engine.controls import audit as audit_module
from engine.controls.api import ControlAPI
from engine.controls.audit import GENESIS, row_hash, verify_chain
from engine.store.rows import fetch_one
from tests.control_backends import ControlBackend


@pytest.fixture
def api(control_backend: ControlBackend) -> Iterator[ControlAPI]:
    with control_backend.api("alice", clock=FakeClock()) as control:
        yield control


def _five_actions(api: ControlAPI) -> None:
    api.set_kill("run", "r1", "kill", "runaway spend")
    api.set_flag("tools.side_effects", "off", reason="incident 42")
    api.release(scope="run", target="r1", reason="contained")
    api.override_breaker("tool:crm_lookup", "force_open", "vendor outage")
    api.clear_flag("tools.side_effects", reason="incident over")


def test_intact_chain_verifies_and_links_every_row(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    result = api.verify_audit()
    assert (result.ok, result.rows, result.first_bad_id, result.problem) == (True, 5, None, None)
    rows = list(reversed(api.audit_log()))
    assert [r.action for r in rows] == ["kill", "flag_set", "release", "breaker_override", "flag_cleared"]
    assert rows[0].prev_hash == GENESIS
    for earlier, later in zip(rows, rows[1:]):
        assert later.prev_hash == earlier.hash
    assert all(r.actor == "alice" for r in rows)


def test_empty_log_verifies(api: ControlAPI) -> None:
    assert api.verify_audit().ok and api.verify_audit().rows == 0


def test_edited_row_is_named(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    with control_backend.raw() as conn:
        conn.execute("UPDATE audit SET reason = 'nothing to see' WHERE id = 3")
    result = api.verify_audit()
    assert not result.ok and result.first_bad_id == 3
    assert "row 3 was altered" in (result.problem or "")


def test_edited_row_with_recomputed_hash_breaks_the_next_link(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    with control_backend.raw() as conn:
        row = fetch_one(conn, "SELECT * FROM audit WHERE id = 2")
        assert row is not None
        row["actor"] = "mallory"
        conn.execute("UPDATE audit SET actor = ?, hash = ? WHERE id = 2", ("mallory", row_hash(row["prev_hash"], row)))
    result = api.verify_audit()
    assert not result.ok and result.first_bad_id == 3
    assert "does not link to row 2" in (result.problem or "")


def test_deleted_row_is_named(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    with control_backend.raw() as conn:
        conn.execute("DELETE FROM audit WHERE id = 3")
    result = api.verify_audit()
    assert not result.ok and result.first_bad_id == 3
    assert "row 3 is missing" in (result.problem or "")


def test_deleted_last_rows_are_found(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    with control_backend.raw() as conn:
        conn.execute("DELETE FROM audit WHERE id >= 4")
    result = api.verify_audit()
    assert not result.ok and result.first_bad_id == 4
    assert "rows 4..5 missing at the end" in (result.problem or "")


def test_reordered_rows_are_named(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    with control_backend.raw() as conn:  # swap rows 2 and 3: same rows, same hashes, different order
        conn.execute("UPDATE audit SET id = 1000 WHERE id = 2")
        conn.execute("UPDATE audit SET id = 2 WHERE id = 3")
        conn.execute("UPDATE audit SET id = 3 WHERE id = 1000")
    result = api.verify_audit()
    assert not result.ok and result.first_bad_id == 2
    assert "row 2" in (result.problem or "")


def test_rows_appended_after_verification_keep_the_chain(api: ControlAPI) -> None:
    _five_actions(api)
    api.set_kill("global", None, "pause", "maintenance")
    assert api.verify_audit().ok and api.verify_audit().rows == 6


def test_action_and_audit_row_commit_together(api: ControlAPI, control_backend: ControlBackend,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_append(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(audit_module, "append", broken_append)
    with pytest.raises(RuntimeError):
        api.set_kill("run", "r1", "kill", "runaway spend")
    with pytest.raises(RuntimeError):
        api.set_flag("approvals", "all", reason="audit week")
    monkeypatch.undo()
    assert api.active_kill_switches() == []
    assert api.active_flags() == []
    assert api.audit_log() == []


def test_failed_decision_writes_no_audit_row(api: ControlAPI) -> None:
    approval = api.request_approval("r1", "s1", "clerk", "refund", {"amount": 5}, "high", None, 60, "deny", "e1")
    api.deny(approval.id, "no")
    count = len(api.audit_log())
    with pytest.raises(Exception):
        api.approve(approval.id, "changed my mind")
    assert len(api.audit_log()) == count
    assert api.verify_audit().ok


def test_verify_chain_on_a_raw_connection(api: ControlAPI, control_backend: ControlBackend) -> None:
    _five_actions(api)
    with control_backend.raw() as conn:
        assert verify_chain(conn).ok
