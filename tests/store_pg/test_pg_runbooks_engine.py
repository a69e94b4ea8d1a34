"""Issue 16: the runbook engine inside an engine wholly on a Postgres store. A shipped runbook (tool-failure-storm)
fires on the engine's committed events; the incident, the runbook's audited actions and the page are in the
Postgres control plane, visible through `flightdeck incidents --store postgresql://...`; two engines on one database
that both detect the storm share ONE incident and ONE application (the incident key is unique in the database and
applying checks what is in force under the control plane's write lock). Real engines, a real PostgreSQL and a real
HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.clock import FakeClock
from engine.runbooks.runtime import RunbookEngine
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store, open_trace_reads
from engine.store.location import PostgresLocation, parse_store_location
from tests.engine.test_runbooks_shipped import SHIPPED, STORMY, pd_trigger
from tests.engine_helpers import write_hierarchy
from tests.fakes.receiver import Receiver, receiver  # noqa: F401 (receiver is a fixture)
from tests.store_pg.test_pg_cli import flightdeck

ROUTING_KEY = "R0UTING-KEY-0123456789abcdef"


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def config_file(tmp_path: Path, receiver: Receiver) -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(f"""
[notifiers.oncall]
type = "pagerduty"
routing_key_env = "FD_TEST_ROUTING_KEY"
url = "{receiver.url('/pd')}"
""")
    return path


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def detections(url: str) -> list[dict[str, Any]]:
    reader = open_trace_reads(pg(url))
    try:
        return [e.data for e in reader.events_after(0, limit=100_000, kinds=["runbook.detected"])]
    finally:
        reader.close()


async def storm(engine: Engine, hierarchy: Any) -> None:
    await engine.run_many(hierarchy, [RunRequest(input={"task": "go"})], concurrency=1)
    await anyio.to_thread.run_sync(engine.writer.flush)
    assert engine.runbooks is not None
    assert await anyio.to_thread.run_sync(engine.runbooks.settle, 10.0), "the runbook engine did not settle"


@pytest.mark.anyio
async def test_a_shipped_runbook_fires_in_an_engine_on_postgres(pg_url: str, tmp_path: Path, receiver: Receiver,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.chdir(tmp_path)
    hierarchy = write_hierarchy(tmp_path, STORMY)
    store = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config_file(tmp_path, receiver))
    try:
        async with Engine(store, latency_scale=0.0, runbooks=[SHIPPED["tool-failure-storm"]]) as engine:
            await storm(engine, hierarchy)
            assert engine.runbooks.errors == []
    finally:
        store.close()

    (incident,) = rows(pg_url, "SELECT * FROM incidents WHERE runbook = 'tool-failure-storm'")
    assert (incident["scope"], incident["engine_id"]) == ("tool:fail", store.engine_id)
    assert json.loads(incident["context"])["hierarchy"] == "stormy"
    (override,) = rows(pg_url, "SELECT key, action, source FROM breaker_overrides")
    assert override == {"key": "tool:fail", "action": "force_open", "source": "runbook:tool-failure-storm"}
    (flag,) = rows(pg_url, "SELECT name, value, target FROM flags")
    assert flag == {"name": "tools.side_effects", "value": "off", "target": "stormy"}
    audited = [(r["actor"], r["action"]) for r in rows(pg_url, "SELECT actor, action FROM audit ORDER BY id")]
    assert ("runbook:tool-failure-storm", "incident_opened") in audited
    assert ("runbook:tool-failure-storm", "runbook_applied") in audited
    kinds = [r["kind"] for r in rows(pg_url, "SELECT kind FROM incident_events WHERE incident_id = %s ORDER BY id",
                                     (incident["id"],))]
    assert kinds[:3] == ["detected", "applied", "paged"]
    assert pd_trigger(receiver, incident["id"])["payload"]["severity"] == "error"
    assert [d["incident"] for d in detections(pg_url)] == [incident["id"]]  # its events carry global numbers

    listed = flightdeck("incidents", "--json", "--store", pg_url)
    assert listed.returncode == 0, listed.stderr
    assert [(i["id"], i["runbook"], i["scope"]) for i in json.loads(listed.stdout)] == \
        [(incident["id"], "tool-failure-storm", "tool:fail")]
    verify = flightdeck("audit", "verify", "--store", pg_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.anyio
async def test_two_engines_detecting_the_same_storm_share_one_incident_and_one_application(
        pg_url: str, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.chdir(tmp_path)
    hierarchy = write_hierarchy(tmp_path, STORMY)
    config = config_file(tmp_path, receiver)
    first = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config)
    second = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config)
    runbooks = [SHIPPED["tool-failure-storm"]]
    try:
        async with Engine(first, latency_scale=0.0, runbooks=runbooks) as a, \
                Engine(second, latency_scale=0.0, runbooks=runbooks) as b:
            async with anyio.create_task_group() as tg:  # both see the storm in their own events at the same time
                tg.start_soon(storm, a, hierarchy)
                tg.start_soon(storm, b, hierarchy)
            assert a.runbooks.errors == [] and b.runbooks.errors == []
    finally:
        first.close()
        second.close()

    (incident,) = rows(pg_url, "SELECT id, fired FROM incidents")
    seen = detections(pg_url)
    assert len(seen) == 2 and {d["incident"] for d in seen} == {incident["id"]}  # each engine detected it
    assert sorted(d["opened"] for d in seen) == [False, True] and incident["fired"] == 2
    assert len(rows(pg_url, "SELECT id FROM runbook_applications")) == 1
    assert len(rows(pg_url, "SELECT id FROM breaker_overrides")) == 1
    texts = [(r["kind"], r["text"]) for r in rows(pg_url, "SELECT kind, text FROM incident_events "
                                                          "WHERE kind IN ('detected', 'applied') ORDER BY id")]
    assert [t for k, t in texts if k == "detected" and t.startswith("fired again: ")]  # the second engine's
    assert len([t for k, t in texts if k == "applied" and t.startswith("applied tool-failure-storm")]) == 1
    assert len([r for r in receiver.on("/pd") if r.json["event_action"] == "trigger"]) == 1  # paged once


@pytest.mark.anyio
async def test_the_engine_that_opened_the_incident_undoes_it_and_another_takes_over_when_it_stopped(
        pg_url: str, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FD_TEST_ROUTING_KEY", ROUTING_KEY)
    monkeypatch.chdir(tmp_path)
    config = config_file(tmp_path, receiver)
    opener = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config)
    other = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config)
    seen: list[tuple[str, Any]] = []
    clock = FakeClock(epoch=time.time())  # the other engine's runbook clock: its rollback is long due
    watcher = RunbookEngine.for_store(other, tracer_event=lambda run, span, kind, **kw: seen.append((kind, kw)),
                                      clock=clock, runbooks=[SHIPPED["tool-failure-storm"]], tick=0.05)
    watcher.start()
    try:
        async with Engine(opener, latency_scale=0.0, runbooks=[SHIPPED["tool-failure-storm"]]) as engine:
            await storm(engine, write_hierarchy(tmp_path, STORMY))
            clock.advance(3600)  # past the breaker's ten minutes and the thirty-minute rollback
            assert await anyio.to_thread.run_sync(watcher.drain, 10.0)
            (application,) = rows(pg_url, "SELECT rolled_back FROM runbook_applications")
            assert application["rolled_back"] is None  # the opener is alive: its job, on its own view of the signal
            assert [o["action"] for o in rows(pg_url, "SELECT action FROM breaker_overrides")] == ["force_open"]
        opener.close()  # stopped: any live engine may undo it now
        clock.advance(1)
        assert await anyio.to_thread.run_sync(watcher.drain, 10.0)
    finally:
        await anyio.to_thread.run_sync(watcher.stop)
        opener.close()
        other.close()
    assert watcher.errors == []
    (application,) = rows(pg_url, "SELECT rolled_back, rolled_back_by FROM runbook_applications")
    assert application["rolled_back"] is not None and application["rolled_back_by"] == "runbook:tool-failure-storm"
    assert [o["action"] for o in rows(pg_url, "SELECT action FROM breaker_overrides ORDER BY id")] == \
        ["force_open", "reset"]
    assert [kind for kind, _ in seen if kind.startswith("runbook.")] == ["runbook.action_expired",
                                                                         "runbook.rolled_back"]


def test_flightdeck_run_on_postgres_opens_the_incident_a_shipped_runbook_detects(pg_url: str, tmp_path: Path,
                                                                                  receiver: Receiver) -> None:
    hierarchy = tmp_path / "stormy.yaml"
    hierarchy.write_text(STORMY)
    done = flightdeck("run", str(hierarchy), "--input", '{"task": "go"}', "--speed", "0", "--store", pg_url,
                      "--config", str(config_file(tmp_path, receiver)), env={"FD_TEST_ROUTING_KEY": ROUTING_KEY})
    assert done.returncode == 0, done.stderr
    listed = flightdeck("incidents", "--store", pg_url)  # the run was short: its last batch still reached runbooks
    assert listed.returncode == 0, listed.stderr
    assert "tool-failure-storm" in listed.stdout and "tool:fail" in listed.stdout, listed.stdout
    (incident,) = rows(pg_url, "SELECT id FROM incidents")
    shown = flightdeck("incident", "show", incident["id"], "--store", pg_url)
    assert shown.returncode == 0 and "applied tool-failure-storm" in shown.stdout, shown.stdout
