"""Store directory, files, schema versions, damage detection and the engine lock."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import StoreDamaged, StoreError, StoreLocked, StoreTooNew
from engine.store import open_engine_store, open_reader, resolve_store_dir
from engine.store.control import ControlDB
from engine.store.control_schema import CONTROL_MIGRATIONS
from engine.store.migrate import migrate, split_statements
from engine.store.traces_schema import TRACES_MIGRATIONS
from tests.store_support import T0, rows, run_python


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """umask 0: any file we did not create 0600 ourselves would come out world-readable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_store_has_current_schema_wal_and_rollback_journal(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir):
        traces = rows(store_dir / "traces.db", "PRAGMA user_version")[0][0]
        control = rows(store_dir / "control.db", "PRAGMA user_version")[0][0]
        assert traces == len(TRACES_MIGRATIONS)
        assert control == len(CONTROL_MIGRATIONS)
        assert rows(store_dir / "traces.db", "PRAGMA journal_mode")[0][0] == "wal"
        assert rows(store_dir / "control.db", "PRAGMA journal_mode")[0][0] == "delete"
        tables = {r[0] for r in rows(store_dir / "traces.db", "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "spans", "events", "engines"} <= tables


def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir) as store:
        store.writer.run_started("r1", "h", None, store.engine_id, "v", {}, 1, None, T0, None)
        store.writer.run_ended("r1", "completed", T0 + 1, {"ok": True}, None)
        first_engine = store.engine_id
    with open_engine_store(store_dir) as store:
        assert store.engine_id != first_engine
        assert store.abandoned_runs == []
        assert rows(store_dir / "traces.db", "PRAGMA user_version")[0][0] == len(TRACES_MIGRATIONS)
    with open_reader(store_dir) as reader:
        run = reader.get_run("r1")
        assert run is not None and run.status == "completed" and run.output == {"ok": True}
        engines = reader.engines()
        assert len(engines) == 2 and all(e.stopped is not None for e in engines)


def test_files_are_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    store_dir = tmp_path / "nested" / "store"
    with open_engine_store(store_dir) as store:
        store.writer.event(None, None, "test", data={"x": 1})
        store.writer.flush()
        assert _mode(store_dir) == 0o700
        names = sorted(p.name for p in store_dir.iterdir())
        assert {"traces.db", "traces.db-wal", "traces.db-shm", "control.db", "engine.lock"} <= set(names)
        for name in names:
            assert _mode(store_dir / name) == 0o600, name


def test_existing_loose_store_dir_is_tightened(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o755)
    os.chmod(store_dir, 0o755)
    with open_engine_store(store_dir):
        assert _mode(store_dir) == 0o700


@pytest.mark.parametrize("db_name", ["traces.db", "control.db"])
def test_newer_schema_is_refused(tmp_path: Path, db_name: str) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir):
        pass
    conn = sqlite3.connect(store_dir / db_name)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreTooNew) as info:
        open_engine_store(store_dir)
    assert str(store_dir / db_name) in str(info.value) and "999" in str(info.value)
    # A refused open must not leave the lock held.
    with pytest.raises(StoreTooNew):
        open_engine_store(store_dir)
    if db_name == "traces.db":
        with pytest.raises(StoreTooNew):
            open_reader(store_dir)


@pytest.mark.parametrize("db_name", ["traces.db", "control.db"])
def test_garbage_file_is_damaged_and_named(tmp_path: Path, db_name: str) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o700)
    (store_dir / db_name).write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(StoreDamaged) as info:
        open_engine_store(store_dir)
    assert str(store_dir / db_name) in str(info.value)
    assert info.value.exit_code == 3
    if db_name == "traces.db":
        with pytest.raises(StoreDamaged) as info:
            open_reader(store_dir)
        assert str(store_dir / db_name) in str(info.value)


def test_truncated_database_is_damaged(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir) as store:
        for i in range(300):
            store.writer.event(None, None, "filler", data={"i": i, "pad": "p" * 200})
    path = store_dir / "traces.db"
    data = path.read_bytes()
    assert len(data) > 8192
    path.write_bytes(data[:100] + b"\xff" * 100 + data[200:4096])  # header mangled and the file cut short
    with pytest.raises(StoreDamaged) as info:
        open_reader(store_dir)
    assert str(path) in str(info.value)


def test_open_reader_without_store_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        open_reader(tmp_path / "nowhere")
    message = str(info.value)
    assert f"no store at {tmp_path / 'nowhere'}" in message and "flightdeck run" in message and "--store" in message
    assert not (tmp_path / "nowhere").exists()


def test_resolve_store_dir_prefers_argument_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLIGHTDECK_STORE", "/from/env")
    assert resolve_store_dir("/from/arg") == Path("/from/arg")
    assert resolve_store_dir(None) == Path("/from/env")
    monkeypatch.delenv("FLIGHTDECK_STORE")
    assert resolve_store_dir(None) == Path(".flightdeck")


