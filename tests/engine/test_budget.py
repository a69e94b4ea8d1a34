"""Budget ledger: reservations against nested scopes on a FakeClock, exact event sequences, override parsing, and two
property tests (a model-checked interleaving of 50 callers, and 50 real threads racing one run budget)."""

from __future__ import annotations

import math
import random
import sys
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.clock import FakeClock
from engine.guardrails.budget import (
    Actual,
    Breach,
    BudgetEvent,
    BudgetLedger,
    BudgetLimits,
    Demand,
    Dimension,
    Reservation,
    merge_limits,
    parse_budget_overrides,
)

DAY = 86_400.0


def make(on_event: Any = None, **kwargs: Any) -> tuple[BudgetLedger, FakeClock]:
    clock = FakeClock()
    return BudgetLedger(clock, on_event, **kwargs), clock


def reserved_ok(ledger: BudgetLedger, scope_id: str, demand: Demand) -> Reservation:
    result = ledger.reserve(scope_id, demand)
    assert isinstance(result, Reservation), f"expected a reservation, got {result}"
    return result


def breached(ledger: BudgetLedger, scope_id: str, demand: Demand) -> Breach:
    result = ledger.reserve(scope_id, demand)
    assert isinstance(result, Breach), f"expected a breach, got {result}"
    return result


def spend(ledger: BudgetLedger, scope_id: str, demand: Demand, actual: Actual, **labels: str) -> None:
    ledger.settle(reserved_ok(ledger, scope_id, demand), actual, labels or None)


# -- every dimension stops work ------------------------------------------------------------------------------------

# dimension -> (limit, demand of `n` units of it, the matching actual)
SUMMED_CASES: dict[Dimension, tuple[float, Any, Any]] = {
    Dimension.input_tokens: (100, lambda n: Demand(input_tokens=n), lambda n: Actual(input_tokens=n)),
    Dimension.output_tokens: (100, lambda n: Demand(output_tokens=n), lambda n: Actual(output_tokens=n)),
    Dimension.total_tokens: (100, lambda n: Demand(input_tokens=n // 2, output_tokens=n - n // 2),
                             lambda n: Actual(input_tokens=n // 2, output_tokens=n - n // 2)),
    Dimension.cost_usd: (2.5, lambda n: Demand(cost_usd=n), lambda n: Actual(cost_usd=n)),
    Dimension.model_calls: (3, lambda n: Demand(model_calls=n), lambda n: Actual(model_calls=n)),
    Dimension.tool_calls: (3, lambda n: Demand(tool_calls=n), lambda n: Actual(tool_calls=n)),
    Dimension.retries: (2, lambda n: Demand(retries=n), lambda n: Actual(retries=n)),
}


@pytest.mark.parametrize("dimension", list(SUMMED_CASES), ids=str)
def test_each_summed_dimension_stops_work_at_its_limit(dimension: Dimension) -> None:
    limit, demand, actual = SUMMED_CASES[dimension]
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(**{dimension.value: limit}))

    spend(ledger, "run-1", demand(limit), actual(limit))  # exactly the limit is allowed
    step = 0.5 if dimension is Dimension.cost_usd else 2
    breach = breached(ledger, "run-1", demand(step))

    assert (breach.scope_id, breach.scope_kind, breach.dimension) == ("run-1", "run", dimension)
    assert (breach.limit, breach.used, breach.reserved, breach.requested) == (limit, limit, 0, step)
    assert dimension.value in breach.message and "run-1" in breach.message
    assert not breach.ok
    # A different dimension is still free to proceed: a breach is about this dimension, not the scope as a whole.
    other = Demand(tool_calls=1) if dimension is not Dimension.tool_calls else Demand(model_calls=1)
    assert reserved_ok(ledger, "run-1", other).ok


def test_wall_time_stops_work_measured_from_when_the_scope_opened() -> None:
    ledger, clock = make()
    clock.advance(100)  # the clock's origin is irrelevant: elapsed counts from open_scope
    ledger.open_scope("run-1", "run", BudgetLimits(wall_time_s="10s"))
    clock.advance(9.9)
    assert ledger.check("run-1") is None
    ledger.release(reserved_ok(ledger, "run-1", Demand(model_calls=1)))

    clock.advance(0.1)
    breach = breached(ledger, "run-1", Demand(model_calls=1))
    assert (breach.dimension, breach.scope_id, breach.limit) == (Dimension.wall_time_s, "run-1", 10.0)
    assert breach.used == pytest.approx(10.0)
    checked = ledger.check("run-1")
    assert checked is not None and checked.dimension is Dimension.wall_time_s


def test_max_context_is_a_per_call_ceiling_not_a_sum() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(max_context_tokens=8000))
    for _ in range(5):  # 5 x 8000 would blow any sum; each call is at the ceiling and allowed
        spend(ledger, "run-1", Demand(context_tokens=8000, model_calls=1), Actual(model_calls=1))
    breach = breached(ledger, "run-1", Demand(context_tokens=8001, model_calls=1))
    assert (breach.dimension, breach.limit, breach.requested) == (Dimension.max_context_tokens, 8000, 8001)
    usage = ledger.usage("run-1")[Dimension.max_context_tokens]
    assert (usage.used, usage.limit, usage.fraction) == (8000, 8000, 1.0)


def test_cost_sums_exactly_so_ten_dimes_fit_a_dollar() -> None:
    # In floats, 0.1 added ten times is 0.9999999999999999 and eleven times 1.0999999999999999; any epsilon fudge
    # would have to pick a side. Integer nano-dollars make the 10th fit and the 11th breach, exactly.
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(cost_usd=1.0))
    for _ in range(10):
        spend(ledger, "run-1", Demand(cost_usd=0.1), Actual(cost_usd=0.1))
    assert breached(ledger, "run-1", Demand(cost_usd=0.1)).dimension is Dimension.cost_usd
    assert ledger.usage("run-1")["cost_usd"].used == 1.0


