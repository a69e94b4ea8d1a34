"""Issue 16, daily budgets shared by every engine on one Postgres store (engine/guardrails/budget/shared.py over
engine/store/pg/daily_allowance.py): several engines, each with its own store directory and its traces on the same
Postgres (`open_engine_store(dir, traces_to=...)`), run one hierarchy with a small daily cap at the same time: the
runs' settled spend together never exceeds it, and the later runs end on the hierarchy_daily cap. A killed holder's
lease comes back after it expires, its unreported spend recovered from the traces; a new engine keeps the day's
spend. Real engines and ledgers in this process, a killed process, a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.clock import SYSTEM_CLOCK
from engine.guardrails.budget import Actual, BudgetLedger, BudgetLimits, Demand
from engine.guardrails.budget.shared import LeaseRenewer, SharedDaily
from engine.guardrails.budget.vectors import NANO
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store
from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.connection import connect
from engine.store.pg.daily_allowance import PgDailyAllowance, open_daily_allowance
from engine.store.pg.schema import migrate
from tests.engine_helpers import write_hierarchy
from tests.store_support import wait_until

# The daily-cap hierarchy of tests/engine/test_guardrails_runtime.py: a run spends ~$0.0011, and the lead reserves
# its worst case ($0.003) before each of its calls. $0.006 a day is about five runs, for all engines together.
WORKER = """
name: budgeted
entry: lead
models:
  big: {model: m-big, tier: strong, price_in: 3, price_out: 15, latency: 0, latency_per_token: 0,
        max_output_tokens: 200}
  small: {model: m-small, tier: economy, price_in: 0.15, price_out: 0.6, latency: 0, latency_per_token: 0,
          max_output_tokens: 200}
tools:
  add: {function: "tests.fixture_tools:add"}
agents:
  lead: {contract: Leads., model: big, delegates: [worker]}
  worker: {contract: Adds numbers., model: small, tools: [add], max_steps: 30}
scripts:
  lead:
    - delegate: [{agent: worker, task: add up}]
    - final: lead done
  worker:
    - {tool: {name: add, args: {a: 1, b: 1}}}
    - {tool: {name: add, args: {a: 1, b: 2}}}
    - {tool: {name: add, args: {a: 1, b: 3}}}
    - final: worker done
budgets:
  daily: {cost_usd: 0.006}
