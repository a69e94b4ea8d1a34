"""Polling the store without ever blocking the UI: poll -> render -> reschedule.

Each visible view (and the header) owns a `Poller`. A poller runs one loop on the UI's event loop:

    while active:
        result = <fetch() on a thread worker>     # SQLite reads happen here, off the UI thread
        render(result)                             # on the UI thread; None means "nothing changed", skipped
        wait `interval` (or until poke())          # the next poll is scheduled only after this one rendered

so polls of one view never overlap, a slow read delays that view's next poll instead of piling up, and a view that
is not visible does not poll at all (its view stops the poller when hidden). The wait adapts: after a poll that found
something new the next one comes after `busy_interval` (50 ms: streaming data reaches the screen fast), after a
quiet one after `interval` (250 ms by default: an idle console costs almost nothing). Fetch functions are expected
to skip work when `PRAGMA data_version` has not changed (see `StoreSource.changed`).

Every exception (in fetch or in render) goes to ONE place, `report_error` (the app's notifier), which turns it into
a notification, never a traceback; the poller then backs off (1 s, doubling to 10 s) and keeps trying, so a store
that was briefly locked or replaced comes back by itself.

Readers: each poller gets its own TraceReader (`StoreSource.reader()`), because `PRAGMA data_version` is per
connection and a reader serialises its calls with a lock. On a Postgres store (`flightdeck console --store
postgresql://...`) a reader is a PgTraceReader and the control plane a PgControlDB: the same reads (TraceReads,
ControlStore), and a `data_version()` that is as cheap (one indexed row read: the last event number and the trace
writers' batch counters, pg/reader.py), so an idle console still costs almost nothing. TraceReader connections
are opened with check_same_thread=False, so a reader may be used from whichever pool thread runs the next poll; the
poller's lock guarantees one fetch at a time. Reads are short autocommit statements: no read transaction outlives a
call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from textual.worker import Worker, WorkerCancelled, WorkerFailed

from engine.store.location import PostgresLocation, PostgresNotSupported

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from engine.store.control import ControlStore
    from engine.store.location import StoreLocation
    from engine.store.reader_protocol import TraceReads

T = TypeVar("T")

ErrorReporter = Callable[[BaseException, str], None]

POLL_GROUP = "flightdeck-poll"
# What the console shows on a Postgres store so far (issue 16), for the message of everything else.
CONSOLE_ON_POSTGRES = ("the console's runs, run, approvals, breakers, controls, runbooks, audit, evals, queues and "
                       "engines views and its kill, release, approve, deny, breaker, flag, incident and runbook "
                       "actions")
BUSY_INTERVAL_S = 0.05  # while data keeps changing, poll this often (new events reach the screen in ~100 ms)
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 10.0


class StoreSource:
    """Opens what the console reads: TraceReads (one per poller) and the shared control plane, on a store directory
    (traces.db, control.db) or a Postgres store. Thread-safe; closes everything it opened on `close()`."""

    def __init__(self, location: StoreLocation | Path, *, read_only: bool = False) -> None:
        from engine.store.location import PostgresLocation, StoreDirectory

        self.location: StoreLocation = StoreDirectory(Path(location)) if isinstance(location, Path) else location
        self.postgres = isinstance(self.location, PostgresLocation)
        # read_only (console --read-only): control.db is opened with mode=ro (a Postgres session read-only), so the
        # console changes nothing and works on a store whose files and directory are read-only.
        self.read_only = read_only
        self._lock = threading.Lock()
        self._readers: list[TraceReads] = []
        self._control: ControlStore | None = None
        self._closed = False

    @property
    def store_dir(self) -> Path:
        """The store directory; PostgresNotSupported (the console's wording) on a Postgres store."""
        from engine.store.location import PostgresLocation

        if isinstance(self.location, PostgresLocation):
            raise ConsoleNotOnPostgres(self.location)
        return self.location.path

    def has_traces(self) -> bool:
        """Whether an engine has written traces here yet (traces.db exists; on Postgres: its trace schema)."""
        from engine.store.files import TRACES_DB
        from engine.store.location import PostgresLocation

        if isinstance(self.location, PostgresLocation):
            return True  # the reader says so itself (StoreError "no Flightdeck trace store" when there is none)
        return (self.location.path / TRACES_DB).is_file()

    def reader(self) -> TraceReads:
        from engine.store import open_trace_reads

        reader = open_trace_reads(self.location)
        with self._lock:
            if self._closed:
                reader.close()
                raise RuntimeError("the console is shutting down")
            self._readers.append(reader)
        return reader

    def forget(self, reader: TraceReads) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers.remove(reader)
        try:
            reader.close()
        except Exception:
            pass

    def control(self) -> ControlStore | None:
        """The control plane, or None when nothing has created it yet (a store only ever read)."""
        from engine.store.files import CONTROL_DB
        from engine.store.location import PostgresLocation

        with self._lock:
            if self._control is not None:
                return self._control
            if self._closed:
                return None
        location = self.location
        control: ControlStore
        if isinstance(location, PostgresLocation):
            from engine.errors import StoreError
            from engine.store.pg.control_db import PgControlDB

            try:
                # Always read-only: the console's writes go through ControlAPI, which opens its own connection.
                control = PgControlDB(location, read_only=True)
            except StoreError as exc:
                if "no Flightdeck control plane" in str(exc):
                    return None
                raise
        else:
            if not (location.path / CONTROL_DB).is_file():
                return None
            from engine.store.control import ControlDB

            control = ControlDB.open(location.path, read_only=self.read_only)
        with self._lock:
            if self._control is None and not self._closed:
                self._control = control
                return control
        control.close()
        return self._control

    def close(self) -> None:
        with self._lock:
            self._closed = True
            readers, self._readers = self._readers, []
            control, self._control = self._control, None
        for reader in readers:
            try:
                reader.close()
            except Exception:
                pass
        if control is not None:
            try:
                control.close()
            except Exception:
                pass


class ConsoleNotOnPostgres(PostgresNotSupported):
    """What a console feature that needs the store directory says on a Postgres store (shown as a notification)."""

    names_command = False

    def __init__(self, location: PostgresLocation) -> None:
        super().__init__(location, served_by=CONSOLE_ON_POSTGRES)


class ReaderState:
    """Thread-side state of one poller: its reader and the data_version it last saw. Only ever touched by the
    poller's fetch (one at a time), so it needs no lock of its own."""

    def __init__(self, source: StoreSource) -> None:
        self.source = source
        self._reader: TraceReads | None = None
        self.seen_version: int | None = None

    @property
    def reader(self) -> TraceReads:
        if self._reader is None:
            self._reader = self.source.reader()
        return self._reader

    def changed(self) -> bool:
        """True the first time and whenever another connection committed since the last call."""
        version = self.reader.data_version()
        if version == self.seen_version:
            return False
        self.seen_version = version
        return True

    def invalidate(self) -> None:
        """Make the next `changed()` say True (after a filter change, a new run id, an error)."""
        self.seen_version = None

    def reset(self) -> None:
        """Drop the reader (after an error: the file may have been replaced); the next poll reopens."""
        reader, self._reader = self._reader, None
        self.seen_version = None
        if reader is not None:
            self.source.forget(reader)

    def close(self) -> None:
        self.reset()


class _Run:
    """One start() of a Poller: its worker and the event that wakes its loop early (poke, or its timer)."""

    __slots__ = ("wake", "worker")

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.worker: Worker[None] | None = None


class Poller(Generic[T]):
    """poll -> render -> reschedule for one view. `fetch` runs on a thread worker and returns data, or None when
    nothing changed; `render` runs on the UI thread with that data."""

    def __init__(self, owner: DOMNode, *, name: str, fetch: Callable[[], T | None],
                 render: Callable[[T], None], interval: float, report_error: ErrorReporter,
                 busy_interval: float | None = None) -> None:
        self.owner = owner
        self.name = name
        self.interval = interval
        self.busy_interval = min(interval, BUSY_INTERVAL_S) if busy_interval is None else busy_interval
        self._fetch = fetch
        self._render = render
        self._report_error = report_error
        self._fetch_lock = threading.Lock()
        self._run: _Run | None = None  # the current loop's token: None while stopped
        self.polls = 0  # completed polls (fetch + render), for tests and the bench
        self.renders = 0  # polls that found something new
        self.last_poll_ms = 0.0
        self.last_error: BaseException | None = None

    @property
    def active(self) -> bool:
        return self._run is not None

    # -- control (UI thread) ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._run is not None:
            return
        run = self._run = _Run()
        # The worker gets a coroutine FUNCTION: the loop's coroutine is created when the worker's task first runs.
        # A coroutine object made here would never be awaited when stop() cancels the task before it started
        # (a view shown and hidden within one turn of the event loop): "coroutine 'Poller._loop' was never
        # awaited", an unraisable exception under -W error.
        run.worker = self.owner.run_worker(partial(self._loop, run), name=f"poll:{self.name}", group=POLL_GROUP,
                                           exit_on_error=False)

    def stop(self) -> None:
        run, self._run = self._run, None
        if run is not None and run.worker is not None:
            run.worker.cancel()

    def poke(self) -> None:
        """Poll now instead of at the end of the current wait (e.g. the operator changed what the view shows)."""
        if self._run is not None:
            self._run.wake.set()

    # -- the loop (UI event loop) -------------------------------------------------------------------------------

    async def _loop(self, run: _Run) -> None:
        # Every check is "is `run` still the current run", never a shared flag: a stop() followed by a start()
        # before the old loop noticed its cancellation must not leave two loops polling. (The old loop always
        # gets its CancelledError at its next await; nothing in here swallows it -- asyncio.wait_for on 3.11 did,
        # when the wait ended in the same turn as the cancel.)
        backoff = 0.0
        wake = run.wake
        loop = asyncio.get_running_loop()
        while self._run is run:
            wake.clear()
            started = time.perf_counter()
            failed = False
            changed = False
            worker = self.owner.run_worker(self._fetch_locked, name=f"fetch:{self.name}", group=POLL_GROUP,
                                           exit_on_error=False, thread=True)
            try:
                result = await worker.wait()
            except WorkerCancelled:
                return
            except WorkerFailed as exc:
                failed = True
                self._failed(exc.error)
            else:
                if self._run is not run:
                    return
                if result is not None:
                    changed = True
                    try:
                        self._render(result)
                        self.renders += 1
                    except Exception as exc:  # a rendering bug must not kill the console
                        failed = True
                        self._failed(exc)
            self.polls += 1
            self.last_poll_ms = (time.perf_counter() - started) * 1000
            if failed:
                backoff = min(BACKOFF_MAX_S, backoff * 2) if backoff else BACKOFF_START_S
                delay = backoff
            else:
                backoff = 0.0
                self.last_error = None
                delay = self.busy_interval if changed else self.interval
            if wake.is_set():
                continue
            timer = loop.call_later(delay, wake.set)
            try:
                await wake.wait()
            finally:
                timer.cancel()

    def _failed(self, error: BaseException) -> None:
        self.last_error = error
        self._report_error(error, self.name)

    def _fetch_locked(self) -> T | None:
        with self._fetch_lock:
            return self._fetch()


def run_in_thread(owner: DOMNode, name: str, work: Callable[[], Any]) -> Worker[Any]:
    """A one-off read off the UI thread (e.g. paging older runs). Started on the APP, not on `owner`:
    Worker.StateChanged does not bubble, and the app's handler (FlightdeckApp.on_worker_state_changed) is the one
    place errors become notifications; a worker started on a view would fail silently."""
    return owner.app.run_worker(work, name=name, group="flightdeck-read", exit_on_error=False, thread=True)


class ErrorNotifier:
    """THE error handler: every exception raised by a poll, a render, or a one-off read worker ends here and
    becomes a notification (never a traceback). Store problems also go to `on_store_problem` (the header's
    "STORE UNREADABLE" line and the hint), and set `store_problem` so quitting exits non-zero. The same message is
    not repeated within `quiet_s` (a poller retrying a broken store would otherwise flood the screen)."""

    def __init__(self, notify: Callable[..., None], on_store_problem: Callable[[str | None], None],
                 log: Callable[[str], None] | None = None, quiet_s: float = 15.0) -> None:
        self._notify = notify
        self._on_store_problem = on_store_problem
        self._log = log
        self._quiet_s = quiet_s
        self._last: dict[str, float] = {}
        self.store_problem: str | None = None
        self.count = 0

    def __call__(self, exc: BaseException, where: str = "") -> None:
        from engine.errors import FlightdeckError, StoreError

        self.count += 1
        if isinstance(exc, StoreError):
            message, title, severity = str(exc), "Store problem", "error"
            if message != self.store_problem:
                self.store_problem = message
                self._on_store_problem(message)
        elif isinstance(exc, FlightdeckError):
            message, title, severity = str(exc), "Cannot do that", "warning"
        else:
            message = f"{type(exc).__name__}: {exc}" + (f" (in {where})" if where else "")
            title, severity = "Console error (please report it)", "error"
            if self._log is not None:
                import traceback

                self._log("".join(traceback.format_exception(exc)))
        now = time.monotonic()
        last = self._last.get(message)
        if last is not None and now - last < self._quiet_s:
            return
        self._last[message] = now
        self._notify(message, title=title, severity=severity, timeout=8, markup=False)

    def recovered(self) -> None:
        if self.store_problem is not None:
            self.store_problem = None
            self._on_store_problem(None)
