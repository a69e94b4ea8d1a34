"""The run view's span changes on their way into the tree (console/screens/run.py), without the widget.

Textual's Tree re-lays out all its visible lines per change, and the event tail (which is cheap) must not wait for
it: while a run streams, waiting changes go into the tree at most every TREE_INTERVAL_S; a big run's first load goes
in TREE_CHUNK spans per frame (oldest first, so parents come before their children) instead of freezing the screen
while thousands of nodes go in. The first load and quiet moments apply at once. Pure bookkeeping: the view owns the
timer and the tree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["TREE_CHUNK", "TREE_INTERVAL_S", "SpanBatch"]

TREE_INTERVAL_S = 0.5  # while a run streams, the tree takes new spans at most this often (the tail: every poll)
TREE_CHUNK = 1500  # at most this many spans go into the tree per frame
NEXT_CHUNK_S = 0.01  # a first load in chunks: the next one a frame later


class SpanBatch:
    """Span changes (span dicts by id) waiting for the next tree update."""

    def __init__(self) -> None:
        self.waiting: dict[str, dict[str, Any]] = {}
        self.applied = 0.0  # monotonic time of the last update that left nothing waiting (0: none yet)

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def clear(self) -> None:
        self.waiting = {}
        self.applied = 0.0

    def add(self, spans: Iterable[dict[str, Any]]) -> None:
        """Newer news about a span merges into what is waiting (a `_partial` change adds to it, else replaces it)."""
        for span in spans:
            before = self.waiting.get(span["id"])
            self.waiting[span["id"]] = {**before, **span} if before and span.get("_partial") else span

    def take(self, now: float, first: bool) -> tuple[list[dict[str, Any]], float | None]:
        """(the spans to put in the tree now, seconds until the view should call again or None). `first`: the tree
        is empty (a run just opened), so nothing waits for the interval."""
        if not self.waiting:
            return [], None
        if not first and now - self.applied < TREE_INTERVAL_S:
            return [], TREE_INTERVAL_S - (now - self.applied)
        spans = list(self.waiting.values())
        again: float | None = None
        if len(spans) > TREE_CHUNK:
            spans.sort(key=lambda s: (s.get("started") or 0.0, str(s.get("id"))))
            spans = spans[:TREE_CHUNK]
            for span in spans:
                del self.waiting[span["id"]]
            again = NEXT_CHUNK_S
        else:
            self.waiting = {}
        self.applied = now if not self.waiting else 0.0
        return spans, again
