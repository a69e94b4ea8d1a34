"""The ledger's queries off the hot path (the check between steps, output caps, wall time left, usage, attribution)
and the internals every method shares: a mixin of BudgetLedger, which holds the state they read (ledger.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import MappingProxyType

from engine.guardrails.budget.chain import check_chain, output_cap, prune_dailies, wall_left
from engine.guardrails.budget.limits import Dimension
from engine.guardrails.budget.records import Breach, BudgetEvent, ScopeUsage
from engine.guardrails.budget.scope import Scope, attribution_report, breach_event, usage_of
from engine.guardrails.budget.vectors import unpack

__all__ = ["LedgerQueries"]


class LedgerQueries:
    # BudgetLedger's state (set in its __init__).
    _lock: threading.Lock
    _scopes: dict[str, Scope]
    _monotonic: Callable[[], float]
    _wall_time: Callable[[], float]
    _attribution: dict[tuple[tuple[str, str], ...], int]
    _on_event: Callable[[BudgetEvent], None] | None

    def check(self, scope_id: str) -> Breach | None:
        """Would a zero-sized reserve() be refused? For the wall-time check between steps; reserves nothing.

        Also fires soft warnings that are due (a wall-time warning has no other moment to fire between calls).
        """
        scope = self._scopes.get(scope_id)
        if scope is not None and scope.free:
            return None  # nothing limited anywhere up the chain: nothing can be exceeded or warned about
        events: list[BudgetEvent] = []
        with self._lock:
            scope = self._get(scope_id)
            now = self._monotonic()
            if scope.dailies:
                prune_dailies(scope.dailies, self._wall_time())
            breach = check_chain(scope.chain, now, events)
            if breach is not None:
                events.append(self._breach_event(breach))
        self._emit(events)
        return breach

    def step_output_cap(self, scope_id: str, *, input_tokens: int = 0) -> int | None:
        """Most output tokens one call may still ask for: the smallest output/total headroom across the chain.

        `input_tokens` (the prompt about to be sent) is taken off the total-token headroom. None = no token limit,
        0 = nothing left. The runtime lowers max_tokens to this instead of failing while a little budget remains.
        """
        scope = self._scopes.get(scope_id)
        if scope is not None and not scope.token_capped:
            return None  # no output or total token limit anywhere up the chain
        with self._lock:
            scope = self._get(scope_id)
            if scope.dailies:
                prune_dailies(scope.dailies, self._wall_time())
            cap = output_cap(scope.chain, input_tokens)
        return None if cap is None else max(cap, 0)

    def limited(self, scope_id: str) -> bool:
        """Does any scope up this one's chain limit anything? (False for an unknown scope.)"""
        scope = self._scopes.get(scope_id)
        return scope is not None and not scope.free

    def wall_time_left(self, scope_id: str) -> float | None:
        """Seconds until the first wall_time_s limit up the chain runs out (0 once one has); None = no wall limit.
        The runtime asks before it sleeps a retry backoff, so no wait outlasts the time the run has left."""
        scope = self._scopes.get(scope_id)
        if scope is None or scope.free:
            return None
        with self._lock:
            return wall_left(scope.chain, self._monotonic())

    def usage(self, scope_id: str) -> ScopeUsage:
        with self._lock:
            return usage_of(self._get(scope_id), self._monotonic(), self._wall_time())

    def attribution(self) -> dict[str, dict[str, dict[Dimension, float]]]:
        """Settled spend per label: ``attribution()["agent"]["pricing"][Dimension.cost_usd]``."""
        with self._lock:
            groups = [(key, unpack(totals)) for key, totals in self._attribution.items()]
        return attribution_report(groups)

    # -- internals (call with the lock held) -------------------------------------------------------------------------

    def _get(self, scope_id: str) -> Scope:
        scope = self._scopes.get(scope_id)
        if scope is None:
            raise KeyError(f"no open budget scope '{scope_id}'")
        return scope

    def _breach_event(self, breach: Breach) -> BudgetEvent:
        scope = self._scopes.get(breach.scope_id)
        return breach_event(breach, scope.labels if scope is not None else MappingProxyType({}))

    def _emit(self, events: list[BudgetEvent] | None) -> None:
        if events:
            on_event = self._on_event
            if on_event is not None:
                for event in events:
                    on_event(event)

