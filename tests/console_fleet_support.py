"""A fleet on a Postgres store for the console tests: three engines registered on one database (alive, STALE,
stopped), runs of two of them, and the same breaker published by two engines (one sees it open), all with fixed ids,
times and figures (FIXED_NOW), written through the engine's own Postgres writer and registry."""

from __future__ import annotations

from typing import Any

from engine.controls.incidents import IncidentStore
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.control_db import PgControlDB
from engine.store.pg.engine_registry import claim_engine_id
from tests.console_helpers import FIXED_NOW, FixedClock, write_deal_run

ENGINE_A = "host-a/serve-1"
ENGINE_B = "host-b/serve-1"
ENGINE_C = "host-c/run-7"

# (id, minutes ago, status, tenant, error, hierarchy, engine)
FLEET_RUNS = (
    ("c3d4e5f6a1b2", 0.2, "running", "initech", None, "support-triage", ENGINE_B),
    ("b2c3d4e5f6a1", 1.0, "failed", "globex", "pricing: price_quote failed: upstream 503 from pricing-api",
     "deal-desk", ENGINE_A),
    ("a1b2c3d4e5f6", 2.0, "completed", "acme", None, "deal-desk", ENGINE_B),
    ("d4e5f6a1b2c3", 4.0, "running", "acme", None, "deal-desk", ENGINE_A),
    ("f6a1b2c3d4e5", 15.0, "completed", "umbrella", None, "support-triage", ENGINE_A),
    ("0a1b2c3d4e5f", 31.0, "completed", "acme", None, "deal-desk", ENGINE_B),
    ("3d4e5f0a1b2c", 190.0, "completed", "acme", None, "support-triage", ENGINE_C),
)


