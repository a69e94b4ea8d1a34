"""The exporter process: the engine's child that turns committed trace events into OTLP requests.

    engine (on_commit: "<seq>\\n", a non-blocking write) ──stdin──► exporter process ──► OTLP/HTTP collector
    engine (stats reader thread) ◄──stdout── JSON lines: sent, dropped, breaker, last error

Why a process: mapping spans to protobuf, redacting and HTTP cost about half the engine's own work per model call
when they ran on a thread of the engine (they held its GIL); here they run on the other core, as the trace writer's
do. Its input is the trace store itself (traces.db, or a Postgres store: read-only, in sequence order, through
`engine.store.sql_reads`): the engine only says how far the store has committed, so the feed costs the engine one
small write per commit, and a slow collector makes this process fall behind the store, not the engine wait. It falls
at most `max_backlog` events behind ([otel] in config.toml): past that it skips ahead and counts every span it
skipped as dropped.

On a Postgres store several engines write one event feed (global sequence numbers): each engine's exporter follows
only the events of its own runs (`runs.engine_id`, committed in the same batch as the run's first event), so a fleet
exports every span once. Events of no run (engine-level) carry no engine there and are not exported from a Postgres
store.

The first stdin line is the configuration (JSON: store, settings, redaction, starting sequence number); then each
line is a committed sequence number, or "stop <seq>" (export up to there, then exit). End of stdin (the engine died)
means: export what is committed, briefly, and exit. SIGINT/SIGTERM/SIGHUP are ignored like the trace writer's: the
engine decides when its exporter stops."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.export.records import EventRecord
from engine.store.rows import fetch_typed

if TYPE_CHECKING:
    from engine.store.sql_reads import SqlReads

TICK_S = 0.1
READ_CHUNK = 5000
# After "stop": retries go on this long at most (the engine waits a little longer before it ends the process).
STOP_BUDGET_S = 4.0
STATS_INTERVAL_S = 0.5
# Ended spans are sent at most this often (or when a request's worth is due): fewer, larger requests cost this
# process and the collector less per span, and half a second is still live for a person watching a trace.
SEND_INTERVAL_S = 0.5
_EVENTS_AFTER = ("SELECT seq, ts, run_id, span_id, kind, agent, name, data FROM events WHERE seq > ? AND seq <= ? "
                 "ORDER BY seq LIMIT ?")
# One engine's events on a store several engines write (Postgres): those of its runs.
_OWN_EVENTS_AFTER = ("SELECT e.seq, e.ts, e.run_id, e.span_id, e.kind, e.agent, e.name, e.data FROM events e "
                     "JOIN runs r ON r.id = e.run_id WHERE e.seq > ? AND e.seq <= ? AND r.engine_id = ? "
                     "ORDER BY e.seq LIMIT ?")
_OWN_ENDED = ("SELECT count(*) FROM events e JOIN runs r ON r.id = e.run_id WHERE e.seq > ? AND e.seq <= ? "
              "AND e.kind = 'span.ended' AND r.engine_id = ?")


def skip_backlog(conn: SqlReads, last: int, target: int, max_backlog: int, engine_id: str | None = None
                 ) -> tuple[int, int]:
    """(new last, spans skipped): when more than `max_backlog` events wait, the oldest are skipped and the spans
    that ended among them counted (they will not be exported). `engine_id`: only that engine's (a shared store)."""
    if target - last <= max_backlog:
        return last, 0
    new_last = target - max_backlog
    if engine_id is not None:
        skipped = conn.execute(_OWN_ENDED, (last, new_last, engine_id)).fetchone()[0]
    else:
        skipped = conn.execute("SELECT count(*) FROM events WHERE seq > ? AND seq <= ? AND kind = 'span.ended'",
                               (last, new_last)).fetchone()[0]
    return new_last, int(skipped)


def read_events(conn: SqlReads, last: int, target: int, engine_id: str | None = None) -> list[EventRecord]:
    """The next events after `last` up to `target`; `engine_id`: only those of that engine's runs (a shared store)."""
    if engine_id is not None:
        return fetch_typed(conn, EventRecord, _OWN_EVENTS_AFTER, (last, target, engine_id, READ_CHUNK))
    return fetch_typed(conn, EventRecord, _EVENTS_AFTER, (last, target, READ_CHUNK))


