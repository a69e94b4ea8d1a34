"""Why an open breaker opened, read off traces.db for the breakers view: the opening's own words and figures (the
engine's `breaker.transition` event: "failure rate 62% >= 50%", the failure rate and call count of the window that
tripped it) and the last error of a call through it before it opened (the newest failed span of that tool or model
in that hierarchy, its `error` attribute).

Indexed reads only: events by (kind, seq) for the opening, then at most LOOKBACK events before it for the failed
call, then one span by id. Called on the feed's thread when a breaker is open, once per opening (the feed caches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.reader import TraceReader

TRANSITION = "breaker.transition"
OPEN_STATES = ("open", "forced_open")
FAILED_SPAN = ("error", "timeout", "validation_failed")
LOOKBACK = 5000  # events before the opening searched for the last failed call (a bounded scan)
RECENT_TRANSITIONS = 50


@dataclass(frozen=True, slots=True)
class BreakerWhy:
    """An opening: when, the engine's reason, the tripping window's figures, and the last error before it."""

    opened: float
    reason: str
    failure_rate: float | None
    calls: int | None
    last_error: str | None
    last_error_kind: str | None


def _data(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def breaker_why(reader: TraceReader, hierarchy: str, key: str, name: str) -> BreakerWhy | None:
    """The latest opening of breaker `key` in `hierarchy` (None when the store records none)."""
    rows = reader.query("SELECT seq, ts, data FROM events WHERE kind = ? AND name = ? ORDER BY seq DESC LIMIT ?",
                        (TRANSITION, key, RECENT_TRANSITIONS))
    opening = None
    for row in rows:
        data = _data(row.get("data"))
        if data.get("hierarchy") == hierarchy and data.get("to") in OPEN_STATES:
            opening = (int(row["seq"]), float(row["ts"]), data)
            break
    if opening is None:
        return None
    seq, ts, data = opening
    calls = _num(data.get("calls_in_window"))
    error, error_kind = last_error(reader, hierarchy, name, seq)
    return BreakerWhy(opened=ts, reason=str(data.get("reason") or ""), failure_rate=_num(data.get("failure_rate")),
                      calls=int(calls) if calls is not None else None, last_error=error, last_error_kind=error_kind)


def last_error(reader: TraceReader, hierarchy: str, name: str, before_seq: int) -> tuple[str | None, str | None]:
    """The error of the newest failed call named `name` in `hierarchy` within LOOKBACK events before `before_seq`."""
    failed = reader.query(
        "SELECT e.span_id, e.data FROM events e JOIN runs r ON r.id = e.run_id "
        "WHERE e.kind = 'span.ended' AND e.seq < ? AND e.seq >= ? AND e.name = ? AND r.hierarchy = ? "
        "ORDER BY e.seq DESC LIMIT 200", (before_seq, before_seq - LOOKBACK, name, hierarchy))
    for row in failed:
        if _data(row.get("data")).get("status") in FAILED_SPAN and row.get("span_id"):
            spans = reader.query("SELECT attributes FROM spans WHERE id = ?", (row["span_id"],))
            attrs = _data(spans[0].get("attributes")) if spans else {}
            error = attrs.get("error")
            if error:
                kind = attrs.get("error_kind")
                return str(error), str(kind) if kind else None
    return None, None
