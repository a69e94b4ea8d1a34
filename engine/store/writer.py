"""TraceWriter: the single writer of traces.db.

The engine calls the emit methods several times per model call, so each one only appends a tuple to a deque
(atomic under the GIL, safe from any thread) and compares the queue length to a threshold. Everything else --
JSON, redaction, truncation, sequence numbers, coalescing, SQL -- happens on the writer thread, which commits a
batch at least every `flush_interval` seconds (sooner when the queue is large) in one BEGIN IMMEDIATE transaction.

Guarantees:
- events.seq is gap-free and follows emission order; a batch is all-or-nothing, so a crash never leaves half of
  one (a span.ended event without its span row, a run row without its run.started event).
- nothing is dropped silently: the queue is bounded by cooperation (`over_capacity`, `wait_for_space`), and past
  twice the bound an emit blocks its thread rather than grow without limit; a batch that fails for a reason that
  can pass (disk full, database locked, I/O error) is retried with back-off and reported in `error`; rows that can
  never be written (a duplicate id) are skipped individually, and flush()/close() raise a StoreError about them.
- dicts handed to emit methods become the writer's: do not mutate them afterwards.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.store.files import connect, translate_sqlite_error
from engine.store.redact import Redactor
from engine.store.traces_schema import RUN_ENDED, RUN_STARTED, SPAN_ENDED, SPAN_STARTED

log = logging.getLogger(__name__)

CommittedEvent = tuple[int, str, str | None, str | None, str | None, str | None, dict[str, Any] | None]
CommitCallback = Callable[[list[CommittedEvent]], None]

# Queue item tags; the rest of each tuple is the emit method's arguments in order.
_RUN_STARTED, _RUN_PROGRESS, _RUN_ENDED, _SPAN_STARTED, _SPAN_ENDED, _EVENT, _FLUSH, _STATE = range(8)
# Current-state tables (breakers, budgets): one row per key, the latest write wins within a batch.
_STATE_UPSERTS = {
    "breakers": "INSERT OR REPLACE INTO breakers (hierarchy, key, kind, name, state, failure_rate, "
                "slow_call_rate, calls_in_window, failed_calls, slow_calls, not_permitted_calls, "
                "next_probe_at, since, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "budgets": "INSERT OR REPLACE INTO budgets (run_id, scope, agent, data, updated) VALUES (?,?,?,?,?)",
}

# Commit cadence when idle-to-busy (a saturated writer commits back to back anyway). Half the required 50 ms so
# that emit-to-commit p99 stays well under 100 ms: an event waits up to one interval plus one batch's work.
DEFAULT_FLUSH_INTERVAL = 0.025

_INT64_MAX = 2**63 - 1
_ERROR_SUMMARY_CHARS = 200
_NAME_CACHE_LIMIT = 10_000
_CACHE_KIB = 64 * 1024

_INSERT_RUN = ("INSERT INTO runs (id, hierarchy, hierarchy_hash, engine_id, engine_version, status, tenant, seed, "
               "input, output, error, started, ended, tokens_in, tokens_out, cost_usd, model_calls, tool_calls, "
               "agents_active, attributes, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UPDATE_RUN_END = ("UPDATE runs SET status=?, ended=?, output=?, error=?, tokens_in=?, tokens_out=?, cost_usd=?, "
                   "model_calls=?, tool_calls=?, agents_active=?, last_seq=max(last_seq, ?) WHERE id=?")
_UPDATE_RUN_END_NO_TOTALS = ("UPDATE runs SET status=?, ended=?, output=?, error=?, last_seq=max(last_seq, ?) "
                             "WHERE id=?")
_UPDATE_RUN_PROGRESS = ("UPDATE runs SET tokens_in=?, tokens_out=?, cost_usd=?, model_calls=?, tool_calls=?, "
                        "agents_active=?, last_seq=max(last_seq, ?) WHERE id=?")
_UPDATE_RUN_SEQ = "UPDATE runs SET last_seq=max(last_seq, ?) WHERE id=?"
_INSERT_SPAN = ("INSERT INTO spans (id, run_id, parent_id, kind, agent, name, status, started, ended, tokens_in, "
                "tokens_out, cost_usd, model, attributes, last_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UPDATE_SPAN_END = ("UPDATE spans SET status=?, ended=?, tokens_in=?, tokens_out=?, cost_usd=?, "
                    "model=coalesce(?, model), attributes=coalesce(?, attributes), last_seq=max(last_seq, ?) "
                    "WHERE id=?")
# A span this writer never saw start (should not happen): merge its end attributes in SQL instead.
_UPDATE_SPAN_END_PATCH = ("UPDATE spans SET status=?, ended=?, tokens_in=?, tokens_out=?, cost_usd=?, "
                          "model=coalesce(?, model), "
                          "attributes=coalesce(json_patch(coalesce(attributes, '{}'), ?), attributes), "
                          "last_seq=max(last_seq, ?) WHERE id=?")
_UPDATE_SPAN_SEQ = "UPDATE spans SET last_seq=max(last_seq, ?) WHERE id=?"
_INSERT_EVENT = "INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) VALUES (?,?,?,?,?,?,?,?)"

_MULTI_ROW = frozenset({_INSERT_EVENT, _INSERT_SPAN, _INSERT_RUN})
_CHUNKS = (128, 16, 1)


def _insert_many(conn: sqlite3.Connection, sql: str, rows: list[Any]) -> None:
    """executemany for INSERTs, as multi-row `VALUES (...), (...)` statements: less per-row overhead in the
    sqlite3 module, and one GIL release/re-acquire per 128 rows instead of per row (each re-acquire may wait for
    the busy engine thread). A few fixed chunk sizes keep the statement cache small."""
    head, _, values = sql.partition(" VALUES ")
    index, total = 0, len(rows)
    for size in _CHUNKS:
        if total - index < size:
            continue
        statement = head + " VALUES " + ",".join([values] * size)
        while total - index >= size:
            conn.execute(statement, list(chain.from_iterable(rows[index:index + size])))
            index += size


# Run row / span row column positions used while coalescing.
_R_STATUS, _R_OUTPUT, _R_ERROR, _R_ENDED, _R_TOTALS, _R_SEQ = 5, 9, 10, 12, 13, 20
_S_PARENT = 2
_S_STATUS, _S_ENDED, _S_TOKENS_IN, _S_TOKENS_OUT, _S_COST, _S_MODEL, _S_ATTRS, _S_SEQ = 6, 8, 9, 10, 11, 12, 13, 14


class _Batch:
    """One transaction's worth of rows, built from a drained slice of the queue."""

    __slots__ = ("statements", "first_seq", "last_seq", "events", "flush_waiters", "item_count")

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[Any]]] = []
        self.first_seq = 0
        self.last_seq = 0
        self.events: list[CommittedEvent] | None = None
        self.flush_waiters: list[threading.Event] = []
        self.item_count = 0


