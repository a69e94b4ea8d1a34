"""Why an open breaker opened, read off traces.db for the breakers view: the opening's own words and figures (the
engine's `breaker.transition` event: "failure rate 62% >= 50%", the failure rate and call count of the window that
tripped it) and the last error of a call through it before it opened (the newest failed span of that tool or model
in that hierarchy, its `error` attribute).

Through the reader's public methods (no SQL in the console): the `breaker.transition` events among the last RECENT
events (the (kind, seq) index), then the `span.ended` events among the LOOKBACK before the opening, then the spans of
the run of the newest failed one. Called on the feed's thread when a breaker is open, once per opening (the feed
caches). An opening older than the last RECENT events is not found: the view says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.reader_protocol import TraceReads

TRANSITION = "breaker.transition"
SPAN_ENDED = "span.ended"
OPEN_STATES = ("open", "forced_open")
FAILED_SPAN = ("error", "timeout", "validation_failed")
RECENT = 50_000  # events searched (newest) for the opening
LOOKBACK = 2_000  # span.ended events before the opening searched for the last failed call
PAGE = 1_000


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


def breaker_why(reader: TraceReads, hierarchy: str, key: str, name: str) -> BreakerWhy | None:
    """The latest opening of breaker `key` in `hierarchy` (None when the recent events record none)."""
    after = max(0, reader.last_seq() - RECENT)
    opening = None
    while True:
        events = reader.events_after(after, limit=PAGE, kinds=(TRANSITION,))
        for event in events:
            data = _data(event.data)
            if event.name == key and data.get("hierarchy") == hierarchy and data.get("to") in OPEN_STATES:
                opening = (event.seq, event.ts, data)
        if len(events) < PAGE:
            break
        after = events[-1].seq
    if opening is None:
        return None
    seq, ts, data = opening
    calls = _num(data.get("calls_in_window"))
    error, error_kind = last_error(reader, hierarchy, name, seq)
    return BreakerWhy(opened=ts, reason=str(data.get("reason") or ""), failure_rate=_num(data.get("failure_rate")),
                      calls=int(calls) if calls is not None else None, last_error=error, last_error_kind=error_kind)


def last_error(reader: TraceReads, hierarchy: str, name: str, before_seq: int) -> tuple[str | None, str | None]:
    """The error of the newest failed call named `name` in `hierarchy` among the LOOKBACK span ends before
    `before_seq`."""
    ended = reader.events_after(max(0, before_seq - LOOKBACK), limit=LOOKBACK, kinds=(SPAN_ENDED,))
    failed = [e for e in ended if e.seq < before_seq and e.name == name and e.run_id and e.span_id
              and _data(e.data).get("status") in FAILED_SPAN]
    hierarchies: dict[str, str | None] = {}
    for event in reversed(failed):
        run_id = str(event.run_id)
        if run_id not in hierarchies:
            run = reader.get_run(run_id)
            hierarchies[run_id] = run.hierarchy if run is not None else None
        if hierarchies[run_id] != hierarchy:
            continue
        span = next((s for s in reader.spans(run_id) if s.id == event.span_id), None)
        attrs = _data(span.attributes) if span is not None else {}
        if attrs.get("error"):
            kind = attrs.get("error_kind")
            return str(attrs["error"]), str(kind) if kind else None
    return None, None
