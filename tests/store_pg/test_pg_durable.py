"""Issue 16, durable runs on a Postgres store: DBOS's system tables in the store's own database (schema
flightdeck_dbos), replay read from the Postgres trace tables, a SIGKILLed engine's runs carried on by the next
engine on its directory, and a dead engine's runs taken over by one live engine of several sharing the database,
with no side effect run twice. Real engines (in subprocesses where one is killed), a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import anyio
import pytest

from engine.controls.api import ControlAPI
from engine.durable.host import SYSTEM_SCHEMA
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.engine_registry import claim_engine_id
from engine.store.pg.liveness import Liveness
from tests.durable_support import CHARGING, Charging
from tests.engine_helpers import Approver
from tests.store_pg.pg_durable_support import assert_each_side_effect_once, ledger_lines, query, start
from tests.store_support import store_lock_free, wait_until


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def test_a_durable_run_keeps_dbos_tables_in_the_store_database(tmp_path: Path, pg_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "charging.yaml"
    path.write_text(CHARGING)
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("FLIGHTDECK_TEST_LEDGER", str(ledger))

    async def go() -> object:
        with open_engine_store(tmp_path / "store", traces_to=pg(pg_url)) as store:
            async with Engine(store, latency_scale=0.0, runbooks=False, durable=True) as engine:
                return await engine.run(load_hierarchy(str(path)), RunRequest(input="charge"))

    result = anyio.run(go)
    assert result.status == "completed", result  # type: ignore[attr-defined]
    assert len(ledger.read_text().splitlines()) == 2
    assert not (tmp_path / "store" / "durable.db").exists()
    tables = {row[0] for row in query(pg_url, "SELECT table_name FROM information_schema.tables "
                                              "WHERE table_schema = %s", (SYSTEM_SCHEMA,))}
    assert "workflow_status" in tables
    run_id = result.run_id  # type: ignore[attr-defined]
    statuses = dict(query(pg_url, f"SELECT workflow_uuid, status FROM {SYSTEM_SCHEMA}.workflow_status"))
    assert statuses[run_id] == "SUCCESS"
    assert sorted(wf for wf in statuses if wf.startswith(f"{run_id}:")) == [f"{run_id}:clerk.0.0", f"{run_id}:clerk.1.0"]
    (durable,) = query(pg_url, "SELECT attributes FROM runs WHERE id = %s", (run_id,))[0]
    assert json.loads(durable)["durable"] is True


def register(url: str, engine_id: str, at: float) -> None:
    """An engine's row in the registry (on another host, so only its heartbeat says whether it lives)."""
    claim_engine_id(pg(url), engine_id=engine_id, pid=1, host="elsewhere", user="t", version="t", started=at)


