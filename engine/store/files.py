"""The store directory's layout and permissions, and opening its SQLite files with errors that name the file.

Traces hold prompts, tool arguments and outputs, so the directory is private to its owner (0700) and every file in
it is 0600. SQLite gives -wal, -shm and -journal files the mode of their database file, so creating the database
file ourselves with 0600 before SQLite touches it is enough.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from engine.errors import StoreDamaged, StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600

TRACES_DB = "traces.db"
CONTROL_DB = "control.db"
LOCK_FILE = "engine.lock"
CONFIG_FILE = "config.toml"
STORE_ENV = "FLIGHTDECK_STORE"
DEFAULT_STORE_DIR = ".flightdeck"

# SQLite result codes that mean "this file is not a database we can trust", as opposed to busy, locked or
# permission problems, which are reported as plain StoreErrors.
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def ensure_store_dir(store_dir: Path) -> None:
    """Create the store directory (0700) if it is missing; tighten its mode if we own it and it is looser."""
    try:
        store_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store directory {store_dir}: {exc.strerror or exc}") from exc
    if not store_dir.is_dir():
        raise StoreError(f"store path {store_dir} exists but is not a directory")
    _tighten(store_dir, DIR_MODE)


def ensure_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist, so SQLite never creates it with the umask's mode."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    _tighten(path, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    """Remove group/other permission bits when we own the path; never widen anything, never fail on it."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, st.st_mode & mode & 0o777)
    except OSError:
        pass


def translate_sqlite_error(exc: sqlite3.Error, path: Path, doing: str) -> StoreError:
    """A StoreError naming the file: StoreDamaged for corrupt / not-a-database, StoreError otherwise."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in _DAMAGE_CODES:
        return StoreDamaged(f"{path} is damaged or not a Flightdeck database ({exc}); "
                            f"move it aside and start again, or restore it from a backup")
    return StoreError(f"cannot {doing} {path}: {exc}")


def connect(path: Path, *, read_only: bool = False, busy_timeout_s: float = 5.0,
            check_same_thread: bool = True) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit BEGIN ... COMMIT) whose first read proves the file
    is a database. Raises StoreDamaged / StoreError naming `path`."""
    try:
        if read_only:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                   timeout=busy_timeout_s, check_same_thread=check_same_thread)
        else:
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s,
                                   check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "open") from exc
    try:
        # Reads the header and page 1: a file that is not SQLite fails here, not on some later query.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        if read_only and ((getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF) in _READ_ONLY_PLACE_CODES:
            return _connect_immutable(path, check_same_thread)
        raise translate_sqlite_error(exc, path, "read") from exc
    return conn


# mode=ro still needs to create a WAL database's -shm (and a hot journal's lock) next to it: in a read-only
# directory (forensics on a copy, a read-only mount) that fails with SQLITE_READONLY_DIRECTORY or CANTOPEN.
_READ_ONLY_PLACE_CODES = {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}


def _connect_immutable(path: Path, check_same_thread: bool) -> sqlite3.Connection:
    """The read-only fallback: immutable=1 reads the file without locks or side files. Only right when nobody writes
    it, which a read-only directory implies (an engine needs to create its -wal and -journal files there). It does
    not read a -wal file, so one with commits in it is an error rather than a silently older view."""
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise StoreError(f"cannot read {path} read-only: {wal.name} holds commits not yet in {path.name}, and reading "
                         f"them needs {path.name}-shm, which cannot be created in this read-only directory; copy the "
                         f"store (with its -wal file) to a writable directory and read the copy")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None,
                               check_same_thread=check_same_thread)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "read") from exc
    return conn
