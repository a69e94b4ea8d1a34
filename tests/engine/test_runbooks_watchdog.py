"""The watchdog on synthetic committed events with a fake clock: every signal's value, scopes and targets, and the
hysteresis (fires after `for`/`hold`, clears only after a quiet period, never flaps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.clock import FakeClock
from engine.runbooks.loader import parse_runbook
from engine.runbooks.model import Runbook
from engine.runbooks.watchdog import Watchdog
from engine.store.control_rows import Approval

BODY = """
## What it means
x
## How to confirm
x
## First steps
x
## How to roll back
x
## When to escalate
x
"""


def runbook(front: str, name: str = "t.md") -> Runbook:
    text = "---\n" + front.strip("\n") + "\n---\n" + BODY
    return parse_runbook(text.encode(), Path(name))


def detect(conditions: str, rb_id: str = "rb") -> Runbook:
    return runbook(f"id: {rb_id}\ntitle: T\nseverity: sev3\ndetect:\n{conditions}")


class Stream:
    """Builds committed-event tuples like TraceWriter.on_commit hands them over."""

    def __init__(self) -> None:
        self.seq = 0

    def ev(self, event_kind: str, run: str | None = None, span: str | None = None, agent: str | None = None,
           name: str | None = None, data: dict[str, Any] | None = None, **more: Any) -> tuple[Any, ...]:
        self.seq += 1
        return (self.seq, event_kind, run, span, agent, name, {**(data or {}), **more} or None)

    def run_started(self, run: str, hierarchy: str) -> tuple[Any, ...]:
        return self.ev("run.started", run, name=hierarchy, hierarchy=hierarchy, tenant=None)

    def tool_end(self, run: str, agent: str, tool: str, status: str, span: str = "s") -> tuple[Any, ...]:
        return self.ev("span.ended", run, span, agent, tool, {"kind": "tool", "name": tool, "status": status,
                                                              "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
                                                              "model": None})

    def llm_end(self, run: str, agent: str, cost: float, span: str = "s") -> tuple[Any, ...]:
        return self.ev("span.ended", run, span, agent, "m", {"kind": "llm", "name": "m", "status": "ok",
                                                            "tokens_in": 10, "tokens_out": 10, "cost_usd": cost,
                                                            "model": "m"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def kinds(transitions: list[Any]) -> list[tuple[str, str]]:
    return [(t.kind, t.scope) for t in transitions]


def test_loop_count_per_agent_fires_at_threshold_and_clears_after_window_and_quiet(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: loop_detected, threshold: 3, for: 2m, scope: agent, quiet: 1m}")])
    s = Stream()
    dog.feed([s.run_started("r1", "h"), s.ev("loop.detected", "r1", agent="planner"),
              s.ev("loop.detected", "r1", agent="planner"), s.ev("loop.detected", "r1", agent="other")],
             clock.time())
    assert dog.evaluate(clock.time()) == []  # two for planner, one for other: below 3
    clock.advance(10)
    dog.feed([s.ev("loop.detected", "r1", agent="planner")], clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert (fired.kind, fired.scope) == ("fire", "agent:planner")
    assert fired.readings[0]["value"] == 3 and fired.readings[0]["fired"]
    assert fired.context["agent"] == "planner" and fired.context["hierarchy"] == "h" and fired.context["run"] == "r1"
    assert dog.is_firing("rb", "agent:planner")
    clock.advance(111)  # the first two loops leave the window: 1 loop, below threshold -> quiet period starts
    assert dog.evaluate(clock.time()) == []
    assert dog.is_firing("rb", "agent:planner")  # still on during the quiet period
    clock.advance(59)
    assert dog.evaluate(clock.time()) == []
    clock.advance(1)
    (cleared,) = dog.evaluate(clock.time())
    assert (cleared.kind, cleared.scope) == ("clear", "agent:planner")
    assert cleared.readings[0]["peak"] == 3
    assert not dog.is_firing("rb", "agent:planner")


def test_hysteresis_does_not_flap_when_the_signal_dips_during_the_quiet_period(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: validation_failures, threshold: 2, for: 1m, quiet: 5m}")])
    s = Stream()
    transitions = []
    for _ in range(10):  # two failures at a time, then a gap longer than the window: the condition flickers
        dog.feed([s.ev("validation.failed", "r", agent="a"), s.ev("validation.failed", "r", agent="a")],
                 clock.time())
        transitions += dog.evaluate(clock.time())
        clock.advance(70)
        transitions += dog.evaluate(clock.time())
        clock.advance(70)
    assert kinds(transitions) == [("fire", "global")]
    clock.advance(300)
    assert kinds(dog.evaluate(clock.time())) == [("clear", "global")]


def test_hold_delays_firing_until_the_condition_held(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: budget_soft_threshold, threshold: 1, for: 10m, hold: 30s}")])
    s = Stream()
    dog.feed([s.ev("budget.soft_threshold", "r", agent="a")], clock.time())
    assert dog.evaluate(clock.time()) == []
    clock.advance(29)
    assert dog.evaluate(clock.time()) == []
    clock.advance(1)
    assert kinds(dog.evaluate(clock.time())) == [("fire", "global")]


def test_tool_failure_rate_per_tool_needs_min_calls(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: tool_failure_rate, threshold: 50, for: 5m, scope: tool, "
                           "params: {min_calls: 4}}")])
    s = Stream()
    events = [s.run_started("r", "h"), s.tool_end("r", "a", "crm", "error"), s.tool_end("r", "a", "crm", "timeout"),
              s.tool_end("r", "a", "crm", "ok"), s.tool_end("r", "a", "crm", "denied"),
              s.tool_end("r", "a", "crm", "cancelled"), s.tool_end("r", "a", "mail", "error")]
    dog.feed(events, clock.time())
    assert dog.evaluate(clock.time()) == []  # crm: 3 counted calls (denied/cancelled are not), mail: 1
    dog.feed([s.tool_end("r", "a", "crm", "outcome_unknown")], clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert fired.scope == "tool:crm"
    assert fired.readings[0]["value"] == 75.0 and fired.readings[0]["samples"] == 4
    assert fired.context["tool"] == "crm" and fired.context["hierarchy"] == "h"


def test_spend_rate_per_minute_per_hierarchy(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: spend_rate_per_min, threshold: 2, for: 5m, scope: hierarchy}")])
    s = Stream()
    dog.feed([s.run_started("r1", "cheap"), s.run_started("r2", "pricey"), s.llm_end("r1", "a", 9.0),
              s.llm_end("r2", "a", 6.0), s.llm_end("r2", "a", 4.0)], clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert fired.scope == "hierarchy:pricey"
    assert fired.readings[0]["value"] == pytest.approx(2.0)  # $10 over 5 minutes
    assert fired.context["hierarchy"] == "pricey"


def test_latency_p95_uses_the_duration_source_and_min_samples(clock: FakeClock) -> None:
    durations = {f"s{i}": 0.1 * i for i in range(1, 21)}
    asked: list[list[str]] = []

    def source(span_ids: list[str]) -> dict[str, float]:
        asked.append(span_ids)
        return {s: durations[s] for s in span_ids}

    dog = Watchdog([detect("  - {signal: latency_p95, threshold: 1.9, for: 5m, params: {min_samples: 20}}")],
                   durations=source)
    s = Stream()
    dog.feed([s.llm_end("r", "a", 0.0, span=f"s{i}") for i in range(1, 20)]
             + [s.tool_end("r", "a", "t", "ok", span="tool-span")], clock.time())
    assert dog.evaluate(clock.time()) == []  # 19 model calls: not enough samples
    dog.feed([s.llm_end("r", "a", 0.0, span="s20")], clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert fired.readings[0]["value"] == pytest.approx(1.9)  # nearest-rank p95 of 0.1 .. 2.0
    assert "tool-span" not in [s for batch in asked for s in batch]  # tool spans are not looked up for kind model


def test_breaker_opened_counts_trips_not_overrides(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: breaker_opened, threshold: 1, for: 10m, scope: tool}")])
    s = Stream()
    dog.feed([s.ev("breaker.transition", name="tool:crm", data={"key": "tool:crm", "kind": "tool", "hierarchy": "h",
                                                                "to": "forced_open"}),
              s.ev("breaker.transition", name="model:scripted/m", data={"key": "model:scripted/m", "kind": "model",
                                                                        "hierarchy": "h", "to": "open"})],
             clock.time())
    assert dog.evaluate(clock.time()) == []
    dog.feed([s.ev("breaker.transition", name="tool:crm", data={"key": "tool:crm", "kind": "tool", "hierarchy": "h",
                                                                "from": "closed", "to": "open"})], clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert fired.scope == "tool:crm" and fired.context["hierarchy"] == "h"


def test_blocked_tool_attempts_can_ignore_withheld(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: blocked_tool_attempts, threshold: 1, for: 10m, scope: hierarchy, "
                           "params: {include_withheld: false}}", "strict"),
                    detect("  - {signal: blocked_tool_attempts, threshold: 1, for: 10m}", "any")])
    s = Stream()
    dog.feed([s.run_started("r", "h"), s.ev("tool.withheld", "r", agent="a", name="refund", tool="refund",
                                            reason="withheld: side effects are off (safe mode)")], clock.time())
    assert [(t.runbook.id, t.scope) for t in dog.evaluate(clock.time())] == [("any", "global")]
    dog.feed([s.ev("tool.blocked", "r", agent="a", name="wire", tool="wire", reason="not_allowed")], clock.time())
    assert [(t.runbook.id, t.scope) for t in dog.evaluate(clock.time())] == [("strict", "hierarchy:h")]


def test_approval_backlog_is_a_gauge_held_for_its_window(clock: FakeClock) -> None:
    dog = Watchdog([runbook("""
