"""The trace-writer process: the only writer of traces.db, a child the engine starts and owns (engine/store/writer.py).
Or, for an engine whose traces go to a Postgres store, its one connection writing there (engine/store/writer_target.py
says what differs).

Why a process and not a thread: building rows (JSON, redaction) and SQLite's Python-side work cost about as much CPU
as the engine's own work per model call, and on a thread they hold the engine's GIL while they do it. Here they run
on the machine's other core. The engine still holds the store lock; this process inherits the lock's file, so the
lock stays held until the last of the two exits (a new engine can never open the store while this one still
commits a dead engine's last batch).

Protocol (engine/store/frames.py frames, stdin from the engine, stdout back to it):
    engine -> writer   ("init", options) once; then ("items", frame_no, items, urgent), ("events", bool),
                       ("close", give_up_after_s). End of stdin (the engine died) is a close with a short give-up.
    writer -> engine   ("ready", last_seq) or ("failed", damaged, message) once; then ("ack", frame_no, last_seq,
                       stats, events | None) after each commit, ("transient", message | None) when commits start or
                       stop failing, ("lost", message) when rows could not be written, ("gave_up", message)
                       before it ends because commits kept failing past the target's window (Postgres only), and
                       ("crashed", traceback).
A frame is acknowledged once every item in it is committed (or was reported lost): the engine's flush() waits for
the acknowledgement of the frame that carried its marker.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import StoreDamaged, StoreError
from engine.store.batch import EVENT_ITEM, FRAME_END, Batch, BatchBuilder
from engine.store.batch_handoff import BatchHandoff
from engine.store.checkpointer import DEFAULT_THRESHOLD_PAGES, Checkpointer, set_autocheckpoint
from engine.store.files import connect, translate_sqlite_error
from engine.store.frames import encode, read_frame, write_frame
from engine.store.writer_target import CommitTarget, SqliteTarget

log = logging.getLogger(__name__)

_CACHE_KIB = 64 * 1024
# When the engine vanished (SIGKILL) the writer still commits what it received, but gives up on a failing commit
# after this long rather than linger holding the store lock.
ORPHAN_GIVE_UP_S = 2.0
# A redaction pattern that keeps timing out is recorded (event redaction.timed_out) at most this often.
REDACTION_REPORT_EVERY_S = 10.0
REDACTION_TIMED_OUT = "redaction.timed_out"


class CommitLoop:
    """Drain the queue at least every flush_interval (sooner when it is large or a flush is waiting), build one
    batch, commit it in one transaction, acknowledge. Commits that can pass (disk full, locked) are retried with
    back-off and reported; rows that can never be written are skipped one by one and reported. An urgent item (a
    flush, a write-ahead marker) joins the batch waiting to be committed (engine/store/batch_handoff.py). WAL
    checkpoints run on their own thread (`checkpointer`, engine/store/checkpointer.py), not in a commit."""

    def __init__(self, target: CommitTarget, builder: BatchBuilder, *, flush_interval: float,
                 max_batch: int, wake_at: int, retry_initial: float, retry_max: float, out_fd: int) -> None:
        self.target = target
        self.db_path = target.name
        self.builder = builder
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.wake_at = wake_at
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.out_fd = out_fd
        self.handoff = BatchHandoff()
        self.queue: deque[tuple[Any, ...]] = deque()
        self.wake = threading.Event()
        self.want_events = False
        self.stopping = False
        self.give_up_at: float | None = None
        self.transient: str | None = None
        self.committing = True  # False once the committer gave up (at shutdown, or past the target's window)
        self.gave_up: str | None = None  # why the committer gave up while the engine still wanted it
        self._send_lock = threading.Lock()  # the builder and the committer both report
        self.last_committed_seq = target.last_seq
        self._timeouts_reported = 0
        self._timeouts_reported_at = -REDACTION_REPORT_EVERY_S
        self.stats: dict[str, float] = {"batches": 0, "items": 0, "events": 0, "build_cpu_s": 0.0,
                                        "commit_cpu_s": 0.0}

    def send(self, message: Any) -> None:
        payload = encode(message)
        try:
            with self._send_lock:
                write_frame(self.out_fd, payload)
        except OSError:  # the engine is gone: nobody to tell; keep committing what was received
            pass

    def stop(self, give_up_after: float) -> None:
        self.give_up_at = time.monotonic() + give_up_after
        self.stopping = True
        self.wake.set()

    def urgent(self) -> None:
        """An urgent item was queued (the frame reader): build and hand it over now."""
        self.handoff.urgent()
        self.wake.set()

    def run(self) -> None:
        """Build on this thread, commit on another: SQLite releases the GIL while it works, so the next batch is
        built while the last one commits. Sequence numbers are assigned at build time, in order."""
        committer = threading.Thread(target=self._commit_batches, name="committer", daemon=True)
        committer.start()
        try:
            self._build_batches()
        finally:
            self.handoff.close()  # the committer commits what is pending, then stops
            committer.join()

    def _build_batches(self) -> None:
        handoff = self.handoff
        queue_ = self.queue
        interval = self.flush_interval
        next_cycle = time.monotonic() + interval
        behind = False  # the last drain was cut at max_batch: more (maybe a flush marker) is already waiting
        next_seq = self.target.build_from
        while self.committing:
            handoff.wait_for_room()  # a batch waits to be committed: let the queue grow, unless an item is urgent
            if not self.committing:
                return
            timeout = next_cycle - time.monotonic()
            if timeout > 0 and not behind and len(queue_) < self.wake_at and not self.stopping:
                self.wake.wait(timeout)
            # Clear before draining: a frame that arrives after this point wakes the next wait.
            handoff.clear_urgent()
            self.wake.clear()
            next_cycle = time.monotonic() + interval
            count = min(len(queue_), self.max_batch)
            behind = count == self.max_batch
            if count == 0:
                if self.stopping:
                    return
                continue
            popleft = queue_.popleft
            items = [popleft() for _ in range(count)]
            cpu = time.thread_time()
            try:
                batch = self.builder.build(items, next_seq, self.want_events)
            except Exception as exc:  # a bug in batch building must not stop the writer
                log.exception("trace writer could not build a batch")
                self.send(("lost", f"{count} trace items could not be prepared for {self.db_path}: {exc!r}"))
                batch = Batch()  # acknowledges the frames it carried once everything before it is committed
                batch.frames = [item[1] for item in items if item[0] == FRAME_END]
            if batch.last_seq:
                next_seq = batch.last_seq
            if self.builder.redaction_timeouts > self._timeouts_reported:
                self._report_redaction_timeouts()
            self.stats["build_cpu_s"] += time.thread_time() - cpu
            handoff.put(batch, count)

    def _report_redaction_timeouts(self) -> None:
        """Strings were stored as TIMED_OUT: record it in the trace (an event in the next batch) and tell the engine,
        which says so once on its stderr. At most every REDACTION_REPORT_EVERY_S; the count carries over."""
        now = time.monotonic()
        if now - self._timeouts_reported_at < REDACTION_REPORT_EVERY_S:
            return
        total = self.builder.redaction_timeouts
        data = {"strings": total - self._timeouts_reported, "total": total}
        self._timeouts_reported, self._timeouts_reported_at = total, now
        self.queue.appendleft((EVENT_ITEM, None, None, REDACTION_TIMED_OUT, None, None, data, time.time()))
        self.wake.set()
        self.send(("redaction_timed_out", total))

    def _commit_batches(self) -> None:
        stats = self.stats
        handoff = self.handoff
        while True:
            job = handoff.take()
            if job is None:
                return
            batch, count = job
            cpu = time.thread_time()
            if not self._commit_with_retry(batch):
                self.committing = False  # gave up at shutdown: the builder stops too
                handoff.abandon()
                self.wake.set()
                return
            stats["batches"] += 1
            stats["items"] += count
            stats["events"] += batch.last_seq - batch.first_seq + 1 if batch.last_seq else 0
            stats["commit_cpu_s"] += time.thread_time() - cpu
            if batch.last_seq:
                self.last_committed_seq = batch.last_seq
            if batch.frames or batch.last_seq:
                self.send(("ack", batch.frames[-1] if batch.frames else None, self.last_committed_seq, dict(stats),
                           batch.events or None))
            self.target.after_commit()

    def _commit_with_retry(self, batch: Batch) -> bool:
        """Commit, retrying failures that can pass. False when the committer gave up on the batch: at shutdown,
        or when failures lasted longer than the target's give-up window (then `gave_up` says why)."""
        if not batch.statements:  # only frame markers: nothing to write, no write lock to take
            return True
        delay = self.retry_initial
        failing_since: float | None = None
        window = self.target.give_up_after
        while True:
            try:
                _renumber(batch, self.target.commit(batch))
                if self.transient is not None:
                    self.transient = None
                    self.send(("transient", None))
                return True
            except Exception as exc:
                problem = self.target.transient(exc)
                if problem is None:
                    # Cannot pass by retrying (constraint violation, value out of range): write what can be written.
                    self._salvage(batch, exc)
                    return True
                # Disk full, database locked, I/O error, connection lost: may pass. Keep the batch, report, retry.
                if problem != self.transient:
                    self.transient = problem
                    self.send(("transient", problem))
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if self.give_up_at is not None and now >= self.give_up_at:
                self.send(("lost", f"gave up on {batch.item_count + len(self.queue)} trace items at shutdown: "
                                   f"{self.transient}"))
                return False
            if window is not None and now - failing_since >= window:
                self.gave_up = f"gave up after {window:g}s of failing commits: {self.transient}"
                self.send(("lost", f"{batch.item_count + len(self.queue)} trace items were not written to "
                                   f"{self.db_path}: {self.gave_up}"))
                self.send(("gave_up", self.gave_up))
                return False
            time.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    def _salvage(self, batch: Batch, first: Exception) -> None:
        try:
            offset, failures = self.target.salvage(batch)
        except Exception as exc:
            self.send(("lost", f"{batch.item_count} trace items could not be written to {self.db_path}: "
                               f"{first!r}, then {exc!r}"))
            return
        _renumber(batch, offset)
        self.send(("lost", f"{len(failures)} trace rows could not be written to {self.db_path} (first: "
                           f"{failures[0] if failures else repr(first)})"))


