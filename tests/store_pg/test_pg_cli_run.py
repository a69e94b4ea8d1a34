"""Issue 16, `flightdeck run --store postgresql://...`: a real `flightdeck run` process wholly on a Postgres store
(no directory anywhere), its runs read back by `runs` and `trace`; a kill switch set by an operator in this process
with ControlAPI on the same database stops it (exit 6, as on a directory); Postgres unreachable at start is one line
and exit 3 with the password masked; a bad FLIGHTDECK_ENGINE_ID is exit 2 (durable runs: test_pg_durable_cli.py). A real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engine.controls.api import ControlAPI
from engine.errors import StoreError
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.reader import PgTraceReader
from tests.engine.test_controls_process import BUSY
from tests.pg_support import EmbeddedPostgres, free_port
from tests.store_pg.test_pg_cli import ROOT, SECRET, flightdeck
from tests.store_support import wait_until

DEAL = {"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5}


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def test_run_on_postgres_records_the_run_there(pg_url: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "console.cli", "run", "deal-desk", "--store", pg_url, "--speed", "0",
                           "--input", json.dumps(DEAL), "--repeat", "3", "--json"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == 3 and {r["status"] for r in results} == {"completed"}
    assert list(tmp_path.iterdir()) == []  # no store directory was made in the working directory
    runs = flightdeck("runs", "--json", "--store", pg_url)
    assert runs.returncode == 0, runs.stderr
    assert {r["id"] for r in json.loads(runs.stdout)} == {r["id"] for r in results}
    trace = flightdeck("trace", results[0]["id"], "--store", pg_url)
    assert trace.returncode == 0 and "deal-desk" in trace.stdout, trace.stderr
    engines = flightdeck("engines", "--json", "--store", pg_url)
    [engine] = json.loads(engines.stdout)
    assert engine["stopped"] is not None and not engine["alive"]


def test_a_kill_switch_from_another_process_stops_flightdeck_run_on_postgres(pg_url: str, tmp_path: Path) -> None:
    hierarchy = tmp_path / "busy.yaml"
    hierarchy.write_text(BUSY)
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(hierarchy), "--store", pg_url,
                               "--repeat", "20", "--concurrency", "20", "--json"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_ENGINE_ID": "ci/run-1"})
    try:
        readers: list[PgTraceReader] = []

        def store_ready() -> bool:  # the engine creates the schema as it starts
            try:
                readers.append(PgTraceReader.connect(pg(pg_url)))
            except StoreError:
                return False
            return True

        wait_until(store_ready, timeout=60, what="the store")
        reader = readers[0]
        wait_until(lambda: len([s for s in reader.running_spans() if s.kind == "agent"]) >= 20, timeout=60,
                   what="20 runs in flight")
        with ControlAPI(pg_url, "oncall") as api:
            assert [e.id for e in api.engines() if e.alive] == ["ci/run-1"]
            switch = api.set_kill("global", None, "kill", "incident: runaway fleet")
            acked = wait_until(lambda: api.kill_switch(switch.id).acked, timeout=30, what="the acknowledgement")
            assert api.kill_switch(switch.id).acked_by == "ci/run-1"
        out, err = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.communicate()
    assert engine.returncode == 6, err  # a run was killed: the same exit code as on a directory
    assert "Traceback" not in err
    results = json.loads(out)
    assert len(results) == 20 and {r["status"] for r in results} == {"killed"}
    assert acked - switch.created < 5  # bounded here; the benchmark measures the percentiles
    assert not reader.running_spans()
    reader.close()


def test_postgres_down_at_start_is_one_line_exit_3_password_masked(postgres_server: EmbeddedPostgres) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/fleet"
    proc = flightdeck("run", "deal-desk", "--store", url, "--speed", "0")
    assert proc.returncode == 3, proc.stderr
    assert "cannot connect to the Postgres store postgresql://postgres:***@127.0.0.1" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    env = flightdeck("run", "deal-desk", "--speed", "0", env={"FLIGHTDECK_STORE": url})
    assert env.returncode == 3 and SECRET not in env.stderr + env.stdout


def test_a_bad_engine_id_is_refused_naming_the_variable(pg_url: str) -> None:
    bad_id = flightdeck("run", "deal-desk", "--store", pg_url, env={"FLIGHTDECK_ENGINE_ID": "two words"})
    assert bad_id.returncode == 2 and "FLIGHTDECK_ENGINE_ID: expected" in bad_id.stderr


def test_the_kill_command_names_the_live_engine_it_reaches(pg_url: str, tmp_path: Path) -> None:
    hierarchy = tmp_path / "busy.yaml"
    hierarchy.write_text(BUSY)
    engine = subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(hierarchy), "--store", pg_url,
                               "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_ENGINE_ID": "ci/run-2"})
    try:
        def running() -> bool:
            try:
                with PgTraceReader.connect(pg(pg_url)) as reader:
                    return bool(reader.running_spans())
            except StoreError:
                return False

        wait_until(running, timeout=60, what="a run in flight")
        started = time.monotonic()
        kill = flightdeck("kill", "--all", "--reason", "drill", "--yes", "--store", pg_url)
        assert kill.returncode == 0, kill.stderr
        assert "live engine(s) it reaches: ci/run-2 (pid" in kill.stdout
        assert "acknowledged by 1 of 1 live engine(s): ci/run-2 at" in kill.stdout, kill.stdout
        assert time.monotonic() - started < 30
        engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.communicate()
    assert engine.returncode == 6


def test_one_kill_switch_stops_two_engines_on_one_database(pg_url: str, tmp_path: Path) -> None:
    hierarchy = tmp_path / "busy.yaml"
    hierarchy.write_text(BUSY)
    engines = [subprocess.Popen([sys.executable, "-m", "console.cli", "run", str(hierarchy), "--store", pg_url,
                                 "--repeat", "3", "--concurrency", "3", "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_ENGINE_ID": f"ci/{name}"})
               for name in ("a", "b")]
    try:
        def both_running() -> bool:
            try:
                with PgTraceReader.connect(pg(pg_url)) as reader:
                    return len({s.run_id for s in reader.running_spans() if s.kind == "agent"}) >= 6
            except StoreError:
                return False

        wait_until(both_running, timeout=90, what="both engines' runs in flight")
        kill = flightdeck("kill", "--all", "--reason", "fleet drill", "--yes", "--wait-ack", "30", "--store", pg_url)
        assert kill.returncode == 0, kill.stderr
        reached = kill.stdout.split("live engine(s) it reaches: ", 1)[1].splitlines()[0]
        assert "ci/a (pid" in reached and "ci/b (pid" in reached
        # Each engine records its own acknowledgement (before, the second found the switch acked and said nothing).
        acked = kill.stdout.split("acknowledged by ", 1)[1].splitlines()[0]
        assert acked.startswith("2 of 2 live engine(s): ") and "ci/a at" in acked and "ci/b at" in acked, acked
        listed = flightdeck("kill", "--list", "--json", "--store", pg_url)
        assert {a["engine_id"] for a in json.loads(listed.stdout)[0]["acks"]} == {"ci/a", "ci/b"}
        outputs = [engine.communicate(timeout=60) for engine in engines]
    finally:
        for engine in engines:
            if engine.poll() is None:
                engine.kill()
                engine.communicate()
    for engine, (out, err) in zip(engines, outputs, strict=True):
        assert engine.returncode == 6, err
        assert {r["status"] for r in json.loads(out)} == {"killed"}