"""
CAP = 0.006


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def run_engine(store_dir: Path, url: str, hierarchy: Any, runs: int, results: list[Any]) -> None:
    """One engine (its own directory, traces and allowance on `url`) running `runs` runs two at a time."""
    async def go() -> None:
        with open_engine_store(store_dir, traces_to=pg(url)) as store:
            async with Engine(store, latency_scale=0, runbooks=False) as engine:
                results.extend(await engine.run_many(hierarchy, [RunRequest(input="go", seed=i) for i in range(runs)],
                                                     concurrency=2))
                engine.writer.flush()

    anyio.run(go)


def stored(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_engines_sharing_a_postgres_never_exceed_the_daily_cap_together(tmp_path: Path, pg_url: str) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER)
    results: list[list[Any]] = [[], [], []]
    # Each engine alone would finish four runs (~$0.0044, under the cap): only a cap shared between them stops
    # the three together at ~$0.006.
    threads = [threading.Thread(target=run_engine, args=(tmp_path / f"engine{i}", pg_url, hierarchy, 4, results[i]))
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    every = [r for one in results for r in one]
    assert len(every) == 12
    assert all(one and one[0].status in ("completed", "budget_exceeded") for one in results)
    spent = sum(r.cost_usd for r in every)
    assert spent <= CAP + 1e-12, (spent, [r.status for r in every])
    (traced,) = stored(pg_url, "SELECT sum(cost_usd) FROM runs WHERE hierarchy = 'budgeted'")[0]
    assert abs(traced - spent) < 1e-9  # the traces' spend: what the cap is about
    statuses = [r.status for r in every]
    # Worst cases are reserved before each call ($0.003 for the lead's), so runs in flight at once on all engines
    # are refused early rather than risk the cap: at least one finishes, and the later ones end on the cap.
    assert "completed" in statuses and "budget_exceeded" in statuses, statuses
    assert all("hierarchy_daily budget 'daily:budgeted' exhausted on cost_usd" in (r.error or "")
               for r in every if r.status == "budget_exceeded")
    # The refusals are the daily cap's, with its event, as on one engine.
    breaches = [json.loads(row[0]) for row in stored(pg_url, "SELECT data FROM events WHERE kind = 'budget.exceeded'")]
    assert breaches and {b["scope_kind"] for b in breaches} == {"hierarchy_daily"}, breaches
    # Every engine gave its unspent slice back when it stopped, and reported what it spent.
    assert stored(pg_url, "SELECT count(*) FROM budget_leases") == [(0,)]
    (reported,) = stored(pg_url, "SELECT sum(cost_nano) FROM budget_daily_spend WHERE hierarchy = 'budgeted'")[0]
    assert abs(int(reported) - round(spent * NANO)) <= 3 * len(every)  # nano rounding per settled call


def test_a_new_engine_keeps_the_days_spend(tmp_path: Path, pg_url: str) -> None:
    hierarchy = write_hierarchy(tmp_path, WORKER)
    first: list[Any] = []
    run_engine(tmp_path / "first", pg_url, hierarchy, 2, first)  # ~$0.002 of the day's $0.006
    assert [r.status for r in first] == ["completed"] * 2, [(r.status, r.cost_usd, r.error) for r in first]
    (reported,) = stored(pg_url, "SELECT sum(cost_nano) FROM budget_daily_spend WHERE hierarchy = 'budgeted'")[0]
    assert abs(int(reported) / NANO - sum(r.cost_usd for r in first)) < 1e-8  # in the database, not in the engine
    later: list[Any] = []
    run_engine(tmp_path / "second", pg_url, hierarchy, 3, later)  # another directory, the same day's spend
    assert later[0].status == "budget_exceeded", [r.status for r in later]  # $0.002 + a $0.0037 worst case: over
    assert sum(r.cost_usd for r in first + later) <= CAP + 1e-12


def ledger_drawing(source: SharedDaily, limit_usd: float, call_usd: float, calls: list[float]) -> None:
    """One engine's ledger: reserve `call_usd`, settle a little less, until the shared daily cap refuses."""
    ledger = BudgetLedger(SYSTEM_CLOCK, call_events=False, attribution=False)
    ledger.open_scope("daily:h", "hierarchy_daily", BudgetLimits(cost_usd=limit_usd), labels={"hierarchy": "h"})
    ledger.share_daily("daily:h", source)
    ledger.open_scope("run", "run", None, parent="daily:h")
    while True:
        held = ledger.reserve("run", Demand(cost_usd=call_usd, model_calls=1))
        if not held.ok:
            assert held.scope_kind == "hierarchy_daily" and "exhausted on cost_usd" in held.message  # type: ignore
            break
        ledger.settle(held, Actual(cost_usd=call_usd * 0.9, model_calls=1))  # type: ignore[arg-type]
        calls.append(call_usd * 0.9)
    ledger.close_scope("run")  # idle: the slice goes back


def test_ledgers_under_contention_spend_at_most_the_cap_and_nearly_all_of_it(pg_url: str) -> None:
    sources = [open_daily_allowance(pg(pg_url), f"engine-{i}") for i in range(4)]
    calls: list[list[float]] = [[] for _ in sources]
    threads = [threading.Thread(target=ledger_drawing, args=(SharedDaily(source, "h", NANO), 1.0, 0.01, calls[i]))
               for i, source in enumerate(sources) if source is not None]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    spent = sum(sum(c) for c in calls)
    assert spent <= 1.0 + 1e-9
    # Each engine spends from its own slices, and the idle slices went back: the cap is not stranded.
    assert spent > 1.0 - 4 * 0.01, spent
    assert sum(1 for c in calls if c) >= 2  # the engines really did share it
    assert stored(pg_url, "SELECT count(*) FROM budget_leases") == [(0,)]
    # ~101 calls against a $1 cap in slices of $0.10: a round trip per slice, not per call.
    for source in sources:
        assert source is not None
        source.close()


