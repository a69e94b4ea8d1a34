"""Live pickup against a real `flightdeck serve` (issue 13): while serve runs on the store, `flightdeck reconcile
--again` and `flightdeck resume` (separate processes) are taken by serve's engine within a second and the run goes
on there; the side effect runs once. The run is left behind by a real SIGKILLed `flightdeck run --durable`
(tests/durable_support.py), then serve starts on the same store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.controls.api import ControlAPI
from tests.durable_support import CHARGING, Charging, flightdeck
from tests.engine_helpers import get_run
from tests.serve.serve_process import Serve, until

pytestmark = pytest.mark.slow

FLEET = """
hierarchies:
  - file: quick.yaml
    queue: {concurrency: 1}
"""
IDEMPOTENT = CHARGING.replace('side_effects: true}', 'side_effects: true, idempotent: true}')


def _rows(store: Path, run_id: str) -> dict[str, list[float]]:
    with ControlAPI(store, "reader") as api:
        found: dict[str, list[float]] = {}
        for entry in reversed(api.audit_log(limit=10_000)):
            if entry.target == f"run:{run_id}":
                found.setdefault(entry.action, []).append(entry.ts)
        return found


def test_reconcile_again_while_serve_runs_resumes_the_run_within_a_second(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    serve = Serve(tmp_path, fleet=FLEET).start()
    try:
        decided = flightdeck("reconcile", run_id, "--again", "--reason", "no charge at the PSP", "--store",
                             str(charging.store))
        assert decided.returncode == 0, decided.stderr
        assert "took run" in decided.stdout and "running again there" in decided.stdout, decided.stdout
        rows = _rows(charging.store, run_id)
        assert len(rows["resume_taken"]) == 1
        assert rows["resume_taken"][0] - rows["reconcile"][0] < 1.0, rows
        until(lambda: get_run(charging.store, run_id).status == "completed", what="the run to complete in serve")
    finally:
        serve.stop()
    assert [(line["amount"], line["attempt"]) for line in charging.lines()] == [(5, 0), (5, 1), (7, 0)]
    assert get_run(charging.store, run_id).resumed == 2  # on the engine start that stopped it, and now


def test_resume_of_an_abandoned_run_while_serve_runs_is_taken_live_and_waited_for(tmp_path: Path) -> None:
    charging = Charging(tmp_path, IDEMPOTENT)
    crashed = charging.run(crash=True)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    [run_id] = [line["idempotency_key"].split(":")[0] for line in charging.lines()]
    serve = Serve(tmp_path, fleet=FLEET, extra_args=("--no-resume",)).start()  # it stays abandoned
    try:
        assert get_run(charging.store, run_id).status == "abandoned"
        resumed = flightdeck("resume", run_id, "--yes", "--reason", "customer still waiting", "--json", "--store",
                             str(charging.store))
        assert resumed.returncode == 0, resumed.stderr
        assert "carries it on" in resumed.stderr and "took run" in resumed.stderr, resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "completed"
        rows = _rows(charging.store, run_id)
        assert rows["resume_taken"][0] - rows["resume"][0] < 1.0, rows
    finally:
        serve.stop()
    assert get_run(charging.store, run_id).status == "completed"
    # The charge the crash cut off ran again under its key (idempotent), the second charge once.
    assert [(line["amount"], line["idempotency_key"]) for line in charging.lines()] == [
        (5, f"{run_id}:clerk.0.0"), (5, f"{run_id}:clerk.0.0"), (7, f"{run_id}:clerk.1.0")]


def test_resume_no_wait_returns_once_recorded_and_serve_carries_it_on(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    stopped = charging.run("--budget", "tool_calls=1", "--json")
    assert stopped.returncode == 4, stopped.stderr
    run_id = json.loads(stopped.stdout)[0]["id"]
    serve = Serve(tmp_path, fleet=FLEET).start()
    try:
        recorded = flightdeck("resume", run_id, "--yes", "--no-wait", "--budget", "tool_calls=5", "--reason",
                              "limit raised", "--json", "--store", str(charging.store))
        assert recorded.returncode == 0, recorded.stderr
        answer = json.loads(recorded.stdout)
        assert answer["waited"] is False and answer["engine_pid"] == serve.proc.pid  # type: ignore[union-attr]
        until(lambda: get_run(charging.store, run_id).status == "completed", what="serve to carry the run on")
    finally:
        serve.stop()
    assert [line["amount"] for line in charging.lines()] == [5, 7]  # the recorded charge did not run again


def test_a_no_resume_serve_leaves_a_reconciled_run_until_an_operator_resumes_it(tmp_path: Path) -> None:
    charging = Charging(tmp_path)
    run_id = charging.needs_reconcile()
    serve = Serve(tmp_path, fleet=FLEET, extra_args=("--no-resume",)).start()
    try:
        decided = flightdeck("reconcile", run_id, "--done", "--reason", "the PSP shows it", "--store",
                             str(charging.store))
        assert decided.returncode == 0, decided.stderr
        assert "does not carry reconciled runs on by itself (it was started with --no-resume)" in decided.stdout
        assert f"flightdeck resume {run_id}" in decided.stdout
        assert "resume_taken" not in _rows(charging.store, run_id)
        resumed = flightdeck("resume", run_id, "--yes", "--reason", "go on", "--store", str(charging.store))
        assert resumed.returncode == 0, resumed.stderr
        assert "took run" in resumed.stderr, resumed.stderr
    finally:
        serve.stop()
    assert get_run(charging.store, run_id).status == "completed"
    assert [line["amount"] for line in charging.lines()] == [5, 7]  # confirmed done: the first charge not again
    assert len(_rows(charging.store, run_id)["resume_taken"]) == 1
