"""engine.timefmt (every printed time and duration) and engine.retry (the one retry primitive) on their own: the
outputs pinned here are the ones the CLI, the console and the postmortem printed before they shared these modules."""

from __future__ import annotations

import random
import time

from engine.retry import Backoff, parse_retry_after, plan_retry
from engine.timefmt import (
    age,
    clock,
    clock_ms,
    clock_text,
    coarse_duration,
    compact_age,
    duration,
    exact_duration,
    exact_seconds,
    seconds,
    timestamp,
)


def test_durations() -> None:
    assert [seconds(v) for v in (None, 0.25, 12.34, 150, 7300)] == ["-", "250ms", "12.3s", "2.5m", "121.7m"]
    assert [duration(v) for v in (None, 0.25, 12.34, 150, 7300)] == ["-", "250ms", "12.3s", "2.5m", "2.0h"]
    assert [compact_age(v) for v in (None, -3, 59.9, 61, 3 * 3600 + 5, 2 * 86400 + 1)] == \
        ["-", "0s", "59s", "1m", "3h", "2d"]
    assert [coarse_duration(v) for v in (None, 30, 600, 5400)] == ["-", "30s", "10 min", "1.5 h"]
    assert [exact_seconds(v) for v in (0.5, 1.25, 30.0)] == ["0.5s", "1.25s", "30s"]
    assert [exact_duration(v) for v in (0.25, 1.5, 0.0)] == ["250ms", "1.5s", "0s"]


def test_points_in_time() -> None:
    ts = time.mktime((2026, 12, 5, 13, 4, 5, 0, 0, -1)) + 0.1235  # ms truncated, as the console always did
    assert timestamp(ts) == "2026-12-05 13:04:05"
    assert clock(ts) == "13:04:05" and clock(ts, with_seconds=False) == "13:04"
    assert clock_ms(ts) == "13:04:05.123" and clock_ms(ts, with_date=True) == "2026-12-05 13:04:05.123"
    assert timestamp(None) == clock(0) == clock_ms(None) == age(None) == "-"
    assert age(ts - 30, now=ts) == "30.0s ago"
    # Times quoted in control-plane messages and the audit log: the clock today-ish, the date further away.
    assert clock_text(ts, now=ts + 3600) == "13:04:05"
    assert clock_text(ts, now=ts + 13 * 3600) == "2026-12-05 13:04:05"
    assert clock_text(None) == "an unknown time"


def test_backoff_and_plan() -> None:
    plain = Backoff(1.0, 5.0, jitter=False)
    assert [plain.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = Backoff(1.0, 5.0)
    rng = random.Random(7)
    assert all(0.0 <= jittered.delay(3, rng) <= 4.0 for _ in range(100))
    # The pager's reading: a long Retry-After is capped; the model call's: it gives up.
    assert plan_retry(plain, 1, 90.0, retry_after_cap=30.0).delay_s == 30.0
    assert plan_retry(plain, 1, 90.0, max_retry_after=30.0).give_up is not None
    assert plan_retry(plain, 3, None, time_left=3.0).give_up is not None
    assert plan_retry(plain, 3, None, time_left=5.0, scale=0.5).delay_s == 2.0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("30", 0.0) == 30.0
    assert parse_retry_after("-3") is None and parse_retry_after("-3", negative_as_zero=True) == 0.0
    assert parse_retry_after("inf") is None and parse_retry_after("soon") is None and parse_retry_after(" ") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", 0.0) == 30.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 -0000", 0.0) == 30.0  # a zone-less date is GMT
