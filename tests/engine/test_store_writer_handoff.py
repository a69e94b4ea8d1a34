"""The trace-writer process's commit path: an urgent item (a write-ahead marker, a flush) joins the batch waiting to
be committed instead of queuing behind it, and WAL checkpoints run on their own thread with the WAL kept bounded.
Real SQLite files; the commit loop in-process where its threads' hand-off is what is tested."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from engine.store.batch import EVENT_ITEM, FRAME_END, BatchBuilder
from engine.store.checkpointer import RESTART_FACTOR
from engine.store.engine_store import open_traces_db
from engine.store.files import connect
from engine.store.frames import read_frame
from engine.store.redact import Redactor
from engine.store.writer_process import CommitLoop
from engine.store.writer_target import SqliteTarget
from tests.store_support import new_writer, raw_conn, rows, wait_until


def _event(kind: str) -> tuple[Any, ...]:
    return (EVENT_ITEM, None, None, kind, None, None, {"what": kind}, time.time())


def test_an_urgent_item_is_merged_into_the_batch_waiting_to_commit(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    open_traces_db(path).close()
    conn = connect(path, busy_timeout_s=0.01, check_same_thread=False)
    read_fd, write_fd = os.pipe()
    loop = CommitLoop(SqliteTarget(conn, path), BatchBuilder(Redactor()), flush_interval=60.0, max_batch=1000, wake_at=1000,
                      retry_initial=0.005, retry_max=0.01, out_fd=write_fd)
    acks: list[int | None] = []

    def read_acks() -> None:
        with os.fdopen(read_fd, "rb") as stream:
            while (message := read_frame(stream)) is not None:
                if message[0] == "ack":
                    acks.append(message[1])

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()
    holder = raw_conn(path)
    holder.execute("BEGIN IMMEDIATE")  # another writer: the first batch's commit waits (retrying) until released
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        loop.queue.extend([_event("first"), (FRAME_END, 1)])
        loop.urgent()
        wait_until(lambda: loop.transient is not None, what="the first batch's commit to be failing on the lock")
        loop.queue.extend([_event("second"), (FRAME_END, 2)])
        loop.wake.set()  # a regular batch: built, then it waits for the committer
        wait_until(lambda: loop.handoff.pending is not None and loop.handoff.pending.frames == [2],
                   what="the second batch to be pending")
        loop.queue.extend([_event("urgent"), (FRAME_END, 3)])
        loop.urgent()
        wait_until(lambda: loop.handoff.pending is not None and loop.handoff.pending.frames == [2, 3],
                   what="the urgent item to join the pending batch")
        holder.execute("ROLLBACK")
        wait_until(lambda: 3 in acks, what="the urgent frame's acknowledgement")
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        loop.stop(1.0)
        runner.join(10)
        conn.close()
        os.close(write_fd)
        reader.join(10)
    assert acks == [1, 3]  # two transactions, not three: the urgent one did not queue behind the second
    assert loop.stats["batches"] == 2 and loop.handoff.merges == 1
    assert [(r["seq"], r["kind"]) for r in rows(path, "SELECT seq, kind FROM events ORDER BY seq")] == [
        (1, "first"), (2, "second"), (3, "urgent")]


def test_checkpoints_keep_the_wal_bounded_and_stop_with_the_writer(tmp_path: Path) -> None:
    pages = 64
    writer = new_writer(tmp_path, checkpoint_pages=pages)
    wal = tmp_path / "traces.db-wal"
    largest = 0
    payload = "x" * 1024
    try:
        for chunk in range(30):
            for i in range(200):
                writer.event(None, None, "bulk", data={"n": chunk * 200 + i, "payload": payload})
            writer.flush()
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
    finally:
        writer.close()
    page_size = rows(tmp_path / "traces.db", "PRAGMA page_size")[0][0]
    written = 30 * 200 * len(payload)
    # Without checkpoints (the writer's connection has SQLite's turned off) the WAL would hold all 6 MB.
    assert largest <= 2 * RESTART_FACTOR * pages * (page_size + 24), (largest, written)
    assert rows(tmp_path / "traces.db", "SELECT count(*) FROM events WHERE kind = 'bulk'")[0][0] == 6000
    # The writer process stopped cleanly (its checkpointer thread too): the last close checkpointed and removed
    # the WAL.
    assert not wal.exists() or wal.stat().st_size == 0
