"""LiveExporter: the engine's handle on its exporter process (engine/export/worker.py).

    writer's acknowledgement thread ── on_commit_seq(seq) ── "<seq>\\n" (non-blocking) ──► exporter process
    stats thread ◄── JSON lines (sent, dropped, breaker, last error) ─────────────────────────┘
          └─► `otel.dropped` trace events (at most every few seconds, and at stop), summary() for stderr

The commit callback (TraceWriter.on_commit_seq: only the committed sequence number, so the writer need not ship the
committed events back to the engine as it does for on_commit's consumers) writes one short line to a non-blocking
pipe and returns: when the pipe is full the write is skipped (the next commit's number supersedes it), so the engine
never waits for the exporter, whatever the collector does. At the engine's exit, stop() tells the process how far
the store committed, waits (bounded) for it to export that far, and reads its final counts.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.export.pipeline import ExportStats
from engine.export.settings import ExportSettings

if TYPE_CHECKING:
    from engine.store.location import StoreLocation

log = logging.getLogger(__name__)
TracerEvent = Callable[..., None]  # Tracer.event(run_id, span_id, kind, *, agent=None, name=None, data=None)
# EngineStore.publish_export_health(endpoint, sent_spans, dropped_spans, breaker, error): the lock file's `export`
HealthPublisher = Callable[[str, int, int, str, "str | None"], None]
DROP_REPORT_INTERVAL_S = 5.0
_ENGINE_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from engine.export.worker import main; main()"


class LiveExporter:
    def __init__(self, store: Path | StoreLocation, settings: ExportSettings, *, secrets: list[str],
                 patterns: list[str], max_field_bytes: int, start_seq: int, tracer_event: TracerEvent | None = None,
                 version: str = "", engine_id: str = "", publish: HealthPublisher | None = None) -> None:
        """`store`: where the traces are, a store directory or a Postgres store (the exporter process reads it)."""
        from engine.store.location import PostgresLocation, StoreDirectory

        self.location: StoreLocation = StoreDirectory(Path(store)) if isinstance(store, Path) else store
        self.settings = settings
        self.start_seq = start_seq
        # The Postgres URL (with its password, for the driver) goes down the pipe, never on a command line.
        where = self.location.dsn if isinstance(self.location, PostgresLocation) else str(self.location.path)
        self._config: dict[str, Any] = {"store": where, "settings": asdict(settings),
                                        "secrets": secrets, "patterns": patterns, "max_field_bytes": max_field_bytes,
                                        "version": version, "engine_id": engine_id}
        self._tracer_event = tracer_event
        self._process: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stats = ExportStats()
        self._final = threading.Event()
        self._ready = threading.Event()
        self._gone: str | None = None
        self._reported_drops = 0
        self._last_report = 0.0
        self._publish = publish
        self._published: tuple[int, str, bool] = (0, "closed", False)  # drops, breaker, failing: what operators see

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> LiveExporter:
        process = subprocess.Popen([sys.executable, "-I", "-c", _BOOT, _ENGINE_ROOT], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdin is not None
        # Headers may hold credentials: they travel on the pipe, never in argv or the environment of a child.
        process.stdin.write(json.dumps({**self._config, "start_seq": self.start_seq}).encode() + b"\n")
        process.stdin.flush()
        self._fd = process.stdin.fileno()
        os.set_blocking(self._fd, False)
        self._process = process
        self._reader = threading.Thread(target=self._read_stats, name="flightdeck-otel-stats", daemon=True)
        self._reader.start()
        return self

    def stop(self, committed_seq: int | None = None, timeout: float = 5.0) -> ExportStats:
        """Export up to `committed_seq` (bounded by `timeout`), then end the process and report drops. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return self.stats()
        assert process.stdin is not None
        try:
            os.set_blocking(self._fd, True)
            process.stdin.write(f"stop {committed_seq or 0}\n".encode())
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            with self._lock:
                self._gone = f"the exporter did not finish within {timeout:g}s and was stopped"
        if self._reader is not None:
            self._reader.join(2.0)
        self._report_drops(force=True)
        return self.stats()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the process has started and opened the store (benchmarks wait for it; the engine never does)."""
        return self._ready.wait(timeout)

    # -- the writer's side ----------------------------------------------------------------------------------------

    def on_commit(self, last_seq: int) -> None:
        """TraceWriter.on_commit_seq callback (its acknowledgement thread): tell the exporter how far the store has
        committed. Never blocks: a full pipe skips this number, the next commit's supersedes it."""
        if self._fd < 0:
            return
        try:
            os.write(self._fd, b"%d\n" % last_seq)
        except BlockingIOError:
            pass
        except OSError:  # the process ended: the stats thread reports it
            pass

    # -- counts ---------------------------------------------------------------------------------------------------

    def stats(self) -> ExportStats:
        with self._lock:
            stats = self._stats
            if self._gone is not None and not self._final.is_set():
                stats = ExportStats(**{**asdict(stats), "last_error": self._gone})
            return stats

    def summary(self) -> str:
        s = self.stats()
        line = f"otel export to {self.settings.describe()}: {s.sent_spans} span(s) sent, {s.dropped_spans} dropped"
        if s.dropped_spans or s.last_error:
            line += f" (last error: {s.last_error}; exporter breaker {s.breaker})"
        return line

    def _read_stats(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for raw in process.stdout:
            try:
                data = json.loads(raw)
                final = bool(data.pop("final", False))
                stats = ExportStats(**data)
            except (ValueError, TypeError):
                continue
            with self._lock:
                self._stats = stats
            self._ready.set()
            if final:
                self._final.set()
            self._report_drops(force=False)
            self._publish_health(stats)
        code = process.wait()
        if not self._final.is_set():
            with self._lock:
                self._gone = f"the exporter process ended unexpectedly (exit code {code})"

    def _publish_health(self, stats: ExportStats) -> None:
        """Tell `flightdeck engines` when the drops, the breaker or failing-or-not change (not on every count)."""
        shown = (stats.dropped_spans, stats.breaker, stats.last_error is not None)
        if self._publish is None or shown == self._published:
            return
        self._published = shown
        try:
            self._publish(self.settings.url, stats.sent_spans, stats.dropped_spans, stats.breaker, stats.last_error)
        except Exception:  # showing the drops must never stop the exporter
            log.exception("otel exporter could not publish its health")

    def _report_drops(self, *, force: bool) -> None:
        stats = self.stats()
        new = stats.dropped_spans - self._reported_drops
        if new <= 0 or self._tracer_event is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < DROP_REPORT_INTERVAL_S:
            return
        self._last_report = now
        self._reported_drops = stats.dropped_spans
        try:
            self._tracer_event(None, None, "otel.dropped", name=self.settings.url,
                               data={"dropped_spans": stats.dropped_spans, "new": new, "error": stats.last_error,
                                     "breaker": stats.breaker})
        except Exception:  # the trace writer refusing an event must not stop the exporter
            log.exception("otel exporter could not record its drops")


def prepare_live_export(store: Any, tracer_event: TracerEvent, environ: Mapping[str, str] | None = None
                        ) -> LiveExporter | None:
    """The engine's live exporter, not started yet, when `[otel]` or OTEL_EXPORTER_OTLP_* enables it; None when
    export is off. Called before the engine starts anything, so bad settings (InputError naming the setting or
    variable) stop it cleanly."""
    config = getattr(store, "config", None)
    if config is None:
        return None
    from engine.export.settings import resolve

    env = os.environ if environ is None else environ
    settings = resolve(config.otel, env)
    if settings is None:
        return None
    from engine import __version__
    from engine.store.redact import secret_values

    # traces.db in the store directory, or the Postgres store the engine's traces go to.
    where = getattr(store, "trace_location", None) or store.dir
    return LiveExporter(where, settings, secrets=secret_values(config.secrets.env, env),
                        patterns=list(config.redaction.patterns), max_field_bytes=config.redaction.max_field_bytes,
                        start_seq=0, tracer_event=tracer_event, version=__version__,
                        engine_id=str(getattr(store, "engine_id", "") or ""),
                        publish=getattr(store, "publish_export_health", None))


def start_live_export(exporter: LiveExporter, writer: Any) -> LiveExporter:
    """Start following the store from what the writer has committed so far."""
    exporter.start_seq = int(getattr(writer, "last_committed_seq", 0) or 0)
    exporter.start()
    writer.on_commit_seq(exporter.on_commit)
    return exporter


def stop_live_export(exporter: LiveExporter, writer: Any) -> ExportStats:
    """At the engine's exit: flush the writer so the last runs' spans are committed, then export them and stop."""
    try:
        writer.flush(timeout=5.0)
    except Exception:  # a failed store is reported by the engine; export what was committed
        pass
    return exporter.stop(committed_seq=getattr(writer, "last_committed_seq", None))
