"""Time windows of budget spend: the rolling 24 h window of a daily scope and the one-minute burn-rate window."""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["BURN_WINDOW_S", "DAY_BUCKET_S", "DAY_S", "RollingDay", "prune_recent"]

DAY_S = 86_400.0
DAY_BUCKET_S = 60.0  # rolling-window granularity: bounds memory at 1440 buckets per daily scope, whatever the traffic
BURN_WINDOW_S = 60.0


class RollingDay:
    """Spend of a hierarchy_daily scope in one-minute buckets, so the 24 h window costs bounded memory.

    A bucket leaves the window once its *newest possible* entry is 24 h old: spend stops counting between 24 h and
    24 h + 60 s after it happened. Erring late keeps the cap safe; the minute of slack is invisible at daily scale.
    """

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: deque[list[Any]] = deque()  # [bucket start, packed amounts], oldest first

    def add(self, ts: float, amounts: int) -> bool:
        """Count `amounts` at `ts`. True when that started a new bucket (about once a minute)."""
        start = ts - ts % DAY_BUCKET_S
        buckets = self.buckets
        if buckets and start <= buckets[-1][0]:
            # Same minute, or the wall clock stepped back: fold into the newest bucket rather than reorder.
            buckets[-1][1] += amounts
            return False
        buckets.append([start, amounts])
        return True

    def expire(self, now: float) -> int | None:
        """Drop buckets wholly older than 24 h. Their packed total, to take off `used`; None if none expired."""
        buckets = self.buckets
        cutoff = now - DAY_S - DAY_BUCKET_S
        if not buckets or buckets[0][0] > cutoff:
            return None
        dropped = 0
        while buckets and buckets[0][0] <= cutoff:
            dropped += buckets.popleft()[1]
        return dropped


def prune_recent(recent: deque[tuple[float, int]], cutoff: float) -> None:
    """Drop burn-rate entries that left the one-minute window (the newest one never has)."""
    while recent[0][0] <= cutoff:
        recent.popleft()
