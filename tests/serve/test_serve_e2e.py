"""Serve mode end to end (issue 14, "Done when"): a real `flightdeck serve` subprocess on 127.0.0.1 port 0, driven
with httpx. One serve for the module's API tests; SIGTERM and kill -9 get serves of their own."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_process import FLEET, HOOK_SECRET, ROOT, TOKEN, Serve, ended, run_state, until
from tests.serve_http_support import sign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    proc = Serve(tmp_path_factory.mktemp("serve")).start()
    try:
        yield proc
    finally:
        proc.open_gate()  # nothing stays held at the gate: the drain ends at once
        proc.stop()


@pytest.fixture
def http(serve: Serve) -> Iterator[httpx.Client]:
    with serve.client() as client:
        yield client


def test_idempotent_submit_runs_once(serve: Serve, http: httpx.Client) -> None:
    body = {"hierarchy": "quick", "input": {"request": "refund"}, "tenant": "acme"}
    first = http.post("/runs", json=body, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == 201, first.text
    run_id = first.json()["run_id"]
    assert first.headers["location"] == f"/runs/{run_id}"
    again = http.post("/runs", json=body, headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 200 and again.json()["run_id"] == run_id and again.json()["created"] is False
    assert until(lambda: ended(http, run_id), what="the run to end") == "completed"
    late = http.post("/runs", json=body, headers={"Idempotency-Key": "order-1"})
    assert late.status_code == 200 and late.json()["state"] == "completed"
    assert serve.charges_of(run_id) == 1
    assert run_id in {r["run_id"] for r in http.get("/runs", params={"hierarchy": "quick"}).json()}


def test_auth_health_and_openapi(serve: Serve) -> None:
    with serve.client(token="wrong") as wrong:
        assert wrong.post("/runs", json={"hierarchy": "quick"}).status_code == 401
        assert wrong.get("/queues").status_code == 401
        health = wrong.get("/health")  # no auth needed
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["store"] == "ok"
    from openapi_spec_validator import validate

    with serve.client() as http:
        validate(http.get("/openapi.json").json())
    assert TOKEN not in serve.stderr()


def test_a_full_queue_answers_429_with_retry_after(serve: Serve, http: httpx.Client) -> None:
    # gated: concurrency 1, max_depth 2, and its runs wait at the gate (closed): the queue fills.
    admitted: list[str] = []
    refused = None
    for i in range(6):
        response = http.post("/runs", json={"hierarchy": "gated", "input": {"n": i}})
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 201, response.text
        admitted.append(response.json()["run_id"])
    assert refused is not None, f"never refused after {len(admitted)} admitted"
    assert 2 <= len(admitted) <= 3  # two queued, and one running if it was dequeued in time
    assert int(refused.headers["retry-after"]) >= 1
    assert "gated" in refused.json()["error"]
    queue = next(q for q in http.get("/queues").json() if q["queue"] == "gated" and q["tenant"] == "")
    assert queue["rejected_total"] >= 1
    serve.open_gate()
    for run_id in admitted:
        assert until(lambda run_id=run_id: ended(http, run_id), what=f"{run_id} to end") == "completed"


def test_webhooks_signed_unsigned_and_redelivered(serve: Serve, http: httpx.Client) -> None:
    body = json.dumps({"issue": {"title": "Refund please", "number": 17}}).encode()
    delivery = {"X-GitHub-Delivery": "delivery-1", "Content-Type": "application/json"}
    with httpx.Client(base_url=serve.url, timeout=30) as anonymous:  # webhooks carry no bearer token
        unsigned = anonymous.post("/hooks/github", content=body, headers=delivery)
        assert unsigned.status_code == 401
        bad = anonymous.post("/hooks/github", content=body,
                             headers={**delivery, "X-Hub-Signature-256": sign("not-the-secret", body)})
        assert bad.status_code == 401
        assert HOOK_SECRET not in unsigned.text + bad.text
        signed = {**delivery, "X-Hub-Signature-256": sign(HOOK_SECRET, body)}
        first = anonymous.post("/hooks/github", content=body, headers=signed)
        assert first.status_code == 201, first.text
        run_id = first.json()["run_id"]
        redelivered = anonymous.post("/hooks/github", content=body, headers=signed)
        assert redelivered.status_code == 200 and redelivered.json()["run_id"] == run_id
        unset = anonymous.post("/hooks/unset", content=b"{}", headers={"X-Id": "1", "X-Hub-Signature-256": "x"})
        assert unset.status_code == 503 and unset.json()["field"] == "E2E_UNSET_SECRET"
    assert until(lambda: ended(http, run_id), what="the webhook's run to end") == "completed"
    assert serve.charges_of(run_id) == 1  # the redelivery started nothing
    assert http.get(f"/runs/{run_id}").json()["hierarchy"] == "quick"
    assert "webhook 'unset' answers 503 until E2E_UNSET_SECRET is set" in serve.stderr()


def test_a_six_field_cron_schedule_fires(serve: Serve, http: httpx.Client) -> None:
    def fired() -> str | None:
        tick = next(s for s in http.get("/schedules").json() if s["name"] == "tick")
        return tick["last_run_id"]

    run_id = until(fired, timeout=30, what="the every-2-seconds schedule to fire")
    assert until(lambda: run_state(http, run_id), what="the scheduled run to be known") is not None
    tick = next(s for s in http.get("/schedules").json() if s["name"] == "tick")
    assert tick["cron"] == "*/2 * * * * *" and tick["next_fire"] is not None


def test_flightdeck_submit_waits_for_the_run(serve: Serve) -> None:
    env = {**serve.env(), "FLIGHTDECK_URL": serve.url}
    proc = subprocess.run([sys.executable, "-m", "console.cli", "submit", "quick", "--input", '{"request": "x"}',
                           "--wait"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    run_id, state = proc.stdout.splitlines()[-1].split()[:2]
    assert state == "completed" and serve.charges_of(run_id) == 1


def test_sigterm_drains_queued_and_running_work(tmp_path: Path) -> None:
    serve = Serve(tmp_path, extra_args=("--grace", "60s")).start()
    try:
        with serve.client() as http:
            ids = [http.post("/runs", json={"hierarchy": "gated", "input": {"n": i}}).json()["run_id"]
                   for i in range(2)]
            until(lambda: run_state(http, ids[0]) == "running" or run_state(http, ids[1]) == "running",
                  what="a run to start")
            serve.signal(signal.SIGTERM)
            until(lambda: http.get("/health").status_code == 503, what="health to say stopping")
            assert http.get("/health").json()["status"] == "stopping"
            refused = http.post("/runs", json={"hierarchy": "quick"})
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
            serve.open_gate()  # the held runs finish within the grace period
            assert serve.wait(60) == 143
    finally:
        serve.kill()
    assert sorted(line["idempotency_key"].split(":")[0] for line in serve.charges()) == sorted(ids)
    err = serve.stderr()
    assert "SIGTERM: taking no new runs" in err
    drained = re.search(r"drained: (\d+) run\(s\) finished, 0 left", err)
    assert drained and int(drained.group(1)) >= 2, err  # the two, and any scheduled tick that ran meanwhile
    assert "Traceback" not in err


def test_kill_9_and_restart_resumes_queued_and_running_work_once(tmp_path: Path) -> None:
    serve = Serve(tmp_path, fleet=FLEET.replace("max_depth: 2", "max_depth: 10")).start()
    try:
        with serve.client() as http:  # gated: concurrency 1, so one runs (held at the gate) and two wait
            ids = [http.post("/runs", json={"hierarchy": "gated", "input": {"n": i}},
                             headers={"Idempotency-Key": f"k9-{i}"}).json()["run_id"] for i in range(3)]
            until(lambda: any(run_state(http, run_id) == "running" for run_id in ids), what="a run to start")
        serve.kill()  # SIGKILL: nothing is drained or recorded
        serve.open_gate()
        serve.start()
        with serve.client() as http:
            for run_id in ids:  # the one running at the kill reads abandoned until it resumes
                until(lambda run_id=run_id: run_state(http, run_id) == "completed", timeout=60,
                      what=f"{run_id} to complete after the restart")
            again = http.post("/runs", json={"hierarchy": "gated"}, headers={"Idempotency-Key": "k9-0"})
            assert again.status_code == 200 and again.json()["run_id"] == ids[0]
    finally:
        serve.stop()
    assert sorted(line["idempotency_key"].split(":")[0] for line in serve.charges()) == sorted(ids)


def test_sigterm_hands_back_what_the_grace_period_does_not_finish(tmp_path: Path) -> None:
    serve = Serve(tmp_path, fleet=FLEET.replace("max_depth: 2", "max_depth: 10"), extra_args=("--grace", "1s"))
    serve.start()
    try:
        with serve.client() as http:  # gate closed: one run held at it, one queued behind it
            ids = [http.post("/runs", json={"hierarchy": "gated", "input": {"n": i}}).json()["run_id"]
                   for i in range(2)]
            until(lambda: any(run_state(http, run_id) == "running" for run_id in ids), what="a run to start")
        serve.signal(signal.SIGTERM)
        assert serve.wait(60) == 143
        # Handed back: the held run, and the queued one when DBOS had dequeued it already (else it is still
        # DBOS's alone); either way both are in durable.db for the next serve.
        err = serve.stderr()
        assert re.search(r"drained: \d+ run\(s\) finished, [12] left queued or running", err), err
        assert serve.charges() == []
        serve.open_gate()
        serve.start()  # the next serve on the store finishes both, once each
        with serve.client() as http:
            for run_id in ids:  # the one stopped at the grace's end reads `killed` until it resumes
                until(lambda run_id=run_id: run_state(http, run_id) == "completed", timeout=60,
                      what=f"{run_id} to complete after the restart")
    finally:
        serve.stop()
    assert sorted(line["idempotency_key"].split(":")[0] for line in serve.charges()) == sorted(ids)
