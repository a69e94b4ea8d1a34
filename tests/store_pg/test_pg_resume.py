"""Issue 16, the last control gap: `flightdeck resume`, `reconcile` and `retry --from` on a Postgres store. There no
engine holds the store: the resume is an audit row in the database's control plane, and one of the live durable
engines registered there (`durable_pickup`, engine/store/pg/durable_takers.py) takes it, exactly once; with none live
the command writes nothing and exits 3. A retry runs in the command's own engine on the database, as on a directory.
Real `flightdeck` processes, two real `flightdeck serve` engines, a real PostgreSQL on 127.0.0.1, the test tools'
ledger (tests/durable_tools.py) counting every side effect with the pid that made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.durable_takers import live_takers
from tests.durable_support import Charging, flightdeck
from tests.serve.serve_process import Serve, until
from tests.store_pg.pg_durable_support import query

pytestmark = pytest.mark.slow

FLEET = "hierarchies:\n  - file: quick.yaml\n"
TAKEOVER_AFTER_S = "2"  # a SIGKILLed engine's runs are taken over by a live one this long after its last beat


def location(url: str) -> PostgresLocation:
    found = parse_store_location(url)
    assert isinstance(found, PostgresLocation)
    return found


def audit(url: str) -> list[tuple[str, str, dict[str, object]]]:
    with ControlAPI(url, "reader", create=False, read_only=True) as api:
        return [(e.action, e.target or "", e.after if isinstance(e.after, dict) else {})
                for e in reversed(api.audit_log(limit=10_000))]


def budget_stopped(charging: Charging, url: str) -> str:
    """A durable run on the Postgres store stopped by its budget after its first charge (of two)."""
    stopped = flightdeck("run", str(charging.path), "--durable", "--speed", "0", "--store", url, "--budget",
                         "tool_calls=1", "--json", env=charging.env)
    assert stopped.returncode == 4, stopped.stderr[-3000:]
    [run] = json.loads(stopped.stdout)
    assert run["status"] == "budget_exceeded"
    assert [line["amount"] for line in charging.lines()] == [5]
    return str(run["id"])


def start_engines(tmp_path: Path, url: str, charging: Charging, count: int) -> list[Serve]:
    engines = []
    for n in range(count):
        workdir = tmp_path / f"serve-{n}"
        workdir.mkdir()
        serve = Serve(workdir, fleet=FLEET, store=url, environ={"FLIGHTDECK_ENGINE_ID": f"fleet/{n}",
                                                                "FLIGHTDECK_TAKEOVER_AFTER": TAKEOVER_AFTER_S})
        serve.ledger = charging.ledger  # one ledger for the whole fleet and the CLI's runs
        engines.append(serve)
    try:
        for serve in engines:
            serve.start()
        until(lambda: len(live_takers(location(url))) == count, what=f"{count} durable engines taking requests")
    except BaseException:
        for serve in engines:
            serve.kill()
        raise
    return engines


def test_resume_on_postgres_is_taken_once_by_one_of_two_live_engines(tmp_path: Path, pg_url: str) -> None:
    charging = Charging(tmp_path)
    run_id = budget_stopped(charging, pg_url)
    resume = ("resume", run_id, "--store", pg_url, "--budget", "tool_calls=5", "--reason", "limit raised", "--yes")

    # No live durable engine on the database: exit 3, saying how to start one, and nothing written.
    before = audit(pg_url)
    alone = flightdeck(*resume)
    assert alone.returncode == 3, alone.stderr
    assert "no live durable engine on the Postgres store postgresql://" in alone.stderr
    assert "nothing was written" in alone.stderr and "flightdeck serve --store" in alone.stderr
    assert "Traceback" not in alone.stderr
    assert audit(pg_url) == before

    engines = start_engines(tmp_path, pg_url, charging, 2)
    try:
        listed = flightdeck("engines", "--store", pg_url, "--json")
        assert listed.returncode == 0, listed.stderr
        durable = {e["id"]: e["durable"] for e in json.loads(listed.stdout) if e["alive"]}
        assert durable == {f"fleet/{n}": {"durable": True, "pickup": True, "auto_resume": True} for n in (0, 1)}
        resumed = flightdeck(*resume, "--json")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "will NOT run again" in resumed.stderr and "took run" in resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "completed"
        # Recorded once, taken once, by one of the two; the recorded charge did not run again, the second ran once.
        rows = [(action, after) for action, target, after in audit(pg_url) if target == f"run:{run_id}"]
        assert [action for action, _after in rows] == ["resume", "resume_taken"], rows
        taker = rows[1][1]["engine_id"]
        assert taker in ("fleet/0", "fleet/1")
        assert [line["amount"] for line in charging.lines()] == [5, 7]
        carrier = engines[int(str(taker)[-1])]
        assert carrier.proc is not None and charging.lines()[1]["pid"] == carrier.proc.pid
        assert query(pg_url, "SELECT status, resumed FROM runs WHERE id = %s", (run_id,)) == [("completed", 1)]
        listed = flightdeck("reconcile", "--store", pg_url)
        assert listed.returncode == 0 and "no run is waiting for reconcile" in listed.stdout, listed.stderr
    finally:
        for serve in engines:
            serve.stop()
    # Stopped engines take nothing: the next resume finds none live.
    assert live_takers(location(pg_url)) == []


def test_retry_from_a_span_on_postgres_runs_in_the_commands_own_engine(tmp_path: Path, pg_url: str) -> None:
    charging = Charging(tmp_path)
    ran = flightdeck("run", str(charging.path), "--durable", "--speed", "0", "--store", pg_url, "--json",
                     env=charging.env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_id = json.loads(ran.stdout)[0]["id"]
    spans = query(pg_url, "SELECT id, attributes FROM spans WHERE run_id = %s AND kind = 'tool' ORDER BY started",
                  (run_id,))
    second = next(span for span, attrs in spans if json.loads(attrs)["args"] == {"amount": 7})

    retried = flightdeck("retry", run_id[:8], "--from", second, "--store", pg_url, "--reason", "redo the second",
                         "--yes", "--speed", "0", "--json", env=charging.env)
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert "Traceback" not in retried.stderr
    out = json.loads(retried.stdout)
    assert (out["status"], out["retry_of"], out["retry_from"]) == ("completed", run_id, second)
    # The first charge replayed from the original (not charged again); the second ran again under the new run's key.
    assert [(line["amount"], str(line["idempotency_key"]).split(":")[0]) for line in charging.lines()] == [
        (5, run_id), (7, run_id), (7, out["id"])]
    [(action, after)] = [(a, after) for a, target, after in audit(pg_url) if target == f"run:{run_id}"]
    assert action == "retry" and after["new_run_id"] == out["id"]
    # A span of another run is refused naming --from, nothing written.
    refused = flightdeck("retry", out["id"], "--from", second, "--store", pg_url, "--reason", "x", "--yes")
    assert refused.returncode == 2 and "--from" in refused.stderr and f"span of run {run_id}" in refused.stderr
    assert len(audit(pg_url)) == 1


def test_reconcile_on_postgres_is_taken_once_by_one_of_two_live_engines(tmp_path: Path, pg_url: str) -> None:
    """A `flightdeck run --durable` SIGKILLed in its first charge: a live engine takes the run over and stops it
    needs_reconcile (the charge's outcome is unknown); the operator's decision is taken by one engine, at once."""
    charging = Charging(tmp_path)
    engines = start_engines(tmp_path, pg_url, charging, 2)
    try:
        crashed = flightdeck("run", str(charging.path), "--durable", "--speed", "0", "--store", pg_url,
                             env={**charging.env, "FLIGHTDECK_TEST_CRASH_MARKER": str(charging.marker)})
        assert crashed.returncode == -9, crashed.stderr[-3000:]
        [(run_id,)] = query(pg_url, "SELECT id FROM runs")
        until(lambda: query(pg_url, "SELECT status FROM runs WHERE id = %s", (run_id,)) == [("needs_reconcile",)],
              timeout=60, what="the run taken over and stopped needs_reconcile")
        listed = flightdeck("reconcile", "--store", pg_url, "--json")
        assert listed.returncode == 0, listed.stderr
        assert [entry["run_id"] for entry in json.loads(listed.stdout)] == [run_id]

        decided = flightdeck("reconcile", run_id, "--again", "--reason", "no charge at the PSP", "--store", pg_url)
        assert decided.returncode == 0, decided.stderr[-3000:]
        assert "Traceback" not in decided.stderr
        assert f"took run {run_id}" in decided.stdout and "it is running again there" in decided.stdout
        until(lambda: query(pg_url, "SELECT status FROM runs WHERE id = %s", (run_id,)) == [("completed",)],
              timeout=60, what="the reconciled run to complete")
        rows = [(action, after) for action, target, after in audit(pg_url) if target == f"run:{run_id}"]
        assert [action for action, _after in rows] == ["reconcile", "resume_taken"], rows
        assert rows[1][1]["engine_id"] in ("fleet/0", "fleet/1")
        # The decided charge ran once more (same key, attempt 1), the second charge once: nothing twice.
        assert [(line["amount"], line["attempt"]) for line in charging.lines()] == [(5, 0), (5, 1), (7, 0)]
    finally:
        for serve in engines:
            serve.stop()
