"""Current state for the console: breaker states (on every transition, and refreshed every second so failure
rates and probe times stay current) and each active run's budget gauges (every second). Written through the trace
writer into the `breakers` and `budgets` tables: other processes read them without asking the engine anything."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from engine.guardrails.breaker import BreakerSnapshot, BreakerTransition
    from engine.guardrails.budget import ScopeUsage
    from engine.runtime.engine import Engine

PUBLISH_INTERVAL_S = 1.0


def _breaker_row(hierarchy: str, snap: BreakerSnapshot) -> tuple[Any, ...]:
    # While OPEN the breaker's own window is empty (it records nothing until a probe): the row shows the window
    # that tripped it, which is what an operator deciding whether to reset it needs to see.
    trip = snap.tripped_by
    if trip is not None:
        rates = (trip.failure_rate, trip.slow_call_rate, trip.calls, trip.failed_calls, trip.slow_calls)
    else:
        rates = (snap.failure_rate, snap.slow_call_rate, snap.calls_in_window, snap.failed_calls, snap.slow_calls)
    return (hierarchy, snap.key, snap.kind, snap.name, str(snap.state.value), *rates, snap.not_permitted_calls,
            snap.next_probe_at, snap.since, time.time())


def _usage_data(usage: ScopeUsage) -> str:
    gauges: dict[str, Any] = {}
    for dimension, gauge in usage.dimensions.items():
        if gauge.limit is None and not gauge.used and not gauge.reserved:
            continue
        gauges[str(dimension.value)] = {
            "used": gauge.used, "reserved": gauge.reserved, "limit": gauge.limit, "fraction": gauge.fraction,
            "burn_rate_per_min": gauge.burn_rate_per_min, "time_to_exhaustion_s": gauge.time_to_exhaustion_s}
    return json.dumps(gauges)


class StatePublisher:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        engine.guards.breaker_listeners.append(self.on_transition)

    def on_transition(self, hierarchy: str, transition: BreakerTransition) -> None:
        snap = transition.snapshot
        self._engine.writer.state("breakers", (hierarchy, snap.key), _breaker_row(hierarchy, snap))

    def publish(self) -> None:
        writer = self._engine.writer
        for hierarchy, registry in self._engine.guards.all_registries().items():
            for breaker in registry.all():
                snap = breaker.snapshot()
                writer.state("breakers", (hierarchy, snap.key), _breaker_row(hierarchy, snap))
        for active in list(self._engine.controls.runs.values()):
            self.publish_run(active)

    def publish_final(self, active: Any) -> None:
        """A run's gauges once more as it ends, so they show its final usage with nothing left reserved. Skipped
        for a run that was never published and has no limit anywhere in its chain: it has no gauge rows to
        correct and none to show (its usage is in its run row), and most runs of a busy fleet are like that."""
        if active.gauges_published or self._engine.guards.ledger.limited(active.ctx.budget_scope):
            self.publish_run(active)

    def publish_run(self, active: Any) -> None:
        """One run's gauges: every second while it runs (and at its end, see publish_final)."""
        writer = self._engine.writer
        ledger = self._engine.guards.ledger
        now = time.time()
        active.gauges_published = True
        run_id = active.ctx.run_id
        try:
            usage = ledger.usage(active.ctx.budget_scope)
        except KeyError:
            return  # the run's scope is already closed
        writer.state("budgets", (run_id, "run"), (run_id, "run", None, _usage_data(usage), now))
        for span, (agent, _) in list(active.agents.items()):
            try:
                agent_usage = ledger.usage(span)
            except KeyError:
                continue
            writer.state("budgets", (run_id, f"agent:{span}"),
                         (run_id, f"agent:{span}", agent, _usage_data(agent_usage), now))

    async def run(self) -> None:
        while True:
            self.publish()
            await anyio.sleep(PUBLISH_INTERVAL_S)