class _Commands:
    """What the engine wrote on stdin: the highest committed sequence number, a stop request, end of input."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.target = 0
        self.stop: int | None = None
        self.eof = False

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            word, _, number = line.strip().partition(b" ")
            if word == b"stop":
                self.stop = int(number)
                self.target = max(self.target, self.stop)
            elif word:
                self.target = max(self.target, int(word))


def serve(config: dict[str, Any], commands_fd: int, out: Any) -> None:
    from engine.export.pipeline import MAX_SPANS_PER_REQUEST, ExportPipeline, ExportStats
    from engine.export.sender import Sender
    from engine.export.settings import ExportSettings
    from engine.store.location import PostgresLocation, StoreDirectory, parse_store_location
    from engine.store.redact import Redactor
    from engine.store.sql_reads import open_sql_reads

    settings = ExportSettings(**config["settings"])
    redactor = Redactor(secrets=config["secrets"], patterns=config["patterns"],
                        max_field_bytes=config["max_field_bytes"])
    sender = Sender(settings, wait=threading.Event().wait)
    pipeline = ExportPipeline(settings, redactor, sender, version=config.get("version", ""),
                              engine_id=config.get("engine_id", ""))
    location = parse_store_location(config["store"]) if config.get("store") else StoreDirectory(
        Path(config["store_dir"]))
    conn = open_sql_reads(location)
    own = (config.get("engine_id") or None) if isinstance(location, PostgresLocation) else None
    commands = _Commands(commands_fd)
    last = commands.target = int(config["start_seq"])
    max_backlog = settings.max_backlog
    out.write(json.dumps({**asdict(pipeline.stats(cpu_s=time.process_time())), "final": False}) + "\n")
    out.flush()  # the first line says: ready
    written: ExportStats | None = None
    last_write = last_send = 0.0
    stop_read = False
    deadline: list[float] = []
    give_up = lambda: bool(deadline) and time.monotonic() >= deadline[0]
    try:
        while True:
            commands.read(0.0 if commands.target > last else TICK_S)
            stopping = commands.stop is not None or commands.eof
            if stopping and not deadline:
                deadline.append(time.monotonic() + (1.0 if commands.eof else STOP_BUDGET_S))
            if stopping and not stop_read:
                # Everything committed before the stop: the engine flushed its writer, but the number it sent may
                # trail the last commit (the writer acknowledges a flush before it updates its count).
                stop_read = True
                row = conn.execute("SELECT max(seq) FROM events").fetchone()
                commands.target = max(commands.target, row[0] or 0)
            try:
                last, skipped = skip_backlog(conn, last, commands.target, max_backlog, own)
                if skipped:
                    pipeline.drop(skipped, f"the exporter fell more than {max_backlog} events behind the store")
                while last < commands.target:
                    rows = read_events(conn, last, commands.target, own)
                    if not rows:
                        last = commands.target
                        break
                    pipeline.feed(rows)
                    last = rows[-1].seq
                    if not stopping:
                        break  # export between chunks: a large backlog goes out in steps
                now = time.monotonic()
                if stopping or now - last_send >= SEND_INTERVAL_S or pipeline.due_count() >= MAX_SPANS_PER_REQUEST:
                    pipeline.export_due(conn, give_up=give_up)
                    last_send = now
                if not stopping:
                    pipeline.announce(conn, give_up)
            except Exception as exc:  # a locked database or a bug: say so, keep following the store
                pipeline.last_error = f"{type(exc).__name__}: {exc}"[:300]
            stats = pipeline.stats(cpu_s=time.process_time())
            now = time.monotonic()
            if stopping or (stats != written and now - last_write >= STATS_INTERVAL_S):
                out.write(json.dumps({**asdict(stats), "final": stopping}) + "\n")
                out.flush()
                written, last_write = stats, now
            if stopping:
                return
    finally:
        conn.close()
        sender.close()


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        # Background work: when the cores are busy, the engine and its trace writer go first; the exporter falls
        # behind the store (bounded by max_backlog) rather than slowing a run.
        os.nice(10)
    except OSError:
        pass
    fd = sys.stdin.fileno()
    first = b""
    while not first.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            return
        first += chunk
    try:
        serve(json.loads(first), fd, sys.stdout)
    except Exception as exc:  # say why on the stats pipe: the engine shows it (its stderr line, otel.dropped)
        sys.stdout.write(json.dumps({"last_error": f"the exporter failed: {type(exc).__name__}: {exc}"[:300],
                                     "final": True}) + "\n")
        sys.stdout.flush()
        raise SystemExit(1) from None
