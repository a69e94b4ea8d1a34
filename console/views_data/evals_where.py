"""Where a sampled-score drop is: which agents and routes score lower in the newest window than before the drop.

Online sampling records every scored run's agents and routes (engine/scoring/run_path.py), so two windows compare
like two evals (engine/evals/compare.py, the comparison `flightdeck eval --baseline` prints): the newest window
against the best window before the drop, per agent and per route, and the groups whose mean fell by more than the
view's DROP are named, the worst first. With no window before the drop (the first sampled window is already under
the bar), the newest window's lowest-scoring groups are named instead. None when the newest window's runs have no
path recorded (sampled by a Flightdeck from before paths were recorded): nothing can be said, which is not "no
group fell".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.scoring.evals_store import EvalsStore
    from engine.scoring.results import EvalRecord
    from engine.scoring.results_db import EvalSummary

WHERE_MAX = 4  # groups named per hierarchy: the pane has one line for them
CACHED_WINDOWS = 32


class WindowCases:
    """Windows' cases as loaded, kept while their rows do not change: evals.db changes with every sampled run while
    traffic flows, and the window before a drop (often thousands of cases) is closed, so it is parsed once."""

    def __init__(self) -> None:
        self.loaded: dict[tuple[tuple[str, int], ...], EvalRecord] = {}

    def window(self, db: EvalsStore, rows: tuple[EvalSummary, ...]) -> EvalRecord:
        key = tuple((r.id, r.cases) for r in rows)
        record = self.loaded.get(key)
        if record is None:
            record = window_record(db, rows)
            if len(self.loaded) >= CACHED_WINDOWS:
                self.loaded.pop(next(iter(self.loaded)))
            self.loaded[key] = record
        return record


@dataclass(frozen=True, slots=True)
class GroupMove:
    """One agent's or route's mean score in the newest window, and in the baseline window (None: no baseline, or
    the group was not reached then)."""

    dimension: str  # agent | route
    key: str
    now: float
    cases: int  # the newest window's cases that reached it
    before: float | None


def window_record(db: EvalsStore, rows: tuple[EvalSummary, ...]) -> EvalRecord:
    """The cases of one window's rows (a window has one row per hierarchy file hash seen in it) as one record."""
    records = [db.load(summary) for summary in rows]
    first = records[0]
    for other in records[1:]:
        first.cases.extend(other.cases)
    return first


def where_it_dropped(current: EvalRecord, baseline: EvalRecord | None,
                     drop: float) -> tuple[GroupMove, ...] | None:
    from engine.evals.compare import compare

    if not any(c.agents or c.routes for c in current.cases):
        return None
    if baseline is None:
        groups = [("agent", s) for s in current.by_agent().values()] + \
                 [("route", s) for s in current.by_route().values()]
        lowest = sorted((g for g in groups if g[1].score < 1.0), key=lambda g: (g[1].score, g[0], g[1].key))
        return tuple(GroupMove(d, s.key, s.score, s.cases, None) for d, s in lowest[:WHERE_MAX])
    comparison = compare(current, baseline, drop)
    moved = [d for d in comparison.regressions if d.dimension in ("agent", "route")]
    moved.sort(key=lambda d: (d.score_delta or 0.0, d.dimension, d.key))
    return tuple(GroupMove(d.dimension, d.key, d.current.score, d.current.cases, d.baseline.score)
                 for d in moved[:WHERE_MAX] if d.current is not None and d.baseline is not None)
