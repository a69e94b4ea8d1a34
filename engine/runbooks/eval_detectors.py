"""The online-sampling signal (`sampled_score`): the mean score of a sampling window, as the evals store holds it.

The engine's Sampler (engine/scoring/sampler.py) scores a share of a hierarchy's completed runs and adds each one to
its window's `evals` row in the evals store (STORE/evals.db, or the database on Postgres, where the whole fleet adds
to the same row). After each write it reads the row's totals back and emits them in `eval.scored`
(`window_started`, `window_cases`, `window_scored`, `window_mean`). This detector keeps, per key, the newest totals
of each window row it heard of. So the value is the window's mean over every scored run the store holds (those of
earlier engine processes, of short `flightdeck run` processes, of the other engines of a fleet), not the scores this
process happened to see; a restarted engine picks the window up again with its first scored run.

What counts: a case whose checks all gave a score (`window_scored`). A case with a check that could not score (a
judge that is down, a check's bug) is left out: counting it as 0 would page for a quality drop that is an outage of
the scorer. The value is the mean of the NEWEST window (the rows of one start time: a hierarchy's window has a row
per file hash) with at least `min_samples` scored runs, among the windows reported in the last `for`: a window just
started with three runs leaves the previous window's mean in force until it has enough of its own.

An `eval.scored` without totals (the write to the store failed: `eval.sample_failed` says so) adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.runbooks.detector_base import Detector, Dims, Event, Facts, KeyContext, Reading
from engine.runbooks.model import Condition


@dataclass(slots=True)
class WindowSeen:
    """One window row's totals as last reported, and when (the watchdog's clock) they were."""

    started: float
    cases: int
    scored: int
    total: float
    seen: float


def window_of(data: Mapping[str, object]) -> tuple[str, float, int, int, float] | None:
    """(eval id, started, cases, scored, sum of scores) from an `eval.scored` event's data; None without totals."""
    eval_id, started = data.get("eval"), _number(data.get("window_started"))
    cases, scored, mean = _count(data.get("window_cases")), _count(data.get("window_scored")), \
        _number(data.get("window_mean"))
    if not isinstance(eval_id, str) or started is None or cases is None or scored is None:
        return None
    if scored and mean is None:
        return None
    return eval_id, started, cases, scored, mean * scored if scored and mean is not None else 0.0


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class SampledScoreDetector(Detector):
    kinds = frozenset({"eval.scored"})

    def __init__(self, condition: Condition) -> None:
        super().__init__(condition)
        self.window = condition.window
        self.rows: dict[str, dict[str, WindowSeen]] = {}  # key -> eval id -> its newest totals

    def feed(self, t: float, event: Event, facts: Facts, durations: Mapping[str, float]) -> None:
        _, kind, run_id, _, _, name, data = event
        if kind != "eval.scored" or not data:
            return
        seen = window_of(data)
        if seen is None:
            return
        eval_id, started, cases, scored, total = seen
        hierarchy = data.get("hierarchy") or name or facts.hierarchy_of(run_id)
        dims = Dims(hierarchy=hierarchy if isinstance(hierarchy, str) else None, run=run_id)
        key = dims.key(self.scope)
        if key is None or (self.condition.target is not None and key != self.condition.target):
            return
        context = self.contexts.get(key)
        if context is None:
            context = self.contexts[key] = KeyContext()
        context.note(dims)
        rows = self.rows.setdefault(key, {})
        known = rows.get(eval_id)
        # Totals only grow; two worker threads of one engine may emit theirs out of order: keep the larger.
        if known is None or cases >= known.cases:
            rows[eval_id] = WindowSeen(started, cases, scored, total, t)
        else:
            known.seen = t

    def samples_of(self, event: Event, facts: Facts,
                   durations: Mapping[str, float]) -> list[tuple[Dims, tuple[float, ...]]]:
        return []  # feed() reads the totals itself

    def keys(self) -> set[str]:
        return set(self.rows)

    def expire(self, now: float, facts: Facts) -> None:
        horizon = now - self.window
        for key in list(self.rows):
            rows = self.rows[key]
            for eval_id in [e for e, row in rows.items() if row.seen <= horizon]:
                del rows[eval_id]
            if not rows:
                del self.rows[key]
                self.contexts.pop(key, None)

    def read(self, key: str, now: float, facts: Facts) -> Reading:
        by_start: dict[float, list[float]] = {}  # window start -> [scored, sum of scores] over its rows
        for row in self.rows.get(key, {}).values():
            sums = by_start.setdefault(row.started, [0.0, 0.0])
            sums[0] += row.scored
            sums[1] += row.total
        newest = None
        for started in sorted(by_start, reverse=True):
            scored, total = by_start[started]
            newest = scored if newest is None else newest
            if scored >= self.params["min_samples"]:
                value = total / scored
                return Reading(value, self.holds(value), int(scored))
        return Reading(None, False, int(newest or 0))
