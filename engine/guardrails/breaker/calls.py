"""A breaker's call path and state machine: the permits it hands out, recording a settled call into the window,
the decisions and transitions a recorded call or elapsed time causes, and delivering transitions to the hook.
CircuitBreaker (machine.py) adds the operator overrides and the readings on top. Permit and BreakerCalls share
private state by design: a permit settles into the breaker that issued it, and on_success (every call) is inline.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from engine.clock import SYSTEM_CLOCK, Clock
from engine.guardrails.breaker.config import BREAKER_KINDS, BreakerConfig, BreakerKind, BreakerState
from engine.guardrails.breaker.reasons import exceeded, probe_lost, probes_succeeded, probes_timed_out, wait_elapsed
from engine.guardrails.breaker.records import (
    BreakerSnapshot,
    BreakerTransition,
    TransitionHook,
    TripFigures,
    trip_figures,
    window_snapshot,
)
from engine.guardrails.breaker.version import STATE_VERSION

__all__ = ["BreakerCalls", "Permit"]

# The package's logger name, as before the split (operators and tests filter on it).
_log = logging.getLogger("engine.guardrails.breaker")

# Module-level aliases: the hot path compares with `is` against a global instead of an attribute lookup.
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN
_FORCED_OPEN = BreakerState.FORCED_OPEN
_DISABLED = BreakerState.DISABLED

# One byte per outcome in the ring: bit 0 = failed, bit 1 = slow.
_FAILED = 1
_SLOW = 2


class Permit:
    """Permission to make one call. Settle it exactly once: on_success, on_error, or release if the call was cancelled.

    Later settles are ignored, so a `finally: permit.release()` after on_success is harmless.
    """

    __slots__ = ("_breaker", "_epoch", "_issued_at", "_settled")

    def __init__(self, breaker: BreakerCalls, epoch: int, issued_at: float = 0.0) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._settled = False
        self._issued_at = issued_at  # monotonic; only meaningful for half-open probes (lost-probe guard)

    @property
    def breaker(self) -> BreakerCalls:
        return self._breaker

    @property
    def settled(self) -> bool:
        return self._settled

    def on_success(self, duration_s: float) -> None:
        """Record a success. The common case (CLOSED, this epoch, not slow) is handled right here, in O(1) with no
        rate arithmetic and no further call (it runs after every model and tool call): a fast success lowers both
        rates, so it can only trip the breaker when it is the call that brings the window to minimum_calls (every
        later record in this window was checked and did not trip)."""
        b = self._breaker
        lock = b._lock
        lock.acquire()
        try:
            fast = (b._state is _CLOSED and self._epoch == b._epoch and not self._settled
                    and duration_s < b._slow_s)
            if fast:
                self._settled = True
                pos = b._pos
                if b._calls == b._size:
                    old = b._ring[pos]
                    if old:
                        b._ring[pos] = 0
                        b._failed -= old & _FAILED
                        b._slow -= old >> 1
                    reached_minimum = False
                else:
                    b._calls += 1  # not full yet: ring[pos] was never written, so it already holds 0
                    reached_minimum = b._calls == b._min_calls
                pos += 1
                b._pos = 0 if pos == b._size else pos
                if reached_minimum:
                    b._check_closed_locked()
        finally:
            lock.release()
        if not fast:
            # Anything else (another state, a stale, slow or already settled permit) takes the general path.
            b._record(self, duration_s, False)
        elif b._pending:
            b._deliver()

    def on_error(self, duration_s: float, kind: str) -> None:
        breaker = self._breaker
        if kind in breaker._ignored:
            breaker._release(self)
        else:
            recorded = breaker._recorded
            breaker._record(self, duration_s, recorded is None or kind in recorded)

    def release(self) -> None:
        self._breaker._release(self)


class BreakerCalls:
    """The state machine under CircuitBreaker. All public methods are thread-safe; try_acquire + on_success on CLOSED
    never read the clock."""

    __slots__ = (
        "_calls",
        "_clock",
        "_emit_lock",
        "_epoch",
        "_failed",
        "_failure_thr",
        "_ho_available",
        "_ho_outstanding",
        "_ignored",
        "_lock",
        "_min_calls",
        "_not_permitted",
        "_on_transition",
        "_pending",
        "_pos",
        "_recorded",
        "_ring",
        "_since_mono",
        "_since_wall",
        "_size",
        "_slow",
        "_slow_s",
        "_slow_thr",
        "_state",
        "_tripped",
        "config",
        "kind",
        "name",
    )
    # The window's running counts, assigned together in one chained statement: declared so mypy knows their type.
    _pos: int
    _calls: int
    _failed: int
    _slow: int

    def __init__(self, name: str, kind: BreakerKind, config: BreakerConfig, clock: Clock = SYSTEM_CLOCK,
                 on_transition: TransitionHook | None = None) -> None:
        if kind not in BREAKER_KINDS:
            raise ValueError(f"breaker kind must be one of {', '.join(BREAKER_KINDS)}, got {kind!r}")
        self.name = name
        self.kind: str = kind
        self.config = config
        self._clock = clock
        self._on_transition = on_transition
        self._lock = threading.Lock()
        # Re-entrant so a hook that reads the breaker (and triggers a lazy transition) delivers in order.
        self._emit_lock = threading.RLock()
        self._pending: deque[BreakerTransition] = deque()
        # Config copied into slots: the hot path must not chase config attributes.
        self._slow_s = config.slow_call_duration
        self._failure_thr = config.failure_rate_threshold
        self._slow_thr = config.slow_call_rate_threshold
        self._ignored = frozenset(config.ignore_errors)
        self._recorded = None if config.record_errors is None else frozenset(config.record_errors)
        self._state = _CLOSED
        self._epoch = 0
        self._since_mono = clock.monotonic()
        self._since_wall = clock.time()
        self._ho_outstanding: set[Permit] = set()
        self._ho_available = 0
        self._tripped: TripFigures | None = None
        self._new_window(_CLOSED)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    # -- calls ---------------------------------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit to make one call, or None if the breaker rejects it (counted as not permitted)."""
        # CLOSED and DISABLED admit everything and change nothing, so they need no lock: read the epoch, then the
        # state. A transition writes the state, then the epoch (_transition_locked), so a CLOSED/DISABLED state
        # read after the epoch belongs to that epoch or a later one; in a later one the permit is stale and
        # records nothing, exactly as if it had been issued just before the transition. (Relies on the GIL's
        # sequential consistency, like every lock-free read here.)
        epoch = self._epoch
        state = self._state
        if state is _CLOSED or state is _DISABLED:
            return Permit(self, epoch, 0.0)
        # acquire/try/finally rather than `with`: measurably cheaper, and this is the per-call hot path.
        lock = self._lock
        lock.acquire()
        try:
            state = self._state
            if state is _CLOSED or state is _DISABLED:
                return Permit(self, self._epoch, 0.0)
            permit = self._acquire_guarded_locked()
        finally:
            lock.release()
        if self._pending:
            self._deliver()
        return permit

    def _acquire_guarded_locked(self) -> Permit | None:
        now = self._clock.monotonic()
        self._refresh_locked(now)
        state = self._state
        if state is _HALF_OPEN and self._ho_available > 0:
            self._ho_available -= 1
            permit = Permit(self, self._epoch, now)
            self._ho_outstanding.add(permit)
            return permit
        self._not_permitted += 1
        return None

    def _record(self, permit: Permit, duration_s: float, failed: bool) -> None:
        lock = self._lock
        lock.acquire()
        try:
            if permit._settled:
                return
            permit._settled = True
            state = self._state
            if state is _HALF_OPEN:
                # A late probe may find its half-open epoch already timed out; check before counting it.
                self._refresh_locked(self._clock.monotonic())
                state = self._state
            if permit._epoch != self._epoch or (state is not _CLOSED and state is not _HALF_OPEN):
                return  # stale permit, or a DISABLED breaker: record nothing (see module docstring)
            code = (_FAILED if failed else 0) | (_SLOW if duration_s >= self._slow_s else 0)
            # Ring buffer with running counts: O(1), no allocation.
            ring = self._ring
            pos = self._pos
            if self._calls == self._size:
                old = ring[pos]
                self._failed -= old & _FAILED
                self._slow -= old >> 1
            else:
                self._calls += 1
            ring[pos] = code
            self._failed += code & _FAILED
            self._slow += code >> 1
            pos += 1
            self._pos = 0 if pos == self._size else pos
            if self._calls >= self._min_calls:
                if state is _CLOSED:
                    self._check_closed_locked()
                else:
                    self._ho_outstanding.discard(permit)
                    self._decide_half_open_locked()
            elif state is _HALF_OPEN:
                self._ho_outstanding.discard(permit)
        finally:
            lock.release()
            # On every path, early returns included: a transition queued by _refresh_locked before a
            # stale-permit return must not wait for some later caller to be delivered.
            if self._pending:
                self._deliver()

    def _release(self, permit: Permit) -> None:
        with self._lock:
            if permit._settled:
                return
            permit._settled = True
            if self._state is _HALF_OPEN and permit._epoch == self._epoch:
                self._ho_outstanding.discard(permit)
                self._ho_available += 1

    # -- decisions (lock held) ---------------------------------------------------------------------------

    def _check_closed_locked(self) -> None:
        # Integer-ish comparison (count*100 >= threshold*calls) so 5 of 10 at 50% trips with no float rounding.
        calls = self._calls
        failing = self._failed * 100 >= self._failure_thr * calls
        slow = self._slow * 100 >= self._slow_thr * calls
        if failing or slow:
            self._transition_locked(_OPEN, self._exceeded_reason(False, failing, slow))

    def _decide_half_open_locked(self) -> None:
        calls = self._calls
        failing = self._failed * 100 >= self._failure_thr * calls
        slow = self._slow * 100 >= self._slow_thr * calls
        if failing or slow:
            self._transition_locked(_OPEN, self._exceeded_reason(True, failing, slow))
        else:
            self._transition_locked(_CLOSED, probes_succeeded(self._failed, self._slow, calls,
                                                                      self._failure_thr, self._slow_thr))

    def _exceeded_reason(self, probes: bool, failing: bool, slow: bool) -> str:
        return exceeded(probes, failing, slow, self._failed, self._slow, self._calls, self._failure_thr,
                                self._slow_thr)

    def _refresh_locked(self, now: float) -> None:
        """Time-driven transitions, applied lazily whenever someone looks: OPEN's wait, HALF_OPEN's deadlines."""
        state = self._state
        if state is _OPEN:
            if now - self._since_mono >= self.config.wait_in_open:
                self._transition_locked(_HALF_OPEN, wait_elapsed(self.config.wait_in_open))
        elif state is _HALF_OPEN:
            max_wait = self.config.max_wait_in_half_open
            if max_wait > 0:
                if now - self._since_mono >= max_wait:
                    self._transition_locked(_OPEN, probes_timed_out(max_wait))
            elif self._ho_outstanding:
                lost_after = self.config.slow_call_duration + self.config.wait_in_open  # see module docstring
                oldest = min(p._issued_at for p in self._ho_outstanding)
                if now - oldest >= lost_after:
                    self._transition_locked(_OPEN, probe_lost(now - oldest, lost_after))

    def _new_window(self, state: BreakerState) -> None:
        cfg = self.config
        if state is _HALF_OPEN:
            self._size = self._min_calls = cfg.permitted_calls_in_half_open
        else:
            # OPEN/FORCED_OPEN/DISABLED never record, but keep a valid ring so the code needs no special cases.
            self._size = cfg.sliding_window_size
            self._min_calls = min(cfg.minimum_calls, cfg.sliding_window_size)
        self._ring = bytearray(self._size)
        self._pos = self._calls = self._failed = self._slow = self._not_permitted = 0
        self._ho_outstanding = set()
        self._ho_available = cfg.permitted_calls_in_half_open if state is _HALF_OPEN else 0

    def _transition_locked(self, to: BreakerState, reason: str) -> BreakerTransition:
        from_state = self._state
        # This order (state, then epoch) is what try_acquire's lock-free path relies on.
        self._state = to
        self._epoch += 1
        STATE_VERSION.bump()
        self._since_mono = self._clock.monotonic()
        self._since_wall = self._clock.time()
        # Read the deciding window before _new_window empties it.
        self._tripped = trip_figures(self._failed, self._slow, self._calls) if to is _OPEN else None
        self._new_window(to)
        transition = BreakerTransition(self.name, self.kind, from_state, to, reason, self._snapshot_locked())
        if self._on_transition is not None:
            self._pending.append(transition)
        return transition

    def _deliver(self) -> None:
        hook = self._on_transition
        if hook is None:
            return
        with self._emit_lock:
            while True:
                try:
                    transition = self._pending.popleft()
                except IndexError:
                    return
                try:
                    hook(transition)
                except Exception:
                    _log.exception("breaker %s: on_transition hook failed for %s -> %s", self.key,
                                   transition.from_state, transition.to_state)

    def _snapshot_locked(self) -> BreakerSnapshot:
        return window_snapshot(self.name, self.kind, self._state, self._calls, self._min_calls, self._failed,
                               self._slow, self._not_permitted, self._since_wall, self.config.wait_in_open,
                               self._tripped)
