"""A queue's `max_depth` bounds what the fleet has queued, not each engine (issue 16, engine/serve/fleet_depth.py):
two real `flightdeck serve` processes on one Postgres, one queue with `max_depth: 3` whose runs wait on a gate
file. Once the runs one engine admitted fill the queue, the other engine refuses (429), although it admitted
nothing itself; once the runs drain it admits again (a "full" answer is not kept)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.serve.serve_process import Serve, until
from tests.store_pg.pg_durable_support import query

MAX_DEPTH = 3
FLEET = f"""
hierarchies:
  - file: gated.yaml
    queue: {{concurrency: 1, max_depth: {MAX_DEPTH}}}
"""


def queued_in_dbos(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM flightdeck_dbos.workflow_status WHERE queue_name = 'gated' "
                          "AND status = 'ENQUEUED'")[0][0])


def running_tools(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM spans WHERE kind = 'tool' AND status = 'running'")[0][0])


def queue_row(client: httpx.Client) -> dict[str, object]:
    return next(row for row in client.get("/queues").json() if row["queue"] == "gated" and row["tenant"] == "")


def post(client: httpx.Client, n: int) -> httpx.Response:
    return client.post("/runs", json={"hierarchy": "gated", "input": {"n": n}})


@pytest.mark.slow
def test_second_engine_refuses_once_the_queue_is_full_fleet_wide(tmp_path: Path, pg_url: str) -> None:
    engines = []
    gate = tmp_path / "gate-open"
    for engine_id in ("depth/a", "depth/b"):
        workdir = tmp_path / engine_id.replace("/", "-")
        workdir.mkdir()
        serve = Serve(workdir, fleet=FLEET, store=pg_url, environ={"FLIGHTDECK_ENGINE_ID": engine_id})
        serve.gate = gate
        engines.append(serve)
    for serve in engines:
        serve.environ["FLIGHTDECK_TEST_GATE"] = str(gate)
        serve.start()
    a, b = (serve.client() for serve in engines)
    try:
        # Each engine runs one run at a time (concurrency 1): two runs hold both engines' slots at the gate.
        for n in range(2):
            assert post(a, n).status_code == 201
        until(lambda: running_tools(pg_url) == 2, what="both engines to hold a run at the gate")
        until(lambda: queue_row(a)["depth"] == 0, what="engine a to stop counting the run b dequeued")
        # Engine a fills the queue: MAX_DEPTH runs wait in DBOS, nothing dequeues them.
        for n in range(MAX_DEPTH):
            response = post(a, 10 + n)
            assert response.status_code == 201, response.text
        assert queued_in_dbos(pg_url) == MAX_DEPTH
        assert post(a, 20).status_code == 429
        # Engine b admitted none of them (its own tally is empty) and still refuses: the bound is the fleet's.
        assert queue_row(b)["depth"] == 0
        refused = post(b, 21)
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert "queue gated is full" in body["error"] and "engines on this store together" in body["error"], body
        assert f"max_depth={MAX_DEPTH}" in body["error"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert queued_in_dbos(pg_url) == MAX_DEPTH  # nothing over the bound was queued

        # The runs drain once the gate opens: engine b admits again.
        gate.touch()
        until(lambda: post(b, 30).status_code == 201, timeout=60, what="engine b to admit once the queue drained")
    finally:
        for client in (a, b):
            client.close()
        for serve in engines:
            serve.stop()
