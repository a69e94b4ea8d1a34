"""What an engine that starts tells its `sampled_score` detections: the sampling windows the evals store holds.

The detector learns a window's totals from the `eval.scored` events the sampler emits (sampler.py). An engine that
just started has seen none: until it scores a run of its own it would know nothing of the windows earlier processes
(or, on Postgres, the other engines of the fleet) filled. So at start, when a runbook reads `sampled_score`, the
engine reads the `source = 'sample'` rows scored in the last `for` and hands their totals to the runbook engine as
events of the same shape (no run, no score of their own): one read of the evals store per engine start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .evals_store import open_evals_store_read_only

if TYPE_CHECKING:
    from engine.store.location import StoreLocation

    from .results_db import WindowTotals

__all__ = ["MAX_SEED_ROWS", "recent_window_events", "window_fields"]

log = logging.getLogger(__name__)
MAX_SEED_ROWS = 200  # newest sampled rows read at start: a window per hierarchy and file hash, far more than enough


def window_fields(started: float, totals: WindowTotals) -> dict[str, Any]:
    """The window totals an `eval.scored` event carries (the sampled_score detector reads these)."""
    mean = totals.mean
    return {"window_started": started, "window_cases": totals.cases, "window_scored": totals.scored,
            "window_mean": None if mean is None else round(mean, 6)}


def recent_window_events(store: StoreLocation | Path, since: float) -> list[tuple[Any, ...]]:
    """`eval.scored`-shaped events (seq 0, no run) for the sampled rows last written at or after `since`, oldest
    first. Nothing when nothing was recorded or the store cannot be read (logged: a seed is a nicety, the engine
    starts without it and learns the windows from its own next scored run)."""
    try:
        db = open_evals_store_read_only(store)
        if db is None:
            return []
        with db:
            rows = [r for r in db.list(limit=MAX_SEED_ROWS, source="sample") if r.ended >= since]
            events = [(0, "eval.scored", None, None, None, row.hierarchy,
                       {"hierarchy": row.hierarchy, "eval": row.id, "seed": True,
                        **window_fields(row.started, db.window_totals(row.id))}) for row in reversed(rows)]
    except Exception as exc:  # a StoreError, a damaged file: never the engine's start
        log.warning("sampling windows not read at start (the sampled_score signal learns them from the next "
                    "scored run): %s", exc)
        return []
    return events
