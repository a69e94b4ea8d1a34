"""Issue 16, engine registration on a Postgres store (pg/engine_registry.py): an engine's row with its heartbeat,
listed by `ControlAPI.engines()` and `flightdeck engines`, alive / stale / stopped by heartbeat age as on control.db;
a stable engine id that is live elsewhere is refused, and an engine coming back under its id closes out the runs its
earlier life left running, and no other engine's. A real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.controls.api import ControlAPI
from engine.errors import StoreLocked
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.control_db import PgControlDB
from engine.store.pg.engine_registry import claim_engine_id
from engine.store.pg.reader import PgTraceReader
from tests.store_pg.test_pg_cli import flightdeck


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def claim(url: str, engine_id: str, started: float, *, pid: int | None = None, host: str | None = None) -> list[str]:
    return claim_engine_id(pg(url), engine_id=engine_id, pid=os.getpid() if pid is None else pid,
                           host=host or socket.gethostname(), user="ops", version="9.9", started=started)


def test_an_engine_is_listed_alive_then_stale_then_stopped_by_its_heartbeat(pg_url: str) -> None:
    now = time.time()
    assert claim(pg_url, "eng-a", now) == []
    clock = FakeClock(epoch=now)
    with ControlAPI(pg_url, "alice", clock=clock) as api:
        [engine] = api.engines()
        assert (engine.id, engine.pid, engine.host, engine.user, engine.version) == (
            "eng-a", os.getpid(), socket.gethostname(), "ops", "9.9")
        assert engine.alive and not engine.stale and engine.stopped is None
        clock.advance(6)  # past STALE_AFTER_S without a heartbeat
        [engine] = api.engines()
        assert engine.stale and not engine.alive
        db = api.db
        assert isinstance(db, PgControlDB)
        db.heartbeat("eng-a")  # the engine's timer, at the clock's now
        [engine] = api.engines()
        assert engine.alive and engine.heartbeat == pytest.approx(now + 6)
        db.mark_stopped("eng-a")
        [engine] = api.engines()
        assert engine.stopped == pytest.approx(now + 6) and not engine.alive and not engine.stale


def test_a_store_no_engine_registered_on_lists_none(pg_url: str) -> None:
    with ControlAPI(pg_url, "alice") as api:  # only the control plane: no trace schema
        assert api.engines() == []


def test_an_id_live_elsewhere_is_refused_and_a_dead_ones_is_taken_with_its_leftover_runs(pg_url: str) -> None:
    now = time.time()
    claim(pg_url, "eng-a", now - 30, host="other-host", pid=4242)
    claim(pg_url, "eng-b", now, host="other-host", pid=4343)
    writer = PgBatchWriter(pg(pg_url))
    writer.run_started("run-a", "deal-desk", "h1", "eng-a", "0.1", {}, 0, None, now - 29, None)
    writer.run_started("run-b", "deal-desk", "h1", "eng-b", "0.1", {}, 0, None, now - 1, None)
    writer.close()
    # eng-b beats: under its id nothing else may start (the two would abandon each other's runs)
    with pytest.raises(StoreLocked, match="engine id 'eng-b' is in use .* pid 4343 on other-host"):
        claim(pg_url, "eng-b", now + 1)
    # eng-a's heartbeat is 30 s old: it is dead, its id is taken over with the run it left running
    assert claim(pg_url, "eng-a", now + 1) == ["run-a"]
    reader = PgTraceReader.connect(pg(pg_url))
    try:
        run_a, run_b = reader.get_run("run-a"), reader.get_run("run-b")
        assert run_a is not None and run_a.status == "abandoned" and "engine eng-a" in (run_a.error or "")
        assert run_b is not None and run_b.status == "running"  # another live engine's run is its own
    finally:
        reader.close()
    with ControlAPI(pg_url, "alice") as api:
        engines = {e.id: e for e in api.engines()}
    assert engines["eng-a"].pid == os.getpid() and engines["eng-a"].alive


def test_an_id_whose_process_is_gone_on_this_host_is_taken_at_once(pg_url: str) -> None:
    now = time.time()
    gone = 2**22 + 12345  # above the default pid_max: no such process
    claim(pg_url, "eng-a", now, pid=gone)
    assert claim(pg_url, "eng-a", now + 0.5) == []


def test_flightdeck_engines_lists_a_postgres_stores_engines(pg_url: str, tmp_path: Path) -> None:
    claim(pg_url, "eng-a", time.time())
    PgControlDB(pg(pg_url)).close()  # an engine creates the control plane too (read commands refuse a store without)
    proc = flightdeck("engines", "--json", "--store", pg_url)
    assert proc.returncode == 0, proc.stderr
    [engine] = json.loads(proc.stdout)
    assert engine["id"] == "eng-a" and engine["alive"] and engine["holds_lock"] is False
    table = flightdeck("engines", "--store", pg_url)
    assert table.returncode == 0 and "eng-a" in table.stdout and "alive" in table.stdout


def test_kill_waits_for_no_dead_engine_of_a_fleet_and_terminate_says_where_to_stop_one(pg_url: str) -> None:
    claim(pg_url, "eng-dead", time.time() - 60, host="other-host", pid=4242)  # never stopped: its host died
    PgControlDB(pg(pg_url)).close()
    kill = flightdeck("kill", "--all", "--reason", "drill", "--yes", "--wait-ack", "0.2", "--store", pg_url)
    assert kill.returncode == 0, kill.stderr
    assert "no engine is running on this store: the switch stays in force" in kill.stdout
    assert "live engine(s) it reaches" not in kill.stdout
    terminate = flightdeck("engines", "--terminate", "4242", "--reason", "wedged", "--yes", "--store", pg_url)
    assert terminate.returncode == 2
    assert "--terminate: stops the engine holding a store directory's lock" in terminate.stderr


def test_a_trace_schema_from_before_heartbeats_is_upgraded_with_its_engines(pg_url: str) -> None:
    from engine.store.pg.connection import connect
    from engine.store.pg.schema import PG_TRACES_MIGRATIONS, migrate

    conn = connect(pg(pg_url))
    try:
        migrate(conn, pg(pg_url), "traces", PG_TRACES_MIGRATIONS[:2])  # v2: engines without a heartbeat
        conn.execute('INSERT INTO engines (id, pid, host, "user", version, started, stopped) '
                     "VALUES ('old', 1, 'h', 'u', '0.1', 100, 150), ('older', 2, 'h', 'u', '0.1', 50, NULL)")
    finally:
        conn.close()
    claim(pg_url, "new", time.time())  # upgrades the schema first
    with ControlAPI(pg_url, "alice") as api:
        engines = {e.id: e for e in api.engines()}
    assert engines["old"].heartbeat == 150 and engines["older"].heartbeat == 50 and engines["older"].stale
    assert engines["new"].alive


def test_an_open_engine_store_heartbeats_on_its_timer_and_stops_on_close(pg_url: str) -> None:
    from engine.store import open_engine_store
    from tests.store_support import wait_until

    store = open_engine_store(pg(pg_url), heartbeat_interval=0.05)
    try:
        with ControlAPI(pg_url, "alice") as api:
            [first] = api.engines()
            wait_until(lambda: api.engines()[0].heartbeat > first.heartbeat, what="a heartbeat")
    finally:
        store.close()
    with ControlAPI(pg_url, "alice") as api:
        [engine] = api.engines()
    assert engine.id == store.engine_id and engine.stopped is not None and not engine.alive


def test_flightdeck_engines_shows_whether_each_postgres_engine_is_durable(pg_url: str) -> None:
    """The registry row carries what the engine publishes (trace schema v5): DURABLE is no longer blank on Postgres.
    A non-durable engine says `no` from registration on; a durable one what DurableRuns publishes once DBOS is open
    (`publish_durable`, sent by the next heartbeat); a row from before v5 stays blank (not known)."""
    from engine.store import open_engine_store
    from engine.store.pg.connection import connect
    from engine.store.pg.schema import PG_TRACES_MIGRATIONS, migrate
    from tests.store_support import wait_until

    conn = connect(pg(pg_url))
    try:
        migrate(conn, pg(pg_url), "traces", PG_TRACES_MIGRATIONS[:4])  # v4: no `published` yet
        conn.execute('INSERT INTO engines (id, pid, host, "user", version, started, heartbeat, stopped) '
                     "VALUES ('from-v4', 1, 'h', 'u', '0.1', 100, 150, 150)")
    finally:
        conn.close()
    durable = open_engine_store(pg(pg_url), heartbeat_interval=0.05, engine_id="ci/durable")
    plain = open_engine_store(pg(pg_url), heartbeat_interval=0.05, engine_id="ci/plain")
    try:
        durable.publish_durable(pickup=True, auto_resume=True)

        def listed() -> dict[str, dict[str, object]]:
            proc = flightdeck("engines", "--json", "--store", pg_url)
            assert proc.returncode == 0, proc.stderr
            return {str(e["id"]): e for e in json.loads(proc.stdout)}

        engines = wait_until(lambda: (found := listed())["ci/durable"]["durable"] is not None and found,
                             timeout=30, what="the durable engine's publication")
        assert engines["ci/durable"]["durable"] == {"durable": True, "pickup": True, "auto_resume": True}
        assert engines["ci/plain"]["durable"] == {"durable": False, "pickup": False, "auto_resume": False}
        assert engines["from-v4"]["durable"] is None
        table = flightdeck("engines", "--store", pg_url).stdout
        rows = {line.split()[0]: line for line in table.splitlines()[1:]}
        assert rows["ci/durable"].rstrip().endswith("yes, takes resume+reconcile"), table
        assert rows["ci/plain"].rstrip().endswith("no"), table
        assert rows["from-v4"].rstrip().endswith("stopped"), table  # DURABLE blank
    finally:
        durable.close()
        plain.close()


def test_flightdeck_engines_shows_a_postgres_engines_store_and_export_health(pg_url: str) -> None:
    """What a lock holder writes in engine.lock (the trace store's health, the exporter's drops) an engine wholly on
    Postgres publishes in its registry row: `flightdeck engines` shows it for every engine of the fleet."""
    from engine.store import open_engine_store
    from tests.store_support import wait_until

    store = open_engine_store(pg(pg_url), heartbeat_interval=0.05, engine_id="ci/degraded")
    try:
        store.publish_store_health("degraded", "could not commit: connection refused", 1000.0)
        store.publish_export_health("http://collector:4318", 10, 3, "open", "connection refused")

        def degraded() -> dict[str, object] | None:
            proc = flightdeck("engines", "--json", "--store", pg_url)
            [engine] = json.loads(proc.stdout)
            return engine if engine["store"] and engine["store"]["state"] == "degraded" else None

        engine = wait_until(degraded, timeout=30, what="the published store health")
        assert engine["store"] == {"state": "degraded", "error": "could not commit: connection refused",
                                   "since": 1000.0}
        assert engine["export"]["dropped_spans"] == 3 and engine["export"]["endpoint"] == "http://collector:4318"
        table = flightdeck("engines", "--store", pg_url).stdout
        assert "alive, store DEGRADED, export DROPPING" in table, table
        assert "trace store degraded since" in table and "3 span(s) dropped, 10 sent" in table
    finally:
        store.close()
    proc = flightdeck("engines", "--json", "--store", pg_url)
    [stopped] = json.loads(proc.stdout)
    assert stopped["store"] is None and stopped["export"] is None  # a stopped engine's health is history


def test_the_console_header_names_a_fleet_engine_whose_trace_store_is_degraded(pg_url: str) -> None:
    """The header's engines slot reads the published health of every live engine on Postgres (there is no
    engine.lock): `1 alive · store DEGRADED`, with the engine named in the alarm."""
    from console.widgets import header
    from engine.store import open_engine_store
    from tests.store_support import wait_until

    store = open_engine_store(pg(pg_url), heartbeat_interval=0.05, engine_id="ci/troubled")
    reader = PgTraceReader.connect(pg(pg_url))
    control = PgControlDB(pg(pg_url), read_only=True)
    try:
        def slot() -> header.SlotValue:
            return header.collect(reader, control, time.time(), None).values["engines"]

        assert slot().text == "1 alive"
        store.publish_store_health("degraded", "could not commit: connection refused", time.time())
        troubled = wait_until(lambda: (value := slot()).level == "crit" and value, timeout=30,
                              what="the header to show the published store health")
        assert troubled.text == "1 alive · store DEGRADED"
        assert troubled.alarm is not None and "engine ci/troubled on " in troubled.alarm
        assert "connection refused" in troubled.alarm
    finally:
        control.close()
        reader.close()
        store.close()
