"""The engine lock: at most one engine process writes a store's traces.db.

flock is tied to the open file, so the kernel releases it when the holder dies, even by SIGKILL: there is no
stale-lock cleanup to get wrong. The file is never deleted (deleting it would let two processes lock two different
inodes); its JSON content only says who holds it, for the error message.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from engine.errors import StoreError, StoreLocked
from engine.store.control import current_user
from engine.store.files import FILE_MODE, LOCK_FILE
from engine.timefmt import timestamp

log = logging.getLogger(__name__)

# The holder's JSON is written padded to this size when the lock is taken, so later updates (the store's health)
# overwrite bytes the file already has: they still succeed when the disk is full, which is when they matter most.
RECORD_BYTES = 1024
# Longer than the writer process's ORPHAN_GIVE_UP_S (engine/store/writer_process.py), plus its commit.
DEAD_HOLDER_WAIT_S = 5.0


class StoreLock:
    """An acquired engine lock. Release with `release()` (idempotent)."""

    def __init__(self, store_dir: Path, fd: int, holder: dict[str, Any]) -> None:
        self.store_dir = store_dir
        self.holder = holder
        self._fd: int | None = fd
        self._publishing = threading.Lock()  # the store gate's and the exporter's threads both publish

    @classmethod
    def acquire(cls, store_dir: Path) -> StoreLock:
        path = store_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc
        dead_holder_deadline: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if _holder_is_dead(holder):
                    # The engine died, but its trace-writer process (which shares the lock) is still committing
                    # the engine's last batch; it exits within ORPHAN_GIVE_UP_S. Wait for it, briefly.
                    now = time.monotonic()
                    dead_holder_deadline = dead_holder_deadline or now + DEAD_HOLDER_WAIT_S
                    if now < dead_holder_deadline:
                        time.sleep(0.01)
                        continue
                os.close(fd)
                raise StoreLocked(_locked_message(store_dir, holder)) from None
            except OSError as exc:
                os.close(fd)
                raise StoreError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "user": current_user(),
                  "started": time.time()}
        try:
            os.pwrite(fd, _record(holder), 0)  # over the blank record the last holder left: no new block needed
            if os.fstat(fd).st_size > RECORD_BYTES:  # a longer record of an older Flightdeck
                os.ftruncate(fd, RECORD_BYTES)
        except OSError as exc:  # a full disk with no record to overwrite: one clear line, not a traceback
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return cls(store_dir, fd, holder)

    def publish(self, **fields: Any) -> None:
        """Add (or replace) fields of the holder's JSON in place, e.g. `store={"state": "degraded", ...}`: what
        `flightdeck engines` and the console header read. Best effort: a failure is logged, never raised."""
        with self._publishing:
            if self._fd is None:
                return
            holder = {**self.holder, **fields}
            try:
                os.pwrite(self._fd, _record(holder), 0)
            except OSError as exc:
                log.warning("could not update %s: %s", self.store_dir / LOCK_FILE, exc.strerror or exc)
                return
            self.holder = holder

    @property
    def fd(self) -> int | None:
        """The locked file's descriptor: a child process that inherits it keeps the lock held while it lives."""
        return self._fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Nobody holds it now: a stale name in the file would mislead the next error. Blanked, not truncated,
            # so the next engine can write its record even on a full disk.
            os.pwrite(fd, b" " * RECORD_BYTES, 0)
        except OSError:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _record(holder: dict[str, Any]) -> bytes:
    raw = json.dumps(holder).encode()
    for field in ("export", "store"):  # a very long error text: cut it (the exporter's first, it matters less)
        if len(raw) > RECORD_BYTES and isinstance(holder.get(field), dict):
            health = dict(holder[field])
            health["error"] = str(health.get("error") or "")[:RECORD_BYTES // 4] + "…"
            holder = {**holder, field: health}
            raw = json.dumps(holder).encode()
    return raw.ljust(RECORD_BYTES)  # trailing spaces: valid JSON, and always the same bytes of the file


def _holder_is_dead(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but another user's: alive
        return False
    try:  # a zombie (killed, not yet reaped by its parent) still answers signal 0
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _read_holder(fd: int) -> dict[str, Any]:
    # The holder writes its JSON right after locking; a reader racing that write may see an empty file.
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw) if raw else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _locked_message(store_dir: Path, holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "unknown")
    user = holder.get("user", "unknown user")
    host = holder.get("host")
    if host and host != socket.gethostname():
        user = f"{user}@{host}"
    started = holder.get("started")
    when = timestamp(started) if isinstance(started, (int, float)) and started else "at an unknown time"
    return f"store {store_dir} is in use by engine pid {pid} ({user}, started {when})"
