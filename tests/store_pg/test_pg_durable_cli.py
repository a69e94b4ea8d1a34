"""Issue 16, `flightdeck run --durable --store postgresql://...`: durable runs on an engine wholly on Postgres (no
store directory anywhere). An idempotency key runs once across processes; a SIGKILLed engine's runs are taken over
by another engine (another FLIGHTDECK_ENGINE_ID) once its heartbeat in the engines registry stops, with no side
effect run twice; an engine started with --no-resume takes nothing. Real `flightdeck run` processes, a real
PostgreSQL on 127.0.0.1, the example tools' ledger counting every side effect across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.durable.host import SYSTEM_SCHEMA
from tests.store_pg.pg_durable_support import assert_each_side_effect_once, ledger_lines, query
from tests.store_pg.test_pg_cli import ROOT
from tests.store_support import wait_until

DEAL = json.dumps({"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5})
TAKEOVER_AFTER_S = "2"


def run_cli(url: str, ledger: Path, engine_id: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_EXAMPLE_LEDGER": str(ledger),
           "FLIGHTDECK_ENGINE_ID": engine_id, "FLIGHTDECK_TAKEOVER_AFTER": TAKEOVER_AFTER_S}
    return subprocess.Popen([sys.executable, "-m", "console.cli", "run", "deal-desk", "--durable", "--store", url,
                             "--input", DEAL, "--json", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    return out, err


def test_an_idempotency_key_runs_once_across_processes_on_postgres(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    first, _ = finish(run_cli(pg_url, ledger, "ci/key-1", "--speed", "0", "--idempotency-key", "order-7"))
    again, _ = finish(run_cli(pg_url, ledger, "ci/key-2", "--speed", "0", "--idempotency-key", "order-7"))
    [one], [two] = json.loads(first), json.loads(again)
    assert one["id"] == two["id"] and one["status"] == two["status"] == "completed"
    assert_each_side_effect_once(ledger)
    statuses = dict(query(pg_url, f"SELECT workflow_uuid, status FROM {SYSTEM_SCHEMA}.workflow_status"))
    assert statuses[one["id"]] == "SUCCESS"
    assert list(tmp_path.iterdir()) == [ledger]  # no store directory, no durable.db


def _heartbeat_age(url: str, engine_id: str) -> float:
    rows = query(url, "SELECT heartbeat FROM engines WHERE id = %s", (engine_id,))
    return time.time() - float(rows[0][0]) if rows else 0.0


@pytest.mark.slow
def test_a_sigkilled_durable_engine_on_postgres_is_taken_over_by_another(pg_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    doomed = run_cli(pg_url, ledger, "ci/doomed", "--repeat", "4", "--concurrency", "3", "--speed", "100")
    try:
        wait_until(lambda: doomed.poll() is not None or len(ledger_lines(ledger)) >= 2, timeout=120,
                   what="two side effects")
        assert doomed.poll() is None, doomed.communicate()[1][-3000:]
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.communicate()
    interrupted = {run for run, status in query(pg_url, "SELECT id, status FROM runs") if status == "running"}
    assert interrupted, "the kill landed after every run had ended: nothing was interrupted"
    wait_until(lambda: _heartbeat_age(pg_url, "ci/doomed") > float(TAKEOVER_AFTER_S) + 0.5, timeout=30,
               what="the dead engine's heartbeat to go stale")
    # An engine with auto-resume off claims nothing: the dead engine's runs wait for one that carries them on.
    finish(run_cli(pg_url, ledger, "ci/no-resume", "--speed", "0", "--no-resume"))
    assert not query(pg_url, "SELECT 1 FROM events WHERE kind = 'run.taken_over'")
    assert not query(pg_url, "SELECT 1 FROM durable_takeovers WHERE engine_id = 'ci/doomed'")
    # Another engine takes them on start (the dead one's heartbeat is stale) and waits for them before it exits.
    _out, err = finish(run_cli(pg_url, ledger, "ci/taker", "--speed", "0"))
    assert "taking over" in err and "ci/doomed" in err
    runs = dict(query(pg_url, "SELECT id, status FROM runs"))
    for run_id in interrupted:
        assert runs[run_id] in ("completed", "needs_reconcile"), (run_id, runs[run_id], err[-2000:])
    events = query(pg_url, "SELECT run_id, data FROM events WHERE kind = 'run.taken_over'")
    assert sorted(run for run, _data in events) == sorted(interrupted)  # each taken once
    assert {json.loads(data)["engine_id"] for _run, data in events} == {"ci/taker"}
    assert query(pg_url, "SELECT taken_by, done FROM durable_takeovers WHERE engine_id = 'ci/doomed'") == [
        ("ci/taker", True)]
    assert_each_side_effect_once(ledger)


@pytest.mark.slow
def test_an_engine_restarted_under_its_id_carries_its_runs_on_but_not_one_an_operator_killed(
        pg_url: str, tmp_path: Path) -> None:
    from engine.controls.api import ControlAPI
    from engine.store.location import parse_store_location

    ledger = tmp_path / "ledger.jsonl"
    doomed = run_cli(pg_url, ledger, "ci/stable", "--repeat", "4", "--concurrency", "3", "--speed", "100")
    try:
        wait_until(lambda: doomed.poll() is not None or len(ledger_lines(ledger)) >= 2, timeout=120,
                   what="two side effects")
        assert doomed.poll() is None, doomed.communicate()[1][-3000:]
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.communicate()
    interrupted = sorted(run for run, status in query(pg_url, "SELECT id, status FROM runs") if status == "running")
    assert len(interrupted) >= 2, "the kill landed too late: fewer than two runs were interrupted"
    victim, carried = interrupted[0], set(interrupted[1:])
    with ControlAPI(parse_store_location(pg_url), "test-operator") as api:
        api.set_kill("run", victim, "kill", "leave it stopped")
    # Back under the same id at once (its pid is gone on this host): DBOS's own start-up recovery finds nothing
    # (a fresh executor id per life); the engine carries its earlier life's runs on itself, checked.
    _out, err = finish(run_cli(pg_url, ledger, "ci/stable", "--speed", "0"))
    taken = {run for (run,) in query(pg_url, "SELECT run_id FROM events WHERE kind = 'run.taken_over'")}
    assert taken == carried, err[-2000:]
    (data,) = query(pg_url, "SELECT data FROM events WHERE kind = 'run.not_resumed' AND run_id = %s", (victim,))[0]
    assert "kill switch" in json.loads(data)["reason"]
    statuses = dict(query(pg_url, f"SELECT workflow_uuid, status FROM {SYSTEM_SCHEMA}.workflow_status"))
    assert statuses[victim] == "PENDING"
    runs = dict(query(pg_url, "SELECT id, status FROM runs"))
    assert all(runs[run] in ("completed", "needs_reconcile") for run in carried), runs
    assert_each_side_effect_once(ledger)


def test_a_bad_takeover_threshold_is_refused_naming_the_variable_before_anything_is_registered(pg_url: str,
                                                                                                tmp_path: Path) -> None:
    for command in (["run", "deal-desk", "--durable"], ["serve", "--hierarchy", "deal-desk", "--listen", "127.0.0.1:0"]):
        proc = subprocess.run([sys.executable, "-m", "console.cli", *command, "--store", pg_url], cwd=ROOT, text=True,
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "FLIGHTDECK_TAKEOVER_AFTER": "soon"})
        assert proc.returncode == 2, proc.stderr
        assert "FLIGHTDECK_TAKEOVER_AFTER: expected seconds between 1 and 3600, got 'soon'" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not query(pg_url, "SELECT 1 FROM pg_tables WHERE tablename = 'engines'")  # nothing was written
