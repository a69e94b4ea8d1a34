"""WAL checkpoints for traces.db, off the trace writer's commit path (a thread of engine/store/writer_process.py).

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: that commit copies the WAL
into the database file and syncs it, several milliseconds during which a write-ahead marker (a side-effecting tool
call waiting to run) waits too. The writer's connection turns it off (`PRAGMA wal_autocheckpoint = 0`) and this
thread, on its own connection, runs `PRAGMA wal_checkpoint(PASSIVE)` when the WAL passes the threshold: a passive
checkpoint never blocks the writer, which keeps committing meanwhile.

The WAL must still not grow without bound. A passive checkpoint copies what was in the WAL when it started; SQLite
rewinds the WAL (writes it from its start again) when a write transaction begins with every frame copied. Under
back-to-back commits that moment may not come, so past `RESTART_FACTOR` times the threshold the checkpoint is a
RESTART one: it waits (briefly blocking the writer) until the WAL can be rewound.

How full the WAL is comes from the wal-index (the -shm file): its header holds mxFrame, the number of valid frames,
at byte 16 in native byte order (https://www.sqlite.org/walformat.html). Reading it costs one pread per commit.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
from pathlib import Path

from engine.store.files import connect

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD_PAGES = 1000  # SQLite's own autocheckpoint default
RESTART_FACTOR = 4
_MX_FRAME = struct.Struct("=I")
_MX_FRAME_OFFSET = 16


def set_autocheckpoint(conn: sqlite3.Connection, pages: int) -> None:
    """On the writer's connection: 0, its commits never checkpoint (this module's thread does); or back to SQLite's
    own checkpoints in the commit when the thread failed."""
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}").fetchone()


class Checkpointer:
    """A thread that checkpoints `db_path`'s WAL when told a commit happened and the WAL is past the threshold."""

    def __init__(self, db_path: Path, *, threshold_pages: int = DEFAULT_THRESHOLD_PAGES,
                 busy_timeout_s: float = 5.0) -> None:
        self.db_path = db_path
        self.threshold = max(1, int(threshold_pages))
        self._busy_timeout_s = busy_timeout_s
        self._wake = threading.Event()
        self._stopping = False
        self._shm_fd: int | None = None
        self.checkpoints = 0  # diagnostics, tests
        self.restarts = 0
        self.failed = False  # the thread stopped on an error: the writer turns SQLite's own checkpoints back on
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """A commit happened (called by the committer: an Event.set, nothing else)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a checkpoint under way finishes first). The writer's connection, closed last,
        checkpoints what is left."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wal_frames(self) -> int | None:
        """Frames in the WAL now (None when the wal-index cannot be read)."""
        try:
            if self._shm_fd is None:
                self._shm_fd = os.open(f"{self.db_path}-shm", os.O_RDONLY)
            raw = os.pread(self._shm_fd, _MX_FRAME.size, _MX_FRAME_OFFSET)
        except OSError:
            return None
        return _MX_FRAME.unpack(raw)[0] if len(raw) == _MX_FRAME.size else None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = connect(self.db_path, busy_timeout_s=self._busy_timeout_s)
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                frames = self.wal_frames()
                if frames is not None and frames < self.threshold:
                    continue
                # Unknown size (no readable wal-index): checkpoint anyway; a passive one is cheap when little is new.
                restart = frames is not None and frames >= self.threshold * RESTART_FACTOR
                try:
                    conn.execute(f"PRAGMA wal_checkpoint({'RESTART' if restart else 'PASSIVE'})").fetchone()
                    self.checkpoints += 1
                    self.restarts += restart
                except sqlite3.Error as exc:  # busy, disk full: the next commit's notification tries again
                    log.debug("checkpoint of %s failed: %s", self.db_path, exc)
        except Exception:  # never take the writer down; it falls back to SQLite's own checkpoints
            log.exception("WAL checkpoints of %s stopped", self.db_path)
            self.failed = True
        finally:
            if conn is not None:
                conn.close()
            if self._shm_fd is not None:
                os.close(self._shm_fd)
                self._shm_fd = None
