"""What a breaker reports: the figures that tripped it, a snapshot of its state, and one transition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.guardrails.breaker.config import BreakerState

__all__ = ["BreakerSnapshot", "BreakerTransition", "TransitionHook", "TripFigures", "trip_figures", "window_snapshot"]


@dataclass(frozen=True, slots=True)
class TripFigures:
    """The window that sent a breaker to OPEN, as it stood at that moment. The transition starts a new, empty
    window, so without these an `open` event or breakers row could only say -1% of 0 calls."""

    failure_rate: float  # percent; -1.0 if the window held no completed call (a half-open probe that never returned)
    slow_call_rate: float  # percent, likewise
    calls: int
    failed_calls: int
    slow_calls: int


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    name: str
    kind: str
    state: BreakerState
    failure_rate: float  # percent, -1.0 until enough calls are in the window (resilience4j's convention)
    slow_call_rate: float  # percent, -1.0 likewise
    calls_in_window: int
    failed_calls: int
    slow_calls: int
    not_permitted_calls: int  # rejected since the current state began
    next_probe_at: float | None  # wall-clock time an OPEN breaker lets a probe through; None in other states
    since: float  # wall-clock time the current state began
    tripped_by: TripFigures | None = None  # while OPEN: the window that opened it; None in other states

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    name: str
    kind: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    snapshot: BreakerSnapshot  # just after the transition: state == to_state, empty window (tripped_by: the old one)


TransitionHook = Callable[[BreakerTransition], None]


def trip_figures(failed: int, slow: int, calls: int) -> TripFigures:
    """The deciding window's figures, read before a transition to OPEN empties it."""
    return TripFigures(failure_rate=failed * 100 / calls if calls else -1.0,
                       slow_call_rate=slow * 100 / calls if calls else -1.0,
                       calls=calls, failed_calls=failed, slow_calls=slow)


def window_snapshot(name: str, kind: str, state: BreakerState, calls: int, min_calls: int, failed: int, slow: int,
                    not_permitted: int, since_wall: float, wait_in_open: float,
                    tripped: TripFigures | None) -> BreakerSnapshot:
    """A breaker's snapshot from its window's counts: rates only once `min_calls` are in (resilience4j's -1.0
    before), the next probe and the tripping figures only while OPEN."""
    enough = calls >= min_calls and calls > 0
    is_open = state is BreakerState.OPEN
    return BreakerSnapshot(
        name=name,
        kind=kind,
        state=state,
        failure_rate=failed * 100 / calls if enough else -1.0,
        slow_call_rate=slow * 100 / calls if enough else -1.0,
        calls_in_window=calls,
        failed_calls=failed,
        slow_calls=slow,
        not_permitted_calls=not_permitted,
        next_probe_at=since_wall + wait_in_open if is_open else None,
        since=since_wall,
        tripped_by=tripped if is_open else None,
    )
