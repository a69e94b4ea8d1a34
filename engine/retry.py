"""The one retry primitive: how long to wait before the next attempt, and whether waiting is worth it at all.

Used by model calls (engine/runtime/model_call.py) and the pager (engine/runbooks/pager.py); providers use its
Retry-After parser. The loops themselves stay with their callers, because what happens between two attempts differs
(a model call checks its breaker and takes one unit of the run's retry budget before the wait; a page only reports
the attempt): each loop asks plan_retry() for the wait and calls its own hook (a trace event, an Attempt report).

Why no third-party retry library (stamina, tenacity): both own the loop and its sleeping. The model call's rules do
not fit a decorator (the breaker check before the backoff, giving up on a Retry-After beyond max_retry_after or on a
wait that outlasts the run's wall time, the per-run retry budget), and the engine's hot path does not take a layer
of wrappers per call. The parts that stamina gets right are kept: one place for the backoff formula, full jitter,
a cap, Retry-After honoured, and a hook per retry.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from engine.timefmt import exact_seconds

__all__ = ["Backoff", "RetryWait", "parse_retry_after", "plan_retry"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``min(maximum, initial * multiplier ** (attempt - 1))`` after failed attempt `attempt`
    (1-based). With `jitter` the wait is drawn uniformly below that ceiling ("full jitter", AWS's recommendation),
    so clients that failed together do not retry together."""

    initial: float
    maximum: float
    multiplier: float = 2.0
    jitter: bool = True

    def ceiling(self, attempt: int) -> float:
        return min(self.maximum, self.initial * self.multiplier ** (attempt - 1))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling(attempt)
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryWait:
    """What follows a retryable failure: wait ``delay_s`` and retry, or (``give_up`` says why) stop retrying."""

    delay_s: float
    give_up: str | None = None


def plan_retry(backoff: Backoff, attempt: int, retry_after: float | None, rng: random.Random | None = None, *,
               max_retry_after: float | None = None, retry_after_cap: float | None = None,
               time_left: float | None = None, scale: float = 1.0) -> RetryWait:
    """The wait before attempt ``attempt + 1``: the backoff, never shorter than the server's Retry-After.

    Two ways to treat a Retry-After that is too long: ``max_retry_after`` gives up (a wait that long is a failure of
    the target, and a fallback may answer now), ``retry_after_cap`` waits at most that long. ``time_left`` gives up
    when the wait would outlast it (the retry after it could only breach). ``scale`` stretches the wait (scripted
    models run on the demo's clock).
    """
    if retry_after is not None and max_retry_after is not None and retry_after > max_retry_after:
        return RetryWait(0.0, f"Retry-After of {exact_seconds(retry_after)} is longer than max_retry_after "
                              f"{exact_seconds(max_retry_after)}")
    delay = backoff.delay(attempt, rng)
    if retry_after is not None:
        delay = max(delay, retry_after if retry_after_cap is None else min(retry_after, retry_after_cap))
    delay *= scale
    if time_left is not None and delay >= time_left:
        return RetryWait(0.0, f"a wait of {exact_seconds(delay)} would outlast the {exact_seconds(time_left)} of "
                              f"wall time left")
    return RetryWait(delay)


def parse_retry_after(value: str | None, now: float | None = None, *, negative_as_zero: bool = False
                      ) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (``now`` is epoch seconds).

    None when absent or unreadable. A date in the past means "now" (0.0). A negative number of seconds is malformed
    (None), or 0.0 with ``negative_as_zero`` (the pager's reading: retry at once rather than on its own schedule).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return None
        if seconds < 0:
            return 0.0 if negative_as_zero else None
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 9110 dates are GMT
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