def pg_location(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def breaker_row(key: str, state: str, *, failed: int, calls: int, hierarchy: str = "deal-desk") -> tuple[object, ...]:
    opened = state == "open"
    return (hierarchy, key, "tool", key.split(":")[-1], state, 100.0 * failed / calls, 0.0, calls, failed, 0, 0,
            FIXED_NOW + 25 if opened else None, FIXED_NOW - 90 if opened else None, FIXED_NOW - 2)


def queue_row(queue: str, depth: int, running: int, updated: float) -> tuple[object, ...]:
    return (queue, "", queue, depth, running, 3.0, 12.0, 0, 1000, 8, None, "open", updated)


def fleet_store(url: str) -> PostgresLocation:
    """Three engines on the database `url`: A alive, B STALE (no heartbeat for 40 s), C stopped; runs of A and B (and
    one old run of C); breaker `tool:price_quote` open on A, closed on B; `tool:crm_lookup` closed on both; queues
    published by A (deal-desk) and B (deal-desk, support-triage)."""
    location = pg_location(url)
    for engine_id, pid, host, started in ((ENGINE_A, 4101, "host-a", FIXED_NOW - 3600),
                                          (ENGINE_B, 4202, "host-b", FIXED_NOW - 1800),
                                          (ENGINE_C, 4303, "host-c", FIXED_NOW - 14400)):
        claim_engine_id(location, engine_id=engine_id, pid=pid, host=host, user="ops", version="0.9.0",
                        started=started)
    for engine_id, heartbeat in ((ENGINE_A, FIXED_NOW - 1), (ENGINE_B, FIXED_NOW - 40)):
        control = PgControlDB(location, clock=FixedClock(heartbeat))  # type: ignore[arg-type]
        try:
            control.heartbeat(engine_id)
        finally:
            control.close()
    control = PgControlDB(location, clock=FixedClock(FIXED_NOW - 10000))  # type: ignore[arg-type]
    try:
        control.mark_stopped(ENGINE_C)
    finally:
        control.close()
    writers = {engine: PgBatchWriter(location, engine_id=engine) for engine in (ENGINE_A, ENGINE_B, ENGINE_C)}
    try:
        for run_id, minutes_ago, status, tenant, error, hierarchy, engine in reversed(FLEET_RUNS):
            writer = writers[engine]
            write_deal_run(writer, run_id, started=FIXED_NOW - minutes_ago * 60, status=status, tenant=tenant,
                           error=error, hierarchy=hierarchy, running=status == "running", engine_id=engine)
            writer.flush()
        a, b = writers[ENGINE_A], writers[ENGINE_B]
        a.state("breakers", ("deal-desk", "tool:price_quote"), breaker_row("tool:price_quote", "open", failed=6,
                                                                              calls=8))
        b.state("breakers", ("deal-desk", "tool:price_quote"), breaker_row("tool:price_quote", "closed", failed=1,
                                                                              calls=10))
        for writer in (a, b):
            writer.state("breakers", ("deal-desk", "tool:crm_lookup"), breaker_row("tool:crm_lookup", "closed",
                                                                                    failed=0, calls=12))
        a.state("queues", ("deal-desk", ""), queue_row("deal-desk", 4, 2, FIXED_NOW - 1))
        b.state("queues", ("deal-desk", ""), queue_row("deal-desk", 5, 1, FIXED_NOW - 2))
        b.state("queues", ("support-triage", ""), queue_row("support-triage", 0, 1, FIXED_NOW - 2))
        for writer in (a, b):
            writer.flush()
    finally:
        for writer in writers.values():
            writer.close()
    return location


class _FixedIncidentIds(IncidentStore):
    """Incident ids in order (inc-00000001, ...) instead of random ones, so snapshots are stable."""

    counter = iter(range(1, 1000))

    @staticmethod
    def _new_id(conn: Any) -> str:
        return f"inc-{next(_FixedIncidentIds.counter):08d}"


FLEET_INCIDENTS = ("inc-00000001", "inc-00000002")  # looping-agent (firing), cost-spike (acknowledged, quiet)


def fleet_incidents(location: PostgresLocation) -> PostgresLocation:
    """Two open incidents in the Postgres control plane, written through IncidentStore as an engine's runbook runtime
    writes them (fixed clock, fixed ids): looping-agent on agent:pricing, firing and not acknowledged (opened by
    engine A), and cost-spike on hierarchy:support-triage, cleared and acknowledged by bob (engine B)."""
    _FixedIncidentIds.counter = iter(range(1, 1000))
    clock = FixedClock(FIXED_NOW - 600)
    control = PgControlDB(location, clock=clock, create=True)  # type: ignore[arg-type]
    try:
        store = _FixedIncidentIds(control, clock=clock)  # type: ignore[arg-type]
        looping, _ = store.open_or_update(
            runbook="looping-agent", title="An agent is looping", severity="sev2", apply_mode="auto",
            scope="agent:pricing", readings=[{"signal": "loop_detected", "value": 3, "op": ">=", "threshold": 3,
                                              "fired": True}],
            context={"agent": "pricing", "hierarchy": "deal-desk"}, summary="3 loops", actor="runbook:looping-agent",
            engine_id=ENGINE_A)
        clock.now = FIXED_NOW - 900
        quiet, _ = store.open_or_update(
            runbook="cost-spike", title="Spend is spiking", severity="sev2", apply_mode="auto",
            scope="hierarchy:support-triage", readings=[{"signal": "spend_rate_per_min", "value": 2.4, "op": ">=",
                                                         "threshold": 2.0, "fired": True}],
            context={"hierarchy": "support-triage"}, summary="spend 2.4/min", actor="runbook:cost-spike",
            engine_id=ENGINE_B)
        clock.now = FIXED_NOW - 800
        store.cleared(quiet.id, [{"signal": "spend_rate_per_min", "value": 0.3, "peak": 2.4}], "runbook:cost-spike")
        clock.now = FIXED_NOW - 700
        store.acknowledge(quiet.id, "bob", "looking at the spend")
        assert (looping.id, quiet.id) == FLEET_INCIDENTS
    finally:
        control.close()
    return location
