"""EngineStore: everything the one engine process holds open on a store, in the order it must be set up and torn
down (lock, databases, recovery, registration, writer, heartbeat)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from engine.errors import StoreError
from engine.store.config import StoreConfig
from engine.store.control import ControlDB, current_user
from engine.store.files import TRACES_DB, connect, ensure_private_file, ensure_store_dir, translate_sqlite_error
from engine.store.location import PostgresLocation, StoreDirectory, StoreLocation
from engine.store.lock import StoreLock
from engine.store.migrate import migrate
from engine.store.preflight import InputCheck, validate_store_inputs
from engine.store.recovery import abandon_dead_runs, mark_engines_stopped
from engine.store.redact import Redactor
from engine.store.traces_schema import TRACES_MIGRATIONS
from engine.store.writer import DEFAULT_FLUSH_INTERVAL, TraceWriter

if TYPE_CHECKING:
    from engine.store.pg.control_db import PgControlDB

log = logging.getLogger(__name__)

TRACES_PAGE_SIZE = 8192


def open_traces_db(path: Path) -> sqlite3.Connection:
    """traces.db for the engine: created 0600, WAL, migrated. Returns an autocommit admin connection."""
    ensure_private_file(path)
    conn = connect(path, check_same_thread=False)  # close() may run on another thread than open
    try:
        # Only takes effect on a new, empty file (before WAL). Bigger pages: fewer b-tree splits per event row.
        conn.execute(f"PRAGMA page_size = {TRACES_PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot put {path} in WAL mode (got {mode!r}); is it on a network file system?")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, TRACES_MIGRATIONS, path)
    except sqlite3.Error as exc:
        conn.close()
        raise translate_sqlite_error(exc, path, "open") from exc
    except BaseException:
        conn.close()
        raise
    return conn


# A cap on traces.db's size in pages (of TRACES_PAGE_SIZE bytes): a quota, and how the disk-full tests make a real
# file run out of space. Past it commits fail as on a full disk (SQLITE_FULL).
PAGE_LIMIT_ENV = "FLIGHTDECK_TRACES_MAX_PAGES"


def _page_limit(environ: Mapping[str, str]) -> int | None:
    text = environ.get(PAGE_LIMIT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        from engine.errors import InputError

        raise InputError(f"expected a whole number of pages, got {text!r}", field=PAGE_LIMIT_ENV)
    return int(text)


class EngineStore:
    """The store as the engine holds it. Use as a context manager, or call close()."""

    def __init__(self, store_dir: Path | None, *, lock: StoreLock | None, traces: sqlite3.Connection | None,
                 control: ControlDB | PgControlDB, config: StoreConfig, redactor: Redactor, engine_id: str,
                 writer: TraceWriter, heartbeat_interval: float, trace_location: StoreLocation | None = None) -> None:
        """`traces`: the admin connection to traces.db; None when the traces go to a Postgres store
        (`trace_location`). `store_dir` and `lock` are None for an engine wholly on a Postgres store
        (pg_engine_store.py): no directory, no lock (several engines share the database by design)."""
        self.store_dir = store_dir
        # Where the traces are: this directory's traces.db, or a Postgres store.
        if trace_location is None:
            assert store_dir is not None, "a store without a directory names its Postgres store"
            trace_location = StoreDirectory(store_dir)
        self.trace_location: StoreLocation = trace_location
        # Where the control plane is (what the engine's ControlAPI opens): control.db in the directory when there
        # is one, else the Postgres store.
        self.control_location: StoreLocation = (StoreDirectory(store_dir) if store_dir is not None
                                                else trace_location)
        self.config = config
        self.redactor = redactor
        self.engine_id = engine_id
        self.writer = writer
        self.control = control
        self.abandoned_runs: list[str] = []
        self._lock = lock
        self._traces = traces
        self._closed = False
        # Without a lock file (an engine wholly on Postgres) what the engine publishes about itself goes to its
        # registry row instead (trace schema v5), sent whole by the heartbeat thread when it changed: never from
        # the caller's thread, which may be the trace writer's with the database down.
        self._published: dict[str, Any] = {}
        self._published_changed = False
        self._publishing = threading.Lock()
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_interval,),
                                           name="flightdeck-engine-heartbeat", daemon=True)
        self._heartbeat.start()
        # A forgotten close() must not lose the queued tail of the traces on a normal interpreter exit.
        atexit.register(self.close)

    @property
    def dir(self) -> Path:
        """The store directory. An engine wholly on a Postgres store has none (`store_dir` is None): what needs one
        (durable runs, serve's reads) says so with a StoreError instead of using a wrong path."""
        if self.store_dir is None:
            raise StoreError(f"this needs a store directory; the engine is on the Postgres store "
                             f"{self.trace_location} (issue 16: not served on Postgres yet)")
        return self.store_dir

    def _publish(self, **fields: Any) -> None:
        """Add (or replace) fields of what this engine publishes: the lock file's JSON on a store directory
        (written at once, in place), else its registry row on the Postgres store (at the next heartbeat)."""
        if self._lock is not None:
            self._lock.publish(**fields)
            return
        with self._publishing:
            self._published = {**self._published, **fields}
            self._published_changed = True

    def _pending_publication(self) -> str | None:
        """The published object's JSON when it changed since the last beat sent it (then marked sent), else None."""
        with self._publishing:
            if not self._published_changed:
                return None
            self._published_changed = False
            return json.dumps(self._published)

    def _send_beat(self) -> None:
        published = self._pending_publication()
        try:
            if published is None:
                self.control.heartbeat(self.engine_id)
            else:  # only an engine without a lock file publishes here: its control plane is a PgControlDB
                self.control.heartbeat(self.engine_id, published)  # type: ignore[call-arg]
        except BaseException:
            if published is not None:
                with self._publishing:
                    self._published_changed = True  # sent again with the next beat
            raise

    def _beat(self, interval: float) -> None:
        failing = False
        while not self._stop_heartbeat.wait(interval):
            try:
                self._send_beat()
            except Exception as exc:
                # Said once per episode, not every second; the next beat retries.
                if not failing:
                    log.warning("engine heartbeat failed (retrying every %gs): %s", interval, exc)
                failing = True
            else:
                failing = False

    def publish_store_health(self, state: str, error: str | None, since: float) -> None:
        """Show the trace store's health to operators ("ok", "degraded", "failed" or "fenced", why, since) in the lock
        file's `store` field, which `flightdeck engines` and the console header read: written in place, so it works
        on a full disk. An engine wholly on Postgres has no lock file: it goes to its registry row (`_publish`)."""
        self._publish(store={"state": state, "error": error, "since": since})

    def publish_export_health(self, endpoint: str, sent_spans: int, dropped_spans: int, breaker: str,
                              error: str | None) -> None:
        """Show the OpenTelemetry exporter's drops to operators in the lock file's `export` field (`flightdeck
        engines`): the engine never waits for its exporter, so a dead collector shows up here and nowhere else live.
        An engine wholly on Postgres publishes it in its registry row."""
        self._publish(export={"endpoint": endpoint, "sent_spans": sent_spans, "dropped_spans": dropped_spans,
                                   "breaker": breaker, "error": error, "at": time.time()})

    def publish_durable(self, *, pickup: bool, auto_resume: bool) -> None:
        """Say in the lock file's `durable` field that this engine is durable and whether it takes operators' resume
        requests now (`pickup`) and reconciled runs on its own (`auto_resume`): `flightdeck resume` and `reconcile`
        read it to tell whether the engine holding the store will carry a run on (runtime/durable_pickup.py). An
        engine wholly on Postgres publishes it in its registry row (`flightdeck engines`' DURABLE column) and, at
        once, in the database's `durable_pickup`, which `flightdeck resume` counts takers by."""
        if self._lock is None and self.store_dir is None and isinstance(self.trace_location, PostgresLocation):
            from engine.store.pg.durable_takers import publish

            try:
                publish(self.trace_location, self.engine_id, pickup=pickup, auto_resume=auto_resume)
            except StoreError as exc:  # the engine runs on; `flightdeck resume` then does not count on it
                log.warning("could not record whether this engine takes resume requests: %s", exc)
        self._publish(durable={"engine_id": self.engine_id, "pickup": pickup, "auto_resume": auto_resume})

    def close(self, timeout: float = 10) -> None:
        """Flush and stop the writer, mark this engine stopped, release the lock. Idempotent. Raises the writer's
        StoreError (if traces could not be written) after everything else has been released."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._stop_heartbeat.set()
        self._heartbeat.join()
        if self._lock is None and self._published_changed:  # the last word (a durable engine's pickup off)
            try:
                self._send_beat()
            except Exception as exc:
                log.warning("could not publish the engine's state: %s", exc)
        failure: StoreError | None = None
        try:
            self.writer.close(timeout)
        except StoreError as exc:
            failure = exc
        now = time.time()
        if self._traces is not None:
            try:
                self._traces.execute("UPDATE engines SET stopped = ? WHERE id = ?", (now, self.engine_id))
            except sqlite3.Error as exc:
                log.warning("could not record engine stop in %s: %s", TRACES_DB, exc)
            finally:
                self._traces.close()
        elif isinstance(self.trace_location, PostgresLocation) and self.store_dir is not None:
            from engine.store.pg.engine_record import close_engine_record

            try:
                close_engine_record(self.trace_location, self.engine_id, now)
            except StoreError as exc:
                log.warning("could not record engine stop: %s", exc)
        try:
            self.control.mark_stopped(self.engine_id, now)
        except (StoreError, sqlite3.Error) as exc:  # a full disk raises the raw sqlite3 error here
            log.warning("could not record engine stop in the control plane: %s", exc)
        finally:
            self.control.close()
            if self._lock is not None:
                self._lock.release()
        if failure is not None:
            raise failure

    def __enter__(self) -> EngineStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_engine_store(store_dir: Path | str, *, config_file: str | os.PathLike[str] | None = None,
                      flush_interval: float = DEFAULT_FLUSH_INTERVAL, max_queue: int = 100_000,
                      heartbeat_interval: float = 1.0,
                      environ: Mapping[str, str] | None = None,
                      input_checks: Sequence[InputCheck] = (), traces_to: PostgresLocation | None = None,
                      give_up_after: float | None = None) -> EngineStore:
    """See engine.store.open_engine_store. `traces_to`: the traces go to this Postgres store instead of traces.db;
    the lock, control.db and config stay in `store_dir` (issue 16: the control plane is not on Postgres yet).
    `give_up_after`: seconds of failing Postgres commits after which the trace writer stops (the engine then stops
    starting work); default pg/writer_target.py's DEFAULT_GIVE_UP_S."""
    if traces_to is not None:
        return _open_with_postgres_traces(Path(store_dir), traces_to, config_file=config_file,
                                          flush_interval=flush_interval, max_queue=max_queue,
                                          heartbeat_interval=heartbeat_interval, environ=environ,
                                          input_checks=input_checks, give_up_after=give_up_after)
    store_dir = Path(store_dir)
    # The operator's files first (config, and STORE/runbooks through the runbook loader's check in input_checks): a
    # typo in one should fail before anything on disk changes.
    config = validate_store_inputs(store_dir, config_file, input_checks)
    redactor = Redactor.from_config(config, os.environ if environ is None else environ)
    pages = _page_limit(os.environ if environ is None else environ)
    ensure_store_dir(store_dir)
    lock = StoreLock.acquire(store_dir)
    traces: sqlite3.Connection | None = None
    control: ControlDB | None = None
    try:
        traces_path = store_dir / TRACES_DB
        traces = open_traces_db(traces_path)
        control = ControlDB.open(store_dir)
        engine_id = uuid.uuid4().hex
        now = time.time()
        dead = control.mark_others_stopped(engine_id)
        abandoned = abandon_dead_runs(traces, traces_path, now)
        mark_engines_stopped(traces, traces_path, {row.id: row.heartbeat for row in dead}, now)
        from engine import __version__

        host, user, pid = socket.gethostname(), current_user(), os.getpid()
        try:
            traces.execute("INSERT INTO engines (id, pid, host, user, version, started, stopped) "
                           "VALUES (?, ?, ?, ?, ?, ?, NULL)", (engine_id, pid, host, user, __version__, now))
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, traces_path, "register the engine in") from exc
        control.register_engine(engine_id=engine_id, version=__version__, pid=pid, host=host, user=user,
                                started=now)
        writer = TraceWriter(traces_path, redactor=redactor, flush_interval=flush_interval, max_queue=max_queue,
                             keep_fds=[lock.fd] if lock.fd is not None else [])
        if pages:
            writer.set_page_limit(pages)
    except sqlite3.Error as exc:  # control.db writes (a full disk, an I/O error): one line, not a traceback
        if control is not None:
            control.close()
        if traces is not None:
            traces.close()
        lock.release()
        raise translate_sqlite_error(exc, store_dir / "control.db", "register the engine in") from exc
    except BaseException:
        if control is not None:
            control.close()
        if traces is not None:
            traces.close()
        lock.release()
        raise
    store = EngineStore(store_dir, lock=lock, traces=traces, control=control, config=config, redactor=redactor,
                        engine_id=engine_id, writer=writer, heartbeat_interval=heartbeat_interval)
    store.abandoned_runs = abandoned
    if abandoned:
        log.warning("marked %d runs of a dead engine as abandoned", len(abandoned))
    return store


