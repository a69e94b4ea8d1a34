"""The control plane on a Postgres store: writers serialized as BEGIN IMMEDIATE serializes them on control.db (the
audit chain never forks under N concurrent writers; the advisory lock and the chain-head row lock each act), the
schema is versioned, and a read-only open changes nothing. The ControlAPI behaviour itself is tested on both backends
in tests/engine/test_controls_*.py (`control_backend`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import pytest

from engine.controls import audit
from engine.controls.api import ControlAPI
from engine.errors import StoreError, StoreTooNew
from engine.store.pg.control_db import CONTROL_WRITE_LOCK, PgSqlConnection
from engine.store.pg.control_schema import PG_CONTROL_MIGRATIONS

WRITERS = 8
ACTIONS_EACH = 25


def _waiting_on_lock(url: str, locktype: str) -> bool:
    """Whether some session is blocked waiting for a lock of this type (pg_locks: granted = false)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = %s", (locktype,)).fetchone()
        return bool(row and row[0])


def _wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    event = threading.Event()
    deadline = threading.Timer(timeout_s, event.set)
    deadline.start()
    try:
        while not condition():
            if event.wait(0.01):
                raise AssertionError("condition not met in time")
    finally:
        deadline.cancel()


def test_n_writers_appending_at_once_never_fork_the_chain(pg_url: str) -> None:
    """Eight processes' worth of writers (each its own connection) append at once: one chain, ids 1..N, no gap."""
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with ControlAPI(pg_url, f"op{n}") as api:
                start.wait()
                for i in range(ACTIONS_EACH):
                    if i % 5 == 0:
                        switch = api.set_kill("run", f"r{n}-{i}", "kill", "contention test")
                        api.release(switch.id, reason="done")
                    else:
                        api.record_action("page", f"writer {n}", reason=f"action {i}")
        except BaseException as exc:  # reported below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with ControlAPI(pg_url, "checker") as api:
        result = api.verify_audit()
        rows = list(reversed(api.audit_log(limit=10_000)))
    # Each fifth action is a kill and its release: two audit rows.
    expected = WRITERS * (ACTIONS_EACH + ACTIONS_EACH // 5)
    assert result.ok and result.rows == expected, result
    assert [row.id for row in rows] == list(range(1, expected + 1))
    assert len({row.prev_hash for row in rows}) == expected  # a fork would give two rows the same parent


def test_a_writer_waits_for_the_control_write_lock(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice") as api:
        api.set_flag("approvals", "all", reason="warm up: creates the schema")
        holder = psycopg.connect(pg_url)  # not autocommit: the lock is held until this transaction ends
        try:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (CONTROL_WRITE_LOCK,))
            done = threading.Event()

            def set_kill() -> None:
                with ControlAPI(pg_url, "bob") as other:
                    other.set_kill("global", None, "kill", "while the lock is held")
                done.set()

            thread = threading.Thread(target=set_kill)
            thread.start()
            _wait_for(lambda: _waiting_on_lock(pg_url, "advisory"))
            assert not done.is_set() and api.active_kill_switches() == []
            holder.commit()
            thread.join(timeout=30)
            assert done.is_set()
        finally:
            holder.close()
        assert [s.operator for s in api.active_kill_switches()] == ["bob"]


def test_the_chain_head_row_lock_serializes_appends_without_the_advisory_lock(pg_url: str) -> None:
    """Two raw transactions appending directly (no ControlAPI, so no advisory lock): the second waits on the
    audit_seq row the first locked FOR UPDATE, then links to the first's row instead of forking."""
    ControlAPI(pg_url, "alice").close()  # creates the schema
    first = psycopg.connect(pg_url)
    second = psycopg.connect(pg_url)
    try:
        audit.append(PgSqlConnection(first), ts=1.0, actor="a", action="page", target=None)
        appended: list[audit.AuditEntry] = []
        thread = threading.Thread(target=lambda: appended.append(
            audit.append(PgSqlConnection(second), ts=2.0, actor="b", action="page", target=None)))
        thread.start()
        _wait_for(lambda: _waiting_on_lock(pg_url, "transactionid") or _waiting_on_lock(pg_url, "tuple"))
        assert appended == []
        first.commit()
        thread.join(timeout=30)
        second.commit()
    finally:
        first.close()
        second.close()
    with ControlAPI(pg_url, "checker") as api:
        rows = list(reversed(api.audit_log()))
        assert [(r.id, r.actor) for r in rows] == [(1, "a"), (2, "b")]
        assert rows[1].prev_hash == rows[0].hash
        assert api.verify_audit().ok


def test_schema_is_versioned_and_a_newer_one_refused(pg_url: str) -> None:
    ControlAPI(pg_url, "alice").close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT version FROM flightdeck_schema WHERE component = 'control'").fetchone()
        assert row == (len(PG_CONTROL_MIGRATIONS),)
        conn.execute("UPDATE flightdeck_schema SET version = 99 WHERE component = 'control'")
    with pytest.raises(StoreTooNew, match="control schema version 99"):
        ControlAPI(pg_url, "alice")


def test_read_only_open_of_an_empty_database_changes_nothing(pg_url: str) -> None:
    with pytest.raises(StoreError, match="no Flightdeck control plane in postgresql://"):
        ControlAPI(pg_url, "alice", read_only=True)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('kill_switches')").fetchone() == (None,)


def test_read_only_api_reads_and_refuses_writes(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice") as api:
        api.set_kill("global", None, "pause", "maintenance")
    with ControlAPI(pg_url, "reader", read_only=True) as api:
        assert [s.reason for s in api.active_kill_switches()] == ["maintenance"]
        assert api.verify_audit().ok
        with pytest.raises(StoreError, match="opened read-only"):
            api.set_kill("global", None, "kill", "no")


def test_an_unreachable_store_is_a_store_error_without_the_password(postgres_server: object) -> None:
    from tests.pg_support import free_port

    url = f"postgresql://fd:hunter2@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StoreError) as caught:
        ControlAPI(url, "alice")
    assert "hunter2" not in str(caught.value) and "fd:***@" in str(caught.value)


def test_reconcile_and_resume_on_a_postgres_store(pg_url: str) -> None:
    """A needs_reconcile run in the store's trace tables: an operator's decision and resume are audit rows there."""
    from engine.controls.errors import ControlError
    from engine.store.location import PostgresLocation, parse_store_location
    from engine.store.pg.batch_writer import PgBatchWriter

    location = parse_store_location(pg_url)
    assert isinstance(location, PostgresLocation)
    with PgBatchWriter(location) as writer:
        writer.run_started("run-1", "desk", None, "e1", "0", {}, None, None, 1.0)
        writer.span_started("sp-1", "run-1", None, "tool", "clerk", "issue_refund", 1.0, {"args": {"amount": 5}})
        writer.span_ended("sp-1", "run-1", "outcome_unknown", 2.0,
                          attrs={"needs_reconcile": True, "idempotency_key": "run-1:0/issue_refund",
                                 "call": "0/issue_refund", "error": "engine died"})
        writer.run_ended("run-1", "needs_reconcile", 2.0)
    with ControlAPI(pg_url, "alice") as api:
        (call,) = api.reconcile_calls("run-1")
        assert (call.key, call.tool, call.decision) == ("run-1:0/issue_refund", "issue_refund", None)
        decision = api.reconcile_side_effect("run-1", None, "done", "the refund went out")
        assert (decision.decision, decision.operator) == ("done", "alice")
        with pytest.raises(ControlError, match="already reconciled"):
            api.reconcile_side_effect("run-1", "sp-1", "again", "twice")
        api.set_kill("run", "run-1", "kill", "stop it")
        entry, released = api.record_resume("run-1", "needs_reconcile", None, "reconciled")
        assert entry.action == "resume" and [s.target for s in released] == ["run-1"]
        assert [r.action for r in reversed(api.audit_log())] == ["reconcile", "kill", "release", "resume"]
        assert api.verify_audit().ok


def test_create_false_refuses_an_empty_database_and_creates_nothing(pg_url: str) -> None:
    with pytest.raises(StoreError, match="no Flightdeck control plane in postgresql://"):
        ControlAPI(pg_url, "alice", create=False)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('kill_switches')").fetchone() == (None,)
    ControlAPI(pg_url, "alice").close()
    with ControlAPI(pg_url, "alice", create=False) as api:  # once recorded, it opens
        assert api.active_kill_switches() == []


def test_a_dropped_connection_fails_one_call_then_reconnects(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice") as api:
        api.set_kill("global", None, "pause", "before the restart")
        with psycopg.connect(pg_url, autocommit=True) as admin:  # what a server restart or failover does to it
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid != pg_backend_pid()")
        with pytest.raises(StoreError, match="Postgres store postgresql://.*failed"):
            api.active_kill_switches()
        assert [s.reason for s in api.active_kill_switches()] == ["before the restart"]
        api.release(scope="global", reason="after the restart")
        assert api.verify_audit().ok
