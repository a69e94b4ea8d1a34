"""The hand-off between the trace-writer process's builder and committer threads (engine/store/writer_process.py).

At most one built batch waits (`pending`) while another commits: the builder builds the next batch while SQLite
commits the last one, and then waits for the committer to take it before draining its queue again, so batches grow
with load instead of the queue of built batches. One exception: an URGENT item (a flush or the write-ahead marker of
a side-effecting tool call, which a caller is waiting for) does not wait for that. The builder drains and builds at
once and its batch is merged into the pending one, which the committer takes next: the marker is committed with the
first transaction that has not started yet, instead of in a transaction queued behind it.

Merging keeps the guarantees: batches are built in queue order and sequence numbers are assigned at build time, so
the merged batch's rows and events follow the pending batch's, gap-free and in order, in one transaction.
"""

from __future__ import annotations

import threading

from engine.store.batch import Batch


def merge_into(pending: Batch, later: Batch) -> None:
    """Append `later` (built after `pending`) to `pending`: one transaction, statements in build order."""
    pending.statements.extend(later.statements)
    pending.frames.extend(later.frames)
    pending.item_count += later.item_count
    if later.last_seq:
        if not pending.last_seq:
            pending.first_seq = later.first_seq
        pending.last_seq = later.last_seq
    if later.events:
        pending.events = [*(pending.events or ()), *later.events]


class BatchHandoff:
    """Builder -> committer, one pending batch at most (merged into while it waits, for urgent items)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.pending: Batch | None = None
        self._pending_count = 0  # queue items the pending batch carries (for the committer's statistics)
        self._urgent = False
        self._closed = False     # the builder is done: the committer stops once nothing is pending
        self._abandoned = False  # the committer gave up: the builder must not wait for it
        self.merges = 0          # batches merged into a pending one (diagnostics, tests)

    # -- the frame reader -----------------------------------------------------------------------------------------

    def urgent(self) -> None:
        """An urgent item was queued: a builder waiting for the pending batch to be taken builds now instead."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()

    # -- the builder ----------------------------------------------------------------------------------------------

    def clear_urgent(self) -> None:
        """Called before the builder drains its queue: an urgent item queued after this wakes the next wait."""
        self._urgent = False

    def put(self, batch: Batch, count: int) -> None:
        """Hand `batch` over; merged into the pending batch if the committer has not taken that one yet."""
        with self._cond:
            if self._abandoned:
                return
            if self.pending is None:
                self.pending, self._pending_count = batch, count
            else:
                merge_into(self.pending, batch)
                self._pending_count += count
                self.merges += 1
            self._cond.notify_all()

    def wait_for_room(self) -> None:
        """Block while a batch is pending, until the committer takes it, an urgent item arrives, or the committer
        gave up."""
        with self._cond:
            while self.pending is not None and not self._urgent and not self._abandoned:
                self._cond.wait()

    def close(self) -> None:
        """The builder is done: the committer commits what is pending, then stops."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the committer --------------------------------------------------------------------------------------------

    def take(self) -> tuple[Batch, int] | None:
        """The next batch to commit and its item count; None once the builder is done and nothing is pending."""
        with self._cond:
            while self.pending is None:
                if self._closed or self._abandoned:
                    return None
                self._cond.wait()
            batch, count = self.pending, self._pending_count
            self.pending, self._pending_count = None, 0
            self._cond.notify_all()
            return batch, count

    def abandon(self) -> None:
        """The committer gave up (at shutdown): release a waiting builder; later batches are dropped."""
        with self._cond:
            self._abandoned = True
            self.pending = None
            self._cond.notify_all()
