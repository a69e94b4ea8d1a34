"""Trace store benchmark: what the TraceWriter sustains and how long an event waits before it is committed.

Workload: the rows the engine writes for one model call with one tool call -- an llm span and a tool span (start and
end: 4 lifecycle events), 5 engine events with small JSON payloads, one run-progress update -- spread over 50
concurrent runs that start and end as they go. Two measurements, each alone and then again while a SECOND PROCESS
tails the feed like the console does (new events every 50 ms):

- sustained events/s: the emitter runs flat out, yielding only when the writer asks it to (over_capacity, as the
  engine does once per step); committed event rows per second including the final flush.
- emit-to-commit latency p50/p99 at a steady LATENCY_RATE events/s (a heavy but not saturating load: at saturation
  latency only measures how full the queue is allowed to get).

    python -m bench store            (or: python -m bench.store_bench [seconds])
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_EVENTS_PER_S = 50_000
TARGET_P99_MS = 100.0
LATENCY_RATE = 25_000  # events/s offered during the latency measurement
EVENTS_PER_CALL = 9
CONCURRENT_RUNS = 50
CALLS_PER_RUN = 14
READER_POLL_S = 0.05


class Workload:
    """Emits the engine's rows for one model call at a time, across CONCURRENT_RUNS live runs."""

    def __init__(self, writer: Any, engine_id: str) -> None:
        self.writer = writer
        self.engine_id = engine_id
        self.calls = 0
        self.runs_started = 0
        self.live: list[list[Any]] = []  # [run_id, root span id, calls so far]
        for _ in range(CONCURRENT_RUNS):
            self._start_run()

    def _start_run(self) -> None:
        run_id = f"bench-run-{self.runs_started:07d}"
        self.runs_started += 1
        now = time.time()
        root = f"{run_id}-root"
        self.writer.run_started(run_id, "bench", "h4sh", self.engine_id, "bench", {"ticket": "T-1", "body": "hi"},
                                7, "acme", now, {"source": "bench"})
        self.writer.span_started(root, run_id, None, "run", "supervisor", "run", now, None)
        self.live.append([run_id, root, 0])

    def model_call(self, stamp: float | None = None) -> None:
        w = self.writer
        slot = self.live[self.calls % CONCURRENT_RUNS]
        run_id, root, done = slot
        n = self.calls
        self.calls += 1
        now = time.time()
        llm, tool = f"{run_id}-l{done}", f"{run_id}-t{done}"
        w.span_started(llm, run_id, root, "llm", "worker", "chat", now, {"model": "gpt-4o-mini", "attempt": 1})
        w.event(run_id, llm, "llm.request", "worker", "chat", {"messages": 6, "tools": 3, "t": stamp}, now)
        w.event(run_id, llm, "llm.response", "worker", "chat", {"finish": "tool_calls", "tokens_out": 42}, now)
        w.span_ended(llm, run_id, "ok", now, 812, 42, 0.00015, "gpt-4o-mini", {"finish": "tool_calls"})
        w.span_started(tool, run_id, llm, "tool", "worker", "lookup_order", now, {"args": {"order": n}})
        w.event(run_id, tool, "tool.call", "worker", "lookup_order", {"order": n}, now)
        w.event(run_id, tool, "tool.result", "worker", "lookup_order", {"ok": True, "bytes": 240}, now)
        w.span_ended(tool, run_id, "ok", now, 0, 0, 0.0, None, {"result_bytes": 240})
        w.event(run_id, None, "route", "supervisor", "router", {"to": "worker", "rule": "default"}, now)
        done += 1
        slot[2] = done
        w.run_progress(run_id, 812 * done, 42 * done, 0.00015 * done, done, done, 2)
        if done >= CALLS_PER_RUN:
            w.span_ended(root, run_id, "ok", now, 812 * done, 42 * done, 0.00015 * done, None, None)
            w.run_ended(run_id, "completed", now, {"answer": "refund approved"}, None)
            self.live.remove(slot)
            self._start_run()


def _reader_process(store_dir: str, stop: Any, results: Any) -> None:
    """The console's polling pattern: every READER_POLL_S, read what is new (in pages) and the runs header."""
    from engine.store import open_reader

    reader = None
    while reader is None and not stop.is_set():
        try:
            reader = open_reader(store_dir)
        except Exception:
            time.sleep(READER_POLL_S)
    last, rows, polls, slowest = 0, 0, 0, 0.0
    while reader is not None and not stop.is_set():
        began = time.perf_counter()
        while True:
            page = reader.events_after(last, limit=5000)
            rows += len(page)
            if page:
                last = page[-1].seq
            if len(page) < 5000:
                break
        reader.list_runs(limit=50)
        polls += 1
        slowest = max(slowest, time.perf_counter() - began)
        time.sleep(READER_POLL_S)
    if reader is not None:
        reader.close()
    results.put({"rows": rows, "polls": polls, "slowest_poll_ms": slowest * 1000})


