"""Circuit breakers with resilience4j semantics: a pure, clock-injected state machine per tool/model/delegation.

States and moves (resilience4j's CircuitBreakerStateMachine, count-based sliding window):

    CLOSED --(failure or slow rate >= threshold, once minimum_calls are in the window)--> OPEN
    OPEN --(wait_in_open elapsed; noticed lazily on the next try_acquire or state read)--> HALF_OPEN
    HALF_OPEN --(all permitted probes completed, both rates below threshold)--> CLOSED
    HALF_OPEN --(all probes completed, a rate >= threshold; or probes did not finish in time)--> OPEN
    any --force_open()--> FORCED_OPEN    any --disable()--> DISABLED    any --reset()--> CLOSED

Every transition starts a new *epoch* with an empty window and a zero not-permitted count. Choices where the
brief or resilience4j leave room (tests/engine/test_breaker.py pins each one):

* Stale permits. A permit remembers the epoch it was issued in; settling it in a later epoch records nothing.
  resilience4j records such late outcomes into whatever state is current, so a call admitted while CLOSED can
  be counted as a half-open probe and close (or re-open) the breaker on evidence that predates the outage.
* Error kinds. ``ignore_errors`` wins: an ignored error records nothing and frees its half-open slot, exactly
  like ``Permit.release()``. An error whose kind is not in ``record_errors`` counts as a *success* (it may
  still be slow) -- resilience4j's recordExceptions rule. A kind listed in both is rejected as a config error.
* minimum_calls larger than sliding_window_size is capped at the window size (resilience4j does the same), so
  such a breaker can still trip. In HALF_OPEN the decision waits for all permitted probes.
* Wedged HALF_OPEN. With ``max_wait_in_half_open > 0`` the breaker returns to OPEN once that long has passed
  in HALF_OPEN without a decision (resilience4j). With 0 ("wait for all probes") a probe that never returns
  would hold its slot forever, so a *lost-probe guard* applies instead: a probe still in flight
  ``slow_call_duration + wait_in_open`` after it was issued sends the breaker back to OPEN. By then the probe
  is far past "slow", and the breaker has shown it the same patience it shows an outage. The guard is per
  probe, so sparse traffic that trickles probes in slowly is never punished for being sparse.
* ``reset()`` always produces a transition, even CLOSED -> CLOSED: it is an operator action that throws away
  a window, and the store should record it. ``force_open()``/``disable()`` on a breaker already in that state
  change nothing and return None.
* on_transition is called synchronously, *outside* the state lock, exactly once per transition and in
  transition order: transitions queue under the state lock and are drained under a separate re-entrant lock,
  so the call that caused a transition returns only after it was delivered (by its own thread, or by another
  thread that was draining at that moment). The hook may call back into the breaker; it must not wait on
  other threads that use the breaker. An exception it raises is logged, not propagated: the transition has
  already happened, and the caller of try_acquire() must still receive its permit (a lost half-open permit
  would leak a probe slot).

The package: config.py (kinds, BreakerConfig, BreakerState), records.py (what transitions and snapshots report),
reasons.py (why a breaker moved, in words), version.py (the process-wide STATE_VERSION), calls.py (the call path
and state machine, and its Permit), machine.py (CircuitBreaker: calls.py's machine plus operator overrides and
readings), registry.py (BreakerRegistry). Import the public names from here.
"""

from engine.guardrails.breaker.config import (
    BREAKER_KINDS,
    MAX_WINDOW_CALLS,
    OVERRIDE_ACTIONS,
    BreakerConfig,
    BreakerKind,
    BreakerState,
    OverrideAction,
    Percent,
)
from engine.guardrails.breaker.machine import CircuitBreaker, Permit
from engine.guardrails.breaker.records import BreakerSnapshot, BreakerTransition, TransitionHook, TripFigures
from engine.guardrails.breaker.registry import BreakerRegistry
from engine.guardrails.breaker.version import STATE_VERSION

__all__ = [
    "BREAKER_KINDS",
    "MAX_WINDOW_CALLS",
    "OVERRIDE_ACTIONS",
    "STATE_VERSION",
    "BreakerConfig",
    "BreakerKind",
    "BreakerRegistry",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerTransition",
    "CircuitBreaker",
    "OverrideAction",
    "Percent",
    "Permit",
    "TransitionHook",
    "TripFigures",
]