# -- nesting --------------------------------------------------------------------------------------------------------


def open_chain(ledger: BudgetLedger, *, daily: BudgetLimits | None = None, run: BudgetLimits | None = None,
               agent: BudgetLimits | None = None) -> None:
    ledger.open_scope("acme-daily", "hierarchy_daily", daily, labels={"tenant": "acme"})
    ledger.open_scope("run-1", "run", run, parent="acme-daily", labels={"run": "run-1"})
    ledger.open_scope("agent-1", "agent", agent, parent="run-1", labels={"agent": "pricing"})


@pytest.mark.parametrize("tightest", ["acme-daily", "run-1", "agent-1"])
def test_the_tightest_scope_in_the_chain_breaches(tightest: str) -> None:
    caps = {"acme-daily": 10.0, "run-1": 10.0, "agent-1": 10.0, tightest: 1.0}
    ledger, _ = make()
    open_chain(ledger, daily=BudgetLimits(cost_usd=caps["acme-daily"]), run=BudgetLimits(cost_usd=caps["run-1"]),
               agent=BudgetLimits(cost_usd=caps["agent-1"]))
    spend(ledger, "agent-1", Demand(cost_usd=0.75), Actual(cost_usd=0.75))
    breach = breached(ledger, "agent-1", Demand(cost_usd=0.5))
    assert (breach.scope_id, breach.dimension, breach.limit, breach.used) == (tightest, Dimension.cost_usd, 1.0, 0.75)
    expected_kind = {"acme-daily": "hierarchy_daily", "run-1": "run", "agent-1": "agent"}[tightest]
    assert breach.scope_kind == expected_kind


def test_a_breach_is_atomic_nothing_is_reserved_anywhere() -> None:
    ledger, _ = make()
    open_chain(ledger, daily=BudgetLimits(cost_usd=100), run=BudgetLimits(model_calls=1),
               agent=BudgetLimits(cost_usd=100))
    held = reserved_ok(ledger, "agent-1", Demand(cost_usd=1.0, model_calls=1))
    # The agent and the daily cap would accept this, the run would not: none of them may keep any of it.
    assert breached(ledger, "agent-1", Demand(cost_usd=5.0, model_calls=1)).scope_id == "run-1"
    for scope in ("acme-daily", "run-1", "agent-1"):
        usage = ledger.usage(scope)
        assert (usage["cost_usd"].reserved, usage["model_calls"].reserved) == (1.0, 1), scope
    ledger.release(held)
    for scope in ("acme-daily", "run-1", "agent-1"):
        assert ledger.usage(scope)["cost_usd"].reserved == 0, scope


def test_a_breach_in_the_parent_stops_every_child() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(tool_calls=3))
    ledger.open_scope("agent-a", "agent", None, parent="run-1", labels={"agent": "a"})
    ledger.open_scope("agent-b", "agent", None, parent="run-1", labels={"agent": "b"})
    for _ in range(3):
        spend(ledger, "agent-a", Demand(tool_calls=1), Actual(tool_calls=1))
    breach = breached(ledger, "agent-b", Demand(tool_calls=1))  # b never used anything itself
    assert (breach.scope_id, breach.dimension, breach.used) == ("run-1", Dimension.tool_calls, 3)
    assert ledger.usage("agent-b")["tool_calls"].used == 0


def test_closing_a_scope_closes_its_children_and_keeps_spend_in_the_parent() -> None:
    ledger, _ = make()
    open_chain(ledger, run=BudgetLimits(cost_usd=5))
    spend(ledger, "agent-1", Demand(cost_usd=2), Actual(cost_usd=1.5))
    final = ledger.close_scope("run-1")
    assert final["cost_usd"].used == 1.5
    with pytest.raises(KeyError, match="agent-1"):
        ledger.reserve("agent-1", Demand(cost_usd=0.1))
    assert ledger.usage("acme-daily")["cost_usd"].used == 1.5
    ledger.open_scope("run-1", "run", None, parent="acme-daily")  # the id is free again


def test_scope_errors() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", None)
    with pytest.raises(ValueError, match="already open"):
        ledger.open_scope("run-1", "run", None)
    with pytest.raises(KeyError, match="nope"):
        ledger.open_scope("agent-1", "agent", None, parent="nope")
    with pytest.raises(ValueError, match="kind"):
        ledger.open_scope("x", "weekly", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hierarchy_daily"):
        ledger.seed_daily_spend("run-1", [(0.0, 1.0)])


# -- settle, release --------------------------------------------------------------------------------------------------


def test_settle_replaces_the_reservation_with_actual_usage_and_releases_the_rest() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(output_tokens=1000, cost_usd=1.0))
    held = reserved_ok(ledger, "run-1", Demand(output_tokens=800, cost_usd=0.8, model_calls=1))
    assert breached(ledger, "run-1", Demand(output_tokens=300)).reserved == 800  # the hold blocks others meanwhile
    ledger.settle(held, Actual(output_tokens=200, cost_usd=0.25, model_calls=1))

    usage = ledger.usage("run-1")
    assert (usage["output_tokens"].used, usage["output_tokens"].reserved) == (200, 0)
    assert (usage["cost_usd"].used, usage["cost_usd"].reserved) == (0.25, 0)
    assert usage["model_calls"].used == 1  # tracked though unlimited
    assert reserved_ok(ledger, "run-1", Demand(output_tokens=800, cost_usd=0.75)).ok  # exactly the rest


def test_actual_above_the_reservation_is_recorded_and_exhausts_the_scope() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(output_tokens=120))
    # A provider that ignores max_tokens: reserved 100, used 150. The ledger records the truth.
    ledger.settle(reserved_ok(ledger, "run-1", Demand(output_tokens=100)), Actual(output_tokens=150))
    assert ledger.usage("run-1")["output_tokens"].used == 150
    breach = ledger.check("run-1")
    assert breach is not None and (breach.dimension, breach.used) == (Dimension.output_tokens, 150)
    assert breached(ledger, "run-1", Demand()).dimension is Dimension.output_tokens  # even a zero demand


