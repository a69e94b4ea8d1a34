"""LiveExporter: the engine's committed trace batches, exported as OTLP spans while runs are going on.

    writer's acknowledgement thread ── on_commit(events) ──► bounded queue ──► exporter thread
                                       (full: the batch is dropped and counted)   │ read the ended spans, their
                                                                                  │ events and runs (traces.db,
                                                                                  │ read-only), map, encode, POST
                                                                                  ▼ (sender.py: retries, breaker)
                                                                               collector

The callback only counts and enqueues: the engine never waits for the exporter, and a collector that is down costs
the engine nothing but the queue's memory (bounded by `max_queue` batches). Spans are exported when they end (a run's
root when the run ends, with its final totals); a span still running after `pending_after` is announced as a pending
span (engine/export/mapping.py) so long agent runs are visible before they end. Every span that could not be
delivered is counted in `dropped_spans` and reported as an `otel.dropped` trace event (at most every few seconds,
and when the exporter stops) and in `summary()`, which `flightdeck run` prints on stderr.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.export.records import (
    SPAN_LIFECYCLE,
    EventRecord,
    SpanRecord,
    events_by_seq,
    run_roots,
    runs_by_id,
    spans_by_id,
)
from engine.export.settings import ExportSettings

if TYPE_CHECKING:
    from engine.export.mapping import SpanMapper
    from engine.export.sender import Sender
    from engine.store.redact import Redactor

log = logging.getLogger(__name__)
TracerEvent = Callable[..., None]  # Tracer.event(run_id, span_id, kind, *, agent=None, name=None, data=None)
MAX_SPANS_PER_REQUEST = 512
MAX_EVENTS_PER_SPAN = 128
DROP_REPORT_INTERVAL_S = 5.0
_STOP = object()


@dataclass(frozen=True, slots=True)
class ExportStats:
    sent_spans: int
    dropped_spans: int
    pending_spans: int
    requests: int
    failed_requests: int
    breaker: str
    last_error: str | None


class LiveExporter:
    def __init__(self, store_dir: Path, settings: ExportSettings, redactor: Redactor, *,
                 tracer_event: TracerEvent | None = None, version: str = "", tick: float = 0.25,
                 sender: Sender | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.settings = settings
        self.tick = tick
        self._redactor = redactor
        self._version = version
        self._tracer_event = tracer_event
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=settings.max_queue)
        self._stop = threading.Event()
        self._sender = sender
        self._mapper: SpanMapper | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._seen = threading.Condition()
        self._seen_seq = 0
        self._sent = self._dropped = self._pending_sent = self._requests = self._failed = 0
        self._reported_drops = 0
        self._last_report = 0.0
        self._last_error: str | None = None
        self._sampled: dict[str, bool] = {}
        self._open: dict[str, float] = {}  # span id -> when the exporter first saw it running (monotonic)
        self._announced: set[str] = set()
        self._event_seqs: dict[str, list[int]] = {}  # our span id, or "run:<id>" for run-level events
        self._ended_runs: list[str] = []

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> LiveExporter:
        from engine.export.mapping import MappingOptions, SpanMapper
        from engine.export.sender import Sender

        options = MappingOptions(service_name=self.settings.service_name,
                                 resource_attributes=self.settings.resource_attributes,
                                 content=self.settings.content, version=self._version)
        self._mapper = SpanMapper(options, self._redactor)
        if self._sender is None:
            self._sender = Sender(self.settings, wait=self._stop.wait)
        self._thread = threading.Thread(target=self._run, name="flightdeck-otel", daemon=True)
        self._thread.start()
        return self

    def stop(self, committed_seq: int | None = None, timeout: float = 5.0) -> ExportStats:
        """Export what was committed up to `committed_seq` (waits for the writer's callback to deliver it, bounded
        by `timeout`), then stop. Idempotent."""
        if self._thread is None:
            return self.stats()
        if committed_seq is not None:
            with self._seen:
                self._seen.wait_for(lambda: self._seen_seq >= committed_seq, timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
                break
            except queue.Full:
                self._stop.set()  # a collector that is down must not hold the engine's exit for long
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.1, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(1.0)
        self._thread = None
        if self._sender is not None:
            self._sender.close()
        self._report_drops(force=True)
        return self.stats()

    # -- the writer's side: count and hand over ------------------------------------------------------------------

    def on_commit(self, events: list[Any]) -> None:
        """TraceWriter.on_commit callback (its acknowledgement thread): enqueue, or count the batch as dropped."""
        last = events[-1][0] if events else 0
        try:
            self._queue.put_nowait(events)
        except queue.Full:
            lost = sum(1 for event in events if event[1] == "span.ended")
            with self._lock:
                self._dropped += lost
                self._last_error = f"export queue full ({self.settings.max_queue} batches)"
        with self._seen:
            if last > self._seen_seq:
                self._seen_seq = last
                self._seen.notify_all()

    def stats(self) -> ExportStats:
        with self._lock:
            return ExportStats(self._sent, self._dropped, self._pending_sent, self._requests, self._failed,
                               self._sender.breaker.state if self._sender is not None else "closed",
                               self._last_error)

    def summary(self) -> str:
        s = self.stats()
        line = (f"otel export to {self.settings.describe()}: {s.sent_spans} span(s) sent, "
                f"{s.dropped_spans} dropped")
        if s.dropped_spans:
            line += f" (last error: {s.last_error}; exporter breaker {s.breaker})"
        return line

    # -- the exporter thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        from engine.store.files import TRACES_DB, connect

        try:
            self._conn = connect(self.store_dir / TRACES_DB, read_only=True)
        except Exception as exc:
            log.exception("otel exporter could not open the trace store")
            with self._lock:
                self._last_error = f"cannot read traces.db: {exc}"
        try:
            while True:
                stop = self._loop_once()
                if stop:
                    return
        finally:
            if self._conn is not None:
                self._conn.close()

    def _loop_once(self) -> bool:
        try:
            batches = [self._queue.get(timeout=self.tick)]
        except queue.Empty:
            batches = []
        while len(batches) < 64:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        stop = any(batch is _STOP for batch in batches)
        ended: list[str] = []
        for batch in batches:
            if batch is not _STOP:
                self._take(batch, ended)
        try:
            if self._conn is not None:
                self._export_ended(ended)
                if not stop:
                    self._export_pending()
        except Exception as exc:  # a bug or a locked database must not end live export
            log.exception("otel exporter failed")
            with self._lock:
                self._last_error = f"{type(exc).__name__}: {exc}"
        self._report_drops(force=False)
        return stop

    def _is_sampled(self, run_id: str) -> bool:
        known = self._sampled.get(run_id)
        if known is None:
            from engine.export.mapping import sampled

            known = self._sampled[run_id] = sampled(run_id, self.settings.sampling)
        return known

    def _take(self, events: list[Any], ended: list[str]) -> None:
        now = time.monotonic()
        for seq, kind, run_id, span, _agent, _name, _data in events:
            if run_id is None or not self._is_sampled(run_id):
                continue
            if kind == "span.started":
                self._open[span] = now
            elif kind == "span.ended":
                self._open.pop(span, None)
                self._announced.discard(span)
                ended.append(span)
            elif kind == "run.ended":
                self._ended_runs.append(run_id)
            elif kind not in SPAN_LIFECYCLE:
                seqs = self._event_seqs.setdefault(span if span is not None else f"run:{run_id}", [])
                if len(seqs) < MAX_EVENTS_PER_SPAN:
                    seqs.append(seq)

    def _export_ended(self, ended: list[str]) -> None:
        conn = self._conn
        spans = [s for s in spans_by_id(conn, ended) if s.kind != "run"] if ended else []
        runs_done, self._ended_runs = self._ended_runs, []
        roots = run_roots(conn, runs_done) if runs_done else []
        for run_id in runs_done:
            self._sampled.pop(run_id, None)
        self._send_spans(spans + roots, [])

    def _export_pending(self) -> None:
        limit = time.monotonic() - self.settings.pending_after_s
        due = [span for span, seen in self._open.items() if seen <= limit and span not in self._announced]
        if not due:
            return
        self._announced.update(due)
        now = time.time()
        records = [s for s in spans_by_id(self._conn, due) if s.ended is None]
        self._send_spans([], [(s, now) for s in records])

    def _send_spans(self, spans: list[SpanRecord], pending: list[tuple[SpanRecord, float]]) -> None:
        if not spans and not pending:
            return
        from engine.export.encoding import encode

        assert self._mapper is not None and self._sender is not None
        events: dict[str, list[EventRecord]] = {}
        seqs: list[int] = []
        keys: dict[int, str] = {}
        for span in spans:
            for key in (span.id, f"run:{span.run_id}" if span.kind == "run" else None):
                for seq in self._event_seqs.pop(key, ()) if key else ():
                    seqs.append(seq)
                    keys[seq] = span.id
        for event in events_by_seq(self._conn, seqs) if seqs else ():
            events.setdefault(keys[event.seq], []).append(event)
        runs = {run.id: run for run in runs_by_id(self._conn, {s.run_id for s in spans if s.kind == "run"})}
        for start in range(0, max(len(spans), len(pending)), MAX_SPANS_PER_REQUEST):
            part = spans[start:start + MAX_SPANS_PER_REQUEST]
            part_pending = pending[start:start + MAX_SPANS_PER_REQUEST]
            if not part and not part_pending:
                continue
            body = encode(self._mapper.request(part, events, runs, pending=part_pending), self.settings.protocol)
            outcome = self._sender.send(body, stopping=self._stop.is_set)
            with self._lock:
                self._requests += 1
                if outcome.sent:
                    self._sent += len(part)
                    self._pending_sent += len(part_pending)
                else:
                    self._failed += 1
                    self._dropped += len(part)
                    self._last_error = outcome.error

    def _report_drops(self, *, force: bool) -> None:
        with self._lock:
            dropped, new = self._dropped, self._dropped - self._reported_drops
            error, breaker = self._last_error, (self._sender.breaker.state if self._sender else "closed")
        if new <= 0 or self._tracer_event is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < DROP_REPORT_INTERVAL_S:
            return
        self._last_report = now
        self._reported_drops = dropped
        try:
            self._tracer_event(None, None, "otel.dropped", name=self.settings.url,
                               data={"dropped_spans": dropped, "new": new, "error": error, "breaker": breaker})
        except Exception:  # the trace writer refusing an event must not stop the exporter
            log.exception("otel exporter could not record its drops")


def start_live_export(store: Any, tracer_event: TracerEvent, environ: Any = None) -> LiveExporter | None:
    """The engine's live exporter when `[otel]` or OTEL_EXPORTER_OTLP_* enables it (InputError on bad settings),
    started and subscribed to the writer's commits; None when export is off."""
    config = getattr(store, "config", None)
    if config is None:
        return None
    from engine.export.settings import resolve

    settings = resolve(config.otel, environ)
    if settings is None:
        return None
    from engine import __version__

    exporter = LiveExporter(store.dir, settings, store.redactor, tracer_event=tracer_event, version=__version__)
    exporter.start()
    store.writer.on_commit(exporter.on_commit)
    return exporter


def stop_live_export(exporter: LiveExporter, writer: Any) -> ExportStats:
    """At the engine's exit: flush the writer so the last runs' spans are committed, then export them and stop."""
    try:
        writer.flush(timeout=5.0)
    except Exception:  # a failed store is reported by the engine; export what was committed
        pass
    return exporter.stop(committed_seq=getattr(writer, "last_committed_seq", None))
