"""One circuit breaker (the semantics are described in engine.guardrails.breaker): CircuitBreaker is the call path
and state machine of calls.py (BreakerCalls, Permit) plus the operator overrides and the readings.
"""

from __future__ import annotations

from engine.guardrails.breaker.calls import BreakerCalls, Permit
from engine.guardrails.breaker.config import BreakerState
from engine.guardrails.breaker.records import BreakerSnapshot, BreakerTransition

__all__ = ["CircuitBreaker", "Permit"]

# Module-level aliases, as in calls.py: a state test compares with `is` against a global.
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED


class CircuitBreaker(BreakerCalls):
    """One breaker. All public methods are thread-safe; try_acquire + on_success on CLOSED never read the clock."""

    __slots__ = ()

    # -- operator overrides --------------------------------------------------------------------------------

    def force_open(self) -> BreakerTransition | None:
        """Reject every call until reset(). None if already forced open."""
        return self._override(_FORCED_OPEN, "forced open by operator")

    def disable(self) -> BreakerTransition | None:
        """Permit every call, record nothing, never trip, until reset(). None if already disabled."""
        return self._override(_DISABLED, "disabled by operator")

    def reset(self) -> BreakerTransition:
        """Back to CLOSED with an empty window, from any state (the only way out of FORCED_OPEN/DISABLED).
        Always a transition, even from CLOSED: the operator threw a window away and the store should say so."""
        with self._lock:
            transition = self._transition_locked(_CLOSED, "reset by operator")
        self._deliver()
        return transition

    def _override(self, to: BreakerState, reason: str) -> BreakerTransition | None:
        with self._lock:
            if self._state is to:
                return None
            transition = self._transition_locked(to, reason)
        self._deliver()
        return transition

    # -- reading ---------------------------------------------------------------------------------------------

    def available(self) -> bool:
        """Whether calls may be offered at all (not OPEN / FORCED_OPEN). A lock-free answer for the common CLOSED
        case, which the runtime asks for every tool of every agent step; other states take the lazy path, so an
        OPEN breaker whose wait has elapsed becomes HALF_OPEN (and its tool is offered again for a probe)."""
        state = self._state
        if state is BreakerState.CLOSED or state is BreakerState.DISABLED:
            return True
        return self.state not in (BreakerState.OPEN, BreakerState.FORCED_OPEN)

    @property
    def steady(self) -> bool:
        """Whether the current state can only end by a transition someone causes (a recorded outcome or an
        operator), never by time alone: CLOSED, DISABLED, FORCED_OPEN. While every breaker a conclusion depends on
        is steady, the conclusion holds until STATE_VERSION changes."""
        state = self._state
        return state is _CLOSED or state is _DISABLED or state is _FORCED_OPEN

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._refresh_locked(self._clock.monotonic())
            state = self._state
        if self._pending:
            self._deliver()
        return state

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            self._refresh_locked(self._clock.monotonic())
            snap = self._snapshot_locked()
        if self._pending:
            self._deliver()
        return snap

    def time_until_probe(self) -> float | None:
        """Seconds until an OPEN breaker lets a probe through; None in any other state."""
        with self._lock:
            now = self._clock.monotonic()
            self._refresh_locked(now)
            remaining = (self._since_mono + self.config.wait_in_open - now) if self._state is _OPEN else None
        if self._pending:
            self._deliver()
        return remaining

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.key!r}, state={self._state.value})"
