"""Issue 16, fencing: a durable engine on a shared Postgres store that stalled past the takeover threshold (here
SIGSTOPped) has its runs taken by a live engine; when it wakes it must start no further step of them, write none of
their ends, stop beating and exit non-zero saying why (runtime/durable_fence.py). Real engines in subprocesses, a real
PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psycopg
import pytest

from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.engine_registry import claim_engine_id
from engine.store.pg.liveness import Liveness
from tests.engine_helpers import Approver
from tests.store_pg.pg_durable_support import assert_each_side_effect_once, ledger_lines, query, start
from tests.store_support import wait_until


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def test_a_claimed_engines_beat_is_refused_and_a_beating_engine_cannot_be_claimed(pg_url: str) -> None:
    stalled, taker = Liveness(pg(pg_url)), Liveness(pg(pg_url))
    now = time.time()
    claim_engine_id(pg(pg_url), engine_id="stalled", pid=1, host="elsewhere", user="t", version="t", started=now - 60)
    claim_engine_id(pg(pg_url), engine_id="taker", pid=1, host="elsewhere", user="t", version="t", started=now)
    assert taker.beat("taker", now) is None
    # The stalled engine beats again just before the taker claims it: it is alive, the claim finds nothing.
    assert stalled.beat("stalled", now) is None
    assert not taker.claim("stalled", "taker", time.time(), 10.0)
    # Silent past the threshold: claimed. Its next beat is refused (not written) and names the taker.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE engines SET heartbeat = %s WHERE id = 'stalled'", (now - 60,))
    assert taker.claim("stalled", "taker", time.time(), 10.0)
    fence = stalled.beat("stalled", time.time())
    assert fence is not None and fence.taken_by == "taker"
    assert query(pg_url, "SELECT heartbeat FROM engines WHERE id = 'stalled'") == [(now - 60,)]
    # Its own claim on itself (a restart under a stable id forgets claims on it first) is no fence.
    stalled.forget_claims_on("stalled")
    assert stalled.beat("stalled", time.time()) is None
    stalled.close()
    taker.close()


@pytest.mark.slow
def test_a_stalled_engine_whose_runs_were_taken_starts_no_further_step(tmp_path: Path, pg_url: str) -> None:
    ledger = tmp_path / "ledger.jsonl"
    dirs = [tmp_path / "stalls", tmp_path / "takes"]
    approvers = [Approver(path) for path in dirs]
    for approver in approvers:
        approver.__enter__()
    taker = start(dirs[1], pg_url, "standby", 0, ledger)
    stalls = None
    try:
        ready = taker.stdout.readline()  # type: ignore[union-attr]
        assert ready.startswith("ready"), (ready, taker.stderr.read() if taker.poll() is not None else "")  # type: ignore[union-attr]
        taker_id = ready.split()[1]
        stalls = start(dirs[0], pg_url, "run", 4, ledger)
        wait_until(lambda: stalls.poll() is not None or len(ledger_lines(ledger)) >= 2, timeout=120,
                   what="2 side effects")
        assert stalls.poll() is None, stalls.communicate()[1][-3000:]
        stalls.send_signal(signal.SIGSTOP)  # a stall: a frozen VM, a long pause
        (stalled_id,) = [row[0] for row in query(pg_url, "SELECT id FROM engines WHERE id != %s", (taker_id,))]
        interrupted = {run for run, status in query(pg_url, "SELECT id, status FROM runs") if status == "running"}
        assert interrupted, "the stall came after every run had ended: nothing was interrupted"
        wait_until(lambda: query(pg_url, "SELECT taken_by FROM durable_takeovers WHERE engine_id = %s AND done",
                                 (stalled_id,)) == [(taker_id,)], timeout=60, what="the taker to take the runs")
        wait_until(lambda: all(status in ("completed", "needs_reconcile") for run, status in
                               query(pg_url, "SELECT id, status FROM runs") if run in interrupted),
                   timeout=180, what="the taken runs to finish on the taker")
        before = dict(query(pg_url, "SELECT id, status FROM runs"))
        woke = time.time()
        stalls.send_signal(signal.SIGCONT)
        out, err = stalls.communicate(timeout=120)
        out_taker, err_taker = taker.communicate("\n", timeout=120)
        assert taker.returncode == 0, err_taker[-3000:]
    finally:
        for child in (taker, stalls):
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGCONT)
                child.kill()
        for approver in approvers:
            approver.__exit__(None, None, None)
    # No model call, and no tool call that ran, started on the woken engine; no run row the taker wrote changed.
    late = query(pg_url, "SELECT run_id, kind, name, status FROM spans WHERE kind IN ('llm', 'tool') AND started >= %s",
                 (woke,))
    assert not [span for span in late if span[1] == "llm" or span[3] != "cancelled"], late
    assert dict(query(pg_url, "SELECT id, status FROM runs")) == before
    assert_each_side_effect_once(ledger)
    # It stopped, non-zero, saying why.
    assert stalls.returncode == 3, (out, err[-3000:])
    assert f"engine {taker_id} took its runs; it stops so no step runs twice" in err, err[-3000:]
    assert set(json.loads(out_taker.split("took", 1)[1])["claimed"]) == {stalled_id}
    # It does not look alive to the fleet: stopped, no beat since it woke; an event says what happened.
    ((stopped, heartbeat),) = query(pg_url, "SELECT stopped, heartbeat FROM engines WHERE id = %s", (stalled_id,))
    assert stopped is not None and heartbeat < woke
    fenced = query(pg_url, "SELECT data FROM events WHERE kind = 'engine.fenced'")
    assert len(fenced) == 1 and taker_id in json.loads(fenced[0][0])["reason"]