class TraceWriter:
    def __init__(self, db_path: Path, *, redactor: Redactor | None = None,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL, max_queue: int = 100_000, max_batch: int = 10_000,
                 busy_timeout: float = 5.0, retry_initial: float = 0.05, retry_max: float = 1.0) -> None:
        if max_queue < 2:
            raise ValueError("max_queue must be at least 2")
        self.db_path = db_path
        self._redactor = redactor or Redactor()
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._low_water = max_queue // 2
        self._hard_limit = max_queue * 2
        self._max_batch = max_batch
        self._wake_at = max(1, min(max_batch // 2, max_queue // 4))
        self._retry_initial = retry_initial
        self._retry_max = retry_max

        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._space = threading.Condition()
        self._callbacks: list[CommitCallback] = []
        self._state_lock = threading.Lock()
        self._transient: StoreError | None = None
        self._lost: StoreError | None = None
        self._lost_unreported = False
        self._stopping = False
        self._give_up_at: float | None = None
        self._closed = False
        self._stats: dict[str, float] = {"batches": 0, "items": 0, "events": 0, "build_cpu_s": 0.0,
                                         "commit_cpu_s": 0.0}

        # Writer-thread state that outlives one batch.
        self._run_totals: dict[str, list[Any]] = {}
        self._run_hierarchy: dict[str, str] = {}
        self._names: dict[str, str | None] = {}  # so run.ended events carry the name the console shows
        self._open_spans: dict[str, tuple[str, str | None, str, dict[str, Any] | None, float]] = {}

        self._conn = connect(db_path, busy_timeout_s=busy_timeout, check_same_thread=False)
        try:
            self._conn.execute("PRAGMA synchronous = NORMAL")
            # Span ids are usually random: a large page cache keeps their index inserts off the disk.
            self._conn.execute(f"PRAGMA cache_size = {-_CACHE_KIB}")
            row = self._conn.execute("SELECT max(seq) FROM events").fetchone()
        except sqlite3.Error as exc:
            self._conn.close()
            raise translate_sqlite_error(exc, db_path, "read") from exc
        self.last_committed_seq: int = int(row[0] or 0)

        self._thread = threading.Thread(target=self._run, name="flightdeck-trace-writer", daemon=True)
        self._thread.start()

    # -- emit API: the engine's hot path. Append and compare, nothing else. ------------------------------------

    def run_started(self, run_id: str, hierarchy: str, hierarchy_hash: str | None, engine_id: str | None,
                    engine_version: str | None, input: Any, seed: int | None, tenant: str | None,
                    started: float, attrs: dict[str, Any] | None = None) -> None:
        q = self._queue
        q.append((_RUN_STARTED, run_id, hierarchy, hierarchy_hash, engine_id, engine_version, input, seed, tenant,
                  started, attrs))
        if len(q) >= self._wake_at:
            self._queue_large()

    def run_progress(self, run_id: str, tokens_in: int, tokens_out: int, cost_usd: float, model_calls: int,
                     tool_calls: int, agents_active: int) -> None:
        q = self._queue
        q.append((_RUN_PROGRESS, run_id, tokens_in, tokens_out, cost_usd, model_calls, tool_calls, agents_active))
        if len(q) >= self._wake_at:
            self._queue_large()

    def state(self, table: str, key: tuple[Any, ...], row: tuple[Any, ...]) -> None:
        """Upsert a current-state row (`breakers` or `budgets`); `row` holds every column, `data` already JSON."""
        q = self._queue
        q.append((_STATE, table, key, row))
        if len(q) >= self._wake_at:
            self._queue_large()

    def run_ended(self, run_id: str, status: str, ended: float, output: Any = None, error: str | None = None) -> None:
        q = self._queue
        q.append((_RUN_ENDED, run_id, status, ended, output, error))
        if len(q) >= self._wake_at:
            self._queue_large()

    def span_started(self, span_id: str, run_id: str, parent_id: str | None, kind: str, agent: str | None,
                     name: str, started: float, attrs: dict[str, Any] | None = None) -> None:
        q = self._queue
        q.append((_SPAN_STARTED, span_id, run_id, parent_id, kind, agent, name, started, attrs))
        if len(q) >= self._wake_at:
            self._queue_large()

    def span_ended(self, span_id: str, run_id: str, status: str, ended: float, tokens_in: int = 0,
                   tokens_out: int = 0, cost_usd: float = 0.0, model: str | None = None,
                   attrs: dict[str, Any] | None = None) -> None:
        q = self._queue
        q.append((_SPAN_ENDED, span_id, run_id, status, ended, tokens_in, tokens_out, cost_usd, model, attrs))
        if len(q) >= self._wake_at:
            self._queue_large()

    def event(self, run_id: str | None, span_id: str | None, kind: str, agent: str | None = None,
              name: str | None = None, data: dict[str, Any] | None = None, ts: float | None = None) -> None:
        q = self._queue
        q.append((_EVENT, run_id, span_id, kind, agent, name, data, time.time() if ts is None else ts))
        if len(q) >= self._wake_at:
            self._queue_large()

    def _queue_large(self) -> None:
        self._wake.set()
        if len(self._queue) >= self._hard_limit and threading.current_thread() is not self._thread:
            # Last resort when an emitter ignores over_capacity(): block this thread instead of growing without
            # bound or dropping. Cooperative emitters never get here.
            self._wait_below(self._max_queue, None)

    # -- back-pressure -----------------------------------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    @property
    def max_queue(self) -> int:
        return self._max_queue

    def over_capacity(self) -> bool:
        return len(self._queue) >= self._max_queue

    async def wait_for_space(self) -> None:
        """Return at once under the bound; otherwise yield to the event loop until the writer has drained the
        queue below half the bound. Raises StoreError if the writer has stopped (it would never drain)."""
        if len(self._queue) < self._max_queue:
            return
        import anyio  # only on the slow path: keeps `import engine.store.writer` cheap

        delay = 0.001
        while len(self._queue) >= self._low_water:
            self._check_running()
            self._wake.set()
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.01)

    def wait_for_space_blocking(self, timeout: float | None = None) -> bool:
        """wait_for_space for plain threads. Returns False on timeout."""
        if len(self._queue) < self._max_queue:
            return True
        return self._wait_below(self._low_water, timeout)

    def _wait_below(self, target: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._space:
            while len(self._queue) >= target:
                if not self._thread.is_alive():
                    return False
                self._wake.set()
                remaining = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._space.wait(remaining)
        return True

    def _check_running(self) -> None:
        if not self._thread.is_alive():
            raise StoreError(f"the trace writer for {self.db_path} has stopped"
                             + (f": {self.error}" if self.error else ""))

    # -- commits, errors, callbacks ----------------------------------------------------------------------------

    def on_commit(self, callback: CommitCallback) -> None:
        """Call `callback(events)` on the writer thread after each commit, with every committed event as
        (seq, kind, run_id, span_id, agent, name, data). `data` is the dict as emitted (not redacted, not cut):
        this is for in-process consumers such as runbook detection. Keep the callback short; it delays commits.
        Exceptions are logged and otherwise ignored."""
        self._callbacks.append(callback)

    @property
    def stats(self) -> dict[str, float]:
        """Counters for benchmarks and diagnostics: committed batches, items and events, and the writer thread's
        CPU seconds spent building rows (JSON, redaction) and in SQLite."""
        return dict(self._stats)

    @property
    def error(self) -> StoreError | None:
        """The current problem: a failing commit being retried, else the last loss of rows. None when healthy."""
        with self._state_lock:
            return self._transient or self._lost

    def flush(self, timeout: float = 10) -> None:
        """Block until everything emitted before this call is committed. Raises StoreError on timeout (naming the
        error that keeps the writer from committing) and, once, if rows could not be written since the last
        flush/close."""
        if self._closed:
            if self._queue:
                raise StoreError(f"the trace writer for {self.db_path} is closed; "
                                 f"{len(self._queue)} queued items were not written")
            self._raise_lost()
            return
        done = threading.Event()
        self._queue.append((_FLUSH, done))
        self._wake.set()
        deadline = time.monotonic() + timeout
        while not done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            if not self._thread.is_alive():
                self._check_running()
            if time.monotonic() >= deadline:
                problem = self.error
                raise StoreError(f"trace writer for {self.db_path} did not commit within {timeout:g}s"
                                 + (f": {problem}" if problem else ""))
        self._raise_lost()

    def close(self, timeout: float = 10) -> None:
        """Flush, then stop the writer thread and close its connection. Idempotent. Raises StoreError if data
        could not be written (after giving up on it: the process is shutting down)."""
        if self._closed:
            return
        failure: StoreError | None = None
        try:
            self.flush(timeout)
        except StoreError as exc:
            failure = exc
        self._give_up_at = time.monotonic()
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=max(1.0, timeout))
        self._closed = True
        if not self._thread.is_alive():
            self._conn.close()
        unwritten = len(self._queue)
        if failure is not None:
            raise StoreError(f"{failure}; {unwritten} queued trace items were not written") from failure
        self._raise_lost()

    def _raise_lost(self) -> None:
        with self._state_lock:
            if not self._lost_unreported:
                return
            self._lost_unreported = False
            lost = self._lost
        if lost is not None:
            raise lost

    def _record_lost(self, message: str) -> None:
        log.error("%s", message)
        with self._state_lock:
            self._lost = StoreError(message)
            self._lost_unreported = True

    # -- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        queue = self._queue
        interval = self._flush_interval
        next_cycle = time.monotonic() + interval
        behind = False  # the last drain was cut at max_batch: more (maybe a flush marker) is already waiting
        while True:
            timeout = next_cycle - time.monotonic()
            if timeout > 0 and not behind and len(queue) < self._wake_at and not self._stopping:
                self._wake.wait(timeout)
            # Clear before draining: a flush() or large queue signalled after this point wakes the next wait.
            self._wake.clear()
            next_cycle = time.monotonic() + interval
            count = min(len(queue), self._max_batch)
            behind = count == self._max_batch
            if count == 0:
                if self._stopping:
                    return
                continue
            popleft = queue.popleft
            items = [popleft() for _ in range(count)]
            cpu = time.thread_time()
            try:
                batch = self._build(items)
            except Exception as exc:  # a bug in batch building must not kill the writer
                log.exception("trace writer could not build a batch")
                self._record_lost(f"{count} trace items could not be prepared for {self.db_path}: {exc!r}")
                self._release_waiters([item[1] for item in items if item[0] == _FLUSH])
                continue
            built = time.thread_time()
            if not self._commit_with_retry(batch):
                return
            done = time.thread_time()
            stats = self._stats
            stats["batches"] += 1
            stats["items"] += count
            stats["events"] += batch.last_seq - batch.first_seq + 1 if batch.last_seq else 0
            stats["build_cpu_s"] += built - cpu
            stats["commit_cpu_s"] += done - built
            self._after_commit(batch)

    def _commit_with_retry(self, batch: _Batch) -> bool:
        """Commit, retrying failures that can pass. False when closing gave up on the batch."""
        if not batch.statements:  # only flush markers: nothing to write, no write lock to take
            return True
        delay = self._retry_initial
        while True:
            try:
                self._commit(batch)
                if self._transient is not None:
                    with self._state_lock:
                        self._transient = None
                    log.warning("trace writer recovered; commits to %s resumed", self.db_path)
                return True
            except sqlite3.OperationalError as exc:
                # Disk full, database locked, I/O error: may pass. Keep the batch, report, retry.
                problem = translate_sqlite_error(exc, self.db_path, "commit trace batch to")
                if self._transient is None:
                    log.error("%s (retrying)", problem)
                with self._state_lock:
                    self._transient = problem
            except Exception as exc:
                # Cannot pass by retrying (constraint violation, value out of range): write what can be written.
                self._salvage(batch, exc)
                return True
            if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                self._record_lost(f"gave up on {batch.item_count + len(self._queue)} trace items at shutdown: "
                                  f"{self._transient}")
                self._release_waiters(batch.flush_waiters)
                return False
            time.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    def _commit(self, batch: _Batch) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in batch.statements:
                if sql in _MULTI_ROW:
                    _insert_many(conn, sql, rows)
                else:
                    conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("trace writer could not roll back")

    def _salvage(self, batch: _Batch, first: Exception) -> None:
        """Row by row in one transaction, skipping rows that fail: one bad row must not lose its neighbours."""
        failures: list[str] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, rows in batch.statements:
                for row in rows:
                    try:
                        conn.execute(sql, row)
                    except (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                            sqlite3.ProgrammingError, OverflowError, ValueError) as exc:
                        failures.append(f"{sql.split('(')[0].strip()} {row[0]!r}: {exc}")
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback()
            self._record_lost(f"{batch.item_count} trace items could not be written to {self.db_path}: "
                              f"{first!r}, then {exc!r}")
            return
        self._record_lost(f"{len(failures)} trace rows could not be written to {self.db_path} (first: "
                          f"{failures[0] if failures else repr(first)})")

    def _after_commit(self, batch: _Batch) -> None:
        if batch.last_seq:
            self.last_committed_seq = batch.last_seq
        with self._space:
            self._space.notify_all()
        if batch.events:
            for callback in list(self._callbacks):
                try:
                    callback(batch.events)
                except Exception:
                    log.exception("trace on_commit callback failed")
        self._release_waiters(batch.flush_waiters)

    @staticmethod
    def _release_waiters(waiters: list[threading.Event]) -> None:
        for waiter in waiters:
            waiter.set()

    # -- batch building (writer thread) ------------------------------------------------------------------------

    def _clean_name(self, name: str | None) -> str | None:
        """Span and event names come from a small vocabulary (agent, tool, model names): clean each once."""
        if name is None:
            return None
        cleaned = self._names.get(name)
        if cleaned is None:
            cleaned = self._redactor.clean_column(name)
            if len(self._names) < _NAME_CACHE_LIMIT:
                self._names[name] = cleaned
        return cleaned

    def _build(self, items: list[tuple[Any, ...]]) -> _Batch:
        """Turn queue items into rows. Coalesces: a run or span started and ended in this batch is one INSERT with
        its final values; run progress keeps only the latest totals; a span's end attributes merge into its start
        attributes. Sequence numbers are assigned here, in queue order."""
        dumps = self._redactor.dumps  # caller payloads: redacted and cut
        text = self._clean_name
        run_totals = self._run_totals
        open_spans = self._open_spans
        batch = _Batch()
        batch.item_count = len(items)
        events: list[list[Any]] = []  # data stays an object until the end of the batch
        committed: list[CommittedEvent] | None = [] if self._callbacks else None
        new_runs: dict[str, list[Any]] = {}
        new_spans: dict[str, list[Any]] = {}
        run_ends: dict[str, tuple[Any, ...]] = {}
        span_ends: dict[str, list[Any]] = {}
        run_seq: dict[str, int] = {}
        span_seq: dict[str, int] = {}
        progressed: set[str] = set()
        states: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
        seq = self.last_committed_seq
        batch.first_seq = seq + 1
        # Spans that also end in this batch get one event (span.ended, carrying the duration), not two: most model
        # and tool calls start and end within one flush interval, and rows are the writer's main cost.
        ended_here = {item[1] for item in items if item[0] == _SPAN_ENDED}

        for item in items:
            op = item[0]
            if op == _EVENT:
                _, run_id, span_id, kind, agent, name, data, ts = item
                seq += 1
                events.append([seq, ts, run_id, span_id, kind, agent, text(name), data])
                if run_id is not None:
                    run_seq[run_id] = seq
                if span_id is not None:
                    span_seq[span_id] = seq
                if committed is not None:
                    committed.append((seq, kind, run_id, span_id, agent, name, data))
            elif op == _SPAN_STARTED:
                _, span_id, run_id, parent_id, kind, agent, name, started, attrs = item
                open_spans[span_id] = (kind, agent, name, attrs, started)
                stored_name = text(name)
                # attributes stay a dict until the end of the batch: an end in this batch merges into it.
                new_spans[span_id] = [span_id, run_id, parent_id, kind, agent, stored_name, "running", started,
                                      None, 0, 0, 0.0, None, attrs, seq + 1]
                if span_id in ended_here:
                    continue
                seq += 1
                data = {"kind": kind, "name": stored_name, "parent_id": parent_id}
                events.append([seq, started, run_id, span_id, SPAN_STARTED, agent, stored_name, data])
                run_seq[run_id] = seq
                span_seq[span_id] = seq
                if committed is not None:
                    committed.append((seq, SPAN_STARTED, run_id, span_id, agent, name, data))
            elif op == _SPAN_ENDED:
                _, span_id, run_id, status, ended, tokens_in, tokens_out, cost, model, attrs = item
                seq += 1
                known = open_spans.pop(span_id, None)
                kind, agent, name, start_attrs, started = known if known is not None else (None, None, None, None,
                                                                                            None)
                model = text(model)
                if attrs and start_attrs:
                    attrs = {**start_attrs, **attrs}
                elif not attrs:
                    attrs = None
                row = new_spans.get(span_id)
                if row is not None:
                    row[_S_STATUS], row[_S_ENDED], row[_S_TOKENS_IN], row[_S_TOKENS_OUT] = (status, ended,
                                                                                           tokens_in, tokens_out)
                    row[_S_COST], row[_S_MODEL] = cost, model
                    if attrs is not None:
                        row[_S_ATTRS] = attrs
                else:
                    span_ends[span_id] = [status, ended, tokens_in, tokens_out, cost, model, attrs, known, span_id]
                stored_name = text(name)
                data = {"kind": kind, "name": stored_name, "status": status, "tokens_in": tokens_in,
                        "tokens_out": tokens_out, "cost_usd": cost, "model": model,
                        "duration_s": None if started is None else round(ended - started, 6)}
                if row is not None:  # no span.started event was written for it: say where it hangs in the tree
                    data["parent_id"] = row[_S_PARENT]
                events.append([seq, ended, run_id, span_id, SPAN_ENDED, agent, stored_name, data])
                run_seq[run_id] = seq
                span_seq[span_id] = seq
                if committed is not None:
                    committed.append((seq, SPAN_ENDED, run_id, span_id, agent, name, data))
            elif op == _RUN_PROGRESS:
                run_id = item[1]
                totals = list(item[2:8])
                run_totals[run_id] = totals
                row = new_runs.get(run_id)
                if row is not None:
                    row[_R_TOTALS:_R_TOTALS + 6] = totals
                else:
                    progressed.add(run_id)
            elif op == _RUN_STARTED:
                (_, run_id, hierarchy, hierarchy_hash, engine_id, engine_version, run_input, seed, tenant,
                 started, attrs) = item
                seq += 1
                hierarchy = text(hierarchy)
                if isinstance(seed, int) and not -_INT64_MAX - 1 <= seed <= _INT64_MAX:
                    # SQLite integers are 64-bit (a bigger one would silently become a float): keep the exact
                    # value in the attributes instead.
                    attrs = {**(attrs or {}), "seed": str(seed)}
                    seed = None
                run_totals[run_id] = [0, 0, 0.0, 0, 0, 0]
                self._run_hierarchy[run_id] = hierarchy
                new_runs[run_id] = [run_id, hierarchy, hierarchy_hash, engine_id, engine_version, "running", tenant,
                                    seed, dumps(run_input), None, None, started, None, 0, 0, 0.0, 0, 0, 0,
                                    dumps(attrs), seq]
                data = {"hierarchy": hierarchy, "tenant": tenant}
                events.append([seq, started, run_id, None, RUN_STARTED, None, hierarchy, data])
                run_seq[run_id] = seq
                if committed is not None:
                    committed.append((seq, RUN_STARTED, run_id, None, None, hierarchy, data))
            elif op == _RUN_ENDED:
                _, run_id, status, ended, output, error = item
                seq += 1
                totals = run_totals.pop(run_id, None)
                hierarchy = self._run_hierarchy.pop(run_id, None)
                output_json, error_text = dumps(output), self._redactor.clean_column(error)
                row = new_runs.get(run_id)
                if row is not None:
                    row[_R_STATUS], row[_R_ENDED], row[_R_OUTPUT], row[_R_ERROR] = (status, ended, output_json,
                                                                                   error_text)
                else:
                    run_ends[run_id] = (status, ended, output_json, error_text, totals)
                    progressed.discard(run_id)
                data = {"status": status}
                if totals is not None:
                    data.update(tokens_in=totals[0], tokens_out=totals[1], cost_usd=totals[2],
                                model_calls=totals[3], tool_calls=totals[4])
                if error_text:
                    data["error"] = error_text[:_ERROR_SUMMARY_CHARS]
                events.append([seq, ended, run_id, None, RUN_ENDED, None, hierarchy, data])
                run_seq[run_id] = seq
                if committed is not None:
                    committed.append((seq, RUN_ENDED, run_id, None, None, hierarchy, data))
            elif op == _FLUSH:
                batch.flush_waiters.append(item[1])
            elif op == _STATE:
                states.setdefault(item[1], {})[item[2]] = item[3]

        statements = batch.statements
        if new_runs:
            rows = list(new_runs.values())
            for row in rows:
                row[_R_SEQ] = run_seq.get(row[0], row[_R_SEQ])
            statements.append((_INSERT_RUN, rows))
        if new_spans:
            rows = list(new_spans.values())
            for row, attrs_json in zip(rows, self._redactor.dumps_many([row[_S_ATTRS] for row in rows])):
                row[_S_ATTRS] = attrs_json
                row[_S_SEQ] = span_seq[row[0]]
            statements.append((_INSERT_SPAN, rows))
        if events:
            # Event payloads are serialised together: one redaction pre-check for the whole batch.
            for row, data_json in zip(events, self._redactor.dumps_many([row[7] for row in events])):
                row[7] = data_json
            statements.append((_INSERT_EVENT, events))
        if span_ends:
            merged_rows: list[list[Any]] = []
            patch_rows: list[list[Any]] = []
            for span_id, (status, ended, tokens_in, tokens_out, cost, model, attrs, known, _) in span_ends.items():
                target = merged_rows if known is not None else patch_rows
                target.append([status, ended, tokens_in, tokens_out, cost, model, dumps(attrs), span_seq[span_id],
                               span_id])
            if merged_rows:
                statements.append((_UPDATE_SPAN_END, merged_rows))
            if patch_rows:
                log.warning("trace writer: %d spans ended that this writer never saw start", len(patch_rows))
                statements.append((_UPDATE_SPAN_END_PATCH, patch_rows))
        touched_spans = [(last, span_id) for span_id, last in span_seq.items()
                         if span_id not in new_spans and span_id not in span_ends]
        if touched_spans:
            statements.append((_UPDATE_SPAN_SEQ, touched_spans))
        if run_ends:
            with_totals = []
            without_totals = []
            for run_id, (status, ended, output_json, error_text, totals) in run_ends.items():
                last = run_seq[run_id]
                if totals is not None:
                    with_totals.append([status, ended, output_json, error_text, *totals, last, run_id])
                else:
                    without_totals.append([status, ended, output_json, error_text, last, run_id])
            if with_totals:
                statements.append((_UPDATE_RUN_END, with_totals))
            if without_totals:
                statements.append((_UPDATE_RUN_END_NO_TOTALS, without_totals))
        if progressed:
            statements.append((_UPDATE_RUN_PROGRESS,
                               [[*run_totals[run_id], run_seq.get(run_id, 0), run_id] for run_id in progressed
                                if run_id in run_totals]))
        touched_runs = [(last, run_id) for run_id, last in run_seq.items()
                        if run_id not in new_runs and run_id not in run_ends and run_id not in progressed]
        if touched_runs:
            statements.append((_UPDATE_RUN_SEQ, touched_runs))

        for table, rows_by_key in states.items():
            statements.append((_STATE_UPSERTS[table], list(rows_by_key.values())))

        batch.last_seq = seq if seq > self.last_committed_seq else 0
        batch.events = committed
        return batch
