"""A run an engine took (`resume_taken`) but could not start in DBOS is given back (issue 13): the engine writes a
`resume_released` audit row naming the take and says so in the run's events, so a later engine (or a later
`flightdeck resume`) takes it. The fault is real: durable.db damaged so that DBOS refuses the run's next execution
(a row of another workflow already holds its id, `<run>~1`); the repair is deleting that row."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.controls import run_requests
from engine.controls.api import ControlAPI
from engine.runtime.engine import Engine
from engine.store import open_engine_store, open_reader
from tests.durable_support import Charging
from tests.engine_helpers import events, get_run

pytestmark = pytest.mark.slow


def _engine_start(charging: Charging) -> list[Any]:
    """A durable engine starting on the store (its start scan takes open requests), until what it took ended."""
    os.environ["FLIGHTDECK_TEST_LEDGER"] = str(charging.ledger)

    async def go() -> list[Any]:
        with open_engine_store(charging.store) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True) as engine:
                assert engine.durable is not None and engine.durable.pickups is not None
                await engine.durable.wait_resumed()
                return list(engine.durable.pickups.taken)

    return anyio.run(go)


def _audit(store: Path, action: str) -> list[Any]:
    with ControlAPI(store, "reader") as api:
        return [row for row in reversed(api.audit_log(limit=1000)) if row.action == action]


def _damage(store: Path, run_id: str) -> None:
    conn = sqlite3.connect(store / "durable.db")
    try:
        conn.execute("INSERT INTO workflow_status (workflow_uuid, status, name) VALUES (?, 'SUCCESS', 'other')",
                     (f"{run_id}~1",))
        conn.commit()
    finally:
        conn.close()


def _repair(store: Path, run_id: str) -> None:
    conn = sqlite3.connect(store / "durable.db")
    try:
        conn.execute("DELETE FROM workflow_status WHERE workflow_uuid = ?", (f"{run_id}~1",))
        conn.commit()
    finally:
        conn.close()


def test_a_take_whose_start_fails_is_given_back_and_taken_later(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    stopped = charging.run("--budget", "calls=1", "--json")
    assert stopped.returncode == 4, stopped.stderr  # budget exceeded: a run that resumes
    reader = open_reader(charging.store)
    try:
        (run,) = reader.list_runs(limit=5)
    finally:
        reader.close()
    with ControlAPI(charging.store, "alice") as api:
        api.record_resume(run.id, run.status, {"model_calls": 10}, "room to finish", run.attributes)
    _damage(charging.store, run.id)

    (taken,) = _engine_start(charging)
    assert taken.run_id == run.id and taken.taken > 0
    (take,) = _audit(charging.store, run_requests.TAKEN_ACTION)
    (given_back,) = _audit(charging.store, run_requests.RELEASED_ACTION)
    assert given_back.after["taken"] == take.id and given_back.actor == take.actor
    assert "could not start the run" in given_back.reason
    assert get_run(charging.store, run.id).status == "budget_exceeded"  # it did not run
    (event,) = events(charging.store, run.id, ["run.not_resumed"])
    assert "the take is given back" in event.data["reason"], event.data
    with ControlAPI(charging.store, "reader") as api, api.read() as conn:
        assert run_requests.taken_ending(conn, run.id, run.ended) is None  # the ending is free again

    _repair(charging.store, run.id)
    (again,) = _engine_start(charging)  # the next engine takes the same request
    assert again.run_id == run.id and again.request == taken.request
    assert len(_audit(charging.store, run_requests.TAKEN_ACTION)) == 2
    assert get_run(charging.store, run.id).status == "completed"
    assert [line["amount"] for line in charging.lines()] == [5, 7]  # the first charge replayed, not run again


def test_flightdeck_resume_says_when_the_engine_holding_the_store_gave_the_run_back(tmp_path: Path) -> None:
    from tests.durable_support import flightdeck

    charging = Charging(tmp_path)
    stopped = charging.run("--budget", "calls=1")
    assert stopped.returncode == 4, stopped.stderr
    reader = open_reader(charging.store)
    try:
        (run,) = reader.list_runs(limit=5)
    finally:
        reader.close()
    _damage(charging.store, run.id)
    os.environ["FLIGHTDECK_TEST_LEDGER"] = str(charging.ledger)

    async def go() -> Any:
        with open_engine_store(charging.store) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True):
                return await anyio.to_thread.run_sync(lambda: flightdeck(
                    "resume", run.id, "--budget", "calls=10", "--reason", "room to finish", "--yes", "--store",
                    str(charging.store), env=charging.env))

    resumed = anyio.run(go)
    assert resumed.returncode == 3, resumed.stderr  # not a hang until the engine stops: it says why at once
    assert "could not start it (DBOSConflictingWorkflowError" in resumed.stderr and "gave it back" in resumed.stderr
    assert len(_audit(charging.store, run_requests.RELEASED_ACTION)) == 1