def test_release_gives_everything_back() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(cost_usd=1.0, model_calls=1))
    held = reserved_ok(ledger, "run-1", Demand(cost_usd=1.0, model_calls=1))
    assert not ledger.reserve("run-1", Demand(cost_usd=0.01)).ok
    ledger.release(held)
    usage = ledger.usage("run-1")
    assert (usage["cost_usd"].used, usage["cost_usd"].reserved, usage["model_calls"].reserved) == (0, 0, 0)
    assert reserved_ok(ledger, "run-1", Demand(cost_usd=1.0, model_calls=1)).ok


def test_a_reservation_is_settled_or_released_exactly_once() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(cost_usd=1.0))
    held = reserved_ok(ledger, "run-1", Demand(cost_usd=0.5))
    ledger.settle(held, Actual(cost_usd=0.5))
    assert held.state == "settled"
    with pytest.raises(RuntimeError, match="already settled"):
        ledger.settle(held, Actual(cost_usd=0.5))
    with pytest.raises(RuntimeError, match="already settled"):
        ledger.release(held)
    assert ledger.usage("run-1")["cost_usd"].used == 0.5  # the refused second settle changed nothing
    other, _ = make()
    other.open_scope("run-1", "run", None)
    with pytest.raises(ValueError, match="another ledger"):
        other.release(reserved_ok(ledger, "run-1", Demand(cost_usd=0.1)))


def test_negative_demands_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Demand(output_tokens=-1)
    with pytest.raises(ValueError, match="non-negative"):
        Actual(cost_usd=-0.01)
    with pytest.raises(ValueError, match="non-negative"):
        Demand(cost_usd=math.nan)


# -- rolling 24 h window --------------------------------------------------------------------------------------------


def test_daily_cap_is_a_rolling_24_hour_window() -> None:
    ledger, clock = make()
    open_chain(ledger, daily=BudgetLimits(cost_usd=10.0))
    spend(ledger, "agent-1", Demand(cost_usd=8.0), Actual(cost_usd=8.0))
    clock.advance(12 * 3600)
    ledger.close_scope("run-1")
    ledger.open_scope("run-2", "run", None, parent="acme-daily")
    spend(ledger, "run-2", Demand(cost_usd=1.0), Actual(cost_usd=1.0))
    assert breached(ledger, "run-2", Demand(cost_usd=3.0)).scope_id == "acme-daily"  # 8 + 1 + 3 > 10

    clock.advance(12 * 3600 + 60)  # the $8 is now over 24 h old (buckets are a minute wide); the $1 is not
    assert ledger.usage("acme-daily")["cost_usd"].used == 1.0
    assert reserved_ok(ledger, "run-2", Demand(cost_usd=9.0)).ok
    assert breached(ledger, "run-2", Demand(cost_usd=0.01)).scope_id == "acme-daily"


def test_spend_still_counts_until_it_is_24_hours_old() -> None:
    ledger, clock = make()
    ledger.open_scope("daily", "hierarchy_daily", BudgetLimits(cost_usd=1.0))
    spend(ledger, "daily", Demand(cost_usd=1.0), Actual(cost_usd=1.0))
    clock.advance(DAY - 1)
    assert breached(ledger, "daily", Demand(cost_usd=0.5)).used == 1.0


def test_seeded_history_counts_only_within_the_last_24_hours() -> None:
    ledger, clock = make()
    now = clock.time()
    ledger.open_scope("daily", "hierarchy_daily", BudgetLimits(cost_usd=5.0))
    ledger.seed_daily_spend("daily", [(now - 25 * 3600, 4.0), (now - 23 * 3600, 3.0), (now - 3600, 1.0)])
    assert ledger.usage("daily")["cost_usd"].used == 4.0  # the 25 h old $4 is out of the window
    assert breached(ledger, "daily", Demand(cost_usd=1.5)).used == 4.0
    clock.advance(3600 + 60)  # the 23 h old $3 ages out
    assert ledger.usage("daily")["cost_usd"].used == 1.0
    assert reserved_ok(ledger, "daily", Demand(cost_usd=4.0)).ok


def test_seeding_rejects_bad_entries() -> None:
    ledger, _ = make()
    ledger.open_scope("daily", "hierarchy_daily", BudgetLimits(cost_usd=5.0))
    with pytest.raises(ValueError, match="bad daily spend"):
        ledger.seed_daily_spend("daily", [(0.0, -1.0)])


# -- operator changes -------------------------------------------------------------------------------------------------


def test_set_limits_raises_and_lowers_a_running_budget() -> None:
    ledger, _ = make()
    ledger.open_scope("run-1", "run", BudgetLimits(tool_calls=2))
    for _ in range(2):
        spend(ledger, "run-1", Demand(tool_calls=1), Actual(tool_calls=1))
    assert breached(ledger, "run-1", Demand(tool_calls=1)).limit == 2

    ledger.set_limits("run-1", BudgetLimits(tool_calls=4))
    spend(ledger, "run-1", Demand(tool_calls=1), Actual(tool_calls=1))
    assert ledger.usage("run-1")["tool_calls"].limit == 4

    ledger.set_limits("run-1", BudgetLimits(tool_calls=1))  # below the 3 already used
    breach = breached(ledger, "run-1", Demand(model_calls=1))  # any next step stops
    assert (breach.dimension, breach.used, breach.limit) == (Dimension.tool_calls, 3, 1)

    ledger.set_limits("run-1", BudgetLimits(cost_usd=1.0))  # a limit on a dimension never limited before
    assert reserved_ok(ledger, "run-1", Demand(model_calls=1, cost_usd=1.0)).ok


