"""ControlWatcher: every committed control write wakes a waiting watcher (LISTEN/NOTIFY in the writing transaction);
nothing else does: not a rolled-back write, not the passing of time short of the timeout."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from engine.controls.api import ControlAPI
from engine.errors import StoreError
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.control_watch import ControlChange, ControlWatcher


def _location(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def _wait_until(watcher: ControlWatcher, table: str, timeout_s: float = 10.0) -> ControlChange:
    """Waits until a change to `table` is seen (earlier wakes for other tables are skipped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        change = watcher.wait(max(0.0, deadline - time.monotonic()))
        assert change is not None, f"no change to {table} within {timeout_s} s"
        if table in change.tables:
            return change


def test_set_kill_in_another_connection_wakes_the_watcher(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice") as api, ControlWatcher(_location(pg_url)) as watcher:
        assert watcher.wait(0.05) is None  # nothing changed: the timeout passes
        done: list[float] = []

        def operator() -> None:
            with ControlAPI(pg_url, "bob") as other:
                other.set_kill("global", None, "kill", "stop everything")
                done.append(time.monotonic())

        thread = threading.Thread(target=operator)
        thread.start()
        change = _wait_until(watcher, "kill_switches")
        thread.join(timeout=30)
        assert {"kill_switches", "audit"} <= change.tables
        # The wake carries a change that is visible: the engine's snapshot read after it sees the switch.
        assert [s.operator for s in api.snapshot().kill_switches] == ["bob"]


def test_a_rolled_back_write_wakes_nobody_and_a_raw_committed_one_does(pg_url: str) -> None:
    ControlAPI(pg_url, "alice").close()  # the schema
    insert = ("INSERT INTO kill_switches (scope, target, mode, reason, operator, created) "
              "VALUES ('global', NULL, 'kill', 'forged', 'mallory', 1)")
    with ControlWatcher(_location(pg_url)) as watcher:
        with psycopg.connect(pg_url) as conn:
            conn.execute(insert)
            conn.rollback()
        assert watcher.wait(0.2) is None
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(insert)  # outside Flightdeck: the engine must still look (and refuse it, unbound)
        assert "kill_switches" in _wait_until(watcher, "kill_switches").tables


def test_every_kind_of_control_write_notifies(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice") as api, ControlWatcher(_location(pg_url)) as watcher:
        writes = [
            ("flags", lambda: api.set_flag("approvals", "all", reason="audit week")),
            ("approvals", lambda: api.request_approval("r1", None, "clerk", "refund", {"a": 1}, None, None, 60,
                                                       "deny", "e1")),
            ("breaker_overrides", lambda: api.override_breaker("tool:crm", "force_open", "flapping")),
            ("budget_overrides", lambda: api.budget_change("r1", {"cost_usd": 2}, "more room")),
            ("audit", lambda: api.record_action("page", "oncall", reason="test")),
        ]
        for table, write in writes:
            write()
            assert table in _wait_until(watcher, table).tables


def test_an_unreachable_store_is_a_store_error(postgres_server: object) -> None:
    from tests.pg_support import free_port

    with pytest.raises(StoreError, match="cannot connect"):
        ControlWatcher(_location(f"postgresql://fd:secret@127.0.0.1:{free_port()}/x"))


def test_closing_the_watcher_from_another_thread_ends_a_wait(pg_url: str) -> None:
    watcher = ControlWatcher(_location(pg_url))
    closer = threading.Timer(0.1, watcher.close)
    closer.start()
    began = time.monotonic()
    try:
        assert watcher.wait(30.0) is None
    finally:
        closer.join()
    assert time.monotonic() - began < 25.0  # ended by the close, not by its 30 s timeout


def test_a_connection_the_server_dropped_is_a_store_error_not_a_quiet_timeout(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice"), ControlWatcher(_location(pg_url)) as watcher:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND query = 'LISTEN flightdeck_control'")
        with pytest.raises(StoreError, match="waiting for control changes failed"):
            watcher.wait(5.0)