def test_two_engines_claiming_one_dead_engine_take_it_once(pg_url: str) -> None:
    live = [Liveness(pg(pg_url)) for _ in range(8)]
    now = time.time()
    register(pg_url, "dead", now - 60)  # its heartbeat (the registry's) stopped a minute ago
    for i, one in enumerate(live):
        register(pg_url, f"taker{i}", now)
        one.beat(f"taker{i}", now)
    wins: list[str] = []
    barrier = threading.Barrier(len(live))

    def claim(i: int) -> None:
        barrier.wait()
        if live[i].claim("dead", f"taker{i}", time.time(), 10.0):
            wins.append(f"taker{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(live))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1, wins
    assert live[1].claims() == {"dead": wins[0]}
    assert live[1].dead_unclaimed("taker1", time.time(), 10.0) == []
    # The taker dies before it resumed anything: its claim is void, and the next engine claims both.
    live[0].mark_stopped([wins[0]], time.time())
    survivor = next(f"taker{i}" for i in range(len(live)) if f"taker{i}" != wins[0])
    other = live[int(survivor[5:])]
    assert set(other.dead_unclaimed(survivor, time.time(), 10.0)) == {"dead", wins[0]}
    assert other.claim("dead", survivor, time.time(), 10.0)
    assert not live[0].claim("dead", "late", time.time(), 10.0)  # the survivor is live: its claim stands
    # Once the survivor resumed the runs onto its own queue, the claim is final even after the survivor stops.
    other.finish(["dead"], survivor)
    other.mark_stopped([survivor], time.time())
    assert "dead" not in live[0].dead_unclaimed("late", time.time(), 10.0)
    assert not live[0].claim("dead", "late", time.time(), 10.0)
    # The dead engine comes back under its stable id: the old claim is history, and its next death is claimable.
    register(pg_url, "dead", time.time())
    live[2].forget_claims_on("dead")
    assert "dead" not in live[0].dead_unclaimed("late", time.time(), 10.0)  # alive now
    live[2].mark_stopped(["dead"], time.time())
    assert "dead" in live[0].dead_unclaimed("late", time.time(), 10.0)
    # Every life of an engine is a DBOS executor of its own; its runs are looked for under all of them.
    assert live[0].register_executor("dead~1", "dead", time.time()) == ["dead"]
    assert live[0].register_executor("dead~2", "dead", time.time()) == ["dead", "dead~1"]
    assert live[1].executors_of(["dead", "taker1"]) == ["dead", "taker1", "dead~1", "dead~2"]
    for one in live:
        one.close()


def _kill_after_side_effects(child, ledger: Path, count: int) -> None:  # type: ignore[no-untyped-def]
    wait_until(lambda: child.poll() is not None or len(ledger_lines(ledger)) >= count, timeout=120,
               what=f"{count} side effects")
    assert child.poll() is None, child.communicate()[1][-3000:]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def _statuses(url: str) -> dict[str, str]:
    return dict(query(url, "SELECT id, status FROM runs"))


@pytest.mark.slow
def test_sigkilled_engine_on_postgres_resumes_without_duplicate_side_effects(tmp_path: Path, pg_url: str) -> None:
    store_dir, ledger = tmp_path / "store", tmp_path / "ledger.jsonl"
    with Approver(store_dir):
        child = start(store_dir, pg_url, "run", 4, ledger)
        try:
            _kill_after_side_effects(child, ledger, 2)
        finally:
            if child.poll() is None:
                child.kill()
        wait_until(lambda: store_lock_free(store_dir), timeout=30, what="the dead engine's writer to exit")
        committed = {row[0] for row in query(pg_url, "SELECT id FROM spans")}
        interrupted = {run for run, status in _statuses(pg_url).items() if status == "running"}
        again = start(store_dir, pg_url, "resume", 0, ledger)
        out, err = again.communicate(timeout=180)
        assert again.returncode == 0, err[-3000:]
    assert interrupted, "the kill landed after every run had ended: nothing was interrupted"
    resumed = json.loads(out.split("resumed", 1)[1])
    assert set(resumed) == interrupted, (out, err[-2000:])
    runs = _statuses(pg_url)
    for run_id in interrupted:
        assert runs[run_id] in ("completed", "needs_reconcile"), (run_id, runs[run_id], err[-2000:])
    assert_each_side_effect_once(ledger)
    after = {row[0] for row in query(pg_url, "SELECT id FROM spans")}
    assert committed <= after, "a span committed before the kill is gone"
    # What the resumed runs replayed (answers read from the Postgres trace tables, side effects from DBOS) instead
    # of running again (a run killed before its first answer was recorded has nothing to replay).
    carried = dict(query(pg_url, "SELECT id, replayed_steps FROM runs WHERE resumed = 1"))
    assert set(carried) == interrupted
    assert any(steps > 0 for steps in carried.values()), carried
    llm = query(pg_url, "SELECT attributes FROM spans WHERE kind = 'llm' AND run_id = ANY(%s)", (list(interrupted),))
    assert [a for (a,) in llm if json.loads(a).get("replayed")], "no model answer was replayed from Postgres"


@pytest.mark.slow
def test_a_dead_engines_runs_are_taken_over_once_by_one_live_engine(tmp_path: Path, pg_url: str) -> None:
    ledger = tmp_path / "ledger.jsonl"
    dirs = [tmp_path / name for name in ("a", "b", "c")]
    approvers = [Approver(path) for path in dirs]
    for approver in approvers:
        approver.__enter__()
    standby = [start(path, pg_url, "standby", 0, ledger) for path in dirs[1:]]
    try:
        ready = [child.stdout.readline() for child in standby]  # type: ignore[union-attr]
        assert all(line.startswith("ready") for line in ready), ready
        doomed = start(dirs[0], pg_url, "run", 4, ledger)
        try:
            _kill_after_side_effects(doomed, ledger, 2)
        finally:
            if doomed.poll() is None:
                doomed.kill()
        wait_until(lambda: store_lock_free(dirs[0]), timeout=30, what="the dead engine's writer to exit")
        interrupted = {run for run, status in _statuses(pg_url).items() if status == "running"}
        assert interrupted, "the kill landed after every run had ended: nothing was interrupted"
        wait_until(lambda: all(_statuses(pg_url)[run] in ("completed", "needs_reconcile") for run in interrupted),
                   timeout=180, what="the dead engine's runs to finish on a live engine")
        took = []
        for child in standby:
            out, err = child.communicate("\n", timeout=120)
            assert child.returncode == 0, err[-3000:]
            took.append(json.loads(out.split("took", 1)[1]))
    finally:
        for child in standby:
            if child.poll() is None:
                child.kill()
        for approver in approvers:
            approver.__exit__(None, None, None)
    (dead,) = [row[0] for row in query(pg_url, "SELECT id FROM engines") if row[0] not in {t["engine"] for t in took}]
    takers = [t for t in took if dead in t["claimed"]]
    assert len(takers) == 1, took  # one live engine took the dead one's runs, not both
    assert set(takers[0]["runs"]) == interrupted
    assert not [t for t in took if t is not takers[0] and t["runs"]], took
    events = query(pg_url, "SELECT run_id, data FROM events WHERE kind = 'run.taken_over'")
    assert sorted(run for run, _data in events) == sorted(interrupted)  # each run taken over once
    assert {json.loads(data)["engine_id"] for _run, data in events} == {takers[0]["engine"]}
    assert_each_side_effect_once(ledger)


@pytest.mark.slow
def test_no_resume_on_postgres_leaves_a_dead_engines_run_for_the_next_engine(tmp_path: Path, pg_url: str) -> None:
    charging = Charging(tmp_path, pg_url=pg_url)
    crashed = charging.run(crash=True)  # SIGKILLed inside its first charge: that outcome is unknown
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert charging.restart(auto_resume=False) == []  # claims nothing: the run stays PENDING in DBOS
    (run_id,) = [run for run, status in _statuses(pg_url).items() if status == "abandoned"]
    (data,) = query(pg_url, "SELECT data FROM events WHERE kind = 'run.not_resumed' AND run_id = %s", (run_id,))[0]
    assert "auto-resume is off" in json.loads(data)["reason"]
    statuses = dict(query(pg_url, f"SELECT workflow_uuid, status FROM {SYSTEM_SCHEMA}.workflow_status"))
    assert statuses[run_id] == "PENDING"
    # The next engine that carries runs on takes it (its predecessors on the directory are dead) and, the charge's
    # outcome unknown and the tool not idempotent, stops it needs_reconcile: the charge is not run again.
    assert charging.restart() == [run_id]
    assert _statuses(pg_url)[run_id] == "needs_reconcile"
    assert [line["amount"] for line in charging.lines()] == [5]


@pytest.mark.slow
def test_a_dead_engines_run_an_operator_killed_is_not_taken_over(tmp_path: Path, pg_url: str) -> None:
    charging = Charging(tmp_path, pg_url=pg_url)
    crashed = charging.run(crash=True)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    (run_id,) = [run for run, status in _statuses(pg_url).items() if status == "running"]
    with ControlAPI(charging.store, "test-operator") as api:
        api.set_kill("run", run_id, "kill", "leave it stopped")
    assert charging.restart() == []
    (data,) = query(pg_url, "SELECT data FROM events WHERE kind = 'run.not_resumed' AND run_id = %s", (run_id,))[0]
    assert "kill switch" in json.loads(data)["reason"]
    assert not query(pg_url, "SELECT 1 FROM events WHERE kind = 'run.taken_over'")
    statuses = dict(query(pg_url, f"SELECT workflow_uuid, status FROM {SYSTEM_SCHEMA}.workflow_status"))
    assert statuses[run_id] == "PENDING"
    assert [line["amount"] for line in charging.lines()] == [5]  # the charge in flight at the kill, not again


def test_an_unreachable_store_fails_a_beat_with_the_password_masked() -> None:
    from engine.errors import StoreError
    from tests.pg_support import free_port

    liveness = Liveness(pg(f"postgresql://fd:s3cret@127.0.0.1:{free_port()}/traces"))  # nothing listens there
    with pytest.raises(StoreError) as failed:
        liveness.beat("engine", time.time())
    assert "s3cret" not in str(failed.value) and "fd:***@127.0.0.1" in str(failed.value)
    liveness.close()


def test_the_takeover_threshold_from_the_environment_is_checked() -> None:
    from engine.errors import InputError
    from engine.runtime.durable_takeover import TAKEOVER_AFTER_ENV, takeover_after

    assert takeover_after({}) is None
    assert takeover_after({TAKEOVER_AFTER_ENV: "2.5"}) == 2.5
    for bad in ("0", "soon", "99999"):
        with pytest.raises(InputError) as refused:
            takeover_after({TAKEOVER_AFTER_ENV: bad})
        assert refused.value.field == TAKEOVER_AFTER_ENV
