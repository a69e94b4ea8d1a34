"""Every way Flightdeck prints a time or a duration, in one place: the CLI, the console and the postmortem draft.

Local time throughout (what an operator compares with the wall clock). A missing value prints as "-". Parsing the
other way round ("30s" -> 30.0) lives in engine.durations. Plain functions and no imports beyond `time`, so the CLI
keeps its fast start.
"""

from __future__ import annotations

import time

__all__ = [
    "age",
    "clock",
    "clock_ms",
    "clock_text",
    "coarse_duration",
    "compact_age",
    "duration",
    "exact_duration",
    "exact_seconds",
    "seconds",
    "timestamp",
]

_DATE_TIME = "%Y-%m-%d %H:%M:%S"
_TIME = "%H:%M:%S"


# -- points in time ---------------------------------------------------------------------------------------------------


def timestamp(ts: float | None) -> str:
    """2026-12-05 13:04:05 (a zero or missing time prints as "-")."""
    if not ts:
        return "-"
    return time.strftime(_DATE_TIME, time.localtime(ts))


def clock(ts: float | None, *, with_seconds: bool = True) -> str:
    """13:04:05, or 13:04 without seconds (a zero or missing time prints as "-")."""
    if not ts:
        return "-"
    return time.strftime(_TIME if with_seconds else "%H:%M", time.localtime(ts))


def clock_ms(ts: float | None, with_date: bool = False) -> str:
    """13:04:05.123 (or with the date in front): span and audit tables, where events a few ms apart must differ."""
    if not ts:
        return "-"
    return time.strftime(_DATE_TIME if with_date else _TIME, time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}"


def clock_text(ts: float | None, now: float | None = None) -> str:
    """12:03:04 for today-ish times (what an operator compares with the wall clock), the full date otherwise: times
    quoted in messages and the audit log ("released by alice at 12:03:04"). A missing time is "an unknown time"."""
    if ts is None:
        return "an unknown time"
    now = time.time() if now is None else now
    return time.strftime(_TIME if abs(now - ts) < 12 * 3600 else _DATE_TIME, time.localtime(ts))


# -- durations --------------------------------------------------------------------------------------------------------


def duration(value: float | None, *, hours: bool = True) -> str:
    """850ms, 12.3s, 4.5m, 2.5h (from two hours; with hours=False minutes go on: 150.0m)."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    if not hours or value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def exact_seconds(value: float) -> str:
    """0.5s, 1.25s, 30s: to the millisecond, without trailing zeros (messages quoting a setting or a wait)."""
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def exact_duration(value: float) -> str:
    """Like exact_seconds, but below a second in milliseconds: 250ms, 1.5s."""
    if 0 < value < 1:
        return f"{value * 1000:.3f}".rstrip("0").rstrip(".") + "ms"
    return exact_seconds(value)


def seconds(value: float | None) -> str:
    """The CLI's duration: like duration() but never in hours (its tables have always read in minutes)."""
    return duration(value, hours=False)


def age(ts: float | None, now: float | None = None) -> str:
    """How long ago `ts` was, as the CLI prints it: "12.3s ago" ("-" for a zero or missing time)."""
    if not ts:
        return "-"
    return seconds(max(0.0, (now or time.time()) - ts)) + " ago"


def compact_age(value: float | None) -> str:
    """12s, 4m, 3h, 2d (whole units, rounded down): fits a 4-column cell."""
    if value is None:
        return "-"
    s = max(0.0, value)
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m"
    if s < 86400:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"


def coarse_duration(value: float | None) -> str:
    """45s, 12 min, 2.5 h: prose in a postmortem, where tenths of a second are noise."""
    if value is None:
        return "-"
    value = max(0.0, value)
    if value < 60:
        return f"{value:.0f}s"
    if value < 3600:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"
