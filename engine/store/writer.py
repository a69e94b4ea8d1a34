"""TraceWriter: the engine's handle on the single writer of traces.db.

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

import fcntl
import logging
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.errors import StoreDamaged, StoreError
from engine.store.batch import (
    EVENT_ITEM,
    FLUSH,
    RUN_ENDED_ITEM,
    RUN_PROGRESS_ITEM,
    RUN_STARTED_ITEM,
    SPAN_ENDED_ITEM,
    SPAN_STARTED_ITEM,
    STATE_ITEM,
    CommittedEvent,
)
from engine.store.checkpointer import DEFAULT_THRESHOLD_PAGES as DEFAULT_CHECKPOINT_PAGES
from engine.store.frames import encode, read_frame, write_frame
from engine.store.redact import Redactor
from engine.store.writer_types import Backlog, LoopWaiter, WriterHealth

log = logging.getLogger(__name__)

CommitCallback = Callable[[list[CommittedEvent]], None]
HealthCallback = Callable[["WriterHealth"], None]


# Commit cadence when idle-to-busy (a saturated writer commits back to back anyway). Half the required 50 ms so
# that emit-to-commit p99 stays well under 100 ms: an event waits up to one interval plus one batch's work.
DEFAULT_FLUSH_INTERVAL = 0.025
# How often the shipper sends what accumulated. Shipping is cheap (one pickle, one write); the writer process
# decides when to commit, so this only bounds how late an item joins the writer's queue.
SHIP_INTERVAL = 0.005
MAX_FRAME_ITEMS = 20_000
# What may be emitted but not committed, besides the item count: a few large payloads can weigh more than 100,000
# small items, and on a failing disk items do not pile up fast but wait for ever. Past either bound the engine
# starts no new step until the writer catches up.
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_AGE_S = 5.0
START_TIMEOUT_S = 30.0
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1 << 20
_ENGINE_ROOT = str(Path(__file__).resolve().parents[2])
# -I: isolated from the user's environment (PYTHONPATH, user site, the current directory); site-packages stay, for
# pydantic-core's JSON serialiser (engine/store/redact.py).
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from engine.store.writer_process import main; main()"


class TraceWriter:
    def __init__(self, db_path: Path, *, redactor: Redactor | None = None,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL, max_queue: int = 100_000, max_batch: int = 10_000,
                 busy_timeout: float = 5.0, retry_initial: float = 0.05, retry_max: float = 1.0,
                 keep_fds: Iterable[int] = (), max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age: float = DEFAULT_MAX_AGE_S, checkpoint_pages: int = DEFAULT_CHECKPOINT_PAGES) -> None:
        """`keep_fds`: file descriptors the writer process inherits (the engine lock, so it stays held while the
        writer process still runs). `max_queue`, `max_bytes`, `max_age`: the back-pressure bounds on what is
        emitted but not committed (items, bytes, seconds). `checkpoint_pages`: the WAL size at which the writer
        process's checkpointer thread copies it into traces.db (engine/store/checkpointer.py)."""
        if max_queue < 2:
            raise ValueError("max_queue must be at least 2")
        self.db_path = db_path
        self._max_queue = max_queue
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._health_callbacks: list[HealthCallback] = []
        self._low_water = max_queue // 2
        self._hard_limit = max_queue * 2
        self._wake_at = max(1, min(max_batch // 2, max_queue // 4))

        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._space = threading.Condition()
        self._callbacks: list[CommitCallback] = []
        self._seq_callbacks: list[Callable[[int], None]] = []
        self._state_lock = threading.Lock()
        self._transient: StoreError | None = None
        self._lost: StoreError | None = None
        self._lost_unreported = False
        self._gone: StoreError | None = None  # the writer process ended (or could not be reached)
        self._stopping = False
        self._closed = False
        self._stats: dict[str, float] = {"batches": 0, "items": 0, "events": 0, "build_cpu_s": 0.0,
                                         "commit_cpu_s": 0.0}
        # Items in flight = shipped - acknowledged; each counter has one writing thread, so no lock is needed.
        self._shipped = 0
        self._acked = 0
        self._frame_sizes: dict[int, int] = {}
        # frame -> (bytes, time shipped): the byte and age bounds. Written by the shipper, popped by the ack thread.
        self._frame_meta: dict[int, tuple[int, float]] = {}
        # Bytes shipped / acknowledged: like _shipped and _acked, each has one writing thread (no lock needed).
        self._bytes_shipped = 0
        self._bytes_acked = 0
        self._frame_waiters: dict[int, list[threading.Event]] = {}
        self._next_frame = 1
        self._acked_frame = 0
        self._flushes = 0  # flush markers put on the queue (the shipper filters them out only when there are any)
        self._control: deque[tuple[Any, ...]] = deque()  # messages for the writer process, sent by the shipper
        self.last_committed_seq = 0
        self.unwritten = 0  # set by close(): items that were never committed
        self.last_commit_time = 0.0  # time.time() when the last commit was acknowledged
        self.redaction_timeouts = 0  # strings the writer process stored as TIMED_OUT (as last reported)

        self._process = subprocess.Popen([sys.executable, "-I", "-c", _BOOT, _ENGINE_ROOT],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         pass_fds=tuple(keep_fds))
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_writer = self._process.stdin
        self._from_writer = self._process.stdout
        try:
            try:
                fcntl.fcntl(self._to_writer.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:  # a smaller pipe only means the shipper blocks sooner
                pass
            write_frame(self._to_writer.fileno(), encode(("init", {
                "db_path": str(db_path), "redactor": redactor or Redactor(), "flush_interval": flush_interval,
                "max_batch": max_batch, "wake_at": self._wake_at, "busy_timeout": busy_timeout,
                "retry_initial": retry_initial, "retry_max": retry_max, "checkpoint_pages": checkpoint_pages}),
                trusted=True))
            self.last_committed_seq = self._await_ready()
        except BaseException:
            self._process.kill()
            self._process.wait()
            self._to_writer.close()
            self._from_writer.close()
            raise

        self._thread = threading.Thread(target=self._read_acks, name="flightdeck-trace-writer", daemon=True)
        self._shipper = threading.Thread(target=self._ship, name="flightdeck-trace-shipper", daemon=True)
        self._thread.start()
        self._shipper.start()

    def _await_ready(self) -> int:
        ready, _, _ = select.select([self._from_writer], [], [], START_TIMEOUT_S)
        message = read_frame(self._from_writer) if ready else None
        if message is not None and message[0] == "ready":
            return int(message[1])
        if message is not None and message[0] == "failed":
            raise (StoreDamaged if message[1] else StoreError)(message[2])
        detail = message[1].strip().splitlines()[-1] if message is not None and message[0] == "crashed" else (
            "no answer" if not ready else f"exit code {self._process.poll()}")
        raise StoreError(f"the trace writer process for {self.db_path} did not start: {detail}")

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
        if (len(self._queue) + self._shipped - self._acked >= self._hard_limit
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
        return len(self._queue) + self._shipped - self._acked

    @property
    def max_queue(self) -> int:
        return self._max_queue

    def over_capacity(self) -> bool:
        """Over any bound: items, bytes, or age of the oldest uncommitted frame (called once per agent step)."""
        if len(self._queue) + self._shipped - self._acked >= self._max_queue:
            return True
        if self._shipped == self._acked:
            return False
        return self._bytes_in_flight >= self._max_bytes or self._oldest_age() >= self._max_age

    @property
    def _bytes_in_flight(self) -> int:
        return self._bytes_shipped - self._bytes_acked

    def _oldest_age(self) -> float:
        meta = self._frame_meta.get(self._acked_frame + 1)
        return 0.0 if meta is None else time.monotonic() - meta[1]

    @property
    def backlog(self) -> Backlog:
        in_flight = self._shipped - self._acked
        queued = len(self._queue)
        per_item = self._bytes_in_flight / in_flight if in_flight > 0 else 0.0
        return Backlog(items=queued + in_flight, bytes=int(self._bytes_in_flight + queued * per_item),
                       age_s=self._oldest_age() if in_flight > 0 else 0.0)

    def _under_low_water(self) -> bool:
        # Back under half of every bound (the age bound clears as soon as the oldest frame is committed).
        if self.queue_length >= self._low_water:
            return False
        return self._bytes_in_flight < self._max_bytes // 2 and (
            self._shipped == self._acked or self._oldest_age() < self._max_age)

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
                if self._gone is not None:
                    return False
                self._wake.set()
                remaining = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._space.wait(remaining)
        return True

    def _check_running(self) -> None:
        if self._gone is not None:
            raise StoreError(f"the trace writer for {self.db_path} has stopped: {self._gone}")

    # -- commits, errors, callbacks ----------------------------------------------------------------------------

    def on_commit(self, callback: CommitCallback) -> None:
        """Call `callback(events)` after each commit, on the writer's acknowledgement thread, with every committed
        event as (seq, kind, run_id, span_id, agent, name, data). `data` is the payload as emitted (not redacted,
        not cut; a copy that crossed to the writer process and back): this is for in-process consumers such as
        runbook detection. Keep the callback short; it delays the next acknowledgement. Exceptions are logged and
        otherwise ignored."""
        if not self._callbacks:
            self._control.append(("events", True))
            self._wake.set()
        self._callbacks.append(callback)

    def on_commit_seq(self, callback: Callable[[int], None]) -> None:
        """Call `callback(last_seq)` after each commit that added events, on the acknowledgement thread, WITHOUT
        having the committed events shipped back: for consumers that read the committed rows from traces.db
        themselves (the OpenTelemetry exporter's process). Keep it short; exceptions are logged and ignored."""
        self._seq_callbacks.append(callback)

    def on_health(self, callback: HealthCallback) -> None:
        """Call `callback(WriterHealth)` whenever commits start or stop failing, and when the writer process ends
        (on the acknowledgement thread, at once: keep it short and thread-safe). A writer with health callbacks
        leaves reporting these to them (no log line of its own), so an operator sees one message, not two."""
        self._health_callbacks.append(callback)

    def _report(self, health: WriterHealth) -> None:
        for callback in list(self._health_callbacks):
            try:
                callback(health)
            except Exception:
                log.exception("trace writer health callback failed")

    async def commit_now(self, timeout: float | None = 10) -> None:
        """Await (without blocking the event loop) the commit of everything emitted before this call: the
        write-ahead for side effects. Raises StoreError if the writer stops (checked a few times a second) or on
        timeout (None: no timeout; cancelling the awaiting task is then the way out)."""
        import asyncio

        self._check_running()
        loop = asyncio.get_running_loop()
        waiter = LoopWaiter(loop)
        self._flushes += 1
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
        return dict(self._stats)

    @property
    def error(self) -> StoreError | None:
        """The current problem: a failing commit being retried, else the last loss of rows, else the writer
        process having stopped. None when healthy."""
        with self._state_lock:
            return self._transient or self._lost or self._gone

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
        self._check_running()
        done = threading.Event()
        self._flushes += 1
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
        self._raise_lost()

    def _check_running_after(self, done: threading.Event | LoopWaiter) -> None:
        # Waiters are also released when the writer process ends; then their items were not all committed.
        if self._gone is not None and getattr(done, "frame", 0) > self._acked_frame:
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
        self._stopping = True  # the shipper sends what is left, then tells the writer to stop (giving up at once
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
        unwritten = self.unwritten = len(self._queue) + self._shipped - self._acked
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
        if not (self._stopping and self._health_callbacks):  # else close() raises it to whoever reports it
            log.error("%s", message)
        with self._state_lock:
            self._lost = StoreError(message)
            self._lost_unreported = True

    # -- the shipper thread ------------------------------------------------------------------------------------

    def _ship(self) -> None:
        queue, fd = self._queue, self._to_writer.fileno()
        try:
            while True:
                if not self._stopping:
                    self._wake.wait(SHIP_INTERVAL)
                    self._wake.clear()
                while self._control:
                    write_frame(fd, encode(self._control.popleft()))
                room = self._max_queue - (self._shipped - self._acked)
                if self._bytes_in_flight >= self._max_bytes:
                    room = 0
                if room <= 0 and not self._stopping:
                    # The writer process is behind (or cannot commit): keep items here, where emitters see them.
                    with self._space:
                        self._space.wait(0.05)
                    if self._gone is not None:
                        return
                    continue
                count = min(len(queue), MAX_FRAME_ITEMS, max(room, MAX_FRAME_ITEMS if self._stopping else 1))
                if count:
                    self._ship_frame(fd, count)
                if self._stopping and not queue:
                    write_frame(fd, encode(("close", 0.0)))
                    return
        except OSError as exc:  # the writer process is gone; the acknowledgement thread reports why
            log.debug("trace shipper stopped: %s", exc)
        finally:
            self._to_writer.close()

    def _ship_frame(self, fd: int, count: int) -> None:
        popleft = self._queue.popleft
        items = [popleft() for _ in range(count)]
        waiters: list[threading.Event] = []
        if self._flushes:
            waiters = [item[1] for item in items if item[0] == FLUSH]
            if waiters:
                self._flushes -= len(waiters)
                items = [item for item in items if item[0] != FLUSH]
        frame = self._next_frame
        self._next_frame += 1
        for waiter in waiters:
            waiter.frame = frame  # type: ignore[attr-defined]
        self._frame_sizes[frame] = len(items)
        if waiters:
            self._frame_waiters[frame] = waiters
        payload = _encode_items(frame, items, bool(waiters))
        self._frame_meta[frame] = (len(payload), time.monotonic())
        self._bytes_shipped += len(payload)
        self._shipped += len(items)
        write_frame(fd, payload)

    # -- the acknowledgement thread ----------------------------------------------------------------------------

    def _read_acks(self) -> None:
        stream = self._from_writer
        crash: str | None = None
        try:
            while True:
                message = read_frame(stream)
                if message is None:
                    break
                tag = message[0]
                if tag == "ack":
                    self._acknowledge(*message[1:])
                elif tag == "transient":
                    self._set_transient(message[1])
                elif tag == "lost":
                    self._record_lost(message[1])
                elif tag == "redaction_timed_out":
                    self._redaction_timed_out(int(message[1]))
                elif tag == "crashed":
                    crash = message[1].strip().splitlines()[-1]
                    log.error("trace writer process for %s crashed:\n%s", self.db_path, message[1])
        except (EOFError, OSError, ValueError) as exc:
            crash = f"lost contact with it ({exc})"
        code = self._process.wait()
        unexpected = not (self._stopping and code == 0 and crash is None)
        if unexpected:
            why = crash or (f"it was killed by signal {-code}" if code < 0 else f"it exited with code {code}")
            self._gone = StoreError(f"the trace writer process for {self.db_path} stopped: {why}")
            if not self._health_callbacks:
                log.error("%s", self._gone)
        elif self._gone is None:
            self._gone = StoreError(f"the trace writer for {self.db_path} is closed")
        for waiters in list(self._frame_waiters.values()):
            for waiter in waiters:
                waiter.set()
        self._frame_waiters.clear()
        with self._space:
            self._space.notify_all()
        if unexpected:
            self._report(WriterHealth("gone", str(self._gone)))

    def _acknowledge(self, frame: int | None, last_seq: int, stats: dict[str, float],
                     events: list[CommittedEvent] | None) -> None:
        if frame is not None:
            acked = 0
            for number in range(self._acked_frame + 1, frame + 1):
                acked += self._frame_sizes.pop(number, 0)
                meta = self._frame_meta.pop(number, None)
                if meta is not None:
                    self._bytes_acked += meta[0]
                for waiter in self._frame_waiters.pop(number, ()):
                    waiter.set()
            self._acked_frame = frame
            self._acked += acked
        if last_seq > self.last_committed_seq:
            self.last_committed_seq = last_seq
            for seq_callback in self._seq_callbacks:
                try:
                    seq_callback(last_seq)
                except Exception:
                    log.exception("trace on_commit_seq callback failed")
        self.last_commit_time = time.time()
        self._stats = stats
        with self._space:
            self._space.notify_all()
        if events:
            for callback in list(self._callbacks):
                try:
                    callback(events)
                except Exception:
                    log.exception("trace on_commit callback failed")

    def _redaction_timed_out(self, total: int) -> None:
        """Once per writer: the operator's pattern is costing stored data (the trace has the event with counts)."""
        first = self.redaction_timeouts == 0
        self.redaction_timeouts = total
        if first:
            from engine.store.user_patterns import TIMED_OUT  # not at import: it loads the regex package

            log.warning("redaction pattern timed out: %d string(s) stored in %s as %r instead of their text; "
                        "simplify [redaction].patterns in config.toml (event redaction.timed_out counts them)",
                        total, self.db_path, TIMED_OUT)

    def _set_transient(self, message: str | None) -> None:
        with self._state_lock:
            was = self._transient
            self._transient = None if message is None else StoreError(message)
        if self._health_callbacks:
            if (message is None) != (was is None) or (message is not None and message != str(was)):
                self._report(WriterHealth("ok") if message is None else WriterHealth("degraded", message))
        elif message is None:
            if was is not None:
                log.warning("trace writer recovered; commits to %s resumed", self.db_path)
        elif was is None:
            log.error("%s (retrying)", message)

    def set_page_limit(self, pages: int | None) -> None:
        """Cap traces.db at `pages` pages (SQLite's max_page_count on the writer's connection; None lifts the cap).
        A quota, and the way tests make a real file run out of space: commits then fail with SQLITE_FULL."""
        self._control.append(("max_pages", pages))
        self._wake.set()


def _encode_items(frame: int, items: list[tuple[Any, ...]], urgent: bool) -> bytes:
    try:
        return encode(("items", frame, items, urgent))
    except Exception:  # one payload that cannot cross (too deeply nested, ...) must not lose its neighbours
        return encode(("items", frame, [_crossable(item) for item in items], urgent))


def _crossable(item: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        encode(item)
        return item
    except Exception as exc:
        marker = {"_unserialisable": f"{type(exc).__name__}: {exc}"[:200]}
        return tuple(value if value is None or isinstance(value, (str, int, float)) else marker for value in item)
