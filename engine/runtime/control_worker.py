"""The engine's link to control.db: one thread that owns a ControlAPI connection, polls PRAGMA data_version every
few milliseconds (cheap: no query plan, no table read) and hands fresh snapshots to the event loop; it also runs
the engine's own control.db writes (acks, approval requests) so SQLite never blocks the event loop. Watchers
(`watch`) run on this thread after every change too: the durable layer's pickup of resume requests is one
(engine/runtime/durable_pickup.py).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from engine.controls.api import ControlAPI, ControlSnapshot
    from engine.controls.verifier import ControlVerifier

log = logging.getLogger(__name__)
T = TypeVar("T")
POLL_INTERVAL_S = 0.01


class ControlWorker:
    def __init__(self, api_factory: Callable[[], ControlAPI], on_snapshot: Callable[[ControlSnapshot], None],
                 *, on_read: Callable[[ControlSnapshot], None] | None = None,
                 poll_interval: float = POLL_INTERVAL_S, verifier: ControlVerifier | None = None) -> None:
        """`on_snapshot` runs on the event loop; `on_read` (optional, thread-safe) runs on this thread first, as soon
        as a snapshot is read: the engine's gate takes new switches from it without waiting for the loop.
        `verifier` checks every snapshot against the audit log before either sees it (engine.controls.verifier)."""
        self.verifier = verifier
        self._api_factory = api_factory
        self._on_snapshot = on_snapshot
        self._on_read = on_read
        self._poll_interval = poll_interval
        # (job, future to deliver its result to | what it does, for a submitted job's failure message)
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], asyncio.Future[Any] | str] | None] = \
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
        if self._thread is not None:
            self._thread.join(timeout=10)

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
        try:
            while not self._stopped.is_set():
                if self._loop.is_closed():  # the engine's event loop ended without stopping us
                    return
                try:
                    version = api.data_version()
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
                try:
                    item = self._jobs.get(timeout=self._poll_interval)
                except queue.Empty:
                    continue
                while item is not None:
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
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
        finally:
            api.close()
