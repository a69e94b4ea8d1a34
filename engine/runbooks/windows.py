"""Sliding windows per key, and the hysteresis that turns a noisy condition into fire / clear transitions.

Both are plain data structures driven by explicit timestamps (the watchdog's clock), so tests step them exactly.
Costs are amortised O(1) per sample: a window keeps a deque of (t, key, values) and running totals per key, and
expiring a sample subtracts it. Percentiles keep the samples themselves (bounded per key) and sort on evaluation,
which runs about once a second, not per event.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

MAX_PERCENTILE_SAMPLES = 5000  # per key: enough for a stable p95, bounded memory under any load


class WindowedSums:
    """Per key: the sums of the values of the samples added in the last `window` seconds, and their count."""

    def __init__(self, window: float, width: int = 1) -> None:
        self.window = window
        self.width = width
        self._samples: deque[tuple[float, str, tuple[float, ...]]] = deque()
        self.totals: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}

    def add(self, t: float, key: str, values: tuple[float, ...]) -> None:
        self._samples.append((t, key, values))
        totals = self.totals.get(key)
        if totals is None:
            totals = self.totals[key] = [0.0] * self.width
        for i, value in enumerate(values):
            totals[i] += value
        self.counts[key] = self.counts.get(key, 0) + 1

    def expire(self, now: float) -> None:
        horizon = now - self.window
        samples = self._samples
        while samples and samples[0][0] <= horizon:
            _, key, values = samples.popleft()
            count = self.counts[key] - 1
            if count == 0:
                # The last sample of a key is gone: drop it, so totals never drift from float subtraction.
                del self.counts[key]
                del self.totals[key]
                continue
            self.counts[key] = count
            totals = self.totals[key]
            for i, value in enumerate(values):
                totals[i] -= value


class WindowedSamples:
    """Per key: the raw values added in the last `window` seconds (for percentiles)."""

    def __init__(self, window: float, cap: int = MAX_PERCENTILE_SAMPLES) -> None:
        self.window = window
        self.cap = cap
        self.samples: dict[str, deque[tuple[float, float]]] = {}

    def add(self, t: float, key: str, value: float) -> None:
        samples = self.samples.get(key)
        if samples is None:
            samples = self.samples[key] = deque(maxlen=self.cap)
        samples.append((t, value))

    def expire(self, now: float) -> None:
        horizon = now - self.window
        for key in list(self.samples):
            samples = self.samples[key]
            while samples and samples[0][0] <= horizon:
                samples.popleft()
            if not samples:
                del self.samples[key]

    def percentile(self, key: str, q: float) -> tuple[float, int] | None:
        """(the q-th percentile by the nearest-rank method, the sample count), or None without samples."""
        samples = self.samples.get(key)
        if not samples:
            return None
        values = sorted(v for _, v in samples)
        rank = max(1, math.ceil(q / 100.0 * len(values)))
        return values[rank - 1], len(values)


OK, PENDING, FIRING, CLEARING = "ok", "pending", "firing", "clearing"


@dataclass(slots=True)
class Hysteresis:
    """fires once the condition has held for `hold` seconds; clears once it has been false for `quiet` seconds.
    A condition that flickers while firing (false for less than `quiet`) never produces a clear/fire pair."""

    hold: float
    quiet: float
    state: str = OK
    since: float = 0.0
    fired_at: float | None = None
    peak: float | None = None
    last_value: float | None = field(default=None)

    def update(self, now: float, holds: bool, value: float | None = None) -> str | None:
        """Feed the condition's truth at `now`; returns "fire", "clear" or None."""
        if value is not None:
            self.last_value = value
        state = self.state
        if holds:
            if state == OK:
                self.state, self.since = PENDING, now
                state = PENDING
            if state == PENDING:
                if now - self.since >= self.hold:
                    self.state, self.fired_at, self.peak = FIRING, now, value
                    return "fire"
                return None
            if state == CLEARING:
                self.state = FIRING  # it came back before the quiet period ended: still the same incident
            if value is not None and (self.peak is None or value > self.peak):
                self.peak = value
            return None
        if state == PENDING:
            self.state = OK
        elif state == FIRING:
            self.state, self.since = CLEARING, now
            state = CLEARING
        if state == CLEARING and now - self.since >= self.quiet:
            self.state = OK
            return "clear"
        return None

    @property
    def active(self) -> bool:
        """Firing, or waiting out its quiet period: the detection still counts as on."""
        return self.state in (FIRING, CLEARING)
