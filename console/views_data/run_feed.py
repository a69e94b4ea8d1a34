"""The run view's data: RunFeed reads one run (its row, budgets, spans and event tail) on the Poller's thread and
sends the UI thread only new or changed spans and new events. See console/screens/run.py for the view."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from console.polling import ReaderState, StoreSource
from console.widgets.safe import printable
from console.widgets.span_detail import EventTail
from engine.store.trace_rows import BudgetRow, DegradedCall, EventRow, RunRow, SpanRow

EVENT_PAGE = 5000
EVENT_PAGES_PER_POLL = 4  # a long backlog is read over several polls (each poll then asks for the next at once)
SPAN_EVENT_KINDS = frozenset({"span.started", "span.ended"})
RESYNC_S = 1.0  # without an incremental span read, re-read a busy run's spans at most this often


_SPAN_FIELDS = tuple(f.name for f in fields(SpanRow))
_span_values = attrgetter(*_SPAN_FIELDS)


def span_dict(span: SpanRow) -> dict[str, Any]:
    """A span row as the run view's span tree holds it: a dict, because the tree merges partial spans (below)
    into it field by field. The one place the run view turns typed rows into dicts (docs/architecture.md). Same
    as `span.as_dict()`, three times faster (a big run's first load converts every span)."""
    return dict(zip(_SPAN_FIELDS, _span_values(span)))


@dataclass(slots=True)
class RunUpdate:
    feed: RunFeed
    run: RunRow | None = None
    # Full span rows (first load, resync) or partial ones derived from span events (fields that changed; marked
    # "_partial": their attributes are fetched when the operator looks at them). Dicts: see span_dict.
    spans: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    skipped: int = 0  # events before the tail that were not read (-1: some, count unknown)
    more: bool = False
    problem: str | None = None  # the run cannot be shown (unknown id, ambiguous prefix)
    budgets: list[BudgetRow] | None = None  # the run's budget gauges (reader.budgets), read on every change
    degraded: list[DegradedCall] = field(default_factory=list)  # a completed run's withheld or denied tool calls


def partial_span(event: EventRow, parent_hint: str | None = None) -> dict[str, Any] | None:
    """What a span.started / span.ended event says about its span (the writer puts kind, name, parent, status,
    tokens, cost and model in the event data; attributes are only in the spans table). `parent_hint`: the parent
    of a span whose only event is its span.ended, when the caller knows it."""
    data = event.data if isinstance(event.data, dict) else {}
    span_id = event.span_id
    if not span_id:
        return None
    parent = data.get("parent_id") or parent_hint
    if event.kind == "span.ended" and parent is not None and data.get("kind"):
        # A span that started and ended within one writer batch has only this event: a whole span if the writer
        # says where it hangs (parent_id), else the feed reads the row.
        duration = data.get("duration_s")
        started = event.ts - duration if isinstance(duration, (int, float)) else event.ts
        return {"id": span_id, "run_id": event.run_id, "parent_id": parent,
                "kind": data.get("kind"), "agent": event.agent, "name": data.get("name") or event.name,
                "status": data.get("status"), "started": started, "ended": event.ts,
                "tokens_in": data.get("tokens_in") or 0, "tokens_out": data.get("tokens_out") or 0,
                "cost_usd": data.get("cost_usd") or 0.0, "model": data.get("model"), "last_seq": event.seq,
                "_partial": True}
    if event.kind == "span.started":
        return {"id": span_id, "run_id": event.run_id, "parent_id": data.get("parent_id"),
                "kind": data.get("kind"), "agent": event.agent, "name": data.get("name") or event.name,
                "status": "running", "started": event.ts, "ended": None, "tokens_in": 0, "tokens_out": 0,
                "cost_usd": 0.0, "model": None, "last_seq": event.seq, "_partial": True}
    return {"id": span_id, "status": data.get("status"), "ended": event.ts,
            "tokens_in": data.get("tokens_in") or 0, "tokens_out": data.get("tokens_out") or 0,
            "cost_usd": data.get("cost_usd") or 0.0, "model": data.get("model"), "last_seq": event.seq,
            "_partial": True}


@dataclass(slots=True)
class RunFeed:
    """Thread side of the run view, for one run id (a new feed per run).

    The first poll reads the run's spans (the tree) and the tail of its events. After that, each poll reads only
    the events after the last seq it saw, and derives span changes from the span.started / span.ended events among
    them: O(new events) per poll, however big the run. A span's attributes (inputs, outputs, errors) are read when
    the operator selects it (`span_detail`)."""

    source: StoreSource
    run_ref: str  # what the operator typed (id or prefix)
    state: ReaderState = field(init=False)
    run_id: str | None = None
    last_seq: int = 0
    span_seq: dict[str, int] = field(default_factory=dict)  # span id -> seq of the newest info sent for it
    loaded: bool = False
    more: bool = False
    unplaced: bool = False  # span events arrived for spans whose rows must be read (see _read_new_spans)
    last_resync: float = 0.0
    kinds: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # span id -> (kind, agent)
    open_agents: dict[str, list[str]] = field(default_factory=dict)  # agent name -> its running agent spans
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.state = ReaderState(self.source)

    def poll(self) -> RunUpdate | None:
        with self.lock:
            try:
                return self._poll()
            except Exception:
                self.state.reset()
                raise

    def _poll(self) -> RunUpdate | None:
        from engine.errors import InputError

        if not self.state.changed() and not self.more:
            return None
        reader = self.state.reader
        try:
            run = reader.get_run(self.run_id or self.run_ref)
        except InputError as exc:
            return RunUpdate(self, problem=str(exc))
        if run is None:
            self.state.invalidate()  # keep looking: the run may not be committed yet
            return RunUpdate(self, problem=f"no run {printable(self.run_ref, limit=40)!s} in this store (yet): "
                                           f"check the id, or press 1 and pick one")
        self.run_id = run_id = run.id
        update = RunUpdate(self, run=run)
        update.budgets = reader.budgets(run_id)
        if run.status == "completed":
            update.degraded = reader.degraded_calls([run_id])
        if not self.loaded:
            # Spans first, then events: an event older than what a span row already says is skipped by seq below.
            spans = [span_dict(span) for span in reader.spans(run_id)]
            for span in spans:
                self.span_seq[span["id"]] = span["last_seq"] or 0
                self._note(span)
            update.spans = spans
            self.last_seq, skipped = self._tail_start(reader, run)
            update.skipped = skipped
            self.loaded = True
        events: list[EventRow] = []
        self.more = False
        for page_no in range(EVENT_PAGES_PER_POLL):
            page = reader.events_after(self.last_seq, limit=EVENT_PAGE, run_id=run_id)
            if page:
                self.last_seq = page[-1].seq
                events.extend(page)
                if len(events) > EventTail.MAX_LINES:
                    if update.skipped >= 0:
                        update.skipped += len(events) - EventTail.MAX_LINES
                    del events[: len(events) - EventTail.MAX_LINES]
            if len(page) < EVENT_PAGE:
                break
            if page_no == EVENT_PAGES_PER_POLL - 1:
                self.more = True
        update.events = events
        update.more = self.more
        if events:
            merged: dict[str, dict[str, Any]] = {}
            for event in events:
                if event.kind not in SPAN_EVENT_KINDS:
                    continue
                change = partial_span(event, self._parent_hint(event))
                if change is None or event.seq <= self.span_seq.get(change["id"], 0):
                    continue
                if change.get("kind") is None and change["id"] not in self.span_seq:
                    self.unplaced = True  # its start was never announced (coalesced by the writer): read the row
                    continue
                self.span_seq[change["id"]] = event.seq
                self._note(change)
                previous = merged.get(change["id"])
                merged[change["id"]] = {**previous, **change} if previous else change
            if merged:
                update.spans = list(update.spans) + list(merged.values())
        if self.unplaced:
            update.spans = list(update.spans) + self._read_new_spans(reader, run_id)
            if self.unplaced:
                self.more = update.more = True  # throttled: try again on the next poll
        return update

    def _note(self, span: dict[str, Any]) -> None:
        """Keep track of which agent spans are running (for _parent_hint)."""
        span_id = span["id"]
        kind, agent = self.kinds.get(span_id, (None, None))
        if span.get("kind"):
            kind, agent = span.get("kind"), span.get("agent")
            self.kinds[span_id] = (kind, agent)
        if kind != "agent" or agent is None:
            return
        running = self.open_agents.setdefault(agent, [])
        if span.get("status") == "running":
            if span_id not in running:
                running.append(span_id)
        elif span_id in running:
            running.remove(span_id)

    def _parent_hint(self, event: EventRow) -> str | None:
        """The parent of a span that started and ended within one writer batch (so only its span.ended exists,
        without parent_id). The runtime opens model calls, tool calls and delegations as children of their
        agent's span (runtime/model_call.py, tool_call.py); when exactly one span of that agent is running in
        this run, that is the parent. Anything less certain is left to _read_new_spans."""
        if event.kind != "span.ended" or event.span_id in self.kinds:
            return None
        data = event.data if isinstance(event.data, dict) else {}
        if data.get("parent_id") or data.get("kind") not in ("llm", "tool", "delegation"):
            return None
        candidates = self.open_agents.get(event.agent or "", [])
        return candidates[0] if len(candidates) == 1 else None

    def _read_new_spans(self, reader: Any, run_id: str) -> list[dict[str, Any]]:
        """Span rows changed since the feed last saw them: reads the run's spans and keeps the changed ones, at
        most once per RESYNC_S (the event tail stays live meanwhile)."""
        now = time.monotonic()
        if now - self.last_resync < RESYNC_S:
            return []
        self.last_resync = now
        rows = reader.spans(run_id)
        self.unplaced = False
        out = []
        for row in rows:
            seq = row.last_seq or 0
            if seq > self.span_seq.get(row.id, 0):
                self.span_seq[row.id] = seq
                span = span_dict(row)
                self._note(span)
                out.append(span)
        return out

    @staticmethod
    def _tail_start(reader: Any, run: RunRow) -> tuple[int, int]:
        """Where to start reading a run's events so that about EventTail.MAX_LINES of its newest come back: a
        window of global seqs ending at the run's last event, widened until it holds enough (each try is one
        indexed read). Returns (seq to read after, -1 if older events are left out else 0)."""
        last = int(run.last_seq or 0)
        want = EventTail.MAX_LINES
        window = want
        while True:
            start = max(0, last - window)
            if start == 0:
                return 0, 0
            page = reader.events_after(start, limit=want, run_id=run.id)
            if len(page) >= want:
                return start, -1
            window *= 4

    def span_detail(self, span_id: str) -> dict[str, Any] | None:
        """The full row of one span (with attributes), for the detail pane (a worker thread)."""
        with self.lock:
            assert self.run_id is not None
            row = next((s for s in self.state.reader.spans(self.run_id) if s.id == span_id), None)
            return None if row is None else span_dict(row)

    def close(self) -> None:
        self.state.close()
