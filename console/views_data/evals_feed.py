"""The evals view's data (thread side): STORE/evals.db read-only, one row per hierarchy with its sampled-score trend,
its latest dataset eval and its latest drill run, and the answer to "is quality dropping, and since when?".

Re-read only when evals.db changed (its size and modification time: a rollback-journal file is rewritten in place
by every transaction; on a Postgres store, `PgEvalsDB.changes()` over one read-only session the feed holds until
the view closes it), and at most the newest ROWS rows: a window of online sampling is one row per hierarchy per
`evals.window` (an hour by default), so that is weeks of trend.

A window is one time bucket of a hierarchy: the rows of every file hash sampled in it (a deploy, or a run with
another scenario, in the middle of a window writes a second row for the same bucket) are merged, their mean
weighted by cases, so a few runs of the old file cannot hide many of the new one.

"Dropping" is a rule an operator can check by eye on the trend: the newest sampled window scores under BAR (the
shipped quality-dropping runbook's threshold) or at least DROP below the best window before it; "since" is the
start of the first window of the run of such windows that ends with the newest. For a dropping hierarchy the feed
also says where (evals_where.py): the agents and routes whose score fell, from the sampled runs' recorded paths.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from console.views_data.evals_where import GroupMove, WindowCases, where_it_dropped

if TYPE_CHECKING:
    from console.screens.base import ConsoleContext
    from engine.scoring.evals_store import EvalsStore
    from engine.scoring.results_db import EvalSummary

ROWS = 2000
TREND = 12  # windows in a row's sparkline
BAR = 0.7
DROP = 0.1


@dataclass(frozen=True, slots=True)
class Window:
    """One sampled window of a hierarchy: its `evals` rows with source `sample` (one per file hash sampled in it,
    the one that ended last first), merged."""

    started: float
    ended: float
    score: float  # the mean over every case of the window, whichever file it ran
    cases: int
    passed: int
    rows: tuple[EvalSummary, ...]

    @property
    def hierarchy_hash(self) -> str:
        """The hash of the file the window's newest scored run ran."""
        return self.rows[0].hierarchy_hash


