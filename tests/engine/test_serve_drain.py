"""Serve mode stopping (FleetEngine.drain) and restarting: a drain refuses new work and lets queued and running runs
finish; one whose grace runs out hands them back to DBOS, and the next engine on the store (after a drain, or after
kill -9 of a process holding queued and running work) finishes every one of them exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from engine.durable.host import DurableHost
from engine.serve.contracts import Refused, Submission
from engine.serve.service import FleetEngine
from engine.store import open_reader
from tests.serve_support import Serving, until, until_async
from tests.store_support import read_until, start_python, store_lock_free, wait_until

pytestmark = pytest.mark.slow


async def _completed(fleet: FleetEngine, ids: list[str]) -> bool:
    views = [await fleet.get_run(run_id) for run_id in ids]
    return all(v is not None and v.state == "completed" for v in views)


def _finish_on_restart(serving: Serving, ids: list[str]) -> None:
    """A new engine on the store (gate open) runs every handed-back run to completion."""
    serving.open_gate()

    async def restart(fleet: FleetEngine) -> None:
        await until_async(lambda: _completed(fleet, ids), timeout=60, what="every handed-back run to complete")

    serving.serve(restart)
    lines = serving.lines()
    assert sorted(line["idempotency_key"].split(":")[0] for line in lines) == sorted(ids)  # each charged once


def test_drain_finishes_queued_and_running_runs_and_refuses_new_ones(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1}")

    async def body(fleet: FleetEngine) -> None:
        ids = [(await fleet.submit(Submission("serving", {}))).run_id for _ in range(3)]
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        serving.open_gate()
        report = await fleet.drain(60)
        assert fleet.stopping and fleet.health().status == "stopping"
        assert report.handed_back == [] and report.finished == 3
        assert await _completed(fleet, ids)
        with pytest.raises(Refused) as refused:
            await fleet.submit(Submission("serving", {}))
        assert refused.value.status == 503 and "draining" in refused.value.reason

    serving.serve(body)
    assert len(serving.lines()) == 3


def test_a_drain_out_of_time_hands_queued_and_running_runs_to_the_next_engine(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1}")

    async def body(fleet: FleetEngine) -> list[str]:
        ids = [(await fleet.submit(Submission("serving", {}))).run_id for _ in range(3)]
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        report = await fleet.drain(0.2)
        assert sorted(report.handed_back) == sorted(ids) and report.finished == 0
        return ids

    ids = serving.serve(body)
    reader = open_reader(serving.store)
    try:
        stopped = [row for row in (reader.get_run(r) for r in ids) if row is not None]
    finally:
        reader.close()
    assert [row.status for row in stopped] == ["killed"]  # the one running recorded why it stopped
    assert stopped[0].error is not None and "grace period ended" in stopped[0].error
    _finish_on_restart(serving, ids)


# Holds three runs (one running, at its gate; two queued) until the test SIGKILLs it. It says so only once the
# running one's row is in traces.db: the queue counts a run as running at its gate, a moment before the run writes
# its row (it waits for a run slot in between), and a kill in that moment left no row to find.
HOLDER = """
import sys, anyio
from pathlib import Path
from engine.serve.contracts import Submission
from engine.serve.fleet import load_fleet
from engine.serve.service import open_fleet
from engine.store import open_reader

def started(store, ids):
    with open_reader(store) as reader:
        return [r for r in ids if reader.get_run(r) is not None]

async def main():
    store = Path(sys.argv[1])
    async with open_fleet(store, load_fleet(sys.argv[2]), latency_scale=0.0) as fleet:
        ids = [(await fleet.submit(Submission("serving", {}))).run_id for _ in range(3)]
        while True:
            if fleet.counts.queues["serving"].running:
                fleet.engine.writer.flush()
                if started(store, ids):
                    break
            await anyio.sleep(0.02)
        print("holding " + " ".join(ids), file=sys.stderr, flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


def test_kill_9_with_queued_and_running_work_then_a_new_engine_finishes_each_run_once(tmp_path: Path) -> None:
    serving = Serving(tmp_path, "{concurrency: 1}")
    proc = start_python(HOLDER, str(serving.store), str(serving.fleet_path))
    try:
        seen = read_until(proc, "holding ", timeout=60)
        ids = seen.split("holding ", 1)[1].split()[:3]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    wait_until(lambda: store_lock_free(serving.store), timeout=30, what="the dead engine's writer to exit")
    assert len(ids) == 3 and serving.lines() == []
    _finish_on_restart(serving, ids)


def test_an_engine_that_serves_no_queue_leaves_queued_runs_to_the_next_serve(tmp_path: Path) -> None:
    import anyio

    from engine.runtime.engine import Engine
    from engine.store import open_engine_store

    serving = Serving(tmp_path, "{concurrency: 1}")

    async def body(fleet: FleetEngine) -> list[str]:
        ids = [(await fleet.submit(Submission("serving", {}))).run_id for _ in range(2)]
        await until(lambda: fleet.counts.queues["serving"].running, what="the first run to start")
        await fleet.drain(0.1)
        return ids

    ids = serving.serve(body)
    serving.open_gate()

    async def plain() -> tuple[str | None, bool]:
        with open_engine_store(serving.store) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True, auto_resume=False) as engine:
                assert engine.durable is not None and engine.durable.host is not None
                host = engine.durable.host
                with anyio.move_on_after(1.5):  # DBOS polls every 0.1 s: fifteen chances to take it
                    await until_async(lambda: _taken_by(host, ids[1]), timeout=10, what="never")
                return await host.status(ids[1]), await _taken_by(host, ids[1])

    # ENQUEUED, or PENDING under the serve engine: its DBOS may dequeue it in the moment the drain stops the first
    # run, and hands it back (docs say so). Either way `flightdeck run --durable` never takes a serve queue's run.
    status, taken = anyio.run(plain)
    assert status in ("ENQUEUED", "PENDING") and not taken
    _finish_on_restart(serving, ids)


async def _taken_by(host: DurableHost, run_id: str) -> bool:
    """Whether this engine's own DBOS executor holds the run (it dequeued it)."""
    return run_id in [r for _w, r in await host.pending_of([host.executor_id], [])]


def test_a_dead_engines_run_an_operator_killed_is_not_counted_as_queued_after_restart(tmp_path: Path) -> None:
    from engine.controls.api import ControlAPI

    serving = Serving(tmp_path, "{concurrency: 1}")
    proc = start_python(HOLDER, str(serving.store), str(serving.fleet_path))
    try:
        ids = read_until(proc, "holding ", timeout=60).split("holding ", 1)[1].split()[:3]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    wait_until(lambda: store_lock_free(serving.store), timeout=30, what="the dead engine's writer to exit")
    reader = open_reader(serving.store)
    try:
        [running] = [r for r in ids if reader.get_run(r) is not None]
    finally:
        reader.close()
    with ControlAPI(serving.store, "ops") as api:
        api.set_kill("run", running, "kill", "do not carry this one on")
    serving.open_gate()
    others = [r for r in ids if r != running]

    async def restart(fleet: FleetEngine) -> None:
        await until_async(lambda: _completed(fleet, others), timeout=60, what="the queued runs to complete")
        # A run's row says completed (the trace writer's commit) a moment before its queue stops counting it (its
        # gate exits): wait for that, for the runs that ran; then nothing else may be counted.
        await until(lambda: not set(others) & set(fleet.counts.in_flight()), timeout=20,
                    what="the queue to stop counting the completed runs")
        assert fleet.health().queued == 0 and fleet.counts.in_flight() == []  # the killed one is no phantom

    serving.serve(restart)
