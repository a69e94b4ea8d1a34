"""ControlDB: durability settings, engine registration and liveness, many writers queueing for the lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from engine.clock import FakeClock
from engine.store import open_engine_store
from engine.store.control import STALE_AFTER_S, ControlDB
from tests.store_support import wait_until


def test_rollback_journal_and_full_sync(tmp_path: Path) -> None:
    control = ControlDB(tmp_path / "control.db")
    assert control.query("PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    assert control.query("PRAGMA synchronous") == [{"synchronous": 2}]  # FULL
    assert control.query("PRAGMA busy_timeout") == [{"timeout": 5000}]
    control.close()


def test_engine_liveness(tmp_path: Path) -> None:
    clock = FakeClock()
    control = ControlDB(tmp_path / "control.db", clock=clock)
    engine_id = control.register_engine(version="9.9", pid=4242, host="h", user="u")
    [engine] = control.list_engines()
    assert (engine.id, engine.pid, engine.version, engine.alive, engine.stale) == (
        engine_id, 4242, "9.9", True, False)
    clock.advance(STALE_AFTER_S + 0.5)
    [engine] = control.list_engines()
    assert (engine.alive, engine.stale) == (False, True)
    control.heartbeat(engine_id)
    [engine] = control.list_engines()
    assert (engine.alive, engine.stale, engine.heartbeat) == (True, False, clock.time())
    control.mark_stopped(engine_id)
    [engine] = control.list_engines()
    assert (engine.alive, engine.stale, engine.stopped) == (False, False, clock.time())
    control.close()


def test_engine_store_heartbeats_while_open(tmp_path: Path) -> None:
    with open_engine_store(tmp_path / "store", heartbeat_interval=0.01) as store:
        [first] = store.control.list_engines()
        assert first.pid == os.getpid() and first.alive
        wait_until(lambda: store.control.list_engines()[0].heartbeat > first.heartbeat, timeout=5,
                   what="a heartbeat")
        engine_id = store.engine_id
    control = ControlDB.open(tmp_path / "store")
    [engine] = control.list_engines()
    assert engine.id == engine_id and engine.stopped is not None and not engine.alive
    control.close()


def test_a_writer_waits_for_another_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    first = ControlDB(path)
    engine_id = first.register_engine(version="1")
    second = ControlDB(path)
    results: list[str] = []

    attempting = threading.Event()

    def other_operator() -> None:
        attempting.set()
        second.mark_stopped(engine_id, 123.0)  # fails with "database is locked" unless it queues
        results.append("done")

    with first.transaction() as conn:  # holds the write lock
        conn.execute("UPDATE engines SET version = 'held' WHERE id = ?", (engine_id,))
        thread = threading.Thread(target=other_operator)
        thread.start()
        assert attempting.wait(timeout=10)
        assert results == []  # it cannot have written while we hold the lock
    thread.join(timeout=10)  # ...and gets through once we let go
    assert results == ["done"]
    [engine] = first.list_engines()
    assert (engine.version, engine.stopped) == ("held", 123.0)
    first.close()
    second.close()


_REGISTER = """
import sys
from engine.store.control import ControlDB
control = ControlDB.open(__import__("pathlib").Path(sys.argv[1]))
for i in range(20):
    control.register_engine(version=f"p{sys.argv[2]}-{i}")
control.close()
"""


def test_concurrent_processes_all_get_their_writes_in(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o700)
    children = [subprocess.Popen([sys.executable, "-c", _REGISTER, str(store_dir), str(n)],
                                 stderr=subprocess.PIPE, text=True) for n in range(3)]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    control = ControlDB.open(store_dir)
    versions = {e.version for e in control.list_engines(limit=100)}
    assert versions == {f"p{n}-{i}" for n in range(3) for i in range(20)}
    control.close()
