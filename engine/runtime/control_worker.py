"""The engine's link to the control plane: one thread that owns a ControlAPI connection, reads `data_version()` to
tell whether anything changed and hands fresh snapshots to the event loop; it also runs the engine's own control
writes (acks, approval requests) so the database never blocks the event loop. Watchers (`watch`) run on this thread
after every change too: the durable layer's pickup of resume requests is one (engine/runtime/durable_pickup.py).

When to read: on control.db, PRAGMA data_version every few milliseconds (cheap: no query plan, no table read). On a
Postgres store (`listen`), polling every engine of a fleet on a timer is what issue 16 rules out: a listener thread
blocks on LISTEN/NOTIFY (pg/control_watch.py's ControlWatcher) and wakes this thread when a control change commits;
`data_version()` is then read once per wake, and once every `safety_net` seconds in case a notification was lost
(the listener's connection dropped: it reconnects, then wakes this thread, since a change may have come meanwhile).
The listener is LISTENing before the first snapshot is read, so no change between the two is missed.

Kills first (`kills`): when a notification says the kill switches changed, the worker reads only them (one query),
checks the new ones' binding (one short read) and hands them on before anything else (after the job it is running,
ahead of the jobs queued): staged for the gate on this thread, their runs cancelled on the loop. The full snapshot
follows at once, also ahead of the queued jobs, so a release (which only the snapshot applies: it must pass the
verifier's check of how a switch was lifted) is not held up behind the acks and bookkeeping a kill queued. Why:
under load each of the snapshot's dozen round trips waits for a share of the CPU, and that wait was the tail of
"kill -> every engine acted" (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI, ControlSnapshot
    from engine.controls.verifier import ControlVerifier
    from engine.store.control_rows import KillSwitch

log = logging.getLogger(__name__)
T = TypeVar("T")
POLL_INTERVAL_S = 0.01
SAFETY_NET_S = 1.0  # with a listener: read data_version at least this often anyway
RECONNECT_MAX_S = 5.0
KILL_TABLE = "kill_switches"  # the NOTIFY payload (the table's name) that makes the worker read kills first


class ChangeListener(Protocol):
    """What the worker needs of pg/control_watch.py's ControlWatcher."""

    def wait(self, timeout_s: float) -> Any | None: ...

    def close(self) -> None: ...


class KillSink(Protocol):
    """What takes kill switches read ahead of the snapshot (RuntimeControls)."""

    def stage_kills(self, switches: list[KillSwitch]) -> bool: ...

    def apply_kills(self) -> None: ...


class _Wake:
    """Queued by the listener thread: the control plane changed, read it."""


WAKE = _Wake()


