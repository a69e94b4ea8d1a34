"""The control commands on a Postgres store (`--store postgresql://...`): kill, release, audit and audit verify work
as on a store directory, tampering is reported, and no output shows the URL's password. Real subprocesses, a real
PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.pg_support import EmbeddedPostgres
from tests.store_pg.test_pg_cli import SECRET, flightdeck
from tests.store_support import T0
from tests.trace_backends import TraceBackend


def _url_with_password(postgres_server: EmbeddedPostgres, pg_url: str) -> str:
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"ALTER USER postgres PASSWORD '{SECRET}'")  # trust auth: accepted, never needed
    return pg_url.replace("postgres@", f"postgres:{SECRET}@")


def test_kill_release_and_audit_verify_on_postgres(postgres_server: EmbeddedPostgres, pg_url: str,
                                                   tmp_path: Path) -> None:
    url = _url_with_password(postgres_server, pg_url)
    empty = flightdeck("audit", "verify", "--store", url)  # read-only: nothing recorded, nothing created
    assert empty.returncode == 3 and "no Flightdeck control plane in postgresql://postgres:***@" in empty.stderr

    kill = flightdeck("kill", "--all", "--reason", "runaway spend", "--yes", "--operator", "alice", "--store", url)
    assert kill.returncode == 0, kill.stderr
    assert "kill switch #1 set: global, mode kill, by alice" in kill.stdout
    assert "no engine is running on this store: the switch stays in force" in kill.stdout
    listed = flightdeck("kill", "--list", "--json", "--store", url)
    assert [(s["id"], s["scope"], s["operator"]) for s in json.loads(listed.stdout)] == [(1, "global", "alice")]

    release = flightdeck("release", "--id", "1", "--reason", "contained", "--operator", "bob", "--store", url)
    assert release.returncode == 0 and "released kill switch #1 (global, kill) by bob" in release.stdout
    log = json.loads(flightdeck("audit", "--json", "--store", url).stdout)
    assert [(r["actor"], r["action"], r["reason"]) for r in log] == [("bob", "release", "contained"),
                                                                    ("alice", "kill", "runaway spend")]
    verify = flightdeck("audit", "verify", "--store", url)
    assert verify.returncode == 0 and "audit log intact: 2 row(s), hash chain verified" in verify.stdout

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE audit SET reason = 'nothing to see' WHERE id = 1")
    tampered = flightdeck("audit", "verify", "--store", url)
    assert tampered.returncode == 1 and "audit log TAMPERED at row 1: row 1 was altered" in tampered.stderr
    everything = "".join(p.stdout + p.stderr for p in (empty, kill, listed, release, verify, tampered))
    assert SECRET not in everything


def test_kill_previews_the_runs_in_the_stores_trace_tables(pg_url: str, tmp_path: Path) -> None:
    writer = TraceBackend("postgres", tmp_path, pg_url).writer()
    writer.run_started("run-live", "deal-desk", "h1", "eng-1", "0.1", {}, 1, None, T0, None)
    writer.run_started("run-other", "support", "h2", "eng-1", "0.1", {}, 2, None, T0 + 1, None)
    writer.close()
    proc = flightdeck("kill", "--run", "run-l", "--reason", "looping", "--yes", "--store", pg_url)
    assert proc.returncode == 0, proc.stderr
    assert "kill run:run-live would stop: 1 run(s)" in proc.stdout
    assert "kill switch #1 set: run:run-live, mode kill" in proc.stdout
    missing = flightdeck("kill", "--run", "nope", "--reason", "x", "--yes", "--store", pg_url)
    assert missing.returncode == 2 and "--run: no run 'nope' in store postgresql://" in missing.stderr


def test_incidents_on_postgres(pg_url: str) -> None:
    from engine.controls.api import ControlAPI
    from engine.runbooks.incidents import IncidentStore

    none = flightdeck("incidents", "--store", pg_url)
    assert none.returncode == 3 and "no Flightdeck control plane" in none.stderr  # a reader creates nothing
    with ControlAPI(pg_url, "engine:e1") as api:  # what an engine's runbook watchdog does
        incident, opened = IncidentStore(api.db).open_or_update(
            runbook="looping-agent", title="An agent is stuck in a loop", severity="sev2", apply_mode="suggest",
            scope="agent:planner", readings=[{"signal": "loop_detected", "value": 3}], context={},
            summary="loop_detected=3", actor="runbook:looping-agent", engine_id="e1")
    assert opened
    listed = json.loads(flightdeck("incidents", "--json", "--store", pg_url).stdout)
    assert [(i["id"], i["status"], i["state"]) for i in listed] == [(incident.id, "open", "firing")]
    ack = flightdeck("incident", "ack", incident.id[4:], "--reason", "on it", "--operator", "alice", "--store", pg_url)
    assert ack.returncode == 0 and f"acknowledged {incident.id}" in ack.stdout
    resolve = flightdeck("incident", "resolve", incident.id, "--reason", "fixed", "--operator", "alice",
                         "--store", pg_url)
    assert resolve.returncode == 0, resolve.stderr
    shown = json.loads(flightdeck("incident", "show", incident.id, "--json", "--store", pg_url).stdout)
    assert [e["kind"] for e in shown["timeline"]] == ["detected", "acknowledged", "resolved"]
    log = json.loads(flightdeck("audit", "--json", "--store", pg_url).stdout)
    assert [r["action"] for r in log] == ["incident_resolve", "incident_ack", "incident_opened"]
