"""ExportPipeline: committed trace events in, OTLP requests out. Runs in the exporter process (worker.py).

It follows the event feed in sequence order: a span.started marks a span open, a span.ended makes it due, a
run.ended makes the run's root due (with the run's final totals), and every other event of a run waits, in memory
(bounded per span), for the span it belongs to. Due spans are read from the trace store by id, mapped (mapping.py),
encoded and sent (sender.py) in requests of at most MAX_SPANS_PER_REQUEST spans. An open span older than
`pending_after` is announced once as a pending span. Counters say what was sent and what was dropped (and why,
last)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.export.mapping import MappingOptions, SpanMapper, sampled
from engine.export.records import SPAN_LIFECYCLE, EventRecord, SpanRecord, run_roots, runs_by_id, spans_by_id
from engine.export.settings import ExportSettings

if TYPE_CHECKING:
    from engine.export.sender import Sender
    from engine.store.redact import Redactor
    from engine.store.sql_reads import SqlReads

MAX_SPANS_PER_REQUEST = 512
MAX_EVENTS_PER_SPAN = 128
MAX_OPEN_SPANS = 100_000
MAX_ENGINE_EVENTS = 10_000
# Events of no run that are not worth a trace: the audit anchor (a hash, every control change) and the exporter's
# own drop reports.
QUIET_ENGINE_EVENTS = frozenset({"audit.head", "otel.dropped"})


@dataclass(frozen=True, slots=True)
class ExportStats:
    sent_spans: int = 0
    dropped_spans: int = 0
    pending_spans: int = 0
    requests: int = 0
    failed_requests: int = 0
    breaker: str = "closed"
    last_error: str | None = None
    cpu_s: float = 0.0  # the exporter process's CPU time so far


class ExportPipeline:
    def __init__(self, settings: ExportSettings, redactor: Redactor, sender: Sender, *, version: str = "",
                 engine_id: str = "") -> None:
        self.settings = settings
        self.sender = sender
        self.mapper = SpanMapper(MappingOptions(service_name=settings.service_name,
                                                resource_attributes=settings.resource_attributes,
                                                content=settings.content, version=version), redactor)
        self.sent = self.dropped = self.pending_sent = self.requests = self.failed = 0
        self.last_error: str | None = None
        self._sampled: dict[str, bool] = {}
        self._open: dict[str, float] = {}  # span id -> when it started (epoch seconds)
        self._announced: set[str] = set()
        # run id -> our span id ("" for run-level events) -> its events; a run's entry goes when its root is sent.
        self._events: dict[str, dict[str, list[EventRecord]]] = {}
        self._ended: list[str] = []
        self._engine_id = engine_id
        self._engine_events: list[EventRecord] = []
        self._ended_runs: list[str] = []

    def stats(self, cpu_s: float = 0.0) -> ExportStats:
        return ExportStats(self.sent, self.dropped, self.pending_sent, self.requests, self.failed,
                           self.sender.breaker.state, self.last_error, round(cpu_s, 3))

    def due_count(self) -> int:
        return len(self._ended)

    def drop(self, spans: int, why: str) -> None:
        self.dropped += spans
        self.last_error = why

    # -- the feed ---------------------------------------------------------------------------------------------------

    def _is_sampled(self, run_id: str) -> bool:
        known = self._sampled.get(run_id)
        if known is None:
            known = self._sampled[run_id] = sampled(run_id, self.settings.sampling)
        return known

    def feed(self, events: Iterable[EventRecord]) -> None:
        for event in events:
            run_id, span, kind = event.run_id, event.span_id, event.kind
            if run_id is None:
                if kind not in QUIET_ENGINE_EVENTS and len(self._engine_events) < MAX_ENGINE_EVENTS:
                    self._engine_events.append(event)
                continue
            if not self._is_sampled(run_id):
                continue
            if kind == "span.started":
                if span is not None and len(self._open) < MAX_OPEN_SPANS:
                    self._open[span] = event.ts
            elif kind == "span.ended":
                if span is not None:
                    self._open.pop(span, None)
                    self._announced.discard(span)
                    self._ended.append(span)
            elif kind == "run.ended":
                self._ended_runs.append(run_id)
            elif kind not in SPAN_LIFECYCLE:
                held = self._events.setdefault(run_id, {}).setdefault(span or "", [])
                if len(held) < MAX_EVENTS_PER_SPAN:
                    held.append(event)

    # -- exporting --------------------------------------------------------------------------------------------------

    def export_due(self, conn: SqlReads, give_up: Callable[[], bool] = lambda: False) -> None:
        """Send the spans that ended and the roots of runs that ended; `give_up()` ends retries."""
        ended, self._ended = self._ended, []
        spans = [s for s in spans_by_id(conn, ended) if s.kind != "run"] if ended else []
        runs_done, self._ended_runs = self._ended_runs, []
        roots = run_roots(conn, runs_done) if runs_done else []
        self._send(conn, spans + roots, [], give_up)
        for run_id in runs_done:  # a run's events that arrive after its root would wait for ever: forget them
            self._sampled.pop(run_id, None)
            self._events.pop(run_id, None)

    def announce(self, conn: SqlReads, give_up: Callable[[], bool] = lambda: False) -> None:
        """Export a pending span for each span running longer than `pending_after` and not yet announced."""
        limit = time.time() - self.settings.pending_after_s
        due = [span for span, seen in self._open.items() if seen <= limit and span not in self._announced]
        if not due:
            return
        self._announced.update(due)
        now = time.time()
        self._send(conn, [], [(s, now) for s in spans_by_id(conn, due) if s.ended is None], give_up)

    def _send(self, conn: SqlReads, spans: list[SpanRecord], pending: list[tuple[SpanRecord, float]],
              give_up: Callable[[], bool]) -> None:
        engine_events, self._engine_events = self._engine_events, []
        if not spans and not pending and not engine_events:
            return
        from engine.export.encoding import encode

        events: dict[str, list[EventRecord]] = {}
        for span in spans:
            per_run = self._events.get(span.run_id)
            if per_run is None:
                continue
            held = per_run.pop(span.id, [])
            if span.kind == "run":
                held += per_run.pop("", [])
            if held:
                events[span.id] = held
        runs = {run.id: run for run in runs_by_id(conn, {s.run_id for s in spans if s.kind == "run"})}
        for start in range(0, max(len(spans), len(pending), len(engine_events)), MAX_SPANS_PER_REQUEST):
            part = spans[start:start + MAX_SPANS_PER_REQUEST]
            part_pending = pending[start:start + MAX_SPANS_PER_REQUEST]
            part_engine = engine_events[start:start + MAX_SPANS_PER_REQUEST]
            body = encode(self.mapper.request(part, events, runs, pending=part_pending, engine_events=part_engine,
                                              engine_id=self._engine_id), self.settings.protocol)
            outcome = self.sender.send(body, stopping=give_up)
            self.requests += 1
            if outcome.sent:
                self.sent += len(part) + len(part_engine)
                self.pending_sent += len(part_pending)
            else:
                self.failed += 1
                self.drop(len(part) + len(part_engine), outcome.error or "not delivered")