class ControlWorker:
    def __init__(self, api_factory: Callable[[], ControlAPI], on_snapshot: Callable[[ControlSnapshot], None],
                 *, on_read: Callable[[ControlSnapshot], None] | None = None,
                 poll_interval: float = POLL_INTERVAL_S, verifier: ControlVerifier | None = None,
                 listen: Callable[[], ChangeListener] | None = None, safety_net: float = SAFETY_NET_S,
                 kills: KillSink | None = None) -> None:
        """`on_snapshot` runs on the event loop; `on_read` (optional, thread-safe) runs on this thread first, as soon
        as a snapshot is read: the engine's gate takes new switches from it without waiting for the loop.
        `verifier` checks every snapshot against the audit log before either sees it (engine.controls.verifier).
        `listen`: opens a ChangeListener (a Postgres store's ControlWatcher); reads are then woken by it instead of
        polled every `poll_interval`. `kills`: takes new kill switches ahead of the snapshot when a notification
        names the kill switches (see the module's doc)."""
        self.verifier = verifier
        self._kills = kills
        self.kills_first = 0  # how many times kill switches were read ahead of a snapshot (tests, diagnostics)
        self._kills_waiting = threading.Event()  # set by the listener: read the kill switches before anything else
        self._api_factory = api_factory
        self._on_snapshot = on_snapshot
        self._on_read = on_read
        self._poll_interval = poll_interval
        self._listen = listen
        self._safety_net = safety_net
        self._listener: ChangeListener | None = None
        self._listener_thread: threading.Thread | None = None
        self.wakes = 0  # how many times the listener woke this thread (tests, diagnostics)
        # (job, future to deliver its result to | what it does, for a submitted job's failure message)
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], asyncio.Future[Any] | str] | _Wake | None] = \
            queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._first_snapshot = threading.Event()
        self.snapshots = 0
        # Called on this thread with its ControlAPI after each snapshot (control.db changed); replaced whole, so the
        # poll loop always iterates a complete list.
        self._watchers: tuple[Callable[[ControlAPI], None], ...] = ()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="flightdeck-control-watcher", daemon=True)
        self._thread.start()

    def wait_first_snapshot(self, timeout: float = 10.0) -> bool:
        return self._first_snapshot.wait(timeout)

    def stop(self) -> None:
        self._stopped.set()
        self._jobs.put(None)
        listener = self._listener
        if listener is not None:
            listener.close()  # a blocked wait() returns at once
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._listener_thread is not None:
            self._listener_thread.join(timeout=10)

    def _start_listener(self) -> None:
        """LISTEN now (before the first snapshot is read), then wait for changes on a thread of its own."""
        assert self._listen is not None
        self._listener = self._listen()
        self._listener_thread = threading.Thread(target=self._listen_loop, name="flightdeck-control-listener",
                                                 daemon=True)
        self._listener_thread.start()

    def _listen_loop(self) -> None:
        try:
            self._listen_until_stopped()
        finally:  # one opened by a reconnect that raced stop() is closed here, not left to the garbage collector
            if self._listener is not None:
                self._listener.close()

    def _listen_until_stopped(self) -> None:
        failing = False
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                change = listener.wait(self._safety_net)
            except Exception as exc:
                if self._stopped.is_set():
                    return
                if not failing:
                    log.warning("control listener: %s (reconnecting)", exc)
                failing = True
                listener.close()
                self._listener = self._reconnect()
                self._jobs.put(WAKE)  # a change may have committed while nobody listened
                continue
            failing = False
            if change is not None and not self._stopped.is_set():
                if self._kills is not None and KILL_TABLE in getattr(change, "tables", ()):
                    self._kills_waiting.set()  # read before the jobs queued ahead of this wake
                self.wakes += 1
                self._jobs.put(WAKE)

    @property
    def kills_waiting(self) -> bool:
        """A notification named the kill switches and the worker has not read them yet (tests, diagnostics)."""
        return self._kills_waiting.is_set()

    def _late_listener(self) -> None:
        self._listener = self._reconnect()
        if self._listener is not None:
            self._jobs.put(WAKE)
            self._listen_loop()

    def _reconnect(self) -> ChangeListener | None:
        assert self._listen is not None
        delay = 0.05
        while not self._stopped.wait(delay):
            try:
                return self._listen()
            except Exception as exc:
                log.debug("control listener reconnect: %s", exc)
                delay = min(delay * 2, RECONNECT_MAX_S)
        return None

    async def call(self, job: Callable[[ControlAPI], T]) -> T:
        """Run `job(api)` on the control thread and await its result (exceptions propagate)."""
        assert self._loop is not None, "ControlWorker.start() was not called"
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((job, future))
        return await future

    def watch(self, watcher: Callable[[ControlAPI], None]) -> None:
        """Run `watcher(api)` on the control thread after every control.db change from now on (after the snapshot
        is handed on). Call it from a job on this thread (`call`) to know no change slips between a read the job
        makes and the first time the watcher runs. A watcher's failure is logged; it runs again next change."""
        self._watchers = (*self._watchers, watcher)

    def submit(self, job: Callable[[ControlAPI], Any], what: str) -> None:
        """Run `job(api)` on the control thread without waiting for it (callable from any thread); a failure is
        logged with `what` it was doing."""
        self._jobs.put((job, what))

    def _read_kills(self, api: ControlAPI) -> None:
        """The kill switches now, those bound to their audit rows (a forged one is reported and left out, as the
        snapshot's check does), handed to the kill sink; its runs are cancelled on the loop if any is new."""
        assert self._kills is not None and self._loop is not None
        try:
            switches = api.active_kill_switches()
            if self.verifier is not None:
                switches = self.verifier.keep_bound(api, KILL_TABLE, switches)
        except Exception as exc:  # the snapshot that follows reads them again
            log.warning("control watcher (kill switches): %s", exc)
            return
        self.kills_first += 1
        if self._kills.stage_kills(switches):
            self._loop.call_soon_threadsafe(self._kills.apply_kills)

    def _deliver(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _run(self) -> None:
        assert self._loop is not None
        api = self._api_factory()
        last_version: int | None = None
        cursor: int | None = None
        if self._listen is not None:
            try:
                self._start_listener()
            except Exception as exc:  # the reads fall back on the safety net until a reconnect succeeds
                log.warning("control listener: %s", exc)
                self._listener_thread = threading.Thread(target=self._late_listener, daemon=True,
                                                         name="flightdeck-control-listener")
                self._listener_thread.start()
        wait = self._poll_interval if self._listen is None else self._safety_net
        check = True
        try:
            while not self._stopped.is_set():
                if self._loop.is_closed():  # the engine's event loop ended without stopping us
                    return
                if self._kills_waiting.is_set():
                    self._kills_waiting.clear()
                    self._read_kills(api)
                    # And the full snapshot at once, still ahead of the queued jobs: a release (which only the
                    # snapshot applies) must not wait behind the acks and run bookkeeping a kill queued.
                    check = True
                try:
                    version = api.data_version() if check else last_version
                    if version != last_version:
                        last_version = version
                        snapshot = api.snapshot(cursor)
                        cursor = snapshot.decided_cursor
                        if self.verifier is not None:  # before anything in it is staged or applied
                            snapshot = self.verifier.check(api, snapshot)
                        self.snapshots += 1
                        if self._on_read is not None:
                            self._on_read(snapshot)
                        self._loop.call_soon_threadsafe(self._on_snapshot, snapshot)
                        self._first_snapshot.set()
                        for watcher in self._watchers:
                            try:
                                watcher(api)
                            except Exception as exc:
                                log.warning("control watcher %s: %s", getattr(watcher, "__name__", watcher), exc)
                except Exception as exc:  # a locked or briefly unavailable control.db must not kill the watcher
                    log.warning("control watcher: %s", exc)
                check = self._listen is None  # polling: every turn; listening: when woken or on the safety net
                try:
                    item = self._jobs.get(timeout=wait)
                except queue.Empty:
                    check = True
                    continue
                while item is not None:
                    if isinstance(item, _Wake):
                        check = True
                        try:
                            item = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        continue
                    job, future = item
                    try:
                        result, error = job(api), None
                    except BaseException as exc:  # delivered to the awaiting coroutine
                        result, error = None, exc
                    if isinstance(future, str):  # submitted: nobody awaits it
                        if error is not None:
                            log.warning("%s failed: %s", future, error)
                    else:
                        try:
                            self._loop.call_soon_threadsafe(self._deliver, future, result, error)
                        except RuntimeError:  # the loop is closed: the engine is shutting down
                            return
                    if self._kills_waiting.is_set():
                        break  # the jobs still queued wait for the kill switches (and the snapshot) to be read
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
        finally:
            api.close()