id: backlog
title: T
severity: sev3
detect:
  - {signal: approval_backlog, threshold: 2, for: 1m}
  - {signal: approval_backlog, threshold: 600, for: 0s, params: {measure: oldest_age_s}}
""")])
    old = Approval(id="ap-old", run_id="r0", span_id=None, agent="a", tool="t", arguments={}, args_hash="",
                   risk=None, reason=None, requested=clock.time() - 30, deadline=clock.time() + 600, window_s=600,
                   level=0, on_timeout="deny", status="pending")
    dog.seed_pending_approvals([old], clock.time())
    s = Stream()
    dog.feed([s.run_started("r", "h"), s.ev("approval.requested", "r", agent="a", name="refund", id="ap-1",
                                            tool="refund")], clock.time())
    assert dog.evaluate(clock.time()) == []  # 2 pending: held from now on
    clock.advance(59)
    assert dog.evaluate(clock.time()) == []
    clock.advance(1)
    (fired,) = dog.evaluate(clock.time())
    assert fired.kind == "fire" and fired.readings[0]["value"] == 2 and fired.readings[0]["fired"]
    dog.feed([s.ev("approval.decided", "r", agent="a", name="refund", id="ap-1", status="approved")], clock.time())
    clock.advance(510)  # ap-old has now waited 600 s: the second condition fires while the first is quiet
    (update,) = dog.evaluate(clock.time())
    assert update.kind == "update" and update.readings[1]["fired"] and update.readings[1]["value"] == 600
    dog.feed([s.ev("run.ended", "r0", status="killed")], clock.time())  # its run ended: no longer pending
    clock.advance(60)
    assert kinds(dog.evaluate(clock.time())) == []  # first condition cleared, second still in its quiet period
    clock.advance(600)
    assert kinds(dog.evaluate(clock.time())) == [("clear", "global")]


def test_targets_restrict_a_condition_to_one_name(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: loop_detected, threshold: 1, for: 1m, scope: agent, target: billing}")])
    s = Stream()
    dog.feed([s.ev("loop.detected", "r", agent="support")], clock.time())
    assert dog.evaluate(clock.time()) == []
    dog.feed([s.ev("loop.detected", "r", agent="billing")], clock.time())
    assert kinds(dog.evaluate(clock.time())) == [("fire", "agent:billing")]


def test_runs_abandoned_and_own_events_are_ignored(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: runs_abandoned, threshold: 2, for: 1h, scope: hierarchy}")])
    s = Stream()
    dog.feed([s.ev("run.ended", "r1", name="h", status="abandoned"), s.ev("run.ended", "r2", name="h",
                                                                          status="completed"),
              s.ev("runbook.detected", name="x", status="abandoned")], clock.time())
    assert dog.evaluate(clock.time()) == []
    dog.feed([s.ev("run.ended", "r3", name="h", status="abandoned")], clock.time())
    assert kinds(dog.evaluate(clock.time())) == [("fire", "hierarchy:h")]


def test_any_condition_fires_and_all_must_clear(clock: FakeClock) -> None:
    dog = Watchdog([detect("  - {signal: loop_detected, threshold: 1, for: 1m, quiet: 1m}\n"
                           "  - {signal: validation_failures, threshold: 1, for: 3m, quiet: 1m}")])
    s = Stream()
    dog.feed([s.ev("loop.detected", "r", agent="a")], clock.time())
    assert kinds(dog.evaluate(clock.time())) == [("fire", "global")]
    clock.advance(30)
    dog.feed([s.ev("validation.failed", "r", agent="a")], clock.time())
    assert kinds(dog.evaluate(clock.time())) == [("update", "global")]
    clock.advance(150)  # the loop left its window: quiet period starts; the validation failure is still in its window
    assert kinds(dog.evaluate(clock.time())) == []
    clock.advance(60)  # loop condition clears; validation failure left its window: its quiet period starts
    assert kinds(dog.evaluate(clock.time())) == []
    assert dog.is_firing("rb", "global")
    clock.advance(60)
    assert kinds(dog.evaluate(clock.time())) == [("clear", "global")]
    assert not dog.is_firing("rb", "global")


def test_latency_comes_from_the_duration_the_writer_puts_in_span_ended(clock: FakeClock) -> None:
    asked: list[list[str]] = []
    dog = Watchdog([detect("  - {signal: latency_p95, threshold: 2, for: 5m, scope: tool, "
                           "params: {kind: tool, min_samples: 3}}")],
                   durations=lambda ids: asked.append(ids) or {})
    s = Stream()
    ends = []
    for n, seconds in enumerate((0.5, 2.5, 3.0)):
        event = s.tool_end("r", "a", "crm", "ok", span=f"t{n}")
        event[6]["duration_s"] = seconds
        ends.append(event)
    dog.feed(ends, clock.time())
    (fired,) = dog.evaluate(clock.time())
    assert (fired.scope, fired.readings[0]["value"]) == ("tool:crm", 3.0)
    assert asked == []  # nothing to look up: every end event carried its duration
