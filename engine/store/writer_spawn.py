"""Starting the trace-writer process (engine/store/writer_process.py) for a TraceWriter (engine/store/writer.py): the
child process, its pipes, the options it is handed, and the handshake that tells the engine it opened traces.db."""

from __future__ import annotations

import fcntl
import select
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from engine.errors import StoreDamaged, StoreError
from engine.store.frames import encode, read_frame, write_frame
from engine.store.location import PostgresLocation

START_TIMEOUT_S = 30.0
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1 << 20
_ENGINE_ROOT = str(Path(__file__).resolve().parents[2])
# -I: isolated from the user's environment (PYTHONPATH, user site, the current directory); site-packages stay, for
# pydantic-core's JSON serialiser (engine/store/redact.py).
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from engine.store.writer_process import main; main()"


class WriterProcess:
    """The started child: the process, the pipe the engine writes to and the one it reads acknowledgements from,
    and the last event sequence number already in traces.db when it opened."""

    __slots__ = ("from_writer", "last_seq", "process", "to_writer")

    def __init__(self, process: subprocess.Popen[bytes], to_writer: IO[bytes], from_writer: IO[bytes],
                 last_seq: int) -> None:
        self.process = process
        self.to_writer = to_writer
        self.from_writer = from_writer
        self.last_seq = last_seq


def start_writer_process(db_path: Path | PostgresLocation, options: dict[str, Any],
                         keep_fds: Iterable[int]) -> WriterProcess:
    """Start the trace-writer process on `db_path` (traces.db, or a Postgres store), hand it `options` and wait until
    it has opened the database. Raises StoreDamaged or StoreError (naming why) if it cannot; the child is then killed
    and reaped."""
    options = {"db_path": str(db_path), **options}
    if isinstance(db_path, PostgresLocation):
        # The URL (with any password) goes down the pipe, never onto the command line or into the environment.
        options["postgres"] = (db_path.dsn, db_path.masked, db_path.password)
    process = subprocess.Popen([sys.executable, "-I", "-c", _BOOT, _ENGINE_ROOT],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               pass_fds=tuple(keep_fds))
    assert process.stdin is not None and process.stdout is not None
    to_writer, from_writer = process.stdin, process.stdout
    try:
        try:
            fcntl.fcntl(to_writer.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:  # a smaller pipe only means the shipper blocks sooner
            pass
        write_frame(to_writer.fileno(), encode(("init", options), trusted=True))
        last_seq = _await_ready(db_path, process, from_writer)
    except BaseException:
        process.kill()
        process.wait()
        to_writer.close()
        from_writer.close()
        raise
    return WriterProcess(process, to_writer, from_writer, last_seq)


def _await_ready(db_path: Path | PostgresLocation, process: subprocess.Popen[bytes], from_writer: IO[bytes]) -> int:
    ready, _, _ = select.select([from_writer], [], [], START_TIMEOUT_S)
    message = read_frame(from_writer) if ready else None
    if message is not None and message[0] == "ready":
        return int(message[1])
    if message is not None and message[0] == "failed":
        raise (StoreDamaged if message[1] else StoreError)(message[2])
    detail = message[1].strip().splitlines()[-1] if message is not None and message[0] == "crashed" else (
        "no answer" if not ready else f"exit code {process.poll()}")
    raise StoreError(f"the trace writer process for {db_path} did not start: {detail}")