def _renumber(batch: Batch, offset: int) -> None:
    """The batch's event numbers as stored: on Postgres the database hands them out at commit (`offset` from the
    builder's); on SQLite they are the builder's (offset 0)."""
    if not offset or not batch.last_seq:
        return
    batch.first_seq += offset
    batch.last_seq += offset
    if batch.events:
        batch.events = [(seq + offset, *rest) for seq, *rest in batch.events]  # type: ignore[misc]


def _read_frames(stream: BinaryIO, loop: CommitLoop) -> None:
    """The frame reader thread: hands every item to the commit loop, in order."""
    queue, wake = loop.queue, loop.wake
    try:
        while True:
            message = read_frame(stream)
            if message is None:
                loop.stop(ORPHAN_GIVE_UP_S)
                return
            tag = message[0]
            if tag == "items":
                _, frame_no, items, urgent = message
                queue.extend(items)
                queue.append((FRAME_END, frame_no))
                if urgent:
                    loop.urgent()
                elif len(queue) >= loop.wake_at:
                    wake.set()
            elif tag == "events":
                loop.want_events = bool(message[1])
            elif tag == "max_pages":
                loop.target.set_page_limit(message[1])
            elif tag == "close":
                loop.stop(float(message[1]))
                return
    except (EOFError, OSError):
        loop.stop(ORPHAN_GIVE_UP_S)


