"""All breakers of one engine, created on first use, and the operator's overrides applied to them."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from engine.clock import SYSTEM_CLOCK, Clock
from engine.errors import InputError
from engine.guardrails.breaker.config import BREAKER_KINDS, OVERRIDE_ACTIONS, BreakerConfig, BreakerKind, OverrideAction
from engine.guardrails.breaker.machine import CircuitBreaker
from engine.guardrails.breaker.records import BreakerTransition, TransitionHook

__all__ = ["BreakerRegistry"]


class BreakerRegistry:
    """All breakers of one engine, created on first use. Keys are "kind:name", e.g. "tool:crm_lookup"."""

    def __init__(self, defaults: BreakerConfig | None = None, overrides: Mapping[str, BreakerConfig] | None = None,
                 clock: Clock = SYSTEM_CLOCK, on_transition: TransitionHook | None = None) -> None:
        self.defaults = defaults if defaults is not None else BreakerConfig()
        self.overrides: dict[str, BreakerConfig] = dict(overrides or {})
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def config_for(self, kind: str, name: str) -> BreakerConfig:
        """The full key "kind:name" wins over the bare name, which wins over the defaults."""
        found = self.overrides.get(f"{kind}:{name}")
        if found is None:
            found = self.overrides.get(name)
        return found if found is not None else self.defaults

    def get(self, kind: BreakerKind, name: str) -> CircuitBreaker:
        key = f"{kind}:{name}"
        breaker = self._breakers.get(key)  # lock-free fast path: dict reads are atomic
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = CircuitBreaker(name, kind, self.config_for(kind, name), self._clock, self._on_transition)
                self._breakers[key] = breaker
            return breaker

    def all(self) -> list[CircuitBreaker]:
        """Every breaker created so far, sorted by key so listings are stable."""
        with self._lock:
            return [self._breakers[key] for key in sorted(self._breakers)]

    def apply_override(self, key: str, action: OverrideAction) -> BreakerTransition | None:
        """Apply an operator action to breaker `key`, creating it if nothing has used it yet (so an operator
        can force a breaker open before a run reaches it). None when the action changed nothing."""
        if action not in OVERRIDE_ACTIONS:
            raise InputError(f"unknown breaker action {action!r}; expected one of {', '.join(OVERRIDE_ACTIONS)}",
                             field="action")
        kind, sep, name = key.partition(":")
        if not sep or not name or kind not in BREAKER_KINDS:
            raise InputError(f"breaker key must look like 'tool:NAME', 'model:NAME' or 'delegation:NAME', "
                             f"got {key!r}", field="breaker")
        breaker = self.get(kind, name)  # type: ignore[arg-type]  # kind checked against BREAKER_KINDS above
        if action == "force_open":
            return breaker.force_open()
        if action == "disable":
            return breaker.disable()
        return breaker.reset()