def _open_with_postgres_traces(store_dir: Path, location: PostgresLocation, *,
                               config_file: str | os.PathLike[str] | None, flush_interval: float, max_queue: int,
                               heartbeat_interval: float, environ: Mapping[str, str] | None,
                               input_checks: Sequence[InputCheck], give_up_after: float | None) -> EngineStore:
    """The engine on a store directory whose traces go to Postgres: no traces.db; the trace-writer process connects
    to Postgres (creating or upgrading its schema) and StoreError names the store, password masked, if it cannot.
    Runs left `running` there by engines that used this directory before (dead: this one holds the lock) become
    `abandoned` (pg/engine_record.py); other directories' engines' runs are theirs."""
    config = validate_store_inputs(store_dir, config_file, input_checks)
    redactor = Redactor.from_config(config, os.environ if environ is None else environ)
    ensure_store_dir(store_dir)
    lock = StoreLock.acquire(store_dir)
    control: ControlDB | None = None
    writer: TraceWriter | None = None
    try:
        control = ControlDB.open(store_dir)
        engine_id = uuid.uuid4().hex
        control.mark_others_stopped(engine_id)
        predecessors = [row["id"] for row in control.query("SELECT id FROM engines WHERE id != ?", (engine_id,))]
        from engine import __version__

        now, host, user, pid = time.time(), socket.gethostname(), current_user(), os.getpid()
        control.register_engine(engine_id=engine_id, version=__version__, pid=pid, host=host, user=user,
                                started=now)
        # The writer process first: it creates or upgrades the schema the engine's own rows go into.
        writer = TraceWriter(location, redactor=redactor, flush_interval=flush_interval, max_queue=max_queue,
                             keep_fds=[lock.fd] if lock.fd is not None else [], give_up_after=give_up_after,
                             engine_id=engine_id)
        from engine.store.pg.engine_record import open_engine_record

        abandoned = open_engine_record(location, engine_id=engine_id, pid=pid, host=host, user=user,
                                       version=__version__, started=now, dead=predecessors)
    except BaseException as exc:
        if writer is not None:
            try:
                writer.close()
            except StoreError:
                pass
        if control is not None:
            control.close()
        lock.release()
        if isinstance(exc, sqlite3.Error):  # control.db writes (a full disk, an I/O error): one line, no traceback
            raise translate_sqlite_error(exc, store_dir / "control.db", "register the engine in") from exc
        raise
    store = EngineStore(store_dir, lock=lock, traces=None, control=control, config=config, redactor=redactor,
                        engine_id=engine_id, writer=writer, heartbeat_interval=heartbeat_interval,
                        trace_location=location)
    store.abandoned_runs = abandoned
    if abandoned:
        log.warning("marked %d runs of a dead engine as abandoned in %s", len(abandoned), location)
    return store