def _open(options: dict[str, Any]) -> CommitTarget:
    postgres = options.get("postgres")
    if postgres is not None:  # the driver is imported only when the store is on Postgres
        from engine.store.pg.writer_target import open_pg_target

        return open_pg_target(postgres, options["redactor"], give_up_after=options.get("give_up_after"),
                              engine_id=options.get("engine_id"))
    db_path = Path(options["db_path"])
    conn = connect(db_path, busy_timeout_s=options["busy_timeout"], check_same_thread=False)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        # Span ids are usually random: a large page cache keeps their index inserts off the disk.
        conn.execute(f"PRAGMA cache_size = {-_CACHE_KIB}")
        set_autocheckpoint(conn, 0)  # the checkpointer thread does it, off the commit path
        conn.execute("SELECT max(seq) FROM events").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise translate_sqlite_error(exc, db_path, "read") from exc
    checkpointer = Checkpointer(db_path, busy_timeout_s=options["busy_timeout"],
                                threshold_pages=options.get("checkpoint_pages", DEFAULT_THRESHOLD_PAGES))
    return SqliteTarget(conn, db_path, checkpointer)


def serve(stdin: BinaryIO, out_fd: int) -> int:
    """The process's life; returns its exit code (1 when the committer gave up while the engine still ran)."""
    init = read_frame(stdin)
    if init is None or init[0] != "init":
        return 0
    options: dict[str, Any] = init[1]
    try:
        target = _open(options)
    except StoreError as exc:
        write_frame(out_fd, encode(("failed", isinstance(exc, StoreDamaged), str(exc))))
        return 0
    loop = CommitLoop(target, BatchBuilder(options["redactor"]),
                      flush_interval=options["flush_interval"], max_batch=options["max_batch"],
                      wake_at=options["wake_at"], retry_initial=options["retry_initial"],
                      retry_max=options["retry_max"], out_fd=out_fd)
    target.start()
    loop.send(("ready", loop.last_committed_seq))
    reader = threading.Thread(target=_read_frames, args=(stdin, loop), name="frame-reader", daemon=True)
    reader.start()
    try:
        loop.run()
    finally:
        target.close()
    return 1 if loop.gave_up is not None else 0


def main() -> None:
    # Ctrl-C in a terminal signals the whole process group: the engine decides when its writer stops (it flushes
    # first), so the writer must not die of the same keypress.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The same for SIGTERM and SIGHUP: systemd (and a terminal hang-up) signals every process of the engine, which
    # then drains its runs for a grace period and records how each ended; this writer must live to store that. It
    # still exits when the engine does (end of its pipe).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Three threads share this process's GIL: the frame reader, the builder and the committer, which releases the
    # GIL inside SQLite and needs it back after each statement. At the default 5 ms switch interval it would wait
    # that long for the builder every time; 0.5 ms keeps the pipeline moving.
    sys.setswitchinterval(0.0005)
    out_fd = sys.stdout.fileno()
    try:
        code = serve(sys.stdin.buffer, out_fd)
    except BaseException:
        try:
            write_frame(out_fd, encode(("crashed", traceback.format_exc())))
        except OSError:
            pass
        os._exit(1)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