def merged_windows(samples: list[EvalSummary]) -> tuple[Window, ...]:
    """`samples`: a hierarchy's sampled rows; oldest window first."""
    buckets: dict[float, list[EvalSummary]] = {}
    for row in samples:
        buckets.setdefault(row.started, []).append(row)
    out = []
    for started in sorted(buckets):
        rows = sorted(buckets[started], key=lambda r: -r.ended)
        cases = sum(r.cases for r in rows)
        score = sum(r.score * r.cases for r in rows) / cases if cases else 0.0
        out.append(Window(started, rows[0].ended, score, cases, sum(r.passed for r in rows), tuple(rows)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class HierarchyQuality:
    hierarchy: str
    windows: tuple[Window, ...]  # oldest first
    dropping_since: float | None  # the start of the window where the current drop began; None: not dropping
    peak: float | None  # the best window before the drop
    eval: EvalSummary | None  # the latest dataset eval
    drill: EvalSummary | None  # the latest drill run
    failed_drills: tuple[str, ...]  # of the latest drill run
    peak_window: Window | None = None  # the best window before the drop
    # Dropping: the agents and routes whose score fell (evals_where.py); None: not dropping, or no paths recorded.
    where: tuple[GroupMove, ...] | None = None

    @property
    def latest(self) -> Window | None:
        return self.windows[-1] if self.windows else None

    @property
    def newest(self) -> float:
        """When anything about this hierarchy last changed (the default sort: most recent first)."""
        times = [w.ended for w in self.windows[-1:]]
        times += [s.ended for s in (self.eval, self.drill) if s is not None]
        return max(times, default=0.0)


@dataclass(frozen=True, slots=True)
class EvalsSnapshot:
    rows: tuple[HierarchyQuality, ...]
    no_file: bool = False


def decline_start(scores: list[float]) -> tuple[int, float | None] | None:
    """Where the current drop began (an index into `scores`, oldest first) and the best score before it; None when
    the newest score is not low. A score is low when it is under BAR or at least DROP under the best one before it."""

    def low(index: int) -> bool:
        before = scores[:index]
        return scores[index] < BAR or (bool(before) and scores[index] <= max(before) - DROP)

    if not scores or not low(len(scores) - 1):
        return None
    start = len(scores) - 1
    while start > 0 and low(start - 1):
        start -= 1
    return start, (max(scores[:start]) if start else None)


def quality_rows(summaries: list[EvalSummary], failed: dict[str, tuple[str, ...]]) -> tuple[HierarchyQuality, ...]:
    """`summaries` newest first (EvalsDB.list); `failed`: failed drill names per drill row id."""
    by_hierarchy: dict[str, list[EvalSummary]] = {}
    for summary in summaries:
        by_hierarchy.setdefault(summary.hierarchy, []).append(summary)
    out = []
    for hierarchy, rows in by_hierarchy.items():
        windows = merged_windows([r for r in rows if r.source == "sample"])
        scores = [w.score for w in windows]
        decline = decline_start(scores)
        peak_window = None
        if decline is not None and decline[0] > 0:
            peak_window = max(windows[:decline[0]], key=lambda w: (w.score, w.started))
        latest_eval = next((r for r in rows if r.source == "dataset"), None)
        drill = next((r for r in rows if r.source == "drill"), None)
        out.append(HierarchyQuality(
            hierarchy, windows, windows[decline[0]].started if decline else None, decline[1] if decline else None,
            latest_eval, drill, failed.get(drill.id, ()) if drill else (), peak_window))
    return tuple(out)


def with_where(db: EvalsStore, cases: WindowCases, row: HierarchyQuality) -> HierarchyQuality:
    """A dropping hierarchy with the agents and routes its drop is in (the newest window's cases against the peak
    window's); others unchanged."""
    from dataclasses import replace

    if row.dropping_since is None or row.latest is None:
        return row
    baseline = cases.window(db, row.peak_window.rows) if row.peak_window is not None else None
    return replace(row, where=where_it_dropped(cases.window(db, row.latest.rows), baseline, DROP))


def read_snapshot(db: EvalsStore, cases: WindowCases) -> EvalsSnapshot:
    summaries = db.list(limit=ROWS)
    failed: dict[str, tuple[str, ...]] = {}
    latest_drills: dict[str, str] = {}
    for summary in summaries:  # newest first: the first drill row of a hierarchy is its latest
        if summary.source == "drill" and summary.hierarchy not in latest_drills:
            latest_drills[summary.hierarchy] = summary.id
    for drill_id in latest_drills.values():
        failed[drill_id] = tuple(c.case_id for c in db.cases(drill_id) if not c.passed)
    return EvalsSnapshot(tuple(with_where(db, cases, row) for row in quality_rows(summaries, failed)))


class EvalsFeed:
    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.seen: Any = object()
        self.cases = WindowCases()
        self._db: Any = None  # on a Postgres store: its evals, a read-only session held across polls
        self._lock = threading.Lock()  # a poll and the view's close() never use the session at once

    def poll(self) -> EvalsSnapshot | None:
        from engine.scoring.results_db import EVALS_DB, EvalsDB

        if self.ctx.postgres:
            with self._lock:
                return self._poll_postgres()

        path = self.ctx.store_dir / EVALS_DB
        try:
            stat = os.stat(path)
            key: Any = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        if key == self.seen:
            return None
        self.seen = key
        db = EvalsDB.open_read_only(self.ctx.store_dir) if key is not None else None
        if db is None:
            return EvalsSnapshot((), no_file=True)
        with db:
            return read_snapshot(db, self.cases)

    def _poll_postgres(self) -> EvalsSnapshot | None:
        from engine.scoring.results_pg import PgEvalsDB
        from engine.store.location import PostgresLocation

        location = self.ctx.location
        assert isinstance(location, PostgresLocation)
        if self._db is None:  # None again until something records an eval there (the schema is not created)
            self._db = PgEvalsDB.open_read_only(location)
        key = self._db.changes() if self._db is not None else None
        if key == self.seen:
            return None
        self.seen = key
        return read_snapshot(self._db, self.cases) if self._db is not None else EvalsSnapshot((), no_file=True)

    def close(self) -> None:
        """The Postgres session, when the view stops polling (reopened by the next poll)."""
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    def invalidate(self) -> None:
        self.seen = object()


def models_words(summary: EvalSummary) -> str:
    """`gpt-4o (2024-08-06)`-style words for the models an eval recorded."""
    try:
        models = json.loads(summary.models)
    except ValueError:
        return ""
    words = []
    for entry in models.values():
        if isinstance(entry, dict):
            versions = entry.get("versions")
            words.append(str(entry.get("model")) + (f" ({', '.join(map(str, versions))})" if versions else ""))
    return ", ".join(dict.fromkeys(words))