# -- chains with no limit at all (the fast path) -----------------------------------------------------------------------


def test_a_chain_with_no_limits_still_accounts_every_call_exactly() -> None:
    ledger, clock = make()
    open_chain(ledger)  # nothing limited anywhere: reserve() only accounts
    held = reserved_ok(ledger, "agent-1", Demand(input_tokens=30, output_tokens=70, cost_usd=0.1, model_calls=1,
                                                 context_tokens=30))
    for scope in ("agent-1", "run-1", "acme-daily"):
        usage = ledger.usage(scope)
        assert (usage["total_tokens"].reserved, usage["cost_usd"].reserved, usage["model_calls"].reserved) == (
            100, 0.1, 1)
        assert usage["max_context_tokens"].used == 30
    assert ledger.check("agent-1") is None and ledger.step_output_cap("agent-1") is None
    clock.advance(30)
    ledger.settle(held, Actual(input_tokens=30, output_tokens=20, cost_usd=0.04, model_calls=1))
    for _ in range(10):
        spend(ledger, "agent-1", Demand(tool_calls=1), Actual(tool_calls=1))
    for scope in ("agent-1", "run-1", "acme-daily"):
        usage = ledger.usage(scope)
        assert [usage[d].reserved for d in ("total_tokens", "cost_usd", "model_calls", "tool_calls")] == [0] * 4
        assert (usage["total_tokens"].used, usage["cost_usd"].used, usage["tool_calls"].used) == (50, 0.04, 10)
        assert usage["cost_usd"].burn_rate_per_min == pytest.approx(0.08)  # $0.04 over a 30 s old scope
        assert usage["tool_calls"].limit is None


def test_a_limit_raised_on_a_chain_without_limits_is_enforced_from_the_next_call() -> None:
    """An operator sets a budget mid-run on a chain that had none: calls in flight count against it at once."""
    ledger, _ = make()
    open_chain(ledger)
    spend(ledger, "agent-1", Demand(cost_usd=0.3, model_calls=1), Actual(cost_usd=0.3, model_calls=1))
    in_flight = reserved_ok(ledger, "agent-1", Demand(cost_usd=0.5, model_calls=1))

    ledger.set_limits("run-1", BudgetLimits(cost_usd=1.0, output_tokens=500))
    breach = breached(ledger, "agent-1", Demand(cost_usd=0.25))  # 0.3 used + 0.5 held + 0.25 > 1.0
    assert (breach.scope_id, breach.dimension, breach.used, breach.reserved) == ("run-1", Dimension.cost_usd, 0.3,
                                                                                 0.5)
    assert ledger.step_output_cap("agent-1") == 500  # the new token limit reaches the cap, too
    assert reserved_ok(ledger, "agent-1", Demand(cost_usd=0.2)).ok  # exactly what is left fits
    ledger.release(in_flight)
    assert ledger.check("agent-1") is None

    ledger.set_limits("run-1", BudgetLimits(cost_usd=0.3))  # lowered below what is used and held
    assert ledger.check("agent-1") is not None
    assert breached(ledger, "agent-1", Demand(tool_calls=1)).dimension == Dimension.cost_usd

    ledger.set_limits("run-1", BudgetLimits())  # lifted again: back to accounting only
    assert ledger.check("agent-1") is None and ledger.step_output_cap("agent-1") is None
    assert reserved_ok(ledger, "agent-1", Demand(cost_usd=100.0)).ok


def test_a_limit_on_an_ancestor_reaches_scopes_opened_before_and_after_it() -> None:
    ledger, _ = make()
    open_chain(ledger)
    ledger.set_limits("acme-daily", BudgetLimits(tool_calls=2))  # the top of the chain
    ledger.open_scope("agent-2", "agent", None, parent="run-1")
    spend(ledger, "agent-1", Demand(tool_calls=1), Actual(tool_calls=1))
    spend(ledger, "agent-2", Demand(tool_calls=1), Actual(tool_calls=1))
    assert breached(ledger, "agent-1", Demand(tool_calls=1)).scope_id == "acme-daily"
    assert breached(ledger, "agent-2", Demand(tool_calls=1)).scope_id == "acme-daily"


def test_a_soft_threshold_set_mid_run_fires_from_a_settle_on_a_formerly_free_chain() -> None:
    events: list[BudgetEvent] = []
    ledger, _ = make(events.append, call_events=False)
    open_chain(ledger)
    held = reserved_ok(ledger, "agent-1", Demand(model_calls=1))
    ledger.set_limits("run-1", BudgetLimits(output_tokens=100, soft_threshold=0.5))
    ledger.settle(held, Actual(output_tokens=60, model_calls=1))  # more than was held: crosses 50 on settle
    assert [(e.kind, e.scope_id, e.dimension) for e in events] == [
        ("budget.soft_threshold", "run-1", Dimension.output_tokens)]


def test_a_daily_scope_without_limits_stays_bounded_to_a_day_of_buckets() -> None:
    """Nothing limited means reserve() never prunes; settling into a new minute must expire old spend instead."""
    ledger, clock = make()
    open_chain(ledger)
    for _ in range(48):
        spend(ledger, "agent-1", Demand(cost_usd=1.0), Actual(cost_usd=1.0))
        clock.advance(3600)
    assert len(ledger._scopes["acme-daily"].spend.buckets) <= 25  # type: ignore[union-attr]
    assert ledger.usage("acme-daily")["cost_usd"].used == 24.0