class _Reader:
    """A second process tailing the store while a measurement runs."""

    def __init__(self, store_dir: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._process = ctx.Process(target=_reader_process, args=(str(store_dir), self._stop, self._results),
                                    daemon=True)
        self._process.start()

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        result = self._results.get(timeout=60)
        self._process.join(timeout=30)
        return result


def _open(store_dir: Path) -> Any:
    from engine.store import open_engine_store

    return open_engine_store(store_dir)


def measure_throughput(seconds: float, with_reader: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fd-store-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        store = _open(store_dir)
        reader = _Reader(store_dir) if with_reader else None
        writer = store.writer
        work = Workload(writer, store.engine_id)
        writer.flush()
        first_seq = writer.last_committed_seq
        emitting = 0.0
        began = time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            if writer.over_capacity():  # the engine's once-per-step wait_for_space, in thread form
                writer.wait_for_space_blocking()
            t = time.perf_counter()
            for _ in range(20):
                work.model_call()
            emitting += time.perf_counter() - t
        writer.flush(timeout=120)
        elapsed = time.perf_counter() - began
        committed = writer.last_committed_seq - first_seq
        stats = writer.stats
        reader_stats = reader.finish() if reader else None
        store.close()
    return {"events": committed, "seconds": elapsed, "events_per_s": committed / elapsed,
            "emit_us_per_call": emitting / max(1, work.calls) * 1e6, "reader": reader_stats,
            "build_us_per_event": stats["build_cpu_s"] / max(1, stats["events"]) * 1e6,
            "sql_us_per_event": stats["commit_cpu_s"] / max(1, stats["events"]) * 1e6}


def measure_latency(seconds: float, with_reader: bool, rate: int = LATENCY_RATE) -> dict[str, Any]:
    latencies: list[float] = []

    def on_commit(events: list[Any]) -> None:
        now = time.perf_counter()
        for event in events:
            data = event[6]
            if event[1] == "llm.request" and data and data.get("t") is not None:
                latencies.append(now - data["t"])

    with tempfile.TemporaryDirectory(prefix="fd-store-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        store = _open(store_dir)
        reader = _Reader(store_dir) if with_reader else None
        writer = store.writer
        work = Workload(writer, store.engine_id)
        writer.flush()
        writer.on_commit(on_commit)
        calls_per_s = rate / EVENTS_PER_CALL
        began = time.perf_counter()
        deadline = began + seconds
        sent = 0
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            due = int((now - began) * calls_per_s)
            while sent < due:
                work.model_call(stamp=time.perf_counter())
                sent += 1
            time.sleep(0.001)  # pacing the offered load, not waiting for the writer
        writer.flush(timeout=120)
        offered = sent * EVENTS_PER_CALL / (time.perf_counter() - began)
        reader_stats = reader.finish() if reader else None
        store.close()
    latencies.sort()
    return {"samples": len(latencies), "offered_events_per_s": offered,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else None,
            "max_ms": latencies[-1] * 1000 if latencies else None, "reader": reader_stats}


def run_store_bench(seconds: float = 5) -> list[dict[str, Any]]:
    """One row per figure: name, value, unit, target, ok (None when there is no target), details."""
    rows: list[dict[str, Any]] = []
    for with_reader in (False, True):
        label = " (+ reader process)" if with_reader else ""
        tp = measure_throughput(seconds, with_reader)
        lat = measure_latency(seconds, with_reader)
        rows.append({"name": f"sustained events/s{label}", "value": tp["events_per_s"], "unit": "events/s",
                     "target": f">= {TARGET_EVENTS_PER_S:,}", "ok": tp["events_per_s"] >= TARGET_EVENTS_PER_S,
                     "details": tp})
        rows.append({"name": f"emit cost per model call (9 events){label}", "value": tp["emit_us_per_call"],
                     "unit": "us", "target": "", "ok": None, "details": {}})
        rows.append({"name": f"writer thread CPU per event: rows+JSON / SQLite{label}", "value": None, "unit": "",
                     "text": f"{tp['build_us_per_event']:.1f} / {tp['sql_us_per_event']:.1f} us", "target": "",
                     "ok": None, "details": {}})
        for pct in ("p50", "p99"):
            value = lat[f"{pct}_ms"]
            ok = None if pct == "p50" else (value is not None and value <= TARGET_P99_MS)
            rows.append({"name": f"emit-to-commit {pct} at {LATENCY_RATE:,} events/s{label}", "value": value,
                         "unit": "ms", "target": f"<= {TARGET_P99_MS:g} ms" if pct == "p99" else "",
                         "ok": ok, "details": lat})
        if with_reader:
            for source in (tp, lat):
                stats = source["reader"] or {}
                rows.append({"name": "  reader: rows read / polls / slowest poll",
                             "value": None, "unit": "",
                             "text": f"{stats.get('rows', 0):,} / {stats.get('polls', 0)} / "
                                     f"{stats.get('slowest_poll_ms', 0):.1f} ms",
                             "target": "", "ok": None, "details": stats})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        if r.get("text") is not None:
            value = r["text"]
        elif r["value"] is None:
            value = "-"
        else:
            value = f"{r['value']:,.1f} {r['unit']}"
        verdict = "" if r["ok"] is None else ("ok" if r["ok"] else "MISSED")
        target = f"target {r['target']}" if r["target"] else ""
        lines.append(f"  {r['name'].ljust(width)}  {value:>22}   {target:<22} {verdict}")
    return "\n".join(lines)


def main_table(seconds: float = 5) -> None:
    print(f"\nstore: TraceWriter into SQLite ({seconds:g} s per measurement, "
          f"{EVENTS_PER_CALL} events per model call, {CONCURRENT_RUNS} concurrent runs)")
    print(format_rows(run_store_bench(seconds)))


if __name__ == "__main__":
    main_table(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
