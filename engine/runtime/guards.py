"""The engine's guardrail services in one place: breaker registries, the budget ledger, retry timing (a hierarchy's
retry policy over engine.retry), and the translation of their events into store events. The agent loop asks these
before every model and tool call."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.clock import SYSTEM_CLOCK, Clock
from engine.guardrails.breaker import BreakerConfig, BreakerRegistry, BreakerTransition
from engine.guardrails.budget import Breach, BudgetEvent, BudgetLedger, BudgetLimits, merge_limits
from engine.guardrails.budget.shared import AllowanceSource, LeaseRenewer, SharedDaily
from engine.guardrails.budget.vectors import cost_to_nano
from engine.hierarchy.schema import RetryPolicy
from engine.retry import Backoff, RetryWait, plan_retry

if TYPE_CHECKING:
    from engine.runtime.compiled import CompiledHierarchy
    from engine.runtime.tracer import Tracer

# Breakers react to these error kinds; a bad request or invalid output says nothing about the target's health.
IGNORED_BY_BREAKERS = ("bad_request", "invalid_arguments", "malformed_arguments")


class BudgetExceeded(Exception):
    """A budget scope ran out: the agent stops and hands back a partial result marked budget_exceeded."""

    def __init__(self, breach: Breach) -> None:
        super().__init__(breach.message)
        self.breach = breach


def breach_data(breach: Breach) -> dict[str, Any]:
    return {"scope": breach.scope_id, "scope_kind": breach.scope_kind, "dimension": str(breach.dimension),
            "limit": breach.limit, "used": breach.used, "reserved": breach.reserved, "requested": breach.requested,
            "message": breach.message}


def backoff_for(policy: RetryPolicy) -> Backoff:
    """A hierarchy's retry policy as the shared backoff (full jitter, capped at max_backoff)."""
    return Backoff(policy.initial_backoff, policy.max_backoff, policy.multiplier)


def plan_retry_wait(policy: RetryPolicy, attempt: int, retry_after: float | None, rng: random.Random, *,
                    max_retry_after: float, time_left: float | None, scale: float = 1.0) -> RetryWait:
    """The backoff before retry ``attempt + 1`` of a model call (engine.retry.plan_retry): no wait at all when the
    server asks for longer than the model's ``max_retry_after`` or the wait would outlast the run's wall time."""
    return plan_retry(backoff_for(policy), attempt, retry_after, rng, max_retry_after=max_retry_after,
                      time_left=time_left, scale=scale)