def test_huge_amounts_are_refused_rather_than_overflowing_their_field() -> None:
    with pytest.raises(ValueError, match="2\\*\\*64"):
        Demand(input_tokens=2**64)
    assert Demand(input_tokens=2**64 - 1, cost_usd=1e30).input_tokens == 2**64 - 1  # cost itself is unbounded
    ledger, _ = make()
    # Built without validation: limits read from files and flags stop at $1e9 (MAX_LIMIT_USD), but the ledger's own
    # arithmetic must still hold for costs this large.
    ledger.open_scope("run-1", "run", BudgetLimits.model_construct(cost_usd=1e31))
    for _ in range(3):
        spend(ledger, "run-1", Demand(input_tokens=2**64 - 1, tool_calls=2**64 - 1, cost_usd=1e30),
              Actual(input_tokens=2**64 - 1, tool_calls=2**64 - 1, cost_usd=1e30))
    usage = ledger.usage("run-1")
    most = float(3 * (2**64 - 1))  # usage reports floats
    assert (usage["input_tokens"].used, usage["total_tokens"].used, usage["tool_calls"].used) == (most, most, most)
    assert (usage["output_tokens"].used, usage["model_calls"].used, usage["retries"].used) == (0, 0, 0)
    assert usage["cost_usd"].used == pytest.approx(3e30)


# -- soft threshold and events ----------------------------------------------------------------------------------------


def test_soft_threshold_fires_exactly_once_per_scope_and_dimension() -> None:
    events: list[BudgetEvent] = []
    ledger, _ = make(events.append)
    ledger.open_scope("run-1", "run", BudgetLimits(model_calls=10, cost_usd=100))
    ledger.open_scope("agent-1", "agent", BudgetLimits(model_calls=5), parent="run-1", labels={"agent": "a"})

    def soft() -> list[tuple[str, Dimension | None]]:
        return [(e.scope_id, e.dimension) for e in events if e.kind == "budget.soft_threshold"]

    for call in range(1, 11):
        scope = "agent-1" if call <= 5 else "run-1"
        spend(ledger, scope, Demand(model_calls=1, cost_usd=0.01), Actual(model_calls=1, cost_usd=0.01))
        if call == 3:
            assert soft() == []
        if call == 4:  # 4 of 5 is 80 %: the agent warns, the run (4 of 10) does not
            assert soft() == [("agent-1", Dimension.model_calls)]
        if call == 7:
            assert soft() == [("agent-1", Dimension.model_calls)]
    assert soft() == [("agent-1", Dimension.model_calls), ("run-1", Dimension.model_calls)]
    warning = next(e for e in events if e.kind == "budget.soft_threshold" and e.scope_id == "run-1")
    assert warning.data == {"used": 7, "reserved": 1, "limit": 10, "threshold": 0.8}  # fired when reserving #8


def test_raising_a_limit_rearms_its_soft_threshold() -> None:
    events: list[BudgetEvent] = []
    ledger, _ = make(events.append)
    ledger.open_scope("run-1", "run", BudgetLimits(tool_calls=5))
    for _ in range(4):
        spend(ledger, "run-1", Demand(tool_calls=1), Actual(tool_calls=1))
    ledger.set_limits("run-1", BudgetLimits(tool_calls=10))
    for _ in range(4):
        spend(ledger, "run-1", Demand(tool_calls=1), Actual(tool_calls=1))
    limits = [e.data["limit"] for e in events if e.kind == "budget.soft_threshold"]
    assert limits == [5, 10]


def test_wall_time_soft_threshold_fires_from_check() -> None:
    events: list[BudgetEvent] = []
    ledger, clock = make(events.append)
    ledger.open_scope("run-1", "run", BudgetLimits(wall_time_s="100s", soft_threshold=0.5))
    clock.advance(49)
    assert ledger.check("run-1") is None and not events
    clock.advance(1)
    assert ledger.check("run-1") is None
    assert ledger.check("run-1") is None
    assert [(e.kind, e.dimension) for e in events] == [("budget.soft_threshold", Dimension.wall_time_s)]