LEASE_AND_HANG = """
import sys
from engine.store.location import parse_store_location
from engine.store.pg.daily_allowance import PgDailyAllowance
source = PgDailyAllowance(parse_store_location(sys.argv[1]), "dead-engine", ttl=float(sys.argv[2]))
grant = source.exchange("h", 1000, report=0, keep=0, want=800, at_least=800)
print(grant.held, flush=True)
sys.stdin.read()
"""


def test_a_killed_engines_lease_comes_back_after_it_expires(tmp_path: Path, pg_url: str) -> None:
    conn = connect(pg(pg_url))
    migrate(conn, pg(pg_url))  # the trace tables: the dead engine's runs are where its unreported spend is
    conn.execute("INSERT INTO runs (id, hierarchy, engine_id, status, started, cost_usd) VALUES "
                 "('r1', 'h', 'dead-engine', 'running', %s, 0.0000003)", (time.time(),))  # 300 nano-dollars
    conn.close()
    ttl = 2.0
    dead = subprocess.Popen([sys.executable, "-c", LEASE_AND_HANG, pg_url, str(ttl)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert dead.stdout is not None and dead.stdout.readline().strip() == "800"
        killed_at = time.monotonic()
        dead.kill()  # SIGKILL: nothing given back, nothing reported
        dead.wait(timeout=10)
        live = PgDailyAllowance(pg(pg_url), "live-engine")
        try:
            first = live.exchange("h", 1000, report=0, keep=0, want=500, at_least=500)
            if time.monotonic() - killed_at < ttl:
                assert first.held == 0 and first.others == 800  # the dead lease still counts until it expires
            grant = wait_until(lambda: live.exchange("h", 1000, report=0, keep=0, want=500, at_least=500).held,
                               timeout=ttl + 10, what="the dead engine's lease to expire")
            assert grant == 500
            # Its slice came back, less what its run cost (reconciled from the traces): 1000 - 300 spent - 500.
            other = PgDailyAllowance(pg(pg_url), "third-engine")
            try:
                refused = other.exchange("h", 1000, report=0, keep=0, want=201, at_least=201)
                assert refused.held == 0 and refused.spent == 300 and refused.others == 500
                assert other.exchange("h", 1000, report=0, keep=0, want=200, at_least=200).held == 200
            finally:
                other.close()
        finally:
            live.close()
    finally:
        if dead.poll() is None:
            dead.kill()


def test_a_store_directory_has_no_shared_allowance(tmp_path: Path) -> None:
    from engine.store.location import StoreDirectory

    assert open_daily_allowance(StoreDirectory(tmp_path), "engine") is None  # one engine per directory: in memory


@pytest.mark.parametrize("keep_lost", [False, True])
def test_a_lease_lost_while_stalled_is_asked_for_again(pg_url: str, keep_lost: bool) -> None:
    """An engine that stalled past its lease's life has nothing backing what it kept: it gets it back only if it
    still fits."""
    stalled = PgDailyAllowance(pg(pg_url), "stalled", ttl=0.5 if keep_lost else 60)
    other = PgDailyAllowance(pg(pg_url), "other")
    try:
        assert stalled.exchange("h", 1000, report=0, keep=0, want=600, at_least=600).held == 600
        if keep_lost:
            wait_until(lambda: other.exchange("h", 1000, report=0, keep=0, want=700, at_least=700).held,
                       timeout=10, what="the stalled lease to expire")
        renewed = stalled.exchange("h", 1000, report=0, keep=600, want=0, at_least=0)
        assert renewed.held == (0 if keep_lost else 600)
    finally:
        stalled.close()
        other.close()


def lease_row(url: str, holder: str) -> tuple[int, float] | None:
    rows = stored(url, "SELECT held_nano, expires FROM budget_leases WHERE holder = %s", (holder,))
    return (int(rows[0][0]), float(rows[0][1])) if rows else None


def shared_ledger(source: PgDailyAllowance, cap_usd: float) -> BudgetLedger:
    ledger = BudgetLedger(SYSTEM_CLOCK, call_events=False, attribution=False)
    ledger.open_scope("daily:h", "hierarchy_daily", BudgetLimits(cost_usd=cap_usd), labels={"hierarchy": "h"})
    ledger.share_daily("daily:h", SharedDaily(source, "h", round(cap_usd * NANO)))
    ledger.open_scope("run", "run", None, parent="daily:h")
    return ledger


def test_a_lease_is_renewed_while_a_call_holds_it_and_given_back_when_the_engine_stops(pg_url: str) -> None:
    source = PgDailyAllowance(pg(pg_url), "slow-engine", ttl=0.6)
    other = PgDailyAllowance(pg(pg_url), "other")
    ledger = shared_ledger(source, 1.0)
    renewer = LeaseRenewer(lambda give_back: ledger.renew_shared(give_back=give_back), source.ttl)
    try:
        held = ledger.reserve("run", Demand(cost_usd=0.05))  # a slow call: it outlives the lease's first life
        assert held.ok
        first = lease_row(pg_url, "slow-engine")
        assert first is not None and first[0] == NANO // 10  # a tenth of the cap
        # Renewed past the first expiry (expires = the database's now + ttl): now is later than `first` expired.
        wait_until(lambda: (row := lease_row(pg_url, "slow-engine")) and row[1] > first[1] + source.ttl,
                   what="the lease renewed past its first expiry")
        # Still counted against everyone else: not reclaimed as a dead engine's.
        assert other.exchange("h", NANO, report=0, keep=0, want=0, at_least=0).others == NANO // 10
        ledger.settle(held, Actual(cost_usd=0.04))  # type: ignore[arg-type]
    finally:
        renewer.stop()  # the engine stops: the slice goes back, the spend is reported
    assert lease_row(pg_url, "slow-engine") is None
    assert stored(pg_url, "SELECT sum(cost_nano) FROM budget_daily_spend") == [(round(0.04 * NANO),)]
    source.close()
    other.close()


def test_an_unreachable_database_refuses_new_spend_and_the_next_exchange_reconnects(pg_url: str) -> None:
    source = PgDailyAllowance(pg(pg_url), "engine")
    ledger = shared_ledger(source, 1.0)
    try:
        first = ledger.reserve("run", Demand(cost_usd=0.01))
        assert first.ok
        ledger.settle(first, Actual(cost_usd=0.01))  # type: ignore[arg-type]
        with psycopg.connect(pg_url, autocommit=True) as admin:  # the database drops the engine's connection
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'flightdeck-budget'")
        refused = ledger.reserve("run", Demand(cost_usd=0.5))  # more than the slice: it has to ask, and cannot
        assert not refused.ok
        assert refused.scope_kind == "hierarchy_daily"  # type: ignore[union-attr]
        assert "the shared daily allowance could not be leased" in refused.message  # type: ignore[union-attr]
        granted = ledger.reserve("run", Demand(cost_usd=0.5))  # reconnected
        assert granted.ok
        # The spend settled before the failure was reported by the exchange that succeeded.
        assert stored(pg_url, "SELECT sum(cost_nano) FROM budget_daily_spend") == [(round(0.01 * NANO),)]
    finally:
        source.close()


def test_a_slice_still_held_when_its_run_ended_goes_back_once_the_hierarchy_is_idle(pg_url: str) -> None:
    source = PgDailyAllowance(pg(pg_url), "engine", ttl=0.6)
    ledger = shared_ledger(source, 1.0)
    renewer = LeaseRenewer(lambda give_back: ledger.renew_shared(give_back=give_back), source.ttl)
    try:
        ledger.open_scope("agent", "agent", None, parent="run")
        late = ledger.reserve("agent", Demand(cost_usd=0.05))
        ledger.close_scope("run")  # the run ended with a call still open: the slice stays (the call may spend it)
        assert lease_row(pg_url, "engine") is not None
        ledger.settle(late, Actual(cost_usd=0.03))  # type: ignore[arg-type]
        wait_until(lambda: lease_row(pg_url, "engine") is None, what="the idle engine's slice to go back")
        assert stored(pg_url, "SELECT sum(cost_nano) FROM budget_daily_spend") == [(round(0.03 * NANO),)]
    finally:
        renewer.stop()
        source.close()