class Guards:
    def __init__(self, tracer: Tracer, *, clock: Clock = SYSTEM_CLOCK,
                 breaker_defaults: BreakerConfig | None = None) -> None:
        self._tracer = tracer
        self.clock = clock
        self.ledger = BudgetLedger(clock, self._on_budget_event, call_events=False, attribution=False)
        self._agent_breakers: dict[tuple[str, str], tuple[tuple[str, Any], ...]] = {}
        self._operator_overrides: dict[str, str] = {}
        self._registries: dict[str, BreakerRegistry] = {}
        self._breaker_defaults = breaker_defaults
        self._daily_scopes: set[str] = set()
        self._shared_source: AllowanceSource | None = None  # set on a Postgres store: daily caps span engines
        self._renewer: LeaseRenewer | None = None
        self.rng = random.Random()
        self.breaker_listeners: list[Any] = []

    # -- breakers ------------------------------------------------------------------------------------------------

    def breakers(self, compiled: CompiledHierarchy) -> BreakerRegistry:
        """One registry per hierarchy: its file declares the thresholds for its tools, models and delegations."""
        registry = self._registries.get(compiled.name)
        if registry is None:
            spec = compiled.spec.breakers
            defaults = spec.defaults or self._breaker_defaults or BreakerConfig(ignore_errors=IGNORED_BY_BREAKERS)
            registry = self._registries[compiled.name] = BreakerRegistry(
                defaults, spec.overrides, self.clock, self._make_transition_hook(compiled.name))
            for key, action in self._operator_overrides.items():  # forced before this hierarchy first ran
                registry.apply_override(key, action)  # type: ignore[arg-type]
        return registry

    def apply_operator_override(self, key: str, action: str) -> None:
        """An operator's force_open / disable / reset, for every hierarchy now and for those that start later."""
        if action == "reset":
            self._operator_overrides.pop(key, None)
        else:
            self._operator_overrides[key] = action
        for registry in self._registries.values():
            registry.apply_override(key, action)  # type: ignore[arg-type]

    def agent_breakers(self, compiled: CompiledHierarchy, agent: Any) -> tuple[tuple[str, Any], ...]:
        """(offered name, breaker) for each tool and delegation of an agent, looked up once per agent."""
        key = (compiled.name, agent.name)
        found = self._agent_breakers.get(key)
        if found is None:
            registry = self.breakers(compiled)
            found = tuple([(name, registry.get("tool", name)) for name in agent.tools]
                          + [(tool_name, registry.get("delegation", child))
                             for tool_name, child in agent.delegation_names.items()])
            self._agent_breakers[key] = found
        return found

    def all_registries(self) -> dict[str, BreakerRegistry]:
        return self._registries

    def _make_transition_hook(self, hierarchy: str) -> Any:
        def on_transition(transition: BreakerTransition) -> None:
            snapshot = transition.snapshot
            # An opening reports the window that tripped it; the snapshot's own window is already the new, empty one.
            trip = snapshot.tripped_by
            self._tracer.event(None, None, "breaker.transition", name=snapshot.key, data={
                "hierarchy": hierarchy, "key": snapshot.key, "kind": transition.kind, "from": str(
                    transition.from_state), "to": str(transition.to_state), "reason": transition.reason,
                "failure_rate": trip.failure_rate if trip else snapshot.failure_rate,
                "calls_in_window": trip.calls if trip else snapshot.calls_in_window,
                "next_probe_at": snapshot.next_probe_at})
            for listener in self.breaker_listeners:
                listener(hierarchy, transition)
        return on_transition

    # -- budgets -------------------------------------------------------------------------------------------------

    def daily_scope(self, compiled: CompiledHierarchy,
                    history: Callable[[str], list[tuple[float, float]]] | None = None) -> str:
        """The hierarchy's rolling 24 h scope, opened on first use and seeded with the spend `history` reports."""
        scope_id = f"daily:{compiled.name}"
        if scope_id not in self._daily_scopes:
            self.ledger.open_scope(scope_id, "hierarchy_daily", compiled.spec.budgets.daily,
                                   labels={"hierarchy": compiled.name})
            daily = compiled.spec.budgets.daily
            if history is not None and daily is not None:
                self.ledger.seed_daily_spend(scope_id, history(compiled.name))
            if self._shared_source is not None and daily is not None and daily.cost_usd is not None:
                self.ledger.share_daily(scope_id, SharedDaily(self._shared_source, compiled.name,
                                                              cost_to_nano(daily.cost_usd)))
            self._daily_scopes.add(scope_id)
        return scope_id

    def share_daily_caps(self, location: Any, holder: str) -> None:
        """Daily cost caps from now on are shared with every engine on the Postgres store at `location` (a store
        directory has one engine: its caps stay in memory). `holder`: this engine's id, as its runs record it."""
        from engine.store.pg.daily_allowance import open_daily_allowance

        source = open_daily_allowance(location, holder)
        if source is not None:
            self.share_dailies(source)

    def share_dailies(self, source: AllowanceSource) -> None:
        """Daily cost caps from now on are shared with every engine leasing from `source`."""
        self._shared_source = source
        self._renewer = LeaseRenewer(lambda give_back: self.ledger.renew_shared(give_back=give_back), source.ttl)

    def close(self) -> None:
        """The engine stops: give every unspent slice of a shared daily cap back (and report what was spent)."""
        source, self._shared_source = self._shared_source, None
        if source is None:
            return
        if self._renewer is not None:
            self._renewer.stop()
        source.close()

    def run_limits(self, compiled: CompiledHierarchy, override: BudgetLimits | None) -> BudgetLimits | None:
        base = compiled.spec.budgets.run
        if override is None:
            return base
        return merge_limits(base, override) if base is not None else override

    def agent_limits(self, compiled: CompiledHierarchy, agent: str) -> BudgetLimits | None:
        own = compiled.spec.agents[agent].budget
        return own if own is not None else compiled.spec.budgets.agent

    def _on_budget_event(self, event: BudgetEvent) -> None:
        labels = event.labels
        data = dict(event.data)
        data["scope"] = event.scope_id
        data["scope_kind"] = event.scope_kind
        if event.dimension is not None:
            data["dimension"] = str(event.dimension)
        self._tracer.event(labels.get("run"), labels.get("span"), event.kind, agent=labels.get("agent"),
                           name=str(event.dimension) if event.dimension else None, data=data)