def test_event_sequence_and_payloads() -> None:
    events: list[BudgetEvent] = []
    ledger, _ = make(events.append)
    open_chain(ledger, run=BudgetLimits(cost_usd=1.0))
    held = reserved_ok(ledger, "agent-1", Demand(input_tokens=10, output_tokens=5, cost_usd=0.5, model_calls=1))
    ledger.settle(held, Actual(input_tokens=10, output_tokens=2, cost_usd=0.2, model_calls=1), {"model": "m1"})
    ledger.release(reserved_ok(ledger, "agent-1", Demand(tool_calls=1)))
    breached(ledger, "agent-1", Demand(cost_usd=0.9))

    assert [e.kind for e in events] == ["budget.reserved", "budget.settled", "budget.reserved", "budget.released",
                                        "budget.breach"]
    reserved, settled, _, released, breach = events
    assert (reserved.scope_id, reserved.scope_kind) == ("agent-1", "agent")
    assert dict(reserved.labels) == {"tenant": "acme", "run": "run-1", "agent": "pricing"}
    assert reserved.data == {"reservation": held.id, "input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                             "cost_usd": 0.5, "model_calls": 1}
    assert settled.data == {"reservation": held.id, "input_tokens": 10, "output_tokens": 2, "total_tokens": 12,
                            "cost_usd": 0.2, "model_calls": 1}
    assert settled.labels["model"] == "m1"
    assert released.data == {"reservation": held.id + 1}
    assert (breach.scope_id, breach.scope_kind, breach.dimension) == ("run-1", "run", Dimension.cost_usd)
    assert breach.data == {"limit": 1.0, "used": 0.2, "reserved": 0.0, "requested": 0.9}


def test_call_events_can_be_turned_off_keeping_breach_and_soft_threshold() -> None:
    events: list[BudgetEvent] = []
    ledger, _ = make(events.append, call_events=False)
    ledger.open_scope("run-1", "run", BudgetLimits(model_calls=2, soft_threshold=0.5))
    spend(ledger, "run-1", Demand(model_calls=1), Actual(model_calls=1))
    ledger.release(reserved_ok(ledger, "run-1", Demand(model_calls=1)))
    spend(ledger, "run-1", Demand(model_calls=1), Actual(model_calls=1))
    breached(ledger, "run-1", Demand(model_calls=1))
    assert [e.kind for e in events] == ["budget.soft_threshold", "budget.breach"]


def test_listener_may_call_back_into_the_ledger() -> None:
    # Events are emitted outside the lock; a listener reading usage must not deadlock.
    seen: list[float] = []
    ledger, _ = make(lambda e: seen.append(ledger.usage("run-1")["cost_usd"].reserved))
    ledger.open_scope("run-1", "run", BudgetLimits(cost_usd=1.0))
    spend(ledger, "run-1", Demand(cost_usd=0.5), Actual(cost_usd=0.25))
    assert seen == [0.5, 0.0]


# -- attribution ----------------------------------------------------------------------------------------------------


def test_spend_is_attributed_per_agent_model_tool_run_and_tenant() -> None:
    ledger, _ = make()
    ledger.open_scope("acme-daily", "hierarchy_daily", None, labels={"tenant": "acme"})
    ledger.open_scope("run-1", "run", None, parent="acme-daily", labels={"run": "run-1"})
    ledger.open_scope("inv-1", "agent", None, parent="run-1", labels={"agent": "pricing"})
    ledger.open_scope("inv-2", "agent", None, parent="run-1", labels={"agent": "research"})
    ledger.open_scope("globex-daily", "hierarchy_daily", None, labels={"tenant": "globex"})
    ledger.open_scope("inv-3", "agent", None, parent="globex-daily", labels={"agent": "pricing"})

    spend(ledger, "inv-1", Demand(cost_usd=1.0), Actual(cost_usd=0.5, output_tokens=100, model_calls=1), model="big")
    spend(ledger, "inv-1", Demand(tool_calls=1), Actual(tool_calls=1), tool="crm_lookup")
    spend(ledger, "inv-2", Demand(cost_usd=1.0), Actual(cost_usd=0.25, output_tokens=40, model_calls=1),
          model="small")
    spend(ledger, "inv-3", Demand(cost_usd=1.0), Actual(cost_usd=2.0, model_calls=1), model="big")

    table = ledger.attribution()
    assert set(table) == {"agent", "model", "tool", "run", "tenant"}

    def row(**values: float) -> dict[Dimension, float]:
        return {dim: values.get(dim.value, 0.0) for dim in SUMMED_CASES}

    assert table["agent"] == {
        "pricing": row(cost_usd=2.5, output_tokens=100, total_tokens=100, model_calls=2, tool_calls=1),
        "research": row(cost_usd=0.25, output_tokens=40, total_tokens=40, model_calls=1),
    }
    assert table["model"] == {
        "big": row(cost_usd=2.5, output_tokens=100, total_tokens=100, model_calls=2),
        "small": row(cost_usd=0.25, output_tokens=40, total_tokens=40, model_calls=1),
    }
    assert table["tool"] == {"crm_lookup": row(tool_calls=1)}
    assert table["run"] == {"run-1": row(cost_usd=0.75, output_tokens=140, total_tokens=140, model_calls=2,
                                         tool_calls=1)}
    assert table["tenant"] == {"acme": table["run"]["run-1"], "globex": row(cost_usd=2.0, model_calls=1)}
    assert table["agent"]["pricing"]["cost_usd"] == 2.5  # plain strings index it too


# -- burn rate ------------------------------------------------------------------------------------------------------


def test_burn_rate_and_time_to_exhaustion_over_the_last_minute() -> None:
    ledger, clock = make()
    ledger.open_scope("run-1", "run", BudgetLimits(cost_usd=10.0))
    clock.advance(60)  # older than the window, so rates are over a full minute
    spend(ledger, "run-1", Demand(cost_usd=1.0), Actual(cost_usd=0.5))
    clock.advance(30)
    spend(ledger, "run-1", Demand(cost_usd=1.0), Actual(cost_usd=0.5))

    cost = ledger.usage("run-1")["cost_usd"]
    assert (cost.burn_rate_per_min, cost.fraction) == (1.0, 0.1)
    assert cost.time_to_exhaustion_s == pytest.approx(9.0 * 60)

    clock.advance(31)  # the first settle (t=60) left the window (91, 151]
    cost = ledger.usage("run-1")["cost_usd"]
    assert cost.burn_rate_per_min == 0.5
    assert cost.time_to_exhaustion_s == pytest.approx(9.0 / 0.5 * 60)

    clock.advance(30)
    cost = ledger.usage("run-1")["cost_usd"]
    assert (cost.burn_rate_per_min, cost.time_to_exhaustion_s) == (0.0, None)


def test_a_young_scope_burns_over_its_age() -> None:
    ledger, clock = make()
    ledger.open_scope("run-1", "run", BudgetLimits(total_tokens=1000))
    spend(ledger, "run-1", Demand(output_tokens=100), Actual(output_tokens=100))
    clock.advance(30)
    tokens = ledger.usage("run-1")["total_tokens"]
    assert tokens.burn_rate_per_min == 200.0  # 100 in 30 s, not 100 "per minute"
    assert tokens.time_to_exhaustion_s == pytest.approx(900 / 200 * 60)
    assert ledger.usage("run-1")["input_tokens"].time_to_exhaustion_s is None  # unlimited


# -- step output cap ------------------------------------------------------------------------------------------------


def test_step_output_cap_is_the_smallest_output_headroom_in_the_chain() -> None:
    ledger, _ = make()
    open_chain(ledger)
    assert ledger.step_output_cap("agent-1") is None  # no token limits anywhere

    ledger.set_limits("run-1", BudgetLimits(total_tokens=1000))
    ledger.set_limits("agent-1", BudgetLimits(output_tokens=600))
    assert ledger.step_output_cap("agent-1") == 600
    assert ledger.step_output_cap("agent-1", input_tokens=500) == 500  # the prompt eats total-token room
    spend(ledger, "agent-1", Demand(input_tokens=300, output_tokens=500), Actual(input_tokens=300, output_tokens=400))
    assert ledger.step_output_cap("agent-1") == 200  # agent: 600-400 output; run: 1000-700 total
    held = reserved_ok(ledger, "agent-1", Demand(input_tokens=100, output_tokens=100))
    assert ledger.step_output_cap("agent-1") == 100  # reservations in flight count
    ledger.release(held)
    assert ledger.step_output_cap("run-1", input_tokens=400) == 0  # exhausted, never negative


# -- parsing --------------------------------------------------------------------------------------------------------


def test_parse_budget_overrides_with_aliases() -> None:
    limits = parse_budget_overrides("cost=2.50,tool_calls=40,wall=300s,tokens=20000")
    assert (limits.cost_usd, limits.tool_calls, limits.wall_time_s, limits.total_tokens) == (2.5, 40, 300.0, 20000)
    assert limits.model_fields_set == {"cost_usd", "tool_calls", "wall_time_s", "total_tokens"}

    limits = parse_budget_overrides(
        " input_tokens=1_000, output_tokens=500 ,calls=7,context=8000,wall=2m,retries=3,soft=0.9,cost=$1")
    assert (limits.input_tokens, limits.output_tokens, limits.model_calls, limits.max_context_tokens,
            limits.wall_time_s, limits.retries, limits.soft_threshold, limits.cost_usd) == (
        1000, 500, 7, 8000, 120.0, 3, 0.9, 1.0)
    full = parse_budget_overrides("cost_usd=3,total_tokens=9,model_calls=1,wall_time_s=5,max_context_tokens=10")
    assert (full.cost_usd, full.total_tokens, full.model_calls, full.wall_time_s, full.max_context_tokens) == (
        3.0, 9, 1, 5.0, 10)
    assert parse_budget_overrides("") == BudgetLimits()


@pytest.mark.parametrize(("text", "key", "why"), [
    ("cost=2,bogus=1", "bogus", "unknown"),
    ("cost=abc", "cost", "number"),
    ("tool_calls=-1", "tool_calls", "negative"),
    ("cost=-0.5", "cost", "negative"),
    ("tokens=1.5", "tokens", "whole"),
    ("wall=5x", "wall", "duration"),
    ("cost=inf", "cost", "finite"),
    ("calls", "calls", "key=value"),
    ("calls=", "calls", "missing"),
    ("soft=1.5", "soft", "fraction"),
    ("cost=1,cost_usd=2", "cost_usd", "twice"),
])
def test_parse_budget_overrides_errors_name_the_key(text: str, key: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}'.*{why}"):
        parse_budget_overrides(text)


def test_merge_limits_keeps_the_base_except_what_the_override_sets() -> None:
    base = BudgetLimits(cost_usd=5.0, tool_calls=10, wall_time_s=600, soft_threshold=0.7)
    merged = merge_limits(base, parse_budget_overrides("cost=2,tokens=100"))
    assert merged == BudgetLimits(cost_usd=2.0, tool_calls=10, wall_time_s=600, total_tokens=100, soft_threshold=0.7)
    lifted = merge_limits(base, parse_budget_overrides("tool_calls=none"))
    assert (lifted.tool_calls, lifted.cost_usd) == (None, 5.0)


def test_budget_limits_model_is_strict_and_frozen() -> None:
    assert BudgetLimits(wall_time_s="5m").wall_time_s == 300.0
    with pytest.raises(ValidationError):
        BudgetLimits(cost=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        BudgetLimits(tool_calls=-1)
    with pytest.raises(ValidationError):
        BudgetLimits(soft_threshold=0)
    limits = BudgetLimits(cost_usd=1.0)
    with pytest.raises(ValidationError):
        limits.cost_usd = 2.0  # type: ignore[misc]


# -- property tests -------------------------------------------------------------------------------------------------

RUN_CAP_CENTS, RUN_CAP_OUTPUT, RUN_CAP_CALLS, AGENT_CAP_OUTPUT = 500, 4000, 30, 1500
CALLERS = 50


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_interleaved_callers_never_overshoot_and_are_only_refused_when_they_must_be(data: st.DataObject) -> None:
    """50 callers, each reserve -> settle (actual <= reserved) or release, in an order hypothesis picks. After every
    step the ledger must match a plain reference model: same accept/refuse decisions, same totals, never over a cap."""
    demands = data.draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 400)), min_size=CALLERS,
                                 max_size=CALLERS), label="demands (cents, output tokens)")
    order = data.draw(st.permutations([i for i in range(CALLERS) for _ in range(2)]), label="order")
    ledger, _ = make()
    ledger.open_scope("daily", "hierarchy_daily", None)
    ledger.open_scope("run", "run", BudgetLimits(cost_usd=RUN_CAP_CENTS / 100, output_tokens=RUN_CAP_OUTPUT,
                                                 model_calls=RUN_CAP_CALLS), parent="daily")
    for a in range(5):
        ledger.open_scope(f"agent-{a}", "agent", BudgetLimits(output_tokens=AGENT_CAP_OUTPUT), parent="run")

    # reference model, in exact integers: scope -> [used cents, reserved cents, used out, reserved out, used calls,
    # reserved calls]
    model = {name: [0] * 6 for name in ["run", *(f"agent-{a}" for a in range(5))]}
    held: dict[int, Reservation | None] = {}
    for caller in order:
        agent = f"agent-{caller % 5}"
        cents, out = demands[caller]
        if caller not in held:
            fits_run = (model["run"][0] + model["run"][1] + cents <= RUN_CAP_CENTS
                        and model["run"][2] + model["run"][3] + out <= RUN_CAP_OUTPUT
                        and model["run"][4] + model["run"][5] + 1 <= RUN_CAP_CALLS)
            fits_agent = model[agent][2] + model[agent][3] + out <= AGENT_CAP_OUTPUT
            result = ledger.reserve(agent, Demand(output_tokens=out, cost_usd=cents / 100, model_calls=1))
            assert result.ok == (fits_run and fits_agent), (result, model)
            held[caller] = result if isinstance(result, Reservation) else None
            if isinstance(result, Reservation):
                for name in ("run", agent):
                    model[name][1] += cents
                    model[name][3] += out
                    model[name][5] += 1
        else:
            reservation = held[caller]
            if reservation is None:
                continue
            settles = data.draw(st.booleans(), label=f"caller {caller} settles (else releases)")
            if settles:
                act_cents = data.draw(st.integers(0, cents), label="actual cents")
                act_out = data.draw(st.integers(0, out), label="actual output")
                ledger.settle(reservation, Actual(output_tokens=act_out, cost_usd=act_cents / 100, model_calls=1))
            else:
                act_cents = act_out = 0
                ledger.release(reservation)
            for name in ("run", agent):
                model[name][0] += act_cents
                model[name][1] -= cents
                model[name][2] += act_out
                model[name][3] -= out
                model[name][4] += 1 if settles else 0
                model[name][5] -= 1
        run = ledger.usage("run")
        assert round(run["cost_usd"].used * 100) == model["run"][0]
        assert round(run["cost_usd"].reserved * 100) == model["run"][1]
        assert (run["output_tokens"].used, run["output_tokens"].reserved) == (model["run"][2], model["run"][3])
        assert (run["model_calls"].used, run["model_calls"].reserved) == (model["run"][4], model["run"][5])
        assert model["run"][0] + model["run"][1] <= RUN_CAP_CENTS
        assert model["run"][2] + model["run"][3] <= RUN_CAP_OUTPUT
        assert model["run"][4] + model["run"][5] <= RUN_CAP_CALLS
        for a in range(5):
            out_usage = ledger.usage(f"agent-{a}")["output_tokens"]
            assert (out_usage.used, out_usage.reserved) == (model[f"agent-{a}"][2], model[f"agent-{a}"][3])
            assert out_usage.used + out_usage.reserved <= AGENT_CAP_OUTPUT
    daily = ledger.usage("daily")
    assert daily["cost_usd"].reserved == 0 and round(daily["cost_usd"].used * 100) == model["run"][0]


