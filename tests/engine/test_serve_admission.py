"""Serve-mode admission and back-pressure (engine/serve/admission.py): bounds refuse with 429 and a Retry-After,
paused queues, tenants and admission refuse with 503 naming who paused them, a paused queue holds its queued runs,
every refusal is counted and (rate-limited) recorded, concurrency.max caps runs across queues."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from engine.serve.contracts import Refused, Submission
from engine.serve.service import FleetEngine
from tests.serve_support import Serving, until, until_async

pytestmark = pytest.mark.slow


def _set_flag(fleet: FleetEngine, name: str, value: str, reason: str) -> None:
    with ControlAPI(fleet.engine.store.dir, "ops") as api:
        api.set_flag(name, value, reason=reason)


def _clear_flag(fleet: FleetEngine, name: str) -> None:
    with ControlAPI(fleet.engine.store.dir, "ops") as api:
        api.clear_flag(name, reason="back to normal")


def _count(store: Path, sql: str) -> int:
    conn = sqlite3.connect(store / "traces.db")
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def _applied(fleet: FleetEngine, name: str, value: str | None) -> None:
    await until(lambda: (fleet.engine.controls.flags.get(name) or {}).get(("global", None)) == value,
                what=f"the engine to apply {name}={value}")


def test_a_full_queue_refuses_with_429_and_retry_after_and_every_refusal_is_counted(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1, max_depth: 2, per_tenant_max_depth: 1}")

    async def body(fleet: FleetEngine) -> None:
        first = await fleet.submit(Submission("serving", {}, tenant="a"))
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        await fleet.submit(Submission("serving", {}, tenant="a"))  # queued: tenant a is at its bound of 1
        with pytest.raises(Refused) as tenant_full:
            await fleet.submit(Submission("serving", {}, tenant="a"))
        assert tenant_full.value.status == 429 and "tenant a has 1 runs queued on serving" in tenant_full.value.reason
        keyed = await fleet.submit(Submission("serving", {}, tenant="b", idempotency_key="k"))  # the queue: 2 of 2
        refusals = []
        for _ in range(5):
            with pytest.raises(Refused) as full:
                await fleet.submit(Submission("serving", {}, tenant="c"))
            refusals.append(full.value)
        assert all(r.status == 429 for r in refusals)
        assert "queue serving is full: 2 runs queued, its bound is max_depth=2" in refusals[0].reason
        assert all(r.retry_after_s is not None and 1 <= r.retry_after_s <= 300 for r in refusals)
        [row] = [r for r in fleet.queues() if r.tenant == ""]
        assert (row.depth, row.running, row.rejected_total, row.max_depth) == (2, 1, 6, 2)
        # A repeat of a key already queued is not a new run: it is answered, not refused.
        again = await fleet.submit(Submission("serving", {}, tenant="b", idempotency_key="k"))
        assert (again.run_id, again.created, again.state) == (keyed.run_id, False, "queued")
        fleet.publish()
        fleet.engine.writer.flush()
        # Six refusals within a second: one trace event, not six (the rest counted in the next one).
        assert _count(serving.store, "SELECT count(*) FROM events WHERE kind = 'queue.rejected'") == 1
        stored = _count(serving.store, "SELECT rejected_total FROM queues WHERE queue = 'serving' AND tenant = ''")
        assert stored == 6
        serving.open_gate()
        await until_async(lambda: _ended(fleet, first.run_id), what="the first run to end")

    serving.serve(body)


async def _ended(fleet: FleetEngine, run_id: str) -> bool:
    view = await fleet.get_run(run_id)
    return view is not None and view.state == "completed"


def test_paused_queues_tenants_and_admission_refuse_with_503_and_a_paused_queue_holds_its_runs(
        tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1}")

    async def body(fleet: FleetEngine) -> None:
        running = await fleet.submit(Submission("serving", {}))
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        held = await fleet.submit(Submission("serving", {}))
        _set_flag(fleet, "queue.serving", "paused", "db maintenance")
        await _applied(fleet, "queue.serving", "paused")
        with pytest.raises(Refused) as paused:
            await fleet.submit(Submission("serving", {}))
        assert paused.value.status == 503
        assert "queue.serving=paused" in paused.value.reason and "ops: db maintenance" in paused.value.reason
        serving.open_gate()
        await until_async(lambda: _ended(fleet, running.run_id), what="the running run to finish")
        durable = fleet.engine.durable
        assert durable is not None and durable.host is not None
        # DBOS dequeued the second run, and the paused queue holds it: it has not started.
        await until_async(lambda: _status_is(fleet, held.run_id, "PENDING"), what="DBOS to dequeue the run")
        view = await fleet.get_run(held.run_id)
        assert view is not None and view.state == "queued"
        assert [r.admission for r in fleet.queues() if r.tenant == ""] == ["paused"]
        _clear_flag(fleet, "queue.serving")
        await until_async(lambda: _ended(fleet, held.run_id), what="the held run to run once the queue opens")

        _set_flag(fleet, "tenant.noisy", "paused", "storm")
        await _applied(fleet, "tenant.noisy", "paused")
        with pytest.raises(Refused) as tenant:
            await fleet.submit(Submission("serving", {}, tenant="noisy"))
        assert tenant.value.status == 503 and "tenant noisy is paused" in tenant.value.reason
        await fleet.submit(Submission("serving", {}, tenant="quiet"))  # other tenants are admitted

        _set_flag(fleet, "runs.admission", "paused", "incident 12")
        await _applied(fleet, "runs.admission", "paused")
        with pytest.raises(Refused) as admission:
            await fleet.submit(Submission("serving", {}))
        assert admission.value.status == 503 and "runs.admission=paused" in admission.value.reason
        assert fleet.queues()[0].rejected_total == 3

    serving.serve(body)


async def _status_is(fleet: FleetEngine, run_id: str, status: str) -> bool:
    durable = fleet.engine.durable
    assert durable is not None and durable.host is not None
    return await durable.host.status(run_id) == status


def test_concurrency_max_caps_runs_in_flight_across_queues(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 3}",
                      extra="  - file: serving.yaml\n    name: second\n    queue: {concurrency: 3}\n")

    async def body(fleet: FleetEngine) -> None:
        _set_flag(fleet, "concurrency.max", "1", "protect the provider")
        await _applied(fleet, "concurrency.max", "1")
        ids = [(await fleet.submit(Submission(name, {}))).run_id for name in ("serving", "second", "serving")]
        for run_id in ids:  # all three dequeued by DBOS (each queue allows three) ...
            await until_async(lambda r=run_id: _status_is(fleet, r, "PENDING"), what="DBOS to dequeue them")
        await until(lambda: _count(serving.store, "SELECT count(*) FROM runs") >= 1, what="a run to start")
        fleet.engine.writer.flush()
        assert _count(serving.store, "SELECT count(*) FROM runs") == 1  # ... and one of them runs
        serving.open_gate()
        await until(lambda: _count(serving.store, "SELECT count(*) FROM runs WHERE status = 'completed'") == 3,
                    what="all three to complete, one at a time")

    serving.serve(body)
