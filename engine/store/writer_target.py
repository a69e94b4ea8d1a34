"""Where the trace-writer process (engine/store/writer_process.py) commits its batches: traces.db (SqliteTarget,
here) or a Postgres store (PgTarget, engine/store/pg/writer_target.py). The commit loop is the same for both (build,
hand over, commit, retry what can pass, salvage what cannot, acknowledge); a target knows its database: how to
commit one batch, which failures may pass by retrying, how to write a batch row by row, and what to do between
commits (WAL checkpoints, a page cap).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from engine.store.batch import Batch, commit, salvage
from engine.store.checkpointer import Checkpointer, set_autocheckpoint
from engine.store.files import translate_sqlite_error


class CommitTarget(Protocol):
    name: str  # what messages call the store (traces.db's path, a masked Postgres URL)
    last_seq: int  # the last event number committed when the writer opened
    build_from: int  # the number the batch builder counts on from (event numbers of the batches it builds)
    give_up_after: float | None  # failures that may pass, lasting longer than this: the writer stops

    def commit(self, batch: Batch) -> int:
        """Commit `batch` in one transaction; returns what to add to its event numbers to get the stored ones."""

    def transient(self, exc: Exception) -> str | None:
        """What to report if `exc` (raised by commit) may pass by retrying; None if it cannot."""

    def salvage(self, batch: Batch) -> tuple[int, list[str]]:
        """Write `batch` row by row, skipping rows that fail: (the offset as for commit, the rows skipped)."""

    def set_page_limit(self, pages: int | None) -> None: ...

    def after_commit(self) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class SqliteTarget:
    """traces.db: BEGIN IMMEDIATE transactions on the writer's connection, numbers assigned at build time (one writer:
    they are the stored ones), WAL checkpoints on their own thread (`checkpointer`), an optional page cap."""

    give_up_after: float | None = None  # a full disk or a lock may pass at any time: hold, never give up

    def __init__(self, conn: sqlite3.Connection, db_path: Path, checkpointer: Checkpointer | None = None) -> None:
        self.conn = conn
        self.db_path = db_path
        self.name = str(db_path)
        self.checkpointer = checkpointer
        self.page_limit: tuple[int] | None = None  # a page cap to apply before the next commit (0: none)
        self.last_seq = self.build_from = int(conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0)

    def commit(self, batch: Batch) -> int:
        pending, self.page_limit = self.page_limit, None
        if pending is not None:
            # SQLite keeps a limit at least as large as the current page count; 2**32-2 is its maximum.
            self.conn.execute(f"PRAGMA max_page_count = {pending[0] or 4294967294}").fetchone()
        commit(self.conn, batch)
        return 0

    def transient(self, exc: Exception) -> str | None:
        # Disk full, database locked, I/O error: may pass. Constraint violations, values out of range: cannot.
        if isinstance(exc, sqlite3.OperationalError):
            return str(translate_sqlite_error(exc, self.db_path, "commit trace batch to"))
        return None

    def salvage(self, batch: Batch) -> tuple[int, list[str]]:
        return 0, salvage(self.conn, batch)

    def set_page_limit(self, pages: int | None) -> None:
        """max_page_count for this connection (not stored in the file): a quota, lifted with None. Applied before
        the next commit attempt, between transactions (on the committer's thread)."""
        self.page_limit = (int(pages) if pages else 0,)

    def after_commit(self) -> None:
        checkpointer = self.checkpointer
        if checkpointer is None:
            return
        if checkpointer.failed:  # its thread stopped: SQLite's own checkpoints, in the commit, keep the WAL bounded
            set_autocheckpoint(self.conn, checkpointer.threshold)
            self.checkpointer = None
            return
        checkpointer.notify()

    def start(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.start()

    def close(self) -> None:
        try:
            if self.checkpointer is not None:
                self.checkpointer.stop()  # before the connection closes: that close checkpoints what is left
        finally:
            self.conn.close()
