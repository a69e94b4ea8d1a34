"""What the benchmarks share: a percentile of measured values and a poll until a condition holds. The figures come
from timestamps the benchmarked code records, so the poll's interval only costs the machine's CPU, not accuracy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def percentile(values: list[float], p: float) -> float:
    """The value at percentile `p` (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wait_until(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy, and return that; TimeoutError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what} (run the benchmark by hand to see why)")
        time.sleep(interval)