@pytest.fixture
def eager_thread_switching() -> Any:
    # Switch threads every microsecond instead of every 5 ms, so races inside reserve/settle get a real chance.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_fifty_threads_racing_one_run_budget_never_overshoot(eager_thread_switching: None, seed: int) -> None:
    """50 real threads, in rounds: a barrier releases them to reserve together, all hold at a second barrier, then
    they settle (actual <= reserved) together. A listener checks used+reserved after every reservation."""
    cap_cents, cap_tokens, rounds = 1000, 20_000, 3
    violations: list[str] = []
    ledger: BudgetLedger

    def watch(event: BudgetEvent) -> None:
        if event.kind != "budget.reserved":
            return
        usage = ledger.usage("run")
        for dim, cap in (("cost_usd", cap_cents / 100), ("output_tokens", cap_tokens)):
            if usage[dim].used + usage[dim].reserved > cap + 1e-9:
                violations.append(f"{dim}: {usage[dim]}")

    ledger = BudgetLedger(FakeClock(), watch)
    ledger.open_scope("run", "run", BudgetLimits(cost_usd=cap_cents / 100, output_tokens=cap_tokens))
    for a in range(5):
        ledger.open_scope(f"agent-{a}", "agent", None, parent="run")
    barrier = threading.Barrier(CALLERS, timeout=30)
    settled_cents = [0] * CALLERS
    granted = [0] * CALLERS
    peak_held = [0]

    def caller(index: int) -> None:
        rng = random.Random(seed + index)
        for _ in range(rounds):
            cents, out = rng.randint(25, 60), rng.randint(1, 1200)  # 50 x 25c > $10: every round over-asks
            barrier.wait()
            result = ledger.reserve(f"agent-{index % 5}", Demand(output_tokens=out, cost_usd=cents / 100))
            if barrier.wait() == 0:  # every reservation of this round is held right now
                peak_held[0] = max(peak_held[0], round(ledger.usage("run")["cost_usd"].reserved * 100))
            barrier.wait()
            if isinstance(result, Reservation):
                granted[index] += 1
                actual = rng.randint(0, cents)
                ledger.settle(result, Actual(output_tokens=rng.randint(0, out), cost_usd=actual / 100))
                settled_cents[index] += actual

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert violations == []
    run = ledger.usage("run")
    assert run["cost_usd"].reserved == 0 and run["output_tokens"].reserved == 0
    assert round(run["cost_usd"].used * 100) == sum(settled_cents) <= cap_cents
    assert run["output_tokens"].used <= cap_tokens
    # The race was real: some reservations were refused while others were held.
    assert 0 < sum(granted) < CALLERS * rounds
    assert 0 < peak_held[0] <= cap_cents


def test_fifty_threads_racing_for_five_slots_get_exactly_five(eager_thread_switching: None) -> None:
    """The sharpest race: every caller wants the same last units. Check-then-commit must be one atomic step."""
    ledger, _ = make()
    ledger.open_scope("run", "run", BudgetLimits(model_calls=5))
    ledger.open_scope("agent", "agent", BudgetLimits(model_calls=50), parent="run")
    barrier = threading.Barrier(CALLERS, timeout=30)
    rounds = 20
    granted = [[False] * CALLERS for _ in range(rounds)]

    def caller(index: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            result = ledger.reserve("agent", Demand(model_calls=1))
            barrier.wait()  # everyone holds what they got, so granted counts are simultaneous
            if isinstance(result, Reservation):
                granted[round_][index] = True
                ledger.release(result)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert [sum(row) for row in granted] == [5] * rounds
    assert ledger.usage("run")["model_calls"].reserved == 0