def test_migrations_apply_in_one_transaction(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path, isolation_level=None)
    good = "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (';');"
    bad = "CREATE TABLE b (y INTEGER); INSERT INTO nope VALUES (1);"
    with pytest.raises(StoreError) as info:
        migrate(conn, [good, bad], path)
    assert str(path) in str(info.value) and "nope" in str(info.value)
    # Neither migration is visible: the first one was rolled back with the failing second.
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    def data_migration(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO a VALUES ('from python')")

    assert migrate(conn, [good, data_migration], path) == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert [r[0] for r in conn.execute("SELECT x FROM a ORDER BY rowid")] == [";", "from python"]
    assert migrate(conn, [good, data_migration], path) == 2  # nothing left to do
    with pytest.raises(StoreTooNew):
        migrate(conn, [good], path)
    conn.close()


def test_split_statements_respects_strings_and_triggers() -> None:
    script = """
        CREATE TABLE t (x TEXT);
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN UPDATE t SET x = x || ';' WHERE rowid = new.rowid; END;
        INSERT INTO t VALUES ('a;b');
    """
    statements = list(split_statements(script))
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(ValueError):
        list(split_statements("INSERT INTO t VALUES ('never closed;"))


def test_control_migrations_can_be_appended(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    control = ControlDB(path)
    engine_id = control.register_engine(version="1")
    control.close()
    extended = [*CONTROL_MIGRATIONS, "CREATE TABLE store_test_appended (scope TEXT PRIMARY KEY, reason TEXT);"]
    control = ControlDB(path, migrations=extended)
    with control.transaction() as conn:
        conn.execute("INSERT INTO store_test_appended VALUES ('global', 'test')")
    assert control.query("SELECT reason FROM store_test_appended") == [{"reason": "test"}]
    assert [e.id for e in control.list_engines()] == [engine_id]
    control.close()
    assert rows(path, "PRAGMA user_version")[0][0] == len(extended)
    # The current code does not know the appended version: it refuses instead of guessing.
    with pytest.raises(StoreTooNew):
        ControlDB(path)


_TRY_OPEN = """
import sys
from engine.errors import StoreLocked
from engine.store import open_engine_store
try:
    store = open_engine_store(sys.argv[1])
except StoreLocked as exc:
    print(exc)
    sys.exit(exc.exit_code)
store.close()
print("opened")
"""


def test_second_engine_in_another_process_gets_store_locked(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir):
        holder = json.loads((store_dir / "engine.lock").read_text())
        assert holder["pid"] == os.getpid()
        child = run_python(_TRY_OPEN, str(store_dir))
        assert child.returncode == 3, child.stderr
        message = child.stdout.strip()
        assert message.startswith(f"store {store_dir} is in use by engine pid {os.getpid()} (")
        assert "started " in message
    child = run_python(_TRY_OPEN, str(store_dir))
    assert child.returncode == 0 and child.stdout.strip() == "opened", child.stderr


def test_second_engine_in_same_process_is_locked_too(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir), pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
        open_engine_store(store_dir)


def test_runs_left_running_are_abandoned_on_next_open(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with open_engine_store(store_dir) as store:
        w = store.writer
        w.run_started("r-open", "h", None, store.engine_id, "v", {}, 1, None, T0, None)
        w.span_started("s-root", "r-open", None, "run", None, "run", T0, None)
        w.span_started("s-done", "r-open", "s-root", "llm", "a", "chat", T0 + 1, None)
        w.span_ended("s-done", "r-open", "ok", T0 + 2)
        w.event("r-open", None, "note", data={"i": 1}, ts=T0 + 3)
        w.run_started("r-done", "h", None, store.engine_id, "v", {}, 1, None, T0, None)
        w.run_ended("r-done", "completed", T0 + 1)
        dead_engine = store.engine_id
    with open_engine_store(store_dir) as store:
        assert store.abandoned_runs == ["r-open"]
        engines = {e.id: e for e in store.control.list_engines()}
        assert engines[dead_engine].stopped is not None and engines[store.engine_id].alive
    with open_reader(store_dir) as reader:
        run = reader.get_run("r-open")
        assert run is not None
        assert run.status == "abandoned" and run.ended == T0 + 3  # last activity, not the time of recovery
        assert dead_engine in run.error
        assert reader.get_run("r-done").status == "completed"  # type: ignore[union-attr]
        statuses = {s.id: s.status for s in reader.spans("r-open")}
        assert statuses == {"s-root": "abandoned", "s-done": "ok"}
        ended = reader.events_after(0, run_id="r-open", kinds=["run.ended"])
        assert len(ended) == 1 and ended[0].data["status"] == "abandoned"
        assert run.last_seq == ended[0].seq == reader.last_seq()


def test_engine_store_can_be_closed_from_another_thread(tmp_path: Path) -> None:
    store = open_engine_store(tmp_path / "store")
    store.writer.event(None, None, "x")
    failures: list[BaseException] = []

    def close() -> None:
        try:
            store.close()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=close)
    thread.start()
    thread.join(timeout=30)
    assert failures == []
    with open_engine_store(tmp_path / "store"):  # the lock was released
        pass
