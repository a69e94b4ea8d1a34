"""TraceWriter: the engine's handle on the single writer of traces.db (or of its traces on a Postgres store).

The engine calls the emit methods several times per model call, so each one only appends a tuple to a deque
(atomic under the GIL, safe from any thread) and compares the queue length to a threshold. A shipper thread sends
what accumulated, every few milliseconds, as one pickled frame down a pipe to the trace-writer PROCESS
(engine/store/writer_process.py), which does everything else -- JSON, redaction, truncation, sequence numbers,
coalescing, SQL -- on the other core, and commits a batch at least every `flush_interval` seconds (sooner when its
queue is large or a flush is waiting) in one BEGIN IMMEDIATE transaction. An acknowledgement thread reads back
which frames are committed, the last sequence number, errors, and (for on_commit callbacks) the committed events.

Guarantees:
- events.seq is gap-free and follows emission order; a batch is all-or-nothing, so a crash never leaves half of
  one (a span.ended event without its span row, a run row without its run.started event).
- nothing is dropped silently: the items not yet committed (queued here or in flight to the writer process) are
  bounded by cooperation (`over_capacity`, `wait_for_space`), and past twice the bound an emit blocks its thread
  rather than grow without limit; a batch that fails for a reason that can pass (disk full, database locked, I/O
  error) is retried with back-off and reported in `error`; rows that can never be written (a duplicate id) are
  skipped individually, and flush()/close() raise a StoreError about them.
- dicts handed to emit methods become the writer's: do not mutate them afterwards. Values that are not plain JSON
  data are stored as the JSON encoder would store them (their str()), and never reach the writer process as objects.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.store.batch import (
    EVENT_ITEM,
    FLUSH,
    RUN_ENDED_ITEM,
    RUN_PROGRESS_ITEM,
    RUN_STARTED_ITEM,
    SPAN_ENDED_ITEM,
    SPAN_STARTED_ITEM,
    STATE_ITEM,
)
from engine.store.checkpointer import DEFAULT_THRESHOLD_PAGES as DEFAULT_CHECKPOINT_PAGES
from engine.store.location import PostgresLocation
from engine.store.redact import Redactor
from engine.store.writer_acks import Acknowledgements, CommitCallback, HealthCallback
from engine.store.writer_flight import InFlight
from engine.store.writer_ship import Shipper
from engine.store.writer_spawn import start_writer_process
from engine.store.writer_types import Backlog, LoopWaiter, WriterHealth

__all__ = ["DEFAULT_FLUSH_INTERVAL", "CommitCallback", "HealthCallback", "TraceWriter", "WriterHealth"]

log = logging.getLogger(__name__)


# Commit cadence when idle-to-busy (a saturated writer commits back to back anyway). Half the required 50 ms so
# that emit-to-commit p99 stays well under 100 ms: an event waits up to one interval plus one batch's work.
DEFAULT_FLUSH_INTERVAL = 0.025
# What may be emitted but not committed, besides the item count: a few large payloads can weigh more than 100,000
# small items, and on a failing disk items do not pile up fast but wait for ever. Past either bound the engine
# starts no new step until the writer catches up.
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_AGE_S = 5.0


class TraceWriter:
    """The engine's side of the single writer: the emit methods, back-pressure, flush and close (here); the
    frames in flight (writer_flight.py), the shipper thread (writer_ship.py), the acknowledgement thread
    (writer_acks.py), the process's start (writer_spawn.py)."""

    def __init__(self, db_path: Path | PostgresLocation, *, redactor: Redactor | None = None,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL, max_queue: int = 100_000, max_batch: int = 10_000,
                 busy_timeout: float = 5.0, retry_initial: float = 0.05, retry_max: float = 1.0,
                 keep_fds: Iterable[int] = (), max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age: float = DEFAULT_MAX_AGE_S, checkpoint_pages: int = DEFAULT_CHECKPOINT_PAGES,
                 give_up_after: float | None = None, engine_id: str | None = None) -> None:
        """`db_path`: traces.db, or a Postgres store, which the process leaves after `give_up_after` s of failing
        commits (pg/writer_target.py). `keep_fds`: file descriptors the writer process inherits (the engine lock, so
        it stays held while the writer process still runs). `max_queue`, `max_bytes`, `max_age`: the back-pressure
        bounds on what is emitted but not committed (items, bytes, seconds). `checkpoint_pages`: the WAL size at
        which the writer process's checkpointer thread copies it into traces.db (engine/store/checkpointer.py).
        `engine_id`: on Postgres, whose current-state rows these are (pg/batch_writer.py)."""
        if max_queue < 2:
            raise ValueError("max_queue must be at least 2")
        self.db_path = db_path
        self._max_queue = max_queue
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._low_water = max_queue // 2
        self._hard_limit = max_queue * 2
        self._wake_at = max(1, min(max_batch // 2, max_queue // 4))

        self._queue: deque[tuple[Any, ...]] = deque()
        self._space = threading.Condition()
        self._closed = False
        # Items and bytes in flight = shipped - acknowledged (see writer_flight.py for which thread writes what).
        self._flight = InFlight()
        self.unwritten = 0  # set by close(): items that were never committed

        started = start_writer_process(db_path, {
            "redactor": redactor or Redactor(), "flush_interval": flush_interval, "max_batch": max_batch, "wake_at":
            self._wake_at, "busy_timeout": busy_timeout, "retry_initial": retry_initial, "retry_max": retry_max,
            "checkpoint_pages": checkpoint_pages, "give_up_after": give_up_after, "engine_id": engine_id}, keep_fds)
        self._process = started.process
        self._to_writer = started.to_writer
        self._from_writer = started.from_writer
        self._acks = Acknowledgements(db_path, started.last_seq, self._flight, self._space)
        self._ship = Shipper(self._queue, self._to_writer, self._flight, self._acks, self._space, max_queue,
                             max_bytes)
        self._wake = self._ship.wake

        self._thread = threading.Thread(target=self._acks.read, args=(self._from_writer, self._process),
                                        name="flightdeck-trace-writer", daemon=True)
        self._shipper = threading.Thread(target=self._ship.run, name="flightdeck-trace-shipper", daemon=True)
        self._thread.start()
        self._shipper.start()

    # -- emit API: the engine's hot path. Append and compare, nothing else. ------------------------------------

    def run_started(self, run_id: str, hierarchy: str, hierarchy_hash: str | None, engine_id: str | None,
                    engine_version: str | None, input: Any, seed: int | None, tenant: str | None,
                    started: float, attrs: dict[str, Any] | None = None) -> None:
        q = self._queue
        q.append((RUN_STARTED_ITEM, run_id, hierarchy, hierarchy_hash, engine_id, engine_version, input, seed, tenant,
                  started, attrs))
        if len(q) >= self._wake_at:
            self._queue_large()

    def run_progress(self, run_id: str, tokens_in: int, tokens_out: int, cost_usd: float, model_calls: int,
                     tool_calls: int, agents_active: int) -> None:
        q = self._queue
        q.append((RUN_PROGRESS_ITEM, run_id, tokens_in, tokens_out, cost_usd, model_calls, tool_calls, agents_active))
        if len(q) >= self._wake_at:
            self._queue_large()

    def state(self, table: str, key: tuple[Any, ...], row: tuple[Any, ...]) -> None:
        """Upsert a current-state row (`breakers` or `budgets`); `row` holds every column, `data` already JSON."""
        q = self._queue
        q.append((STATE_ITEM, table, key, row))
        if len(q) >= self._wake_at:
            self._queue_large()

    def run_ended(self, run_id: str, status: str, ended: float, output: Any = None, error: str | None = None) -> None:
        q = self._queue
        q.append((RUN_ENDED_ITEM, run_id, status, ended, output, error))
        if len(q) >= self._wake_at:
            self._queue_large()

    def span_started(self, span_id: str, run_id: str, parent_id: str | None, kind: str, agent: str | None,
                     name: str, started: float, attrs: dict[str, Any] | None = None) -> None:
        q = self._queue
        q.append((SPAN_STARTED_ITEM, span_id, run_id, parent_id, kind, agent, name, started, attrs))
        if len(q) >= self._wake_at:
            self._queue_large()

    def span_ended(self, span_id: str, run_id: str, status: str, ended: float, tokens_in: int = 0,
                   tokens_out: int = 0, cost_usd: float = 0.0, model: str | None = None,
                   attrs: dict[str, Any] | None = None) -> None:
        q = self._queue
        q.append((SPAN_ENDED_ITEM, span_id, run_id, status, ended, tokens_in, tokens_out, cost_usd, model, attrs))
        if len(q) >= self._wake_at:
            self._queue_large()

    def event(self, run_id: str | None, span_id: str | None, kind: str, agent: str | None = None,
              name: str | None = None, data: dict[str, Any] | None = None, ts: float | None = None) -> None:
        q = self._queue
        q.append((EVENT_ITEM, run_id, span_id, kind, agent, name, data, time.time() if ts is None else ts))
        if len(q) >= self._wake_at:
            self._queue_large()

    def _queue_large(self) -> None:
        self._wake.set()
        flight = self._flight
        if (len(self._queue) + flight.shipped - flight.acked >= self._hard_limit
                and threading.current_thread() not in (self._thread, self._shipper)):
            # Last resort when an emitter ignores over_capacity(): block this thread instead of growing without
            # bound or dropping. Cooperative emitters never get here.
            self._wait_below(self._max_queue, None)

    @property
    def pid(self) -> int:
        """The trace-writer process's id (what an operator sees as the engine's child)."""
        return self._process.pid

    # -- back-pressure -----------------------------------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        """Items not yet committed: queued here plus in flight to the writer process."""
        flight = self._flight
        return len(self._queue) + flight.shipped - flight.acked

    @property
    def max_queue(self) -> int:
        return self._max_queue

    def over_capacity(self) -> bool:
        """Over any bound: items, bytes, or age of the oldest uncommitted frame (called once per agent step)."""
        flight = self._flight
        if len(self._queue) + flight.shipped - flight.acked >= self._max_queue:
            return True
        if flight.shipped == flight.acked:
            return False
        return flight.bytes_in_flight >= self._max_bytes or flight.oldest_age() >= self._max_age

    @property
    def backlog(self) -> Backlog:
        flight = self._flight
        in_flight = flight.shipped - flight.acked
        queued = len(self._queue)
        per_item = flight.bytes_in_flight / in_flight if in_flight > 0 else 0.0
        return Backlog(items=queued + in_flight, bytes=int(flight.bytes_in_flight + queued * per_item),
                       age_s=flight.oldest_age() if in_flight > 0 else 0.0)

    def _under_low_water(self) -> bool:
        # Back under half of every bound (the age bound clears as soon as the oldest frame is committed).
        if self.queue_length >= self._low_water:
            return False
        flight = self._flight
        return flight.bytes_in_flight < self._max_bytes // 2 and (
            flight.shipped == flight.acked or flight.oldest_age() < self._max_age)

    async def wait_for_space(self) -> None:
        """Return at once under the bounds; otherwise yield to the event loop until the writer has committed enough
        to be below half of them. Raises StoreError if the writer has stopped (it would never drain)."""
        if not self.over_capacity():
            return
        import anyio  # only on the slow path: keeps `import engine.store.writer` cheap

        delay = 0.001
        while not self._under_low_water():
            self._check_running()
            self._wake.set()
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.01)

    def wait_for_space_blocking(self, timeout: float | None = None) -> bool:
        """wait_for_space for plain threads (the item bound only). Returns False on timeout."""
        if self.queue_length < self._max_queue:
            return True
        return self._wait_below(self._low_water, timeout)

    def _wait_below(self, target: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._space:
            while self.queue_length >= target:
                if self._acks.gone is not None:
                    return False
                self._wake.set()
                remaining = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._space.wait(remaining)
        return True

    def _check_running(self) -> None:
        gone = self._acks.gone
        if gone is not None:
            raise StoreError(f"the trace writer for {self.db_path} has stopped: {gone}")

    # -- commits, errors, callbacks ----------------------------------------------------------------------------

    def on_commit(self, callback: CommitCallback) -> None:
        """Call `callback(events)` after each commit, on the writer's acknowledgement thread, with every committed
        event as (seq, kind, run_id, span_id, agent, name, data). `data` is the payload as emitted (not redacted,
        not cut; a copy that crossed to the writer process and back): this is for in-process consumers such as
        runbook detection. Keep the callback short; it delays the next acknowledgement. Exceptions are logged and
        otherwise ignored."""
        if not self._acks.callbacks:
            self._ship.send(("events", True))
        self._acks.callbacks.append(callback)

    def on_commit_seq(self, callback: Callable[[int], None]) -> None:
        """Call `callback(last_seq)` after each commit that added events, on the acknowledgement thread, WITHOUT
        having the committed events shipped back: for consumers that read the committed rows from traces.db
        themselves (the OpenTelemetry exporter's process). Keep it short; exceptions are logged and ignored."""
        self._acks.seq_callbacks.append(callback)

    def on_health(self, callback: HealthCallback) -> None:
        """Call `callback(WriterHealth)` whenever commits start or stop failing, and when the writer process ends
        (on the acknowledgement thread, at once: keep it short and thread-safe). A writer with health callbacks
        leaves reporting these to them (no log line of its own), so an operator sees one message, not two."""
        self._acks.health_callbacks.append(callback)

    async def commit_now(self, timeout: float | None = 10) -> None:
        """Await (without blocking the event loop) the commit of everything emitted before this call: the
        write-ahead for side effects. Raises StoreError if the writer stops (checked a few times a second) or on
        timeout (None: no timeout; cancelling the awaiting task is then the way out)."""
        import asyncio

        self._check_running()
        loop = asyncio.get_running_loop()
        waiter = LoopWaiter(loop)
        self._ship.flushes += 1
        self._queue.append((FLUSH, waiter))
        self._wake.set()
        future = waiter.future
        deadline = None if timeout is None else loop.time() + timeout
        while not future.done():
            self._check_running()
            wait = 0.25 if deadline is None else min(0.25, deadline - loop.time())
            if wait <= 0:
                problem = self.error
                raise StoreError(f"trace writer for {self.db_path} did not commit within {timeout:g}s"
                                 + (f": {problem}" if problem else ""))
            await asyncio.wait((future,), timeout=wait)
        self._check_running_after(waiter)

    @property
    def stats(self) -> dict[str, float]:
        """Counters for benchmarks and diagnostics: committed batches, items and events, and the writer process's
        CPU seconds spent building rows (JSON, redaction) and in SQLite."""
        return dict(self._acks.stats)

    @property
    def error(self) -> StoreError | None:
        """The current problem: a failing commit being retried, else the last loss of rows, else the writer
        process having stopped. None when healthy."""
        return self._acks.error

    @property
    def last_committed_seq(self) -> int:
        """The last event sequence number committed (as acknowledged)."""
        return self._acks.last_committed_seq

    @property
    def last_commit_time(self) -> float:
        """time.time() when the last commit was acknowledged (0.0 before the first)."""
        return self._acks.last_commit_time

    @property
    def redaction_timeouts(self) -> int:
        """Strings the writer process stored as TIMED_OUT (as last reported)."""
        return self._acks.redaction_timeouts

    def flush(self, timeout: float = 10) -> None:
        """Block until everything emitted before this call is committed. Raises StoreError on timeout (naming the
        error that keeps the writer from committing) and, once, if rows could not be written since the last
        flush/close."""
        if self._closed:
            if self._queue:
                raise StoreError(f"the trace writer for {self.db_path} is closed; "
                                 f"{len(self._queue)} queued items were not written")
            self._acks.raise_lost()
            return
        self._check_running()
        done = threading.Event()
        self._ship.flushes += 1
        self._queue.append((FLUSH, done))
        self._wake.set()
        deadline = time.monotonic() + timeout
        while not done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
            self._check_running()
            if time.monotonic() >= deadline:
                problem = self.error
                raise StoreError(f"trace writer for {self.db_path} did not commit within {timeout:g}s"
                                 + (f": {problem}" if problem else ""))
        self._check_running_after(done)
        self._acks.raise_lost()

    def _check_running_after(self, done: threading.Event | LoopWaiter) -> None:
        # Waiters are also released when the writer process ends; then their items were not all committed.
        if self._acks.gone is not None and getattr(done, "frame", 0) > self._flight.acked_frame:
            self._check_running()

    def close(self, timeout: float = 10) -> None:
        """Flush, then stop the writer process. Idempotent. Raises StoreError if data could not be written (after
        giving up on it: the process is shutting down)."""
        if self._closed:
            return
        failure: StoreError | None = None
        try:
            self.flush(timeout)
        except StoreError as exc:
            failure = exc
        self._acks.stopping = True  # the shipper sends what is left, then tells the writer to stop (giving up at once
        self._wake.set()       # on a commit that keeps failing) and closes the pipe
        self._shipper.join(timeout=max(1.0, timeout))
        try:
            self._process.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            log.error("trace writer process for %s did not stop; killing it", self.db_path)
            self._process.kill()
            self._process.wait()
        self._thread.join(timeout=max(1.0, timeout))
        self._from_writer.close()
        self._closed = True
        unwritten = self.unwritten = self.queue_length
        if failure is not None:
            raise StoreError(f"{failure}; {unwritten} queued trace items were not written") from failure
        self._acks.raise_lost()

    def set_page_limit(self, pages: int | None) -> None:
        """Cap traces.db at `pages` pages (SQLite's max_page_count on the writer's connection; None lifts the cap).
        A quota, and the way tests make a real file run out of space: commits then fail with SQLITE_FULL."""
        self._ship.send(("max_pages", pages))

