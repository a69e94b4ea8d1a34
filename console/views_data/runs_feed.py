"""The runs view's data: RunsFeed reads what can have changed since the last poll (the newest page, the runs still
running, runs that stopped running since) and hands the rows whose figures changed to the UI thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from console.polling import ReaderState, StoreSource
from console.widgets.status import run_look
from engine.store.trace_rows import DegradedCall, RunRow

PAGE = 500  # rows per read when loading or paging older runs
NEW_PAGE = 100  # rows per read when looking for new runs (most polls find a few)
CATCH_UP_PAGES = 20  # after a burst, read at most this many pages of new runs in one poll
MAX_LOADED = 20_000  # rows held in memory; older ones stay in SQLite (`flightdeck runs --limit`)


def search_text(run: RunRow, degraded: bool = False) -> str:
    status = run.status or ""
    return " ".join((str(run.id or ""), str(run.hierarchy or ""), status, run_look(status, degraded).word,
                     str(run.tenant or ""), "resumed" if run.resumed else "")).lower()


def _signature(run: RunRow) -> tuple[Any, ...]:
    return (run.last_seq, run.status, run.ended, run.tokens_in, run.tokens_out, run.cost_usd, run.model_calls,
            run.tool_calls, run.agents_active, run.resumed, run.replayed_steps)


@dataclass(frozen=True, slots=True)
class RunItem:
    """A line of the runs table: the run (without its payloads), its lower-cased search text, and for a completed
    run the tool calls it went without (withheld or denied: `completed (degraded)`)."""

    run: RunRow
    search: str
    degraded: tuple[DegradedCall, ...] = ()

    @classmethod
    def of(cls, run: RunRow, degraded: tuple[DegradedCall, ...] = ()) -> RunItem:
        if run.input is not None or run.output is not None:
            run = run.replace(input=None, output=None)  # payloads: only the run view shows them
        degraded = degraded if run.status == "completed" else ()
        return cls(run, search_text(run, bool(degraded)), degraded)


@dataclass(slots=True)
class RunsUpdate:
    rows: list[RunItem]
    first: bool = False
    exhausted: bool = False


@dataclass(slots=True)
class RunsFeed:
    """Thread side of the runs view. Methods run on worker threads, one at a time (the lock)."""

    source: StoreSource
    state: ReaderState = field(init=False)
    known: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    oldest: tuple[float, str] | None = None  # (started, id) of the oldest loaded run, for paging
    exhausted: bool = False
    loaded_first: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.state = ReaderState(self.source)

    def _take(self, run: RunRow, out: list[RunItem]) -> None:
        sig = _signature(run)
        if self.known.get(run.id) == sig:
            return
        self.known[run.id] = sig
        out.append(RunItem.of(run))

    def _with_degraded(self, out: list[RunItem]) -> list[RunItem]:
        """The completed runs among `out` with what they went without (one indexed read for the lot). A run's denied
        spans are all written by the time it is completed, and its status change brings it here again."""
        completed = [item.run.id for item in out if item.run.status == "completed"]
        if not completed:
            return out
        calls: dict[str, list[DegradedCall]] = {}
        for call in self.state.reader.degraded_calls(completed):
            calls.setdefault(call.run_id, []).append(call)
        return [RunItem.of(item.run, tuple(calls[item.run.id])) if item.run.id in calls else item for item in out]

    def poll(self) -> RunsUpdate | None:
        with self.lock:
            try:
                return self._poll()
            except Exception:
                self.state.reset()
                raise

    def _poll(self) -> RunsUpdate | None:
        if not self.state.changed():
            return None
        reader = self.state.reader
        out: list[RunItem] = []
        size = NEW_PAGE if self.loaded_first else PAGE
        newest = reader.list_runs(limit=size)
        seen_ids = {r.id for r in newest}
        if self.loaded_first and newest and newest[-1].id not in self.known:
            # A burst: more than a page of new runs since the last poll. Read on until a known run (bounded).
            page = newest
            for _ in range(CATCH_UP_PAGES):
                if len(page) < size or page[-1].id in self.known:
                    break
                page = reader.list_runs(limit=PAGE, before_started=page[-1].started, before_id=page[-1].id)
                size = PAGE
                newest.extend(page)
                seen_ids.update(r.id for r in page)
        running = reader.list_runs(status="running", limit=5000)
        running_ids = {r.id for r in running}
        ended = [run_id for run_id in self.running if run_id not in running_ids and run_id not in seen_ids]
        for run in newest:
            self._take(run, out)
        for run in running:
            self._take(run, out)
        for run_id in ended:
            run = reader.get_run(run_id)
            if run is not None:
                self._take(run, out)
        self.running = running_ids
        first = not self.loaded_first
        if first:
            self.loaded_first = True
            self.exhausted = len(newest) < size
            if newest:
                self.oldest = (newest[-1].started, newest[-1].id)
        return RunsUpdate(self._with_degraded(out), first=first, exhausted=self.exhausted)

    def older(self) -> RunsUpdate:
        """The next page of older runs (a worker thread, on demand)."""
        with self.lock:
            if self.exhausted or self.oldest is None:
                return RunsUpdate([], exhausted=True)
            try:
                page = self.state.reader.list_runs(limit=PAGE, before_started=self.oldest[0],
                                                   before_id=self.oldest[1])
            except Exception:
                self.state.reset()
                raise
            out: list[RunItem] = []
            for run in page:
                self._take(run, out)
            if page:
                self.oldest = (page[-1].started, page[-1].id)
            if len(page) < PAGE or len(self.known) >= MAX_LOADED:
                self.exhausted = True
            return RunsUpdate(self._with_degraded(out), exhausted=self.exhausted)

    def close(self) -> None:
        self.state.close()
